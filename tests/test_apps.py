"""Sender apps: the catalogue, castwall's ufw profiles as ufw reads them, the rule value, the planner, the commands."""

import importlib
import ipaddress
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from castwall import apps
from castwall.cli import cli
from castwall.model import Action, AppChoice, PortRange, Rule, State
from castwall.planner import plan_setup, select_rules_to_remove
from castwall.state import dump_state, load_state
from castwall.system.ufw import installed_profiles, parse_rule_line
from tests.fakes import FakeUfw, device, services

REPO = Path(__file__).resolve().parents[1]
PROFILE_FILE = REPO / "data" / "ufw-profiles" / "castwall"
RANGE = PortRange(32768, 60999)
VLC, CATT = AppChoice("vlc", PortRange(8010, 8010)), AppChoice("catt", PortRange(45000, 47000))
ALL_PROFILES = frozenset(a.profile for a in apps.CATALOGUE if a.profile)


def run(svc, *args, input=None):
    return CliRunner().invoke(cli, list(args), obj=svc, input=input)


# --- the catalogue and the profiles ------------------------------------------------


def test_every_app_has_a_source_and_valid_ports_or_says_how_to_fix_a_random_one():
    assert len({a.name for a in apps.CATALOGUE}) == len(apps.CATALOGUE) >= 10
    for app in apps.CATALOGUE:
        assert app.source and app.title and apps.TCP_RANGE != app.name
        if app.ports is None:
            with pytest.raises(apps.AppError, match="random port"):
                apps.parse_choice(app.name)
            assert apps.parse_choice(f"{app.name}=8123") == AppChoice(app.name, PortRange(8123, 8123))
        else:
            assert 1024 <= app.ports.low <= app.ports.high <= 65535
            assert apps.parse_choice(app.name) == AppChoice(app.name, app.ports)
    assert apps.BY_NAME["vlc"].ports == PortRange(8010, 8010)
    assert apps.BY_NAME["catt"].ports == PortRange(45000, 47000)  # random in 45000-46999, subtitles on the next port


@pytest.mark.parametrize("value, message", [
    ("nosuch", "no app called 'nosuch'"), ("vlc=0", "not a port"), ("vlc=9:8", "not a port"),
    ("vlc=70000", "not a port"), ("tcp-range", "needs the range"), ("catt=x", "not a port"),
    ("gnome-network-displays", "no option to fix the port"), ("gnomecast", "GNOMECAST_HTTP_PORT"),
])
def test_bad_app_values_say_why(value, message):
    with pytest.raises(apps.AppError, match=message):
        apps.parse_choice(value)


def test_two_apps_on_the_same_ports_are_refused_and_a_new_port_replaces_the_old():
    with pytest.raises(apps.AppError, match="both use TCP 5000"):
        apps.merge([], [apps.parse_choice("mkchromecast"), apps.parse_choice("vlc=5000")])
    assert apps.merge([VLC], [apps.parse_choice("vlc=9000"), CATT]) == (CATT, AppChoice("vlc", PortRange(9000, 9000)))


def test_the_shipped_profile_file_is_the_catalogue_and_ufw_reads_it(tmp_path):
    assert PROFILE_FILE.read_text() == apps.profile_text()
    from castwall.system.ufwlib import _import_ufw

    _import_ufw()
    ufw_apps = importlib.import_module("ufw.applications")
    (tmp_path / "castwall").write_text(PROFILE_FILE.read_text())
    profiles = ufw_apps.get_profiles(str(tmp_path))
    fixed = [a for a in apps.CATALOGUE if a.ports is not None]
    assert sorted(profiles) == sorted(a.profile for a in fixed)
    for app in fixed:
        assert ufw_apps.verify_profile(app.profile, profiles[app.profile])
        assert ufw_apps.get_ports(profiles[app.profile]) == [f"{apps.port_text(app.ports)}/tcp"]
    assert apps.usable_profiles(apps.read_profiles(PROFILE_FILE.read_text())) == {a.profile: a.ports for a in fixed}


