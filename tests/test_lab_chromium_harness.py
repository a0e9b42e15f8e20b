"""The lab itself, with no castwall: its Cast devices' DIAL, its lossy LAN, and a real Chromium.

These reproduce the measurements behind castwall (docs: facts "What Chrome
does") against the real ufw in the workstation, default deny, with rules
added by hand: Chromium finds every device by mDNS where multicast works,
but its DIAL replies are dropped; a rule per device for the ephemeral ports
lets them in; on a LAN that loses mDNS multicast, those rules are what lets
Chromium find the devices at all.

Each test builds its own lab and tears it down, even on failure.
"""

import json
import os
import re

import pytest

from tests.conftest import need
from tests.lab import LOSSY_TABLE, dashed
from tests.lab import chromium as harness

pytestmark = [pytest.mark.lab, pytest.mark.harness]  # proves the lab itself: on one stack (scripts/test)

N = 3


@pytest.fixture
def lab_with(make_lab):
    """make_lab, after checking that Chromium and nft are here."""
    def make(**kw):
        need(harness.missing() or (None if os.access("/usr/sbin/nft", os.X_OK) else "the lab needs nft (nftables)"))
        return make_lab(**kw)
    return make


def port_range(lab):
    low, high = lab.ws(["cat", "/proc/sys/net/ipv4/ip_local_port_range"], check=True).stdout.split()
    return int(low), int(high)


def allow_dial_replies(lab):
    """By hand, as a user would: one rule per device for the ports a reply to an M-SEARCH can reach."""
    low, high = port_range(lab)
    for dev in lab.devices:
        lab.ufw("allow", "proto", "udp", "from", dev.ip, "to", "any", "port", f"{low}:{high}", check=True)


def every(lab):
    return {dashed(d.uuid) for d in lab.devices}


def assert_one_full_dial_cycle(lab, run, replied=True):
    """Chromium's 4 M-SEARCHes from one ephemeral port reached every device, each answered by unicast."""
    low, high = port_range(lab)
    assert len(run.msearch_ports) == 1 and low <= run.msearch_ports[0] <= high, run
    for uuid in every(lab):
        d = run.details[uuid]
        assert d["msearches"] >= harness.DIAL_REQUESTS or d["fetches"], run
        if replied:
            assert d["replies"] >= 1, run


_MSEARCH = r"""
import json, socket, sys, time
ws_ip, mx, expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ws_ip, 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ws_ip))
s.sendto(("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
          f"MX: {mx}\r\nST: urn:dial-multiscreen-org:service:dial:1\r\n\r\n").encode(), ("239.255.255.250", 1900))
# Until the expected replies are in; a reply missing gets the MX window and a generous 5 s for a loaded machine.
got, end = [], time.monotonic() + mx + 5
while len(got) < expected and (left := end - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        data, (ip, port) = s.recvfrom(4096)
    except socket.timeout:
        break
    got.append({"from": ip, "sport": port, "text": data.decode()})
print(json.dumps({"port": s.getsockname()[1], "replies": got}))
"""


def test_devices_answer_dial_as_a_chromecast_does(lab_with):
    lab = lab_with(devices=2, no_dial=[1])
    tv, quiet = lab.devices
    allow_dial_replies(lab)
    done = lab.ws([lab.python, "-c", _MSEARCH, lab.ws_ip, "1", "1"], check=True)
    result = json.loads(done.stdout)
    [reply] = result["replies"]  # the --no-dial device keeps quiet
    assert reply["from"] == tv.ip and reply["sport"] != 1900  # libupnp's new unbound socket
    text = reply["text"]
    assert text.endswith("\r\n\r\n") and "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = dict(line.split(":", 1) for line in lines[1:] if line)
    uuid = dashed(tv.uuid)
    assert headers["LOCATION"].strip() == f"http://{tv.ip}:8008/ssdp/device-desc.xml"
    assert headers["USN"].strip() == f"uuid:{uuid}::urn:dial-multiscreen-org:service:dial:1"
    assert headers["ST"].strip() == "urn:dial-multiscreen-org:service:dial:1"
    assert headers["SERVER"].strip() == "Linux/3.8.13+, UPnP/1.0, Portable SDK for UPnP devices/1.6.18"
    for name in ("CACHE-CONTROL", "DATE", "EXT", "OPT", "01-NLS", "X-User-Agent", "BOOTID.UPNP.ORG", "CONFIGID.UPNP.ORG"):
        assert name in headers, name
    for dev, answered in ((tv, True), (quiet, False)):
        [seen] = [e for e in lab.cast_events(dev, "msearch") if e["from"] == lab.ws_ip]
        assert seen["sport"] == result["port"] and seen["mx"] == "1"
        replies = [(e["to"], e["dport"], e["sport"]) for e in lab.cast_events(dev, "reply")]
        assert replies == ([(lab.ws_ip, result["port"], reply["sport"])] if answered else [])

    fetch = r"""
import json, sys, urllib.request, urllib.error
out = {}
r = urllib.request.urlopen(sys.argv[1] + "/ssdp/device-desc.xml", timeout=5)
out["desc"] = [r.status, r.headers["Content-Type"], r.headers["Application-URL"], r.read().decode()]
try:
    urllib.request.urlopen(sys.argv[1] + "/apps/", timeout=5)
except urllib.error.HTTPError as e:
    out["apps"] = e.code
print(json.dumps(out))
"""
    got = json.loads(lab.ws([lab.python, "-c", fetch, f"http://{tv.ip}:8008"], check=True).stdout)
    status, ctype, app_url, xml = got["desc"]
    assert (status, ctype, app_url, got["apps"]) == (200, "application/xml", f"http://{tv.ip}:8008/apps/", 404)
    assert '<root xmlns="urn:schemas-upnp-org:device-1-0">' in xml
    for element in (f"<UDN>uuid:{uuid}</UDN>", f"<friendlyName>{tv.name}</friendlyName>",
                    f"<modelName>{tv.model}</modelName>", "<manufacturer>Google Inc.</manufacturer>",
                    "<deviceType>urn:dial-multiscreen-org:device:dial:1</deviceType>",
                    "<serviceType>urn:dial-multiscreen-org:service:dial:1</serviceType>",
                    f"<URLBase>http://{tv.ip}:8008</URLBase>", "<iconList>"):
        assert element in xml, element
    assert [e["path"] for e in lab.cast_events(tv, "http")] == ["/ssdp/device-desc.xml", "/apps/"]

    connect = f"import socket; socket.create_connection(('{tv.ip}', 8009), timeout=5).close()"
    lab.ws([lab.python, "-c", connect], check=True)
    event = lab.wait_for_event(tv, "connect")
    assert (event["from"], event["port"]) == (lab.ws_ip, 8009)


