"""The lab's workstations for castwall's firewall backends (tests/lab/firewalls.py), proved with real traffic:
an admin's nftables ruleset, a real firewalld on a private D-Bus, and nothing at all; and their fault injectors
(wrappers over nft and firewall-cmd, a sitecustomize over python3-nftables and python3-firewall) firing.

One lab per firewall kind (module-scoped: each costs seconds to build); tests leave it as they found it.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import lab_or_skip, need
from tests.lab import Lab, dashed
from tests.lab.firewalls import CASTWALL_XML, firewall_missing

pytestmark = [pytest.mark.lab, pytest.mark.harness]  # proves the lab itself: on one stack (scripts/test)

IN_RANGE = 45000  # a port in the DIAL range (ip_local_port_range 32768-60999)
DEB_PYTHON = "/usr/bin/python3"  # python3-nftables and python3-firewall are Debian's, not in the PyPI venv


def build(kind: str, **kw) -> Lab:
    lab_or_skip()
    need(firewall_missing(kind))
    return Lab(firewall=kind, **kw).start()


@pytest.fixture(scope="module")
def nft_lab():
    lab = build("nftables", devices=2)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def firewalld_lab():
    lab = build("firewalld", devices=2)
    yield lab
    lab.close()


def senders(lab) -> dict[str, str]:
    return {**{d.name: d.ns for d in lab.devices}, "printer host": lab.other_ns}


def discovered(lab) -> set[str]:
    done = lab.castwall("discover", "--json", "--timeout", "5", root=False)
    assert done.returncode == 0, done.stderr
    return {d["uuid"] for d in json.loads(done.stdout)["devices"]}


def in_ws_python(lab, code: str, *args: str):
    """Debian's Python in the workstation with castwall's lab PYTHONPATH (where the library fault injector sits)."""
    return lab.ws([DEB_PYTHON, "-c", code, *args], env={"PYTHONPATH": str(lab.dir / "src")})


def ufw_inactive(lab) -> bool:
    return "Status: inactive" in lab.ufw("status", check=True).stdout


# --- nftables ---------------------------------------------------------------------


def test_nftables_drops_a_devices_udp_lets_mdns_in_and_a_reload_puts_the_admins_ruleset_back(nft_lab):
    lab = nft_lab
    before = lab.nft_ruleset()
    assert 'comment "printer"' in before and "table ip admin_nat" in before and "set admin_hosts" in before
    assert "policy drop" in before and ufw_inactive(lab)
    assert lab.udp_reaches(senders(lab), IN_RANGE) == set()
    assert {dashed(d.uuid) for d in lab.devices} <= discovered(lab)  # and the Cast group one hosts

    lab.nft("add", "rule", "inet", "filter", "input", "udp", "dport", str(IN_RANGE), "accept", check=True)
    assert lab.udp_reaches(senders(lab), IN_RANGE) == set(senders(lab))
    lab.reload_nftables()
    assert lab.nft_ruleset() == before
    assert lab.udp_reaches(senders(lab), IN_RANGE) == set()

    # An include the admin appends at the end of /etc/nftables.conf is part of every reload.
    extra = lab.dir / "extra.nft"
    extra.write_text(f"table inet filter {{\n\tchain input {{\n\t\tudp dport {IN_RANGE} accept\n\t}}\n}}\n")
    conf = lab.nftables_conf.read_text()
    try:
        lab.nftables_conf.write_text(conf + f'include "{extra}"\n')
        lab.reload_nftables()
        assert lab.udp_reaches(senders(lab), IN_RANGE) == set(senders(lab))
    finally:
        lab.nftables_conf.write_text(conf)
        lab.reload_nftables()
    assert lab.nft_ruleset() == before


def test_nft_fault_injectors_fire_once_on_a_changing_call_of_the_command_and_of_the_library(nft_lab):
    lab = nft_lab
    before = lab.nft_ruleset()
    try:
        lab.inject_nft_fault("fail", 1)
        assert lab.nft("list", "tables").returncode == 0  # not a change: not counted
        failed = lab.nft("add", "table", "ip", "lab_t")
        assert failed.returncode == 1 and "lab fault injected into nft call 1" in failed.stderr
        assert lab.nft_ruleset() == before and lab.fault_calls("nft") == 1
        assert lab.nft("add", "table", "ip", "lab_t").returncode == 0  # call 2 is not hit
        lab.inject_nft_fault("fail", 1)
        assert lab.nft("-f", "-", input="delete table ip lab_t\n").returncode == 1  # a ruleset on stdin counts
        assert "table ip lab_t" in lab.nft_ruleset()

        # term: SIGTERM to the caller (sh here), the call still runs; kill: the call runs, then SIGKILL.
        lab.inject_nft_fault("term", 1)
        assert lab.ws(["sh", "-c", "nft add table ip lab_term; echo after"]).returncode == -15
        lab._wait(lambda: "table ip lab_term" in lab.nft_ruleset(), "nft after its caller's SIGTERM")
        lab.inject_nft_fault("kill", 1)
        killed = lab.ws(["sh", "-c", "nft add table ip lab_kill; echo after"])
        assert killed.returncode == -9 and "after" not in killed.stdout
        assert "table ip lab_kill" in lab.nft_ruleset()

        # The library: python3-nftables in process; json_cmd counts once, a listing not at all.
        lab.inject_firewall_lib_fault("fail", 1)
        code = ("import json, nftables\nn = nftables.Nftables()\nprint(json.dumps([n.cmd('list tables')[0], "
                "n.cmd('add table ip lab_lib1')[:3:2], "
                "n.json_cmd({'nftables': [{'add': {'table': {'family': 'ip', 'name': 'lab_lib2'}}}]})[0]]))")
        done = in_ws_python(lab, code)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [0, [1, "Error: lab fault injected into nftables call 1\n"], 0]
        assert lab.fault_calls("pylib") == 2
        ruleset = lab.nft_ruleset()
        assert "lab_lib1" not in ruleset and "table ip lab_lib2" in ruleset
        lab.inject_firewall_lib_fault("kill", 1)
        killed = in_ws_python(lab, "import nftables\nnftables.Nftables().cmd('add table ip lab_lib3')\nprint('after')")
        assert killed.returncode == -9 and "after" not in killed.stdout
        assert "table ip lab_lib3" in lab.nft_ruleset()
    finally:
        lab.clear_firewall_faults()
        lab.reload_nftables()
    assert lab.nft_ruleset() == before


# --- firewalld --------------------------------------------------------------------


def test_firewalld_drops_a_devices_udp_lets_mdns_in_and_keeps_a_permanent_change_over_reload_and_restart(firewalld_lab):
    lab = firewalld_lab
    assert lab.firewall_cmd("--state").stdout.strip() == "running" and ufw_inactive(lab)
    assert lab.firewall_cmd("--get-default-zone", check=True).stdout.strip() == "public"
    assert "mdns" in lab.firewall_cmd("--permanent", "--list-services", check=True).stdout.split()
    printer = f'rule family="ipv4" source address="{lab.other_ip}" port port="631" protocol="tcp" accept'
    assert lab.firewall_cmd("--list-rich-rules", check=True).stdout.strip() == printer
    ipsets = {"admin_hosts"} | ({"castwall"} if all(p.is_file() for p in CASTWALL_XML.values()) else set())
    for mode in ((), ("--permanent",)):
        assert set(lab.firewall_cmd(*mode, "--get-ipsets", check=True).stdout.split()) == ipsets
    assert lab.udp_reaches(senders(lab), IN_RANGE) == set()
    assert {dashed(d.uuid) for d in lab.devices} <= discovered(lab)  # and the Cast group one hosts

    port = f"--add-port={IN_RANGE}/udp"
    for mode in ((), ("--permanent",)):
        lab.firewall_cmd(*mode, "--zone=public", port, check=True)
    lab.firewall_cmd("--zone=public", f"--add-port={IN_RANGE + 1}/udp", check=True)  # runtime only
    try:
        assert lab.udp_reaches(senders(lab), IN_RANGE) == set(senders(lab))
        lab.reload_firewalld()
        assert lab.firewall_cmd("--zone=public", "--list-ports", check=True).stdout.split() == [f"{IN_RANGE}/udp"]
        after_reload = lab.firewalld_state()
        assert lab.firewalld_state() == after_reload  # the comparison text is stable
        lab.restart_firewalld()
        assert lab.firewalld_state() == after_reload  # a restart (a reboot) gives the same firewall
        assert lab.udp_reaches(senders(lab), IN_RANGE) == set(senders(lab))
    finally:
        for mode in ((), ("--permanent",)):
            lab.firewall_cmd(*mode, "--zone=public", f"--remove-port={IN_RANGE}/udp")
    assert lab.udp_reaches(senders(lab), IN_RANGE) == set()


def test_firewalld_fault_injectors_fire_once_on_a_changing_call_of_firewall_cmd_and_of_the_library(firewalld_lab):
    lab = firewalld_lab
    before = lab.firewalld_state()
    entry = f"{lab.subnet}.51"
    query = ("--ipset=admin_hosts", f"--query-entry={entry}")
    try:
        lab.inject_firewall_cmd_fault("fail", 1)
        assert lab.firewall_cmd(*query).returncode != 0  # a query: not counted
        failed = lab.firewall_cmd("--ipset=admin_hosts", f"--add-entry={entry}")
        assert failed.returncode == 1 and "lab fault injected into firewall-cmd call 1" in failed.stderr
        assert lab.fault_calls("firewall-cmd") == 1 and lab.firewall_cmd(*query).returncode != 0
        lab.inject_firewall_cmd_fault("kill", 1)
        killed = lab.ws(["sh", "-c", f"firewall-cmd --ipset=admin_hosts --add-entry={entry}; echo after"])
        assert killed.returncode == -9 and "after" not in killed.stdout
        assert lab.firewall_cmd(*query).returncode == 0  # it was made
        lab.firewall_cmd("--ipset=admin_hosts", f"--remove-entry={entry}", check=True)  # call 2: not hit

        # The library: python3-firewall's D-Bus client in process.
        lab.inject_firewall_lib_fault("fail", 1)
        code = ("import sys\nfrom firewall.client import FirewallClient\nfw = FirewallClient()\n"
                "assert not fw.queryEntry('admin_hosts', sys.argv[1])\n"
                "try:\n    fw.addEntry('admin_hosts', sys.argv[1])\nexcept Exception as e:\n    print('raised', e)\n")
        done = in_ws_python(lab, code, entry)
        assert done.returncode == 0, done.stderr
        assert "raised" in done.stdout and "lab fault injected into firewalld call 1" in done.stdout
        assert lab.fault_calls("pylib") == 1 and lab.firewall_cmd(*query).returncode != 0
        lab.inject_firewall_lib_fault("kill", 1)
        killed = in_ws_python(lab, "import sys\nfrom firewall.client import FirewallClient\n"
                                   "FirewallClient().addEntry('admin_hosts', sys.argv[1])\nprint('after')", entry)
        assert killed.returncode == -9 and "after" not in killed.stdout
        assert lab.firewall_cmd(*query).returncode == 0
    finally:
        lab.clear_firewall_faults()
        lab.firewall_cmd("--ipset=admin_hosts", f"--remove-entry={entry}")
    assert lab.firewalld_state() == before


# --- nothing --------------------------------------------------------------------------


def test_without_a_firewall_a_devices_udp_arrives(make_lab):
    lab = make_lab(devices=1, firewall="none")
    assert lab.nft_ruleset() == "" and ufw_inactive(lab)
    assert lab.firewall_cmd("--state").returncode != 0  # no firewalld, not even a system bus in the workstation
    assert lab.udp_reaches(senders(lab), IN_RANGE) == set(senders(lab))