def test_a_missing_or_edited_profile_means_plain_port_rules_as_ufw_merges_the_directory(tmp_path):
    found, why = installed_profiles(tmp_path / "absent" / "castwall")
    assert found == frozenset() and "not installed" in why
    (tmp_path / "castwall").write_text(PROFILE_FILE.read_text().replace("ports=8010/tcp", "ports=8010:8020/tcp"))
    found, why = installed_profiles(tmp_path / "castwall")
    assert "castwall-vlc" not in found and "castwall-catt" in found and "for vlc" in why
    (tmp_path / "castwall").write_text(PROFILE_FILE.read_text())
    assert "castwall-vlc" in installed_profiles(tmp_path / "castwall")[0]
    # ufw reads every file in name order and the last definition wins: castwall must see what ufw will use.
    (tmp_path / "zz-local").write_text("[castwall-vlc]\ntitle=x\ndescription=x\nports=1:65535/tcp\n")
    assert "castwall-vlc" not in installed_profiles(tmp_path / "castwall")[0]
    (tmp_path / ".hidden").write_text("[castwall-catt]\ntitle=x\ndescription=x\nports=1:65535/tcp\n")
    assert "castwall-catt" in installed_profiles(tmp_path / "castwall")[0]  # ufw skips hidden files, so castwall does
    # A file ufw cannot parse strictly (a duplicated section) is skipped whole by ufw: castwall then has no profiles.
    (tmp_path / "zz-local").unlink()
    (tmp_path / "castwall").write_text(PROFILE_FILE.read_text() + "\n[castwall-vlc]\ntitle=a\ndescription=b\nports=8010/tcp\n")
    assert installed_profiles(tmp_path / "castwall")[0] == frozenset()


# --- the rule value ---------------------------------------------------------------


@pytest.mark.parametrize("rule", [
    Rule(ipaddress.ip_address("192.168.77.101"), RANGE, "00000001-0000-4000-8000-000000000001"),
    Rule(ipaddress.ip_address("192.168.77.101"), PortRange(8010, 8010), "00000001-0000-4000-8000-000000000001", proto="tcp",
         app="vlc"),
    Rule(ipaddress.ip_address("192.168.77.101"), PortRange(45000, 47000), "00000001-0000-4000-8000-000000000001",
         proto="tcp", app="catt", profile=True),
    Rule(ipaddress.ip_address("192.168.77.101"), PortRange(40000, 40010), "00000001-0000-4000-8000-000000000001",
         proto="tcp", app="tcp-range"),
    Rule(ipaddress.ip_address("fd00::5"), PortRange(4100, 4104), None, proto="tcp"),
])
def test_a_rule_turns_into_ufw_text_and_back(rule):
    fake = FakeUfw()
    fake.run(("ufw",) + rule.ufw_add_args())
    (line,) = fake.lines
    assert parse_rule_line(line) == rule
    fake.run(("ufw",) + rule.ufw_delete_args())
    assert fake.lines == []
    assert not any(":" in word and word.split(":")[0] == word.split(":")[1] for word in rule.ufw_add_args())  # ufw refuses 8010:8010


