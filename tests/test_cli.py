"""The command line with fakes at the process boundary: output, files and exit codes."""

import dataclasses
import fcntl
import re
import ipaddress
import json
import os
import stat

import pytest
from click.testing import CliRunner

from castwall import __version__
from castwall.cli import cli
from castwall.errors import BadData, ExitCode, UsageError
from castwall.model import Kind
from castwall.announcement import Announcement
from tests.fakes import FakeUfw, announcement, data, device, dial_reply, services, txt_record

LAN = [device(1, name="Living Room TV"), device(2, name="Kitchen speaker", model="Google Home Mini", kind=Kind.AUDIO),
       device(9, name="Whole House", kind=Kind.GROUP, ip="192.168.77.102", port=32161)]
USER_RULES = ["ufw allow 22/tcp", "ufw allow from 192.168.77.60 to any port 32768:60999 proto udp comment 'mine'"]


def run(svc, *args, input=None):
    return CliRunner().invoke(cli, list(args), obj=svc, input=input)


def json_of(result):
    """The JSON document on stdout (CliRunner of click 8.1 mixes stderr in)."""
    out = result.output
    return json.loads(out[out.index("\n{") + 1 if not out.startswith("{") else 0:])


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


def test_an_unknown_castwall_ufw_value_is_a_usage_error_before_anything_runs(lan):
    lan.ufw_path = "fast"
    result = run(lan, "setup", "--yes")
    assert result.exit_code == 2 and "CASTWALL_UFW must be 'auto' or 'cli', not 'fast'" in result.output
    assert mutating(lan.ufw) == [] and not lan.paths.state_file.exists()


@pytest.mark.parametrize("name, value, choices", [
    ("CASTWALL_DIAL", "maybe", "'on' or 'off'"), ("CASTWALL_UFW", "library", "'auto' or 'cli'"),
    ("CASTWALL_NFT", "1", "'auto' or 'cli'"), ("CASTWALL_FIREWALLD", "dbus", "'auto' or 'cli'"),
])
def test_every_backend_switch_is_read_one_way_and_an_unknown_value_is_a_usage_error(monkeypatch, name, value, choices):
    from castwall.system.host import switch

    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=f"^{name} must be {choices}, not '{value}'$"):
        switch(name, tuple(c.strip("'") for c in choices.split(" or ")))
    monkeypatch.setenv(name, " CLI ")
    assert switch(name, ("auto", "cli")) == "cli"  # case and blanks do not matter
    monkeypatch.setenv(name, "")
    assert switch(name, ("auto", "cli")) == "auto"  # empty is the default, as unset is
    monkeypatch.delenv(name)
    assert switch(name, ("on", "off")) == "on"


def test_castwall_dial_off_means_no_search_and_anything_else_is_a_usage_error(monkeypatch):
    from castwall.commands.services import dial_search

    notes = []
    monkeypatch.setenv("CASTWALL_DIAL", "off")
    assert dial_search([], wire=False, misplaced=None, may_fetch=None, note=notes.append) is None
    assert notes == ["DIAL: off (CASTWALL_DIAL=off)"]
    monkeypatch.setenv("CASTWALL_DIAL", "maybe")
    with pytest.raises(UsageError, match="CASTWALL_DIAL must be 'on' or 'off', not 'maybe'"):
        dial_search([], wire=False, misplaced=None, may_fetch=None, note=notes.append)


def test_debug_says_which_ufw_path_ran_and_how_long_the_phases_took(lan):
    result = run(lan, "--debug", "setup", "--yes")
    assert result.exit_code == 0, result.output
    assert "castwall: debug: ufw path: the ufw command, one call per rule (CASTWALL_UFW=cli)" in result.output
    assert re.search(r"castwall: debug: discovery: \d+\.\d{3} s", result.output)
    assert re.search(r"castwall: debug: apply phase: 2 step\(s\) through the ufw command, one call per rule, "
                     r"then verify and save: \d+\.\d{3} s", result.output)
    assert "debug:" not in run(lan, "setup", "--yes").output


