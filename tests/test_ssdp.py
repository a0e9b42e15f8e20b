"""The DIAL search's wire-level pieces (castwall.system.ssdp) on crafted packets; the lab runs the rest."""

import ipaddress
import os
import socket
import struct
import threading
import time

from castwall.system import ssdp
from castwall.system.ssdp import MSEARCH, DialSearch, parse_udp, reply_filter
from tests.conftest import need


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


def ops_of(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]


def test_the_kernel_filter_keeps_only_udp_to_the_search_port_that_begins_like_a_reply():
    ops = ops_of(reply_filter(40000))
    assert ops[6] == (0x15, 0, ops[6][2], 40000) and (0x15, 0, ops[8][2], 0x48545450) == ops[8]
    assert ops[-1] == (0x06, 0, 0, 0x40000)
    # Every jump lands inside the program, and every test that fails lands on a drop.
    for i, (code, jt, jf, _) in enumerate(ops):
        if code in (0x15, 0x45):
            assert i + 1 + max(jt, jf) < len(ops)
            miss = i + 1 + (jt if code == 0x45 else jf)
            assert ops[miss][0] == 0x06 and ops[miss][3] == 0 or miss == i + 1, (i, ops)


def test_the_kernel_filter_drops_every_source_already_heard_up_to_the_repliers_castwall_keeps():
    heard = [ipaddress.IPv4Address(f"10.0.{n // 256}.{n % 256}") for n in range(300)]
    for port in (40000, None):
        ops = ops_of(reply_filter(port, heard))
        assert len(ops) < 4096  # the kernel's limit
        checks = [i for i, op in enumerate(ops) if op[0] == 0x15 and op[3] in {int(ip) for ip in heard}]
        assert len(checks) == ssdp.MAX_SOURCES
        for i in checks:
            assert 0 <= ops[i][1] <= 255 and ops[i + 1 + ops[i][1]] == (0x06, 0, 0, 0)  # a heard source: drop
            assert ops[i][2] == 0
        # Past each group's drop, the program goes on: an unconditional jump over it.
        for i, op in enumerate(ops):
            if op == (0x06, 0, 0, 0) and i > 12:
                assert ops[i - 1] == (0x05, 0, 0, 1)