def test_a_rule_refuses_what_is_not_castwalls_shape():
    ip = ipaddress.ip_address("192.168.77.5")
    for bad in [dict(proto="icmp"), dict(proto="udp", app="vlc"), dict(proto="tcp", profile=True), dict(proto="tcp", app="Open SSH")]:
        with pytest.raises(ValueError):
            Rule(ip, PortRange(8010, 8010), None, **bad)
    tag = "castwall:00000001-0000-4000-8000-000000000001"
    for line in [f"ufw allow from 192.168.77.5 to any app OpenSSH comment '{tag}'",
                 f"ufw allow from 192.168.77.5 to any app castwall-nosuch comment '{tag}'",
                 f"ufw allow from 192.168.77.5 to any app castwall-vlc comment '{tag}/catt'",
                 f"ufw allow from 192.168.77.5 to any port 8010,8011 proto tcp comment '{tag}/vlc'",
                 f"ufw allow from 192.168.77.5 to any port 1:65535 proto tcp comment '{tag}'",  # a TCP tag names its app
                 f"ufw allow from 192.168.77.5 to any port 1:65535 proto tcp comment '{tag}/ssh'",
                 f"ufw allow from 192.168.77.5 to any port 32768:60999 proto udp comment '{tag}/vlc'"]:
        assert parse_rule_line(line) == line  # tagged castwall but not castwall's shape: reported, never touched
    assert parse_rule_line("ufw allow from 192.168.77.5 to any app OpenSSH") is None
    mine = parse_rule_line("ufw allow from 192.168.77.5 to any app castwall-vlc")  # the user's own, through our profile
    assert mine == Rule(ip, PortRange(8010, 8010), None, proto="tcp")


def test_the_state_file_keeps_apps_and_app_rules_and_refuses_an_unknown_app():
    d = device(1)
    rules = (Rule(d.ip, RANGE, d.uuid), Rule(d.ip, PortRange(8010, 8010), d.uuid, proto="tcp", app="vlc", profile=True))
    state = State(RANGE, (d,), rules, "2026-12-01T10:00:00Z", (VLC,))
    assert load_state(dump_state(state)) == state
    doc = json.loads(dump_state(state))
    doc["apps"] = [{"name": "ssh", "ports": [22, 22]}]
    with pytest.raises(Exception, match="no app called 'ssh'"):
        load_state(json.dumps(doc))
    for bad in [{"app": "ssh", "profile": False}, {"app": "vlc", "profile": True, "ports": [1, 65535]}]:
        doc = json.loads(dump_state(state))
        doc["rules"][1].update(bad)
        with pytest.raises(Exception, match="invalid entry"):
            load_state(json.dumps(doc))
    v1 = {**json.loads(dump_state(state)), "version": 1, "apps": []}
    v1["rules"] = v1["rules"][:1]
    for r in v1["rules"]:
        r.pop("proto"), r.pop("app"), r.pop("profile")
    assert load_state(json.dumps(v1)).rules[0].proto == "udp"  # a version-1 file only ever held UDP rules


# --- the planner ---------------------------------------------------------------------


def test_each_device_gets_its_udp_rule_and_one_rule_per_app():
    a, b = device(1), device(2)
    plan = plan_setup([a, b], RANGE, [], chosen=[CATT, VLC], profiles={"castwall-vlc"})
    added = [s.rule for s in plan.steps]
    assert all(s.action is Action.ADD for s in plan.steps) and len(added) == 6
    assert Rule(a.ip, PortRange(8010, 8010), a.uuid, proto="tcp", app="vlc", profile=True) in added
    assert Rule(a.ip, PortRange(45000, 47000), a.uuid, proto="tcp", app="catt") in added  # no profile: a plain port rule
    assert plan_setup([a, b], RANGE, added, chosen=[CATT, VLC], profiles={"castwall-vlc"}).empty


