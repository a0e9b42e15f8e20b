"""Frozen values that flow from discovery to the firewall: devices, rules, plans, state."""

from __future__ import annotations

import enum
import ipaddress
import re
import uuid as uuidlib
from dataclasses import dataclass, replace

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

TAG_PREFIX = "castwall:"
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def canonical_uuid(text: str) -> str:
    """Return the dashed lower-case form of a UUID given with or without dashes.

    Raises ValueError when the text is not a UUID.
    """
    return str(uuidlib.UUID(hex=text.strip()))


def canonical_mac(text: str) -> str:
    """Return a MAC address as six lower-case colon-separated octets.

    Raises ValueError for anything else, including the all-zero address that
    the kernel shows for an unresolved neighbour.
    """
    mac = text.strip().lower().replace("-", ":")
    if not _MAC_RE.match(mac) or mac == "00:00:00:00:00:00":
        raise ValueError(f"not a MAC address: {text!r}")
    return mac


# How a device was found, and how castwall says so.
FOUND_BY = {
    "mdns": "mDNS",  # a multicast answer to castwall's mDNS question, as Chrome's mDNS gets it
    "mdns-unicast": "unicast mDNS",  # an answer to castwall's unicast question to a known address
    "dial": "DIAL",  # a reply to castwall's DIAL M-SEARCH, and the device description it names
}


class Kind(str, enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"
    GROUP = "group"


@dataclass(frozen=True, order=True)
class PortRange:
    low: int
    high: int

    def __post_init__(self) -> None:
        for value in (self.low, self.high):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise ValueError(f"port {value!r} is outside 1-65535")
        if self.low > self.high:
            raise ValueError(f"low port {self.low} is above high port {self.high}")

    def __str__(self) -> str:
        return f"{self.low}:{self.high}"


@dataclass(frozen=True)
class Device:
    """One Cast device or group as announced, with what castwall learnt about it."""

    uuid: str
    name: str
    model: str
    kind: Kind
    ip: Address
    port: int
    mac: str | None = None
    mac_note: str | None = None
    host: str | None = None  # for a group: the UUID of the device at the same address
    also_at: tuple[Address, ...] = ()  # other addresses the same UUID was announced from
    contested: str | None = None  # why this device's address cannot be trusted, if so
    found_by: tuple[str, ...] = ()  # how it was found: FOUND_BY's keys, sorted

    def __post_init__(self) -> None:
        object.__setattr__(self, "uuid", canonical_uuid(self.uuid))
        if self.mac is not None:
            object.__setattr__(self, "mac", canonical_mac(self.mac))
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port!r} is outside 1-65535")

    @property
    def found_by_text(self) -> str:
        """How it was found, for people: "mDNS", "DIAL", "mDNS, DIAL", ..."""
        return ", ".join(FOUND_BY.get(k, k) for k in self.found_by) or "-"

    def with_mac(self, mac: str | None, note: str | None = None) -> Device:
        return replace(self, mac=mac, mac_note=note)

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Every address this device was announced from, its own first."""
        return (self.ip,) + self.also_at

    def matches(self, selector: str) -> bool:
        """True when a --device selector names this device, by UUID or by name."""
        try:
            return canonical_uuid(selector) == self.uuid
        except ValueError:
            return selector.casefold() == self.name.casefold()


@dataclass(frozen=True)
class Rule:
    """One ufw rule of castwall's shape: UDP from one address to a port range.

    owner is the UUID named by the rule's castwall tag, or None when the rule
    has that shape but is not castwall's (castwall never changes such a rule).
    """

    ip: Address
    ports: PortRange
    owner: str | None = None

    def __post_init__(self) -> None:
        if self.owner is not None:
            object.__setattr__(self, "owner", canonical_uuid(self.owner))

    @property
    def comment(self) -> str | None:
        return None if self.owner is None else TAG_PREFIX + self.owner

    def sort_key(self) -> tuple:
        return (self.ip.version, int(self.ip), self.ports, self.owner or "")

    def same_traffic(self, other: Rule) -> bool:
        """True when ufw would treat both as the same rule (ufw ignores comments)."""
        return self.ip == other.ip and self.ports == other.ports

    def ufw_add_args(self) -> tuple[str, ...]:
        args = ("allow", "proto", "udp", "from", str(self.ip), "to", "any", "port", str(self.ports))
        return args + (("comment", self.comment) if self.comment else ())

    def ufw_delete_args(self) -> tuple[str, ...]:
        return ("delete",) + self.ufw_add_args()[:9]


class Action(str, enum.Enum):
    ADD = "add"
    DELETE = "delete"


@dataclass(frozen=True)
class Step:
    """One ufw change. position places an ADD at that place in ufw's IPv4 rule
    list (`ufw insert`); on a DELETE it records where the rule stood, so that
    the undo puts it back there (None: it was last, and an append restores it).
    """

    action: Action
    rule: Rule
    reason: str
    position: int | None = None

    def inverse(self) -> Step:
        if self.action is Action.DELETE:
            return Step(Action.ADD, self.rule, f"undo: {self.reason}", self.position)
        return Step(Action.DELETE, self.rule, f"undo: {self.reason}")

    def ufw_args(self) -> tuple[str, ...]:
        if self.action is Action.DELETE:
            return self.rule.ufw_delete_args()
        if self.position is not None:
            return ("insert", str(self.position)) + self.rule.ufw_add_args()
        return self.rule.ufw_add_args()


@dataclass(frozen=True)
class Skip:
    """A device that gets no rule of its own in this plan, and why."""

    device: Device
    reason: str
    refused: bool = False  # refused for safety (address or claim), not merely covered elsewhere


@dataclass(frozen=True)
class Plan:
    port_range: PortRange
    devices: tuple[Device, ...]
    steps: tuple[Step, ...]
    kept: tuple[Rule, ...]
    skipped: tuple[Skip, ...]
    untouched: tuple[Rule, ...] = ()  # castwall's rules of devices not seen now, left as they are

    @property
    def empty(self) -> bool:
        return not self.steps

    def wanted_rules(self) -> tuple[Rule, ...]:
        """The castwall rules in force once the plan has run."""
        added = tuple(s.rule for s in self.steps if s.action is Action.ADD)
        return tuple(sorted(self.kept + self.untouched + added, key=Rule.sort_key))


@dataclass(frozen=True)
class State:
    """What castwall set up: saved after every change, read by status without root."""

    port_range: PortRange | None
    devices: tuple[Device, ...]
    rules: tuple[Rule, ...]
    written: str | None = None

    def device(self, uuid: str) -> Device | None:
        return next((d for d in self.devices if d.uuid == uuid), None)


EMPTY_STATE = State(port_range=None, devices=(), rules=())
