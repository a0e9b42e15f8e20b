"""The Cast v2 wire, for the lab's Cast devices: CastMessage frames by hand, and TLS inside a selector loop.

A CastMessage is a protobuf message (protocol_version, source_id,
destination_id, namespace, payload_type, payload_utf8 or payload_binary) in a
frame: a 4-byte big-endian length, then the message. encode_message and
decode_message write and read it without a protobuf library; TlsConnection
does a non-blocking TLS handshake and I/O for one accepted connection of
cast_device.py's selector loop. cast_receiver.py speaks the Cast protocol on
top. Standard library only: it runs under the tests' Python.
"""

from __future__ import annotations

import collections
import selectors
import ssl
import struct
import time

MAX_FRAME = 64 * 1024  # a larger CastMessage is refused (and its connection closed)
HANDSHAKE_TIMEOUT = 5.0  # a connection that has not finished TLS by then is closed, as before TLS
IDLE_TIMEOUT = 30.0  # an open Cast connection silent this long is closed (senders PING every 5-10 s)
OUT_MAX = 1 << 20  # a peer that lets this much pile up unread is dropped


class FrameError(ValueError):
    """A sender sent something no Cast sender would: its connection is closed."""


# --- protobuf, by hand ------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if pos >= len(buf):
            raise FrameError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise FrameError("varint over 10 bytes")


def _field(number: int, value: int | str | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def encode_message(source: str, destination: str, namespace: str, payload: str | bytes) -> bytes:
    """A CastMessage (CASTV2_1_0): a string payload is payload_utf8, bytes are payload_binary."""
    binary = isinstance(payload, bytes)
    return b"".join([_field(1, 0), _field(2, source), _field(3, destination), _field(4, namespace),
                     _field(5, 1 if binary else 0), _field(7 if binary else 6, payload)])


_STRINGS = {2: "source_id", 3: "destination_id", 4: "namespace", 6: "payload_utf8"}


def decode_message(buf: bytes) -> dict:
    """A CastMessage's fields by name; FrameError for anything that is not one."""
    msg: dict = {}
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise FrameError(f"field {number} runs past the message")
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(buf):
                raise FrameError(f"field {number} runs past the message")
            continue
        else:
            raise FrameError(f"wire type {wire} (field {number})")
        if number in (1, 5):
            if wire != 0:
                raise FrameError(f"field {number} is not a varint")
            msg["protocol_version" if number == 1 else "payload_type"] = value
        elif number in _STRINGS:
            if wire != 2:
                raise FrameError(f"field {number} is not a string")
            try:
                msg[_STRINGS[number]] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise FrameError(f"field {number} is not UTF-8") from None
        elif number == 7:
            if wire != 2:
                raise FrameError("field 7 is not bytes")
            msg["payload_binary"] = value
    for name in ("source_id", "destination_id", "namespace"):
        if name not in msg:
            raise FrameError(f"no {name}")
    if msg.get("protocol_version", 0) != 0:
        raise FrameError(f"protocol_version {msg['protocol_version']}")
    if msg.get("payload_type", 0) not in (0, 1):
        raise FrameError(f"payload_type {msg['payload_type']}")
    return msg


def frame(message: bytes) -> bytes:
    return struct.pack(">I", len(message)) + message


# --- TLS in the selector -----------------------------------------------------------

class TlsConnection:
    """One accepted connection, TLS done without blocking inside the device's selector loop.

    The protocol gets opened(conn), received(conn, data), closed(conn) and
    tls_failed(conn, error); it answers with conn.send(bytes) and conn.close()
    (or conn.close_when_flushed = True).
    """

    def __init__(self, device, sock: ssl.SSLSocket, peer: tuple[str, int], port: int, protocol,
                 idle: float = IDLE_TIMEOUT, latency: float = 0.0) -> None:
        self.device, self.sock, self.peer, self.port, self.protocol = device, sock, peer, port, protocol
        self.idle, self.latency = idle, latency
        self.flush_due = False
        self.open = self.closed = self.close_when_flushed = False
        # What is to go out, one TLS record (or more) per item: pychromecast select()s on the raw
        # socket and never asks the TLS layer for data it already holds, so a second CastMessage
        # in the record of a first would wait there until some later record came.
        self.out: collections.deque[bytes] = collections.deque()
        self.out_size = 0
        self.last_rx = time.monotonic()
        self.mask = selectors.EVENT_READ
        device.sel.register(sock, self.mask, self.on_ready)
        device.later(HANDSHAKE_TIMEOUT, self._handshake_deadline)

    def _want(self, mask: int) -> None:
        if not self.closed and mask != self.mask:
            self.mask = mask
            self.device.sel.modify(self.sock, mask, self.on_ready)

    def on_ready(self, _sock) -> None:
        if not self.open:
            self._handshake()
            if not self.open:
                return
        self._flush()
        if not self.closed:
            self._read()

    def _handshake(self) -> None:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError, ValueError) as e:
            self.protocol.tls_failed(self, _error_text(e))
            self.close()
            return
        self.open = True
        self.last_rx = time.monotonic()
        self._want(selectors.EVENT_READ)
        self.device.later(min(self.idle, 5.0), self._idle_check)
        self.protocol.opened(self)

    def _handshake_deadline(self) -> None:
        if not self.open and not self.closed:
            self.protocol.tls_failed(self, f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s")
            self.close()

    def _idle_check(self) -> None:
        if self.closed:
            return
        if time.monotonic() - self.last_rx > self.idle:
            self.close()
        else:
            self.device.later(min(self.idle, 5.0), self._idle_check)

    def _read(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(16384)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                self._want(selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except (ssl.SSLError, OSError):
                data = b""
            if not data:  # the peer closed (or broke TLS)
                self.close()
                return
            self.last_rx = time.monotonic()
            self.protocol.received(self, data)

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        self.out.append(bytes(data))
        self.out_size += len(data)
        if self.out_size > OUT_MAX:
            self.close()
            return
        if not self.open:
            return
        if self.latency <= 0:
            self._flush()
        elif not self.flush_due:
            self.flush_due = True
            self.device.later(self.latency, self._flush_later)

    def _flush_later(self) -> None:
        self.flush_due = False
        if not self.closed:
            self._flush()

    def _flush(self) -> None:
        if self.flush_due:  # a delayed answer goes when its time comes
            self._want(selectors.EVENT_READ)
            return
        while self.out and not self.closed:
            head = self.out[0]
            try:
                sent = self.sock.send(head)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break  # retried with the same bytes when writable, as OpenSSL wants
            except (ssl.SSLError, OSError):
                self.close()
                return
            self.out_size -= sent
            if sent < len(head):
                self.out[0] = head[sent:]
            else:
                self.out.popleft()
        if self.closed:
            return
        if not self.out and self.close_when_flushed:
            self.close()
            return
        self._want(selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.device.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.protocol.closed(self)


def _error_text(e: BaseException) -> str:
    return str(e) or type(e).__name__
