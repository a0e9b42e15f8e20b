"""The real judge: Debian's Chromium in the workstation, before and after castwall, on both kinds of LAN.

Chromium's own Media Router discovery (tests/lab/chromium.py) shows on the
devices' logs: a fetched description means its DIAL reply got through, a
connection to 8009 means Chromium found the device and would cast. ufw is
real and denies by default; castwall runs in the same workstation. And
`castwall check` must say, device by device, what Chromium did.
"""

import json
import os

import pytest

from tests.conftest import need
from tests.lab import dashed
from tests.lab import chromium as harness

pytestmark = pytest.mark.lab

N = 3


@pytest.fixture
def lab(make_lab):
    need(harness.missing() or (None if os.access("/usr/sbin/nft", os.X_OK) else "the lab needs nft (nftables)"))
    return make_lab(devices=N)


def check_agrees(lab, run, *, root: bool) -> dict:
    """castwall check's verdict on every device is what Chromium did to it; returns the verdicts."""
    result = lab.castwall("check", "--json", root=root)
    doc = json.loads(result.stdout)
    verdicts = {d["uuid"]: d for d in doc["devices"]}
    for dev in lab.devices:
        uuid = dashed(dev.uuid)
        chrome, ours = run.devices[uuid], verdicts[uuid]
        assert (ours["dial"] == "arrives") == chrome["dial"], (dev.name, ours, run)
        assert ours["ok"] == chrome["cast"], (dev.name, ours, run)
    return verdicts


def test_where_multicast_works_chromium_gets_dial_only_after_setup_and_check_agrees(lab):
    before = lab.chromium_discovery({"dial": False, "cast": True})
    assert before.found("cast") == {dashed(d.uuid) for d in lab.devices} and before.found("dial") == set(), before
    verdicts = check_agrees(lab, before, root=True)
    assert {v["dial"] for u, v in verdicts.items() if v["kind"] != "group"} == {"dropped"}
    check_agrees(lab, before, root=False)

    setup = lab.castwall("setup", "--yes")
    assert setup.returncode == 0, setup.stderr

    after = lab.chromium_discovery({"dial": True, "cast": True})
    assert after.found("dial") == after.found("cast") == {dashed(d.uuid) for d in lab.devices}, after
    check_agrees(lab, after, root=True)
    check_agrees(lab, after, root=False)


def test_where_multicast_is_lost_castwall_finds_every_device_by_dial_and_then_chromium_does(lab):
    lab.lose_multicast()
    before = lab.chromium_discovery({"dial": False, "cast": False})
    assert before.found("cast") == before.found("dial") == set(), before
    check_agrees(lab, before, root=True)

    setup = lab.castwall("setup", "--yes")
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.count("ufw allow proto udp from 192.168.77.") == N

    after = lab.chromium_discovery({"dial": True, "cast": True})
    assert after.found("dial") == after.found("cast") == {dashed(d.uuid) for d in lab.devices}, after
    verdicts = check_agrees(lab, after, root=True)
    assert all(v["chrome_finds_by"] == ["dial"] for v in verdicts.values() if v["kind"] != "group")
    check_agrees(lab, after, root=False)
