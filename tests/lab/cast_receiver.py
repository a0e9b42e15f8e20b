"""The Cast v2 side of the lab's Cast devices: TLS, CastMessage frames and the receiver a sender talks to.

cast_device.py runs all of this in its one selector loop: non-blocking TLS
(TlsConnection), the length-prefixed protobuf CastMessage frames, encoded
and decoded by hand (encode_message, decode_message), and per Cast port one
Receiver: the platform (receiver-0: connection, heartbeat, receiver status,
LAUNCH and STOP of the Default Media Receiver) and that app's media channel.
A LOAD makes the device fetch the media over HTTP from wherever the sender
said, as a real device does (a short-lived thread per fetch; its outcome
comes back to the loop through a socket pair). The events it logs are listed
in cast_device.py. Standard library only: it runs under the tests' Python.

What VLC 3.0's chromecast output needs of a device (the lab's other senders,
catt and pychromecast, never see any of it):
- an answer to its device-auth challenge (tp.deviceauth), else it waits for
  one forever: the device answers every challenge with a DeviceAuthMessage
  whose response has a (fake) signature and certificate; VLC only parses it
  (both fields are required in its schema), a sender that checks the
  signature (Chromium) finds it wrong, as for any device not signed by Google;
- MEDIA_STATUS answers carrying its request's requestId (as every reply here
  does), with a mediaSessionId other than 0;
- IDLE/FINISHED once its stream has ended, or cvlc --play-and-exit waits
  for ever: where the device fetched VLC's stream (from VLC's own HTTP
  server) to its end, it says PLAYING, then IDLE with idleReason FINISHED.
  For every other sender the media plays on without end, so that they may
  PAUSE, PLAY and STOP it at leisure. (Not keyed on the LOAD's streamType
  LIVE, which VLC sends: pychromecast 14 sends it too, by default.)
- a hang-up instead of LOAD_FAILED: VLC answers a LOAD_FAILED by building
  its stream again and loading it again, without end (or, for a short file,
  by waiting for ever); only a dead link ends it. So when a fetch for VLC
  fails (its sender id is always "sender-vlc"), the device logs the failure
  as for anyone (fetch, media LOAD_FAILED), then closes VLC's connection
  instead of answering (event "hangup"), and cvlc gives up and exits. Every
  other sender gets its LOAD_FAILED (catt and pychromecast give up on it).
"""

from __future__ import annotations

import collections
import json
import queue
import selectors
import socket
import ssl
import struct
import threading
import time
import uuid as uuidlib

NS_CONNECTION = "urn:x-cast:com.google.cast.tp.connection"
NS_HEARTBEAT = "urn:x-cast:com.google.cast.tp.heartbeat"
NS_DEVICEAUTH = "urn:x-cast:com.google.cast.tp.deviceauth"
NS_RECEIVER = "urn:x-cast:com.google.cast.receiver"
NS_MEDIA = "urn:x-cast:com.google.cast.media"
PLATFORM = "receiver-0"
BROADCAST = "*"
MEDIA_RECEIVER = "CC1AD845"  # the Default Media Receiver
MEDIA_RECEIVER_NAME = "Default Media Receiver"
VLC_SENDER = "sender-vlc"  # VLC 3.0's source id, always: it hears FINISHED, and is hung up on for LOAD_FAILED
APP_NAMESPACES = [NS_MEDIA, "urn:x-cast:com.google.cast.cac", "urn:x-cast:com.google.cast.debugoverlay",
                  "urn:x-cast:com.google.cast.broadcast"]

