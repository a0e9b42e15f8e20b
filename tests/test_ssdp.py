"""The DIAL search's wire-level pieces (castwall.system.ssdp) on crafted packets; the lab runs the rest."""

import ipaddress
import struct

from castwall.system.ssdp import MSEARCH, parse_udp, udp_port_filter


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, *, ihl: int = 5, fragment: int = 0) -> bytes:
    options = b"\x01" * (4 * (ihl - 5))
    total = 4 * ihl + 8 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, fragment, 64, 17, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return header + options + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def test_a_reply_off_the_wire_is_read_with_its_addresses_and_ports():
    got = parse_udp(ipv4_udp("192.168.77.101", "192.168.77.10", 51234, 40000, b"HTTP/1.1 200 OK\r\n\r\n"))
    assert got == (ipaddress.IPv4Address("192.168.77.101"), ipaddress.IPv4Address("192.168.77.10"), 51234, 40000,
                   b"HTTP/1.1 200 OK\r\n\r\n")
    with_options = parse_udp(ipv4_udp("192.168.77.101", "192.168.77.10", 1, 2, b"x", ihl=6))
    assert with_options[4] == b"x"


def test_anything_else_off_the_wire_is_not_a_reply():
    tcp = bytearray(ipv4_udp("192.168.77.101", "192.168.77.10", 1, 2, b"x"))
    tcp[9] = 6
    assert parse_udp(bytes(tcp)) is None
    assert parse_udp(b"\x60" + bytes(47)) is None  # IPv6
    assert parse_udp(b"\x45" + bytes(10)) is None  # cut short


def test_the_kernel_filter_keeps_only_udp_to_the_search_port():
    program = udp_port_filter(40000)
    ops = [struct.unpack("HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    assert len(ops) == 9 and ops[6] == (0x15, 0, 1, 40000) and ops[-2][0] == ops[-1][0] == 0x06


def test_the_m_search_is_chromes_dial_search():
    lines = MSEARCH.decode().split("\r\n")
    assert lines[0] == "M-SEARCH * HTTP/1.1" and "MX: 1" in lines and "ST: urn:dial-multiscreen-org:service:dial:1" in lines
    assert MSEARCH.endswith(b"\r\n\r\n")
