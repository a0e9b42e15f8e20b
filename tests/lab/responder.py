"""A small mDNS responder for the lab that follows RFC 6762 strictly.

It answers a question for _googlecast._tcp.local. the way a real Cast device
does: a QU question (unicast-response bit set) by unicast to the asker, a QM
question by multicast. avahi multicasts even QU answers when it has not
multicast recently, which would hide the firewall problem castwall works
around; this responder does not. Each query it sees is logged as a JSON line.

Run inside a device namespace:
    python3 responder.py --ip 192.168.77.120 --uuid HEX --name "Den TV" --log FILE
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

GROUP = "224.0.0.251"
PORT = 5353
SERVICE = "_googlecast._tcp.local."
PTR, TXT, SRV, A, ANY = 12, 16, 33, 1, 255


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def decode_name(data: bytes, offset: int) -> tuple[str, int]:
    labels, jumped, end = [], False, offset
    for _ in range(128):
        length = data[offset]
        if length & 0xC0 == 0xC0:
            pointer = struct.unpack_from("!H", data, offset)[0] & 0x3FFF
            if not jumped:
                end = offset + 2
            jumped, offset = True, pointer
            continue
        if length == 0:
            if not jumped:
                end = offset + 1
            return ".".join(labels) + ".", end
        labels.append(data[offset + 1 : offset + 1 + length].decode("utf-8", "replace"))
        offset += 1 + length
    raise ValueError("name too long")


def parse_questions(data: bytes) -> list[tuple[str, int, bool]]:
    flags, qdcount = struct.unpack_from("!2xHH", data)
    if flags & 0x8000:
        return []  # a response, not a query
    questions, offset = [], 12
    for _ in range(qdcount):
        name, offset = decode_name(data, offset)
        qtype, qclass = struct.unpack_from("!HH", data, offset)
        offset += 4
        questions.append((name, qtype, bool(qclass & 0x8000)))
    return questions


def record(name: str, rtype: int, rdata: bytes, ttl: int = 120, flush: bool = False) -> bytes:
    klass = 1 | (0x8000 if flush else 0)
    return encode_name(name) + struct.pack("!HHIH", rtype, klass, ttl, len(rdata)) + rdata


def answer(instance: str, target: str, ip: str, port: int, txt: list[bytes]) -> bytes:
    full = f"{instance}.{SERVICE}"
    answers = [record(SERVICE, PTR, encode_name(full), ttl=4500)]
    extra = [
        record(full, SRV, struct.pack("!HHH", 0, 0, port) + encode_name(target), flush=True),
        record(full, TXT, b"".join(bytes([len(t)]) + t for t in txt), ttl=4500, flush=True),
        record(target, A, socket.inet_aton(ip), flush=True),
    ]
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, len(answers), 0, len(extra))
    return header + b"".join(answers) + b"".join(extra)


def mdns_socket(ip: str) -> socket.socket:
    """A socket on port 5353 in the mDNS group, sending from ip, not hearing itself."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", PORT))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton(ip))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    return sock


def next_query(sock: socket.socket, own_ip: str) -> tuple[str, int, list[tuple[str, int, bool]]]:
    """Wait for the next well-formed query from another host: (source, port, questions)."""
    while True:
        data, (src, sport) = sock.recvfrom(9000)
        if src == own_ip:
            continue
        try:
            return src, sport, parse_questions(data)
        except (ValueError, IndexError, struct.error):
            continue


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ip", required=True)
    p.add_argument("--uuid", required=True, help="32 hex digits")
    p.add_argument("--name", required=True, help="friendly name (fn)")
    p.add_argument("--model", default="Chromecast")
    p.add_argument("--port", type=int, default=8009)
    p.add_argument("--log", required=True)
    args = p.parse_args(argv)

    instance = f"Chromecast-{args.uuid}"
    target = f"{args.uuid}.local."
    txt = [f"id={args.uuid}".encode(), f"md={args.model}".encode(), f"fn={args.name}".encode(), b"ve=05", b"ca=201221"]
    packet = answer(instance, target, args.ip, args.port, txt)

    sock = mdns_socket(args.ip)
    with open(args.log, "a", buffering=1) as log:
        log.write(json.dumps({"event": "ready"}) + "\n")
        while True:
            src, sport, questions = next_query(sock, args.ip)
            for name, qtype, qu in questions:
                if name.lower() != SERVICE.lower() or qtype not in (PTR, ANY):
                    continue
                log.write(json.dumps({"event": "query", "from": src, "qu": qu, "t": time.time()}) + "\n")
                if qu:
                    sock.sendto(packet, (src, sport))
                else:
                    time.sleep(0.02)
                    sock.sendto(packet, (GROUP, PORT))
                break


if __name__ == "__main__":
    sys.exit(main())
