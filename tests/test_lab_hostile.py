"""A hostile LAN in the lab: crafted announcements and a host that takes a device's address.

The real devices are avahi-daemons; the hostile host sends raw mDNS packets
(tests/lab/hostile.py); the impostor is a second host with a device's IP.
Everything castwall sees comes over the network, ufw is real.
"""

import json
import re

import pytest

from tests.lab import dashed, hostile_case

pytestmark = pytest.mark.lab

EVIL_IP = "192.168.77.66"
EVIL_TARGET = "evil-66.local."
NASTY = b"TV\x1b[2J\x1b]0;owned\x07\r\n$(reboot) `id`; 'quote\" ufw allow from any \xe2\x80\xae"
FORBIDDEN = ("reboot", "owned", "ufw allow from any", "Evil", "\x1b")


def case(label: bytes, uuid_hex: str, *, addresses=(EVIL_IP,), target: str = EVIL_TARGET, **fields) -> dict:
    return hostile_case(label, uuid_hex, addresses=list(addresses), target=target, **fields)


def hostile_cases(lab, clone_of):
    ws, net = lab.ws_ip, lab.subnet
    special = {
        "zero": "0.0.0.0", "limited broadcast": "255.255.255.255", "subnet broadcast": f"{net}.255",
        "network": f"{net}.0", "multicast": "224.0.0.251", "loopback": "127.0.0.1", "own": ws,
        "routed": "10.9.9.9", "public": "8.8.8.8", "gateway": lab.gateway.ip,
    }
    cases = [
        case(b"Evil-ctl\x1b[31m\n", "a1" * 16, name=NASTY),
        case(b"Evil-utf8-\xff\xfe\xc3\x28", "a2" * 16, name=b"\xff\xfe bad \xc3\x28 utf8", model=b"\xed\xa0\x80 model"),
        case(b"Evil-long", "a3" * 16, name=b"L" * 250, model=b"M" * 250),
        case(b"Evil-clone", clone_of.uuid, name=b"Clone of " + clone_of.name.encode()),
        case(b"Evil-no-srv", "a4" * 16, port=None),
        case(b"Evil-bad-id", "not-a-uuid"),
        case(b"Evil-bad-txt", "a5" * 16, txt=b"\xffid"),  # an entry claiming 255 bytes, holding 2
    ]
    for i, (what, ip) in enumerate(special.items()):
        cases.append(case(f"Evil-{what}".encode(), f"b{i}" * 16, name=f"Evil {what}".encode(), addresses=[ip],
                          target=f"evil-{i}.local."))
    return cases, special


def test_hostile_lan_gets_no_rule_and_every_real_device_still_does(make_lab):
    lab = make_lab(devices=6)
    clone_victim, ip_victim = lab.device("Bedroom TV"), lab.device("Garage TV")
    cases, special = hostile_cases(lab, clone_victim)
    lab.add_hostile(cases, EVIL_IP)
    impostor = lab.add_impostor(ip_victim.ip, "02:66:00:00:00:01")
    lab.ufw("allow", "22/tcp", check=True)
    user_rules_before = lab.ufw_added()

    result = lab.castwall("setup", "--yes")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr

    # Every real device that nobody contests is found and allowed, and nothing else.
    honest = [d for d in lab.devices if d not in (clone_victim, ip_victim)]
    tagged = [line for line in lab.ufw_added() if "castwall:" in line]
    allowed = {re.search(r"from (\S+) ", line).group(1) for line in tagged}
    assert allowed == {d.ip for d in honest}, out
    assert lab.ufw_added()[: len(user_rules_before)] == user_rules_before
    senders = {d.name: d.ns for d in lab.devices} | {"hostile": lab.namespaces[-2], "impostor": impostor}
    assert lab.udp_reaches(senders, 45000) == {d.name for d in honest}

    # Every hostile case is listed with its reason.
    for what, ip in special.items():
        assert re.search(rf"Evil {what} \({re.escape(ip)}\): ", out), (what, out)
    for reason in ("0.0.0.0 is not a host address", "255.255.255.255 is the broadcast address",
                   f"{lab.subnet}.255 is the broadcast address of {lab.subnet}.0/24",
                   f"{lab.subnet}.0 is the network address of {lab.subnet}.0/24", "224.0.0.251 is a multicast address",
                   "127.0.0.1 is a loopback address", f"{lab.ws_ip} is this computer's own address",
                   "10.9.9.9 is not on a subnet of this computer's interfaces", "8.8.8.8 is not on a subnet",
                   f"{lab.gateway.ip} is this computer's default gateway, not a Cast device",
                   f"{EVIL_IP} is announced by ", f"its id is announced from 2 addresses ({EVIL_IP} as Clone of Bedroom TV, "
                   f"{clone_victim.ip} as Bedroom TV)", f"2 hosts answer ARP for {ip_victim.ip}",
                   "ignored an announcement (Evil-bad-id): its Cast device id is not a UUID",
                   "ignored an announcement (Evil-no-srv): incomplete announcement: no SRV record",
                   "ignored an announcement (Evil-bad-txt): no Cast device id"):
        assert reason in out, reason

    # Readable: one printable line each, no escape sequence, names cut short.
    for line in out.splitlines():
        assert line.isprintable() and len(line) < 400, repr(line)
    assert "\\x1b[2J\\x1b]0;owned\\x07 $(reboot)" in out and "\\xff\\xfe bad \\xc3( utf8" in out
    assert "L" * 64 not in out

    # No name text reaches ufw or a file unescaped.
    ufw_files = lab.user_rules() + "\n".join(lab.ufw_added())
    for word in FORBIDDEN:
        assert word not in ufw_files, word
    state = (lab.state_dir / "state.json").read_text()
    assert state.isascii() and "\x1b" not in state
    assert {d["uuid"] for d in json.loads(state)["devices"]} >= {dashed(d.uuid) for d in honest}

    # status sees the same: the contested devices need attention.
    status = lab.castwall("status")
    assert status.returncode == 3
    assert f"Bedroom TV ({clone_victim.ip}) gets no rule" in status.stdout or "Clone of Bedroom TV" in status.stdout
    assert f"Garage TV ({ip_victim.ip}) gets no rule: 2 hosts answer ARP" in status.stdout

    # After checking, the user accepts the Bedroom TV's real address: it alone is added.
    accepted = lab.castwall("setup", "--yes", "--allow-contested", clone_victim.ip)
    assert accepted.returncode == 0, accepted.stderr
    now = {re.search(r"from (\S+) ", line).group(1) for line in lab.ufw_added() if "castwall:" in line}
    assert now == allowed | {clone_victim.ip}
    assert any(dashed(clone_victim.uuid) in line and clone_victim.ip in line for line in lab.ufw_added())
