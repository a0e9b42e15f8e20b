"""Ask one host's mDNS responder directly, by legacy unicast, until it answers with what is wanted.

Run in a lab namespace that has no firewall (the LAN's gateway): from a
random port it sends a query straight to HOST:5353 (RFC 6762 section 6.7), so
the answer comes back by unicast to this socket alone and no other host on
the LAN hears it (their caches and mDNS rate limits stay as they were). A
responder answers only with records it has finished probing, which is how
the lab knows a device's new address is announced.

It asks for _googlecast._tcp.local. PTR (and NAME A with --a-name) every
--every seconds until a response holds an A record for --want-a and a TXT
record with --want-txt (each optional), or --timeout passes. Prints one JSON
object: {"ok": BOOL, "records": [...]} with every record of the responses
from HOST (answer, authority and additional sections), each
{"name", "type": "PTR"|"SRV"|"TXT"|"A"|number, "data"}: a PTR's target, an
SRV's [port, target], a TXT's strings, an A's address. Exits 0 if satisfied.

    python3 mdns_ask.py --host 192.168.77.180 --a-name HEX.local. --want-a 192.168.77.180
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

from responder import A, PORT, PTR, SERVICE, SRV, TXT, decode_name, encode_name

NAMES = {PTR: "PTR", SRV: "SRV", TXT: "TXT", A: "A"}
QUERY_ID = 0x4C42


def query(questions: list[tuple[str, int]]) -> bytes:
    body = b"".join(encode_name(name) + struct.pack("!2H", qtype, 1) for name, qtype in questions)
    return struct.pack("!6H", QUERY_ID, 0, len(questions), 0, 0, 0) + body


def parse(data: bytes) -> list[dict]:
    _, flags, qd, an, ns, ar = struct.unpack_from("!6H", data)
    if not flags & 0x8000:
        return []
    offset = 12
    for _ in range(qd):
        _, offset = decode_name(data, offset)
        offset += 4
    records = []
    for _ in range(an + ns + ar):
        name, offset = decode_name(data, offset)
        rtype, _, _, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        rdata, start = data[offset:offset + length], offset
        offset += length
        if rtype == PTR:
            value = decode_name(data, start)[0]
        elif rtype == SRV:
            value = [struct.unpack_from("!H", rdata, 4)[0], decode_name(data, start + 6)[0]]
        elif rtype == TXT:
            value, i = [], 0
            while i < len(rdata):
                value.append(rdata[i + 1:i + 1 + rdata[i]].decode("utf-8", "replace"))
                i += 1 + rdata[i]
        elif rtype == A and length == 4:
            value = socket.inet_ntoa(rdata)
        else:
            value = rdata.hex()
        records.append({"name": name, "type": NAMES.get(rtype, rtype), "data": value})
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True, help="the responder's address")
    p.add_argument("--a-name", help="also ask for this host name's A record")
    p.add_argument("--want-a", help="wait for an A record with this address")
    p.add_argument("--want-txt", help="wait for a TXT record holding this string (e.g. id=HEX)")
    p.add_argument("--every", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args(argv)

    questions = [(SERVICE, PTR)] + ([(args.a_name, A)] if args.a_name else [])
    packet = query(questions)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    seen: list[dict] = []

    def satisfied() -> bool:
        a_ok = args.want_a is None or any(r["type"] == "A" and r["data"] == args.want_a for r in seen)
        txt_ok = args.want_txt is None or any(r["type"] == "TXT" and args.want_txt in r["data"] for r in seen)
        return a_ok and txt_ok

    end = time.monotonic() + args.timeout
    while not satisfied() and (now := time.monotonic()) < end:
        sock.sendto(packet, (args.host, PORT))
        ask_again = min(end, now + args.every)
        while (left := ask_again - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, (src, _) = sock.recvfrom(9000)
            except socket.timeout:
                break
            if src != args.host:
                continue
            try:
                new = parse(data)
            except (ValueError, IndexError, struct.error):
                continue
            seen.extend(r for r in new if r not in seen)
            if satisfied():
                break
    ok = satisfied()
    print(json.dumps({"ok": ok, "records": seen}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