def test_setup_writes_one_tagged_rule_per_device_and_saves_state(lan):
    result = run(lan, "setup", "--yes")
    assert result.exit_code == 0, result.output
    assert lan.ufw.lines[:2] == USER_RULES
    assert lan.ufw.castwall_lines() == [
        f"ufw allow from 192.168.77.101 to any port 32768:60999 proto udp comment 'castwall:{LAN[0].uuid}'",
        f"ufw allow from 192.168.77.102 to any port 32768:60999 proto udp comment 'castwall:{LAN[1].uuid}'",
    ]
    assert re.search(r"\n  living-room-tv +02:ca:57:00:00:01 +192\.168\.77\.101 +Living Room TV\n", result.output)
    assert "ufw allow proto udp from 192.168.77.101 to any port 32768:60999 comment castwall:" in result.output
    state_file = lan.paths.state_file
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o644
    doc = json.loads(state_file.read_text())
    assert doc["version"] == 4 and len(doc["rules"]) == 2 and {d["name"] for d in doc["devices"]} >= {"Whole House"}

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
    result = run(svc, "setup", "--yes", "--firewall", "ufw")
    assert result.exit_code == ExitCode.MISSING_TOOL and "sudo apt install ufw" in result.output


def test_without_any_firewall_setup_says_there_is_nothing_to_open_and_writes_nothing(tmp_path):
    svc = services(tmp_path, LAN, ufw=FakeUfw(installed=False))
    result = run(svc, "setup", "--yes")
    assert result.exit_code == 0, result.output
    assert "nothing on this computer filters incoming traffic" in result.output and "Nothing was changed." in result.output
    assert not (tmp_path / "state").exists()
    assert [c for c in svc.ufw.calls if c[0] in ("ufw", "firewall-cmd")] == []


def test_the_state_file_records_the_firewall_and_a_change_of_firewall_is_said(tmp_path):
    svc = services(tmp_path, LAN)
    assert run(svc, "setup", "--yes").exit_code == 0
    path = tmp_path / "state" / "state.json"
    doc = json.loads(path.read_text())
    assert doc["firewall"] == {"name": "ufw", "chain": None}
    doc["firewall"] = {"name": "nftables", "chain": ["inet", "filter", "input"]}
    path.write_text(json.dumps(doc))
    result = run(svc, "setup", "--yes")
    assert result.exit_code == 0, result.output
    assert ("castwall's rules were in nftables (chain inet filter input), and now ufw filters" in result.output
            and "sudo castwall remove --all --firewall nftables --nft-chain inet filter input" in result.output)
    assert json.loads(path.read_text())["firewall"] == {"name": "ufw", "chain": None}


def test_two_firewall_managers_at_once_are_an_error(tmp_path):
    svc = services(tmp_path, LAN)
    (tmp_path / "no-system-bus").write_text("")  # the system bus is there, and firewall-cmd --state says running
    svc.ufw.firewalld_running = True
    result = run(svc, "setup", "--yes")
    assert result.exit_code == ExitCode.MISSING_TOOL and "ufw and firewalld both filter" in result.output
    assert svc.ufw.castwall_lines() == [] and not (tmp_path / "state").exists()


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
    def disk_full(path, state, **options):
        raise BadData(f"cannot write {path}: No space left on device")

    monkeypatch.setattr("castwall.commands.change.host.write_state", disk_full)
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
    moved_lan = [device(1, name="Living Room TV", ip="192.168.77.150"), *LAN[1:]]
    svc.discover = lambda addresses, timeout, **options: [announcement(d) for d in moved_lan]
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