def test_a_lan_losing_multicast_drops_mdns_towards_the_workstation_and_nothing_else(lab_with):
    lab = lab_with(devices=2)
    ips = {d.ip for d in lab.devices}
    senders = {d.name: d for d in lab.devices}

    def answered(seen):
        return seen["multicast"] >= ips and seen["unicast"] >= ips

    assert answered(lab.mdns_answers(answered, unicast=sorted(ips)))

    lab.lose_multicast()
    listed = lab.in_ns(f"{lab.prefix}-br", ["nft", "list", "table", "bridge", LOSSY_TABLE]).stdout
    assert re.search(r'oifname "ws" ip daddr 224\.0\.0\.251 counter packets \d+ bytes \d+ drop', listed), listed

    def dropped_every_answer(seen):
        # Every device answered by unicast, and the bridge dropped at least one multicast answer from each.
        return seen["unicast"] >= ips and lab.multicast_dropped() >= len(ips)

    lost = lab.mdns_answers(dropped_every_answer, unicast=sorted(ips))
    assert lost["multicast"] == set() and lost["unicast"] >= ips
    # SSDP multicast towards the workstation still passes (ufw's before.rules let 239.255.255.250:1900 in).
    assert lab.multicast_reaches(senders, "239.255.255.250", 1900) == set(senders)

    lab.lose_multicast(False)
    assert lab.multicast_dropped() == 0
    assert answered(lab.mdns_answers(answered, unicast=sorted(ips)))
    lab.lose_multicast(False)  # idempotent both ways
    lab.lose_multicast()
    lab.lose_multicast()
    assert lab.in_ns(f"{lab.prefix}-br", ["nft", "list", "tables"]).stdout.count(LOSSY_TABLE) == 1


def test_where_multicast_works_chromium_finds_every_device_by_mdns_and_ufw_drops_its_dial_replies(lab_with):
    lab = lab_with(devices=N)
    run = lab.chromium_discovery({"dial": False, "cast": True})
    assert run.found("cast") == every(lab), run
    assert run.found("dial") == set(), run
    assert_one_full_dial_cycle(lab, run)
    for uuid in every(lab):
        d = run.details[uuid]
        assert d["replies"] == d["msearches"], run  # every M-SEARCH answered; ufw dropped the answers
        assert d["mdns_questions"] >= 1, run


def test_a_rule_per_device_for_the_ephemeral_ports_lets_every_dial_reply_in(lab_with):
    lab = lab_with(devices=N)
    allow_dial_replies(lab)
    run = lab.chromium_discovery({"dial": True, "cast": True})
    assert run.found("dial") == every(lab), run
    assert run.found("cast") == every(lab), run
    assert_one_full_dial_cycle(lab, run)


def test_on_a_lan_losing_multicast_only_the_dial_rules_let_chromium_find_the_devices(lab_with):
    lab = lab_with(devices=N)
    lab.lose_multicast()

    hidden = lab.chromium_discovery({"dial": False, "cast": False})
    assert hidden.found("cast") == set() and hidden.found("dial") == set(), hidden
    assert_one_full_dial_cycle(lab, hidden)
    assert lab.multicast_dropped() >= N  # the devices did answer Chromium's mDNS questions

    allow_dial_replies(lab)
    found = lab.chromium_discovery({"dial": True, "cast": True})
    assert found.found("dial") == every(lab) and found.found("cast") == every(lab), found
    for uuid in every(lab):
        d = found.details[uuid]
        assert d["first_fetch"] <= d["first_cast"], found  # through DIAL: mDNS cannot reach Chromium here
