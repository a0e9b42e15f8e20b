"""firewalld's objects as castwall sees them, pure: the journal of owners, castwall's rules as ipset entries
times policy ports, and the native operations that change one view into another.

The backend (castwall.system.firewalld) reads firewalld through a transport, plans with these
functions and carries out their operations.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from castwall.errors import ToolFailed
from castwall.model import PortRange, Rule, RuleSet, canonical_uuid
from castwall.system.firewalld_bus import NAME, IpsetInfo, Op, PolicyInfo

SHIPPED_FILES = (Path("/usr/lib/firewalld/ipsets/castwall.xml"), Path("/usr/lib/firewalld/policies/castwall.xml"))
_RICH = re.compile(r'^rule family="ipv4" source ipset="castwall" port port="([0-9]{1,5})(?:-([0-9]{1,5}))?" '
                   r'protocol="(udp|tcp)" accept$')


@dataclass(frozen=True, order=True)
class Spec:
    """One port rule of the policy: a protocol and a port or range."""

    proto: str
    ports: PortRange

    @property
    def text(self) -> str:  # firewalld writes a range with a dash, a single port alone
        return str(self.ports.low) if self.ports.low == self.ports.high else f"{self.ports.low}-{self.ports.high}"

    @property
    def key(self) -> str:  # how the journal names it
        return f"{self.proto}/{self.text}"

    @property
    def rich_rule(self) -> str:
        return f'rule family="ipv4" source ipset="{NAME}" port port="{self.text}" protocol="{self.proto}" accept'


def parse_rich(text: str) -> Spec | None:
    """A rich rule of castwall's shape, else None."""
    match = _RICH.match(text.strip())
    if not match:
        return None
    low, high, proto = match.groups()
    try:
        return Spec(proto, PortRange(int(low), int(high or low)))
    except ValueError:
        return None


def parse_entry(text: str) -> str | None:
    """An entry as castwall writes it (one IPv4 address, canonical), else None."""
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        return None


@dataclass(frozen=True)
class Journal:
    """Who owns what: entry address -> device UUID, TCP port spec key ("tcp/8010") -> app name."""

    owners: Mapping[str, str] = field(default_factory=dict)
    apps: Mapping[str, str] = field(default_factory=dict)

    def union(self, other: Journal) -> Journal:
        return Journal({**self.owners, **other.owners}, {**self.apps, **other.apps})

    def text(self) -> str:
        return json.dumps({"version": 1, "entries": dict(sorted(self.owners.items())),
                           "ports": dict(sorted(self.apps.items()))}, indent=2) + "\n"


_KEY = re.compile(r"tcp/([0-9]{1,5})(?:-([0-9]{1,5}))?")


def read_journal(text: str) -> tuple[Journal, str | None]:
    """The journal, and why its text is no journal castwall wrote (None: it reads); never raises.

    Whatever is not a valid pair is left out (its entry then reads as nobody's).
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Journal(), f"not valid JSON ({exc.msg} at line {exc.lineno})"
    except RecursionError:  # json's decoder recurses once per level of nesting
        return Journal(), "it nests too deeply"
    if not isinstance(data, dict):
        return Journal(), "not a JSON object"
    owners, apps = {}, {}
    for ip, uuid in (data.get("entries") if isinstance(data.get("entries"), dict) else {}).items():
        try:
            owners[str(ipaddress.IPv4Address(ip))] = canonical_uuid(uuid)
        except (ValueError, TypeError, AttributeError):
            continue
    for key, app in (data.get("ports") if isinstance(data.get("ports"), dict) else {}).items():
        match = _KEY.fullmatch(key)
        try:
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
            rule = Rule(ipaddress.IPv4Address("0.0.0.0"), PortRange(low, high), None, "tcp", app)
        except (ValueError, TypeError, AttributeError):
            continue
        apps[Spec("tcp", rule.ports).key] = rule.app
    return Journal(owners, apps), None


def ipset_findings(info: IpsetInfo) -> list[str]:
    """How the ipset differs from castwall's: hash:ip, family inet, no other option, IPv4 addresses only."""
    out = [] if info.type == "hash:ip" else [f"type {info.type or '?'} (castwall's is hash:ip)"]
    out += [f"option {k}={v}" for k, v in info.options if (k, v) != ("family", "inet")]
    out += [f"entry {e}" for e in info.entries if parse_entry(e) is None]
    return out


def policy_findings(info: PolicyInfo) -> list[str]:
    """How the policy differs from castwall's: ingress ANY, egress HOST, target CONTINUE, only port rules."""
    out = [] if info.target == "CONTINUE" else [f"target {info.target or '?'} (castwall's is CONTINUE)"]
    if info.ingress != ("ANY",):
        out.append(f"ingress zones {' '.join(info.ingress) or 'none'} (castwall's is ANY)")
    if info.egress != ("HOST",):
        out.append(f"egress zones {' '.join(info.egress) or 'none'} (castwall's is HOST)")
    out += list(info.other) + [f"other rich rule: {r}" for r in info.rich_rules if parse_rich(r) is None]
    return out


@dataclass(frozen=True)
class Layer:
    """castwall's ipset and policy in one configuration (runtime or permanent); None: firewalld has no such object."""

    ipset: IpsetInfo | None
    policy: PolicyInfo | None

    @property
    def present(self) -> bool:
        return self.ipset is not None and self.policy is not None

    @property
    def entries(self) -> frozenset[str]:
        return frozenset(e for e in (parse_entry(x) for x in (self.ipset.entries if self.ipset else ())) if e)

    @property
    def specs(self) -> frozenset[Spec]:
        return frozenset(s for s in (parse_rich(r) for r in (self.policy.rich_rules if self.policy else ())) if s)

    def findings(self) -> list[str]:
        return ([f"firewalld ipset {NAME}: {f}" for f in ipset_findings(self.ipset)] if self.ipset else []) + \
               ([f"firewalld policy {NAME}: {f}" for f in policy_findings(self.policy)] if self.policy else [])


