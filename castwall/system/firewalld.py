"""firewalld: castwall's rules as the entries of ipset castwall times the port rules of policy castwall.

Rich rules carry no comment, so castwall cannot tag what it writes the way it
tags ufw rules. It owns two named objects instead, and keeps a journal (JSON
in its state directory) saying which entry is which device's and which TCP
port serves which app. Every entry meets every port of the policy, so the
rules castwall can hold here are always a product: addresses x ports.

firewalld forgets runtime-only changes on a reload, and makes a permanent
change live only on a reload: castwall changes both, one call each, and never
copies the whole runtime configuration to the permanent one (that would
persist other programs' runtime changes too).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from castwall.errors import CastwallError, MissingTool, ToolFailed
from castwall.model import Action, PortRange, Rule, RuleSet, Step
from castwall.system.firewalld_bus import NAME, BusTransport, CommandTransport, IpsetInfo, Op, PolicyInfo, Transport
from castwall.system.host import write_file
from castwall.system.runner import Runner, missing_tool_message

SHIPPED_FILES = (Path("/usr/lib/firewalld/ipsets/castwall.xml"), Path("/usr/lib/firewalld/policies/castwall.xml"))
_RICH = re.compile(r'^rule family="ipv4" source ipset="castwall" port port="([0-9]{1,5})(?:-([0-9]{1,5}))?" '
                   r'protocol="(udp|tcp)" accept$')


def forced_cli(environ: Mapping[str, str] = os.environ) -> bool:
    """CASTWALL_FIREWALLD=cli asks for the firewall-cmd path even where python3-firewall is installed."""
    return environ.get("CASTWALL_FIREWALLD", "").strip().lower() == "cli"


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


_KEY = re.compile(r"^tcp/([0-9]{1,5})(?:-([0-9]{1,5}))?$")


def parse_journal(text: str) -> Journal:
    """The journal's JSON; whatever is not a valid pair is left out (its entry then reads as nobody's)."""
    try:
        data = json.loads(text)
    except ValueError:
        return Journal()
    data = data if isinstance(data, dict) else {}
    owners, apps = {}, {}
    for ip, uuid in (data.get("entries") if isinstance(data.get("entries"), dict) else {}).items():
        try:
            rule = Rule(ipaddress.IPv4Address(ip), PortRange(1, 1), uuid)
        except (ValueError, TypeError, AttributeError):
            continue
        owners[str(rule.ip)] = rule.owner
    for key, app in (data.get("ports") if isinstance(data.get("ports"), dict) else {}).items():
        match = _KEY.match(key)
        try:
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
            rule = Rule(ipaddress.IPv4Address("0.0.0.0"), PortRange(low, high), None, "tcp", app)
        except (ValueError, TypeError, AttributeError):
            continue
        apps[Spec("tcp", rule.ports).key] = rule.app
    return Journal(owners, apps)


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
            app = journal.apps.get(spec.key) if spec.proto == "tcp" and owner else None
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
        for layer, perm in zip(layers, (False, True)):
            ops += [Op("add-rule", perm, s.rich_rule) for s in sorted(specs - layer.specs)]
        for layer, perm in zip(layers, (False, True)):
            ops += [Op("remove-rule", perm, s.rich_rule) for s in sorted((live.specs - specs) & layer.specs)]
    order = lambda a: int(ipaddress.IPv4Address(a))  # noqa: E731
    for layer, perm in zip(layers, (False, True)):
        ops += [Op("add-entry", perm, ip) for ip in sorted(ips - layer.entries, key=order)]
    for layer, perm in zip(layers, (False, True)):
        ops += [Op("remove-entry", perm, ip) for ip in sorted((live.entries - ips) & layer.entries, key=order)]
    return ops


def command_text(op: Op) -> list[str]:
    return [shlex.join(argv) for argv in op.argv()]


class FirewalldFirewall:
    """firewalld 1.x: ipset castwall and policy castwall, changed runtime and permanent in one commit."""

    name = "firewalld"

    def __init__(self, runner: Runner, journal: Path, *, note: Callable[[str], None] = lambda s: None,
                 cli: bool | None = None, transport: Transport | None = None,
                 shipped_files: Sequence[Path] = SHIPPED_FILES):
        self.runner, self.journal_path, self.note = runner, journal, note
        self.cli = forced_cli() if cli is None else cli
        self._transport = transport
        self.shipped_files = tuple(shipped_files)
        self._view: View | None = None
        self._journal = Journal()
        self._before: dict[tuple, Rule] = {}
        self._working: dict[tuple, Rule] = {}
        self._ops: list[Op] = []  # native ops done and not undone, oldest first
        self._stuck: list[str] = []  # undo calls that failed in this run
        self._journal_written = False

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            if not self.cli:
                try:
                    self._transport = BusTransport()
                except ImportError:
                    pass  # no python3-firewall (a pip install): firewall-cmd does the same
            if self._transport is None:
                self._transport = CommandTransport(self.runner)
        return self._transport

    @property
    def path(self) -> str:
        return self.transport.path

    def installed(self) -> bool:
        return self.runner.which("firewall-cmd") is not None

    def require(self) -> None:
        if not self.installed():
            raise MissingTool(missing_tool_message("firewall-cmd"))

    def active(self) -> bool:
        try:
            return self.transport.running()
        except CastwallError:
            return False

    def _read(self) -> View:
        t = self.transport
        return View(Layer(t.ipset(False), t.policy(False)), Layer(t.ipset(True), t.policy(True)),
                    bool(self.shipped_files) and all(p.is_file() for p in self.shipped_files))

    def _read_journal(self) -> Journal:
        try:
            return parse_journal(self.journal_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Journal()
        except (OSError, UnicodeDecodeError) as exc:
            self.note(f"cannot read {self.journal_path} ({exc}): firewalld's entries read as nobody's")
            return Journal()

    def _write_journal(self, journal: Journal) -> None:
        try:
            write_file(self.journal_path, journal.text())
        except OSError as exc:
            raise ToolFailed(f"cannot write {self.journal_path}: {exc.strerror or exc}") from None
        self._journal_written = True

    def rules(self) -> RuleSet:
        return rule_set(self._read().live, self._read_journal())

    def problems(self, recorded: Sequence[Rule] = ()) -> list[str]:
        """What status reports; castwall's ipset or policy missing only once castwall has rules to keep there."""
        view = self._read()
        out = []
        for layer, where in ((view.runtime, "at runtime"), (view.permanent, "in the permanent configuration")):
            out += [f"firewalld has no {kind} {NAME} {where}: 'sudo castwall setup' makes it" for kind, obj in
                    (("ipset", layer.ipset), ("policy", layer.policy)) if obj is None and recorded]
        if view.runtime.present and view.permanent.present:
            for what, rt, perm in (("entries", view.runtime.entries, view.permanent.entries),
                                   ("port rules", {s.key for s in view.runtime.specs},
                                    {s.key for s in view.permanent.specs})):
                if rt != perm:
                    out.append(f"firewalld's {NAME} {what} differ between runtime and permanent: only at runtime "
                               f"{', '.join(sorted(rt - perm)) or '-'}; only permanent {', '.join(sorted(perm - rt)) or '-'}")
        return out + [f"{f} (not castwall's shape: castwall will not change it)" for f in view.live.findings()]

    def sync(self) -> None:
        """Nothing to do: every change is made at runtime and in the permanent configuration alike."""

    # --- a run ---------------------------------------------------------------------

    def begin(self) -> None:
        self._view, self._journal = self._read(), self._read_journal()
        self._before = {traffic(r): r for r in rule_set(self._view.live, self._journal).rules}
        self._working = dict(self._before)
        self._ops, self._stuck, self._journal_written = [], [], False
        self._journal_existed = self.journal_path.exists()

    def apply(self, step: Step) -> bool:
        """Record one step (nothing changes before commit); True when it changes the rule set."""
        key = traffic(step.rule)
        if step.action is Action.ADD:
            if key in self._working:
                return False
            self._working[key] = step.rule
        else:
            if key not in self._working:
                return False
            del self._working[key]
        return True

    def _targets(self, view: View, rules: Iterable[Rule]):
        findings = view.live.findings() + (view.permanent.findings() if view.permanent is not view.live else [])
        if findings:
            raise ToolFailed(f"castwall does not change firewalld's {NAME} objects, which are not its shape: {findings[0]}")
        owners, apps = product(rules)
        return owners, (apps if owners else None)

    def commands(self, steps: Sequence[Step]) -> list[str]:
        """The firewall-cmd commands the steps will run, as the plan shows them."""
        view = self._view or self._read()
        before = {traffic(r): r for r in rule_set(view.live, Journal()).rules}
        working = dict(before)
        for step in steps:
            if step.action is Action.ADD:
                working.setdefault(traffic(step.rule), step.rule)
            else:
                working.pop(traffic(step.rule), None)
        if working.keys() == before.keys():
            return []
        owners, apps = self._targets(view, working.values())
        setup = setup_ops(view)
        ops = setup + change_ops(after_setup(view, setup), owners, apps)
        return [line for op in ops for line in command_text(op)]

    def _do(self, op: Op) -> None:
        if self.transport.do(op):
            self._ops.append(op)

    def commit(self) -> None:
        """Make the recorded change; on failure undo what was done, newest first, and raise ToolFailed."""
        if self._working.keys() == self._before.keys():
            return
        view = self._view
        owners, apps = self._targets(view, self._working.values())
        try:
            setup = setup_ops(view)
            for op in setup:
                self._do(op)
            if setup:
                view = self._read()
                if not view.runtime.present:
                    raise ToolFailed(f"firewalld did not load its {NAME} ipset and policy on a reload")
                self._targets(view, ())
            new = Journal({ip: o for ip, o in owners.items() if o},
                          {s.key: a for s, a in (apps or {}).items() if a and s.proto == "tcp"})
            if apps is None:  # no entries left: the ports stay, and so do their apps
                new = Journal({}, {k: a for k, a in self._journal.apps.items() if k in {s.key for s in view.live.specs}})
            self._write_journal(self._journal.union(new))
            for op in change_ops(view, owners, None if apps is None else apps.keys()):
                self._do(op)
            self._write_journal(new)
        except CastwallError as exc:
            failed = self._undo(self.note)
            left = f"; undoing failed for: {'; '.join(failed)}" if failed else ""
            raise ToolFailed(f"{exc.message}{left}") from None

    def _undo(self, progress: Callable[[str], None]) -> list[str]:
        """Undo the native ops done, newest first; the commands of those whose undo failed."""
        failed = []
        while self._ops:
            op = self._ops.pop()
            for inverse in op.inverse():
                progress(f"undo: {command_text(inverse)[0]}")
                try:
                    self.transport.do(inverse)
                except CastwallError:
                    failed.append(command_text(inverse)[0])
                    self._stuck.append(failed[-1])
        if self._journal_written:
            try:
                if self._journal_existed:
                    write_file(self.journal_path, self._journal.text())
                else:
                    self.journal_path.unlink(missing_ok=True)
                self._journal_written = False
            except OSError as exc:
                progress(f"undo: cannot put back {self.journal_path}: {exc.strerror or exc}")
        return failed

    def revert(self, done: Sequence[Step], progress: Callable[[str], None]) -> tuple[list[Step], str]:
        """Put castwall's ipset and policy back as begin() found them, runtime and permanent."""
        self._undo(progress)
        if self._stuck:
            return list(done), f" (firewalld: these undo calls failed: {'; '.join(self._stuck)})"
        return [], ""

    def end(self) -> None:
        self._view = None
