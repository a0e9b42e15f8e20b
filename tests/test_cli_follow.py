"""castwall follow with fakes at the process boundary: passes, faults, the timer's switch, status and remove."""

import fcntl
import ipaddress
import json
import os
from dataclasses import replace

import pytest

from castwall.errors import ExitCode
from castwall.model import Kind
from tests.fakes import FakeUfw, device, services
from tests.test_cli import run

ROUTES = '[{"dst": "default", "gateway": "192.168.77.1", "dev": "eth0", "protocol": "dhcp", "flags": []}]'
GATEWAY = {"192.168.77.1": "02:ca:57:fe:00:01"}
LAN = [device(1, name="Living Room TV"), device(2, name="Kitchen speaker", model="Google Home Mini", kind=Kind.AUDIO)]
USER_RULES = ["ufw allow 22/tcp"]


def lan_at(tmp_path, devices, ufw, impostors=None, **kw):
    svc = services(tmp_path, devices, ufw=ufw, impostors={**GATEWAY, **(impostors or {})}, **kw)
    svc.paths = replace(svc.paths, systemd_booted=tmp_path / "systemd")
    return svc


@pytest.fixture
def home(tmp_path):
    """A LAN where setup has run: two devices approved behind the gateway."""
    ufw = FakeUfw(lines=list(USER_RULES), routes=ROUTES)
    svc = lan_at(tmp_path, LAN, ufw)
    done = run(svc, "setup", "--yes")
    assert done.exit_code == 0, done.output
    return svc


def moved(svc, tmp_path, devices, impostors=None):
    """The same workstation, ufw and state, on a LAN that now looks like devices (and impostors)."""
    again = lan_at(tmp_path, devices, svc.ufw, impostors)
    again.paths = svc.paths
    return again


def state_of(svc):
    return json.loads(svc.paths.state_file.read_text())


def record(svc):
    return json.loads(svc.paths.follow_record.read_text())


def castwall_ips(svc):
    return sorted(line.split(" from ")[1].split()[0] for line in svc.ufw.castwall_lines())


def test_setup_records_the_approved_mac_and_network(home):
    follow = {t["uuid"]: t for t in state_of(home)["follow"]}
    tv = follow[LAN[0].uuid]
    assert tv["mac"] == LAN[0].mac and tv["lan"] == {"subnet": "192.168.77.0/24", "gateway": "192.168.77.1",
                                                     "gateway_mac": "02:ca:57:fe:00:01"}
    assert tv["away"] is None and tv["moves"] == [] and tv["stopped"] is None


def test_a_pass_moves_a_device_with_its_mac_and_says_so_in_one_line(home, tmp_path):
    tv = replace(LAN[0], ip=ipaddress.ip_address("192.168.77.150"))
    svc = moved(home, tmp_path, [tv, LAN[1]])
    result = run(svc, "follow", "run")
    assert result.exit_code == 0, result.output
    assert castwall_ips(svc) == ["192.168.77.102", "192.168.77.150"] and svc.ufw.lines[0] == USER_RULES[0]
    lines = [line for line in result.output.splitlines() if line.startswith("castwall follow: moved:")]
    assert lines == ["castwall follow: moved: Living Room TV from 192.168.77.101 to 192.168.77.150 (announced there alone, "
                     f"and only its MAC {tv.mac} answers ARP there)"]
    assert "castwall follow: 2 ufw change(s) applied and verified" in result.output
    assert next(d for d in state_of(svc)["devices"] if d["uuid"] == tv.uuid)["ip"] == "192.168.77.150"
    assert record(svc)["exit"] == 0 and record(svc)["changes"] == [lines[0].removeprefix("castwall follow: ")]
    second = run(svc, "follow", "run")
    assert second.exit_code == 0 and "nothing to change (2 approved device(s))" in second.output


