"""castwall's own dnsmasq drop-in: DHCP reservations on a machine that is the LAN's dnsmasq server.

castwall writes one file, <dir>/castwall.conf, and no other. A new version is
staged as a hidden file in the same directory (dnsmasq skips names starting
with a dot), checked with `dnsmasq --test`, then renamed into place. dnsmasq
reads dhcp-host lines from its configuration only at start (SIGHUP does not
re-read it), so a change means restarting its systemd service.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from castwall.errors import BadData, MissingTool, ToolFailed
from castwall.hints import Hints, Reservation, render_dnsmasq
from castwall.sanitize import safe_text
from castwall.system.host import write_file
from castwall.system.runner import Runner

DROPIN_NAME = "castwall.conf"
STAGED_NAME = ".castwall.conf.new"
MARK = "# castwall drop-in:"
HEADER = (
    f"{MARK} written by 'castwall setup --reserve dnsmasq'; 'castwall remove' takes\n"
    "# its reservations away again. castwall rewrites this file: do not edit it.\n"
)
UNITS = ("dnsmasq.service", "pihole-FTL.service")
MAIN_CONFIG = Path("/etc/dnsmasq.conf")
_HOST_LINE = re.compile(r"^\s*dhcp-host\s*=\s*(.*)$")
_MAC = re.compile(r"(?<![0-9a-f:])([0-9a-f]{2}(?::[0-9a-f]{2}){5})(?![0-9a-f:])")


def dropin_text(hints: Hints) -> str:
    return HEADER + render_dnsmasq(hints, header=False)


def reserved_in(text: str) -> tuple[set[str], set[str]]:
    """The MAC addresses and IPv4 addresses that a dnsmasq file's dhcp-host lines name."""
    macs, ips = set(), set()
    for line in text.splitlines():
        m = _HOST_LINE.match(line)
        if not m:
            continue
        fields = [f.strip().lower() for f in m.group(1).split(",")]
        for f in fields:
            macs.update(_MAC.findall(f))
            if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", f):
                ips.add(f)
    return macs, ips


def _read_by_dnsmasq(name: str) -> bool:
    """Would dnsmasq's conf-dir (and Debian's default exclusions) read a file of this name?"""
    return not (name.startswith(".") or name.endswith("~") or (name.startswith("#") and name.endswith("#"))
                or ".dpkg-" in name)


@dataclass
class Change:
    """What --reserve dnsmasq (or remove) would do to the drop-in."""

    path: Path
    old: str | None  # the drop-in's text now (None: there is none)
    new: str | None  # its text afterwards (None: delete it)
    hints: Hints
    conflicts: tuple[tuple[Reservation, str], ...] = ()  # reservations left out: already in another file
    kept: tuple[str, ...] = ()  # on removal: the dhcp-host lines that stay

    @property
    def empty(self) -> bool:
        return self.old == self.new

    def describe(self) -> str:
        n = len(self.hints.reservations)
        if self.empty and self.new is None:
            return "dnsmasq: no device with a rule has a reservation to make; no drop-in is written."
        if self.empty:
            return f"dnsmasq: {self.path} already holds these {n} reservation(s); nothing to change."
        if self.new is None:
            return f"dnsmasq: delete {self.path} (castwall's reservations), then restart dnsmasq."
        lines = [f"dnsmasq: {'write' if self.old is None else 'rewrite'} {self.path} with "
                 f"{len(self.kept) or n} reservation(s), checked with 'dnsmasq --test' first, then restart dnsmasq:"]
        lines += [f"  dhcp-host={r.mac},{r.ip},{r.host}" for r in self.hints.reservations]
        lines += [f"  {line.strip()}" for line in self.kept]
        for r, where in self.conflicts:
            lines.append(f"  left out: {r.host} ({r.mac}, {r.ip}) is already reserved in {where}")
        return "\n".join(lines)


