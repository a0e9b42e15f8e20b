"""castwall check and status --check: verdicts from what mDNS, DIAL and the Cast port did (fake LAN, CliRunner)."""

import json

from click.testing import CliRunner

from castwall.cli import cli
from castwall.errors import ExitCode
from castwall.model import Kind
from tests.fakes import FakeUfw, device, dial_reply, services

TV = device(1, name="Living Room TV")
SPEAKER = device(2, name="Kitchen speaker", model="Google Home Mini", kind=Kind.AUDIO)
GROUP = device(9, name="Whole House", kind=Kind.GROUP, ip="192.168.77.102", port=32161)


def run(svc, *args):
    return CliRunner().invoke(cli, list(args), obj=svc)


def doc_of(result):
    out = result.output
    return json.loads(out[out.index("\n{") + 1 if not out.startswith("{") else 0:])


def verdicts(result):
    return {d["name"]: d for d in doc_of(result)["devices"]}


def test_multicast_works_and_dial_is_dropped_chrome_still_finds_everyone(tmp_path):
    svc = services(tmp_path, [TV, SPEAKER, GROUP], dial=[dial_reply(TV, delivered=False, on_wire=True),
                                                        dial_reply(SPEAKER, delivered=False, on_wire=True)])
    result = run(svc, "check", "--json")
    assert result.exit_code == 0, result.output
    got = verdicts(result)
    assert got["Living Room TV"]["dial"] == "dropped" and got["Living Room TV"]["chrome_finds_by"] == ["mdns"]
    assert got["Living Room TV"]["ok"] and "sudo castwall setup" in got["Living Room TV"]["note"]
    assert got["Whole House"]["dial"] == "-" and got["Whole House"]["cast"] == {"port": 32161, "opens": True, "error": None}
    text = run(svc, "check")
    assert "dropped here" in text.output and "finds it by mDNS, can cast" in text.output
    assert "Chrome can find and cast to all 3 device(s)." in text.output


def test_multicast_lost_and_dial_dropped_nothing_is_found_and_setup_is_the_fix(tmp_path):
    svc = services(tmp_path, [TV, SPEAKER], mdns=[], dial=[dial_reply(TV, delivered=False, on_wire=True),
                                                            dial_reply(SPEAKER, delivered=False, on_wire=True)])
    result = run(svc, "check")
    assert result.exit_code == ExitCode.ATTENTION, result.output
    assert result.output.count("CANNOT FIND IT") == 2
    assert "this computer's firewall drops its DIAL replies" in result.output and "fix: run 'sudo castwall setup'" in result.output


def test_after_setup_dial_arrives_and_chrome_finds_them_by_dial(tmp_path):
    svc = services(tmp_path, [TV, SPEAKER], mdns=[], dial=[dial_reply(TV, on_wire=True), dial_reply(SPEAKER, on_wire=True)])
    assert run(svc, "setup", "--yes").exit_code == 0
    result = run(svc, "check", "--json")
    assert result.exit_code == 0, result.output
    assert {n: v["chrome_finds_by"] for n, v in verdicts(result).items()} == {"Living Room TV": ["dial"], "Kitchen speaker": ["dial"]}
    assert all(v["found_by"] == ["dial"] for v in verdicts(result).values())


def test_a_cast_port_that_does_not_open_is_a_problem(tmp_path):
    svc = services(tmp_path, [TV, SPEAKER], closed=[str(TV.ip)])
    result = run(svc, "check", "--device", "Living Room TV")
    assert result.exit_code == ExitCode.ATTENTION
    assert "finds it, CANNOT CAST" in result.output and "connection refused" in result.output
    assert "Kitchen speaker" not in result.output


