"""Debian's Chromium in the lab's workstation, and what it did, device by device.

chromium_discovery(lab) serves a page from http://localhost (a secure
context) in the workstation that calls

    new PresentationRequest(["cast:CC1AD845"]).getAvailability()

which starts Chromium's Media Router discovery, runs headless Chromium on it
as root, and reads what the devices' cast_device.py logged: per device (by
dashed UUID) whether Chromium fetched its DIAL device description ("dial":
it got the M-SEARCH reply through the firewall) and whether it opened TCP to
its Cast port 8009 ("cast": it found the device, by mDNS or DIAL).

What Chromium 156 does here (measured in the lab; times from launch):
- DIAL from about 0.4 s: four M-SEARCHes (ST dial, MX 1) one second apart,
  from one UDP socket on an ephemeral port; a reply to one M-SEARCH is
  acted on when the next goes out: the description fetch at the 2nd
  M-SEARCH, the Cast connection 2 s later (about the 4th).
- mDNS from about 3.3 s (3 s after its device lister starts, whatever DIAL
  found): QM questions for _googlecast._tcp.local. from port 5353 at +0, +1,
  +3 s. A device found by mDNS gets its connection after a random delay of
  up to 5 s (CastMediaSinkServiceImpl::OpenChannelsWithRandomizedDelay).
- Our device completes TLS on the Cast port; Chromium then sends a
  deviceauth challenge, which the lab device cannot sign and leaves
  unanswered, so Chromium gives up on that channel and reconnects later.
No default route, no feature flag and no user gesture are needed. Debian's
/etc/chromium.d/default-flags passes --media-router=0, which Chromium 156
ignores.

So the wait: an expected connection or fetch ends it as soon as it is seen;
an expected absence only once every device logged Chromium's 4th M-SEARCH
and its first mDNS question, and the windows in which the fetch and the
connection would have come have passed (the constants below). That
assumes, as holds in the lab, that a device answers Chromium's first
mDNS question (avahi stays silent only within a second of multicasting
the same records, and its start-up announcements are over by then).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab import SAFE_PATH, Lab, LabError, dashed

CHROMIUM = "/usr/bin/chromium"
DIAL_ST = "urn:dial-multiscreen-org:service:dial:1"
CAST_SERVICE = "_googlecast._tcp.local."
CAST_PORT = 8009
DESCRIPTION = "/ssdp/device-desc.xml"
DIAL_REQUESTS = 4  # Chromium's kDialMaxRequests, one second apart

GRACE = 2.0  # for the lab's own latencies (a log line written, a process scheduled), generous for a loaded 2-core machine
# How long after its last M-SEARCH Chromium still takes a reply (kDialResponseTimeoutSecs; the
# devices' MX, if longer), then the description fetch that reply triggers.
DIAL_RESPONSE_TIMEOUT = 2.0
# From a fetched description to the Cast connection (measured: 2.0 s).
DIAL_TO_CAST = 2.0
# From Chromium's first mDNS question to its connection to a device found so: the answer
# (measured 0.02-0.12 s), then Chromium's random delay of up to 5 s.
MDNS_TO_CAST = 0.2 + 5.0

FLAGS = [
    "--headless=new",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    # Each checked to leave Media Router discovery (DIAL and mDNS) running:
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-breakpad",
    "--mute-audio",
    "--password-store=basic",
    # Chromium's own account of the discovery, in chromium.log:
    "--enable-logging=stderr",
    "--v=0",
    "--vmodule=service_discovery_device_lister=1,cast_socket=1",
]

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>castwall lab</title>
<script>
function report(what) { fetch("/report?" + encodeURIComponent(what)).catch(() => {}); }
try {
  const request = new PresentationRequest(["cast:CC1AD845"]);
  request.getAvailability().then(
    (availability) => {
      report("availability=" + availability.value);
      availability.onchange = () => report("availability=" + availability.value);
    },
    (error) => report("error=" + error.name));
  report("asked");
} catch (error) {
  report("error=" + error.name);
}
</script>
"""

# The page's server, in the workstation: 127.0.0.1 on a free port, told on stdout.
_SERVER = r"""
import http.server, json, sys, time
page, log = sys.argv[1], sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "t": time.time()}) + "\n")
        body = open(page, "rb").read() if self.path == "/" else b""
        self.send_response(200 if self.path == "/" or self.path.startswith("/report?") else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def missing() -> str | None:
    """Why the harness cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"the Chromium harness needs {CHROMIUM} (scripts/bootstrap installs chromium)"
    return None


