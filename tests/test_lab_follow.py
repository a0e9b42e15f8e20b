"""Follow mode in the lab, with real ufw, real responders and the kernel's ARP: rules move with a
device, stay shut to impostors and to hosts that take a device's address, leave with the laptop
for a café's LAN (same subnet, another gateway) and come back home; and every fault guarantee of
setup holds for a pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_lab_faults import PATHS, env, inject, snapshot, two_runs_while_locked

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "data" / "follow" / "hook"
IN_RANGE = 45000
IMPOSTOR_MAC = "02:ca:57:dd:00:01"
TAKER_MAC = "02:ca:57:dd:00:02"


def tagged(lab) -> list[str]:
    return [line for line in lab.ufw_added() if "castwall:" in line]


def sources(lab) -> list[str]:
    """The addresses castwall's rules let in, in order."""
    return sorted(line.split(" from ")[1].split()[0] for line in tagged(lab))


def set_up(lab, *args):
    done = lab.castwall("setup", "--yes", *args)
    assert done.returncode == 0, done.stderr
    return done


def follow(lab, *args, code=0):
    done = lab.castwall("follow", "run", *args)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


def state(lab) -> dict:
    return json.loads((lab.state_dir / "state.json").read_text())


def test_a_device_with_a_new_lease_takes_its_rule_along_and_its_old_address_is_shut(make_lab):
    lab = make_lab(devices=2)
    lab.ufw("allow", "22/tcp", check=True)
    set_up(lab)
    tv, speaker = lab.devices[0], lab.devices[1]
    old = tv.ip
    assert lab.udp_reaches({"tv": tv.ns}, IN_RANGE) == {"tv"}
    lab.move(tv, "192.168.77.180")
    assert lab.udp_reaches({"tv": tv.ns}, IN_RANGE) == set()  # the rule still names the old lease

    done = follow(lab)
    assert f"castwall follow: moved: {tv.name} from {old} to 192.168.77.180" in done.stdout
    assert sources(lab) == sorted(["192.168.77.180", speaker.ip])
    assert "ufw allow 22/tcp" in lab.ufw_added()
    taker = lab.take_address(old, TAKER_MAC)
    assert lab.udp_reaches({"tv": tv.ns, "taker": taker.ns, "speaker": speaker.ns}, IN_RANGE) == {"tv", "speaker"}
    moved = next(d for d in state(lab)["devices"] if d["name"] == tv.name)
    assert moved["ip"] == "192.168.77.180"
    again = follow(lab)
    assert "nothing to change" in again.stdout and sources(lab) == sorted(["192.168.77.180", speaker.ip])
    status = lab.castwall("status")
    assert status.returncode == 0, status.stdout


def test_an_impostor_gets_nothing_and_a_second_mac_at_the_devices_address_withdraws_its_rule_until_it_is_alone(make_lab):
    lab = make_lab(devices=2)
    set_up(lab)
    tv, speaker = lab.devices[0], lab.devices[1]
    before = tagged(lab)

    impostor = lab.take_address("192.168.77.150", IMPOSTOR_MAC, announce=tv)  # the TV's UUID, another MAC
    done = follow(lab)
    assert tagged(lab) == before
    assert f"castwall follow: not moved: {tv.name} is announced from" in done.stdout, done.stdout
    assert lab.udp_reaches({"impostor": impostor.ns, "tv": tv.ns}, IN_RANGE) == {"tv"}
    lab.unplug(impostor)

    taker = lab.take_address(tv.ip, TAKER_MAC)  # a second host answers ARP for the TV's address
    done = follow(lab)
    assert f"castwall follow: withdrawn: {tv.name}'s rules for {tv.ip}: ARP for {tv.ip} is answered by {TAKER_MAC}" \
        in done.stdout, done.stdout
    assert sources(lab) == [speaker.ip]
    assert lab.udp_reaches({"tv": tv.ns, "taker": taker.ns, "speaker": speaker.ns}, IN_RANGE) == {"speaker"}
    status = lab.castwall("status")
    assert f"follow mode withdrew {tv.name}'s rules" in status.stdout
    away = lab.castwall("follow", "status", "--json", root=False)
    assert {d["name"]: d["status"] for d in json.loads(away.stdout)["devices"]}[tv.name] == "away"

    lab.unplug(taker)
    done = follow(lab)
    assert f"castwall follow: restored: {tv.name} at {tv.ip}" in done.stdout, done.stdout
    assert sources(lab) == sorted([tv.ip, speaker.ip])
    assert lab.udp_reaches({"tv": tv.ns, "speaker": speaker.ns}, IN_RANGE) == {"tv", "speaker"}


def test_a_new_device_is_reported_and_gets_no_rule(make_lab):
    lab = make_lab(devices=2)
    set_up(lab, "--device", lab.devices[0].name)
    done = follow(lab)
    assert f"castwall follow: new device: {lab.devices[1].name} at {lab.devices[1].ip} is not approved" in done.stdout
    assert sources(lab) == [lab.devices[0].ip]


def hook(lab, *args, **environ):
    """Run the installed network hook in the workstation as a dispatcher would (it starts the pass and returns)."""
    done = lab.ws(["/bin/sh", str(HOOK), *args], env=environ)
    assert done.returncode == 0, done.stderr


