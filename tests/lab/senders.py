"""Real Cast senders in the lab's workstation, and the media they cast (a part of Lab).

- catt_cast(dev, path) runs catt (PyPI's catt 0.13 on pychromecast 14, in its
  own virtual environment, CATT_VENV, which scripts/bootstrap makes) as
  `catt -d <device IP> cast <file>`, as root in the workstation, with a
  private HOME in the lab's directory. catt serves the file itself over
  HTTP, from a random port in 45000-46999 of the workstation, and tells the
  device its URL; the device fetches it through the workstation's ufw.
- pychromecast_play(dev, url) does the same with the pychromecast of the
  lab's Python (Debian's 9.4 or PyPI's 14; pychromecast_sender.py) and a URL
  of the caller's, e.g. one from serve_media().
- vlc_cast(dev, path) runs Debian's VLC 3.0 (cvlc, its chromecast stream
  output) as nobody in the workstation (VLC refuses root), with a HOME of
  its own in the lab's directory. VLC transcodes the file (a WAV to MP3 in
  Matroska), serves it from its HTTP server on the workstation's port 8010
  and LOADs that URL; the device fetches it through ufw, says PLAYING, then
  IDLE/FINISHED (the stream has ended), and --play-and-exit ends cvlc. Where
  the fetch fails, the device hangs up on VLC instead of answering
  LOAD_FAILED (VLC would load again for ever), which ends cvlc too
  (cast_receiver.py).
- serve_media(directory, port) is a tiny HTTP server in the workstation;
  media_file() writes a short WAV file to serve.

Each run waits for the device's own word on the LOAD (its "media" event,
PLAYING or LOAD_FAILED, in cast.log), or for the sender to exit, or for the
timeout; a sender that ends by itself after that outcome (catt after a
LOAD_FAILED, VLC after either) gets a few seconds to; then the lab ends the
sender by PID and returns a SenderRun: what the device logged (load, fetch,
media) and what the sender printed.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.lab.common import NOBODY, SAFE_PATH, LabError

if TYPE_CHECKING:
    from tests.lab import LabDevice

CATT_VENV = Path(os.environ.get("CASTWALL_CATT_VENV", "/var/tmp/castwall-catt-venv"))
CATT = CATT_VENV / "bin" / "catt"
PYCHROMECAST_SENDER = Path(__file__).with_name("pychromecast_sender.py")
OUTCOMES = ("PLAYING", "LOAD_FAILED")
CATT_EXIT_GRACE = 5.0  # after a LOAD_FAILED, catt says so and exits by itself (pychromecast 14 passes it on)
VLC_EXIT_GRACE = 5.0  # after the outcome, cvlc ends by itself (the device's FINISHED or its hang-up): < 1 s
# VLC's chromecast stream output and the demux filter that paces the input to the device; Debian's
# vlc-plugin-base has both, under /usr/lib/<multiarch triplet>/vlc/plugins.
VLC_PLUGINS = ("stream_out/libstream_out_chromecast_plugin.so", "demux/libdemux_chromecast_plugin.so")
VLC_HTTP_PORT = 8010  # where VLC serves what it casts (its --sout-chromecast-http-port default)


def vlc_missing() -> str | None:
    """Why VLC cannot cast here (cvlc or its chromecast plugins absent), or None."""
    if shutil.which("cvlc", path=SAFE_PATH) is None:
        return "the lab's VLC sender needs cvlc (scripts/bootstrap installs vlc-bin and vlc-plugin-base)"
    for plugin in VLC_PLUGINS:
        if not glob.glob(f"/usr/lib/*/vlc/plugins/{plugin}") and not os.path.exists(f"/usr/lib/vlc/plugins/{plugin}"):
            return f"VLC has no {plugin.split('/')[-1]} (scripts/bootstrap installs vlc-plugin-base)"
    return None


def catt_missing() -> str | None:
    """Why catt cannot run here, or None."""
    if not os.access(CATT, os.X_OK):
        return f"catt is not installed in {CATT_VENV} (scripts/bootstrap --pypi installs it)"
    return None


def pychromecast_missing(python: str) -> str | None:
    """Why python has no pychromecast, or None."""
    done = subprocess.run([python, "-c", "import pychromecast"], capture_output=True, text=True, timeout=60,
                          env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"})
    if done.returncode != 0:
        return f"{python} has no pychromecast (scripts/bootstrap installs python3-pychromecast and, with --pypi, pychromecast)"
    return None


@dataclass
class SenderRun:
    """One sender's cast to one device, as the device logged it and the sender printed it."""

    sender: str  # "catt", "pychromecast" or "vlc"
    argv: list[str]
    returncode: int | None  # None: it was still running when the lab ended it
    ended_by_lab: bool
    output: str  # what it printed (stdout, then stderr)
    events: list[dict]  # everything the device logged from the sender's start on
    elapsed: float  # from its start to the outcome (or its exit, or the timeout)
    result: dict | None = None  # pychromecast_sender.py's JSON line
    dir: Path = field(default=Path("/nonexistent"))

    def first(self, event: str) -> dict | None:
        return next((e for e in self.events if e["event"] == event), None)

    @property
    def load(self) -> dict | None:
        return self.first("load")

    @property
    def fetch(self) -> dict | None:
        return self.first("fetch")

    @property
    def media(self) -> dict | None:
        """The device's outcome of the LOAD: its first media event saying PLAYING or LOAD_FAILED."""
        return next((e for e in self.events if e["event"] == "media" and e["state"] in OUTCOMES), None)

    @property
    def state(self) -> str | None:
        return self.media["state"] if self.media else None

    @property
    def finished(self) -> bool:
        """Whether the device said the media played to its end (IDLE, reason FINISHED: VLC's stream read to its end)."""
        return any(e["event"] == "media" and e["state"] == "IDLE" and e.get("reason") == "FINISHED" for e in self.events)

    @property
    def hangup(self) -> dict | None:
        """The device's closing of the sender's connection (VLC's, where its LOAD failed), if it did."""
        return self.first("hangup")

    def __str__(self) -> str:
        tail = self.output[-3000:]
        interesting = [e for e in self.events if e["event"] != "cast" or e.get("namespace", "").endswith(("receiver", "media"))]
        return (f"{self.sender} run ({self.elapsed:.1f} s, exit {self.returncode}, ended by the lab: {self.ended_by_lab}): "
                f"{' '.join(self.argv)}\n  device: {interesting}\n  result: {self.result}\n  output: ...{tail}")


