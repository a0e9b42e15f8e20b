"""castwall on an admin's own nftables ruleset (policy drop), in the lab: the real kernel, the real nft and
python3-nftables where the stack has it (Debian's python3; PyPI's stack drives the nft command).

And a workstation where nothing filters: castwall says so and writes nothing.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.lab import dashed

pytestmark = pytest.mark.lab

IN_RANGE = 40000  # a port in the lab's local port range (32768:60999)
LIBRARY = importlib.util.find_spec("nftables") is not None  # castwall's nftables path on this stack


def ruleset_json(lab, admins_only: bool = False) -> tuple[list[str], list[str]]:
    """The whole ruleset as nft's JSON objects, without handles (they change when a rule comes back): its tables,
    chains and sets in any order (a reload lists them in the order they were made), and its rules in order."""
    items = json.loads(lab.nft("-j", "list", "ruleset", check=True).stdout)["nftables"]
    objects, rules = [], []
    for item in items:
        if "metainfo" in item:
            continue
        (kind, body), = item.items()
        if admins_only and (body.get("name") == "castwall" if kind == "set" else body.get("comment") == "castwall"):
            continue
        text = json.dumps({kind: {k: v for k, v in body.items() if k != "handle"}}, sort_keys=True)
        (rules if kind == "rule" else objects).append(text)
    return sorted(objects), rules


def admins_part(lab) -> tuple[list[str], list[str]]:
    """The ruleset without castwall's set and rule: what the admin wrote."""
    return ruleset_json(lab, admins_only=True)


def castwall_elements(lab) -> list[tuple[str, str, str]]:
    done = lab.nft("-j", "list", "set", "inet", "filter", "castwall")
    if done.returncode != 0:
        return []
    out = []
    for item in json.loads(done.stdout)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            ip, proto, port = elem["elem"]["val"]["concat"]
            out.append((ip, proto, elem["elem"].get("comment", "")))
    return sorted(out)


def include_line(lab) -> str:
    return f'include "{lab.state_dir / "nftables*.nft"}"\n'


def test_setup_reload_move_follow_and_remove_on_an_admins_ruleset(make_lab):
    lab = make_lab(devices=2, firewall="nftables")
    tv, speaker = lab.devices
    senders = {"tv": tv.ns, "speaker": speaker.ns, "stranger": lab.other_ns}
    before = ruleset_json(lab)
    assert lab.udp_reaches(senders, IN_RANGE) == set()  # the admin's policy drop: DIAL answers are lost

    done = lab.castwall("--debug", "setup", "--yes")
    assert done.returncode == 0, done.stderr
    assert "nftables commands castwall will run (4):" in done.stdout
    assert "nft insert rule inet filter input ip saddr . meta l4proto . th dport @castwall accept" in done.stdout
    assert "firewall: nftables (chain inet filter input)" in done.stderr
    assert ("python3-nftables in castwall's process" if LIBRARY else "the nft command, one batch") in done.stderr
    assert 'unless /etc/nftables.conf ends with this line: include "' in done.stderr
    assert [(ip, proto) for ip, proto, _ in castwall_elements(lab)] == [(tv.ip, "udp"), (speaker.ip, "udp")]
    assert all(c == f"castwall:{dashed(d.uuid)}" for (_, _, c), d in zip(castwall_elements(lab), (tv, speaker), strict=True))
    assert admins_part(lab) == before  # the admin's tables, chains, rules and sets, untouched
    assert lab.udp_reaches(senders, IN_RANGE) == {"tv", "speaker"}
    state = json.loads((lab.state_dir / "state.json").read_text())
    assert state["firewall"] == {"name": "nftables", "chain": ["inet", "filter", "input"]}

    after = ruleset_json(lab)
    again = lab.castwall("setup", "--yes")
    assert again.returncode == 0 and "Nothing to change" in again.stdout, again.stderr
    assert ruleset_json(lab) == after

    # Until /etc/nftables.conf includes castwall's file, status says a reload would lose the rules.
    status = lab.castwall("status", "--json", "--no-discover")
    assert status.returncode == 3 and "include" in status.stdout
    with open(lab.nftables_conf, "a") as conf:
        conf.write(include_line(lab))
    lab.reload_nftables()  # flush ruleset, the admin's tables, then castwall's include
    now = ruleset_json(lab)
    assert set(now[0]) ^ set(after[0]) == set() and now[1] == after[1], (set(now[0]) ^ set(after[0]), now[1], after[1])
    assert lab.udp_reaches(senders, IN_RANGE) == {"tv", "speaker"}
    assert lab.castwall("status", "--no-discover").returncode == 0

    # A reload without the include drops castwall's part: status says so, setup puts it back.
    lab.nftables_conf.write_text(lab.nftables_conf.read_text().replace(include_line(lab), ""))
    lab.reload_nftables()
    status = lab.castwall("status", "--no-discover")
    assert status.returncode == 3 and "castwall's set castwall is missing" in status.stdout
    assert lab.castwall("setup", "--yes").returncode == 0
    assert ruleset_json(lab) == after

    lab.move(tv, f"{lab.subnet}.151")
    moved = lab.castwall("setup", "--yes")
    assert moved.returncode == 0, moved.stderr
    assert {ip for ip, proto, _ in castwall_elements(lab) if proto == "udp"} == {f"{lab.subnet}.151", speaker.ip}
    lab.move(speaker, f"{lab.subnet}.152")  # and follow mode moves the next one
    follow = lab.castwall("follow", "run")
    assert follow.returncode == 0 and "moved: Kitchen speaker" in follow.stdout, follow.stderr
    assert {ip for ip, proto, _ in castwall_elements(lab) if proto == "udp"} == {f"{lab.subnet}.151", f"{lab.subnet}.152"}
    assert lab.udp_reaches(senders, IN_RANGE) == {"tv", "speaker"}

    gone = lab.castwall("remove", "--all", "--yes")
    assert gone.returncode == 0 and "other nftables rules were not touched" in gone.stdout, gone.stderr
    assert ruleset_json(lab) == before  # castwall's set and rule are gone too
    assert lab.udp_reaches(senders, IN_RANGE) == set()
    assert "castwall has no rules now" in (lab.state_dir / "nftables.nft").read_text()
    # After apt purge (the file gone) the admin's include line still loads: it is a pattern.
    with open(lab.nftables_conf, "a") as conf:
        conf.write(include_line(lab))
    (lab.state_dir / "nftables.nft").unlink()
    lab.reload_nftables()
    assert ruleset_json(lab) == before


