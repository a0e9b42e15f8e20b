"""Frozen values that flow from discovery to the firewall: devices, rules, plans, state."""

from __future__ import annotations

import enum
import ipaddress
import re
import uuid as uuidlib
from dataclasses import dataclass, replace

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

TAG_PREFIX = "castwall:"
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# After the prefix: the UUID (canonical_uuid checks it), then an app's name (the catalogue checks it) if any.
_TAG_RE = re.compile(r"([0-9a-fA-F-]+)(?:/([a-z0-9-]+))?")


# The two forms Cast devices send (TXT id= without dashes, the UDN with them), in ASCII hex only:
# uuid.UUID also takes braces, "urn:uuid:", "0x", "+" and any Unicode digit.
_UUID_RE = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def canonical_uuid(text: str) -> str:
    """Return the dashed lower-case form of a UUID given as 32 hex digits, with or without its four dashes.

    Raises ValueError for anything else.
    """
    text = text.strip(" \t\r\n")
    if not _UUID_RE.fullmatch(text):
        raise ValueError(f"not a UUID: {text[:60]!r}")
    return str(uuidlib.UUID(hex=text))


def format_tag(owner: str, app: str | None = None) -> str:
    """castwall's tag, the comment that marks a rule as castwall's: castwall:<UUID>, or castwall:<UUID>/<app>."""
    return f"{TAG_PREFIX}{owner}/{app}" if app else TAG_PREFIX + owner


def parse_tag(comment: str) -> tuple[str, str | None] | None:
    """The owner and app a tag names, read exactly (the whole comment); None for a comment that is no tag.

    Raises ValueError for a comment that starts as castwall's tag but is not one castwall writes (no UUID,
    whitespace, an empty or odd app): every backend reports such a rule, and never changes it.
    """
    if not comment.startswith(TAG_PREFIX):
        return None
    match = _TAG_RE.fullmatch(comment, len(TAG_PREFIX))
    if match is None:
        raise ValueError(f"not a castwall tag: {comment[:80]!r}")
    return canonical_uuid(match.group(1)), match.group(2)


def canonical_mac(text: str) -> str:
    """Return a MAC address as six lower-case colon-separated octets.

    Raises ValueError for anything else, including the all-zero address that
    the kernel shows for an unresolved neighbour.
    """
    mac = text.strip().lower().replace("-", ":")
    if not _MAC_RE.fullmatch(mac) or mac == "00:00:00:00:00:00":
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


PROTOCOLS = ("udp", "tcp")
_APP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")  # a sender app's name: vlc, pulseaudio-dlna, tcp-range


@dataclass(frozen=True)
class AppChoice:
    """A sender app the user chose with --app: its catalogue name (or tcp-range) and the TCP ports it serves on."""

    name: str
    ports: PortRange

    def __post_init__(self) -> None:
        if not isinstance(self.ports, PortRange):
            raise ValueError("an app's ports must be a port range")
        if not _APP_RE.match(self.name):
            raise ValueError(f"not an app name: {self.name!r}")


def port_text(ports: PortRange) -> str:
    """A port or a range as ufw writes it: 8010, 45000:47000 (ufw refuses 8010:8010)."""
    return str(ports.low) if ports.low == ports.high else f"{ports.low}:{ports.high}"


PROFILE_PREFIX = "castwall-"  # castwall's ufw application profiles: castwall-vlc, castwall-catt, ...