@pytest.mark.parametrize("content, problem", [
    ("{ not json", "not valid JSON"),
    ('{"format": "castwall-state", "version": 1, "rules": [', "not valid JSON"),  # truncated
    ('{"format": "castwall-state", "version": 7}', "written by a newer castwall (format version 7)"),
    ('{"format": "castwall-state", "version": 1, "rules": [{"ip": "x"}]}', "invalid entry"),
    ("\xff\xfe", "cannot read"),
])
def test_unusable_state_file_is_rebuilt_from_the_tagged_rules_and_kept(lan, content, problem):
    assert run(lan, "setup", "--yes").exit_code == 0
    before = list(lan.ufw.lines)
    lan.paths.state_file.write_bytes(content.encode("latin-1"))
    status = run(lan, "status")
    assert status.exit_code == ExitCode.ATTENTION and problem in status.output
    assert "rebuilds it from castwall's rules in ufw" in status.output

    dry = run(lan, "setup", "--dry-run")
    assert dry.exit_code == 0 and problem in dry.output
    assert lan.paths.state_file.read_bytes() == content.encode("latin-1")  # a dry run keeps everything

    result = run(lan, "setup", "--yes")
    assert result.exit_code == 0, result.output
    assert problem in result.output and "kept as" in result.output
    assert lan.ufw.lines == before  # the rules were castwall's already: nothing to change
    [copy] = lan.paths.state_dir.glob("state.json.unusable-*")
    assert copy.read_bytes() == content.encode("latin-1")
    doc = json.loads(lan.paths.state_file.read_text())
    assert len(doc["rules"]) == 2
    assert run(lan, "status").exit_code == 0


def test_remove_with_an_unusable_state_file_uses_the_tagged_rules(lan):
    assert run(lan, "setup", "--yes").exit_code == 0
    lan.paths.state_file.write_text("garbage")
    result = run(lan, "remove", "--all", "--yes")
    assert result.exit_code == 0, result.output
    assert lan.ufw.lines == USER_RULES
    assert [p.read_text() for p in lan.paths.state_dir.glob("state.json.unusable-*")] == ["garbage"]


def test_a_killed_run_is_noticed_and_reconciled(lan):
    assert run(lan, "setup", "--yes").exit_code == 0
    recorded = lan.paths.state_file.read_text()
    # As if a later run was killed after its ufw call but before saving the state:
    lan.ufw.lines.append("ufw allow from 192.168.77.103 to any port 32768:60999 proto udp "
                         "comment 'castwall:00000003-0000-4000-8000-000000000003'")
    status = run(lan, "status")
    assert status.exit_code == ExitCode.ATTENTION and "does not record (an interrupted run?)" in status.output
    setup = run(lan, "setup", "--yes")
    assert setup.exit_code == 0 and "does not record (an interrupted run?): UDP 32768:60999 from 192.168.77.103" in setup.output
    assert lan.paths.state_file.read_text() != recorded
    assert "192.168.77.103" in lan.paths.state_file.read_text()
    assert run(lan, "status").exit_code == ExitCode.ATTENTION  # its device is not on the LAN: reported, not deleted
    remove = run(lan, "remove", "--all", "--yes")
    assert remove.exit_code == 0 and lan.ufw.lines == USER_RULES


def test_bug_is_one_line_unless_debug(lan):
    def broken(addresses, timeout, **options):
        raise KeyError("boom")

    lan.discover = broken
    result = run(lan, "discover")
    assert result.exit_code == ExitCode.INTERNAL
    assert "castwall: internal error: KeyError" in result.output and "Traceback" not in result.output
    assert "Traceback" in run(lan, "--debug", "discover").output


def hostile(name: bytes, ip: str, uuid_hex: str = "66" * 16, *, model: bytes = b"Chromecast") -> Announcement:
    body = txt_record(b"id=" + uuid_hex.encode(), b"md=" + model, b"fn=" + name)
    return Announcement(f"Evil-{uuid_hex[:6]}\x1b[31m._googlecast._tcp.local.", 8009, body,
                        (ipaddress.ip_address(ip).packed,))


