"""The one place where castwall starts other programs."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Protocol, Sequence

from castwall.errors import MissingTool, ToolFailed

# Root runs whatever PATH names first; use the system directories only.
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Which Debian package provides each program castwall runs.
PACKAGES = {"ufw": "ufw", "ip": "iproute2", "nft": "nftables", "firewall-cmd": "firewalld"}


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def last_line(self) -> str:
        """The most telling line of output, for a one-line error."""
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return f"exit status {self.returncode}"


class Runner(Protocol):
    def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> Completed: ...

    def which(self, program: str) -> str | None: ...


class SubprocessRunner:
    """Runs argv lists (never a shell) with LANG=C and the system PATH.

    Children get a session of their own, so a Ctrl-C at the terminal reaches
    castwall alone: castwall lets a running ufw call finish, then undoes.
    """

    def which(self, program: str) -> str | None:
        return shutil.which(program, path=SAFE_PATH)

    def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> Completed:
        """Run argv and return what it printed.

        Raises MissingTool when the program is not installed and ToolFailed
        when it does not finish within timeout seconds.
        """
        env = {"PATH": SAFE_PATH, "LANG": "C", "LC_ALL": "C"}
        try:
            proc = subprocess.run(
                list(argv),
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise MissingTool(missing_tool_message(argv[0])) from None
        except subprocess.TimeoutExpired:
            raise ToolFailed(f"'{' '.join(argv)}' did not finish within {timeout:g} s") from None
        return Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def missing_tool_message(program: str) -> str:
    name = os.path.basename(program)
    package = PACKAGES.get(name, name)
    return f"'{name}' is not installed; install it with: sudo apt install {package}"