@dataclass
class MediaServer:
    """An HTTP server in the workstation (serve_media): its files' URLs and the requests it got."""

    ip: str
    port: int
    log: Path
    proc: subprocess.Popen

    def url(self, name: str) -> str:
        return f"http://{self.ip}:{self.port}/{name}"

    def requests(self) -> list[dict]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self) -> None:
        _end(self.proc)

    def __enter__(self) -> MediaServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Senders:
    """Lab's real Cast senders (catt, pychromecast) and the media they serve."""

    def media_file(self, name: str = "tone.wav", seconds: float = 0.25, rate: int = 8000) -> Path:
        """A short valid WAV (16-bit mono, a 440 Hz tone) in the lab's media directory; a few KB."""
        where = self.dir / "media"
        where.mkdir(exist_ok=True)
        where.chmod(0o755)
        path = where / name
        frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                          for i in range(int(seconds * rate)))
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(frames)
        path.chmod(0o644)
        return path

    def serve_media(self, directory: Path, port: int) -> MediaServer:
        """Serve directory over HTTP from the workstation's address and port, until stop() (or the lab's close())."""
        log = self.dir / f"media-server-{port}.log"
        proc = subprocess.Popen(self.ws_argv([self.python, "-c", _MEDIA_SERVER, self.ws_ip, str(port), str(directory), str(log)]),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"})
        self.procs.append(proc)
        if proc.stdout.readline().strip() != "listening":
            _end(proc)
            raise LabError(f"media server on port {port} failed: {proc.stderr.read()}")
        return MediaServer(self.ws_ip, port, log, proc)

    def catt_cast(self, dev: LabDevice, path: Path, *, timeout: float = 30.0, extra: list[str] = ()) -> SenderRun:
        """`catt -d <dev.ip> cast <path>` in the workstation, until the device's verdict on the LOAD (see the module)."""
        why = catt_missing()
        if why:
            raise LabError(why)
        home = self.dir / "catt-home"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(home), "TMPDIR": str(home / "tmp"),
               "PYTHONDONTWRITEBYTECODE": "1"}
        argv = [str(CATT), "-d", dev.ip, "cast", *extra, str(path)]
        return self._run_sender("catt", dev, argv, env, timeout, wait_exit=False, exits_after=("LOAD_FAILED",),
                                grace=CATT_EXIT_GRACE)

    def vlc_cast(self, dev: LabDevice, path: Path, *, timeout: float = 30.0) -> SenderRun:
        """cvlc casts path to dev from the workstation, as nobody, until the device's verdict and cvlc's end (see the module).

        path must be readable by nobody (media_file()'s are). cvlc's exit status says
        nothing (0 whether the cast worked or not): the device's events do.
        """
        why = vlc_missing()
        if why:
            raise LabError(why)
        home = self.dir / "vlc-home"  # VLC writes ~/.local/share/vlc; GnuTLS reads ~/.gnutls
        home.mkdir(exist_ok=True)
        os.chown(home, NOBODY, NOBODY)
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(home)}
        argv = [shutil.which("cvlc", path=SAFE_PATH), "--no-video-title-show", str(path),
                "--sout", "#chromecast", f"--sout-chromecast-ip={dev.ip}",
                "--demux-filter=demux_chromecast",  # without it VLC ends before the device has read the stream
                "--sout-chromecast-show-perf-warning=0",  # a video to transcode would wait for a dialog headless
                "--play-and-exit"]  # ends cvlc on the device's FINISHED (or a dead link) instead of idling
        return self._run_sender("vlc", dev, argv, env, timeout, wait_exit=False, exits_after=OUTCOMES,
                                grace=VLC_EXIT_GRACE, root=False)

    def pychromecast_play(self, dev: LabDevice, url: str, *, content_type: str = "audio/wav", timeout: float = 15.0,
                          controls: bool = False, python: str | None = None) -> SenderRun:
        """The lab Python's pychromecast launches the Default Media Receiver on dev and plays url (pychromecast_sender.py).

        Waits for the script's own end (its verdict, after the device's); run.result is its JSON line.
        """
        argv = [python or self.python, str(PYCHROMECAST_SENDER), "--ip", dev.ip, "--uuid", dev.uuid, "--name", dev.name,
                "--model", dev.model, "--url", url, "--content-type", content_type, "--timeout", str(timeout)]
        if controls:
            argv.append("--controls")
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": "/", "PYTHONDONTWRITEBYTECODE": "1"}
        run = self._run_sender("pychromecast", dev, argv, env, timeout + 30, wait_exit=True)
        lines = [line for line in run.output.split("\n--- stderr ---\n", 1)[0].splitlines() if line.startswith("{")]
        run.result = json.loads(lines[-1]) if lines else None
        return run

    def _run_sender(self, name: str, dev: LabDevice, argv: list[str], env: dict, timeout: float, *,
                    wait_exit: bool, exits_after: tuple[str, ...] = (), grace: float = 0.0,
                    root: bool = True) -> SenderRun:
        """Run argv in the workstation (as nobody unless root) until the device's outcome, its exit or timeout.

        After an outcome in exits_after the sender gets grace seconds to end by itself.
        """
        runs = self.dir / "senders"
        runs.mkdir(exist_ok=True)
        n = len(list(runs.glob(f"{name}-*.out"))) + 1
        out_path, err_path = runs / f"{name}-{n}.out", runs / f"{name}-{n}.err"
        since = time.time()
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(self.ws_argv(argv, root=root), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=env, start_new_session=True)
        self.procs.append(proc)

        def outcome() -> bool:
            return any(e["event"] == "media" and e["state"] in OUTCOMES and e.get("t", 0) >= since
                       for e in self.cast_events(dev, "media"))

        deadline = start + timeout
        # Poll the device's log and the process, as Lab._wait does: the first of the two ends the wait.
        while time.monotonic() < deadline and proc.poll() is None and (wait_exit or not outcome()):
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        if proc.poll() is None and not wait_exit and outcome() and self._state_since(dev, since) in exits_after:
            try:  # the sender ends by itself after this outcome: catt reports a failure, VLC hears FINISHED or is hung up on
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        ended_by_lab = proc.poll() is None
        if ended_by_lab:
            _end(proc, first=signal.SIGINT)  # as a user's Ctrl-C ends catt's serving
        output = out_path.read_text(errors="replace") + "\n--- stderr ---\n" + err_path.read_text(errors="replace")
        events = [e for e in self.cast_events(dev) if e.get("t", 0) >= since]
        return SenderRun(name, argv, None if ended_by_lab else proc.returncode, ended_by_lab, output, events, elapsed,
                         dir=runs)

    def _state_since(self, dev: LabDevice, since: float) -> str | None:
        states = [e["state"] for e in self.cast_events(dev, "media") if e.get("t", 0) >= since and e["state"] in OUTCOMES]
        return states[0] if states else None


def _end(proc: subprocess.Popen, first: int = signal.SIGTERM) -> None:
    """End a process a sender run started, by PID: first, then SIGTERM, then SIGKILL, a few seconds each."""
    for sig in (first, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue


_MEDIA_SERVER = r"""
import functools, http.server, json, sys, time
ip, port, directory, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = open(log, "a", buffering=1)

class Handler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code="-", size="-"):
        out.write(json.dumps({"from": self.client_address[0], "request": self.requestline, "status": int(code) if isinstance(code, int) else code,
                              "range": self.headers.get("Range"), "t": time.time()}) + "\n")

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer((ip, port), functools.partial(Handler, directory=directory))
print("listening", flush=True)
server.serve_forever()
"""