def test_the_laptop_in_a_cafe_shuts_the_rules_at_once_and_opens_them_again_at_home(make_lab):
    lab = make_lab(devices=2)
    set_up(lab)
    tv, speaker = lab.devices[0], lab.devices[1]
    lab.follow_systemd()
    enabled = lab.castwall("follow", "enable")
    assert enabled.returncode == 0, enabled.stderr
    assert lab.follow_units()["enabled"]
    log = lab.wait_follow_pass(1)
    assert lab.follow_passes() == [0] and "nothing to change (2 approved device(s))" in log

    cafe = lab.second_lan()  # a stranger at the TV's address, behind a gateway at the same address
    lab.roam("cafe")
    hook(lab, "eth0", "up")  # NetworkManager's dispatcher
    log = lab.wait_follow_pass(2)
    assert lab.follow_passes() == [0, 0], log
    assert log.count("this computer is on another network") == 2, log
    assert tagged(lab) == []
    assert lab.udp_reaches({"stranger": cafe.stranger.ns}, IN_RANGE) == set()
    status = json.loads(lab.castwall("follow", "status", "--json", root=False).stdout)
    assert {d["status"] for d in status["devices"]} == {"away"} and len(status["last_pass"]["changes"]) == 2

    lab.roam("home")
    hook(lab, IFACE="eth0", MODE="start", PHASE="post-up")  # ifupdown's if-up.d
    log = lab.wait_follow_pass(3)
    assert lab.follow_passes() == [0, 0, 0], log
    assert log.count("castwall follow: restored:") == 2, log
    assert sources(lab) == sorted([tv.ip, speaker.ip])
    assert lab.udp_reaches({"tv": tv.ns, "speaker": speaker.ns}, IN_RANGE) == {"tv", "speaker"}

    removed = lab.castwall("remove", "--all", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert not lab.follow_units()["enabled"] and "Follow mode turned off" in removed.stderr
    hook(lab, "eth0", "dhcp4-change")  # follow mode is off: the hook starts nothing
    assert "start castwall-follow.service" not in lab.systemctl_calls()[-1]


def moved_lab(make_lab):
    """One device with its UDP rule and a VLC rule (through castwall's profile), moved: a pass deletes 2 and adds 2."""
    lab = make_lab(devices=1)
    lab.install_profiles()
    set_up(lab, "--app", "vlc")
    lab.move(lab.devices[0], "192.168.77.180")
    return lab


@pytest.mark.parametrize("path", PATHS)
def test_ufw_failing_at_each_step_of_a_pass_leaves_ufw_and_the_state_file_as_they_were(make_lab, path):
    lab = moved_lab(make_lab)
    before = snapshot(lab)
    for k in range(1, 5):
        inject(lab, path, "fail", k)
        done = lab.castwall("follow", "run", env=env(path))
        assert done.returncode == 6, (k, done.stdout, done.stderr)
        assert f"step {k} of 4 failed" in done.stderr and "so ufw is as it was before this run" in done.stderr
        lab.clear_ufw_fault()
        assert snapshot(lab) == before, k
        record = json.loads((lab.state_dir / "follow-last.json").read_text())
        assert record["exit"] == 6 and "ufw is as it was" in record["error"]
    inject(lab, path, "term", 2)
    done = lab.castwall("follow", "run", env=env(path))
    assert done.returncode == 130 and "so ufw is as it was before this run" in done.stderr, done.stderr
    lab.clear_ufw_fault()
    assert snapshot(lab) == before
    done = lab.castwall("follow", "run", env=env(path))
    assert done.returncode == 0, done.stderr
    assert sources(lab) == ["192.168.77.180", "192.168.77.180"]


@pytest.mark.parametrize("path", PATHS)
def test_a_killed_pass_is_finished_by_the_next_one(make_lab, path):
    lab = moved_lab(make_lab)
    _, _, _, state_before = snapshot(lab)
    inject(lab, path, "kill", 3)  # two deletes and one add done, then the power went
    killed = lab.castwall("follow", "run", env=env(path))
    assert killed.returncode in (-9, 137), (killed.returncode, killed.stderr)
    lab.clear_ufw_fault()
    assert (lab.state_dir / "state.json").read_bytes() == state_before
    assert sources(lab) == ["192.168.77.180"]
    done = follow(lab)
    assert sources(lab) == ["192.168.77.180", "192.168.77.180"]
    assert f"castwall follow: restored: {lab.devices[0].name} at 192.168.77.180" in done.stdout, done.stdout
    assert "an interrupted pass had begun to move it" in done.stdout
    assert [d["ip"] for d in state(lab)["devices"]] == ["192.168.77.180"]
    assert sorted(r["ip"] for r in state(lab)["rules"]) == ["192.168.77.180", "192.168.77.180"]
    assert follow(lab).stdout.count("nothing to change") == 1
    status = lab.castwall("status")
    assert status.returncode == 0, status.stdout


def test_two_passes_at_once_one_waits_and_nothing_is_doubled(make_lab):
    lab = moved_lab(make_lab)
    codes, text = two_runs_while_locked(lab, "follow", "run")
    assert codes == [0, 0], text
    stdout = "".join(out for out, _ in text.values())
    assert stdout.count("castwall follow: moved:") == 1 and stdout.count("nothing to change") == 1, text
    assert sources(lab) == ["192.168.77.180", "192.168.77.180"] and len(set(tagged(lab))) == 2


def test_follow_mode_changes_nothing_without_root_or_with_a_corrupt_state_file(make_lab):
    lab = make_lab(devices=1)
    set_up(lab)
    before = tagged(lab)
    lab.move(lab.devices[0], "192.168.77.180")
    as_user = lab.castwall("follow", "run", root=False)
    assert as_user.returncode == 4 and "needs root" in as_user.stderr
    (lab.state_dir / "state.json").write_text('{"format": "castwall-state", "version": 3, "devices": [')
    corrupt = lab.castwall("follow", "run")
    assert corrupt.returncode == 8 and "follow mode changes nothing" in corrupt.stderr, corrupt.stderr
    assert tagged(lab) == before
    no_systemd = lab.castwall("follow", "enable")
    assert no_systemd.returncode == 5 and "systemd is not running" in no_systemd.stderr
