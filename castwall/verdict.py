"""Pure judgement for `castwall check`: what Chrome needs for each device, what is there, what fixes the rest.

Chrome finds a Cast device by mDNS (multicast answers, which ufw's stock
rules admit) or by DIAL (a unicast reply to its M-SEARCH from a random local
port, which a default-deny firewall drops unless castwall's rule lets it in),
then opens the Cast channel: TCP to the device's Cast port (8009, or a group's
own port). Groups answer no M-SEARCH: mDNS is their only way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from castwall.announcement import Rejected
from castwall.dial import DialReply, read_dial
from castwall.model import Device, Kind, PortRange, Rule

# What castwall's own DIAL search saw of a device.
DIAL_OK = "arrives"  # the reply reached castwall's socket and its description names the device
DIAL_DROPPED = "dropped"  # seen on the wire (root), never delivered: this computer's firewall dropped it
DIAL_UNREAD = "no description"  # the reply arrived, but its description did not (or names another device)
DIAL_SILENT = "no reply"  # root saw nothing from the device's address on the wire
DIAL_UNSEEN = "not seen"  # without root: no reply reached the socket; dropped or never sent, castwall cannot tell
DIAL_NONE = "-"  # a group: DIAL does not apply

DIAL_WORDS = {
    DIAL_OK: "arrives",
    DIAL_DROPPED: "dropped here",
    DIAL_UNREAD: "no description",
    DIAL_SILENT: "no reply",
    DIAL_UNSEEN: "not seen",
    DIAL_NONE: "-",
}


@dataclass(frozen=True)
class Verdict:
    device: Device
    mdns: bool  # its multicast mDNS answers arrive here
    dial: str  # one of the DIAL_* values
    cast: str | None  # None: the Cast channel opened; else why not
    ways: tuple[str, ...]  # how Chrome finds it: "mDNS", "DIAL"
    problem: str | None  # what keeps Chrome from finding or reaching it
    fix: str | None  # the command or step that fixes it
    note: str | None = None  # something worth knowing although Chrome can cast

    @property
    def ok(self) -> bool:
        return self.problem is None


def dial_evidence(device: Device, replies: Sequence[DialReply], *, wire: bool) -> tuple[str, str | None]:
    """What castwall's DIAL search saw of device (a DIAL_* value), and the description's problem if any."""
    if device.kind is Kind.GROUP:
        return DIAL_NONE, None
    here = next((r for r in replies if r.source == device.ip), None)
    if here is None:
        return (DIAL_SILENT if wire else DIAL_UNSEEN), None
    if not here.delivered:
        return DIAL_DROPPED, None
    got = read_dial(here)
    if isinstance(got, Rejected):
        return DIAL_UNREAD, got.reason
    if got.uuid != device.uuid:
        return DIAL_UNREAD, f"its description names another device ({got.uuid})"
    return DIAL_OK, None


def judge(
    device: Device,
    *,
    dial: str,
    dial_problem: str | None,
    cast: str | None,
    rules: Sequence[Rule],
    port_range: PortRange,
    refused: str | None,
) -> Verdict:
    """The verdict on one device from what castwall measured.

    rules are castwall's rules (and the user's of the same shape) as far as
    castwall knows them; refused says why setup would give the device no rule.
    """
    mdns = "mdns" in device.found_by
    ways = tuple(w for w, ok in (("mDNS", mdns), ("DIAL", dial == DIAL_OK)) if ok)
    rule = next((r for r in rules if r.ip == device.ip and r.is_dial), None)
    allowed = rule is not None and rule.ports == port_range
    problem = fix = note = None
    if not ways:
        problem, fix = _not_found(device, dial, dial_problem, rule, allowed, refused)
    elif cast is not None:
        problem = f"Chrome finds it by {' and '.join(ways)} but cannot open its Cast channel (TCP {device.ip}:{device.port}: {cast})"
        fix = "check that the device is on and that nothing on this computer blocks outgoing TCP to it"
    elif dial == DIAL_DROPPED:
        note = ("DIAL replies are dropped by this computer's firewall: where multicast is lost (many Wi-Fi "
                "access points lose it), Chrome would not find it; " + _let_dial_in(refused, rule, allowed))
    elif dial == DIAL_UNSEEN:
        note = "no DIAL reply reached castwall; 'sudo castwall check' tells whether this computer's firewall drops them"
    return Verdict(device, mdns, dial, cast, ways, problem, fix, note)


def _let_dial_in(refused: str | None, rule: Rule | None, allowed: bool) -> str:
    """What lets a device's dropped DIAL replies in."""
    if refused:
        return f"castwall gives it no rule: {refused}"
    if rule is not None and not allowed:
        return f"its rule is for ports {rule.ports}, not the port range now in force: run 'sudo castwall setup'"
    if allowed:
        return "castwall's rule is in place, so another rule of this computer's firewall drops the replies first: " \
            "see 'sudo ufw status numbered'"
    return "run 'sudo castwall setup'"


def _not_found(device: Device, dial: str, dial_problem: str | None, rule: Rule | None, allowed: bool,
               refused: str | None) -> tuple[str, str]:
    lost = "its mDNS answers do not arrive by multicast here (many Wi-Fi access points lose multicast)"
    if device.kind is Kind.GROUP:
        return (f"Chrome cannot find this group: {lost}, and groups answer no DIAL search",
                "make multicast reach this computer (the access point's multicast settings), or cast to its members")
    if dial == DIAL_DROPPED:
        return (f"Chrome cannot find it: {lost}, and this computer's firewall drops its DIAL replies",
                _let_dial_in(refused, rule, allowed))
    if dial == DIAL_UNREAD:
        return f"Chrome cannot find it: {lost}, and its DIAL reply arrives but {dial_problem}", \
            "restart the device; if that does not help, it is not a Cast device Chrome can use"
    if dial == DIAL_UNSEEN:
        fix = "run 'sudo castwall check' to see whether this computer's firewall drops its DIAL replies"
        if not allowed and not refused:
            fix += " ('sudo castwall setup' lets them in)"
        return f"Chrome cannot find it: {lost}, and no DIAL reply from it reached this computer", fix
    return (f"Chrome cannot find it: {lost}, and it sends no DIAL reply",
            "check that the device is on and on this LAN")