@dataclass
class ChromiumRun:
    devices: dict[str, dict[str, bool]]  # dashed uuid -> {"dial": fetched its description, "cast": connected to 8009}
    msearch_ports: list[int]  # the source ports of Chromium's M-SEARCHes, as the devices saw them, first first
    details: dict[str, dict] = field(default_factory=dict)  # dashed uuid -> what its logs show (counts, times)
    page: list[str] = field(default_factory=list)  # what the page reported ("asked", "availability=false", ...)
    elapsed: float = 0.0
    dir: Path = Path("/nonexistent")  # this run's files: chromium.log, the profile, the page's log

    def found(self, what: str) -> set[str]:
        """The devices for which what ("dial" or "cast") happened."""
        return {uuid for uuid, outcome in self.devices.items() if outcome[what]}

    def __str__(self) -> str:
        lines = [f"Chromium run in {self.dir} ({self.elapsed:.1f} s), M-SEARCH ports {self.msearch_ports}, page {self.page}"]
        lines += [f"  {uuid}: {self.devices[uuid]} {self.details[uuid]}" for uuid in self.devices]
        return "\n".join(lines)


def _device_view(lab: Lab, dev, since: float) -> dict:
    """What one device's log shows of the workstation since since (wall clock)."""
    ws = lab.ws_ip
    events = [e for e in lab.cast_events(dev) if e.get("t", 0) >= since]
    msearches = [e for e in events if e["event"] == "msearch" and e["from"] == ws and e["st"] in (DIAL_ST, "ssdp:all")]
    if msearches:  # one cycle: Chromium's one socket (a new cycle, with a new port, starts only after 120 s)
        msearches = [e for e in msearches if e["sport"] == msearches[0]["sport"]]
    fetches = [e for e in events if e["event"] == "http" and e["from"] == ws and e["path"].split("?")[0] == DESCRIPTION]
    connects = [e for e in events if e["event"] == "connect" and e["from"] == ws]
    mdns = [e for e in events if e["event"] == "mdns" and e["from"] == ws
            and any(str(q[0]).lower() == CAST_SERVICE for q in e["questions"])]
    return {
        "msearches": msearches,
        "replies": [e for e in events if e["event"] == "reply" and e["to"] == ws],
        "fetches": fetches,
        "cast": [e for e in connects if e["port"] == CAST_PORT],
        "other_connects": [e for e in connects if e["port"] != CAST_PORT],
        "other_http": [e for e in events if e["event"] == "http" and e["from"] == ws and e not in fetches],
        "mdns": mdns,
    }


def _settle_times(view: dict) -> tuple[float | None, float | None]:
    """When the absence of a fetch, and of a connection, is final for this device (None: not yet known)."""
    ms = view["msearches"]
    if len(ms) < DIAL_REQUESTS:
        return None, None
    last = ms[DIAL_REQUESTS - 1]
    try:
        mx = min(max(int(last["mx"]), 1), 5)
    except (TypeError, ValueError):
        mx = 1
    dial = last["t"] + max(mx, DIAL_RESPONSE_TIMEOUT) + GRACE
    if not view["mdns"]:
        return dial, None
    cast = max(dial + DIAL_TO_CAST + GRACE, view["mdns"][0]["t"] + MDNS_TO_CAST + GRACE)
    return dial, cast


