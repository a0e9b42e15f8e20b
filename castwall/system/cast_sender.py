"""check --app: ask a Cast device, over the Cast protocol, to fetch a test sound from this computer.

The only module that imports pychromecast (optional: python3-pychromecast or
pip's pychromecast). castwall serves a one-second silent WAV on the app's
port for the length of the test, tells the device its URL as a sender app
would, and records whether the device's own TCP connection arrived. That is
the path the firewall must let through for VLC, catt and the rest.
"""

from __future__ import annotations

import http.server
import logging
import secrets
import socket
import struct
import threading
import uuid as uuidlib
from dataclasses import dataclass

from castwall.errors import MissingTool
from castwall.model import Address, Device, PortRange, port_text

SILENCE_RATE = 8000
_CAST_FIX = "check that the device is on and that 'castwall check' opens its Cast port"


def silent_wav(seconds: float = 1.0) -> bytes:
    """A valid mono 8-bit PCM WAV of silence (8-bit silence is 0x80)."""
    frames = int(SILENCE_RATE * seconds)
    header = b"RIFF" + struct.pack("<I", 36 + frames) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, SILENCE_RATE, SILENCE_RATE, 1, 8) + b"data" + struct.pack("<I", frames)
    return header + b"\x80" * frames


def load_pychromecast():
    """pychromecast, or MissingTool saying how to install it."""
    try:
        import pychromecast  # imported only for check --app
    except ImportError:
        raise MissingTool("check --app speaks the Cast protocol through pychromecast, which is not installed: "
                          "sudo apt install python3-pychromecast (or pip install pychromecast)") from None
    # pychromecast logs its own warnings (a STOP after the device finished, a reconnect); castwall's verdict says what counts.
    logging.getLogger("pychromecast").setLevel(logging.CRITICAL)
    return pychromecast


def local_address(ip: Address) -> Address:
    """This computer's address towards ip (the kernel's route choice; no packet is sent)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((str(ip), 9))
        return type(ip)(s.getsockname()[0])


@dataclass
class Fetch:
    arrived: bool
    port: int
    url: str
    error: str | None = None  # why the device could not be asked, if so
    fix: str | None = None  # what to do about that


class _TestServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TestServer6(_TestServer):
    address_family = socket.AF_INET6


class _CannotServe(Exception):
    pass


def _serve(bind: Address, ports: PortRange, path: str, body: bytes, device_ip: Address, arrived: threading.Event):
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            if self.path.split("?")[0] != path:
                self.send_error(404)
                return
            if self.client_address[0] == str(device_ip):
                arrived.set()
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self):  # http.server's name
            self._answer(True)

        def do_HEAD(self):
            self._answer(False)

        def log_message(self, *args):
            pass

    server = _TestServer6 if bind.version == 6 else _TestServer
    last = None
    for port in range(ports.low, min(ports.high, ports.low + 50) + 1):
        try:
            return server((str(bind), port), Handler)
        except OSError as exc:
            last = exc
    where = port_text(ports)
    raise _CannotServe(f"castwall cannot serve the test on TCP {where} of this computer "
                       f"({last.strerror if last else 'no port'}): stop the app itself while the check runs")


def fetch_test(device: Device, ports: PortRange, timeout: float) -> Fetch:
    """Ask the device to play the test sound from this computer on one of ports; arrived says whether its fetch came."""
    pychromecast = load_pychromecast()
    path = f"/castwall-check-{secrets.token_hex(4)}.wav"
    arrived = threading.Event()
    try:
        bind = local_address(device.ip)
        server = _serve(bind, ports, path, silent_wav(), device.ip, arrived)
    except OSError as exc:
        return Fetch(False, ports.low, "", f"no route to {device.ip} from this computer ({exc.strerror or exc})",
                     "check the device's address with 'castwall discover'")
    except _CannotServe as exc:
        return Fetch(False, ports.low, "", str(exc), "stop the app that holds the port, then check again")
    port = server.server_address[1]
    url = f"http://{bind}:{port}{path}" if bind.version == 4 else f"http://[{bind}]:{port}{path}"
    thread = threading.Thread(target=server.serve_forever, name="castwall-check-app", daemon=True)
    thread.start()
    cast = None
    try:
        host = (str(device.ip), device.port, uuidlib.UUID(device.uuid), device.model, device.name)
        cast = pychromecast.get_chromecast_from_host(host, tries=1, timeout=timeout)
        cast.wait(timeout=timeout)
        if not cast.socket_client.is_connected:
            return Fetch(False, port, url, f"no Cast connection to {device.ip}:{device.port}", _CAST_FIX)
        cast.media_controller.play_media(url, "audio/wav", title="castwall check")
        arrived.wait(timeout)
        try:
            cast.media_controller.stop()
        except Exception:  # the device may have finished already; the verdict stands
            pass
        return Fetch(arrived.is_set(), port, url)
    except Exception as exc:  # pychromecast's errors differ between versions; say which, in one line
        if arrived.is_set():
            return Fetch(True, port, url)
        return Fetch(False, port, url, f"the Cast protocol failed: {type(exc).__name__}: {exc}".strip(": "), _CAST_FIX)
    finally:
        if cast is not None:
            try:
                cast.disconnect(timeout=2)
            except Exception:
                pass
        server.shutdown()
        server.server_close()
