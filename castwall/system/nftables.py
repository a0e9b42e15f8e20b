"""nftables: castwall's set and rule inside the admin's own input chain, changed in one atomic batch.

Through python3-nftables (libnftables in castwall's process) where it imports, else the `nft`
command with the same JSON batch; CASTWALL_NFT=cli asks for the command outright. A batch is one
kernel transaction: it applies whole or not at all. After each change castwall rewrites its include
file (castwall's set and rule in nft's syntax), which the admin includes at the end of
/etc/nftables.conf, so that `nft -f /etc/nftables.conf` (which starts with `flush ruleset`) and a
reboot put castwall's part back.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

from castwall.errors import MissingTool, NeedRoot, ToolFailed
from castwall.model import Action, NftChain, Rule, RuleSet, Step
from castwall.sanitize import safe_text
from castwall.system import host
from castwall.system import nft_ruleset as nr
from castwall.system.runner import Runner, missing_tool_message

ENV = "CASTWALL_NFT"


class _Library:
    """libnftables through python3-nftables, loaded once."""

    path = "python3-nftables in castwall's process, one batch"

    def __init__(self):
        import nftables  # Debian's python3-nftables; absent from PyPI's stack

        self.nft = nftables.Nftables()
        self.nft.set_json_output(True)
        self.nft.set_handle_output(True)

    def list(self) -> str:
        rc, out, err = self.nft.cmd("list ruleset")
        if rc != 0:
            raise _failed("nft list ruleset", err)
        return out

    def run(self, commands: list[dict]) -> None:
        rc, _, err = self.nft.json_cmd({"nftables": commands})
        if rc != 0:
            raise _failed("the nft batch", err)


class _Command:
    """The nft command: `nft -j list ruleset`, and a batch as `nft -j -f FILE`."""

    path = "the nft command, one batch"

    def __init__(self, runner: Runner):
        self.runner = runner

    def list(self) -> str:
        done = self.runner.run(["nft", "-j", "-a", "list", "ruleset"], timeout=30)
        if done.returncode != 0:
            raise _failed("nft -j list ruleset", done.stderr or done.stdout)
        return done.stdout

    def run(self, commands: list[dict]) -> None:
        fd, name = tempfile.mkstemp(prefix="castwall-nft-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"nftables": commands}, f)
            done = self.runner.run(["nft", "-j", "-f", name], timeout=30)
        finally:
            os.unlink(name)
        if done.returncode != 0:
            raise _failed("the nft batch", done.stderr or done.stdout)


def _failed(what: str, err: str) -> ToolFailed | NeedRoot:
    lines = [line.strip() for line in (err or "").splitlines() if line.strip()]
    line = safe_text(lines[0] if lines else "no message", 200)
    if "Operation not permitted" in line:
        return NeedRoot("nft needs root: run castwall with sudo")
    return ToolFailed(f"{what} failed: {line}")


class NftablesFirewall:
    """castwall's set and rule in the admin's nftables input chain (chain: found by the caller or given with --nft-chain)."""

    name = "nftables"

    def __init__(self, runner: Runner, chain: NftChain | None, include: Path, conf: Path = Path("/etc/nftables.conf"),
                 *, cli: bool | None = None, note: Callable[[str], None] = lambda s: None):
        self.runner, self.chain, self.include, self.conf = runner, chain, include, conf
        self.note = note
        self.cli = host.switch(ENV, ("auto", "cli")) == "cli" if cli is None else cli
        self._io: _Library | _Command | None = None
        self._found: nr.Found | None = None
        self._adds: list[Rule] = []
        self._deletes: list[Rule] = []
        self._applied: tuple[nr.Found, list[Rule], list[Rule], str | None] | None = None

    # --- reading --------------------------------------------------------------

    def _transport(self) -> _Library | _Command:
        if self._io is None:
            why = f"{ENV}=cli" if self.cli else None
            if why is None:
                try:
                    self._io = _Library()
                except (ImportError, OSError) as exc:
                    why = f"python3-nftables: {safe_text(exc, 80)}"
            if self._io is None:
                self._io = _Command(self.runner)
            self.note(f"nftables path: {self._io.path}" + (f" ({why})" if why else ""))
        return self._io

    def at(self, chain: NftChain) -> NftablesFirewall:
        """The same ruleset (and the same loaded library) with castwall's rule in chain."""
        other = NftablesFirewall(self.runner, chain, self.include, self.conf, cli=self.cli, note=self.note)
        other._io = self._io
        return other

    @property
    def path(self) -> str:
        return f"{self._transport().path}, chain {self.chain}"

    def installed(self) -> bool:
        return self.runner.which("nft") is not None

    def require(self) -> None:
        if not self.installed():
            raise MissingTool(missing_tool_message("nft"))

    def items(self) -> list[dict]:
        """The whole ruleset as nft's JSON objects. Raises ToolFailed, NeedRoot."""
        try:
            return nr.objects(self._transport().list())
        except nr.BadRuleset as exc:
            raise ToolFailed(str(exc)) from None

    def _read(self) -> nr.Found:
        if self.chain is None:
            raise ToolFailed("no nftables input chain to put castwall's rule in: name one with --nft-chain FAMILY TABLE CHAIN")
        found = nr.find(self.items(), self.chain)
        if not found.chain_present:
            raise ToolFailed(f"nftables has no chain {self.chain}: name the admin's input chain with --nft-chain FAMILY TABLE CHAIN")
        return found

    def rules(self) -> RuleSet:
        found = self._read()
        return RuleSet(found.rules, found.odd, 0)

    def active(self) -> bool:
        """Whether the chain filters: it drops by policy or by a last rule."""
        chains = nr.input_chains(self.items())
        return any(c.chain == self.chain and c.drops for c in chains)

    def included(self) -> bool:
        """Whether /etc/nftables.conf includes castwall's file, so a reload keeps castwall's part."""
        try:
            text = self.conf.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        names = "|".join(re.escape(n) for n in (str(self.include), nr.include_pattern(str(self.include))))
        return re.search(r'^\s*include\s+"(' + names + r')"\s*(#.*)?$', text, re.MULTILINE) is not None

    def include_hint(self) -> str:
        return (f"nftables forgets castwall's set and rule when {self.conf} is reloaded or the computer restarts, "
                f"unless {self.conf} ends with this line: include \"{nr.include_pattern(str(self.include))}\"")

    def problems(self, recorded: Sequence[Rule] = ()) -> list[str]:
        """What status reports: castwall's set or rule missing (after a reload without the include), doubled, not first."""
        found = self._read()
        out = []
        if recorded and not found.set_present:
            out.append(f"castwall's set {nr.SET} is missing from table {self.chain.family} {self.chain.table}: "
                       "was the ruleset reloaded without castwall's include file? 'sudo castwall setup' puts it back")
        if (recorded or found.rules) and not found.rule_handles:
            out.append(f"castwall's rule is missing from chain {self.chain}: nothing in set {nr.SET} is let in; "
                       "'sudo castwall setup' puts it back")
        if len(found.rule_handles) > 1:
            out.append(f"castwall's rule is in chain {self.chain} {len(found.rule_handles)} times; the next setup keeps one")
        if (recorded or found.rules) and not self.included():
            out.append(self.include_hint())
        return out

    # --- the plan -------------------------------------------------------------

    def commands(self, steps: Sequence[Step]) -> list[str]:
        found = self._found or self._read()
        return [nr.command_text(c) for c in self._batch(found, *self._split(found, steps))] + [
            f"write {self.include} (castwall's set and rule, for {self.conf} to include)"]

    def _split(self, found: nr.Found, steps: Sequence[Step]) -> tuple[list[Rule], list[Rule]]:
        present = set(found.rules)
        adds = [s.rule for s in steps if s.action is Action.ADD and s.rule not in present]
        deletes = [s.rule for s in steps if s.action is Action.DELETE and s.rule in present]
        return adds, deletes

    def _batch(self, found: nr.Found, adds: list[Rule], deletes: list[Rule]) -> list[dict]:
        after = (set(found.rules) - set(deletes)) | set(adds)
        return nr.batch(self.chain, found, adds, deletes, keep=bool(after))

    # --- a run: record the steps, then one batch ------------------------------

    def begin(self) -> None:
        self._found = self._read()
        if not self._found.set_ok and self._found.set_present:
            raise ToolFailed(f"table {self.chain.family} {self.chain.table} has a set named {nr.SET} of another type, "
                             "which castwall did not create; castwall leaves it alone")
        self._adds, self._deletes, self._applied = [], [], None

    def apply(self, step: Step) -> bool:
        pending = (set(self._found.rules) - set(self._deletes)) | set(self._adds)
        if step.rule.ip.version != 4:
            raise ToolFailed(f"castwall's nftables set holds IPv4 addresses; {step.rule.ip} is not one")
        if step.action is Action.ADD:
            if step.rule in pending:
                return False
            self._deletes = [r for r in self._deletes if r != step.rule]
            if step.rule not in self._found.rules:
                self._adds.append(step.rule)
            return True
        if step.rule not in pending:
            return False
        self._adds = [r for r in self._adds if r != step.rule]
        if step.rule in self._found.rules:
            self._deletes.append(step.rule)
        return True

    def commit(self) -> None:
        found, adds, deletes = self._found, list(self._adds), list(self._deletes)
        after = (set(found.rules) - set(deletes)) | set(adds)
        old_include = _read_text(self.include)
        commands = self._batch(found, adds, deletes)
        if deletes:
            # Before the batch, the file holds only what stays: killed between the batch and the final file,
            # a reboot would not bring back a rule this run deleted.
            self._write_include(set(found.rules) - set(deletes))
        if commands:
            try:
                self._transport().run(commands)
            except (ToolFailed, NeedRoot):
                self._put_back(old_include)
                raise
        self._applied = (found, adds, deletes, old_include)
        self._write_include(after)

    def _include_text(self, rules: Iterable[Rule]) -> str:
        return nr.include_text(self.chain, sorted((r for r in rules if r.owner), key=Rule.sort_key), str(self.include))

    def _write_include(self, rules: Iterable[Rule]) -> None:
        """castwall's rules (of these) into the include file. Raises ToolFailed."""
        try:
            host.write_file(self.include, self._include_text(rules))
        except OSError as exc:
            raise ToolFailed(f"cannot write {self.include}: {exc.strerror or exc}") from None

    def sync(self) -> None:
        """Rewrite the include file from the live set (a run killed before writing it left it behind)."""
        rules = self._read().rules
        if _read_text(self.include) != self._include_text(rules):
            try:
                self._write_include(rules)
            except ToolFailed as exc:  # a run that changes the rules stops on it, and undoes its batch
                self.note(exc.message)

    def revert(self, done: Sequence[Step], progress: Callable[[str], None]) -> tuple[list[Step], str]:
        """Undo a committed batch with its inverse batch, and put the include file back."""
        if self._applied is None:
            return [], ""  # the batch did not run, or the kernel refused it whole: nothing changed
        found, adds, deletes, old_include = self._applied
        try:
            inverse = nr.restore(self.chain, self._read(), found)
            for command in inverse:
                progress(f"undo: {nr.command_text(command)}")
            if inverse:
                self._transport().run(inverse)
        except (ToolFailed, NeedRoot) as exc:
            return list(done), f" (nftables: {exc.message})"
        if not self._put_back(old_include):
            return [], f"; castwall's rules are as before, but {self.include} could not be restored"
        self._applied = None
        return [], ""

    def _put_back(self, old: str | None) -> bool:
        """The include file as it was before the run; False when it could not be written."""
        try:
            if old is None:
                self.include.unlink(missing_ok=True)
            else:
                host.write_file(self.include, old)
        except OSError:
            return False
        return True

    def end(self) -> None:
        self._found, self._adds, self._deletes = None, [], []


def _read_text(path: Path) -> str | None:
    """The file's text; None when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None
