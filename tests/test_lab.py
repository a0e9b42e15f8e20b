"""End to end in the lab: real ufw, real mDNS responders, the kernel's ARP.

Each test builds its own namespaces and tears them down, even on failure.
castwall runs in the workstation namespace with the Python running pytest,
so these tests cover whichever library stack that Python has.
"""

import json
import re
import time

import pytest

from tests.lab import GROUP_NAME, dashed

pytestmark = pytest.mark.lab

USER_RULES = [
    ("allow", "22/tcp"),
    # the user's own rule of castwall's shape, without castwall's tag
    ("allow", "proto", "udp", "from", "192.168.77.60", "to", "any", "port", "32768:60999"),
]
IN_RANGE, OUTSIDE = 45000, 8000


def add_user_rules(lab):
    for rule in USER_RULES:
        lab.ufw(*rule, check=True)
    return lab.ufw_added()


def tagged_lines(lab):
    return [line for line in lab.ufw_added() if "castwall:" in line]


def devices_json(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["devices"]


def test_discover_finds_every_device_with_its_mac_twice_in_a_row(make_lab):
    lab = make_lab(devices=4)
    # The second run starts within a second of the first one's answers, when a
    # responder may not multicast them again: it must still find everyone.
    for _ in range(2):
        found = {d["uuid"]: d for d in devices_json(lab.castwall("discover", "--json", root=False))}
        for dev in lab.devices:
            d = found.pop(dashed(dev.uuid))
            assert (d["name"], d["model"], d["kind"], d["ip"], d["port"], d["mac"]) == (
                dev.name, dev.model, dev.kind, dev.ip, 8009, dev.mac)
        [group] = found.values()  # nothing else: the printer is no Cast device
        host = lab.devices[1]
        assert (group["name"], group["kind"], group["ip"], group["port"], group["host"]) == (
            GROUP_NAME, "group", host.ip, 32161, dashed(host.uuid))


_FOREIGN_QUERY = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("", 5353))  # from port 5353: a full mDNS querier, answered by multicast
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
name = b"".join(bytes([len(p)]) + p for p in (b"_googlecast", b"_tcp", b"local")) + b"\\0"
s.sendto(struct.pack("!6H", 0, 0, 1, 0, 0, 0) + name + struct.pack("!2H", 12, 1), ("224.0.0.251", 5353))
"""


def test_discovery_asks_twice_on_a_quiet_lan_and_three_times_after_someone_else_asked(make_lab):
    lab = make_lab(devices=3)
    time.sleep(4.5)  # the devices' own start-up announcements (avahi: about 1 s and 3 s in) are over
    quiet = lab.castwall("--debug", "discover", "--json", root=False)
    assert len(devices_json(quiet)) == 4
    assert re.search(r"questions at 0\.00, 0\.5\d s;", quiet.stderr), quiet.stderr
    time.sleep(1.2)
    # Another querier asks just before castwall starts: every device answers it and, by
    # mDNS's repeat limit, stays silent on castwall's first question.
    lab.ws([lab.python, "-c", _FOREIGN_QUERY, lab.ws_ip], root=False, check=True)
    busy = lab.castwall("--debug", "discover", "--json", root=False)
    assert len(devices_json(busy)) == 4
    assert re.search(r"questions at 0\.00, 0\.5\d, 1\.\d\d s;", busy.stderr), busy.stderr


def test_first_question_asks_for_multicast_answers_that_ufw_lets_in(make_lab):
    lab = make_lab(devices=1, strict=1)
    strict = lab.devices[-1]
    found = {d["uuid"] for d in devices_json(lab.castwall("discover", "--json", root=False))}
    assert dashed(strict.uuid) in found
    queries = [json.loads(line) for line in (strict.dir / "responder.log").read_text().splitlines()]
    queries = [q for q in queries if q["event"] == "query"]
    # A QU question first would get a unicast answer that ufw drops.
    assert queries and queries[0]["qu"] is False


def test_setup_allows_exactly_the_devices(make_lab):
    lab = make_lab(devices=3)
    user_lines = add_user_rules(lab)
    senders = {d.name: d.ns for d in lab.devices} | {"printer": lab.other_ns}
    assert lab.udp_reaches(senders, IN_RANGE) == set(), "the lab's ufw must block casting answers at first"

    result = lab.castwall("setup", "--yes")
    assert result.returncode == 0, result.stderr
    lines = lab.ufw_added()
    assert lines[: len(user_lines)] == user_lines
    tagged = lines[len(user_lines):]
    expected = {d.ip: dashed(d.uuid) for d in lab.devices}  # the group shares its host's address
    assert len(tagged) == len(expected)
    for line in tagged:
        m = re.fullmatch(r"ufw allow from (\S+) to any port 32768:60999 proto udp comment 'castwall:([0-9a-f-]{36})'", line)
        assert m and expected.pop(m.group(1)) == m.group(2), line
    assert expected == {}

    assert lab.udp_reaches(senders, IN_RANGE) == {d.name for d in lab.devices}
    assert lab.udp_reaches({d.name: d.ns for d in lab.devices}, OUTSIDE) == set()

    for root in (False, True):
        status = lab.castwall("status", root=root)
        assert status.returncode == 0 and "All in place." in status.stdout, status.stdout + status.stderr

    again = lab.castwall("setup", "--yes")
    assert again.returncode == 0 and "Nothing to change" in again.stdout
    assert lab.ufw_added() == lines


def test_both_ways_of_changing_ufw_give_the_same_rules_and_the_running_firewall_follows(make_lab):
    """As root castwall loads ufw's library; CASTWALL_UFW=cli runs the ufw command per rule."""
    lab = make_lab(devices=2)
    user_lines = add_user_rules(lab)
    senders = {d.name: d.ns for d in lab.devices}
    seen = {}
    for path, words in (("auto", "ufw's Python library, in process"), ("cli", "the ufw command, one call per rule")):
        setup = lab.castwall("--debug", "setup", "--yes", env={"CASTWALL_UFW": path})
        assert setup.returncode == 0, setup.stderr
        assert f"castwall: debug: ufw path: {words}" in setup.stderr
        assert f"apply phase: 2 step(s) through {words}" in setup.stderr
        seen[path] = (lab.user_rules(), lab.running_rules())
        assert lab.udp_reaches(senders, IN_RANGE) == set(senders)
        remove = lab.castwall("--debug", "remove", "--all", "--yes", env={"CASTWALL_UFW": path})
        assert remove.returncode == 0 and f"ufw path: {words}" in remove.stderr, remove.stderr
        assert lab.ufw_added() == user_lines
        assert lab.udp_reaches(senders, IN_RANGE) == set()
    assert seen["auto"] == seen["cli"]
    assert seen["auto"][1].count("--dports 32768:60999 -j ACCEPT") == 3  # the user's own rule and two devices'


