"""Follow mode's network hook (data/follow/hook), run as each dispatcher runs it.

The .deb installs one script three times: as a NetworkManager dispatcher script
(arguments IFACE ACTION), a networkd-dispatcher routable.d script and an
ifupdown if-up.d script (IFACE, STATE / MODE, PHASE in the environment). A
stand-in `systemctl` first on PATH logs its arguments and answers is-enabled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HOOK = Path(__file__).resolve().parents[1] / "data" / "follow" / "hook"
SH = shutil.which("sh") or "/bin/sh"

IS_ENABLED = ["is-enabled", "--quiet", "castwall-follow.timer"]
START = ["--no-block", "start", "castwall-follow.service"]

# is-enabled answers $ENABLED (0 enabled, 1 not); any other call answers $OTHER.
STAND_IN = """#!/bin/sh
printf '%s\\n' "$*" >> "$SYSTEMCTL_LOG"
if [ "$1" = is-enabled ]; then exit "$ENABLED"; fi
exit "$OTHER"
"""

# (arguments, environment) as each dispatcher calls the hook.
def nm(iface: str, action: str) -> tuple[list[str], dict[str, str]]:
    # NetworkManager's dispatcher gives no PATH (the test's goes in), and sets NM_DISPATCHER_ACTION.
    return [iface, action], {"NM_DISPATCHER_ACTION": action, "DEVICE_IFACE": iface, "CONNECTION_ID": "Home"}


def networkd(iface: str, state: str) -> tuple[list[str], dict[str, str]]:
    return [], {"IFACE": iface, "STATE": state, "AdministrativeState": "configured", "OperationalState": state}


def ifupdown(iface: str, mode: str = "start", phase: str = "post-up", method: str = "dhcp",
             addrfam: str = "inet") -> tuple[list[str], dict[str, str]]:
    return [], {"IFACE": iface, "LOGICAL": iface, "MODE": mode, "PHASE": phase, "METHOD": method,
                "ADDRFAM": addrfam, "VERBOSITY": "0"}


STARTS = {
    "nm up": nm("wlp2s0", "up"),
    "nm dhcp4-change": nm("wlp2s0", "dhcp4-change"),
    "nm dhcp6-change": nm("enp3s0", "dhcp6-change"),
    "networkd routable": networkd("enp3s0", "routable"),
    "ifupdown post-up": ifupdown("eth0"),
    "ifupdown post-up inet6": ifupdown("eth0", method="auto", addrfam="inet6"),
    "ifupdown post-up static": ifupdown("br0", method="static"),
}

IGNORED = {
    "nm down": nm("wlp2s0", "down"),
    "nm pre-up": nm("wlp2s0", "pre-up"),
    "nm pre-down": nm("wlp2s0", "pre-down"),
    "nm hostname": nm("none", "hostname"),
    "nm connectivity-change": nm("", "connectivity-change"),
    "nm vpn-up": nm("tun0", "vpn-up"),
    "nm reapply": nm("wlp2s0", "reapply"),
    "nm up on lo": nm("lo", "up"),
    "nm up without interface": nm("", "up"),
    "networkd degraded": networkd("enp3s0", "degraded"),
    "networkd carrier": networkd("enp3s0", "carrier"),
    "networkd no-carrier": networkd("enp3s0", "no-carrier"),
    "networkd off": networkd("enp3s0", "off"),
    "networkd routable on lo": networkd("lo", "routable"),
    "networkd routable without interface": networkd("", "routable"),
    "ifupdown lo": ifupdown("lo", method="loopback"),
    "ifupdown --all": ifupdown("--all", method="none", addrfam="meta"),
    "ifupdown MODE=stop": ifupdown("eth0", mode="stop", phase="post-down"),
    "ifupdown pre-up": ifupdown("eth0", phase="pre-up"),
    "ifupdown stop with PHASE=post-up": ifupdown("eth0", mode="stop"),
    # NetworkManager's own 01-ifupdown runs if-up.d on "up": its dispatcher hook has that event already.
    "ifupdown from NetworkManager": ifupdown("wlp2s0", method="NetworkManager"),
    "no arguments, no environment": ([], {}),
    "one argument": (["wlp2s0"], {}),
}


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def stand_in(bindir: Path, tmp_path: Path) -> Path:
    script = bindir / "systemctl"
    script.write_text(STAND_IN)
    script.chmod(0o755)
    return tmp_path / "systemctl.log"


def run_hook(args: list[str], env: dict[str, str], *, path: str, log: Path | None = None,
             enabled: bool = True, other_rc: int = 0) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    full_env = {"PATH": path, "ENABLED": "0" if enabled else "1", "OTHER": str(other_rc), **env}
    if log is not None:
        full_env["SYSTEMCTL_LOG"] = str(log)
    # As the dispatchers do: the script itself is executed, through its #! line.
    done = subprocess.run([str(HOOK), *args], env=full_env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    calls = [line.split() for line in log.read_text().splitlines()] if log is not None and log.exists() else []
    return done, calls


def test_the_hook_is_an_executable_posix_sh_script():
    assert HOOK.read_text().startswith("#!/bin/sh\n")
    assert os.access(HOOK, os.X_OK), "data/follow/hook must be executable (git keeps the mode)"
    assert subprocess.run([SH, "-n", str(HOOK)]).returncode == 0


@pytest.mark.parametrize("args,env", STARTS.values(), ids=STARTS.keys())
def test_a_network_event_starts_one_pass_while_follow_is_enabled(args, env, bindir, tmp_path):
    log = stand_in(bindir, tmp_path)
    done, calls = run_hook(args, env, path=f"{bindir}:/usr/bin:/bin", log=log)
    assert done.returncode == 0
    assert calls == [IS_ENABLED, START]
    assert done.stdout == "" and done.stderr == ""


@pytest.mark.parametrize("args,env", STARTS.values(), ids=STARTS.keys())
def test_follow_disabled_starts_nothing(args, env, bindir, tmp_path):
    log = stand_in(bindir, tmp_path)
    done, calls = run_hook(args, env, path=f"{bindir}:/usr/bin:/bin", log=log, enabled=False)
    assert done.returncode == 0
    assert calls == [IS_ENABLED]


@pytest.mark.parametrize("args,env", IGNORED.values(), ids=IGNORED.keys())
def test_other_events_start_nothing(args, env, bindir, tmp_path):
    log = stand_in(bindir, tmp_path)
    done, calls = run_hook(args, env, path=f"{bindir}:/usr/bin:/bin", log=log)
    assert done.returncode == 0
    assert START not in calls
    assert calls == []  # not even asked: nothing to do for this event


@pytest.mark.parametrize("args,env", STARTS.values(), ids=STARTS.keys())
def test_a_failing_systemctl_never_fails_the_caller(args, env, bindir, tmp_path):
    log = stand_in(bindir, tmp_path)
    done, calls = run_hook(args, env, path=f"{bindir}:/usr/bin:/bin", log=log, other_rc=1)
    assert done.returncode == 0
    assert calls == [IS_ENABLED, START]
    assert done.stderr == ""


@pytest.mark.parametrize("args,env", STARTS.values(), ids=STARTS.keys())
def test_no_systemctl_on_path_exits_0(args, env, bindir):
    # bindir holds no systemctl: a system without systemd.
    done, _ = run_hook(args, env, path=str(bindir))
    assert done.returncode == 0
    assert done.stderr == ""
