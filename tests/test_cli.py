"""The command line with fakes at the process boundary: output, files and exit codes."""

import fcntl
import json
import os
import stat

import pytest
from click.testing import CliRunner

from castwall import __version__
from castwall.cli import cli
from castwall.errors import BadData, ExitCode
from castwall.model import Kind
from tests.fakes import FakeUfw, device, services

LAN = [device(1, name="Living Room TV"), device(2, name="Kitchen speaker", model="Google Home Mini", kind=Kind.AUDIO),
       device(9, name="Whole House", kind=Kind.GROUP, ip="192.168.77.102", port=32161)]
USER_RULES = ["ufw allow 22/tcp", "ufw allow from 192.168.77.60 to any port 32768:60999 proto udp comment 'mine'"]


def run(svc, *args, input=None):
    return CliRunner().invoke(cli, list(args), obj=svc, input=input)


def mutating(ufw):
    return [c for c in ufw.calls if c[:2] not in (("ufw", "show"), ("ufw", "status")) and c[0] == "ufw"]


@pytest.fixture
def lan(tmp_path):
    return services(tmp_path, LAN, ufw=FakeUfw(lines=list(USER_RULES)))


def test_version_and_help():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output == f"castwall {__version__}\n"
    for command in ("discover", "setup", "status", "remove"):
        assert CliRunner().invoke(cli, [command, "--help"]).exit_code == 0


def test_setup_writes_one_tagged_rule_per_device_and_saves_state(lan):
    result = run(lan, "setup", "--yes")
    assert result.exit_code == 0, result.output
    assert lan.ufw.lines[:2] == USER_RULES
    assert lan.ufw.castwall_lines() == [
        f"ufw allow from 192.168.77.101 to any port 32768:60999 proto udp comment 'castwall:{LAN[0].uuid}'",
        f"ufw allow from 192.168.77.102 to any port 32768:60999 proto udp comment 'castwall:{LAN[1].uuid}'",
    ]
    assert "Living Room TV: reserve 192.168.77.101 for MAC 02:ca:57:00:00:01" in result.output
    assert "ufw allow proto udp from 192.168.77.101 to any port 32768:60999 comment castwall:" in result.output
    state_file = lan.paths.state_file
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o644
    doc = json.loads(state_file.read_text())
    assert doc["version"] == 1 and len(doc["rules"]) == 2 and {d["name"] for d in doc["devices"]} >= {"Whole House"}

    again = run(lan, "setup", "--yes")
    assert again.exit_code == 0 and "Nothing to change" in again.output
    assert len(mutating(lan.ufw)) == 2  # the first run's two adds, nothing more


def test_setup_without_root_refuses_before_touching_anything(tmp_path):
    svc = services(tmp_path, LAN, root=False)
    result = run(svc, "setup", "--yes")
    assert result.exit_code == ExitCode.NEED_ROOT
    assert "sudo castwall setup" in result.output and svc.ufw.calls == []