def test_a_moved_device_takes_its_app_rules_along_and_a_new_port_replaces_the_rule():
    a = device(1)
    old = [Rule(a.ip, RANGE, a.uuid), Rule(a.ip, PortRange(8010, 8010), a.uuid, proto="tcp", app="vlc", profile=True)]
    moved = device(1, ip="192.168.77.150")
    plan = plan_setup([moved], RANGE, old, chosen=[VLC], profiles=ALL_PROFILES)
    assert {(s.action, s.rule.ip, s.rule.proto) for s in plan.steps} == {
        (Action.DELETE, a.ip, "udp"), (Action.DELETE, a.ip, "tcp"), (Action.ADD, moved.ip, "udp"), (Action.ADD, moved.ip, "tcp")}
    plan = plan_setup([a], RANGE, old, chosen=[AppChoice("vlc", PortRange(9000, 9000))], profiles=ALL_PROFILES)
    assert [(s.action, s.rule.traffic) for s in plan.steps] == [
        (Action.DELETE, "TCP 8010 (app castwall-vlc)"), (Action.ADD, "TCP 9000")]
    assert "vlc now uses TCP 9000" in plan.steps[0].reason
    # An old port of an app (set by hand before) and an app no longer chosen are closed for a device seen now.
    stale = old + [Rule(a.ip, PortRange(9100, 9100), a.uuid, proto="tcp", app="vlc"),
                   Rule(a.ip, PortRange(5000, 5000), a.uuid, proto="tcp", app="mkchromecast")]
    plan = plan_setup([a], RANGE, stale, chosen=[VLC], profiles=ALL_PROFILES)
    assert sorted(s.rule.traffic for s in plan.steps) == ["TCP 5000", "TCP 9100"]
    assert all(s.action is Action.DELETE for s in plan.steps)
    # The profile went: the plain rule is added first, then the profile rule deleted (an undo never needs the profile).
    plan = plan_setup([a], RANGE, old, chosen=[VLC], profiles=())
    assert [(s.action, s.rule.traffic) for s in plan.steps] == [
        (Action.ADD, "TCP 8010"), (Action.DELETE, "TCP 8010 (app castwall-vlc)")]
    assert "missing or changed" in plan.steps[1].reason


def test_a_users_own_identical_rule_is_left_alone_and_an_unseen_device_keeps_its_rules():
    a, b = device(1), device(2)
    mine = Rule(a.ip, PortRange(8010, 8010), None, proto="tcp")
    theirs = [Rule(b.ip, RANGE, b.uuid)]
    plan = plan_setup([a], RANGE, [mine] + theirs, chosen=[VLC])
    assert [s.rule for s in plan.steps] == [Rule(a.ip, RANGE, a.uuid)]
    assert any("already allowed by a ufw rule castwall did not write" in s.reason for s in plan.skipped)
    assert plan.untouched == tuple(theirs)


def test_remove_app_selects_that_apps_rules_on_every_device():
    a, b = device(1), device(2)
    owned = [Rule(a.ip, RANGE, a.uuid), Rule(a.ip, PortRange(8010, 8010), a.uuid, proto="tcp", app="vlc", profile=True),
             Rule(b.ip, RANGE, b.uuid), Rule(b.ip, PortRange(9000, 9000), b.uuid, proto="tcp", app="vlc"),
             Rule(b.ip, PortRange(45000, 47000), b.uuid, proto="tcp", app="catt")]
    steps, unmatched = select_rules_to_remove(owned, [a, b], [], ["vlc"], [VLC, CATT])
    assert unmatched == [] and [s.rule for s in steps] == [owned[1], owned[3]]
    assert select_rules_to_remove(owned, [a, b], [], ["mkchromecast"], [VLC])[1] == ["mkchromecast"]


# --- the commands ------------------------------------------------------------------------


@pytest.fixture
def lan(tmp_path):
    svc = services(tmp_path, [device(1, name="Living Room TV"), device(2, name="Bedroom TV")], ufw=FakeUfw(lines=["ufw allow 22/tcp"]))
    return svc


def with_profiles(svc):
    svc.paths.ufw_profiles.parent.mkdir(parents=True, exist_ok=True)
    svc.paths.ufw_profiles.write_text(PROFILE_FILE.read_text())
    return svc


