"""Raw ARP on one interface: who answers for an address (needs root, or CAP_NET_RAW).

A packet socket and the standard library do the job in a few milliseconds, so
castwall needs no packet library at run time (scapy's import alone takes
longer than the whole exchange, and its Debian package recommends ~480 MiB).
"""

from __future__ import annotations

import fcntl
import ipaddress
import select
import socket
import struct
import time
from typing import Sequence

from castwall.model import Address, canonical_mac

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST, ARP_REPLY = 1, 2
PACKET_OUTGOING = 4
SIOCGIFADDR = 0x8915
BROADCAST = b"\xff" * 6
_HEADER = struct.Struct("!6s6sH")  # Ethernet: destination, source, type
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # ARP for IPv4 over Ethernet


def request(src_mac: bytes, src_ip: ipaddress.IPv4Address, target: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request: who has target? tell src_ip."""
    return _HEADER.pack(BROADCAST, src_mac, ETH_P_ARP) + _ARP.pack(
        1, ETH_P_IP, 6, 4, ARP_REQUEST, src_mac, src_ip.packed, bytes(6), target.packed)


def parse_reply(frame: bytes, to_mac: bytes | None = None, to_ip: ipaddress.IPv4Address | None = None,
                ) -> tuple[ipaddress.IPv4Address, str] | None:
    """The (address, MAC) an Ethernet frame answers with, or None for anything but a plausible ARP reply.

    The MAC in the ARP body must be the frame's Ethernet source: a host that
    sends a reply naming another host's MAC from its own card is ignored (it
    would have to forge its source address too). With to_mac and to_ip, the
    reply must also be addressed to them, as an answer to our request is.
    """
    if len(frame) < _HEADER.size + _ARP.size:
        return None
    dst, src, ethertype = _HEADER.unpack_from(frame)
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, _HEADER.size)
    if ethertype != ETH_P_ARP or (htype, ptype, hlen, plen, op) != (1, ETH_P_IP, 6, 4, ARP_REPLY):
        return None
    if sha != src:
        return None
    if to_mac is not None and (tha != to_mac or dst != to_mac):
        return None
    if to_ip is not None and tpa != to_ip.packed:
        return None
    try:
        return ipaddress.IPv4Address(spa), canonical_mac(sha.hex(":"))
    except ValueError:  # the all-zero MAC
        return None


def _own_ipv4(sock: socket.socket, iface: str) -> ipaddress.IPv4Address:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        answer = fcntl.ioctl(udp.fileno(), SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
    return ipaddress.IPv4Address(answer[20:24])


def packet_arp(ips: Sequence[Address], iface: str, timeout: float = 0.5) -> dict[Address, set[str]]:
    """Ask for each IPv4 address by ARP on iface; every MAC that answered within timeout, per address.

    Raises OSError when the socket cannot be opened (no root) or iface has no IPv4 address.
    """
    wanted = {ip for ip in ips if ip.version == 4}
    found: dict[Address, set[str]] = {}
    if not wanted:
        return found
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((iface, ETH_P_ARP))
        src_mac = sock.getsockname()[4]
        src_ip = _own_ipv4(sock, iface)
        for ip in sorted(wanted, key=int):
            sock.send(request(src_mac, src_ip, ip))  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            frame, address = sock.recvfrom(2048)
            if address[2] == PACKET_OUTGOING:
                continue
            reply = parse_reply(frame, src_mac, src_ip)
            if reply and reply[0] in wanted:
                found.setdefault(reply[0], set()).add(reply[1])
    return found
