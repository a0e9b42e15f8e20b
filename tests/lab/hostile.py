"""A hostile mDNS responder for the lab: answers every Cast query with crafted announcements.

Each case from the JSON file goes out in a packet of its own (so a library
that drops a whole malformed packet drops only that case). A case is:

    {"instance": HEX, "target": "name.local.", "port": 8009 | null,
     "txt": HEX | null, "addresses": ["192.0.2.1", ...]}

instance and txt are hex so they can hold any bytes (invalid UTF-8, control
characters); a null port leaves out the SRV record, a null txt the TXT record.

Run inside a namespace:
    python3 hostile.py --ip 192.168.77.66 --cases FILE --log FILE
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys

from responder import A, ANY, GROUP, PORT, PTR, SERVICE, SRV, TXT, encode_name, mdns_socket, next_query


def encode_raw_label(instance: bytes) -> bytes:
    """An instance label of arbitrary bytes followed by the service name."""
    return bytes([len(instance)]) + instance + encode_name(SERVICE)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 120, flush: bool = False) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1 | (0x8000 if flush else 0), ttl, len(rdata)) + rdata


def packet(case: dict) -> bytes:
    owner = encode_raw_label(bytes.fromhex(case["instance"]))
    answers = [rr(encode_name(SERVICE), PTR, owner, ttl=4500)]
    extra = []
    if case.get("port") is not None:
        extra.append(rr(owner, SRV, struct.pack("!HHH", 0, 0, case["port"]) + encode_name(case["target"]), flush=True))
    if case.get("txt") is not None:
        extra.append(rr(owner, TXT, bytes.fromhex(case["txt"]), ttl=4500, flush=True))
    for address in case.get("addresses", []):
        extra.append(rr(encode_name(case["target"]), A, socket.inet_aton(address), flush=False))
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, len(answers), 0, len(extra))
    return header + b"".join(answers) + b"".join(extra)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ip", required=True)
    p.add_argument("--cases", required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args(argv)
    with open(args.cases) as f:
        packets = [packet(c) for c in json.load(f)]

    sock = mdns_socket(args.ip)
    with open(args.log, "a", buffering=1) as log:
        log.write(json.dumps({"event": "ready", "cases": len(packets)}) + "\n")
        while True:
            src, _, questions = next_query(sock, args.ip)
            if any(name.lower() == SERVICE.lower() and qtype in (PTR, ANY) for name, qtype, _ in questions):
                # Answer by multicast whatever was asked, as a hostile host would.
                for pkt in packets:
                    sock.sendto(pkt, (GROUP, PORT))
                log.write(json.dumps({"event": "answered", "from": src}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
