"""The lab's Cast device, apart from mDNS: DIAL (SSDP and the device description) and the Cast port.

Runs in a device namespace next to its avahi-daemon and answers the way a real
Chromecast does:

- SSDP: joins 239.255.255.250 on the device's address, listens on UDP 1900,
  and answers an M-SEARCH for the DIAL service (or ssdp:all) by unicast to the
  searcher's address and port, after a random delay of up to MX seconds (MX
  clamped to 1..5), from a new unbound socket: the source port is random, not
  1900, as libupnp 1.6 on real Chromecasts sends it.
- HTTP on TCP 8008: GET /ssdp/device-desc.xml gives the UPnP device
  description (UDN uuid:<the Cast UUID>) with an Application-URL header;
  GET /setup/eureka_info (?params=name,device_info,multizone) the device's
  JSON (name, ssdp_udn, device_info: manufacturer, model_name, capabilities,
  cast_build_revision...); anything else is a 404. Every request is logged.
  With --cert, HTTPS on TCP 8443 serves the same (pychromecast 9.4 and 14
  ask https://IP:8443/setup/eureka_info first; 14 falls back to 8008).
- TCP on the Cast port 8009 (and the group's port, if it hosts one): every
  connection is logged as it is accepted. With --cert and --key the port is a
  Cast v2 receiver (cast_receiver.py): TLS, then length-prefixed protobuf
  CastMessages (at most 64 KiB) on the connection, heartbeat, receiver and
  media namespaces; LAUNCH of the Default Media Receiver (CC1AD845) starts it,
  and a LOAD makes the device GET the media's URL itself (3 s to connect),
  as a real one does, through whatever firewall is on the way: PLAYING if
  that brought an HTTP 200 or 206 and at least a byte, else LOAD_FAILED.
  For VLC's stream, read to its end, IDLE/FINISHED follows (other senders'
  media plays on); where VLC's LOAD fails, its connection is closed instead
  of answered (VLC would retry for ever). It answers a device-auth challenge
  with a made-up signature (what VLC needs: cast_receiver.py).
  A connection that does not finish TLS within 5 s is closed, one that
  breaks the protocol (a bad or oversized frame, a payload that is not a
  JSON object) at once; an open one after 30 s of silence. Without --cert
  a connection is only held until the peer closes or 5 s pass.
- mDNS: only listens. A socket bound to 224.0.0.251:5353 (not the wildcard,
  so unicast to the device still goes to avahi alone) logs the questions
  other hosts multicast; avahi answers them.

Each event is one JSON line in the log:
    {"event": "ready"}
    {"event": "msearch", "from": IP, "sport": PORT, "st": ST, "mx": MX, "t": T}
    {"event": "reply", "to": IP, "dport": PORT, "sport": SRC_PORT, "t": T}
    {"event": "http", "from": IP, "method": M, "path": PATH, "status": CODE, "port": 8008 or 8443, "t": T}
    {"event": "connect", "from": IP, "sport": PORT, "port": 8009, "t": T}
    {"event": "mdns", "from": IP, "sport": PORT, "questions": [[NAME, QTYPE, QU], ...], "t": T}
and, from the Cast v2 receiver (port: the Cast port; a connection is (from, sport)):
    {"event": "tls", "from": IP, "sport": PORT, "port": 8009, "ok": BOOL, "error": TEXT or null, "t": T}
    {"event": "cast", "from": IP, "sport": PORT, "port": 8009, "namespace": NS, "source": ID,
     "destination": ID, "type": T (null for a binary payload, which also has "binary": LENGTH), "t": T}
    {"event": "cast-error", "from": IP, "sport": PORT, "port": 8009, "error": TEXT, "t": T}  (then closed)
    {"event": "launch", "from": IP, "app": APP_ID, "ok": BOOL, "t": T}
    {"event": "load", "from": IP, "url": URL, "content_type": TYPE, "t": T}
    {"event": "fetch", "url": URL, "ok": BOOL, "status": CODE or null, "bytes": N, "complete": BOOL (read to its end),
     "error": TEXT or null, "t": T}
    {"event": "media", "state": "PLAYING" | "LOAD_FAILED" | "PAUSED" | "IDLE", "session": ID or null,
     ("reason": "CANCELLED" | "FINISHED", for IDLE), "t": T}
    {"event": "hangup", "from": IP, "sport": PORT, "port": 8009, "reason": TEXT, "t": T}  (the device closed it)
    {"event": "error", "error": TEXT, "where": FUNCTION, "t": T}  (a bug in the device, which carries on)
A LOAD logs load, fetch, then media PLAYING or LOAD_FAILED (the senders see
BUFFERING meanwhile, and IDLE after a failure), and for VLC's stream read to
its end media IDLE (reason FINISHED); PLAY, PAUSE and STOP log media PLAYING,
PAUSED and IDLE (reason CANCELLED).

One selector thread (and a short-lived thread per media fetch), standard
library only, and cheap to start: a lab may run 150.

Run inside a device namespace:
    python3 cast_device.py --ip 192.168.77.101 --uuid HEX --name "Living Room TV" --log FILE \
        [--cert PEM --key PEM] [--audio]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import re
import selectors
import socket
import struct
import sys
import time

from responder import GROUP as MDNS_GROUP, PORT as MDNS_PORT, parse_questions

SSDP_GROUP, SSDP_PORT = "239.255.255.250", 1900
HTTP_PORT, CAST_PORT, HTTPS_PORT = 8008, 8009, 8443
DIAL_ST = "urn:dial-multiscreen-org:service:dial:1"
HOLD = 5.0  # seconds a Cast connection is kept open
MAX_REQUEST = 16384
CAST_BUILD = "1.56.500000"  # what a 2023 Chromecast reports


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())  # the lab runs it in the C locale


def dashed(uuid_hex: str) -> str:
    h = uuid_hex
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_msearch(data: bytes) -> dict[str, str] | None:
    """The headers of an M-SEARCH (upper-case names), or None for anything else."""
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:
        return None
    lines = re.split(r"\r?\n", text)
    if not lines or not re.fullmatch(r"M-SEARCH \* HTTP/1\.[01]", lines[0].strip(), re.I):
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().upper()] = value.strip()
    return headers


def clamp_mx(value: str | None) -> int:
    try:
        mx = int(value or "")
    except ValueError:
        mx = 1
    return min(max(mx, 1), 5)


def ssdp_reply(ip: str, uuid: str, st: str) -> bytes:
    lines = [
        "HTTP/1.1 200 OK",
        "CACHE-CONTROL: max-age=1800",
        f"DATE: {http_date()}",
        "EXT:",
        f"LOCATION: http://{ip}:{HTTP_PORT}/ssdp/device-desc.xml",
        'OPT: "http://schemas.upnp.org/upnp/1/0/"; ns=01',
        f"01-NLS: {uuid}",  # libupnp puts a boot id here; any unique token will do
        "SERVER: Linux/3.8.13+, UPnP/1.0, Portable SDK for UPnP devices/1.6.18",
        "X-User-Agent: redsonic",
        f"ST: {st}",
        f"USN: uuid:{uuid}::{DIAL_ST}",
        "BOOTID.UPNP.ORG: 1",
        "CONFIGID.UPNP.ORG: 1",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def device_description(ip: str, uuid: str, name: str, model: str) -> bytes:
    return f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <specVersion>
    <major>1</major>
    <minor>0</minor>
  </specVersion>
  <URLBase>http://{ip}:{HTTP_PORT}</URLBase>
  <device>
    <deviceType>urn:dial-multiscreen-org:device:dial:1</deviceType>
    <friendlyName>{escape(name)}</friendlyName>
    <manufacturer>Google Inc.</manufacturer>
    <modelName>{escape(model)}</modelName>
    <UDN>uuid:{uuid}</UDN>
    <iconList>
      <icon>
        <mimetype>image/png</mimetype>
        <width>98</width>
        <height>55</height>
        <depth>32</depth>
        <url>/setup/icon.png</url>
      </icon>
    </iconList>
    <serviceList>
      <service>
        <serviceType>urn:dial-multiscreen-org:service:dial:1</serviceType>
        <serviceId>urn:dial-multiscreen-org:serviceId:dial</serviceId>
        <controlURL>/ssdp/notfound</controlURL>
        <eventSubURL>/ssdp/notfound</eventSubURL>
        <SCPDURL>/ssdp/notfound</SCPDURL>
      </service>
    </serviceList>
  </device>
</root>
""".encode()


