"""The DIAL search's wire-level pieces (castwall.system.ssdp) on crafted packets; the lab runs the rest."""

import ipaddress
import socket
import struct
import threading
import time


from castwall.system import ssdp
from castwall.system.ssdp import MSEARCH, DialSearch, parse_udp, reply_filter
from tests.fakes import DATA


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
    assert ops[-2] == (0x06, 0, 0, 0x40000) and ops[-1] == (0x06, 0, 0, 0)
    # Every jump lands inside the program, and every test that fails lands on a drop.
    for i, (code, jt, jf, _) in enumerate(ops):
        if code in (0x15, 0x45):
            assert i + 1 + max(jt, jf) < len(ops)
            miss = i + 1 + (jt if code == 0x45 else jf)
            assert ops[miss][0] == 0x06 and ops[miss][3] == 0 or miss == i + 1, (i, ops)


def test_the_kernel_filter_drops_the_sources_already_heard_up_to_its_limit():
    heard = [ipaddress.IPv4Address(f"10.0.{n // 256}.{n % 256}") for n in range(300)]
    for port in (40000, None):
        ops = ops_of(reply_filter(port, heard))
        checks = [op for op in ops if op[0] == 0x15 and op[3] in {int(ip) for ip in heard}]
        assert len(checks) == ssdp.MAX_FILTERED
        for i, op in enumerate(ops):
            if op in checks:
                assert ops[i + 1 + op[1]] == (0x06, 0, 0, 0)  # a heard source: drop


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

    # From more sources than the kernel filter names: the reader itself has to keep up.
    outs = []
    for n in range(ssdp.MAX_FILTERED + 60):
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


def test_the_interface_a_reply_came_in_on_is_what_may_fetch_is_asked_about():
    asked = []
    search = DialSearch([("lo", LOOPBACK)], may_fetch=lambda ip, interface: asked.append((str(ip), interface)) or "no")
    search.start()
    reply = (DATA / "dial-msearch-reply.txt").read_bytes().replace(b"192.168.1.66", b"127.0.0.1")
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.sendto(reply, ("127.0.0.1", search._ifaces[0].port))
    out.close()
    deadline = time.monotonic() + 10
    while not search.repliers() and time.monotonic() < deadline:
        time.sleep(0.01)
    replies = search.finish(0)
    assert asked == [("127.0.0.1", "lo")]
    assert replies[0].problem == "not asked for its description: no" and replies[0].description is None
