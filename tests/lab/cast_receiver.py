"""The Cast v2 side of the lab's Cast devices: TLS, CastMessage frames and the receiver a sender talks to.

cast_device.py runs all of this in its one selector loop: non-blocking TLS
(TlsConnection) and the length-prefixed protobuf CastMessage frames, encoded
and decoded by hand (encode_message, decode_message), both in castv2_wire.py;
here the Cast channel and, per Cast port, one
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

import json
import queue
import selectors
import socket
import ssl
import struct
import threading
import time
import uuid as uuidlib

from castv2_wire import MAX_FRAME, FrameError, TlsConnection, _error_text, _field, decode_message, encode_message, frame

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
            except Exception as e:  # a sender must never take the device down
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
        except Exception as e:  # whatever happens, the loop gets an outcome
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