def test_setup_app_writes_profile_rules_keeps_the_apps_and_a_second_run_changes_nothing(lan, tmp_path):
    from dataclasses import replace

    lan.paths = replace(lan.paths, ufw_profiles=tmp_path / "applications.d" / "castwall")
    with_profiles(lan)
    result = run(lan, "setup", "--yes", "--app", "vlc", "--app", "catt")
    assert result.exit_code == 0, result.output
    lines = lan.ufw.castwall_lines()
    assert len(lines) == 6
    assert "ufw allow from 192.168.77.101 to any app castwall-vlc comment 'castwall:00000001-0000-4000-8000-000000000001'" in lines
    assert "through ufw's app profile castwall-catt" in result.output and "TCP 8010 (app castwall-vlc)" in result.output
    assert lan.ufw.lines[0] == "ufw allow 22/tcp"
    state = json.loads(lan.paths.state_file.read_text())
    assert [a["name"] for a in state["apps"]] == ["catt", "vlc"]
    again = run(lan, "setup", "--yes")  # the apps come from the state file
    assert again.exit_code == 0 and "Nothing to change" in again.output and len(lan.ufw.castwall_lines()) == 6
    status = run(lan, "status", "--json")
    doc = json.loads(status.output[status.output.index("{"):])
    assert {r["for"] for r in doc["rules"]} == {"dial", "vlc", "catt"} and len(doc["apps"]) == 2
    text = run(lan, "status").output
    assert "catt, vlc" in text and "Apps:" in text
    removed = run(lan, "remove", "--yes", "--app", "vlc")
    assert removed.exit_code == 0, removed.output
    assert not any("castwall-vlc" in line for line in lan.ufw.lines) and len(lan.ufw.castwall_lines()) == 4
    assert [a["name"] for a in json.loads(lan.paths.state_file.read_text())["apps"]] == ["catt"]
    assert run(lan, "setup", "--yes").exit_code == 0 and len(lan.ufw.castwall_lines()) == 4  # vlc stays withdrawn


def test_without_the_profiles_setup_says_so_and_writes_plain_port_rules(lan):
    result = run(lan, "setup", "--yes", "--app", "vlc=9000", "--app", "tcp-range=40000:40099")
    assert result.exit_code == 0, result.output
    assert "ufw allow from 192.168.77.101 to any port 9000 proto tcp comment 'castwall:00000001-0000-4000-8000-000000000001/vlc'" \
        in lan.ufw.lines
    assert "a broad rule, 100 port(s) open to every device" in result.output


def test_an_app_with_a_random_port_is_a_usage_error_before_anything_runs(lan):
    result = run(lan, "setup", "--yes", "--app", "go-chromecast")
    assert result.exit_code == 2 and "--server-port" in result.output and lan.ufw.changes == 0
    for args, message in [(["--app", "vlc", "--device", "Living Room TV"], "use one of them"),
                          (["--all", "--app", "vlc"], "cannot be combined"), (["--app", "nosuch"], "no app called")]:
        result = run(lan, "remove", "--yes", *args)
        assert result.exit_code == 2 and message in result.output


def test_status_flags_app_rules_whose_profile_went_and_setup_turns_them_into_plain_rules(lan, tmp_path):
    from dataclasses import replace

    lan.paths = replace(lan.paths, ufw_profiles=tmp_path / "applications.d" / "castwall")
    with_profiles(lan)
    assert run(lan, "setup", "--yes", "--app", "vlc").exit_code == 0
    assert run(lan, "status", "--no-discover").exit_code == 0
    lan.paths.ufw_profiles.write_text(PROFILE_FILE.read_text().replace("ports=8010/tcp", "ports=1:65535/tcp"))
    result = run(lan, "status", "--no-discover")
    assert result.exit_code == 3 and "2 rule(s) go through ufw's app profile castwall-vlc, which is missing or changed" in result.output
    fixed = run(lan, "setup", "--yes")
    assert fixed.exit_code == 0 and "vlc: its ufw profile is missing or changed" in fixed.output
    assert not [line for line in lan.ufw.lines if "castwall-vlc" in line]
    assert len([line for line in lan.ufw.lines if "port 8010 proto tcp" in line]) == 2
    assert run(lan, "status", "--no-discover").exit_code == 0


def test_status_flags_a_device_that_lacks_a_chosen_apps_rule(lan):
    assert run(lan, "setup", "--yes", "--app", "vlc").exit_code == 0
    lan.ufw.lines = [line for line in lan.ufw.lines if not ("192.168.77.102" in line and "tcp" in line)]
    result = run(lan, "status", "--no-discover")
    assert result.exit_code == 3
    assert "the vlc rule for Bedroom TV (192.168.77.102) is missing from ufw" in result.output


