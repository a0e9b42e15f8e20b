"""A hostile DIAL host for the lab: crafted M-SEARCH replies and device descriptions, one address per case.

Each case in the JSON file answers from an address of its own (the lab gives
the namespace one address per case) and serves its description over HTTP
on that address. A case is:

    {"ip": "192.168.77.150",            the address it answers from
     "location": "http://...",          the LOCATION it sends (may name anything)
     "extra": "X-Header: value\\r\\n",   more header text, any bytes (hex in "extra_hex")
     "replies": 1,                      replies per M-SEARCH, each from a new random port
     "status": 200, "headers": {...},   the HTTP answer to a request for the description
     "body": HEX | null,                its body, or:
     "huge": BYTES,                     a body of that many bytes, streamed
     "slow": SECONDS,                   one byte of body every SECONDS, forever
     "drip": SECONDS,                   the status line and headers, one byte every SECONDS, forever
     "flood": SECONDS,                  on each M-SEARCH, junk shaped like a reply to its source port for SECONDS
                                        (at most FLOOD_MAX of them), from FLOOD_PORTS source ports
     "flood_from": [ADDRESS, ...],      the flood's source addresses, round robin (default: "ip")
     "spoof": ADDRESS,                  the reply goes out with that source address (a raw socket)
     "silent": true}                    answers no M-SEARCH; only serves HTTP (a host castwall must not ask)

It also listens on every port named by `listen` (TCP) on every address, so
that a request castwall should never send is logged. Every request, to any
address and port, is logged as a JSON line with the address it was sent to:
a test reads the log to prove castwall asked nobody but the repliers.

Run inside a namespace:
    python3 hostile_dial.py --cases FILE --listen 8008,9999 --log FILE
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

GROUP, PORT = "239.255.255.250", 1900
FLOOD_MAX = 3_000_000  # datagrams one flood sends at the most
FLOOD_PORTS = 6


class Log:
    def __init__(self, path: str):
        self.file = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, **event) -> None:
        with self.lock:
            self.file.write(json.dumps({**event, "t": time.time()}) + "\n")


def reply_text(case: dict) -> bytes:
    extra = bytes.fromhex(case["extra_hex"]) if case.get("extra_hex") else case.get("extra", "").encode("latin-1")
    return (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\n"
            + b"LOCATION: " + case["location"].encode("latin-1") + b"\r\n"
            + b"SERVER: Linux/3.8.13+, UPnP/1.0, Portable SDK for UPnP devices/1.6.18\r\n"
            + b"ST: urn:dial-multiscreen-org:service:dial:1\r\n"
            + b"USN: uuid:00000000-0000-4000-8000-000000000000::urn:dial-multiscreen-org:service:dial:1\r\n"
            + extra + b"\r\n")


def search_socket(ip: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", PORT))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton(ip))
    return sock


def spoofed(source: str, destination: str, dport: int, payload: bytes) -> bytes:
    """An IPv4 UDP datagram with any source address; the kernel fills in the IP checksum and id."""
    udp = struct.pack("!HHHH", 40000 + os.getpid() % 20000, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(source), socket.inet_aton(destination))
    return header + udp


def flood(case: dict, host: str, port: int, log: Log) -> None:
    """Junk to castwall's search port, as fast as one thread sends, bounded in time and count."""
    outs = []
    for n in range(FLOOD_PORTS):
        sources = case.get("flood_from") or [case["ip"]]
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.bind((sources[n % len(sources)], 0))
        outs.append(out)
    log.write(event="flood-start", to=host, port=port)
    end, sent = time.monotonic() + case["flood"], 0
    while sent < FLOOD_MAX and (sent % 256 or time.monotonic() < end):
        try:
            outs[sent % FLOOD_PORTS].sendto(b"HTTP/1.1 200 junk-%d" % sent, (host, port))  # passes castwall's filter
        except OSError:  # a full queue or an ICMP error from a closed port: keep flooding
            pass
        sent += 1
    for out in outs:
        out.close()
    log.write(event="flood-end", to=host, port=port, sent=sent)