def _end(proc: subprocess.Popen | None) -> None:
    """End a process the harness started, and its process group, by PID."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 3)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _sweep(lab: Lab) -> None:
    """Kill any Chromium process left in the lab's workstation (a helper that left the process group)."""
    pids = lab._sh("ip", "netns", "pids", f"{lab.prefix}-ws", check=False).stdout.split()
    for pid in pids:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.startswith("/usr/lib/chromium/"):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def chromium_discovery(lab: Lab, expect: dict | None = None, *, timeout: float = 40.0,
                       flags: list[str] | tuple[str, ...] = ()) -> ChromiumRun:
    """Run Chromium in the workstation until its discovery's outcome for every device is known.

    expect, optional: {"dial": bool, "cast": bool} for every device, or
    {dashed uuid: {"dial": bool, "cast": bool}} (either key may be left out).
    An expected True ends the wait as soon as it is seen; an expected False
    (and, without expect, anything not seen yet) only once it is final (see
    the module's docstring). The run also ends as soon as an expectation is
    contradicted. Raises LabError after timeout seconds, or if Chromium
    exits early. Chromium and the page's server are always ended.
    """
    why = missing()
    if why:
        raise LabError(why)
    uuids = {dashed(d.uuid): d for d in lab.devices}
    if expect is None:
        wanted = {u: {} for u in uuids}
    elif set(expect) <= {"dial", "cast"}:
        wanted = {u: dict(expect) for u in uuids}
    else:
        unknown = set(expect) - set(uuids)
        if unknown:
            raise ValueError(f"no such lab devices: {sorted(unknown)}")
        wanted = {u: dict(expect.get(u, {})) for u in uuids}

    runs = sorted(lab.dir.glob("chromium-*"))
    run_dir = lab.dir / f"chromium-{len(runs) + 1}"
    (run_dir / "profile").mkdir(parents=True)
    (run_dir / "index.html").write_text(PAGE)
    page_log = run_dir / "page.log"
    page_log.touch()
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(run_dir)}
    server = chromium = None
    try:
        with open(run_dir / "server.err", "wb") as err:
            server = subprocess.Popen(lab.ws_argv([lab.python, "-c", _SERVER, str(run_dir / "index.html"), str(page_log)]),
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                                      start_new_session=True, env=env)
        port = server.stdout.readline().strip()
        if not port.isdigit():
            raise LabError(f"the page's server did not start; see {run_dir}/server.err")
        argv = [CHROMIUM, *FLAGS, *flags, f"--user-data-dir={run_dir / 'profile'}", f"http://localhost:{port}/"]
        start = time.time()
        with open(run_dir / "chromium.log", "wb") as log:
            chromium = subprocess.Popen(lab.ws_argv(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while True:
            now = time.time()
            views = {u: _device_view(lab, d, start) for u, d in uuids.items()}
            seen = {u: {"dial": bool(v["fetches"]), "cast": bool(v["cast"])} for u, v in views.items()}
            settled = {u: _settle_times(v) for u, v in views.items()}
            contradicted = any(seen[u][k] and not want for u in uuids for k, want in wanted[u].items())
            done = contradicted or all(
                seen[u][k] or (wanted[u].get(k) is not True and settled[u][i] is not None and now >= settled[u][i])
                for u in uuids for i, k in enumerate(("dial", "cast")))
            if done:
                break
            if time.monotonic() > deadline:
                raise LabError(f"Chromium's discovery not settled after {timeout:g} s; logs in {run_dir} and the devices' "
                               f"cast.log in {lab.dir}/d*/")
            if chromium.poll() is not None:
                raise LabError(f"Chromium exited early (status {chromium.returncode}); see {run_dir}/chromium.log")
            time.sleep(0.05)
        elapsed = time.time() - start
    finally:
        _end(chromium)
        _sweep(lab)
        _end(server)

    ports: list[int] = []
    for v in views.values():
        for e in v["msearches"]:
            if e["sport"] not in ports:
                ports.append(e["sport"])
    details = {}
    for u, v in views.items():
        details[u] = {
            "msearches": len(v["msearches"]),
            "replies": len(v["replies"]),
            "fetches": len(v["fetches"]),
            "connects": sorted({e["port"] for e in v["cast"] + v["other_connects"]}),
            "other_paths": [e["path"] for e in v["other_http"]],
            "mdns_questions": len(v["mdns"]),
            "first_msearch": round(v["msearches"][0]["t"] - start, 3) if v["msearches"] else None,
            "first_fetch": round(v["fetches"][0]["t"] - start, 3) if v["fetches"] else None,
            "first_cast": round(v["cast"][0]["t"] - start, 3) if v["cast"] else None,
            "first_mdns": round(v["mdns"][0]["t"] - start, 3) if v["mdns"] else None,
        }
    page = []
    for line in page_log.read_text().splitlines():
        path = json.loads(line)["path"]
        if path.startswith("/report?"):
            page.append(path[len("/report?"):].replace("%3D", "="))
    return ChromiumRun(devices=seen, msearch_ports=ports, details=details, page=page, elapsed=elapsed, dir=run_dir)