class Dnsmasq:
    """The drop-in file and the dnsmasq service that reads it."""

    def __init__(self, runner: Runner, directory: Path, main_config: Path = MAIN_CONFIG):
        self.runner = runner
        self.directory = directory
        self.main_config = main_config

    @property
    def path(self) -> Path:
        return self.directory / DROPIN_NAME

    @property
    def staged(self) -> Path:
        return self.directory / STAGED_NAME

    def require(self) -> str:
        """Check that dnsmasq serves this machine from a systemd unit castwall can restart; return the unit."""
        if self.runner.which("dnsmasq") is None:
            raise MissingTool("'dnsmasq' is not installed: --reserve dnsmasq is for a machine whose DHCP server is dnsmasq")
        if not self.directory.is_dir():
            raise MissingTool(f"{self.directory} does not exist: --reserve dnsmasq needs dnsmasq's drop-in directory "
                              "(Debian's dnsmasq package and Pi-hole create it)")
        unit = self.active_unit()
        if unit is None:
            raise MissingTool("dnsmasq is not running as a systemd service (" + " or ".join(UNITS)
                              + "), so castwall could not restart it; --reserve dnsmasq is for the LAN's dnsmasq server")
        return unit

    def active_unit(self) -> str | None:
        if self.runner.which("systemctl") is None:
            return None
        for unit in UNITS:
            if self.runner.run(["systemctl", "is-active", "--quiet", unit], timeout=10).returncode == 0:
                return unit
        return None

    def current(self, foreign_ok: bool = False) -> str | None:
        """The drop-in's text, None when there is none.

        Raises BadData if the file is not castwall's, unless foreign_ok (then None).
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise BadData(f"cannot read {self.path}: {getattr(exc, 'strerror', None) or safe_text(exc, 120)}") from None
        if not text.startswith(MARK):
            if foreign_ok:
                return None
            raise BadData(f"{self.path} exists and was not written by castwall; castwall leaves it alone "
                          "(move it away to let castwall manage its reservations there)")
        return text

    def others(self) -> list[tuple[Path, str]]:
        """The other dnsmasq files that may hold reservations: the main config and the drop-ins."""
        out = []
        candidates = [self.main_config]
        with contextlib.suppress(OSError):
            candidates += sorted(p for p in self.directory.iterdir() if p.name != DROPIN_NAME and _read_by_dnsmasq(p.name))
        for p in candidates:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if p.is_file():
                    out.append((p, p.read_text(encoding="utf-8")))
        return out

    def plan(self, hints: Hints) -> Change:
        """The drop-in for these reservations, leaving out any that another dnsmasq file already makes."""
        taken_mac: dict[str, Path] = {}
        taken_ip: dict[str, Path] = {}
        for path, text in self.others():
            macs, ips = reserved_in(text)
            for m in macs:
                taken_mac.setdefault(m, path)
            for ip in ips:
                taken_ip.setdefault(ip, path)
        keep, conflicts = [], []
        for r in hints.reservations:
            where = taken_mac.get(r.mac) or taken_ip.get(str(r.ip))
            if where:
                conflicts.append((r, str(where)))
            else:
                keep.append(r)
        chosen = Hints(tuple(keep), hints.omitted)
        old = self.current()
        new = dropin_text(chosen) if keep else None
        return Change(self.path, old, new, chosen, tuple(conflicts))

    def removal(self, keep_macs: set[str] | None) -> Change | None:
        """The drop-in with only the reservations of keep_macs (None: remove it all).

        Returns None when castwall has no drop-in.
        """
        old = self.current(foreign_ok=True)
        if old is None:
            return None
        blocks: list[list[str]] = []
        kept: list[str] = []
        pending: list[str] = []
        for line in old.splitlines()[HEADER.count("\n"):]:
            pending.append(line)
            m = _HOST_LINE.match(line)
            if m:
                macs, _ = reserved_in(line)
                if keep_macs is not None and macs & keep_macs:
                    blocks.append(pending)
                    kept.append(line)
                pending = []
        if not kept:
            return Change(self.path, old, None, Hints((), ()))
        text = HEADER + "".join(line + "\n" for block in blocks for line in block)
        return Change(self.path, old, text, Hints((), ()), kept=tuple(kept))

    def stage(self, change: Change) -> None:
        """Write the new drop-in beside the old as a hidden file and have dnsmasq check it.

        Raises ToolFailed (and removes the staged file) when dnsmasq rejects it.
        """
        if change.new is None:
            return
        write_file(self.staged, change.new)
        done = self.runner.run(["dnsmasq", "--test", f"--conf-file={self.staged}"], timeout=30)
        if done.returncode != 0:
            self.discard()
            raise ToolFailed(f"'dnsmasq --test' rejected the reservations: {safe_text(done.last_line(), 200)}")

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.staged.unlink()

    @contextlib.contextmanager
    def applied(self, change: Change, unit: str | None, progress: Callable[[str], None]) -> Iterator[None]:
        """Put the staged drop-in in place (or delete it) and restart dnsmasq.

        If that fails, or the body of the with-block raises, the old drop-in is
        put back and dnsmasq restarted again, and the exception goes on.
        """
        if change.empty:
            yield
            return
        try:
            self._install(change.new)
            if unit:
                progress(f"Restarting {unit} so that dnsmasq reads {self.path.parent} again")
                self._restart(unit)
            yield
        except BaseException:
            self._install(change.old)
            if unit:
                with contextlib.suppress(ToolFailed):
                    self._restart(unit)
            raise
        finally:
            self.discard()

    def _install(self, text: str | None) -> None:
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._sync_dir()
        else:
            write_file(self.path, text)

    def _restart(self, unit: str) -> None:
        done = self.runner.run(["systemctl", "restart", unit], timeout=60)
        if done.returncode != 0:
            raise ToolFailed(f"'systemctl restart {unit}' failed: {safe_text(done.last_line(), 200)}")


    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
