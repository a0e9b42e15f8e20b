"""The description fetch (castwall.system.description) against servers on loopback, bounded in count and time."""

import ipaddress
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from castwall.system.description import fetch_description

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
