"""Host facts and files: where things live, root, the run lock, the state file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from castwall.errors import BadData, Busy, UsageError
from castwall.model import State
from castwall.sanitize import safe_text
from castwall.state import dump_state, load_state
from castwall.system.neighbours import ARP_PATH
from castwall.system.sysctl import PORT_RANGE_PATH

STATE_DIR_ENV = "CASTWALL_STATE_DIR"
DNSMASQ_DIR_ENV = "CASTWALL_DNSMASQ_DIR"


@dataclass(frozen=True)
class Paths:
    state_dir: Path = Path("/var/lib/castwall")
    lock_file: Path = Path("/run/castwall.lock")
    port_range: Path = PORT_RANGE_PATH
    arp: Path = ARP_PATH
    dnsmasq_dir: Path = Path("/etc/dnsmasq.d")
    dnsmasq_conf: Path = Path("/etc/dnsmasq.conf")  # dnsmasq's main configuration, read to see whether it reads dnsmasq_dir
    ufw_profiles: Path = Path("/etc/ufw/applications.d/castwall")  # castwall's ufw application profiles (the .deb ships them)
    systemd_booted: Path = Path("/run/systemd/system")  # present while systemd runs the system (sd_booted)
    ufw_conf: Path = Path("/etc/ufw/ufw.conf")  # ENABLED=yes while ufw filters
    nftables_conf: Path = Path("/etc/nftables.conf")  # the admin's ruleset, which nftables.service loads
    system_bus: Path = Path("/run/dbus/system_bus_socket")  # firewalld answers on the system bus

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def follow_record(self) -> Path:
        """The last follow pass: when, how it ended, what it changed (status and follow status read it)."""
        return self.state_dir / "follow-last.json"

    @property
    def nft_include(self) -> Path:
        """castwall's set and rule in nft's syntax, which /etc/nftables.conf includes so that a reload keeps them."""
        return self.state_dir / "nftables.nft"

    @property
    def firewalld_journal(self) -> Path:
        """Which device owns which entry of firewalld's castwall ipset (firewalld keeps no comments)."""
        return self.state_dir / "firewalld.json"

    @classmethod
    def from_environment(cls, environ=os.environ) -> Paths:
        paths = cls()
        if environ.get(STATE_DIR_ENV):
            paths = replace(paths, state_dir=Path(environ[STATE_DIR_ENV]))
        if environ.get(DNSMASQ_DIR_ENV):
            paths = replace(paths, dnsmasq_dir=Path(environ[DNSMASQ_DIR_ENV]))
        return paths


def is_root() -> bool:
    return os.geteuid() == 0


def read_state(path: Path) -> tuple[State | None, str | None]:
    """The saved state, and why the file could not be used, if so.

    (None, None): castwall has not saved a state yet. (None, reason): the file
    exists but is unreadable, truncated, corrupt or of a newer format; the
    caller rebuilds from the tagged rules in ufw and keeps the file (see
    write_state's keep_old).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {path}: {getattr(exc, 'strerror', None) or safe_text(exc, 120)}"
    try:
        return load_state(text, str(path)), None
    except BadData as exc:
        return None, exc.message


def keep_copy(path: Path, stamp: str) -> Path | None:
    """Copy an unusable file of castwall's aside before it is replaced; None when there is none."""
    if not path.exists():
        return None
    for n in range(100):
        copy = path.with_name(f"{path.name}.unusable-{stamp}" + (f".{n}" if n else ""))
        try:
            with open(path, "rb") as src:
                fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                    dst.flush()
                    os.fsync(dst.fileno())
            return copy
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, f"too many copies of the unusable {path.name}")


def switch(name: str, choices: tuple[str, ...], value: str | None = None) -> str:
    """A CASTWALL_* switch's setting: value (None: the environment's), one of choices; unset or empty is the first.

    castwall's one reading of its switches. Raises UsageError, naming the switch and its choices, for anything else.
    """
    raw = os.environ.get(name, "") if value is None else value
    setting = raw.strip().lower() or choices[0]
    if setting not in choices:
        raise UsageError(f"{name} must be {' or '.join(repr(c) for c in choices)}, not {raw!r}")
    return setting


def write_file(path: Path, data: str | bytes, *, keep_mode: bool = False) -> None:
    """Replace a file atomically (a temporary file, fsync, rename, fsync of the directory): castwall's one writer.

    The file is readable by everyone (0644), or with keep_mode keeps the mode of the file it replaces (0640 for a
    new one: another program's file, such as ufw's). Raises OSError; the old file is then untouched.
    """
    tmp = None
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        mode = 0o644
        if keep_mode:
            mode = path.stat().st_mode & 0o7777 if path.exists() else 0o640
        # A fresh name, created with O_EXCL: never a file or link someone put there first.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        # Callers hold the run lock: any other temporary file is left from a killed run.
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except BaseException:  # an OSError, or an interruption: no temporary file is left
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def write_state(path: Path, state: State, *, keep_old: bool = False, stamp: str = "") -> Path | None:
    """Replace the state file atomically, readable by everyone (status runs without root).

    With keep_old, the file being replaced is first copied aside (an unusable
    file is never thrown away); returns that copy's path. Raises BadData when
    the state, or the copy, cannot be written; the old file is then untouched.
    """
    kept = None
    try:
        if keep_old:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            kept = keep_copy(path, stamp or "old")
        write_file(path, dump_state(state))
    except OSError as exc:
        raise BadData(f"cannot write {path}: {exc.strerror or exc}") from None
    return kept


@contextlib.contextmanager
def run_lock(
    path: Path,
    *,
    wait: float = 10.0,
    notify: Callable[[str], None] = lambda msg: None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[None]:
    """Hold the lock that keeps two castwall runs from changing ufw at once.

    Waits up to `wait` seconds for another run to finish, then raises Busy.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise BadData(f"cannot open lock file {path}: {exc.strerror or exc}") from None
    try:
        deadline = clock() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            if clock() >= deadline:
                raise Busy(f"another castwall run (pid {holder}) is changing the firewall; try again when it ends")
            if not told:
                notify(f"waiting for another castwall run (pid {holder}) to finish...")
                told = True
            time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
