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
  anything else is a 404. Every request is logged.
- TCP on the Cast port 8009 (and the group's port, if it hosts one): every
  connection is logged, then held until the peer closes or 5 s pass. No TLS:
  only the connection is recorded.
- mDNS: only listens. A socket bound to 224.0.0.251:5353 (not the wildcard,
  so unicast to the device still goes to avahi alone) logs the questions
  other hosts multicast; avahi answers them.

Each event is one JSON line in the log:
    {"event": "ready"}
    {"event": "msearch", "from": IP, "sport": PORT, "st": ST, "mx": MX, "t": T}
    {"event": "reply", "to": IP, "dport": PORT, "sport": SRC_PORT, "t": T}
    {"event": "http", "from": IP, "method": M, "path": PATH, "status": CODE, "t": T}
    {"event": "connect", "from": IP, "sport": PORT, "port": 8009, "t": T}
    {"event": "mdns", "from": IP, "sport": PORT, "questions": [[NAME, QTYPE, QU], ...], "t": T}

One thread, one selector, standard library only (and cheap to start: a lab may run 150).

Run inside a device namespace:
    python3 cast_device.py --ip 192.168.77.101 --uuid HEX --name "Living Room TV" --log FILE
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
HTTP_PORT, CAST_PORT = 8008, 8009
DIAL_ST = "urn:dial-multiscreen-org:service:dial:1"
HOLD = 5.0  # seconds a Cast connection is kept open
MAX_REQUEST = 16384


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
        for port in [CAST_PORT] + ([args.group_port] if args.group_port else []):
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
        first = state["buf"].split(b"\r\n", 1)[0].decode("latin-1", "replace")
        parts = first.split()
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("?", first)
        if method in ("GET", "HEAD") and path.split("?", 1)[0] == "/ssdp/device-desc.xml":
            status, body = "200 OK", self.description
            headers = ["Content-Type: application/xml", f"Application-URL: http://{self.args.ip}:{HTTP_PORT}/apps/"]
        else:
            status, body, headers = "404 Not Found", b"", []
        self.emit("http", **{"from": state["peer"][0]}, method=method, path=path, status=int(status[:3]), t=time.time())
        try:
            conn.setblocking(True)
            conn.settimeout(2)
            conn.sendall(http_response(status, b"" if method == "HEAD" else body, headers))
        except OSError:
            pass
        self.drop(conn)

    # --- the Cast port ------------------------------------------------------

    def on_cast_accept(self, listener: socket.socket, port: int) -> None:
        try:
            conn, (src, sport) = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self.emit("connect", **{"from": src}, sport=sport, port=port, t=time.time())
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
                key.data(key.fileobj)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, callback = heapq.heappop(self.timers)
                callback()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ip", required=True)
    p.add_argument("--uuid", required=True, help="32 hex digits, as announced in TXT id=")
    p.add_argument("--name", required=True, help="friendly name")
    p.add_argument("--model", default="Chromecast")
    p.add_argument("--group-port", type=int, default=None, help="also accept Cast connections here (a group it hosts)")
    p.add_argument("--no-dial", action="store_true", help="log M-SEARCHes but never answer them")
    p.add_argument("--log", required=True)
    args = p.parse_args(argv)
    if not re.fullmatch(r"[0-9a-f]{32}", args.uuid):
        p.error("--uuid: 32 lower-case hex digits")
    with open(args.log, "a", buffering=1) as log:
        Device(args, log).run()


if __name__ == "__main__":
    sys.exit(main())