def test_a_replier_heard_once_is_dropped_by_the_kernel_afterwards_and_others_still_come_through():
    search = DialSearch([("lo", LOOPBACK)])
    search.start()
    port = search._ifaces[0].port
    loud = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    loud.bind(("127.0.0.3", 0))
    loud.sendto(b"HTTP/1.1 200 first", ("127.0.0.1", port))
    deadline = time.monotonic() + 10
    while not search.repliers() and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(500):
        loud.sendto(b"HTTP/1.1 200 again", ("127.0.0.1", port))
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.4", 0))
    quiet.sendto(b"HTTP/1.1 200 late", ("127.0.0.1", port))
    while len(search.repliers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    replies = search.finish(0)
    loud.close()
    quiet.close()
    assert [str(r.source) for r in replies] == ["127.0.0.3", "127.0.0.4"]
    assert search.datagrams == 2, "the kernel dropped the loud replier's 500 more"


def test_junk_to_the_search_port_never_reaches_castwall_s_socket():
    """The filters run in the kernel: a datagram that is no SSDP response is not even queued."""
    search = DialSearch([("lo", LOOPBACK)])
    search.start()
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(50):
        out.sendto(b"\x00junk", ("127.0.0.1", search._ifaces[0].port))
    out.sendto(b"HTTP/1.1 404 Not Found\r\n\r\n", ("127.0.0.1", search._ifaces[0].port))
    out.close()
    deadline = time.monotonic() + 10
    while not search.repliers() and time.monotonic() < deadline:
        time.sleep(0.01)
    replies = search.finish(0)
    assert search.datagrams == 1 and [r.problem for r in replies] == ["not an SSDP response: 'HTTP/1.1 404 Not Found'"]


def test_the_m_search_is_chromes_dial_search():
    lines = MSEARCH.decode().split("\r\n")
    assert lines[0] == "M-SEARCH * HTTP/1.1" and "MX: 1" in lines and "ST: urn:dial-multiscreen-org:service:dial:1" in lines
    assert MSEARCH.endswith(b"\r\n\r\n")


# --- a hostile LAN, on loopback: servers and floods bounded in count and time -----------------------

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
def test_a_flood_to_the_search_port_cannot_hold_the_reader_past_finish():
    """Junk shaped like a reply (which the kernel filter lets through) sent to the search port as fast as a
    thread can: finish() returns while the flood goes on."""
    search = DialSearch([("lo", LOOPBACK)])
    search.start()
    port = search._ifaces[0].port
    flooding, stop = threading.Event(), threading.Event()

    # From more sources than castwall keeps (and so filters): the reader itself has to keep up.
    outs = []
    for n in range(ssdp.MAX_SOURCES + 60):
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.bind((f"127.0.{1 + n // 250}.{1 + n % 250}", 0))
        outs.append(out)

    def flood():
        for n in range(2_000_000):  # bounded: about 20 s at most here
            if stop.is_set():
                break
            try:
                outs[n % len(outs)].sendto(b"HTTP/1.1 junk %d" % n, ("127.0.0.1", port))
            except OSError:
                pass
            if n == 5000:
                flooding.set()
        for out in outs:
            out.close()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        assert flooding.wait(10)
        # The flood is under way once castwall's table is full and more sources keep coming.
        deadline = time.monotonic() + 20
        while search.dropped_sources == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert search.dropped_sources > 0
        replies = search.finish(0)
        assert sender.is_alive(), "the flood ended first: this run proves nothing"
        assert search._thread is not None and not search._thread.is_alive()
    finally:
        stop.set()
        sender.join(30)
    # Every flooding source is a replier refused with a reason; nothing else came of the flood.
    assert len(replies) == ssdp.MAX_SOURCES and search.dropped_sources > 0 and search.datagrams > len(replies)
    assert {r.interface for r in replies} == {"lo"} and all(r.problem.startswith("not an SSDP response") for r in replies)


def test_the_reader_stops_by_itself_at_its_time_budget():
    """Even if finish() never came, a flood would not keep the reader going past until."""
    clock = iter(range(10_000)).__next__  # a second a call: the budget is spent at once
    search = DialSearch([("lo", LOOPBACK)], until=5, clock=lambda: float(clock()))
    search.start()
    search._thread.join(10)
    assert not search._thread.is_alive()
    search.finish(0)


def test_a_forged_first_reply_neither_stands_for_its_address_nor_blocks_the_real_one():
    """A host on another LAN answers first with a device's address: that reply is kept apart (and not filtered by
    the kernel), and the device's own reply, coming in where it belongs, is the one castwall reads."""
    asked = []

    def misplaced(ip, interface):
        asked.append((str(ip), interface))
        return "forged" if len(asked) == 1 else None

    search = DialSearch([("lo", LOOPBACK)], misplaced=misplaced, may_fetch=lambda ip: "not in a unit test")
    search.start()
    port = search._ifaces[0].port
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.sendto(b"HTTP/1.1 200 forged", ("127.0.0.1", port))
    deadline = time.monotonic() + 10
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    out.sendto(b"HTTP/1.1 200 genuine", ("127.0.0.1", port))
    while not search.repliers() and time.monotonic() < deadline:
        time.sleep(0.01)
    out.close()
    replies = search.finish(0)
    assert asked == [("127.0.0.1", "lo"), ("127.0.0.1", "lo")]
    assert [(str(r.source), r.interface, r.text) for r in replies] == [("127.0.0.1", "lo", b"HTTP/1.1 200 genuine")]
    assert [(str(r.source), r.problem) for r in search.forged] == [("127.0.0.1", "forged")]


def test_the_packet_socket_s_filter_drops_junk_other_ports_and_repliers_already_heard():
    """As root, on loopback: the filter of the packet socket (IP header first) does what the UDP socket's does."""
    need("a packet socket needs root" if os.geteuid() != 0 else None)
    search = DialSearch([("lo", LOOPBACK)], wire=True)
    search.start()
    assert search.wire_problem is None
    port = search._ifaces[0].port
    senders = {}
    for last in (3, 4, 5):
        senders[last] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        senders[last].bind((f"127.0.0.{last}", 0))

    def wait_for(n):
        deadline = time.monotonic() + 10
        while len(search.repliers()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(search.repliers()) == n

    senders[3].sendto(b"HTTP/1.1 200 first", ("127.0.0.1", port))
    wait_for(1)
    before = search.datagrams
    for _ in range(300):
        senders[3].sendto(b"HTTP/1.1 200 again", ("127.0.0.1", port))  # heard already: dropped by the kernel
        senders[4].sendto(b"junk", ("127.0.0.1", port))  # no HTTP start: dropped by the kernel
        senders[4].sendto(b"HTTP/1.1 200 elsewhere", ("127.0.0.1", port + 1 if port < 65535 else port - 1))
    senders[5].sendto(b"HTTP/1.1 200 late", ("127.0.0.1", port))
    wait_for(2)
    replies = search.finish(0)
    for sock in senders.values():
        sock.close()
    assert [(str(r.source), r.on_wire, r.delivered) for r in replies] == [("127.0.0.3", True, True), ("127.0.0.5", True, True)]
    # The late reply's copies only (on loopback a packet socket also sees each one going out).
    assert search.datagrams - before <= 4, search.datagrams - before