def test_an_impostor_gets_nothing_and_the_refusal_is_a_line(home, tmp_path):
    impostor = replace(LAN[0], ip=ipaddress.ip_address("192.168.77.66"), mac="02:66:66:66:66:66")
    svc = moved(home, tmp_path, [impostor, LAN[1]])
    before = list(svc.ufw.lines)
    result = run(svc, "follow", "run")
    assert result.exit_code == 0, result.output
    assert svc.ufw.lines == before
    assert "castwall follow: not moved: Living Room TV is announced from 192.168.77.66, but ARP for 192.168.77.66 is " \
           "answered by 02:66:66:66:66:66" in result.output
    assert record(svc)["refusals"] and record(svc)["changes"] == []


def test_a_host_that_takes_the_old_address_closes_it_and_the_device_comes_back(home, tmp_path):
    svc = moved(home, tmp_path, [LAN[1]], impostors={"192.168.77.101": "02:66:66:66:66:66"})
    result = run(svc, "follow", "run")
    assert result.exit_code == 0, result.output
    assert castwall_ips(svc) == ["192.168.77.102"]
    assert "withdrawn: Living Room TV's rules for 192.168.77.101: ARP for 192.168.77.101 is answered by 02:66:66:66:66:66" \
        in result.output
    status = run(svc, "status")
    assert "follow mode withdrew Living Room TV's rules" in status.output
    back = run(moved(home, tmp_path, LAN), "follow", "run")
    assert back.exit_code == 0 and "restored: Living Room TV at 192.168.77.101" in back.output
    assert castwall_ips(svc) == ["192.168.77.101", "192.168.77.102"]


def test_another_gateway_withdraws_every_rule_without_waiting_for_arp(home, tmp_path):
    cafe = moved(home, tmp_path, [], impostors={"192.168.77.1": "02:ca:57:fe:00:02", "192.168.77.101": LAN[0].mac})
    result = run(cafe, "follow", "run")
    assert result.exit_code == 0, result.output
    assert castwall_ips(cafe) == [] and cafe.ufw.lines == USER_RULES
    assert result.output.count("this computer is on another network") == 2
    back = run(moved(home, tmp_path, LAN), "follow", "run")
    assert back.exit_code == 0 and castwall_ips(cafe) == ["192.168.77.101", "192.168.77.102"]


def test_a_new_device_is_only_reported(home, tmp_path):
    stranger = device(7, name="Guest TV")
    svc = moved(home, tmp_path, LAN + [stranger])
    result = run(svc, "follow", "run")
    assert result.exit_code == 0 and "192.168.77.107" not in "".join(svc.ufw.lines)
    assert "castwall follow: new device: Guest TV at 192.168.77.107 is not approved: run 'sudo castwall setup' to allow it" \
        in result.output


@pytest.mark.parametrize("failing", [1, 2])
def test_a_failing_ufw_at_each_step_of_a_pass_leaves_ufw_and_the_state_file_as_they_were(home, tmp_path, failing):
    tv = replace(LAN[0], ip=ipaddress.ip_address("192.168.77.150"))
    svc = moved(home, tmp_path, [tv, LAN[1]])
    before, state = list(svc.ufw.lines), svc.paths.state_file.read_text()
    svc.ufw.fail_calls = {svc.ufw.changes + failing}
    result = run(svc, "follow", "run")
    assert result.exit_code == ExitCode.FIREWALL_FAILED, result.output
    assert svc.ufw.lines == before and svc.paths.state_file.read_text() == state
    assert "ufw is as it was before this run" in result.output
    assert "moved:" not in result.output  # a change is said once it is in place
    assert record(svc)["exit"] == ExitCode.FIREWALL_FAILED and "ufw is as it was" in record(svc)["error"]
    assert record(svc)["changes"] == []


