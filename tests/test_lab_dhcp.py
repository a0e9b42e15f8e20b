"""setup --reserve dnsmasq end to end: a real dnsmasq serves DHCP on the lab LAN, and devices
asking for a lease get the address castwall reserved for them, until remove takes it away."""

from __future__ import annotations

import ipaddress
import os
import shutil

import pytest

pytestmark = pytest.mark.lab

POOL = (200, 250)


def in_pool(lab, address: str) -> bool:
    last = int(ipaddress.ip_address(address).packed[-1])
    return address.startswith(lab.subnet + ".") and POOL[0] <= last <= POOL[1]


def test_reserve_dnsmasq_gives_each_device_its_address_and_remove_takes_it_away(make_lab):
    if shutil.which("dnsmasq", path="/usr/sbin:/usr/bin") is None:
        pytest.fail("dnsmasq is not installed; run scripts/test, which installs it")
    lab = make_lab(devices=3)
    dropins = lab.serve_dhcp(*POOL)
    theirs = (dropins / "00-lab.conf").read_text()
    tv, speaker = lab.devices[0], lab.devices[1]

    # Without a reservation the server hands out pool addresses: the check below can fail.
    before = lab.dhcp_lease(tv)
    assert before["ack"] and in_pool(lab, before["ack"]), before

    env = {"CASTWALL_DNSMASQ_DIR": str(dropins)}
    result = lab.castwall("setup", "--yes", "--reserve", "dnsmasq", env=env)
    assert result.returncode == 0, result.stderr
    dropin = (dropins / "castwall.conf").read_text()
    for dev in lab.devices:
        assert f"dhcp-host={dev.mac},{dev.ip}," in dropin
    assert sorted(os.listdir(dropins)) == ["00-lab.conf", "castwall.conf"]
    assert (dropins / "00-lab.conf").read_text() == theirs
    assert lab.systemctl_calls().count("restart dnsmasq.service") == 2  # the lab's start, castwall's restart

    for dev in (tv, speaker):
        lease = lab.dhcp_lease(dev)
        assert lease["offer"] == dev.ip and lease["ack"] == dev.ip, (dev.name, lease)

    again = lab.castwall("setup", "--yes", "--reserve", "dnsmasq", env=env)
    assert again.returncode == 0 and "already holds these 3 reservation(s)" in again.stdout
    assert lab.systemctl_calls().count("restart dnsmasq.service") == 2  # nothing changed, no restart

    removed = lab.castwall("remove", "--all", "--yes", env=env)
    assert removed.returncode == 0, removed.stderr
    assert sorted(os.listdir(dropins)) == ["00-lab.conf"]
    assert lab.systemctl_calls().count("restart dnsmasq.service") == 3
    after = lab.dhcp_lease(tv)
    assert after["ack"] and in_pool(lab, after["ack"]), after
