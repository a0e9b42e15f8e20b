"""castwall on a real firewalld (Debian's 1.3) with a private system bus, in the lab: over D-Bus through
python3-firewall where the stack has it (Debian's python3), else through firewall-cmd (PyPI's stack)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

pytestmark = pytest.mark.lab

IN_RANGE = 40000
D_BUS = importlib.util.find_spec("firewall") is not None  # castwall's firewalld path on this stack


def admins(lab) -> dict:
    """What the admin configured, runtime and permanent: the zones, their ipset and every policy but castwall's."""
    state = json.loads(lab.firewalld_state().split("== /etc/firewalld")[0])
    for kind in ("policies", "ipsets", "permanent policies", "permanent ipsets"):
        state[kind].pop("castwall", None)
    return state


def entries(lab, permanent: bool = False) -> list[str]:
    args = ("--permanent",) if permanent else ()
    return sorted(lab.firewall_cmd(*args, "--ipset=castwall", "--get-entries", check=True).stdout.split())


def ports(lab) -> list[str]:
    rules = lab.firewall_cmd("--policy=castwall", "--list-rich-rules", check=True).stdout
    return sorted(re.findall(r'port port="([0-9-]+)" protocol="(udp|tcp)"', rules))


def test_setup_reload_restart_move_follow_and_remove_on_firewalld(make_lab):
    lab = make_lab(devices=2, firewall="firewalld", ship_xml=False)
    tv, speaker = lab.devices
    senders = {"tv": tv.ns, "speaker": speaker.ns, "stranger": lab.other_ns}
    assert lab.udp_reaches(senders, IN_RANGE) == set()  # zone public drops the DIAL answers
    lab.install_firewalld_xml()  # the .deb installed while firewalld runs: loaded at the next reload
    before = admins(lab)

    done = lab.castwall("--debug", "setup", "--yes")
    assert done.returncode == 0, done.stderr
    assert "firewall: firewalld;" in done.stderr
    assert ("D-Bus" if D_BUS else "firewall-cmd") in done.stderr
    assert "firewall-cmd --reload" in done.stdout  # the plan shows the one reload that loads castwall's files
    assert entries(lab) == entries(lab, permanent=True) == sorted([tv.ip, speaker.ip])
    assert ports(lab) == [("32768-60999", "udp")]
    assert lab.udp_reaches(senders, IN_RANGE) == {"tv", "speaker"}
    assert admins(lab) == before  # the admin's zones, rules and ipset untouched
    state = json.loads((lab.state_dir / "state.json").read_text())
    assert state["firewall"] == {"name": "firewalld", "chain": None}

    full = lab.firewalld_state()
    again = lab.castwall("setup", "--yes")
    assert again.returncode == 0 and "Nothing to change" in again.stdout, again.stderr
    assert lab.firewalld_state() == full

    lab.reload_firewalld()
    assert entries(lab) == sorted([tv.ip, speaker.ip]) and lab.udp_reaches(senders, IN_RANGE) == {"tv", "speaker"}
    lab.restart_firewalld()  # what a reboot does
    assert entries(lab) == sorted([tv.ip, speaker.ip]) and lab.udp_reaches(senders, IN_RANGE) == {"tv", "speaker"}
    assert lab.castwall("status", "--no-discover").returncode == 0

    vlc = lab.castwall("setup", "--yes", "--app", "vlc")
    assert vlc.returncode == 0, vlc.stderr
    assert ports(lab) == [("32768-60999", "udp"), ("8010", "tcp")]

    lab.move(tv, f"{lab.subnet}.151")
    moved = lab.castwall("setup", "--yes")
    assert moved.returncode == 0, moved.stderr
    assert entries(lab) == entries(lab, permanent=True) == sorted([f"{lab.subnet}.151", speaker.ip])
    lab.move(speaker, f"{lab.subnet}.152")  # and follow mode moves the next one
    follow = lab.castwall("follow", "run")
    assert follow.returncode == 0 and "moved: Kitchen speaker" in follow.stdout, follow.stderr
    assert entries(lab) == entries(lab, permanent=True) == sorted([f"{lab.subnet}.151", f"{lab.subnet}.152"])
    assert lab.udp_reaches(senders, IN_RANGE) == {"tv", "speaker"}

    gone = lab.castwall("remove", "--all", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert entries(lab) == entries(lab, permanent=True) == []
    assert lab.udp_reaches(senders, IN_RANGE) == set()
    assert admins(lab) == before


def inject(lab, mode: str, at: int) -> None:
    if D_BUS:
        lab.inject_firewall_lib_fault(mode, at)
    else:
        lab.inject_firewall_cmd_fault(mode, at)


def whole_state(lab) -> str:
    """firewalld_state(), but for the files of castwall's own policy and ipset in /etc/firewalld: a permanent change
    that is undone leaves firewalld's copy of the object there (and its .old backup), with the same content;
    the content itself is in the listings, runtime and permanent, and must be as before."""
    return "\n".join(line for line in lab.firewalld_state().splitlines()
                     if not re.match(r"^(policies|ipsets)/castwall\.xml(\.old)? [0-9a-f]{64}$", line))


def test_a_failure_at_each_step_or_a_signal_leaves_firewalld_exactly_as_it_was_and_a_killed_run_is_reconciled(make_lab):
    lab = make_lab(devices=2, firewall="firewalld")
    tv, speaker = lab.devices
    assert lab.castwall("setup", "--yes", "--device", tv.name).returncode == 0
    before, state = whole_state(lab), (lab.state_dir / "state.json").read_bytes()
    journal = (lab.state_dir / "firewalld.json").read_bytes()
    # The next run changes the policy (TCP 8010 for VLC, at runtime and permanently) and adds the speaker's entry
    # (at runtime and permanently): four changes. Each fails in turn, then a SIGTERM arrives during the third.
    for mode, at in [("fail", 1), ("fail", 2), ("fail", 3), ("fail", 4), ("term", 3)]:
        inject(lab, mode, at)
        done = lab.castwall("setup", "--yes", "--app", "vlc")
        lab.clear_firewall_faults()
        assert done.returncode == (130 if mode == "term" else 6), (mode, at, done.stderr)
        assert "so firewalld is as it was before this run" in done.stderr, (mode, at, done.stderr)
        assert whole_state(lab) == before, (mode, at)
        assert (lab.state_dir / "state.json").read_bytes() == state
        assert (lab.state_dir / "firewalld.json").read_bytes() == journal
    inject(lab, "kill", 3)
    assert lab.castwall("setup", "--yes", "--app", "vlc").returncode in (-9, 137)
    lab.clear_firewall_faults()
    assert speaker.ip in entries(lab)  # the power went after the speaker's runtime entry
    done = lab.castwall("setup", "--yes", "--app", "vlc")
    assert done.returncode == 0, done.stderr
    assert entries(lab) == entries(lab, permanent=True) == sorted([tv.ip, speaker.ip])
    owners = json.loads((lab.state_dir / "firewalld.json").read_text())["entries"]
    assert set(owners) == {tv.ip, speaker.ip}
    assert lab.castwall("status", "--no-discover").returncode == 0