def test_a_second_pass_waits_for_the_lock_and_then_says_busy(home, tmp_path):
    home.lock_wait = 0.2
    home.paths.lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(home.paths.lock_file, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(f"{os.getpid()}\n")
        held.flush()
        result = run(home, "follow", "run")
    assert result.exit_code == ExitCode.BUSY and "another castwall run" in result.output
    assert not home.paths.follow_record.exists()  # no pass ran: the record of the last one stays as it was


def test_a_pass_needs_root_and_a_usable_state_file(tmp_path, home):
    home.is_root = lambda: False
    assert run(home, "follow", "run").exit_code == ExitCode.NEED_ROOT
    home.is_root = lambda: True
    home.paths.state_file.write_text("{ not json")
    before = list(home.ufw.lines)
    result = run(home, "follow", "run")
    assert result.exit_code == ExitCode.BAD_DATA and "follow mode changes nothing" in result.output
    assert home.ufw.lines == before


def test_without_setup_a_pass_has_nothing_to_follow(tmp_path):
    svc = lan_at(tmp_path, LAN, FakeUfw(routes=ROUTES))
    result = run(svc, "follow", "run")
    assert result.exit_code == 0 and "no device is approved yet" in result.output and svc.ufw.castwall_lines() == []


def test_enable_needs_systemd_and_the_units(home, tmp_path):
    result = run(home, "follow", "enable")
    assert result.exit_code == ExitCode.MISSING_TOOL and "systemd is not running" in result.output
    (tmp_path / "systemd").mkdir()
    home.ufw.follow_timer = None
    result = run(home, "follow", "enable")
    assert result.exit_code == ExitCode.MISSING_TOOL and "castwall-follow.timer is not installed" in result.output
    home.is_root = lambda: False
    assert run(home, "follow", "enable").exit_code == ExitCode.NEED_ROOT


def test_enable_disable_and_status(home, tmp_path):
    (tmp_path / "systemd").mkdir()
    result = run(home, "follow", "enable")
    assert result.exit_code == 0, result.output
    calls = [c for c in home.ufw.calls if c[0] == "systemctl" and c[1] in ("enable", "--no-block")]
    assert calls == [("systemctl", "enable", "--now", "castwall-follow.timer"),
                     ("systemctl", "--no-block", "start", "castwall-follow.service")]
    home.is_root = lambda: False
    text = run(home, "follow", "status")
    assert text.exit_code == 0 and "Follow mode: on (castwall-follow.timer enabled, active)" in text.output
    assert "Living Room TV" in text.output and "followed" in text.output
    doc = json.loads(run(home, "follow", "status", "--json").output)
    assert doc["mode"] == "on" and {d["status"] for d in doc["devices"]} == {"followed"} and doc["last_pass"] is None
    assert "Follow mode: on" in run(home, "status", "--no-discover").output
    home.is_root = lambda: True
    off = run(home, "follow", "disable")
    assert off.exit_code == 0 and "Follow mode is off" in off.output and home.ufw.follow_timer == "disabled"
    assert "already off" in run(home, "follow", "disable").output


def test_remove_all_turns_follow_mode_off_and_forgets_every_device(home, tmp_path):
    (tmp_path / "systemd").mkdir()
    assert run(home, "follow", "enable").exit_code == 0
    result = run(home, "remove", "--all", "--yes")
    assert result.exit_code == 0, result.output
    assert home.ufw.follow_timer == "disabled" and "Follow mode turned off" in result.output
    assert state_of(home)["follow"] == [] and home.ufw.castwall_lines() == []


def test_remove_device_forgets_a_device_whose_rules_follow_mode_withdrew(home, tmp_path):
    svc = moved(home, tmp_path, [LAN[1]], impostors={"192.168.77.101": "02:66:66:66:66:66"})
    assert run(svc, "follow", "run").exit_code == 0
    result = run(svc, "remove", "--device", "Living Room TV", "--yes")
    assert result.exit_code == 0, result.output
    assert [t["uuid"] for t in state_of(svc)["follow"]] == [LAN[1].uuid]


def test_a_declined_remove_all_leaves_follow_mode_on(home, tmp_path):
    (tmp_path / "systemd").mkdir()
    assert run(home, "follow", "enable").exit_code == 0
    result = run(home, "remove", "--all", input="n\n")
    assert result.exit_code == ExitCode.DECLINED and home.ufw.follow_timer == "enabled"