def test_a_description_naming_another_device_does_not_count_as_dial(tmp_path):
    svc = services(tmp_path, [TV], mdns=[], dial=[dial_reply(TV, uuid=SPEAKER.uuid)])
    doc = doc_of(run(svc, "check", "--json"))
    # castwall found the speaker's UUID at the TV's address by DIAL: that is what it checks.
    assert [(d["uuid"], d["dial"], d["ok"]) for d in doc["devices"]] == [(SPEAKER.uuid, "arrives", True)]


def test_without_root_nothing_seen_is_exit_9_with_the_hint(tmp_path):
    svc = services(tmp_path, [TV], root=False, mdns=[], dial=[])
    result = run(svc, "check")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "try 'sudo castwall check'" in result.output


def test_without_root_a_known_device_not_seen_names_what_root_would_tell(tmp_path):
    svc = services(tmp_path, [TV], mdns=[], dial=[dial_reply(TV, on_wire=True)])
    assert run(svc, "setup", "--yes").exit_code == 0
    svc.is_root = lambda: False
    svc.dial = lambda interfaces, **options: None
    result = run(svc, "check")
    assert result.exit_code == ExitCode.ATTENTION
    assert "no DIAL reply from it reached this computer" in result.output and "sudo castwall check" in result.output


def test_status_check_folds_the_verdicts_in(tmp_path):
    svc = services(tmp_path, [TV, SPEAKER], mdns=[], dial=[dial_reply(TV, on_wire=True), dial_reply(SPEAKER, on_wire=True)],
                   ufw=FakeUfw())
    assert run(svc, "setup", "--yes").exit_code == 0
    assert run(svc, "status", "--check").exit_code == 0
    svc.reach = lambda targets: {t: "no answer within 1.5 s" for t in targets}
    result = run(svc, "status", "--check", "--json")
    assert result.exit_code == ExitCode.ATTENTION
    doc = doc_of(result)
    assert [f["code"] for f in doc["findings"] if f["attention"]] == ["check-failed", "check-failed"]
    assert {c["name"]: c["ok"] for c in doc["check"]} == {"Living Room TV": False, "Kitchen speaker": False}
    assert run(svc, "status", "--check", "--no-discover").exit_code == ExitCode.USAGE


def test_a_device_refused_for_its_address_is_left_out_unless_named(tmp_path):
    mine = device(5, name="Totally a TV", ip="192.168.77.10")  # this computer's own address, per ip-addr.json
    svc = services(tmp_path, [TV, mine], closed=["192.168.77.10"])
    result = run(svc, "check")
    assert result.exit_code == 0, result.output
    assert "Not checked (1)" in result.output and "Totally a TV (192.168.77.10): 192.168.77.10 is this computer's own" in result.output
    doc = doc_of(run(svc, "check", "--json"))
    assert [d["name"] for d in doc["devices"]] == ["Living Room TV"] and doc["left_out"][0]["name"] == "Totally a TV"
    named = run(svc, "check", "--device", "Totally a TV")
    assert named.exit_code == ExitCode.ATTENTION and "CANNOT CAST" in named.output


def test_a_saved_device_is_looked_for_only_if_it_has_a_rule(tmp_path):
    mine = device(5, name="Totally a TV", ip="192.168.77.10")
    svc = services(tmp_path, [TV, mine])
    assert run(svc, "setup", "--yes").exit_code == 0  # the state file now holds both, a rule for the TV only
    svc.discover = lambda addresses, timeout, **options: []
    result = run(svc, "check")
    assert result.exit_code == ExitCode.ATTENTION
    assert "Living Room TV" in result.output and "Totally a TV" not in result.output


def test_status_says_when_only_the_check_needs_attention(tmp_path):
    svc = services(tmp_path, [TV], mdns=[], dial=[dial_reply(TV, on_wire=True)], closed=[str(TV.ip)])
    assert run(svc, "setup", "--yes").exit_code == 0
    result = run(svc, "status", "--check")
    assert result.exit_code == ExitCode.ATTENTION
    assert "cannot open its Cast channel" in result.output and "see the fixes above" in result.output
    assert "bring the rules up to date" not in result.output