def answer_searches(sock: socket.socket, cases: list[dict], log: Log) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL: for "spoof"
    flooded = set()  # one flood per search port, however many copies of the M-SEARCH come from it
    while True:
        data, (host, port) = sock.recvfrom(4096)
        if not data.startswith(b"M-SEARCH") or host in {c["ip"] for c in cases}:
            continue
        log.write(event="msearch", **{"from": host, "sport": port})
        for case in cases:
            if case.get("silent"):
                continue
            if "flood" in case:
                if (host, port) not in flooded:
                    flooded.add((host, port))
                    threading.Thread(target=flood, args=(case, host, port, log), daemon=True).start()
                continue
            text = reply_text(case)
            for _ in range(case.get("replies", 1)):
                if "spoof" in case:
                    raw.sendto(spoofed(case["spoof"], host, port, text), (host, 0))
                    continue
                out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                out.bind((case["ip"], 0))  # a new random port each time, as a flood would
                out.sendto(text, (host, port))
                out.close()
        log.write(event="replied", to=host)


def serve(conn: socket.socket, peer: tuple, by_ip: dict[str, dict], log: Log) -> None:
    local, lport = conn.getsockname()[:2]
    conn.settimeout(5)
    try:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 8192:
            chunk = conn.recv(1024)
            if not chunk:
                break
            request += chunk
        line = request.split(b"\r\n", 1)[0].decode("latin-1")
        log.write(event="http", to=local, port=lport, **{"from": peer[0]}, request=line)
        case = by_ip.get(local)
        if case is None or lport != 8008:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        headers = "".join(f"{k}: {v}\r\n" for k, v in case.get("headers", {}).items())
        head = f"HTTP/1.1 {case.get('status', 200)} X\r\n{headers}".encode("latin-1")
        if "huge" in case:
            conn.sendall(head + b"\r\n")
            block = b"<x>" + b"A" * 65530 + b"</x>"
            sent = 0
            while sent < case["huge"]:
                conn.sendall(block)
                sent += len(block)
            log.write(event="sent", to=local, bytes=sent)
        elif "drip" in case:
            for byte in head + b"Content-Length: 400\r\n" * 1000:
                conn.sendall(bytes([byte]))
                time.sleep(case["drip"])
        elif "slow" in case:
            conn.sendall(head + b"\r\n<?xml version=\"1.0\"?>")
            while True:
                time.sleep(case["slow"])
                conn.sendall(b" ")
        else:
            body = bytes.fromhex(case["body"]) if case.get("body") else b""
            conn.sendall(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    except OSError as exc:
        log.write(event="http-closed", to=local, error=str(exc))
    finally:
        conn.close()


def tcp_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", port))
    sock.listen(64)
    return sock


def listen(sock: socket.socket, by_ip: dict[str, dict], log: Log) -> None:
    while True:
        conn, peer = sock.accept()
        threading.Thread(target=serve, args=(conn, peer, by_ip, log), daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", required=True)
    p.add_argument("--listen", default="8008")
    p.add_argument("--log", required=True)
    args = p.parse_args(argv)
    with open(args.cases) as f:
        cases = json.load(f)
    log = Log(args.log)
    by_ip = {c["ip"]: c for c in cases}
    # Every socket is bound before "ready" is logged: the lab waits for that line.
    for port in {int(x) for x in args.listen.split(",")}:
        threading.Thread(target=listen, args=(tcp_socket(port), by_ip, log), daemon=True).start()
    if not all(c.get("silent") for c in cases):
        speaking = next(c for c in cases if not c.get("silent"))
        threading.Thread(target=answer_searches, args=(search_socket(speaking["ip"]), cases, log), daemon=True).start()
    log.write(event="ready", cases=len(cases))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
