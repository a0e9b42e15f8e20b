"""ufw through its own Python library, inside castwall's process.

Each `ufw` command is a new Python process that loads ufw, probes iptables and
rewrites its rules files: ~150-230 ms a rule. Loaded once, the same library
adds or deletes a rule in ~15 ms, and a run reloads the firewall once at the
end instead of after every delete. The rules castwall hands it are the very
`ufw allow ...` argument lists the CLI path runs, parsed by ufw's own parser.

This path needs ufw 0.36's library (Debian 12 ships 0.36.2) and root. Where
it cannot be loaded, castwall uses the ufw command (castwall.system.ufw); the
environment variable CASTWALL_UFW=cli asks for that path outright.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.util
import io
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from castwall.errors import CastwallError, NeedRoot, ToolFailed
from castwall.model import RuleSet, Step
from castwall.system.host import write_file
from castwall.system.runner import SAFE_PATH, Runner
from castwall.system.ufw import UfwCommon, UfwFirewall, outcome, parse_show_added

DEBIAN_LIBRARY = Path("/usr/lib/python3/dist-packages/ufw")
LOCK_FILE = "/run/ufw.lock"  # the lock the ufw command takes for each call
SKIPPED_RELOAD = "(skipped reloading firewall)"


class Unavailable(Exception):
    """ufw's library cannot be used here; the reason says why."""