@dataclass(frozen=True)
class View:
    runtime: Layer
    permanent: Layer
    files: bool = False  # the .deb's XML files are on disk (firewalld loads them on its next reload)

    @property
    def live(self) -> Layer:
        """What filters now; before castwall's objects are loaded, what a reload will load."""
        return self.runtime if self.runtime.present else self.permanent


SHIPPED = Layer(IpsetInfo("hash:ip", (("family", "inet"),), ()),
                PolicyInfo("CONTINUE", ("ANY",), ("HOST",), (Spec("udp", PortRange(32768, 60999)).rich_rule,), ()))


def rule_set(layer: Layer, journal: Journal) -> RuleSet:
    """Every entry x every port rule, owners from the journal; odd things of the two objects as odd_tagged."""
    rules = []
    for ip in sorted(layer.entries, key=lambda a: int(ipaddress.IPv4Address(a))):
        owner = journal.owners.get(ip)
        for spec in sorted(layer.specs):
            app = journal.apps.get(spec.key) if owner else None  # the journal names the apps of TCP ports only
            rules.append(Rule(ipaddress.IPv4Address(ip), spec.ports, owner if spec.proto == "udp" or app else None,
                              spec.proto, app))
    return RuleSet(tuple(rules), tuple(layer.findings()), 0)


def traffic(rule: Rule) -> tuple:
    return (rule.ip, rule.proto, rule.ports)


def product(rules: Iterable[Rule]) -> tuple[dict[str, str | None], dict[Spec, str | None]]:
    """The entries (with owners) and port specs (with apps) whose product is exactly these rules.

    Raises ToolFailed when they are not a product: firewalld's policy gives
    every port to every entry, so it cannot hold such a set.
    """
    rules = list({traffic(r): r for r in rules}.values())
    ips = {str(r.ip) for r in rules}
    specs = {Spec(r.proto, r.ports) for r in rules}
    if any(r.ip.version != 4 for r in rules):
        raise ToolFailed("castwall's firewalld ipset holds IPv4 addresses only")
    if len(rules) != len(ips) * len(specs):
        raise ToolFailed(f"the rules would not give every address the same ports ({len(ips)} addresses, "
                         f"{len(specs)} port rules, {len(rules)} rules): firewalld's policy cannot hold that")
    owners: dict[str, str | None] = {}
    for ip in ips:
        named = {r.owner for r in rules if str(r.ip) == ip and r.owner}
        if len(named) > 1:
            raise ToolFailed(f"{ip} would be owned by {len(named)} devices: one firewalld entry has one owner")
        owners[ip] = named.pop() if named else None
    apps: dict[Spec, str | None] = {}
    for spec in specs:
        named = {r.app for r in rules if Spec(r.proto, r.ports) == spec and r.owner and r.app}
        if len(named) > 1:
            raise ToolFailed(f"TCP {spec.text} would serve {len(named)} apps: one port rule names one app")
        apps[spec] = named.pop() if named else None
    return owners, apps


def setup_ops(view: View) -> list[Op]:
    """What makes castwall's objects live: create the missing ones (no .deb files), then one reload."""
    ops = []
    if view.permanent.ipset is None and not view.files:
        ops.append(Op("create-ipset", True))
    if view.permanent.policy is None and not view.files:
        ops.append(Op("create-policy", True))
    if ops or not view.runtime.present:
        ops.append(Op("reload"))
    return ops


def after_setup(view: View, ops: Sequence[Op]) -> View:
    """The view as setup_ops leave it (a guess for the plan: commit reads firewalld again)."""
    if not ops:
        return view
    permanent = Layer(view.permanent.ipset or SHIPPED.ipset, view.permanent.policy or SHIPPED.policy)
    return View(permanent, permanent, view.files)


def change_ops(view: View, ips: Iterable[str], specs: Iterable[Spec] | None) -> list[Op]:
    """The ops that make both configurations hold ips and specs (None: leave the ports as they are).

    New port rules come before old ones go, so a changed range never leaves a
    gap; each change is made at runtime and permanently. Only what filters now
    (view.live) is removed: an entry someone added to one configuration alone
    is theirs.
    """
    ips, live, ops = set(ips), view.live, []
    layers = (view.runtime, view.permanent)
    if specs is not None:
        specs = set(specs)
        for layer, perm in zip(layers, (False, True), strict=True):
            ops += [Op("add-rule", perm, s.rich_rule) for s in sorted(specs - layer.specs)]
        for layer, perm in zip(layers, (False, True), strict=True):
            ops += [Op("remove-rule", perm, s.rich_rule) for s in sorted((live.specs - specs) & layer.specs)]
    order = lambda a: int(ipaddress.IPv4Address(a))
    for layer, perm in zip(layers, (False, True), strict=True):
        ops += [Op("add-entry", perm, ip) for ip in sorted(ips - layer.entries, key=order)]
    for layer, perm in zip(layers, (False, True), strict=True):
        ops += [Op("remove-entry", perm, ip) for ip in sorted((live.entries - ips) & layer.entries, key=order)]
    return ops


def command_text(op: Op) -> list[str]:
    return [shlex.join(argv) for argv in op.argv()]