def eureka_info(args: argparse.Namespace, uuid: str, query: str) -> dict:
    """/setup/eureka_info as a Cast device serves it; ?params= picks the parts (as pychromecast asks)."""
    device_info = {
        "manufacturer": "Google Inc.", "model_name": args.model, "product_name": args.model.lower().replace(" ", "_"),
        "ssdp_udn": uuid, "cast_build_revision": CAST_BUILD, "factory_country_code": "US",
        "capabilities": {"display_supported": not args.audio, "audio_supported": True,
                         "multizone_supported": True, "cloudcast_supported": True},
    }
    full = {
        "name": args.name, "ssdp_udn": uuid, "version": 12, "build_version": CAST_BUILD.split(".")[2],
        "cast_build_revision": CAST_BUILD, "release_track": "stable-channel", "ip_address": args.ip,
        "connected": True, "setup_state": 60, "locale": "en-US", "device_info": device_info,
    }
    multizone = {"dynamic_groups": [], "groups": []}
    if args.group_port:
        multizone["groups"].append({"name": args.group_name, "uuid": dashed(args.group_uuid) if args.group_uuid else "",
                                    "elected_leader": "self", "cast_port": args.group_port})
    wanted = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "params":
            wanted += [v for v in value.split(",") if v]
    if not wanted:
        return full
    return {k: (multizone if k == "multizone" else full[k]) for k in wanted if k in full or k == "multizone"}