@dataclass(frozen=True)
class Rule:
    """One ufw rule of castwall's shape: from one address to ports of this computer.

    proto "udp" is the DIAL rule (the local port range). proto "tcp" is a
    sender app's rule: app names the app it serves (a catalogue name, or
    tcp-range), and profile says it is written through castwall's ufw
    application profile castwall-<app>, whose ports are then the rule's;
    otherwise it is a plain port rule, whose tag names the app
    (castwall:<UUID>/<app>), as ufw's text holds nothing else to tell it by.
    owner is the UUID named by the rule's castwall tag, or None when the rule
    has that shape but is not castwall's (castwall never changes such a rule;
    its app is then None).
    """

    ip: Address
    ports: PortRange
    owner: str | None = None
    proto: str = "udp"
    app: str | None = None
    profile: bool = False

    def __post_init__(self) -> None:
        if self.owner is not None:
            object.__setattr__(self, "owner", canonical_uuid(self.owner))
        if self.proto not in PROTOCOLS:
            raise ValueError(f"protocol {self.proto!r} is not udp or tcp")
        if not isinstance(self.ports, PortRange):
            raise ValueError("a rule's ports must be a port range")
        if self.app is not None and (self.proto != "tcp" or not _APP_RE.match(self.app)):
            raise ValueError(f"not a sender app of a TCP rule: {self.app!r}")
        if self.profile and self.app is None:
            raise ValueError("a rule through an app profile needs its app")

    @property
    def profile_name(self) -> str | None:
        """The ufw application profile the rule names (castwall-vlc), if it is written through one."""
        return PROFILE_PREFIX + self.app if self.profile and self.app else None

    @property
    def comment(self) -> str | None:
        if self.owner is None:
            return None
        return format_tag(self.owner, None if self.profile else self.app)  # a profile names its app itself

    @property
    def is_dial(self) -> bool:
        """The UDP rule for the local port range, which lets DIAL replies in."""
        return self.proto == "udp"

    @property
    def traffic(self) -> str:
        """What the rule lets in, for people: "UDP 32768:60999", "TCP 8010 (app castwall-vlc)"."""
        text = f"{self.proto.upper()} {port_text(self.ports)}"
        return text + (f" (app {self.profile_name})" if self.profile else "")

    def sort_key(self) -> tuple:
        return (self.ip.version, int(self.ip), self.proto != "udp", self.ports, self.app or "", self.profile, self.owner or "")

    def same_traffic(self, other: Rule) -> bool:
        """True when ufw would treat both as the same rule (ufw ignores comments)."""
        return (self.ip, self.proto, self.ports, self.profile_name) == (other.ip, other.proto, other.ports, other.profile_name)

    def covers(self, other: Rule) -> bool:
        """True when this rule lets in everything other does: the same address, protocol and ports."""
        return (self.ip, self.proto) == (other.ip, other.proto) and self.ports.low <= other.ports.low \
            and other.ports.high <= self.ports.high

    def _ufw_match(self) -> tuple[str, ...]:
        if self.profile:
            return ("allow", "from", str(self.ip), "to", "any", "app", self.profile_name)
        return ("allow", "proto", self.proto, "from", str(self.ip), "to", "any", "port", port_text(self.ports))

    def ufw_add_args(self) -> tuple[str, ...]:
        return self._ufw_match() + (("comment", self.comment) if self.comment else ())

    def ufw_delete_args(self) -> tuple[str, ...]:
        return ("delete",) + self._ufw_match()


class Action(str, enum.Enum):
    ADD = "add"
    DELETE = "delete"


@dataclass(frozen=True)
class RuleSet:
    """What a firewall holds of castwall's shape, as castwall sees it (for ufw: what `ufw show added` lists)."""

    rules: tuple[Rule, ...]  # every rule of castwall's shape, tagged or not
    odd_tagged: tuple[str, ...]  # lines tagged castwall: that castwall did not write
    other: int  # rules of other shapes (the user's own), never touched
    order: tuple[Rule | None, ...] = ()  # ufw's IPv4 rule list in order; None: another shape (ufw only)

    @property
    def owned(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.owner is not None)


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
    apps: tuple[AppChoice, ...] = ()  # the sender apps every device gets a rule for

    @property
    def empty(self) -> bool:
        return not self.steps

    def wanted_rules(self) -> tuple[Rule, ...]:
        """The castwall rules in force once the plan has run."""
        added = tuple(s.rule for s in self.steps if s.action is Action.ADD)
        return tuple(sorted(self.kept + self.untouched + added, key=Rule.sort_key))


Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Lan:
    """A network this computer is on, as follow mode tells one from another: its subnet and that subnet's gateway."""

    subnet: Subnet
    gateway: Address | None = None  # this computer's default gateway on the subnet, if it has one there
    gateway_mac: str | None = None  # the MAC that answered ARP for the gateway

    def __post_init__(self) -> None:
        if self.gateway_mac is not None:
            object.__setattr__(self, "gateway_mac", canonical_mac(self.gateway_mac))

    def __str__(self) -> str:
        if self.gateway is None:
            return f"{self.subnet} (no gateway)"
        return f"{self.subnet} behind gateway {self.gateway}" + (f" at {self.gateway_mac}" if self.gateway_mac else "")


