"""The lab's devices as Cast v2 receivers, driven by real senders through the workstation's real ufw.

A device's Cast port (tests/lab/cast_device.py, cast_receiver.py) speaks TLS
and CastMessages; a LOAD makes the device fetch the media from the sender's
machine itself, as a real Chromecast does, so the workstation's firewall
decides whether casting works: ufw denies by default, and the fetch of a
port it has no rule for is dropped (LOAD_FAILED after the device's 3 s
connect timeout). The senders (tests/lab/senders.py): the pychromecast of
the Python running the tests (Debian 12's 9.4, or PyPI's 14) and catt
(PyPI, on pychromecast 14, in its own venv), which serves a local file from
a random port in 45000-46999.
"""

import json
import re
from pathlib import Path

import pytest

import tests.lab
from tests.conftest import need
from tests.lab import dashed
from tests.lab.senders import catt_missing, pychromecast_missing

pytestmark = [pytest.mark.lab, pytest.mark.harness]  # proves the lab itself: on one stack (scripts/test)

MEDIA_RECEIVER = "CC1AD845"
MEDIA_PORT = 8010
LAB_MODULES = Path(tests.lab.__file__).parent  # cast_receiver.py's encode_message, for the hostile sender




def outcome(run):
    """The device's view of the LOAD: (fetch ok, fetch status, fetch error, media state)."""
    assert run.load is not None and run.fetch is not None, run
    return run.fetch["ok"], run.fetch["status"], run.fetch["error"], run.state


def test_pychromecast_plays_a_url_from_the_workstation_only_once_ufw_lets_the_device_fetch_it(make_lab):
    lab = make_lab(devices=1)
    need(pychromecast_missing(lab.python))
    tv = lab.devices[0]
    wav = lab.media_file()
    with lab.serve_media(wav.parent, MEDIA_PORT) as server:
        url = server.url(wav.name)

        blocked = lab.pychromecast_play(tv, url, timeout=10)
        r = blocked.result
        assert r and r["connected"] and (r["app"], r["display_name"]) == (MEDIA_RECEIVER, "Default Media Receiver"), blocked
        assert r["state"] == "LOAD_FAILED", blocked
        if int(r["version"].split(".")[0]) >= 10:  # 9.4 drops LOAD_FAILED; it sees the IDLE (ERROR) status after it
            assert r["error_code"] == 103, blocked  # MEDIA_NETWORK
        assert outcome(blocked) == (False, None, "timed out", "LOAD_FAILED"), blocked
        assert blocked.load["url"] == url and blocked.load["from"] == lab.ws_ip
        assert server.requests() == []  # ufw dropped the device's connection
        # Both pychromecast versions asked for the device's eureka_info over HTTPS first.
        assert any(e["event"] == "http" and e["port"] == 8443 and e["path"].startswith("/setup/eureka_info")
                   and e["status"] == 200 for e in blocked.events), blocked

        lab.ufw("allow", "proto", "tcp", "from", tv.ip, "to", "any", "port", str(MEDIA_PORT), check=True)
        played = lab.pychromecast_play(tv, url, controls=True)
        r = played.result
        assert r["state"] == "PLAYING" and r["content_id"] == url, played
        assert outcome(played) == (True, 200, None, "PLAYING"), played
        assert played.fetch["bytes"] == wav.stat().st_size
        assert r["controls"] == ["PAUSED", "PLAYING", "IDLE"], played
        assert r["app_after_quit"] is None and played.returncode == 0, played
        assert [e["state"] for e in played.events if e["event"] == "media"] == ["PLAYING", "PAUSED", "PLAYING", "IDLE"]
        [got] = server.requests()
        assert (got["from"], got["request"], got["status"]) == (tv.ip, f"GET /{wav.name} HTTP/1.1", 200)
    assert not lab.cast_events(tv, "error") and not lab.cast_events(tv, "cast-error")


def test_catt_casts_a_local_file_only_once_ufw_lets_the_device_reach_catts_server(make_lab):
    need(catt_missing())
    lab = make_lab(devices=1)
    tv = lab.devices[0]
    wav = lab.media_file()

    failed = lab.catt_cast(tv, wav)
    assert outcome(failed) == (False, None, "timed out", "LOAD_FAILED"), failed
    m = re.fullmatch(rf"http://{re.escape(lab.ws_ip)}:(\d+)/\?loaded_from_catt", failed.load["url"])
    assert m and 45000 <= int(m.group(1)) <= 46999, failed
    # catt hears of the failure (pychromecast 14 passes LOAD_FAILED on) and gives up by itself.
    assert not failed.ended_by_lab and failed.returncode == 1, failed
    assert "failed to load media (error code 103)" in failed.output, failed
    assert [e["app"] for e in failed.events if e["event"] == "launch"] == [MEDIA_RECEIVER]

    lab.ufw("allow", "proto", "tcp", "from", tv.ip, "to", "any", "port", "45000:47000", check=True)
    played = lab.catt_cast(tv, wav)
    assert outcome(played) == (True, 206, None, "PLAYING"), played  # catt's server answers the Range request
    assert played.fetch["bytes"] == wav.stat().st_size
    # For a local file catt serves until interrupted: the lab ended it, by PID. (What it printed before
    # its LOAD, and its server's log of the device's request, are there by the device's PLAYING.)
    assert played.ended_by_lab, played
    assert f'Playing "tone" on "{tv.name}"' in played.output, played
    assert re.search(rf'{re.escape(tv.ip)} .* "GET /\?loaded_from_catt HTTP/1.1" 206', played.output), played
    assert not [e for e in played.events if e["event"] == "launch"]  # the receiver app was still running
    assert not lab.cast_events(tv, "error") and not lab.cast_events(tv, "cast-error")