def test_moved_device_gets_its_rule_replaced(make_lab):
    lab = make_lab(devices=2)
    assert lab.castwall("setup", "--yes").returncode == 0
    tv = lab.devices[0]
    old_ip, other_line = tv.ip, [line for line in tagged_lines(lab) if tv.ip not in line]
    lab.move(tv, "192.168.77.180")

    status = lab.castwall("status")
    assert status.returncode == 3
    assert f"{tv.name} moved from {old_ip} to 192.168.77.180" in status.stdout

    result = lab.castwall("setup", "--yes")
    assert result.returncode == 0, result.stderr
    lines = tagged_lines(lab)
    assert not any(f"from {old_ip} " in line for line in lines)
    assert any(line.startswith("ufw allow from 192.168.77.180 ") and dashed(tv.uuid) in line for line in lines)
    assert [line for line in lines if "192.168.77.180" not in line] == other_line
    assert lab.udp_reaches({"tv": tv.ns}, IN_RANGE) == {"tv"}
    assert lab.castwall("status").returncode == 0


def test_remove_leaves_the_users_rules_as_they_were(make_lab):
    lab = make_lab(devices=2)
    user_lines = add_user_rules(lab)
    assert lab.castwall("setup", "--yes").returncode == 0
    one = lab.castwall("remove", "--device", lab.devices[0].name, "--yes")
    assert one.returncode == 0, one.stderr
    assert len(tagged_lines(lab)) == 1
    result = lab.castwall("remove", "--all", "--yes")
    assert result.returncode == 0, result.stderr
    assert lab.ufw_added() == user_lines
    assert json.loads((lab.state_dir / "state.json").read_text())["rules"] == []


def test_without_root_setup_refuses_and_dry_run_only_shows(make_lab):
    lab = make_lab(devices=2)
    before = lab.ufw_added()
    refused = lab.castwall("setup", "--yes", root=False)
    assert refused.returncode == 4 and "sudo castwall setup" in refused.stderr
    dry = lab.castwall("setup", "--dry-run", root=False)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("ufw allow proto udp from 192.168.77.") == 2
    assert lab.ufw_added() == before and not (lab.state_dir / "state.json").exists()


def test_inactive_ufw_gets_the_rules_and_a_warning_but_stays_inactive(make_lab):
    lab = make_lab(devices=1)
    lab.ufw("disable", check=True)
    result = lab.castwall("setup", "--yes")
    assert result.returncode == 0 and "ufw is INACTIVE" in result.stderr
    assert len(tagged_lines(lab)) == 1
    assert lab.ufw("status").stdout.startswith("Status: inactive")
    assert lab.castwall("status").returncode == 3


def test_changed_port_range_is_reported_and_carried_over(make_lab):
    lab = make_lab(devices=1)
    assert lab.castwall("setup", "--yes").returncode == 0
    lab.set_port_range(40000, 50000)
    status = lab.castwall("status")
    assert status.returncode == 3 and "port range is now 40000:50000" in status.stdout
    assert lab.castwall("setup", "--yes").returncode == 0
    [line] = tagged_lines(lab)
    assert "port 40000:50000 " in line
    dev = lab.devices[0]
    assert lab.udp_reaches({"in": dev.ns}, 45000) == {"in"}
    assert lab.udp_reaches({"out": dev.ns}, 35000) == set()


def test_discovery_ends_when_the_lan_has_answered_not_at_the_timeout(make_lab):
    lab = make_lab(devices=2)
    start = time.monotonic()
    found = devices_json(lab.castwall("discover", "--json", "--timeout", "60", root=False))
    assert len(found) == 3 and time.monotonic() - start < 20


def test_raw_arp_resolves_what_the_kernel_cannot_but_only_as_root(make_lab):
    lab = make_lab(devices=2)
    # The workstation's kernel no longer sends ARP requests of its own.
    lab.ws(["sh", "-c", "echo 0 > /proc/sys/net/ipv4/neigh/eth0/mcast_solicit; ip neigh flush dev eth0"], check=True)
    as_root = {d["uuid"]: d for d in devices_json(lab.castwall("discover", "--json"))}
    for dev in lab.devices:
        assert as_root[dashed(dev.uuid)]["mac"] == dev.mac
    lab.ws(["ip", "neigh", "flush", "dev", "eth0"], check=True)
    start = time.monotonic()
    as_user = devices_json(lab.castwall("discover", "--json", root=False))
    assert all(d["mac"] is None and "no answer" in d["mac_note"] for d in as_user)
    # Unreachable devices must not hold discovery up (pychromecast would poll them over HTTP for 30 s).
    assert time.monotonic() - start < 20