MAX_FRAME = 64 * 1024  # a larger CastMessage is refused (and its connection closed)
HANDSHAKE_TIMEOUT = 5.0  # a connection that has not finished TLS by then is closed, as before TLS
IDLE_TIMEOUT = 30.0  # an open Cast connection silent this long is closed (senders PING every 5-10 s)
OUT_MAX = 1 << 20  # a peer that lets this much pile up unread is dropped
# What a sender gets back leaves the device this long after it arrived, as over a real device's
# Wi-Fi. Answers within microseconds hit a race in pychromecast (seen with 14; 9.4 has the same two
# threads), which reads and writes one TLS socket from two threads without a lock: its reader may still be taking the
# answer while the request's writer is finishing, and the TLS state breaks ("[SSL: BAD_LENGTH]",
# "EOF occurred in violation of protocol"), so it reconnects mid-cast.
REPLY_LATENCY = 0.01
FETCH_CONNECT_TIMEOUT = 3.0  # and per read
FETCH_DEADLINE = 10.0
FETCH_MAX = 1 << 20  # bytes of media read, at most
MAX_FETCHES = 4  # at once, per receiver
NETWORK_ERROR = 103  # CAF's DetailedErrorCode MEDIA_NETWORK
USER_AGENT = ("Mozilla/5.0 (X11; Linux armv7l) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.5735.199 "
              "Safari/537.36 CrKey/1.56.500000 DeviceType/Chromecast")
SUPPORTED_MEDIA_COMMANDS = 12303  # pause, seek, stream volume and mute, skip forward and back


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


# --- the Cast channel --------------------------------------------------------------

class Channel:
    """One sender's connection to a Cast port: CastMessage frames in and out."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.buf = bytearray()
        self.connected: set[str] = set()  # the destinations it opened a virtual connection to
        self.conn: TlsConnection | None = None

    @property
    def ip(self) -> str:
        return self.conn.peer[0]

    def fields(self) -> dict:
        return {"from": self.conn.peer[0], "sport": self.conn.peer[1], "port": self.conn.port}

    def opened(self, conn: TlsConnection) -> None:
        self.conn = conn
        self.receiver.channels.add(self)
        self.receiver.emit("tls", **self.fields(), ok=True, error=None, t=time.time())

    def tls_failed(self, conn: TlsConnection, error: str) -> None:
        self.conn = conn
        self.receiver.emit("tls", **self.fields(), ok=False, error=error, t=time.time())

    def closed(self, conn: TlsConnection) -> None:
        self.receiver.channels.discard(self)

    def received(self, conn: TlsConnection, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4 and not conn.closed:
            (length,) = struct.unpack(">I", self.buf[:4])
            if length > MAX_FRAME:
                self.refuse(f"frame of {length} bytes (at most {MAX_FRAME})")
                return
            if len(self.buf) < 4 + length:
                return
            body = bytes(self.buf[4:4 + length])
            del self.buf[:4 + length]
            try:
                self.receiver.handle(self, decode_message(body))
            except FrameError as e:
                self.refuse(str(e))
                return
            except Exception as e:  # noqa: BLE001 - a sender must never take the device down
                self.refuse(f"{type(e).__name__}: {e}")
                return

    def refuse(self, error: str) -> None:
        self.receiver.emit("cast-error", **self.fields(), error=error, t=time.time())
        self.conn.close()

    def send(self, source: str, destination: str, namespace: str, payload: dict | bytes) -> None:
        """A JSON payload (dict), or a binary one (bytes: device auth's protobuf)."""
        if self.conn is not None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload)
            self.conn.send(frame(encode_message(source, destination, namespace, body)))


def device_auth_response() -> bytes:
    """DeviceAuthMessage{response: AuthResponse{signature, client_auth_certificate}}, both made up.

    Both fields are required in the proto2 schema VLC parses the answer with;
    what is in them it never checks.
    """
    return _field(2, _field(1, b"castwall-lab-signature") + _field(2, b"castwall-lab-certificate"))


# --- the receiver --------------------------------------------------------------------

