"""The hint formats that Debian can check, checked by the real daemons' own config checkers.

dnsmasq --test (dnsmasq-base), dhcpd -t (isc-dhcp-server) and kea-dhcp4 -t
(kea-dhcp4-server) read the output as they would in production. scripts/bootstrap
installs them; a missing checker fails the test rather than skipping it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from castwall import hints
from tests.hint_devices import DEVICES, NETWORKS, REFUSED, UNSEEN
from tests.test_hints import hostile, hostile_devices

pytestmark = pytest.mark.checkers

SAFE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}


def checker(program: str) -> str:
    path = shutil.which(program, path=SAFE_ENV["PATH"])
    assert path, f"{program} is not installed; run scripts/bootstrap"
    return path


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=SAFE_ENV)


def dnsmasq_check(text: str, where: Path) -> subprocess.CompletedProcess:
    conf = where / "castwall.conf"
    conf.write_text(text, encoding="utf-8")
    return run([checker("dnsmasq"), "--test", f"--conf-file={conf}"])


def dhcpd_check(text: str, where: Path, subnets) -> subprocess.CompletedProcess:
    hosts = where / "hosts.conf"
    hosts.write_text(text, encoding="utf-8")
    main = where / "dhcpd.conf"
    decls = "".join(f"subnet {n.network_address} netmask {n.netmask} {{ }}\n" for n in subnets)
    main.write_text(f'{decls}include "{hosts}";\n')
    return run([checker("dhcpd"), "-t", "-4", "-cf", str(main)])


def kea_check(text: str, where: Path) -> subprocess.CompletedProcess:
    fragment = json.loads(text)
    config = {"Dhcp4": {
        "interfaces-config": {"interfaces": []},
        "lease-database": {"type": "memfile", "persist": False},
        "subnet4": [{"id": i + 1, **s} for i, s in enumerate(fragment["subnet4"])],
    }}
    path = where / "kea-dhcp4.conf"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return run([checker("kea-dhcp4"), "-t", str(path)])


@pytest.fixture
def found():
    return hints.collect(DEVICES, NETWORKS, REFUSED, UNSEEN)


def test_dnsmasq_accepts_the_dnsmasq_format(found, tmp_path):
    done = dnsmasq_check(hints.render_dnsmasq(found), tmp_path)
    assert done.returncode == 0 and "syntax check OK" in done.stderr + done.stdout, done.stderr


def test_dhcpd_accepts_the_isc_dhcpd_format(found, tmp_path):
    done = dhcpd_check(hints.render_dhcpd(found), tmp_path, found.subnets)
    assert done.returncode == 0, done.stderr


def test_kea_accepts_the_kea_format(found, tmp_path):
    done = kea_check(hints.render_kea(found), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_checker_rejects_a_broken_file(found, tmp_path):
    """The checks above can fail: each checker refuses a reservation it cannot use."""
    # A friendly name used unsanitised, as a host name:
    bad_dnsmasq = hints.render_dnsmasq(found).replace(",192.168.1.50,living-room-tv-00000001", ",192.168.1.50,Living Room TV")
    assert dnsmasq_check(bad_dnsmasq, tmp_path).returncode != 0
    bad_dhcpd = hints.render_dhcpd(found).replace("fixed-address 192.168.1.50;", "fixed-address 192.168.1.50")
    assert dhcpd_check(bad_dhcpd, tmp_path, found.subnets).returncode != 0
    bad_kea = hints.render_kea(found).replace('"10.0.5.20"', '"10.9.9.9"')  # outside its subnet
    assert kea_check(bad_kea, tmp_path).returncode != 0


@given(st.lists(hostile, min_size=1, max_size=10))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hostile_names_pass_every_checker(tmp_path, given_names):
    found = hints.collect(hostile_devices(given_names), NETWORKS)
    done = dnsmasq_check(hints.render_dnsmasq(found), tmp_path)
    assert done.returncode == 0, done.stderr
    done = dhcpd_check(hints.render_dhcpd(found), tmp_path, found.subnets)
    assert done.returncode == 0, done.stderr
    done = kea_check(hints.render_kea(found), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
