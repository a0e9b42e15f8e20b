"""A hostile DIAL host beside real devices, on a LAN that loses multicast (so DIAL is all there is).

tests/lab/hostile_dial.py answers every M-SEARCH with crafted replies, one
address per case, serves crafted descriptions, and logs every request it
gets, to whichever of its addresses and ports: castwall must ask nobody but
the repliers, give no crafted case a rule, stay within bounded memory, and
still find and allow every real device that nobody contests.
"""

import re

import pytest

from tests.lab import dashed

pytestmark = pytest.mark.lab

NET = "192.168.77"
DECOY = f"{NET}.159"  # an address of the hostile host that never answers: nobody may ask it anything
BOMB = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
        '<root><device><friendlyName>&d;&d;&d;&d;</friendlyName><UDN>uuid:aaaaaaaa-0000-4000-8000-000000000001</UDN>'
        '</device></root>')
NASTY = "TV\u202e\r\n\t$(reboot) `id`; 'quote\" ufw allow from any " + "L" * 150


def description(udn: str, name: str = "Hostile TV") -> str:
    return (f'<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>'
            f"<deviceType>urn:dial-multiscreen-org:device:dial:1</deviceType><friendlyName>{name}</friendlyName>"
            f"<manufacturer>Google Inc.</manufacturer><modelName>Eureka Dongle</modelName><UDN>{udn}</UDN>"
            f"</device></root>")


def case(n: int, *, location: str | None = None, body: str | None = None, app: bool = True, **more) -> dict:
    ip = f"{NET}.{n}"
    headers = {"Content-Type": "application/xml"}
    if app:
        headers["Application-URL"] = f"http://{ip}:8008/apps/"
    headers.update(more.pop("headers", {}))
    out = {"ip": ip, "location": location or f"http://{ip}:8008/ssdp/device-desc.xml", "headers": headers, **more}
    if body is not None:
        out["body"] = body.encode().hex()
    return out


def hostile_cases(victim_uuid: str) -> list[dict]:
    return [
        case(150, location=f"http://{DECOY}:8008/ssdp/device-desc.xml"),  # another host
        case(151, location=f"http://{NET}.151:9999/ssdp/device-desc.xml"),  # another port
        case(152, location="http://evil-dial.local:8008/ssdp/device-desc.xml"),  # a host name
        case(153, huge=50 * 1024 * 1024),  # a description of 50 MB
        case(154, body=BOMB),  # an entity-expansion bomb
        case(155, body=description("uuid:not-a-uuid", NASTY)),  # a UDN that is no UUID
        case(156, body=description(f"uuid:{victim_uuid}", "Clone " + NASTY)),  # a real device's UUID
        case(157, status=404, replies=300),  # a flood: 300 replies to every M-SEARCH, each from a new port
        case(158, status=302, headers={"Location": f"http://{DECOY}:8008/x.xml"}),  # a redirect
        case(160, slow=0.3),  # a description that trickles in
        case(161, body=description("uuid:bbbbbbbb-0000-4000-8000-000000000002"), app=False),  # no Application-URL
        case(162, extra_hex=("SERVER: \x1b[2J\x1b]0;owned\x07\r\n").encode().hex(),
             location=f"http://{NET}.162:8008/\x1b[31m"),  # control characters in the reply itself
    ]


def test_hostile_dial_gets_no_rule_asks_only_the_repliers_and_real_devices_still_get_theirs(make_lab):
    lab = make_lab(devices=3)
    lab.lose_multicast()
    victim = lab.devices[1]
    cases = hostile_cases(dashed(victim.uuid))
    hostile = lab.add_hostile_dial(cases, decoys=[DECOY], listen=[8008, 9999])

    result = lab.castwall_measured("setup", "--yes")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr

    # The real devices nobody contests get their rule, and nothing else does.
    tagged = [line for line in lab.ufw_added() if "castwall:" in line]
    allowed = {re.search(r"from (\S+) ", line).group(1) for line in tagged}
    honest = [d for d in lab.devices if d is not victim]
    assert allowed == {d.ip for d in honest}, out
    senders = {d.name: d.ns for d in lab.devices} | {"hostile": hostile.ns}
    assert lab.udp_reaches(senders, 45000) == {d.name for d in honest}

    # The device whose UUID was cloned is found and shown contested, with both addresses.
    assert re.search(rf"its id is announced from 2 addresses \({re.escape(victim.ip)} as {victim.name}, "
                     rf"{NET}\.156 as Clone TV", out), out

    # castwall asked nobody but the repliers, only at port 8008, and each replier once.
    asked = [e for e in hostile.events() if e["event"] == "http"]
    assert all(e["port"] == 8008 and e["to"] != DECOY for e in asked), asked
    assert {e["to"] for e in asked} <= {c["ip"] for c in cases}
    assert not any(e["to"] in (f"{NET}.150", f"{NET}.151", f"{NET}.152", f"{NET}.162") for e in asked), asked
    assert sum(e["to"] == f"{NET}.157" for e in asked) == 1  # 600 replies, one request

    reasons = {
        150: f"its LOCATION names another host ({DECOY}), not the replier {NET}.150",
        151: "its LOCATION names port 9999, not the Cast devices' 8008",
        152: "its LOCATION names no address of the replier",
        153: "its description is larger than 64 KiB",
        154: "its description declares a document type or entities",
        155: "its UDN is not a Cast UUID",
        157: "its description answered HTTP 404",
        158: "its description answered HTTP 302, not 200 (castwall follows no redirect)",
        160: "its description did not arrive within 1 s",
        161: "its description came without an Application-URL header",
        162: "its LOCATION is not a plain URL",
    }
    for n, reason in reasons.items():
        assert f"ignored a DIAL reply from {NET}.{n}: {reason}" in out, (n, out)

    # Readable and bounded: one printable line each, names escaped and cut, memory small.
    for line in out.splitlines():
        assert line.isprintable() and len(line) < 400, repr(line)
    assert "\x1b" not in out and "Clone TV\\u202e $(reboot)" in out and "L" * 64 not in out
    assert result.peak_rss_mb < 80, result.peak_rss_mb
    ufw_text = lab.user_rules() + "\n".join(lab.ufw_added())
    assert "reboot" not in ufw_text and "Clone" not in ufw_text
    state = (lab.state_dir / "state.json").read_text()
    assert state.isascii() and "\x1b" not in state
