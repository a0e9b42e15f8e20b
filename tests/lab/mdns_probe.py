"""The lab's mDNS probe: which hosts' answers reach this host by multicast, which by unicast.

Runs in the workstation. Listens on 5353 in the mDNS group, as every full
mDNS querier does; on "query" from stdin it asks for _googlecast._tcp.local.
by multicast (QM, from port 5353) once a second, and once by legacy unicast
(RFC 6762 section 6.7: from a random port, straight to each host given with
--unicast), which a responder answers by unicast to that port. Every
response is one JSON line on stdout:

    {"event": "listening"}
    {"event": "answer", "via": "multicast" | "unicast", "from": IP, "t": T}

It ends on "stop" or end of input, or after --timeout seconds.

    python3 mdns_probe.py --ip 192.168.77.10 --unicast 192.168.77.101 --timeout 10

With --watch it asks nothing and reports every mDNS datagram it receives,
this host's own queries too (they come back by multicast loopback), in the
order they arrived, t on the monotonic clock that every namespace shares:

    {"event": "packet", "from": IP, "sport": PORT, "response": BOOL, "instances": [PTR targets of SERVICE], "t": T}

and on "sync" from stdin it reports every datagram already waiting in its
socket, then {"event": "synced"}: what reached the socket before the
command is reported before that line.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import struct
import sys
import time

from responder import GROUP, PORT, PTR, SERVICE, decode_name, encode_name

QUERY_ID = 0x4C41  # legacy unicast queries carry an id; multicast ones 0


def query(qid: int) -> bytes:
    return struct.pack("!6H", qid, 0, 1, 0, 0, 0) + encode_name(SERVICE) + struct.pack("!2H", PTR, 1)


def is_response(data: bytes) -> bool:
    return len(data) >= 12 and bool(struct.unpack_from("!H", data, 2)[0] & 0x8000)


def instances(data: bytes) -> list[str]:
    """The service instances that a response's PTR records for SERVICE point to, from any section."""
    found: list[str] = []
    try:
        qdcount, *counts = struct.unpack_from("!4H", data, 4)
        offset = 12
        for _ in range(qdcount):
            offset = decode_name(data, offset)[1] + 4
        for _ in range(sum(counts)):
            name, offset = decode_name(data, offset)
            rtype, _, _, length = struct.unpack_from("!HHIH", data, offset)
            offset += 10
            if rtype == PTR and name.lower() == SERVICE.lower():
                found.append(decode_name(data, offset)[0])
            offset += length
    except (IndexError, ValueError, struct.error):  # a truncated or odd datagram: what it held so far
        pass
    return found


def watch(ip: str, timeout: float) -> None:
    """--watch: ask nothing, report every mDNS datagram (see the module's doc)."""
    mc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    mc.bind(("", PORT))
    mc.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton(ip))
    sel = selectors.DefaultSelector()
    sel.register(mc, selectors.EVENT_READ, "mdns")
    sel.register(sys.stdin, selectors.EVENT_READ, "control")
    print(json.dumps({"event": "listening"}), flush=True)
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            if key.data == "control":
                chunk = os.read(sys.stdin.fileno(), 4096)
                words = chunk.decode().split()
                if not chunk or "stop" in words:
                    return
                if "sync" in words:
                    while _report(mc, block=False):
                        pass
                    print(json.dumps({"event": "synced"}), flush=True)
                continue
            _report(mc, block=True)


def _report(mc: socket.socket, block: bool) -> bool:
    """Read one datagram and report it (if it can be mDNS); False if none was waiting (block=False)."""
    try:
        data, (src, sport) = mc.recvfrom(9000, 0 if block else socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    if len(data) >= 12:
        response = is_response(data)
        print(json.dumps({"event": "packet", "from": src, "sport": sport, "response": response,
                          "instances": instances(data) if response else [], "t": time.monotonic()}), flush=True)
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ip", required=True, help="this host's address on the LAN")
    p.add_argument("--unicast", action="append", default=[], help="also ask this host by legacy unicast")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--watch", action="store_true", help="ask nothing; report every mDNS datagram, queries too")
    args = p.parse_args(argv)
    if args.watch:
        return watch(args.ip, args.timeout)

    mc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    mc.bind(("", PORT))
    mc.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton(args.ip))
    mc.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.ip))
    mc.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    uc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uc.bind((args.ip, 0))

    sel = selectors.DefaultSelector()
    sel.register(mc, selectors.EVENT_READ, "multicast")
    sel.register(uc, selectors.EVENT_READ, "unicast")
    sel.register(sys.stdin, selectors.EVENT_READ, "control")

    def say(**fields) -> None:
        print(json.dumps(fields), flush=True)

    say(event="listening")
    end = time.monotonic() + args.timeout
    next_query = None  # monotonic time of the next multicast question, once asked to query
    while (now := time.monotonic()) < end:
        if next_query is not None and now >= next_query:
            mc.sendto(query(0), (GROUP, PORT))
            next_query = now + 1.0  # a responder multicasts a record at most once a second
        wait = end - now if next_query is None else min(end, next_query) - now
        for key, _ in sel.select(max(0.0, wait)):
            if key.data == "control":
                chunk = os.read(sys.stdin.fileno(), 4096)
                words = chunk.decode().split()
                if "query" in words and next_query is None:
                    next_query = time.monotonic()
                    for host in args.unicast:
                        uc.sendto(query(QUERY_ID), (host, PORT))
                if not chunk or "stop" in words:
                    return
                continue
            data, (src, _) = key.fileobj.recvfrom(9000)
            if src != args.ip and is_response(data):
                say(event="answer", via=key.data, **{"from": src}, t=time.time())


if __name__ == "__main__":
    sys.exit(main())
