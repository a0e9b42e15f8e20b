"""Follow mode's systemd units (data/follow/castwall-follow.{service,timer}) and how the .deb ships them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need

REPO = Path(__file__).resolve().parents[1]
FOLLOW = REPO / "data" / "follow"
SERVICE = FOLLOW / "castwall-follow.service"
TIMER = FOLLOW / "castwall-follow.timer"
ANALYZE = shutil.which("systemd-analyze")
# Measured with Debian 12's systemd 252 (`systemd-analyze security --offline=true`): 2.1 "OK".
MAX_EXPOSURE = 2.1



@pytest.fixture
def needs_analyze():
    need(None if ANALYZE else "systemd-analyze is not installed (Debian package systemd)")


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> [(key, value)] in order; a key may repeat, as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        assert not line.endswith("\\"), f"{path.name}: keep settings on one line: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a setting: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def one(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}= set {len(found)} times"
    return found[0]


@pytest.fixture(scope="module")
def service() -> list[tuple[str, str]]:
    sections = unit(SERVICE)
    assert set(sections) == {"Unit", "Service"}, "the service has no [Install]: only the timer is enabled"
    return sections["Service"]


def test_the_service_is_one_pass_of_castwall_follow_run(service):
    assert one(service, "Type") == "oneshot"
    assert one(service, "ExecStart") == "/usr/bin/castwall follow run"
    assert one(service, "SyslogIdentifier") == "castwall"
    # ufw refuses to run as any user but root.
    assert not values(service, "User") and not values(service, "DynamicUser")


def test_the_service_keeps_only_the_capabilities_the_firewall_needs(service):
    assert one(service, "CapabilityBoundingSet").split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert not values(service, "AmbientCapabilities")
    assert one(service, "NoNewPrivileges") == "yes"


LOCK_FILES = {"/run/castwall.lock", "/run/ufw.lock", "/run/xtables.lock"}


def test_the_service_writes_only_ufw_s_files_its_state_and_three_lock_files(service):
    assert one(service, "ProtectSystem") == "strict"
    writable = " ".join(values(service, "ReadWritePaths")).split()
    # Nothing else under /run: udev rules, modprobe.d, tmpfiles.d and systemd's units live there.
    assert sorted(writable) == sorted(["/etc/ufw"] + [f"-{path}" for path in LOCK_FILES])
    assert one(service, "StateDirectory") == "castwall"  # /var/lib/castwall
    assert not values(service, "RuntimeDirectory")


def test_the_lock_files_the_service_may_write_are_made_before_it_runs():
    """A path listed in ReadWritePaths must exist when the pass starts, or it could not be made: tmpfiles.d makes them."""
    entries = [line.split() for line in (REPO / "debian" / "castwall.tmpfiles").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {e[1] for e in entries} == LOCK_FILES
    assert all(e[0] == "f" and e[3:5] == ["root", "root"] for e in entries), entries
    # castwall's own lock is where the code takes it.
    from castwall.system.host import Paths
    assert str(Paths().lock_file) in LOCK_FILES


@pytest.mark.parametrize("key,value", [
    ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"), ("ProtectClock", "yes"), ("ProtectHostname", "yes"),
    ("RestrictNamespaces", "yes"), ("RestrictRealtime", "yes"), ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"), ("MemoryDenyWriteExecute", "yes"), ("SystemCallArchitectures", "native"),
    ("ProtectProc", "invisible"),
])
def test_the_service_is_sandboxed(service, key, value):
    assert one(service, key) == value


def test_the_service_keeps_proc_net_and_proc_sys(service):
    # ProcSubset=pid would hide /proc/net/arp and /proc/sys/net/ipv4/ip_local_port_range.
    assert not values(service, "ProcSubset")


def test_the_service_opens_only_the_sockets_castwall_uses(service):
    families = one(service, "RestrictAddressFamilies").split()
    assert sorted(families) == sorted(["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"])


def test_the_service_filters_system_calls(service):
    filters = values(service, "SystemCallFilter")
    assert filters[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:]), "later lines may only take calls away"
    assert re.fullmatch(r"0[0-7]{3}", one(service, "UMask"))


def test_the_timer_runs_a_pass_after_boot_and_every_five_minutes():
    sections = unit(TIMER)
    timer = sections["Timer"]
    assert one(timer, "OnBootSec") == "1min"
    assert one(timer, "OnUnitActiveSec") == "5min"
    assert values(timer, "AccuracySec")
    # No Unit=: the timer starts the service of its own name.
    assert not values(timer, "Unit")
    assert values(sections["Install"], "WantedBy") == ["timers.target"]


def test_systemd_analyze_verify_passes(tmp_path, needs_analyze):
    """Verified as copies whose ExecStart names a stand-in: /usr/bin/castwall exists only once installed."""
    stand_in = tmp_path / "castwall"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = SERVICE.read_text()
    assert "ExecStart=/usr/bin/castwall " in text
    (tmp_path / SERVICE.name).write_text(text.replace("ExecStart=/usr/bin/castwall ", f"ExecStart={stand_in} "))
    shutil.copy(TIMER, tmp_path / TIMER.name)
    # --man=no: man:castwall(1) is installed only with the package (scripts/package checks it there).
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(tmp_path / SERVICE.name), str(tmp_path / TIMER.name)],
                          capture_output=True, text=True, timeout=60)
    # verify exits 0 on an unknown or misspelt setting, and only says so: any word about our units fails.
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "castwall" in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


def test_systemd_analyze_verify_catches_a_misspelt_setting(tmp_path, needs_analyze):
    """The check above would see a typo: verify names the unit and the line."""
    stand_in = tmp_path / "castwall"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = SERVICE.read_text().replace("ExecStart=/usr/bin/castwall ", f"ExecStart={stand_in} ")
    (tmp_path / SERVICE.name).write_text(text.replace("ProtectClock=", "ProtectClok="))
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(tmp_path / SERVICE.name)],
                          capture_output=True, text=True, timeout=60)
    assert "ProtectClok" in done.stdout + done.stderr


def test_the_offline_security_exposure_stays_low(needs_analyze):
    done = subprocess.run([ANALYZE, "security", "--offline=true", "--man=no", str(SERVICE)],
                          capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for castwall-follow\.service: (\d+\.\d)", done.stdout)
    if found is None and "offline" in done.stderr.lower():
        need(f"this systemd-analyze has no --offline: {done.stderr.strip()}")
    assert found, done.stdout[-2000:] + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


# --- the .deb ------------------------------------------------------------

def test_the_deb_installs_the_units_disabled_and_not_started():
    rules = (REPO / "debian" / "rules").read_text()
    call = next(line.split() for line in rules.splitlines() if line.strip().startswith("dh_installsystemd"))
    # --restart-after-upgrade: an enabled timer is restarted after an upgrade, not stopped for good.
    assert {"--no-enable", "--no-start", "--restart-after-upgrade"} <= set(call)
    assert call[-1] == TIMER.name, "only the timer is enabled (by castwall follow enable) and stopped"
    prerm = (REPO / "debian" / "castwall.prerm").read_text()
    assert "deb-systemd-invoke stop castwall-follow.timer castwall-follow.service" in prerm
    postrm = (REPO / "debian" / "castwall.postrm").read_text()
    assert "deb-systemd-helper disable castwall-follow.timer" in postrm and "#DEBHELPER#" in postrm
    install = (REPO / "debian" / "castwall.install").read_text().split("\n")
    for path in (SERVICE, TIMER):
        assert f"{path.relative_to(REPO)} lib/systemd/system/" in install


def test_the_deb_installs_the_hook_for_each_dispatcher():
    rules = (REPO / "debian" / "rules").read_text()
    wanted = {
        "usr/lib/NetworkManager/dispatcher.d/90-castwall",
        "usr/lib/networkd-dispatcher/routable.d/90-castwall",
        "etc/network/if-up.d/castwall",  # a conffile; run-parts wants [A-Za-z0-9_-] names
    }
    for dest in wanted:
        assert f"install -D -m 0755 data/follow/hook debian/castwall/{dest}" in rules