@dataclass(frozen=True)
class Tracking:
    """What follow mode keeps of a device the user approved with setup.

    mac and lan are what setup saw when the user approved it: the MAC that
    answered ARP for its address, and the network it was on. away says why
    follow withdrew its rules (None: they are in place); moves holds when
    follow moved them (ISO 8601, the last hour's); stopped says why follow no
    longer moves them, until the next setup.
    """

    uuid: str
    mac: str | None
    lan: Lan | None = None
    away: str | None = None
    moves: tuple[str, ...] = ()
    stopped: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "uuid", canonical_uuid(self.uuid))
        if self.mac is not None:
            object.__setattr__(self, "mac", canonical_mac(self.mac))


NOTHING_FILTERS = ("nothing on this computer filters incoming traffic: ufw is not installed, firewalld is not running, "
                   "and no nftables input chain drops by default")
FIREWALLS = ("ufw", "firewalld", "nftables")  # the firewalls castwall drives, as --firewall names them
NFT_FAMILIES = ("inet", "ip")  # the nftables families whose input chains see IPv4 traffic
_NFT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")  # a name nft reads without quotes


@dataclass(frozen=True)
class NftChain:
    """The admin's nftables input chain that castwall's rule goes in: family, table and chain."""

    family: str
    table: str
    chain: str

    def __post_init__(self) -> None:
        if self.family not in NFT_FAMILIES:
            raise ValueError(f"nftables family {self.family!r} is not one of {', '.join(NFT_FAMILIES)}")
        for value in (self.table, self.chain):
            if not isinstance(value, str) or not _NFT_NAME_RE.match(value):
                raise ValueError(f"{value!r} is not an nftables table or chain name castwall accepts")

    def __str__(self) -> str:
        return f"{self.family} {self.table} {self.chain}"


@dataclass(frozen=True)
class FirewallChoice:
    """Which firewall castwall's rules live in: ufw, firewalld or nftables (with the chain, for nftables)."""

    name: str
    chain: NftChain | None = None

    def __post_init__(self) -> None:
        if self.name not in FIREWALLS:
            raise ValueError(f"firewall {self.name!r} is not one of {', '.join(FIREWALLS)}")
        if self.chain is not None and self.name != "nftables":
            raise ValueError("only nftables takes a chain")

    def __str__(self) -> str:
        return f"{self.name} (chain {self.chain})" if self.chain else self.name


@dataclass(frozen=True)
class State:
    """What castwall set up: saved after every change, read by status without root."""

    port_range: PortRange | None
    devices: tuple[Device, ...]
    rules: tuple[Rule, ...]
    written: str | None = None
    apps: tuple[AppChoice, ...] = ()  # the sender apps chosen with setup --app, given to every device
    follow: tuple[Tracking, ...] = ()  # the devices the user approved, as follow mode keeps them
    firewall: FirewallChoice | None = None  # the firewall castwall's rules are in (None: ufw, before castwall knew others)

    def device(self, uuid: str) -> Device | None:
        return next((d for d in self.devices if d.uuid == uuid), None)

    def tracking(self, uuid: str) -> Tracking | None:
        return next((t for t in self.follow if t.uuid == uuid), None)


EMPTY_STATE = State(port_range=None, devices=(), rules=())