class Receiver:
    """What a Cast device's receiver knows: the app it runs, the media it plays, its volume."""

    def __init__(self, device, *, audio: bool = False) -> None:
        self.device = device
        self.emit = device.emit
        self.audio = audio
        self.channels: set[Channel] = set()
        self.app: dict | None = None
        self.media: dict | None = None  # the media session: id, state, media, position
        self.media_seq = 0
        self.fetching = 0
        self.volume = {"controlType": "attenuation", "level": 1.0, "muted": False, "stepInterval": 0.05}
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        device.sel.register(self.wake_r, selectors.EVENT_READ, self.on_results)

    def channel(self) -> Channel:
        return Channel(self)

    # messages in

    def handle(self, ch: Channel, msg: dict) -> None:
        ns, src, dst = msg["namespace"], msg["source_id"], msg["destination_id"]
        base = {**ch.fields(), "namespace": ns, "source": src, "destination": dst}
        if msg.get("payload_type", 0) == 1:
            self.emit("cast", **base, type=None, binary=len(msg.get("payload_binary", b"")), t=time.time())
            if ns == NS_DEVICEAUTH:
                # A challenge: answered, though no lab device can sign one (see the module).
                ch.send(dst, src, ns, device_auth_response())
                return
            raise FrameError(f"binary payload on {ns}")
        try:
            data = json.loads(msg.get("payload_utf8", ""))
        except ValueError:
            raise FrameError(f"payload on {ns} is not JSON") from None
        if not isinstance(data, dict):
            raise FrameError(f"payload on {ns} is not a JSON object")
        mtype = data.get("type")
        if not isinstance(mtype, str):
            raise FrameError(f"message on {ns} without a type")
        self.emit("cast", **base, type=mtype, t=time.time())
        request_id = data.get("requestId")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            request_id = 0

        def reply(payload: dict) -> None:
            ch.send(dst, src, ns, {**payload, "requestId": request_id})
        reply.channel = ch  # broadcasts skip the sender who gets the reply

        if ns == NS_CONNECTION:
            if mtype == "CONNECT":
                ch.connected.add(dst)
            elif mtype == "CLOSE":
                ch.connected.discard(dst)
        elif ns == NS_HEARTBEAT:
            if mtype == "PING":
                ch.send(dst, src, ns, {"type": "PONG"})
        elif ns == NS_RECEIVER and dst == PLATFORM:
            self.on_receiver(ch, mtype, data, reply)
        elif ns == NS_MEDIA and self.app is not None and dst == self.app["transportId"]:
            self.on_media(ch, src, mtype, data, reply)
        # Anything else (another app's namespace, a transport no app has) goes unanswered, as on a real device.

    def on_receiver(self, ch: Channel, mtype: str, data: dict, reply) -> None:
        if mtype == "GET_STATUS":
            reply(self.receiver_status())
        elif mtype == "LAUNCH":
            app_id = data.get("appId")
            ok = app_id == MEDIA_RECEIVER
            self.emit("launch", **{"from": ch.ip}, app=app_id if isinstance(app_id, str) else repr(app_id), ok=ok,
                      t=time.time())
            if not ok:
                reply({"type": "LAUNCH_ERROR", "reason": "NOT_FOUND"})
                return
            closing = self.stop_app()
            session = str(uuidlib.uuid4())
            self.app = {
                "appId": MEDIA_RECEIVER, "appType": "WEB", "displayName": MEDIA_RECEIVER_NAME, "iconUrl": "",
                "isIdleScreen": False, "launchedFromCloud": False,
                "namespaces": [{"name": n} for n in APP_NAMESPACES], "sessionId": session,
                "statusText": "Ready To Cast", "transportId": session, "universalAppId": MEDIA_RECEIVER,
            }
            self.receiver_changed(reply)
            closing()
        elif mtype == "STOP":
            closing = self.stop_app()
            self.receiver_changed(reply)
            closing()
        elif mtype == "SET_VOLUME":
            volume = data.get("volume")
            if not isinstance(volume, dict):
                reply({"type": "INVALID_REQUEST", "reason": "INVALID_PARAMS"})
                return
            level, muted = volume.get("level"), volume.get("muted")
            if isinstance(level, (int, float)) and not isinstance(level, bool):
                self.volume["level"] = min(max(float(level), 0.0), 1.0)
            if isinstance(muted, bool):
                self.volume["muted"] = muted
            self.receiver_changed(reply)
        elif mtype == "GET_APP_AVAILABILITY":
            ids = data.get("appId")
            ids = [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
            reply({"type": "GET_APP_AVAILABILITY", "responseType": "GET_APP_AVAILABILITY",
                   "availability": {i: "APP_AVAILABLE" if i == MEDIA_RECEIVER else "APP_UNAVAILABLE" for i in ids}})
        else:
            reply({"type": "INVALID_REQUEST", "reason": "INVALID_COMMAND"})

    def on_media(self, ch: Channel, src: str, mtype: str, data: dict, reply) -> None:
        if mtype == "GET_STATUS":
            reply(self.media_status())
        elif mtype == "LOAD":
            media = data.get("media")
            url = (media.get("contentUrl") or media.get("contentId")) if isinstance(media, dict) else None
            if not isinstance(url, str) or not url:
                reply({"type": "LOAD_FAILED", "itemId": 0, "detailedErrorCode": 104})
                self.emit("media", state="LOAD_FAILED", session=None, t=time.time())
                return
            self.emit("load", **{"from": ch.ip}, url=url, content_type=media.get("contentType"), t=time.time())
            self.media_seq += 1
            self.media = {"id": self.media_seq, "state": "BUFFERING", "media": media, "position": 0.0,
                          "since": time.monotonic(), "item": 1}
            self.media_changed()  # BUFFERING, to every sender on the app: the media session exists
            token = (self.media_seq, ch, reply, src)
            if self.fetching >= MAX_FETCHES:
                self.on_fetched(token, url, {"ok": False, "status": None, "bytes": 0, "complete": False,
                                             "error": "too many fetches at once"})
                return
            self.fetching += 1
            threading.Thread(target=self._fetch_thread, args=(token, url), daemon=True).start()
        elif mtype in ("PLAY", "PAUSE", "STOP", "SEEK"):
            session = data.get("mediaSessionId")
            if self.media is None or (session is not None and session != self.media["id"]):
                reply({"type": "INVALID_REQUEST", "reason": "INVALID_MEDIA_SESSION_ID"})
                return
            if mtype == "SEEK":
                target = data.get("currentTime")
                if isinstance(target, (int, float)) and not isinstance(target, bool) and target >= 0:
                    self.media["position"], self.media["since"] = float(target), time.monotonic()
            else:
                self.set_state({"PLAY": "PLAYING", "PAUSE": "PAUSED", "STOP": "IDLE"}[mtype],
                               idle_reason="CANCELLED" if mtype == "STOP" else None)
            self.media_changed(reply)
            if mtype == "STOP":
                self.media = None
        else:
            reply({"type": "INVALID_REQUEST", "reason": "INVALID_COMMAND"})

    # state out

    def receiver_status(self) -> dict:
        status = {"volume": dict(self.volume), "isStandBy": False, "userEq": {}}
        if not self.audio:
            status["isActiveInput"] = True
        if self.app is not None:
            status["applications"] = [self.app]
        return {"type": "RECEIVER_STATUS", "status": status}

    def position(self) -> float:
        m = self.media
        if m["state"] == "PLAYING":
            return m["position"] + time.monotonic() - m["since"]
        return m["position"]

    def media_status(self) -> dict:
        m = self.media
        if m is None:
            return {"type": "MEDIA_STATUS", "status": []}
        entry = {
            "mediaSessionId": m["id"], "playbackRate": 1, "playerState": m["state"], "currentTime": self.position(),
            "supportedMediaCommands": SUPPORTED_MEDIA_COMMANDS, "volume": {"level": 1.0, "muted": False},
            "activeTrackIds": [], "media": m["media"], "currentItemId": m["item"],
            "items": [{"itemId": m["item"], "media": m["media"], "autoplay": True, "orderId": 0}],
            "repeatMode": "REPEAT_OFF",
        }
        if m["state"] == "IDLE":
            entry["idleReason"] = m.get("idle_reason") or "FINISHED"
        return {"type": "MEDIA_STATUS", "status": [entry]}

    def set_state(self, state: str, idle_reason: str | None = None, *, log: bool = True) -> None:
        m = self.media
        m["position"], m["since"] = self.position(), time.monotonic()
        m["state"], m["idle_reason"] = state, idle_reason
        if log:
            extra = {"reason": idle_reason} if state == "IDLE" else {}
            self.emit("media", state=state, session=m["id"], **extra, t=time.time())

    def receiver_changed(self, reply) -> None:
        """The new receiver status: to the one who asked (with its requestId), then to every other sender."""
        status = self.receiver_status()
        reply(status)
        self._broadcast(PLATFORM, NS_RECEIVER, status, to=PLATFORM, skip=reply)

    def media_changed(self, reply=None) -> None:
        status = self.media_status()
        if reply is not None:
            reply(status)
        self._broadcast(self.app["transportId"], NS_MEDIA, status, to=self.app["transportId"], skip=reply)

    def _broadcast(self, source: str, namespace: str, payload: dict, *, to: str, skip=None) -> None:
        asker = getattr(skip, "channel", None)
        for ch in list(self.channels):
            if to in ch.connected and ch is not asker:
                ch.send(source, BROADCAST, namespace, {**payload, "requestId": 0})

    def stop_app(self):
        """End the running app, if any; returns what closes its senders' virtual connections to it, as a real device does.

        The caller sends its status reply first: a CLOSE hard on the heels of the request makes
        pychromecast 14 answer it from its reader thread while its caller's thread may still be
        writing to the same TLS socket ("[SSL: BAD_LENGTH]"), a race real devices are too slow for.
        """
        if self.app is None:
            return lambda: None
        transport = self.app["transportId"]
        self.app = self.media = None

        def close() -> None:
            for ch in list(self.channels):
                if transport in ch.connected:
                    ch.connected.discard(transport)
                    ch.send(transport, BROADCAST, NS_CONNECTION, {"type": "CLOSE"})
        return close

    # the media fetch

    def _fetch_thread(self, token, url: str) -> None:
        try:
            result = fetch(url)
        except Exception as e:  # noqa: BLE001 - whatever happens, the loop gets an outcome
            result = {"ok": False, "status": None, "bytes": 0, "complete": False, "error": _error_text(e)}
        self.results.put((token, url, result))
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def on_results(self, _sock) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                token, url, result = self.results.get_nowait()
            except queue.Empty:
                return
            self.fetching -= 1
            self.on_fetched(token, url, result)

    def on_fetched(self, token, url: str, result: dict) -> None:
        session, ch, reply, sender = token
        self.emit("fetch", url=url, **result, t=time.time())
        if self.media is None or self.media["id"] != session or self.app is None:
            return  # stopped, or another LOAD came since
        asker = ch if ch in self.channels else None
        if result["ok"]:
            self.set_state("PLAYING")
            self.media_changed(reply if asker else None)
            if result["complete"] and sender == VLC_SENDER:
                # VLC's stream has ended, and so has its playing: IDLE/FINISHED, to every sender (requestId 0).
                self.set_state("IDLE", idle_reason="FINISHED")
                self.media_changed()
        else:
            if asker and sender == VLC_SENDER:  # it would retry for ever (see the module)
                self.emit("hangup", **ch.fields(), reason="VLC's LOAD failed", t=time.time())
                ch.conn.close()
            elif asker:
                reply({"type": "LOAD_FAILED", "itemId": self.media["item"], "detailedErrorCode": NETWORK_ERROR})
            self.set_state("IDLE", idle_reason="ERROR", log=False)
            self.emit("media", state="LOAD_FAILED", session=session, t=time.time())
            self.media_changed()
            self.media = None


def fetch(url: str) -> dict:
    """GET url as a Cast device's media element does: {"ok", "status", "bytes", "complete", "error"}.

    complete: the body was read to its end (not cut at FETCH_MAX or FETCH_DEADLINE).
    """
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return {"ok": False, "status": None, "bytes": 0, "complete": False, "error": f"unsupported URL {url[:200]!r}"}
    if parts.scheme == "https":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=FETCH_CONNECT_TIMEOUT, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=FETCH_CONNECT_TIMEOUT)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    status, got, error, complete = None, 0, None, False
    deadline = time.monotonic() + FETCH_DEADLINE
    try:
        conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "*/*", "Range": "bytes=0-"})
        response = conn.getresponse()
        status = response.status
        while got < FETCH_MAX and time.monotonic() < deadline:
            chunk = response.read1(65536)
            if not chunk:
                complete = True
                break
            got += len(chunk)
    except (OSError, http.client.HTTPException, ValueError) as e:
        error = _error_text(e)
    finally:
        conn.close()
    ok = status in (200, 206) and got > 0
    if not ok and error is None:
        error = f"HTTP {status}" if status not in (200, 206) else "empty body"
    return {"ok": ok, "status": status, "bytes": got, "complete": complete, "error": error}