def _import_ufw():
    """Import ufw's package: from this Python's path, else from Debian's location."""
    try:
        import ufw  # noqa: F401  (Debian's python3 finds it in dist-packages)
    except ImportError:
        init = DEBIAN_LIBRARY / "__init__.py"
        if not init.is_file():
            raise Unavailable("ufw's Python library is not installed") from None
        spec = importlib.util.spec_from_file_location("ufw", init, submodule_search_locations=[str(DEBIAN_LIBRARY)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["ufw"] = module
        spec.loader.exec_module(module)
    if not hasattr(builtins, "_"):
        # ufw's modules translate with a global _(); castwall reads ufw's
        # messages, so they stay in English whatever the locale.
        builtins._ = str
    frontend = importlib.import_module("ufw.frontend")
    backend = importlib.import_module("ufw.backend_iptables")
    util = importlib.import_module("ufw.util")
    common = importlib.import_module("ufw.common")
    # The parts of ufw's library castwall relies on; ufw 0.36 has them all.
    needed = (hasattr(frontend, "parse_command") and hasattr(frontend, "UFWFrontend")
              and hasattr(backend.UFWBackendIptables, "_read_rules")
              and hasattr(backend.UFWBackendIptables, "_reload_user_rules")
              and "allow_reload" in backend.UFWBackendIptables.set_rule.__code__.co_varnames
              and hasattr(backend.UFWBackendIptables, "get_app_rules_from_system")
              and hasattr(backend.UFWBackendIptables, "get_app_rules_from_template")
              and hasattr(util, "create_lock"))
    if not needed:
        raise Unavailable("this ufw's Python library lacks the functions castwall uses (ufw 0.36 has them)")
    return frontend, util, common


class _Sink(io.TextIOWrapper):
    """Where ufw's prints go: ufw writes bytes to .buffer, print() writes text."""

    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8", errors="replace")

    def getvalue(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("utf-8", "replace")


@contextlib.contextmanager
def _quiet(sink: _Sink):
    """ufw prints its warnings and runs iptables with this process's environment:
    catch the prints, and give its children the system PATH and the C locale."""
    saved = {k: os.environ.get(k) for k in ("PATH", "LANG", "LC_ALL")}
    os.environ.update(PATH=SAFE_PATH, LANG="C", LC_ALL="C")
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class UfwLibrary(UfwCommon):
    """ufw's rules read and changed through its Python library, under ufw's own lock.

    A run: begin() takes the lock and re-reads the rules files; apply() per
    step writes them and changes the running chains, without ufw's reload per
    delete; commit() reloads the firewall once if a step needed it; revert()
    puts the files back byte for byte and reloads; end() releases the lock.
    """

    path = "ufw's Python library, in process"

    def __init__(self, runner: Runner, *, debug: Callable[[str], None] = lambda m: None):
        self.cli = UfwFirewall(runner)  # for installed()/require(): the ufw package is what must be there
        self.debug = debug
        self._ui = None
        self._lock = None
        self._snapshot: dict[str, bytes | None] = {}
        self._reload = False
        self._frontend = self._util = self._common = None  # ufw's modules, once loaded

    # --- loading -------------------------------------------------------------

    def load(self) -> None:
        """Load the library and ufw's configuration. Raises Unavailable, NeedRoot."""
        if self._ui is not None:
            return
        if os.geteuid() != 0:
            raise NeedRoot("ufw needs root: run castwall with sudo")
        try:
            frontend, util, common = _import_ufw()
        except Unavailable:
            raise
        except Exception as exc:  # a broken or foreign ufw package
            raise Unavailable(f"ufw's Python library does not load: {type(exc).__name__}: {exc}") from None
        sink = _Sink()
        try:
            with _quiet(sink):
                self._ui = frontend.UFWFrontend(False)
        except common.UFWError as exc:
            raise Unavailable(f"ufw's library refused to start: {exc.value}") from None
        except SystemExit:
            raise Unavailable(f"ufw's library refused to start: {sink.getvalue().strip()}") from None
        self._frontend, self._util, self._common = frontend, util, common
        if sink.getvalue().strip():
            self.debug(f"ufw said while loading: {' / '.join(sink.getvalue().split(chr(10))).strip(' /')}")

    def _call(self, what: str, fn, *args):
        """Run one library call, its prints caught; ufw's errors become ToolFailed."""
        sink = _Sink()
        try:
            with _quiet(sink):
                return fn(*args)
        except self._common.UFWError as exc:
            raise ToolFailed(f"'{what}' failed: {exc.value}") from None
        except SystemExit:
            lines = [ln for ln in sink.getvalue().splitlines() if ln.strip()]
            raise ToolFailed(f"'{what}' failed: {lines[-1] if lines else 'ufw stopped'}") from None
        except ValueError as exc:  # ufw's parser: not a rule it knows
            raise ToolFailed(f"'{what}' failed: {exc}") from None
        except OSError as exc:
            raise ToolFailed(f"'{what}' failed: {exc.strerror or exc}") from None

    # --- the Firewall interface ------------------------------------------------

    def installed(self) -> bool:
        return self.cli.installed()

    def require(self) -> None:
        self.cli.require()

    def _reread(self) -> None:
        backend = self._ui.backend
        backend.rules, backend.rules6 = [], []
        self._call("read ufw's rules files", backend._read_rules)

    def rules(self) -> RuleSet:
        """The rules in ufw's files, read now (as `ufw show added` prints them)."""
        self.load()
        with self._locked():
            self._reread()
            text = self._call("ufw show added", self._ui.get_show_added)
        return parse_show_added(text)

    def active(self) -> bool:
        """Whether ufw is enabled (ENABLED=yes in ufw.conf), as `ufw status` decides it."""
        self.load()
        return bool(self._ui.backend.is_enabled())

    @contextlib.contextmanager
    def _locked(self):
        if self._lock is not None:  # a run holds it already
            yield
            return
        self.begin_lock()
        try:
            yield
        finally:
            self.end()

    def begin_lock(self) -> None:
        try:
            self._lock = self._util.create_lock(lockfile=LOCK_FILE)
        except OSError as exc:
            raise ToolFailed(f"cannot take ufw's lock {LOCK_FILE}: {exc.strerror or exc}") from None

    def begin(self) -> None:
        """Start a run: ufw's lock, the files as they are now, and a copy of them for revert()."""
        self.load()
        self.begin_lock()
        try:
            self._snapshot = {}
            for key in ("rules", "rules6"):
                path = self._ui.backend.files[key]
                try:
                    self._snapshot[path] = Path(path).read_bytes()
                except FileNotFoundError:
                    self._snapshot[path] = None
                except OSError as exc:
                    raise ToolFailed(f"cannot read {path}: {exc.strerror}") from None
            self._reload = False
            self._reread()
        except BaseException:
            self.end()
            raise

    def apply(self, step: Step) -> bool:
        """One step: ufw's parser reads the same arguments the ufw command gets."""
        args = step.ufw_args()
        what = f"ufw {' '.join(args)}"
        parsed = self._call(what, self._frontend.parse_command, ["ufw", *args])
        rule, iptype = parsed.data["rule"], parsed.data["iptype"]
        if iptype not in ("v4", "v6"):
            raise ToolFailed(f"'{what}': ufw reads it as a rule for {iptype}, not one address family")
        backend = self._ui.backend
        if iptype == "v6" and not backend.use_ipv6():
            raise ToolFailed(f"'{what}' failed: IPv6 is disabled in ufw's configuration")
        rule.set_v6(iptype == "v6")
        messages = [str(self._call(what, backend.set_rule, r, False)) for r in self._expanded(what, rule)]
        message = "\n".join(messages) if messages else "Could not delete non-existent rule"
        if SKIPPED_RELOAD in message:
            self._reload = True
        return outcome(step, message.replace(SKIPPED_RELOAD, "").strip(), message)

    def _expanded(self, what: str, rule) -> list:
        """The rules ufw stores for one: an app rule is one per port entry of its profile, as `ufw` makes them."""
        if not rule.dapp:
            return [rule]
        backend = self._ui.backend
        if not rule.remove:
            return list(self._call(what, backend.get_app_rules_from_template, rule))
        out = []
        for stored in self._call(what, backend.get_app_rules_from_system, rule, rule.v6):
            r = stored.dup_rule()
            r.remove = True
            r.set_action(rule.action)
            r.set_logtype(rule.logtype)
            out.append(r)
        return out

    def commit(self) -> None:
        """Make the files live: one reload, when a delete or an insert needs it."""
        if self._reload:
            self._call("ufw reload of the user rules", self._ui.backend._reload_user_rules)
            self._reload = False

    def revert(self, done: Sequence[Step], progress: Callable[[str], None]) -> tuple[list[Step], str]:
        """Put ufw's rules files back as begin() found them and reload them.

        Returns the steps that may still differ (all of them, if that failed)
        and words on where they differ.
        """
        progress(f"undo: ufw's rules files put back as they were ({len(done)} change(s))")
        try:
            for path, data in self._snapshot.items():
                _replace(Path(path), data)
        except OSError as exc:
            return list(done), f" (ufw's rules files could not be put back: {exc.strerror or exc})"
        try:
            self._reread()
            if self._ui.backend.is_enabled():
                self._call("ufw reload of the user rules", self._ui.backend._reload_user_rules)
        except CastwallError as exc:
            return list(done), (f" (in the running firewall: ufw's rules files are back as before, but reloading them "
                                f"failed: {exc.message}; 'sudo ufw reload' puts the firewall back)")
        return [], ""

    def end(self) -> None:
        if self._lock is not None:
            self._util.release_lock(self._lock)
            self._lock = None


def _replace(path: Path, data: bytes | None) -> None:
    """Write data to path atomically, keeping its mode (None: the file did not exist)."""
    if data is None:
        path.unlink(missing_ok=True)
        return
    write_file(path, data, keep_mode=True)