def test_hostile_announcements_get_no_rule_and_every_line_stays_readable(tmp_path):
    nasty = b"TV\x1b[2J\r\n$(reboot)'; ufw allow from any \xff\xfe\xe2\x80\xae" + b"A" * 180
    extra = [
        hostile(nasty, "192.168.77.10", "61" * 16),      # this computer's address
        hostile(b"Bcast", "192.168.77.255", "62" * 16),
        hostile(b"Net", "192.168.77.0", "63" * 16),
        hostile(b"Zero", "0.0.0.0", "64" * 16),
        hostile(b"Mcast", "224.0.0.251", "65" * 16),
        hostile(b"Loop", "127.0.0.1", "67" * 16),
        hostile(b"Far", "10.9.9.9", "68" * 16),
        hostile(b"Public", "8.8.8.8", "69" * 16),
        hostile(b"Clone of Living Room", "192.168.77.66", LAN[0].uuid.replace("-", "")),
        hostile(b"No id", "192.168.77.67", "not-a-uuid"),
    ]
    ufw = FakeUfw(lines=list(USER_RULES))
    svc = services(tmp_path, LAN, ufw=ufw, extra=extra, impostors={"192.168.77.102": "02:66:66:66:66:66"})
    result = run(svc, "setup", "--yes")
    assert result.exit_code == 0, result.output  # devices were found (exit 9 is for none); each refusal is listed
    # The clone makes Living Room TV contested, the impostor Kitchen speaker: nothing is left to allow.
    assert ufw.lines == USER_RULES
    out = result.output
    for why in ("192.168.77.10 is this computer's own address", "broadcast address of 192.168.77.0/24",
                "network address of 192.168.77.0/24", "0.0.0.0 is not a host address", "multicast address",
                "loopback address", "reached through a router", "its id is announced from 2 addresses",
                "2 hosts answer ARP for 192.168.77.102", "its Cast device id is not a UUID"):
        assert why in out, why
    for line in out.splitlines():
        assert line.isprintable(), repr(line)
        assert len(line) < 400
    assert "\x1b" not in out and "\u202e" not in out

    # The user accepts the real Living Room TV address after seeing the warning.
    accepted = run(svc, "setup", "--yes", "--allow-contested", "192.168.77.101")
    assert accepted.exit_code == 0, accepted.output
    assert ufw.castwall_lines() == [
        f"ufw allow from 192.168.77.101 to any port 32768:60999 proto udp comment 'castwall:{LAN[0].uuid}'"]
    state = svc.paths.state_file.read_text()
    assert state.isascii() and "\x1b" not in state and "reboot" in state  # kept, but escaped
    for call in ufw.calls:
        assert all(word.isascii() and word.isprintable() for word in call)
        assert not any("reboot" in word or "Evil" in word for word in call)


def test_discover_lists_refusals_and_ignored_announcements(tmp_path):
    extra = [hostile(b"Mine", "192.168.77.10", "61" * 16), hostile(b"bad", "192.168.77.70", "xyz")]
    svc = services(tmp_path, LAN, extra=extra)
    table = run(svc, "discover")
    assert table.exit_code == 0
    assert "no rule: 192.168.77.10 is this computer's own address" in table.output
    assert "ignored an announcement (Evil-xyz\\x1b[31m): its Cast device id is not a UUID" in table.output
    doc = json_of(run(svc, "discover", "--json"))
    refused = {d["name"]: d["refused"] for d in doc["devices"]}
    assert refused["Mine"] == "192.168.77.10 is this computer's own address" and refused["Living Room TV"] is None
    assert doc["ignored"] == [{"via": "mdns", "instance": "Evil-xyz\\x1b[31m", "reason": "its Cast device id is not a UUID: xyz"}]


def test_routed_device_needs_the_option(tmp_path):
    far = device(5, name="Far TV", ip="10.9.9.9", mac=None)
    svc = services(tmp_path, [far])
    result = run(svc, "setup", "--yes")
    assert "reached through a router (--allow-routed allows it)" in result.output and svc.ufw.castwall_lines() == []
    result = run(svc, "setup", "--yes", "--allow-routed")
    assert result.exit_code == 0 and svc.ufw.castwall_lines()[0].startswith("ufw allow from 10.9.9.9 ")


def test_a_temporary_state_file_left_by_a_killed_run_is_cleared(lan):
    lan.paths.state_dir.mkdir()
    stale = lan.paths.state_dir / ".state.json.4242.tmp"
    stale.write_text('{"half": ')
    assert run(lan, "setup", "--yes").exit_code == 0
    assert not stale.exists() and lan.paths.state_file.exists()