def test_dry_run_without_root_shows_the_plan_and_changes_nothing(tmp_path):
    svc = services(tmp_path, LAN, root=False)
    result = run(svc, "setup", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: nothing was changed." in result.output and "ufw allow proto udp from 192.168.77.102" in result.output
    assert mutating(svc.ufw) == [] and not svc.paths.state_file.exists()


@pytest.mark.parametrize("answer,code", [("n\n", ExitCode.DECLINED), (None, ExitCode.DECLINED), ("y\n", 0)])
def test_setup_asks_first(lan, answer, code):
    result = run(lan, "setup", input=answer)
    assert result.exit_code == code, result.output
    assert bool(lan.ufw.castwall_lines()) is (code == 0)
    assert lan.paths.state_file.exists() is (code == 0)


def test_ufw_missing(tmp_path):
    svc = services(tmp_path, LAN, ufw=FakeUfw(installed=False))
    result = run(svc, "setup", "--yes")
    assert result.exit_code == ExitCode.MISSING_TOOL and "sudo apt install ufw" in result.output


def test_ufw_inactive_rules_written_loud_warning_not_enabled(tmp_path):
    svc = services(tmp_path, LAN, ufw=FakeUfw(active=False))
    result = run(svc, "setup", "--yes")
    assert result.exit_code == 0
    assert "ufw is INACTIVE" in result.output and len(svc.ufw.castwall_lines()) == 2
    assert not any("enable" in c for c in svc.ufw.calls)


def test_ufw_failure_rolls_back_and_keeps_old_state(lan):
    lan.ufw.fail_calls = {2}
    result = run(lan, "setup", "--yes")
    assert result.exit_code == ExitCode.FIREWALL_FAILED
    assert "step 2 of 2 failed" in result.output and "ufw is as it was before this run" in result.output
    assert lan.ufw.lines == USER_RULES and not lan.paths.state_file.exists()


def test_state_file_that_cannot_be_written_undoes_the_ufw_changes(lan, monkeypatch):
    def disk_full(path, state):
        raise BadData(f"cannot write {path}: No space left on device")

    monkeypatch.setattr("castwall.cli.host.write_state", disk_full)
    result = run(lan, "setup", "--yes")
    assert result.exit_code == ExitCode.FIREWALL_FAILED, result.output
    assert "No space left on device" in result.output and "ufw is as it was before this run" in result.output
    assert lan.ufw.lines == USER_RULES


def test_bad_port_range(tmp_path):
    svc = services(tmp_path, LAN, port_range="60999 32768\n")
    result = run(svc, "setup", "--yes")
    assert result.exit_code == ExitCode.BAD_DATA and "low port 60999 is above high port 32768" in result.output


def test_no_devices_and_unmatched_selector(tmp_path, lan):
    empty_lan = tmp_path / "empty"
    empty_lan.mkdir()
    assert run(services(empty_lan, []), "setup", "--yes").exit_code == ExitCode.NOT_FOUND
    result = run(lan, "setup", "--yes", "--device", "Garage")
    assert result.exit_code == ExitCode.NOT_FOUND and "'Garage'" in result.output


def test_unknown_interface_is_a_usage_error(lan):
    result = run(lan, "discover", "--interface", "wlan9")
    assert result.exit_code == ExitCode.USAGE and "no interface named 'wlan9'" in result.output


def test_discover_table_and_json(lan):
    table = run(lan, "discover")
    assert table.exit_code == 0
    assert "group hosted by Kitchen speaker" in table.output and "02:ca:57:00:00:02" in table.output
    doc = json.loads(run(lan, "discover", "--json").output.split("\n", 1)[1])
    assert doc["kind"] == "discover" and doc["schema"] == 1
    assert {d["name"]: d["kind"] for d in doc["devices"]} == {"Living Room TV": "video", "Kitchen speaker": "audio", "Whole House": "group"}


def test_status_in_place_then_moved(tmp_path):
    svc = services(tmp_path, LAN)
    assert run(svc, "setup", "--yes").exit_code == 0
    ok = run(svc, "status")
    assert ok.exit_code == 0 and "All in place." in ok.output
    svc.discover = lambda addresses, timeout, expect=(): [device(1, name="Living Room TV", ip="192.168.77.150", mac=None), *LAN[1:]]
    moved = run(svc, "status")
    assert moved.exit_code == ExitCode.ATTENTION
    assert "Living Room TV moved from 192.168.77.101 to 192.168.77.150" in moved.output


def test_status_without_root_reads_the_state_file(tmp_path):
    svc = services(tmp_path, LAN)
    run(svc, "setup", "--yes")
    svc.is_root = lambda: False
    result = run(svc, "status", "--json")
    doc = json.loads(result.output.split("\n", 1)[1])
    assert result.exit_code == 0 and doc["ufw"] == "unknown" and doc["ok"] is True
    assert len(doc["rules"]) == 2


def test_remove_deletes_only_castwall_rules(lan):
    run(lan, "setup", "--yes")
    assert run(lan, "remove").exit_code == ExitCode.USAGE
    assert run(lan, "remove", "--device", "Garage", "--yes").exit_code == ExitCode.NOT_FOUND
    one = run(lan, "remove", "--device", "living room tv", "--yes")
    assert one.exit_code == 0 and len(lan.ufw.castwall_lines()) == 1
    result = run(lan, "remove", "--all", "--yes")
    assert result.exit_code == 0 and lan.ufw.lines == USER_RULES
    assert json.loads(lan.paths.state_file.read_text())["rules"] == []
    assert "nothing to remove" in run(lan, "remove", "--all", "--yes").output


def test_lock_held_by_another_run(lan):
    lan.lock_wait = 0.2
    lan.paths.lock_file.parent.mkdir(parents=True)
    fd = os.open(lan.paths.lock_file, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = run(lan, "setup", "--yes")
    finally:
        os.close(fd)
    assert result.exit_code == ExitCode.BUSY and "pid 4242" in result.output
    assert lan.ufw.castwall_lines() == []


def test_corrupt_state_file_is_a_clear_error(lan):
    lan.paths.state_dir.mkdir()
    lan.paths.state_file.write_text("{ not json")
    result = run(lan, "setup", "--yes")
    assert result.exit_code == ExitCode.BAD_DATA and "not valid JSON" in result.output


def test_bug_is_one_line_unless_debug(lan):
    def broken(addresses, timeout, expect=()):
        raise KeyError("boom")

    lan.discover = broken
    result = run(lan, "discover")
    assert result.exit_code == ExitCode.INTERNAL
    assert "castwall: internal error: KeyError" in result.output and "Traceback" not in result.output
    assert "Traceback" in run(lan, "--debug", "discover").output
