"""DIAL in the lab: devices that answer M-SEARCH as real Chromecasts do, a LAN that loses multicast, real ufw.

The devices' DIAL side is tests/lab/cast_device.py (a unicast reply from a
random port after a random delay within MX, the description on 8008, the
Cast port 8009); Lab.lose_multicast() drops mDNS multicast on its way to the
workstation in the LAN's bridge, as many Wi-Fi access points do.
"""

import json
import re

import pytest

from tests.lab import dashed

pytestmark = pytest.mark.lab

IN_RANGE = 45000


def devices_of(result):
    assert result.returncode == 0, result.stderr
    return {d["uuid"]: d for d in json.loads(result.stdout)["devices"]}


def test_a_lan_that_loses_multicast_is_found_by_dial_and_set_up(make_lab):
    lab = make_lab(devices=3)
    lab.lose_multicast()
    senders = {d.name: d.ns for d in lab.devices}
    assert lab.udp_reaches(senders, IN_RANGE) == set(), "ufw must drop the devices' UDP at first"

    # Without root castwall sees only what the firewall lets in: nothing here.
    user = lab.castwall("discover", root=False)
    assert user.returncode == 9, user.stdout + user.stderr
    assert "with sudo castwall also sees the ones it drops" in user.stderr

    # As root it reads the dropped DIAL answers off the wire and fetches each description.
    root = lab.castwall("--debug", "discover", "--json")
    found = devices_of(root)
    assert {u: (d["name"], d["ip"], d["port"], d["found_by"], d["mac"]) for u, d in found.items()} == {
        dashed(d.uuid): (d.name, d.ip, 8009, ["dial"], d.mac) for d in lab.devices}
    assert "after waiting for every DIAL answer" in root.stderr
    assert re.search(r"DIAL: 3 replier\(s\), 0 reached the socket, 3 seen on the wire", root.stderr), root.stderr
    # Each device's description was fetched once, from the workstation, and nothing else asked.
    for d in lab.devices:
        assert [e["path"] for e in lab.cast_events(d, "http")] == ["/ssdp/device-desc.xml"]

    setup = lab.castwall("setup", "--yes")
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.count("ufw allow proto udp from 192.168.77.") == 3
    assert lab.udp_reaches(senders, IN_RANGE) == set(senders)

    # Afterwards, without root: known devices answer castwall's unicast mDNS questions (conntrack
    # lets the answers in) and their DIAL answers pass castwall's rules. The group comes by unicast.
    status = lab.castwall("status", "--json", root=False)
    assert status.returncode == 0, status.stdout + status.stderr
    seen = {d["name"]: d["found_by"] for d in json.loads(status.stdout)["discovered"]}
    assert set(seen) == {d.name for d in lab.devices} | {"Whole House"}
    assert all("mdns-unicast" in ways for ways in seen.values()) and "mdns" not in sum(seen.values(), [])
    later = devices_of(lab.castwall("discover", "--json", root=False))
    assert {d["name"] for d in later.values() if "dial" in d["found_by"]} == {d.name for d in lab.devices}


def test_where_multicast_works_dial_only_adds_what_came_and_no_time(make_lab):
    lab = make_lab(devices=3)
    result = lab.castwall("--debug", "discover", "--json")
    found = devices_of(result)
    assert len(found) == 4 and all("mdns" in d["found_by"] for d in found.values())
    # Discovery ended with mDNS: it did not wait for DIAL answers still on their way (0 to 1 s, MX 1).
    assert "without waiting longer than mDNS" in result.stderr, result.stderr
    for d in found.values():  # whatever DIAL brought by then is the same device, merged by UUID
        assert d["found_by"] in (["mdns"], ["mdns", "dial"]) and not d["contested"]
    assert found[dashed(lab.devices[1].group[1])]["found_by"] == ["mdns"]  # groups answer no M-SEARCH


def test_check_tells_dropped_dial_from_delivered_and_lost_multicast(make_lab):
    lab = make_lab(devices=2)
    tv = lab.devices[0]

    def verdicts(*args, root=True):
        result = lab.castwall("check", "--json", *args, root=root)
        doc = json.loads(result.stdout)
        return result.returncode, {d["name"]: d for d in doc["devices"]}

    code, got = verdicts()
    assert code == 0  # Chrome finds everything by mDNS here
    assert {n: (v["mdns"], v["dial"], v["cast"]["opens"], v["ok"]) for n, v in got.items()} == {
        tv.name: (True, "dropped", True, True), lab.devices[1].name: (True, "dropped", True, True),
        "Whole House": (True, "-", True, True)}
    assert "sudo castwall setup" in got[tv.name]["note"]
    code, as_user = verdicts(root=False)
    assert code == 0 and as_user[tv.name]["dial"] == "not seen"

    lab.lose_multicast()
    code, got = verdicts()
    assert code == 3
    assert {n: (v["mdns"], v["dial"], v["ok"]) for n, v in got.items()} == {
        tv.name: (False, "dropped", False), lab.devices[1].name: (False, "dropped", False)}
    assert got[tv.name]["fix"] == "run 'sudo castwall setup'"

    assert lab.castwall("setup", "--yes").returncode == 0
    code, got = verdicts()
    assert code == 3  # the group: mDNS is its only way, and multicast is lost
    assert {n: (v["dial"], v["chrome_finds_by"], v["ok"]) for n, v in got.items()} == {
        tv.name: ("arrives", ["dial"], True), lab.devices[1].name: ("arrives", ["dial"], True),
        "Whole House": ("-", [], False)}
    code, only_tv = verdicts("--device", tv.name, root=False)
    assert code == 0 and list(only_tv) == [tv.name] and only_tv[tv.name]["dial"] == "arrives"

    lab.lose_multicast(False)
    status = lab.castwall("status", "--check", root=False)
    assert status.returncode == 0, status.stdout + status.stderr
