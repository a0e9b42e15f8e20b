"""Hostile LAN, round two: hosts that try to crash, stall or steer castwall, beside real devices.

On a LAN that loses multicast (so the real devices are found by DIAL alone),
tests/lab/hostile_dial.py plays every attacker at once, one address each:
descriptions in encodings no device uses (codecs that are no text encoding
among them), more servers that drip their headers a byte at a time than
a pool of fetch workers would serve at once, a flood of junk to the search port, and a reply
forged with the source address of a host on the workstation's other LAN.
The gateway answers DIAL too. castwall must find and allow every real
device, ask nothing of the gateway or the other LAN, allow no hostile host,
and end setup, check and a follow pass with exit 0 while the flood goes on.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.lab import dashed
from tests.test_lab_hostile_dial import case, description

pytestmark = pytest.mark.lab

NET = "192.168.77"
ENCODINGS = ["x-anything", "hex", "base64", "bz2", "rot13"]
# More than a pool of 32 fetch workers would serve at once: castwall now fetches every replier's description
# at once, each within 1 s, so slow repliers, however many, delay no real device's description.
DRIPPERS = [180 + i for i in range(40)]
FLOOD = 230
FLOODERS = [f"{NET}.{n}" for n in (230, 232, 233, 234, 235, 236)]  # six senders, as the flood measured in the issue
FLOOD_SECONDS = 40  # each M-SEARCH's flood; every castwall run must end well inside it
SPOOF = 231


def encoded(n: int, encoding: str) -> dict:
    body = description(f"uuid:cccccccc-0000-4000-8000-{n:012d}").replace(
        '<?xml version="1.0"?>', f'<?xml version="1.0" encoding="{encoding}"?>')
    return case(n, body=body)


def ended_inside_the_flood(events: list[dict]) -> bool:
    """Whether the newest flood (of the newest castwall run's search port) had begun and not yet ended."""
    starts = [e for e in events if e["event"] == "flood-start"]
    if not starts:
        return False
    newest = starts[-1]
    return not any(e["event"] == "flood-end" and e["port"] == newest["port"] for e in events)


def asked(host, ip: str) -> list[dict]:
    return [e for e in host.events() if e["event"] == "http" and e["to"] == ip]


def test_no_lan_host_can_crash_stall_or_steer_castwall(make_lab):
    lab = make_lab(devices=3, group=False)  # a group answers no DIAL: on this LAN check rightly flags it
    lab.lose_multicast()
    mgmt_ns, mgmt_ip = lab.add_second_subnet()
    # The host on the other LAN answers no M-SEARCH: any request it logs was steered there by a forged reply.
    mgmt = lab.add_hostile_dial([case(5, body=description("uuid:dddddddd-0000-4000-8000-000000000005"), silent=True)
                                 | {"ip": mgmt_ip}], ns=mgmt_ns, tag="mgd")
    gateway = lab.add_hostile_dial([case(1, body=description("uuid:eeeeeeee-0000-4000-8000-000000000001", "Router"))],
                                   ns=lab.gateway.ns, tag="gwd")
    cases = ([encoded(170 + i, e) for i, e in enumerate(ENCODINGS)]
             + [case(n, drip=0.05) for n in DRIPPERS]
             + [case(FLOOD, flood=FLOOD_SECONDS, flood_from=FLOODERS),
                case(SPOOF, spoof=mgmt_ip, location=f"http://{mgmt_ip}:8008/ssdp/device-desc.xml")])
    hostile = lab.add_hostile_dial(cases, decoys=FLOODERS[1:])

    setup = lab.castwall_measured("setup", "--yes")
    assert ended_inside_the_flood(hostile.events()), "setup ended only after the flood did"
    out = setup.stdout + setup.stderr
    assert setup.returncode == 0, out
    assert "Traceback" not in out and "internal error" not in out

    # Every real device is found by DIAL and allowed; nothing else is.
    allowed = {re.search(r"from (\S+) ", line).group(1) for line in lab.ufw_added() if "castwall:" in line}
    assert allowed == {d.ip for d in lab.devices}, out
    senders = {d.name: d.ns for d in lab.devices} | {"hostile": hostile.ns, "gateway": lab.gateway.ns}
    assert lab.udp_reaches(senders, 45000) == {d.name for d in lab.devices}

    # Each attacker is named with its reason.
    for i, encoding in enumerate(ENCODINGS):
        assert (f"ignored a DIAL reply from {NET}.{170 + i}: its description declares encoding '{encoding}'; "
                f"castwall reads descriptions in UTF-8 only") in out, (encoding, out)
    assert (f"ignored a DIAL reply from {NET}.1: not asked for its description: "
            f"{NET}.1 is this computer's default gateway, not a Cast device") in out
    assert (f"ignored a DIAL reply from {mgmt_ip}: its reply came in on eth0, "
            f"where {mgmt_ip} is not on the subnet: a forged source address") in out
    for n in DRIPPERS:
        assert f"ignored a DIAL reply from {NET}.{n}: its description did not arrive within 1 s" in out, (n, out)

    # Nobody but the repliers was asked: not the gateway, not the other LAN; each dripper once, and
    # castwall hung up on each (the server logs the broken connection), not the other way round.
    assert asked(gateway, f"{NET}.1") == [] and asked(mgmt, mgmt_ip) == []
    events = hostile.events()
    for n in DRIPPERS:
        ip = f"{NET}.{n}"
        assert len([e for e in events if e["event"] == "http" and e["to"] == ip]) == 1, ip
        assert any(e["event"] == "http-closed" and e["to"] == ip for e in events), ip
    assert asked(hostile, f"{NET}.{FLOOD}") == [] and asked(hostile, f"{NET}.{SPOOF}") == []
    assert setup.peak_rss_mb < 80, setup.peak_rss_mb

    # check and a follow pass, each under a flood of its own, end with exit 0 and the same verdicts.
    check = lab.castwall("check", "--json")
    assert ended_inside_the_flood(hostile.events()), "check ended only after the flood did"
    assert check.returncode == 0 and "Traceback" not in check.stderr, check.stdout + check.stderr
    verdict = json.loads(check.stdout)
    # Chrome finds each by DIAL (castwall also asked them by unicast mDNS, knowing them now).
    assert {d["uuid"]: ("dial" in d["found_by"], d["chrome_finds_by"], d["ok"]) for d in verdict["devices"]} == {
        dashed(d.uuid): (True, ["dial"], True) for d in lab.devices}, check.stdout
    follow = lab.castwall("follow", "run")
    assert ended_inside_the_flood(hostile.events()), "the follow pass ended only after the flood did"
    assert follow.returncode == 0 and "Traceback" not in follow.stderr, follow.stdout + follow.stderr
    assert {re.search(r"from (\S+) ", line).group(1) for line in lab.ufw_added() if "castwall:" in line} == allowed
    assert asked(gateway, f"{NET}.1") == [] and asked(mgmt, mgmt_ip) == []
