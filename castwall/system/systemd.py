"""Follow mode's systemd units: castwall-follow.timer runs castwall-follow.service (`castwall follow run`).

The .deb ships both disabled and not started; `castwall follow enable` turns
the timer on, and the network hooks start the service at once when this
computer joins a network (they do nothing while the timer is disabled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from castwall.errors import MissingTool, ToolFailed
from castwall.system.runner import Runner

TIMER = "castwall-follow.timer"
SERVICE = "castwall-follow.service"


@dataclass(frozen=True)
class FollowUnits:
    """What systemd says of follow mode's units."""

    systemd: bool  # systemd runs this system
    installed: bool  # systemd knows castwall-follow.timer
    enabled: bool  # the timer is enabled
    active: bool  # the timer is running

    @property
    def on(self) -> bool:
        return self.systemd and self.installed and self.enabled

    def describe(self) -> str:
        if not self.systemd:
            return "unavailable (systemd is not running this system)"
        if not self.installed:
            return f"unavailable ({TIMER} is not installed: the units come with castwall's .deb)"
        if self.enabled:
            return f"on ({TIMER} enabled" + (", active)" if self.active else ", but not active: sudo castwall follow enable starts it)")
        return "off" + (f" ({TIMER} is active but not enabled)" if self.active else "")


class Systemd:
    def __init__(self, runner: Runner, booted: Path = Path("/run/systemd/system")):
        self.runner = runner
        self.booted = booted

    def _systemctl(self, *args: str):
        return self.runner.run(["systemctl", *args], timeout=30)

    def units(self) -> FollowUnits:
        if not self.booted.is_dir():
            return FollowUnits(False, False, False, False)
        try:
            loaded = self._systemctl("show", "-p", "LoadState", "--value", TIMER)
        except MissingTool:
            return FollowUnits(False, False, False, False)
        installed = loaded.returncode == 0 and loaded.stdout.strip() == "loaded"
        if not installed:
            return FollowUnits(True, False, False, False)
        enabled = self._systemctl("is-enabled", "--quiet", TIMER).returncode == 0
        active = self._systemctl("is-active", "--quiet", TIMER).returncode == 0
        return FollowUnits(True, True, enabled, active)

    def _change(self, *args: str) -> None:
        done = self._systemctl(*args)
        if done.returncode != 0:
            raise ToolFailed(f"'systemctl {' '.join(args)}' failed: {done.last_line()}")

    def enable(self) -> str | None:
        """Enable and start the timer, then queue one pass at once; say why that pass could not be queued, if so.

        Raises ToolFailed when the timer could not be enabled.
        """
        self._change("enable", "--now", TIMER)
        try:
            self._change("--no-block", "start", SERVICE)
        except ToolFailed as exc:
            return exc.message
        return None

    def disable(self) -> None:
        self._change("disable", "--now", TIMER)