# Hostile senders, from the workstation: each case opens its own connection to the Cast port.
_HOSTILE = r"""
import json, socket, ssl, struct, sys, time
sys.path.insert(0, sys.argv[2])
from cast_receiver import encode_message, NS_RECEIVER

ip = sys.argv[1]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

def tls():
    return ctx.wrap_socket(socket.create_connection((ip, 8009), timeout=5))

def frame(ns, payload, src="sender-0", dst="receiver-0"):
    body = encode_message(src, dst, ns, payload)
    return struct.pack(">I", len(body)) + body

def closed_by_device(s):
    try:
        return s.recv(100) == b""
    except (ssl.SSLError, OSError):
        return True

def get_status(s):
    s.sendall(frame(NS_RECEIVER, json.dumps({"type": "GET_STATUS", "requestId": 7})))
    n = struct.unpack(">I", s.read(4))[0]
    body = b""
    while len(body) < n:
        body += s.read(n - len(body))
    return body

out = {}
# A connection that never says a word, held open through the rest: the device must not wait on it.
silent = socket.create_connection((ip, 8009), timeout=5)
cases = {
    "garbage": b"\x00\x00\x00\x05hello",
    "oversized": struct.pack(">I", 1 << 20) + b"x" * 100,
    "not json": frame(NS_RECEIVER, "{this is not json"),
    "json list": frame(NS_RECEIVER, "[1, 2]"),
    "binary": frame(NS_RECEIVER, b"\x00\x01\x02"),
    "no type": frame(NS_RECEIVER, json.dumps({"requestId": 1})),
    "bad protobuf": struct.pack(">I", 3) + b"\x0f\xff\xff",
}
for name, data in cases.items():
    s = tls()
    s.sendall(data)
    out[name] = closed_by_device(s)
    s.close()
plain = socket.create_connection((ip, 8009), timeout=5)  # no TLS at all
plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
out["plain http"] = closed_by_device(plain)
s = tls()
out["status"] = b"RECEIVER_STATUS" in get_status(s)
s.close()
silent.setblocking(False)
try:
    out["silent still open"] = silent.recv(1) != b""
except BlockingIOError:  # nothing to read and not closed: the device still holds it
    out["silent still open"] = True
silent.close()
print(json.dumps(out))
"""

_FETCH = r"""
import json, ssl, sys, urllib.request
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
out = {}
for base in ("https://%s:8443" % sys.argv[1], "http://%s:8008" % sys.argv[1]):
    with urllib.request.urlopen(base + "/setup/eureka_info?params=device_info,name", timeout=5, context=ctx) as r:
        out[base.split(":")[0]] = json.loads(r.read())
with urllib.request.urlopen("http://%s:8008/ssdp/device-desc.xml" % sys.argv[1], timeout=5) as r:
    out["description"] = r.status
print(json.dumps(out))
"""


def test_hostile_frames_on_the_cast_port_close_that_connection_and_the_device_carries_on(make_lab):
    lab = make_lab(devices=2)
    tv, speaker = lab.devices
    done = lab.ws([lab.python, "-c", _HOSTILE, tv.ip, str(LAB_MODULES)], timeout=60)  # as root: the checkout is readable
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    for case in ("garbage", "oversized", "not json", "json list", "binary", "no type", "bad protobuf", "plain http"):
        assert got[case] is True, (case, got)  # the device closed that connection
    # A fresh connection is answered while the silent one is still open: the device did not wait for it to end.
    assert got["status"] is True and got["silent still open"] is True, got

    errors = [e["error"] for e in lab.cast_events(tv, "cast-error")]
    assert len(errors) == 7, errors
    assert any("frame of 1048576 bytes" in e for e in errors) and any("not JSON" in e for e in errors), errors
    assert any("binary payload" in e for e in errors) and any("not a JSON object" in e for e in errors), errors
    tls = lab.cast_events(tv, "tls")
    assert [e["ok"] for e in tls].count(False) >= 1 and [e["ok"] for e in tls].count(True) == 8, tls
    assert not lab.cast_events(tv, "error")  # no bug in the device was hit
    assert len(lab.cast_events(tv, "connect")) == 10  # each case's, the plain one's, the silent one's, the last

    # The device still serves DIAL and eureka_info, over HTTP and HTTPS; an audio device says it has no display.
    for dev, display in ((tv, True), (speaker, False)):
        info = json.loads(lab.ws([lab.python, "-c", _FETCH, dev.ip], check=True).stdout)
        assert info["description"] == 200
        for scheme in ("https", "http"):
            doc = info[scheme]
            assert doc["name"] == dev.name and doc["device_info"]["model_name"] == dev.model, doc
            assert doc["device_info"]["ssdp_udn"] == dashed(dev.uuid)
            assert doc["device_info"]["manufacturer"] == "Google Inc."
            assert doc["device_info"]["capabilities"]["display_supported"] is display
    assert {e["port"] for e in lab.cast_events(tv, "http")} == {8008, 8443}