def test_without_root_castwall_does_not_claim_that_nothing_filters(tmp_path):
    svc = services(tmp_path, LAN, root=False, ufw=FakeUfw(installed=False, root=False))
    status = run(svc, "status")
    assert "nothing filters" not in status.output and "telling which firewall filters needs root" in status.output
    dry = run(svc, "setup", "--dry-run")
    assert dry.exit_code == ExitCode.NEED_ROOT and "run it with sudo" in dry.output


TWO_LANS = json.dumps(json.loads(data("ip-addr.json")) + [{
    "ifindex": 3, "ifname": "eth1", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "operstate": "UP",
    "addr_info": [{"family": "inet", "local": "10.99.0.10", "prefixlen": 24, "scope": "global"}]}])
GATEWAY_ROUTE = '[{"dst": "default", "gateway": "192.168.77.1", "dev": "eth0", "flags": []}]'


def test_the_gateway_and_a_forged_dial_source_are_never_asked_nor_allowed(tmp_path):
    """A DIAL reply seen off the wire may carry any source: castwall fetches only from a host on the subnet of the
    interface it came in on, and never from (or for) the default gateway."""
    router = device(9, name="Router", ip="192.168.77.1")
    switch = device(8, name="Managed switch", ip="10.99.0.5")  # on eth1's subnet; its "reply" came in on eth0
    forged = dataclasses.replace(dial_reply(switch), interface="eth0")
    ufw = FakeUfw(lines=list(USER_RULES), routes=GATEWAY_ROUTE, ip_addr=TWO_LANS)
    svc = services(tmp_path, LAN, ufw=ufw, extra=[hostile(b"Router TV", "192.168.77.1", "6a" * 16)],
                   dial=[dial_reply(d) for d in LAN] + [dial_reply(router), forged])
    result = run(svc, "setup", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(line.split()[3] for line in ufw.castwall_lines()) == ["192.168.77.101", "192.168.77.102"]
    out = result.output
    assert ("ignored a DIAL reply from 192.168.77.1: not asked for its description: "
            "192.168.77.1 is this computer's default gateway, not a Cast device") in out
    assert ("ignored a DIAL reply from 10.99.0.5: its reply came in on eth0, "
            "where 10.99.0.5 is not on the subnet: a forged source address") in out
    # The announcement naming the gateway's address is a device castwall refuses, with the reason.
    assert "Router TV" in out and out.count("192.168.77.1 is this computer's default gateway, not a Cast device") == 2


def test_a_dial_reply_that_came_in_on_its_own_subnets_interface_is_asked(tmp_path):
    switch_tv = device(8, name="Office TV", ip="10.99.0.5", mac="02:ca:57:00:00:08")
    ufw = FakeUfw(routes=GATEWAY_ROUTE, ip_addr=TWO_LANS)
    svc = services(tmp_path, [switch_tv], ufw=ufw, mdns=[],
                   dial=[dataclasses.replace(dial_reply(switch_tv), interface="eth1")])
    result = run(svc, "setup", "--yes")
    assert result.exit_code == 0, result.output
    assert [line.split()[3] for line in ufw.castwall_lines()] == ["10.99.0.5"]


def test_a_reply_on_another_interface_of_the_same_subnet_is_no_forgery(tmp_path):
    """eth0 chosen, wlan0 on the same subnet (not chosen): Linux may take the device's reply in on either."""
    same = json.dumps(json.loads(data("ip-addr.json")) + [{
        "ifindex": 4, "ifname": "wlan0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "operstate": "UP",
        "addr_info": [{"family": "inet", "local": "192.168.77.11", "prefixlen": 24, "scope": "global"}]}])
    ufw = FakeUfw(routes=GATEWAY_ROUTE, ip_addr=same)
    svc = services(tmp_path, LAN[:1], ufw=ufw, mdns=[], dial=[dataclasses.replace(dial_reply(LAN[0]), interface="wlan0")])
    result = run(svc, "setup", "--yes", "--interface", "eth0")
    assert result.exit_code == 0 and "forged" not in result.output, result.output
    assert [line.split()[3] for line in ufw.castwall_lines()] == [str(LAN[0].ip)]