def http_response(status: str, body: bytes, headers: list[str]) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Device:
    def __init__(self, args: argparse.Namespace, log) -> None:
        self.args, self.log = args, log
        self.uuid = dashed(args.uuid)
        self.sel = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, object]] = []  # (monotonic deadline, seq, callback)
        self.seq = 0
        self.description = device_description(args.ip, self.uuid, args.name, args.model)

        ssdp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ssdp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ssdp.bind(("", SSDP_PORT))
        ssdp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        socket.inet_aton(SSDP_GROUP) + socket.inet_aton(args.ip))
        ssdp.setblocking(False)
        self.sel.register(ssdp, selectors.EVENT_READ, self.on_ssdp)

        mdns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        mdns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        mdns.bind((MDNS_GROUP, MDNS_PORT))
        mdns.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        socket.inet_aton(MDNS_GROUP) + socket.inet_aton(args.ip))
        mdns.setblocking(False)
        self.sel.register(mdns, selectors.EVENT_READ, self.on_mdns)

        self.listen(HTTP_PORT, self.on_http_accept)
        self.tls = self.receivers = None
        if args.cert:
            import ssl

            import cast_receiver  # the Cast v2 side (TLS, CastMessages, the receiver)
            self.cast_v2 = cast_receiver
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            # TLS 1.2: no TLS 1.3 session tickets after the handshake for a sender's reader thread to
            # take while its other thread writes (pychromecast shares one TLS socket between two).
            self.tls.maximum_version = ssl.TLSVersion.TLSv1_2
            self.tls.load_cert_chain(args.cert, args.key)
            self.receivers = {}
            self.listen(HTTPS_PORT, self.on_https_accept)
        for port in [CAST_PORT] + ([args.group_port] if args.group_port else []):
            if self.tls:
                self.receivers[port] = cast_receiver.Receiver(self, audio=args.audio or port != CAST_PORT)
            self.listen(port, lambda s, port=port: self.on_cast_accept(s, port))

    def emit(self, event: str, **fields) -> None:
        self.log.write(json.dumps({"event": event, **fields}) + "\n")

    def later(self, delay: float, callback) -> None:
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, callback))

    def listen(self, port: int, on_accept) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.args.ip, port))
        s.listen(64)
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, on_accept)

    def drop(self, conn: socket.socket) -> None:
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    # --- SSDP ---------------------------------------------------------------

    def on_ssdp(self, sock: socket.socket) -> None:
        try:
            data, (src, sport) = sock.recvfrom(4096)
        except (BlockingIOError, InterruptedError):
            return
        if src == self.args.ip:
            return
        headers = parse_msearch(data)
        if headers is None:
            return
        st, mx = headers.get("ST", ""), headers.get("MX")
        self.emit("msearch", **{"from": src}, sport=sport, st=st, mx=mx, t=time.time())
        if self.args.no_dial or st not in (DIAL_ST, "ssdp:all"):
            return
        # libupnp answers ssdp:all with one reply per type it has; the DIAL one is all a searcher uses.
        packet = ssdp_reply(self.args.ip, self.uuid, DIAL_ST)
        self.later(random.uniform(0, clamp_mx(mx)), lambda: self.reply(packet, src, sport))

    def reply(self, packet: bytes, dst: str, dport: int) -> None:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # new and unbound: a random source port
        try:
            out.sendto(packet, (dst, dport))
            self.emit("reply", to=dst, dport=dport, sport=out.getsockname()[1], t=time.time())
        except OSError as e:
            self.emit("reply-failed", to=dst, dport=dport, error=str(e), t=time.time())
        finally:
            out.close()

    # --- mDNS (listening only) -----------------------------------------------

    def on_mdns(self, sock: socket.socket) -> None:
        try:
            data, (src, sport) = sock.recvfrom(9000)
        except (BlockingIOError, InterruptedError):
            return
        if src == self.args.ip:
            return
        try:
            questions = parse_questions(data)
        except (ValueError, IndexError, struct.error):
            return
        if questions:
            self.emit("mdns", **{"from": src}, sport=sport, questions=[list(q) for q in questions], t=time.time())

    # --- HTTP ---------------------------------------------------------------

    def on_http_accept(self, listener: socket.socket) -> None:
        try:
            conn, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        state = {"buf": b"", "peer": peer}
        self.sel.register(conn, selectors.EVENT_READ, lambda c: self.on_http_data(c, state))
        self.later(HOLD, lambda: self.drop(conn) if conn.fileno() >= 0 else None)

    def on_http_data(self, conn: socket.socket, state: dict) -> None:
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.drop(conn)
            return
        state["buf"] += chunk
        if b"\r\n\r\n" not in state["buf"] and len(state["buf"]) < MAX_REQUEST:
            return
        response = self.http_answer(state["buf"], state["peer"][0], HTTP_PORT)
        try:
            conn.setblocking(True)
            conn.settimeout(2)
            conn.sendall(response)
        except OSError:
            pass
        self.drop(conn)

    def http_answer(self, request: bytes, peer: str, port: int) -> bytes:
        """The response to one request (its first line is all that counts), logged."""
        first = request.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        parts = first.split()
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("?", first)
        route, _, query = path.partition("?")
        if method in ("GET", "HEAD") and route == "/ssdp/device-desc.xml":
            status, body = "200 OK", self.description
            headers = ["Content-Type: application/xml", f"Application-URL: http://{self.args.ip}:{HTTP_PORT}/apps/"]
        elif method in ("GET", "HEAD") and route == "/setup/eureka_info":
            status, body = "200 OK", json.dumps(eureka_info(self.args, self.uuid, query)).encode()
            headers = ["Content-Type: application/json"]
        else:
            status, body, headers = "404 Not Found", b"", []
        self.emit("http", **{"from": peer}, method=method, path=path, status=int(status[:3]), port=port, t=time.time())
        return http_response(status, b"" if method == "HEAD" else body, headers)

    def on_https_accept(self, listener: socket.socket) -> None:
        try:
            conn, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        try:
            sock = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        except OSError:  # already reset by the peer
            conn.close()
            return
        self.cast_v2.TlsConnection(self, sock, peer, HTTPS_PORT, HttpsRequest(self), idle=HOLD)

    # --- the Cast port ------------------------------------------------------

    def on_cast_accept(self, listener: socket.socket, port: int) -> None:
        try:
            conn, (src, sport) = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self.emit("connect", **{"from": src}, sport=sport, port=port, t=time.time())
        if self.tls:
            try:
                sock = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            except OSError:  # already reset by the peer
                conn.close()
                return
            self.cast_v2.TlsConnection(self, sock, (src, sport), port, self.receivers[port].channel(),
                                       latency=self.cast_v2.REPLY_LATENCY)
            return
        self.sel.register(conn, selectors.EVENT_READ, self.on_cast_data)
        self.later(HOLD, lambda: self.drop(conn) if conn.fileno() >= 0 else None)

    def on_cast_data(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the peer closed
            self.drop(conn)

    # --- the loop -----------------------------------------------------------

    def run(self) -> None:
        self.emit("ready")
        while True:
            timeout = None
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            for key, _ in self.sel.select(timeout):
                self.safely(key.data, key.fileobj)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, callback = heapq.heappop(self.timers)
                self.safely(callback)

    def safely(self, callback, *args) -> None:
        """Run one callback; a bug in it is logged (an "error" event), not the end of the device."""
        try:
            callback(*args)
        except Exception as e:
            self.emit("error", error=f"{type(e).__name__}: {e}", where=getattr(callback, "__qualname__", repr(callback)),
                      t=time.time())


class HttpsRequest:
    """One request on the HTTPS port 8443 (a TlsConnection's protocol): answered, then closed."""

    def __init__(self, device: Device) -> None:
        self.device, self.buf = device, b""

    def opened(self, conn) -> None:
        pass

    def tls_failed(self, conn, error: str) -> None:
        pass

    def closed(self, conn) -> None:
        pass

    def received(self, conn, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf and len(self.buf) < MAX_REQUEST:
            return
        conn.close_when_flushed = True
        conn.send(self.device.http_answer(self.buf, conn.peer[0], HTTPS_PORT))
        self.buf = b""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ip", required=True)
    p.add_argument("--uuid", required=True, help="32 hex digits, as announced in TXT id=")
    p.add_argument("--name", required=True, help="friendly name")
    p.add_argument("--model", default="Chromecast")
    p.add_argument("--group-port", type=int, default=None, help="also accept Cast connections here (a group it hosts)")
    p.add_argument("--group-name", default="", help="the group's name (for eureka_info's multizone)")
    p.add_argument("--group-uuid", default="", help="the group's 32 hex digits (for eureka_info's multizone)")
    p.add_argument("--cert", help="PEM certificate: makes the Cast port a Cast v2 receiver and serves HTTPS on 8443")
    p.add_argument("--key", help="PEM private key of --cert")
    p.add_argument("--audio", action="store_true", help="an audio device: no display (eureka_info, receiver status)")
    p.add_argument("--no-dial", action="store_true", help="log M-SEARCHes but never answer them")
    p.add_argument("--log", required=True)
    args = p.parse_args(argv)
    if not re.fullmatch(r"[0-9a-f]{32}", args.uuid):
        p.error("--uuid: 32 lower-case hex digits")
    if bool(args.cert) != bool(args.key):
        p.error("--cert and --key go together")
    with open(args.log, "a", buffering=1) as log:
        Device(args, log).run()


if __name__ == "__main__":
    sys.exit(main())