def inject(lab, mode: str) -> None:
    if LIBRARY:
        lab.inject_firewall_lib_fault(mode, 1)
    else:
        lab.inject_nft_fault(mode, 1)


@pytest.mark.parametrize("fault", ["fail", "term", "include"])
def test_a_failing_batch_a_signal_or_an_unwritable_include_leaves_everything_as_it_was(make_lab, fault):
    lab = make_lab(devices=2, firewall="nftables")
    assert lab.castwall("setup", "--yes", "--device", lab.devices[0].name).returncode == 0
    before, state = ruleset_json(lab), (lab.state_dir / "state.json").read_bytes()
    include = (lab.state_dir / "nftables.nft").read_bytes()
    if fault == "include":  # the include file cannot be replaced: the batch that ran is undone
        (lab.state_dir / "nftables.nft").unlink()
        (lab.state_dir / "nftables.nft").mkdir()
    else:
        inject(lab, fault)
    done = lab.castwall("setup", "--yes")
    lab.clear_firewall_faults()
    assert done.returncode == (130 if fault == "term" else 6), done.stderr
    assert "so nftables is as it was before this run" in done.stderr
    assert ruleset_json(lab) == before and (lab.state_dir / "state.json").read_bytes() == state
    if fault != "include":
        assert (lab.state_dir / "nftables.nft").read_bytes() == include


def test_a_run_killed_after_its_batch_is_reconciled_by_the_next(make_lab):
    lab = make_lab(devices=2, firewall="nftables")
    inject(lab, "kill")
    assert lab.castwall("setup", "--yes").returncode in (-9, 137)
    lab.clear_firewall_faults()
    assert len(castwall_elements(lab)) == 2 and not (lab.state_dir / "state.json").exists()
    done = lab.castwall("setup", "--yes")
    assert done.returncode == 0 and "Nothing to change" in done.stdout, done.stderr
    state = json.loads((lab.state_dir / "state.json").read_text())
    assert len(state["rules"]) == 2
    text = (lab.state_dir / "nftables.nft").read_text()
    assert all(ip in text for ip, _, _ in castwall_elements(lab))  # the include file caught up


def test_where_nothing_filters_setup_says_so_and_writes_nothing(make_lab):
    lab = make_lab(devices=1, firewall="none")
    lab.hide_ufw()  # a stock Debian desktop: no ufw, no firewalld running, no ruleset
    done = lab.castwall("setup", "--yes")
    assert done.returncode == 0, done.stderr
    assert "nothing on this computer filters incoming traffic" in done.stdout and "Nothing was changed." in done.stdout
    assert not (lab.state_dir / "state.json").exists() and lab.nft_ruleset().strip() == ""
    status = lab.castwall("status")
    assert status.returncode == 0 and "none: nothing filters incoming traffic here" in status.stdout, status.stdout
    check = lab.castwall("check")
    assert check.returncode == 0 and lab.devices[0].name in check.stdout, check.stdout