def test_apps_lists_the_catalogue_with_ports_options_and_profiles(lan):
    result = run(lan, "apps")
    assert result.exit_code == 0
    for app in apps.CATALOGUE:
        assert app.name in result.output
    assert "--sout-chromecast-http-port" in result.output and "castwall-vlc" in result.output and "profiles are not installed" in result.output
    doc = json.loads(run(lan, "apps", "--json").output)
    assert doc["kind"] == "apps" and {a["name"] for a in doc["apps"]} == set(apps.BY_NAME)
    assert next(a for a in doc["apps"] if a["name"] == "gnomecast")["random"] is True


def test_a_failing_app_rule_undoes_the_whole_run(lan, tmp_path):
    from dataclasses import replace

    lan.paths = replace(lan.paths, ufw_profiles=tmp_path / "applications.d" / "castwall")
    with_profiles(lan)
    lan.ufw.fail_calls = {4}  # the second device's UDP rule is the 3rd change, its vlc rule the 4th
    result = run(lan, "setup", "--yes", "--app", "vlc")
    assert result.exit_code == 6, result.output
    assert "step 4 of 4 failed" in result.output and "the 3 change(s) made before it were undone" in result.output
    assert lan.ufw.lines == ["ufw allow 22/tcp"] and not lan.paths.state_file.exists()


def test_your_own_rule_for_an_apps_port_is_left_alone_and_status_does_not_nag_about_it(lan, tmp_path):
    from dataclasses import replace

    lan.paths = replace(lan.paths, ufw_profiles=tmp_path / "applications.d" / "castwall")
    with_profiles(lan)
    lan.ufw.lines.append("ufw allow from 192.168.77.101 to any port 8010 proto tcp comment 'mine'")
    result = run(lan, "setup", "--yes", "--app", "vlc")
    assert result.exit_code == 0, result.output
    assert "TCP 8010 (app castwall-vlc) is already allowed by a ufw rule castwall did not write" in result.output
    assert [line for line in lan.ufw.lines if "castwall-vlc" in line] == [
        "ufw allow from 192.168.77.102 to any app castwall-vlc comment 'castwall:00000002-0000-4000-8000-000000000002'"]
    assert run(lan, "status", "--no-discover").exit_code == 0


def test_status_flags_an_app_rule_on_a_port_no_longer_chosen(lan):
    assert run(lan, "setup", "--yes", "--app", "vlc").exit_code == 0
    assert run(lan, "setup", "--yes", "--app", "vlc=9000", "--device", "Living Room TV").exit_code == 0
    result = run(lan, "status", "--no-discover")
    assert result.exit_code == 3
    assert "the vlc rule for Bedroom TV (192.168.77.102) is for TCP 8010, but vlc is chosen on TCP 9000" in result.output
    assert run(lan, "setup", "--yes").exit_code == 0 and run(lan, "status", "--no-discover").exit_code == 0
    assert not [line for line in lan.ufw.lines if "port 8010" in line]


def test_a_lost_state_file_keeps_the_apps_that_ufw_holds_rules_for(lan):
    assert run(lan, "setup", "--yes", "--app", "catt", "--app", "vlc=9000").exit_code == 0
    before = list(lan.ufw.lines)
    lan.paths.state_file.write_text("{ truncated")
    result = run(lan, "setup", "--yes")
    assert result.exit_code == 0 and lan.ufw.lines == before, result.output
    assert [(a["name"], a["ports"]) for a in json.loads(lan.paths.state_file.read_text())["apps"]] == [
        ("catt", [45000, 47000]), ("vlc", [9000, 9000])]
    removed = run(lan, "remove", "--yes", "--app", "vlc")
    assert removed.exit_code == 0 and not [line for line in lan.ufw.lines if "/vlc'" in line]
