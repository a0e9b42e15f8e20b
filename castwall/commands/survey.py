"""The survey every command starts from: discover, read, resolve MACs, screen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from castwall.announcement import Rejected, collate, link_groups
from castwall.dial import DialReply, read_dial
from castwall.commands.services import Services, progress, warn
from castwall.model import Address, Device, State
from castwall.planner import Trust, refusal, screen
from castwall.sanitize import safe_text
from castwall.system.gateway import default_routes
from castwall.system.interfaces import NetInterface, attached_interface, choose_interfaces, own_addresses
from castwall.system.neighbours import NeighbourTable, resolve_macs


@dataclass
class Survey:
    """What castwall learnt about the LAN: devices, and what it will not trust."""

    devices: list[Device]
    rejected: list[Rejected]  # announcements that describe no usable device
    refused: dict[str, str]  # UUID -> why that device may get no rule
    interfaces: list[NetInterface]
    own: set[Address]  # every address of this computer
    dial: list[DialReply] = field(default_factory=list)  # every DIAL reply, as received
    dial_seen_on_wire: bool = False  # whether DIAL replies were also read off the wire (root)
    gateways: set[Address] = field(default_factory=set)  # where this computer's default routes go: never a device

    @property
    def networks(self) -> list:
        """The chosen interfaces' addresses, with their prefixes."""
        return [a for i in self.interfaces for a in i.addresses]


def take_survey(
    svc: Services,
    interfaces: Sequence[str],
    timeout: float,
    root: bool,
    *,
    known: State | None = None,
    expect: bool = False,
    complete: bool = False,
    trust: Trust = Trust(),
    check_claims: bool = False,
) -> Survey:
    """Discover (mDNS and DIAL), read, resolve and screen the devices on the chosen interfaces.

    known holds the devices castwall saved: their addresses are also asked
    by unicast. With expect (status), discovery ends after one round when
    every known device answers then. setup and discover always ask twice: a
    device that answered someone else less than a second earlier stays
    silent on the first question, and a device missing from setup would get
    no rule. complete (check) waits for every DIAL answer.
    """
    every = svc.interfaces()
    chosen = choose_interfaces(every, interfaces)
    addresses = [str(a.ip) for i in chosen for a in i.ipv4]
    networks = [a for i in chosen for a in i.addresses]
    own = own_addresses(every)
    gateways = set(default_routes(svc.runner).values())
    asked = _known_addresses(known, chosen)
    by_name = {i.name: i for i in every}

    def misplaced(ip, arrived_on: str) -> str | None:
        # The packet socket sees a reply before reverse-path filtering: its source may be
        # forged, to make castwall (as root) send a request across interfaces. Any interface
        # counts, chosen or not: two of them may share a subnet.
        iface = by_name.get(arrived_on)
        if iface is None or not any(a.version == 4 and ip in a.network for a in iface.addresses):
            return f"its reply came in on {safe_text(arrived_on, 20)}, where {ip} is not on the subnet: a forged source address"
        return None

    def may_fetch(ip) -> str | None:
        if attached_interface(ip, chosen) is None:
            return f"{ip} is not on a subnet of this computer's interfaces"
        return refusal(ip, networks, own, trust, gateways=gateways)

    search = svc.dial([(i.name, a.ip) for i in chosen for a in i.ipv4], wire=root, misplaced=misplaced, may_fetch=may_fetch,
                      note=svc.note)
    progress(f"Looking for Cast devices on {', '.join(i.name for i in chosen)}...")
    with svc.timed("discovery"):
        announced = svc.discover(addresses, timeout, expect=[d.uuid for d in known.devices] if known and expect else (),
                                 known=asked, dial=search, complete=complete, note=svc.note)
    replies = search.replies if search is not None else []
    forged = search.forged if search is not None else []
    svc.note(f"{len(announced)} announcement(s) and {len(replies)} DIAL replier(s) heard")
    if search is not None and root and search.wire_problem:
        warn(f"DIAL replies that this computer's firewall drops are not seen: {search.wire_problem}")
    devices, rejected = collate(announced, [read_dial(r) for r in replies + forged])
    # Screen twice: once to settle which address a contested device the user
    # accepted has, then again with what ARP said about each address.
    devices, _ = screen(link_groups(devices), networks, own, trust, gateways=gateways)
    table = NeighbourTable(svc.runner, svc.paths.arp, poke=svc.poke)
    with svc.timed("MAC addresses (ARP)" + (", with the claims check" if root and check_claims else "")):
        devices, warning = resolve_macs(devices, chosen, table, raw_arp=svc.raw_arp if root else None, check_claims=check_claims)
    if warning:
        warn(warning)
    devices, refused = screen(devices, networks, own, trust, gateways=gateways)
    return Survey(devices, rejected, refused, chosen, own, replies, search is not None and root and not search.wire_problem,
                  gateways)


def _known_addresses(known: State | None, chosen: Sequence[NetInterface]) -> list[tuple[str, str]]:
    """(local address, device address) for each saved IPv4 device on a chosen interface's subnet."""
    pairs = {}
    for d in known.devices if known else ():
        iface = attached_interface(d.ip, chosen) if d.ip.version == 4 else None
        if iface is None:
            continue
        local = next((a.ip for a in iface.ipv4 if d.ip in a.network), None)
        if local is not None and d.ip != local:
            pairs[str(d.ip)] = str(local)
    return [(local, remote) for remote, local in sorted(pairs.items())]


def show_rejected(survey: Survey) -> None:
    for r in survey.rejected:
        if r.via == "dial":
            warn(f"ignored a DIAL reply from {r.instance}: {r.reason}")
        else:
            warn(f"ignored an announcement ({r.instance}): {r.reason}")
