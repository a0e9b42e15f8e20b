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

import os
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from castwall.errors import CastwallError, MissingTool, ToolFailed
from castwall.model import Action, Rule, RuleSet, Step
from castwall.system.firewalld_bus import NAME, BusTransport, CommandTransport, Op, Transport
from castwall.system.firewalld_view import (SHIPPED_FILES, Journal, Layer, View, after_setup, change_ops, command_text,
                                            product, read_journal, rule_set, setup_ops, traffic)
from castwall.system.host import keep_copy, switch, write_file
from castwall.system.runner import Runner, missing_tool_message

def forced_cli(environ: Mapping[str, str] = os.environ) -> bool:
    """CASTWALL_FIREWALLD=cli asks for the firewall-cmd path even where python3-firewall is installed."""
    return switch("CASTWALL_FIREWALLD", ("auto", "cli"), environ.get("CASTWALL_FIREWALLD", "")) == "cli"


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
        self._journal_unusable = False  # the journal read last was unusable: keep it before writing over it

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
        ipset, policy, perm_ipset, perm_policy = self.transport.read()
        return View(Layer(ipset, policy), Layer(perm_ipset, perm_policy),
                    bool(self.shipped_files) and all(p.is_file() for p in self.shipped_files))

    def _read_journal(self) -> Journal:
        try:
            text = self.journal_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Journal()
        except (OSError, UnicodeDecodeError) as exc:
            self.note(f"cannot read {self.journal_path} ({exc}): firewalld's entries read as nobody's")
            self._journal_unusable = True
            return Journal()
        journal, problem = read_journal(text)
        if problem:
            self.note(f"{self.journal_path} is unusable ({problem}): firewalld's entries read as nobody's")
            self._journal_unusable = True
        return journal

    def _write_journal(self, journal: Journal) -> None:
        try:
            if self._journal_unusable:  # nothing is lost: the unusable journal is kept beside the new one
                kept = keep_copy(self.journal_path, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
                self._journal_unusable = False
                if kept is not None:
                    self.note(f"the unusable journal was kept as {kept}")
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
        """Make the permanent configuration hold what runs now, of what is castwall's: a run killed between a
        runtime change and its permanent twin left them apart, and a reload would bring back (or drop) it.
        Only entries the journal names and port rules of castwall's shape; an extra permanent one goes."""
        view, journal = self._read(), self._read_journal()
        if not (view.runtime.present and view.permanent.present):
            return
        rt, perm = view.runtime, view.permanent
        ops = [Op("add-entry", True, ip) for ip in sorted(rt.entries - perm.entries) if ip in journal.owners]
        ops += [Op("remove-entry", True, ip) for ip in sorted(perm.entries - rt.entries) if ip in journal.owners]
        ops += [Op("add-rule", True, s.rich_rule) for s in sorted(rt.specs - perm.specs)]
        ops += [Op("remove-rule", True, s.rich_rule) for s in sorted(perm.specs - rt.specs)]
        for op in ops:
            self.note(f"firewalld: {command_text(op)[0]} (runtime and permanent differed: a run was cut short)")
            self.transport.do(op)

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
        hand = {str(r.ip) for r in self._before.values() if r.owner is None}
        adopted = sorted(ip for ip in hand if owners.get(ip))
        if adopted:
            raise ToolFailed(f"{', '.join(adopted)} is in firewalld's ipset {NAME} as an entry castwall did not add: "
                             "castwall gives it no owner and leaves it alone")
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
        if self._journal_written and not self._stuck:  # after a failed undo the union stays: castwall owns what it left
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
