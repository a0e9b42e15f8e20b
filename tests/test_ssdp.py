"""The DIAL search's wire-level pieces (castwall.system.ssdp) on crafted packets; the lab runs the rest."""

import ipaddress
import struct
import time

from castwall.system.ssdp import MSEARCH, parse_udp, udp_port_filter
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


def test_the_kernel_filter_keeps_only_udp_to_the_search_port():
    program = udp_port_filter(40000)
    ops = [struct.unpack("HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    assert len(ops) == 9 and ops[6] == (0x15, 0, 1, 40000) and ops[-2][0] == ops[-1][0] == 0x06


def test_the_m_search_is_chromes_dial_search():
    lines = MSEARCH.decode().split("\r\n")
    assert lines[0] == "M-SEARCH * HTTP/1.1" and "MX: 1" in lines and "ST: urn:dial-multiscreen-org:service:dial:1" in lines
    assert MSEARCH.endswith(b"\r\n\r\n")


# --- a hostile LAN, on loopback: servers and floods bounded in count and time -----------------------

import socket
import threading
from contextlib import contextmanager

import pytest

from castwall.system import ssdp
from castwall.system.ssdp import DialSearch, fetch_description

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
GOOD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nApplication-URL: http://127.0.0.1:8008/apps/\r\n"
        b"Content-Length: 7\r\n\r\n<root/>")


@contextmanager
def server(answer, *, seconds: float = 15.0):
    """A TCP server on loopback that answers each connection with answer(conn), for seconds at most."""
    done = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def serve():
        end = time.monotonic() + seconds
        while not done.is_set() and time.monotonic() < end:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn, done), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        listener.close()


def drip(text: bytes):
    """Send text a byte at a time, 20 ms apart, then hold the connection until the test ends."""
    def answer(conn, done):
        with conn:
            conn.recv(4096)
            for byte in text:
                if done.wait(0.02):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
            done.wait(15)
    return answer


def at_once(text: bytes):
    def answer(conn, done):
        with conn:
            conn.recv(4096)
            conn.sendall(text)
    return answer


def test_a_description_is_fetched_with_its_application_url():
    with server(at_once(GOOD)) as port:
        assert fetch_description(LOOPBACK, "/d.xml", port=port) == (b"<root/>", "http://127.0.0.1:8008/apps/")


@pytest.mark.parametrize("text", [
    b"HTTP/1.1 200 OK\r\n" * 40,  # a status line and headers that never end, a byte at a time
    GOOD[:30],  # a status line cut short, then silence
    GOOD.replace(b"Content-Length: 7", b"Content-Length: 900"),  # a body that never comes
])
def test_a_server_that_drips_or_stalls_is_cut_at_one_deadline_for_the_whole_exchange(text):
    # Each byte comes well within any socket timeout: only a deadline for the whole exchange ends it.
    # The server holds the connection for 15 s; the error names the deadline, not the server's close.
    with server(drip(text)) as port:
        with pytest.raises(ValueError, match=r"its description did not arrive within 0\.3 s"):
            fetch_description(LOOPBACK, "/d.xml", timeout=0.3, port=port)


@pytest.mark.parametrize("text, reason", [
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "could not be fetched"),  # a header line past http.client's limit
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 3000 + b"\r\n", "larger than 64 KiB|could not be fetched"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n<root/>", None),  # a Unicode digit is no length
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"<x>" * 40000, "larger than 64 KiB"),
    (b"HTTP/1.1 301 Moved\r\nLocation: http://10.0.0.1/\r\n\r\n", "HTTP 301"),
    (b"SSH-2.0-OpenSSH\r\n", "could not be fetched"),
])
def test_what_a_server_sends_ends_in_a_body_or_a_reason_never_an_exception(text, reason):
    with server(at_once(text)) as port:
        if reason is None:
            assert fetch_description(LOOPBACK, "/d.xml", port=port)[0] == b"<root/>"
        else:
            with pytest.raises(ValueError, match=reason):
                fetch_description(LOOPBACK, "/d.xml", port=port)


def test_a_flood_to_the_search_port_cannot_hold_the_reader_past_finish():
    """Junk sent to the search port as fast as a thread can: finish() returns while the flood goes on."""
    search = DialSearch([("lo", LOOPBACK)])
    search.start()
    port = search._ifaces[0].port
    flooding, stop = threading.Event(), threading.Event()

    def flood():
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for n in range(2_000_000):  # bounded: about 20 s at most here
            if stop.is_set():
                break
            try:
                out.sendto(b"junk %d" % n, ("127.0.0.1", port))
            except OSError:
                pass
            if n == 2000:
                flooding.set()
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
    # One replier (loopback), its junk refused with a reason; nothing else came of the flood.
    assert [(str(r.source), r.interface) for r in replies] == [("127.0.0.1", "lo")]
    assert replies[0].problem.startswith("not an SSDP response")


def test_the_reader_stops_at_its_datagram_budget(monkeypatch):
    monkeypatch.setattr(ssdp, "MAX_DATAGRAMS", 50)
    notes = []
    search = DialSearch([("lo", LOOPBACK)], note=notes.append)
    search.start()
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for n in range(400):
        out.sendto(b"junk", ("127.0.0.1", search._ifaces[0].port))
    out.close()
    search._thread.join(10)
    assert not search._thread.is_alive() and search.flooded
    search.finish(0)
    assert any("stopped reading after 50 datagrams" in n for n in notes), notes


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
