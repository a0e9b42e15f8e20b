"""The survey every command starts from: discover, read, resolve MACs, screen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from castwall.announcement import Rejected, collate, link_groups
from castwall.commands.services import Services, progress, warn
from castwall.model import Address, Device, State
from castwall.planner import Trust, screen
from castwall.system.interfaces import NetInterface, choose_interfaces, own_addresses
from castwall.system.neighbours import NeighbourTable, resolve_macs


@dataclass
class Survey:
    """What castwall learnt about the LAN: devices, and what it will not trust."""

    devices: list[Device]
    rejected: list[Rejected]  # announcements that describe no usable device
    refused: dict[str, str]  # UUID -> why that device may get no rule
    interfaces: list[NetInterface]
    own: set[Address]  # every address of this computer

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
    expect: State | None = None,
    trust: Trust = Trust(),
    check_claims: bool = False,
) -> Survey:
    """Discover, read, resolve and screen the devices on the chosen interfaces.

    expect (status only) lets discovery end after one round when every device
    it holds answers then. setup and discover always ask twice: a device that
    answered someone else less than a second earlier stays silent on the
    first question, and a device missing from setup would get no rule.
    """
    every = svc.interfaces()
    chosen = choose_interfaces(every, interfaces)
    addresses = [str(a.ip) for i in chosen for a in i.ipv4]
    progress(f"Looking for Cast devices on {', '.join(i.name for i in chosen)}...")
    with svc.timed("discovery"):
        announced = svc.discover(addresses, timeout, expect=[d.uuid for d in expect.devices] if expect else (), note=svc.note)
    svc.note(f"{len(announced)} announcement(s) heard")
    devices, rejected = collate(announced)
    networks = [a for i in chosen for a in i.addresses]
    own = own_addresses(every)
    # Screen twice: once to settle which address a contested device the user
    # accepted has, then again with what ARP said about each address.
    devices, _ = screen(link_groups(devices), networks, own, trust)
    table = NeighbourTable(svc.runner, svc.paths.arp, poke=svc.poke)
    with svc.timed("MAC addresses (ARP)" + (", with the claims check" if root and check_claims else "")):
        devices, warning = resolve_macs(devices, chosen, table, raw_arp=svc.raw_arp if root else None, check_claims=check_claims)
    if warning:
        warn(warning)
    devices, refused = screen(devices, networks, own, trust)
    return Survey(devices, rejected, refused, chosen, own)


def show_rejected(survey: Survey) -> None:
    for r in survey.rejected:
        warn(f"ignored an announcement ({r.instance}): {r.reason}")
