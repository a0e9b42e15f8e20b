"""castwall's benchmark: the lab at N devices, castwall's figures next to the manual way's.

Run as root from the checkout: sudo bench/run [--sizes 1,12,50] [--repeat 5] [--write]

For each N it builds the simulated LAN (tests/lab: avahi-daemon per device, real
ufw active in the workstation), lets the devices' start-up announcements pass,
then measures in the workstation namespace, process start included:
  castwall --help / --version      vs  python3 -c "import click"
  castwall discover (as nobody)    vs  pychromecast's discover_chromecasts(), avahi-browse,
                                       and vs itself with DIAL off (CASTWALL_DIAL=off)
  sudo castwall discover            (DIAL replies read off the wire as well)
  the same LAN losing multicast: sudo castwall discover (vs pychromecast), then after
  setup castwall discover and status as nobody
  castwall status (as nobody, after setup)
  sudo castwall setup --yes        vs  one `ufw allow` per device
  sudo castwall remove --all       vs  one `ufw delete` per device
  sudo castwall follow run: nothing to change; up to 5 devices moved (vs a `ufw delete` and a
  `ufw allow` per moved device); in a café's LAN, every rule withdrawn (vs one `ufw delete` per
  device); back home, every rule restored (vs one `ufw allow` per device)
and the peak RSS of discover, status and setup. Then, per N, a lab of its own per firewall
backend (an admin's nftables ruleset with policy drop; a real firewalld on a private D-Bus):
  sudo castwall setup --yes        vs  nftables: one `nft add rule` per device; firewalld: one
                                       `firewall-cmd --add-rich-rule` per device, and again with
                                       --permanent (castwall's rules survive a reload too)
  sudo castwall remove --all       vs  nftables: `nft -a -j list chain` for the handles, one
                                       `nft delete rule` per device; firewalld: one
                                       `--remove-rich-rule` per device, runtime and permanent
  the same setup through the command paths (CASTWALL_NFT=cli, CASTWALL_FIREWALLD=cli)
`--only firewalls` measures just those. Medians of --repeat runs (setup and remove: one run
per repeat, each on a fresh ruleset). Timings are reported, never asserted: this machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab import Lab, missing_requirements
from tests.lab.firewalls import firewall_missing

PYTHON = "/usr/bin/python3"  # Debian's Python and libraries, as the .deb runs
PYPI_VENV = Path(os.environ.get("CASTWALL_PYPI_VENV", "/var/tmp/castwall-pypi-venv"))
RESULTS = REPO / "bench" / "results"
TABLE = REPO / "bench" / "RESULTS.md"
README_START, README_END = "<!-- bench/run --write: start -->", "<!-- bench/run --write: end -->"
SETTLE = 3.0  # seconds for avahi's start-up announcements (about 1 s and 2 s after start) to pass
QUIET = 1.2  # seconds without questions before a timed discover or status

PYCHROMECAST = """
import time, pychromecast
t = time.perf_counter()
services, browser = pychromecast.discovery.discover_chromecasts()
pychromecast.discovery.stop_discovery(browser)
print(len(services))
"""


def apply_phase(stderr: str) -> tuple[float | None, str | None]:
    """The apply phase's seconds and the ufw path, from --debug output."""
    m = re.search(r"apply phase: \d+ step\(s\) through (.+?), then verify and save: ([\d.]+) s", stderr)
    return (float(m.group(2)), m.group(1)) if m else (None, None)


def timed(run) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = run()
    return time.perf_counter() - start, done


def rss_kib(stderr: str) -> int | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith("RSS "):
            return int(line.split()[1])
    return None


class Bench:
    def __init__(self, lab: Lab, repeat: int):
        self.lab = lab
        self.repeat = repeat
        self.env = {"PYTHONPATH": str(lab.dir / "src"), "CASTWALL_STATE_DIR": str(lab.state_dir),
                    "PYTHONDONTWRITEBYTECODE": "1"}

    def castwall(self, *args: str, root: bool = True, rss: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
        argv = [PYTHON, "-m", "castwall", *args]
        if rss:
            argv = ["/usr/bin/time", "-f", "RSS %M"] + argv
        return self.lab.ws(argv, root=root, env={**self.env, **(env or {})}, timeout=300)

    def median(self, run, check=None) -> tuple[float, list[subprocess.CompletedProcess]]:
        """Median wall time of repeat runs. Before each, a pause (not timed): a responder does not
        multicast a record again within 1 s (RFC 6762), so a run right after another would time
        the LAN's rate limit, not castwall."""
        times, results = [], []
        for _ in range(self.repeat):
            time.sleep(QUIET)
            t, done = timed(run)
            if check:
                check(done)
            times.append(t)
            results.append(done)
        return statistics.median(times), results

    def rule_args(self, dev, low_high: str) -> list[str]:
        return ["proto", "udp", "from", dev.ip, "to", "any", "port", low_high]


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench: {what}")


def services(n: int) -> int:
    return n + (1 if n > 1 else 0)  # one device also hosts a Cast group


def local_port_range(lab: Lab) -> tuple[str, str]:
    """The workstation's local port range, as castwall reads it there."""
    low, high = lab.ws(["cat", "/proc/sys/net/ipv4/ip_local_port_range"], check=True).stdout.split()
    return low, high


def measure(n: int, repeat: int) -> dict:
    print(f"== N = {n}: building the lab", flush=True)
    with Lab(devices=n, python=PYTHON) as lab:
        bench = Bench(lab, repeat)
        time.sleep(SETTLE)
        low_high = ":".join(local_port_range(lab))
        want = services(n)
        out: dict = {"n": n, "services": want}

        def found_all(done):
            expect(done.returncode == 0, f"discover failed: {done.stderr.strip()[-300:]}")
            got = len(json.loads(done.stdout)["devices"])
            expect(got == want, f"discover found {got} of {want} services")

        print("   castwall discover (mDNS and DIAL; then DIAL off; then as root, DIAL read off the wire too)", flush=True)
        out["discover"], runs = bench.median(lambda: bench.castwall("discover", "--json", root=False, rss=True), found_all)
        out["discover_rss"] = max(rss_kib(r.stderr) or 0 for r in runs)
        out["discover_mdns_only"], _ = bench.median(
            lambda: bench.castwall("discover", "--json", root=False, env={"CASTWALL_DIAL": "off"}), found_all)
        out["discover_root"], _ = bench.median(lambda: bench.castwall("discover", "--json"), found_all)

        print("   pychromecast discover_chromecasts()", flush=True)
        py = PYPI_VENV / "bin" / "python"
        t, done = timed(lambda: lab.ws([str(py), "-c", PYCHROMECAST], root=False, timeout=60))
        expect(done.returncode == 0, f"pychromecast failed (bench/run installs it): {done.stderr.strip()[-300:]}")
        out["pychromecast"], out["pychromecast_found"] = t, int(done.stdout.strip())
        print("   setup --yes / remove --all, and the same by hand with ufw", flush=True)
        setups, removes, adds, deletes, rss, applies, remove_applies = [], [], [], [], [], [], []
        for _ in range(repeat):
            time.sleep(QUIET)  # setup discovers too
            t, done = timed(lambda: bench.castwall("--debug", "setup", "--yes", rss=True))
            expect(done.returncode == 0, f"setup failed: {done.stderr.strip()[-300:]}")
            phase, out["ufw_path"] = apply_phase(done.stderr)
            applies.append(phase)
            expect(len([x for x in lab.ufw_added() if "castwall:" in x]) == n, "setup did not add one rule per device")
            setups.append(t)
            rss.append(rss_kib(done.stderr) or 0)
            if "status" not in out:  # as users run it: after setup, every device known
                print("   castwall status (after setup)", flush=True)
                out["status"], runs = bench.median(lambda: bench.castwall("status", root=False, rss=True))
                out["status_rss"] = max(rss_kib(r.stderr) or 0 for r in runs)
                expect(all(r.returncode == 0 for r in runs), "status after setup is not all in place")
            t, done = timed(lambda: bench.castwall("--debug", "remove", "--all", "--yes"))
            expect(done.returncode == 0 and not lab.ufw_added(), "remove --all left rules")
            removes.append(t)
            remove_applies.append(apply_phase(done.stderr)[0])
            t, _ = timed(lambda: [lab.ufw("allow", *bench.rule_args(d, low_high), check=True) for d in lab.devices])
            adds.append(t)
            t, _ = timed(lambda: [lab.ufw("delete", "allow", *bench.rule_args(d, low_high), check=True) for d in lab.devices])
            deletes.append(t)
        out.update(setup=statistics.median(setups), setup_apply=statistics.median(applies),
                   remove_apply=statistics.median(remove_applies), setup_rss=max(rss), remove=statistics.median(removes),
                   ufw_adds=statistics.median(adds), ufw_deletes=statistics.median(deletes))
        sender_apps(bench, out, n, low_high)
        follow_mode(bench, out, n)
        lossy(bench, out, n)
        print("   avahi-browse (last: it starts an avahi-daemon in the workstation)", flush=True)
        out["avahi_browse"], out["avahi_browse_found"] = avahi_browse(lab, want)
        expect(out["avahi_browse_found"] == want, f"avahi-browse found {out['avahi_browse_found']} of {want} services")
        return out


def sender_apps(bench: Bench, out: dict, n: int, low_high: str) -> None:
    """setup --app vlc --app catt (3 rules a device, two through castwall's ufw profiles) against the same by hand."""
    lab = bench.lab
    lab.install_profiles()
    print("   setup --yes --app vlc --app catt / remove --all, and the same by hand with ufw", flush=True)
    setups, applies, removes, adds, deletes = [], [], [], [], []

    def by_hand(verb: list[str]) -> None:
        for d in lab.devices:
            lab.ufw(*verb, *bench.rule_args(d, low_high), check=True)
            for app in ("castwall-vlc", "castwall-catt"):
                lab.ufw(*verb, "from", d.ip, "to", "any", "app", app, check=True)

    for _ in range(bench.repeat):
        time.sleep(QUIET)
        t, done = timed(lambda: bench.castwall("--debug", "setup", "--yes", "--app", "vlc", "--app", "catt"))
        expect(done.returncode == 0, f"setup --app failed: {done.stderr.strip()[-300:]}")
        expect(len([x for x in lab.ufw_added() if " app castwall-" in x]) == 2 * n, "setup --app did not add two app rules a device")
        setups.append(t)
        applies.append(apply_phase(done.stderr)[0])
        t, done = timed(lambda: bench.castwall("remove", "--all", "--yes"))
        expect(done.returncode == 0 and not lab.ufw_added(), "remove --all left rules")
        removes.append(t)
        t, _ = timed(lambda: by_hand(["allow"]))
        adds.append(t)
        t, _ = timed(lambda: by_hand(["delete", "allow"]))
        deletes.append(t)
    out.update(apps_setup=statistics.median(setups), apps_apply=statistics.median(applies), apps_remove=statistics.median(removes),
               apps_ufw_adds=statistics.median(adds), apps_ufw_deletes=statistics.median(deletes))


def follow_mode(bench: Bench, out: dict, n: int) -> None:
    """follow run: a pass with nothing to change, moves, the café and home again, each against the same ufw calls by hand.

    The manual way of a move is a `ufw delete` of the old rule and a `ufw allow`
    of the new one; of the café, one `ufw delete` per device; of home, one `ufw
    allow` per device. They are timed on rules of their own (another port
    range), so castwall's rules stay as the passes left them.
    """
    lab = bench.lab
    done = bench.castwall("setup", "--yes")
    expect(done.returncode == 0, f"setup before follow failed: {done.stderr.strip()[-300:]}")

    def passed(done):
        expect(done.returncode == 0, f"follow run failed: {done.stderr.strip()[-300:]}")

    def by_hand(verb: list[str], devices) -> float:
        t, _ = timed(lambda: [lab.ufw(*verb, *bench.rule_args(d, "1000:2000"), check=True) for d in devices])
        return t

    print("   follow run, nothing to change", flush=True)
    out["follow_idle"], runs = bench.median(lambda: bench.castwall("follow", "run", rss=True), passed)
    out["follow_rss"] = max(rss_kib(r.stderr) or 0 for r in runs)
    expect(all("nothing to change" in r.stdout for r in runs), "an idle follow pass changed something")

    movers = lab.devices[:min(n, 5)]
    homes = [d.ip for d in movers]
    print(f"   follow run after {len(movers)} device(s) moved, and the same by hand with ufw", flush=True)
    passes, manual = [], []
    for k in range(bench.repeat):
        for i, (d, home) in enumerate(zip(movers, homes, strict=True)):
            lab.move(d, home if k % 2 else f"{lab.subnet}.{200 + i}")
        time.sleep(QUIET)
        t, done = timed(lambda: bench.castwall("follow", "run"))
        passed(done)
        expect(done.stdout.count("castwall follow: moved:") == len(movers), f"follow run did not move {len(movers)} devices")
        passes.append(t)
        manual.append(by_hand(["allow"], movers) + by_hand(["delete", "allow"], movers))
    out.update(follow_moves=len(movers), follow_move=statistics.median(passes), follow_move_by_hand=statistics.median(manual))

    print("   follow run in a café's LAN (every rule withdrawn) and back home (every rule restored)", flush=True)
    lab.roam("cafe")
    out["follow_cafe"], done = timed(lambda: bench.castwall("follow", "run"))
    passed(done)
    expect(not [x for x in lab.ufw_added() if "castwall:" in x], "the café pass left castwall rules")
    lab.roam("home")
    time.sleep(QUIET)
    out["follow_home"], done = timed(lambda: bench.castwall("follow", "run"))
    passed(done)
    expect(len([x for x in lab.ufw_added() if "castwall:" in x]) == n, "the pass back home did not restore every rule")
    out["follow_allows"] = by_hand(["allow"], lab.devices)
    out["follow_deletes"] = by_hand(["delete", "allow"], lab.devices)
    done = bench.castwall("remove", "--all", "--yes")
    expect(done.returncode == 0 and not lab.ufw_added(), "remove --all after follow left rules")


def lossy(bench: Bench, out: dict, n: int) -> None:
    """The same LAN losing mDNS multicast on its way to the workstation: only DIAL finds the devices."""
    lab = bench.lab
    lab.lose_multicast()

    def found_by_dial(done):
        expect(done.returncode == 0, f"discover on the lossy LAN failed: {done.stderr.strip()[-300:]}")
        devices = [d for d in json.loads(done.stdout)["devices"] if d["kind"] != "group"]  # groups answer no DIAL
        expect(len(devices) == n and all("dial" in d["found_by"] for d in devices),
               f"discover on the lossy LAN found {len(devices)} of {n} devices by DIAL")

    print("   multicast lost: sudo castwall discover (DIAL through the packet socket)", flush=True)
    out["lossy_discover_root"], _ = bench.median(lambda: bench.castwall("discover", "--json"), found_by_dial)
    print("   multicast lost: pychromecast discover_chromecasts()", flush=True)
    t, done = timed(lambda: lab.ws([str(PYPI_VENV / "bin" / "python"), "-c", PYCHROMECAST], root=False, timeout=60))
    expect(done.returncode == 0, f"pychromecast failed: {done.stderr.strip()[-300:]}")
    out["lossy_pychromecast"], out["lossy_pychromecast_found"] = t, int(done.stdout.strip())
    time.sleep(QUIET)
    done = bench.castwall("setup", "--yes")
    expect(done.returncode == 0, f"setup on the lossy LAN failed: {done.stderr.strip()[-300:]}")
    print("   multicast lost: castwall status and discover after setup (no root)", flush=True)
    out["lossy_status"], runs = bench.median(lambda: bench.castwall("status", root=False))
    expect(all(r.returncode == 0 for r in runs), "status on the lossy LAN after setup is not all in place")
    out["lossy_discover"], _ = bench.median(lambda: bench.castwall("discover", "--json", root=False), found_by_dial)
    done = bench.castwall("remove", "--all", "--yes")
    expect(done.returncode == 0, "remove on the lossy LAN failed")
    lab.lose_multicast(False)


@dataclass(frozen=True)
class Backend:
    """A firewall backend of castwall's, in a lab of its own, and the manual way on it."""

    name: str  # Lab(firewall=name), and the prefix of its keys
    cli: dict  # the environment that sends castwall down its command path
    entries: Callable[[Lab], list[str] | None]  # the addresses castwall's rules hold (None: castwall's set is gone)
    removed: list[str] | None  # what entries() says after remove --all
    add_by_hand: Callable[[Lab, str, str], None]  # (lab, low, high): every device's rule, by hand
    delete_by_hand: Callable[[Lab, str, str], None]
    adds: str  # the manual ways, for the table ({n}: the devices)
    deletes: str


def nft_entries(lab: Lab) -> list[str] | None:
    """The addresses of the UDP elements of castwall's set; None when there is no such set."""
    done = lab.nft("-j", "list", "set", "inet", "filter", "castwall")
    if done.returncode != 0:
        return None
    concats = [e["elem"]["val"]["concat"] for item in json.loads(done.stdout)["nftables"]
               for e in item.get("set", {}).get("elem", [])]
    return [ip for ip, proto, _ in concats if proto == "udp"]


def nft_add_by_hand(lab: Lab, low: str, high: str) -> None:
    for d in lab.devices:
        lab.nft("add", "rule", "inet", "filter", "input", "ip", "saddr", d.ip, "udp", "dport", f"{low}-{high}", "accept",
                check=True)


def nft_saddr(rule: dict) -> str | None:
    for expr in rule.get("expr", []):
        match = expr.get("match", {})
        if match.get("left") == {"payload": {"protocol": "ip", "field": "saddr"}}:
            return match.get("right")
    return None


def nft_delete_by_hand(lab: Lab, low: str, high: str) -> None:
    """The admin lists the chain with its handles once, then deletes each device's rule by its handle."""
    ips = {d.ip for d in lab.devices}
    chain = json.loads(lab.nft("-a", "-j", "list", "chain", "inet", "filter", "input", check=True).stdout)["nftables"]
    handles = [item["rule"]["handle"] for item in chain if "rule" in item and nft_saddr(item["rule"]) in ips]
    expect(len(handles) == len(ips), f"found {len(handles)} of {len(ips)} hand-made nft rules")
    for handle in handles:
        lab.nft("delete", "rule", "inet", "filter", "input", "handle", str(handle), check=True)


def firewalld_entries(lab: Lab) -> list[str]:
    """castwall's ipset entries, the same at run time and in the permanent configuration."""
    runtime, permanent = (sorted(lab.firewall_cmd(*mode, "--ipset=castwall", "--get-entries", check=True).stdout.split())
                          for mode in ((), ("--permanent",)))
    expect(runtime == permanent, f"firewalld's runtime ipset {runtime} is not its permanent one {permanent}")
    return runtime


def rich_rules(verb: str) -> Callable[[Lab, str, str], None]:
    """Every device's rich rule added or removed by hand, at run time and with --permanent (what survives a reload)."""
    def by_hand(lab: Lab, low: str, high: str) -> None:
        for mode in ((), ("--permanent",)):
            for d in lab.devices:
                rule = f'rule family="ipv4" source address="{d.ip}" port port="{low}-{high}" protocol="udp" accept'
                lab.firewall_cmd(*mode, f"--{verb}-rich-rule={rule}", check=True)
    return by_hand


BACKENDS = (
    Backend("nftables", {"CASTWALL_NFT": "cli"}, nft_entries, None, nft_add_by_hand, nft_delete_by_hand,
            "{n} x nft add rule", "nft -a list chain, {n} x nft delete rule"),
    Backend("firewalld", {"CASTWALL_FIREWALLD": "cli"}, firewalld_entries, [], rich_rules("add"), rich_rules("remove"),
            "2 x {n} x firewall-cmd --add-rich-rule (runtime, --permanent)",
            "2 x {n} x firewall-cmd --remove-rich-rule (runtime, --permanent)"),
)


def debug_phases(stderr: str) -> dict[str, float]:
    """Every timed step of a --debug run (discovery, ARP, finding the firewall, apply phase ...): its seconds."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^castwall: debug: (.+): ([\d.]+) s$", stderr, re.M)}


def medians(runs: list[dict]) -> dict:
    """Per key, the median of the runs' numbers (of nested dicts too); what is not a number, the first run's."""
    out = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs if key in r]
        numbers = [v for v in values if isinstance(v, (int, float))]
        out[key] = (medians(values) if isinstance(first, dict)
                    else statistics.median(numbers) if isinstance(first, (int, float)) else first)
    return out


def castwall_cycle(bench: Bench, backend: Backend, env: dict | None = None) -> dict:
    """One setup --yes and one remove --all --yes, each checked: their seconds, apply phases, path and setup's steps."""
    lab, n = bench.lab, len(bench.lab.devices)
    time.sleep(QUIET)  # setup discovers too
    setup, done = timed(lambda: bench.castwall("--debug", "setup", "--yes", env=env))
    expect(done.returncode == 0, f"{backend.name} setup failed: {done.stderr.strip()[-300:]}")
    got = backend.entries(lab)
    expect(got is not None and len(got) == n, f"{backend.name} setup left {got} for {n} devices")
    setup_apply, path = apply_phase(done.stderr)
    remove, gone = timed(lambda: bench.castwall("--debug", "remove", "--all", "--yes", env=env))
    expect(gone.returncode == 0, f"{backend.name} remove --all failed: {gone.stderr.strip()[-300:]}")
    expect(backend.entries(lab) == backend.removed, f"{backend.name} remove --all left {backend.entries(lab)}")
    return {"setup": setup, "setup_apply": setup_apply, "path": path, "remove": remove,
            "remove_apply": apply_phase(gone.stderr)[0], "setup_phases": debug_phases(done.stderr)}


def on_backend(bench: Bench, backend: Backend) -> dict:
    """castwall's setup and remove on one backend, by hand the same, and castwall's command path: keys NAME_..."""
    lab = bench.lab
    low, high = local_port_range(lab)
    print(f"   {backend.name}: setup --yes / remove --all, and the same by hand", flush=True)
    cycles, adds, deletes = [], [], []
    for _ in range(bench.repeat):
        cycles.append(castwall_cycle(bench, backend))
        adds.append(timed(lambda: backend.add_by_hand(lab, low, high))[0])
        deletes.append(timed(lambda: backend.delete_by_hand(lab, low, high))[0])
    cli_env = " ".join(f"{k}={v}" for k, v in backend.cli.items())
    print(f"   {backend.name}: setup --yes / remove --all with {cli_env}", flush=True)
    cli = medians([castwall_cycle(bench, backend, backend.cli) for _ in range(bench.repeat)])
    fields = {**medians(cycles), "by_hand_add": statistics.median(adds), "by_hand_delete": statistics.median(deletes),
              "cli_env": cli_env, **{f"cli_{k}": v for k, v in cli.items()}}
    return {f"{backend.name}_{k}": v for k, v in fields.items()}


def firewalls(n: int, repeat: int) -> dict:
    """The firewall backends' keys at N devices, each backend in a lab of its own."""
    out: dict = {}
    for backend in BACKENDS:
        print(f"== N = {n}: building the lab on {backend.name}", flush=True)
        with Lab(devices=n, python=PYTHON, firewall=backend.name) as lab:
            time.sleep(SETTLE)
            out.update(on_backend(Bench(lab, repeat), backend))
    return out


def avahi_browse(lab: Lab, want: int) -> tuple[float | None, int | None]:
    """avahi-browse -rt on a freshly started avahi-daemon (cold cache) in the workstation.

    The lab's devices run avahi without D-Bus; here the workstation gets a
    system bus and an avahi-daemon of its own (its /run is private), as a
    desktop has. Returns the wall time and how many services it resolved.
    """
    where = lab.dir / "ws-avahi"
    where.mkdir(exist_ok=True)
    conf = where / "avahi-daemon.conf"
    conf.write_text("[server]\nuse-ipv4=yes\nuse-ipv6=no\nenable-dbus=yes\nallow-interfaces=eth0\n"
                    "[wide-area]\nenable-wide-area=no\n[publish]\ndisable-publishing=yes\n")
    log = where / "avahi.log"
    script = (f"mkdir -p /run/dbus /run/avahi-daemon && (dbus-daemon --system --fork --nopidfile) && sleep 0.3 && "
              f"exec avahi-daemon -f {conf} --no-chroot --no-rlimits --no-proc-title")
    lab._spawn(lab.ws_argv(["sh", "-c", script]), log)
    deadline = time.monotonic() + 15
    while "Server startup complete" not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline:
            return None, None
        time.sleep(0.02)
    t, done = timed(lambda: lab.ws(["avahi-browse", "-rtp", "_googlecast._tcp"], timeout=60))
    resolved = {line.split(";")[3] for line in done.stdout.splitlines() if line.startswith("=;")}
    return t, len(resolved)


def startup(repeat: int) -> dict:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}

    def run(*argv):
        return statistics.median(
            timed(lambda: subprocess.run(list(argv), capture_output=True, env=env, check=True))[0] for _ in range(repeat))

    return {
        "help": run(PYTHON, "-m", "castwall", "--help"),
        "version": run(PYTHON, "-m", "castwall", "--version"),
        "click": run(PYTHON, "-c", "import click"),
    }


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def ratio(ours: float | None, theirs: float | None, fine: bool = False) -> str:
    """theirs / ours; fine: two figures below 0.1 (the firewall rows, where 0.0x would say nothing)."""
    if not ours or not theirs:
        return "n/a"
    return f"{theirs / ours:.2g}x" if fine and theirs < 0.1 * ours else f"{theirs / ours:.1f}x"


def verdict(value: float | None, limit: float) -> str:
    return "n/a" if value is None else ("met" if value <= limit else "NOT MET")


def table(start: dict | None, sizes: list[dict], when: str) -> str:
    lines = [
        f"# castwall benchmark ({when})",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()} (Debian's libraries). Medians; `sudo bench/run --write` makes this table.",
        "Times are wall clock, process start included, in the lab's workstation namespace with ufw active "
        "(the nftables and firewalld rows: a lab of their own, with an admin's nftables ruleset, policy drop, "
        "or a real firewalld).",
    ]
    lines += startup_rows(start) if start else []
    lines += [
        "",
        "| N devices (services) | castwall | the manual way | manual / castwall | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in sizes:
        head = f"{s['n']} ({s['services']})"
        lines += (ufw_rows(s, head) if "setup" in s else []) + firewall_rows(s, head)
    return "\n".join(lines) + "\n"


def startup_rows(start: dict) -> list[str]:
    click = start["click"]
    lines = [
        "",
        "| start-up | castwall | python3 -c 'import click' | castwall / click | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in ("help", "version"):
        ok = start[key] <= 0.080 and start[key] <= 2 * click
        lines.append(f"| --{key} | {ms(start[key])} | {ms(click)} | {start[key] / click:.1f} | "
                     f"<= 80 ms and <= 2x: {'met' if ok else 'NOT MET'} |")
    return lines


def ufw_rows(s: dict, head: str) -> list[str]:
    n = s["n"]
    disc_limit = 0.8 if n == 1 else 1.0
    rss = max(s["discover_rss"], s["status_rss"], s["setup_rss"], s["follow_rss"]) / 1024
    return [
        f"| {head}: discover | {ms(s['discover'])} | pychromecast discover_chromecasts {ms(s.get('pychromecast'))}"
        f" (found {s.get('pychromecast_found', 'n/a')}) | {ratio(s['discover'], s.get('pychromecast'))} | "
        f"<= {disc_limit:g} s{' at 50' if n == 50 else ''}: {verdict(s['discover'], disc_limit) if n in (1, 50) else '-'} |",
        f"| {head}: discover | {ms(s['discover'])} | avahi-browse -rt, cold cache {ms(s.get('avahi_browse'))}"
        f" (found {s.get('avahi_browse_found', 'n/a')}) | {ratio(s['discover'], s.get('avahi_browse'))} | |",
        f"| {head}: discover, DIAL on vs off (CASTWALL_DIAL=off) | {ms(s['discover'])} | mDNS only "
        f"{ms(s['discover_mdns_only'])} | DIAL adds {(s['discover'] - s['discover_mdns_only']) * 1000:+.0f} ms | "
        f"no wall time (<= +50 ms): {'met' if s['discover'] - s['discover_mdns_only'] <= 0.05 else 'NOT MET'} |",
        f"| {head}: sudo discover (DIAL off the wire too) | {ms(s['discover_root'])} | | | |",
        f"| {head}, multicast lost: sudo discover (all {n} by DIAL) | {ms(s['lossy_discover_root'])} | pychromecast "
        f"{ms(s.get('lossy_pychromecast'))} (found {s.get('lossy_pychromecast_found', 'n/a')} of {n}) | "
        f"{ratio(s['lossy_discover_root'], s.get('lossy_pychromecast')) if s.get('lossy_pychromecast_found') == n else 'finds none'}"
        f" | <= 1.5 s: {verdict(s['lossy_discover_root'], 1.5)} |",
        f"| {head}, multicast lost: discover after setup (no root) | {ms(s['lossy_discover'])} | | | "
        f"<= 1.5 s: {verdict(s['lossy_discover'], 1.5)} |",
        f"| {head}, multicast lost: status after setup (no root; unicast mDNS) | {ms(s['lossy_status'])} | | | "
        f"<= 1.2 s: {verdict(s['lossy_status'], 1.2)} |",
        f"| {head}: setup --yes, whole | {ms(s['setup'])} | {n} x ufw allow {ms(s['ufw_adds'])} | "
        f"{ratio(s['setup'], s['ufw_adds'])} | <= 3 s at 50: {verdict(s['setup'], 3.0) if n == 50 else '-'} |",
        f"| {head}: setup --yes, apply phase ({s.get('ufw_path')}) | {ms(s.get('setup_apply'))} | {n} x ufw allow "
        f"{ms(s['ufw_adds'])} | {ratio(s.get('setup_apply'), s['ufw_adds'])} | "
        f"<= 1.5 s at 50: {verdict(s.get('setup_apply'), 1.5) if n == 50 else '-'} |",
        f"| {head}: remove --all | {ms(s['remove'])} | {n} x ufw delete {ms(s['ufw_deletes'])} | "
        f"{ratio(s['remove'], s['ufw_deletes'])} | <= 3 s at 50: {verdict(s['remove'], 3.0) if n == 50 else '-'} |",
        f"| {head}: setup --yes --app vlc --app catt ({3 * n} rules), whole | {ms(s['apps_setup'])} | {3 * n} x ufw allow "
        f"{ms(s['apps_ufw_adds'])} | {ratio(s['apps_setup'], s['apps_ufw_adds'])} | |",
        f"| {head}: setup --yes --app vlc --app catt, apply phase | {ms(s['apps_apply'])} | {3 * n} x ufw allow "
        f"{ms(s['apps_ufw_adds'])} | {ratio(s['apps_apply'], s['apps_ufw_adds'])} | |",
        f"| {head}: remove --all ({3 * n} rules) | {ms(s['apps_remove'])} | {3 * n} x ufw delete {ms(s['apps_ufw_deletes'])} | "
        f"{ratio(s['apps_remove'], s['apps_ufw_deletes'])} | |",
        f"| {head}: follow run, nothing to change | {ms(s['follow_idle'])} | | | |",
        f"| {head}: follow run, {s['follow_moves']} device(s) moved | {ms(s['follow_move'])} | {s['follow_moves']} x "
        f"(ufw delete + ufw allow) {ms(s['follow_move_by_hand'])} | {ratio(s['follow_move'], s['follow_move_by_hand'])} | |",
        f"| {head}: follow run in a café (every rule withdrawn) | {ms(s['follow_cafe'])} | {n} x ufw delete "
        f"{ms(s['follow_deletes'])} | {ratio(s['follow_cafe'], s['follow_deletes'])} | |",
        f"| {head}: follow run back home (every rule restored) | {ms(s['follow_home'])} | {n} x ufw allow "
        f"{ms(s['follow_allows'])} | {ratio(s['follow_home'], s['follow_allows'])} | |",
        f"| {head}: status (no root, after setup) | {ms(s['status'])} | | | "
        f"<= 1.2 s at 50: {verdict(s['status'], 1.2) if n == 50 else '-'} |",
        f"| {head}: peak RSS discover / status / setup / follow run | {s['discover_rss'] // 1024} / "
        f"{s['status_rss'] // 1024} / {s['setup_rss'] // 1024} / {s['follow_rss'] // 1024} MB | | | "
        f"<= 60 MB: {'met' if rss <= 60 else 'NOT MET'} |",
    ]


def firewall_rows(s: dict, head: str) -> list[str]:
    """The rows of each firewall backend measured at this size."""
    lines = []
    n = s["n"]
    for backend in BACKENDS:
        if f"{backend.name}_setup" not in s:
            continue

        def get(key: str, backend=backend):  # called in this iteration only
            return s.get(f"{backend.name}_{key}")

        def row(what: str, ours: float | None, theirs_text: str, theirs: float | None, extra: str = "",
                backend=backend) -> str:
            return (f"| {head}: {backend.name} {what} | {ms(ours)}{extra} | {theirs_text.format(n=n)} {ms(theirs)} | "
                    f"{ratio(ours, theirs, fine=True)} | |")

        lines += [
            row("setup --yes, whole", get("setup"), backend.adds, get("by_hand_add")),
            row(f"setup --yes, apply phase ({get('path')})", get("setup_apply"), backend.adds, get("by_hand_add")),
            row("remove --all", get("remove"), backend.deletes, get("by_hand_delete"),
                f" (apply phase {ms(get('remove_apply'))})"),
            row(f"setup --yes through {get('cli_path')} ({get('cli_env')}), whole", get("cli_setup"), backend.adds,
                get("by_hand_add"), f" (apply phase {ms(get('cli_setup_apply'))})"),
        ]
    return lines


def size(n: int, repeat: int, only: str | None) -> dict:
    """Everything at N devices: the ufw lab's keys (unless only the firewalls), then each firewall backend's."""
    out = {"n": n, "services": services(n)} if only else measure(n, repeat)
    return {**out, **firewalls(n, repeat)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/run")
    parser.add_argument("--sizes", default="1,12,50")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true", help=f"also write {TABLE.relative_to(REPO)}")
    parser.add_argument("--only", choices=["firewalls"],
                        help="measure only the firewall backends' rows (nftables, firewalld); default: everything")
    args = parser.parse_args()
    if args.only and args.write:
        parser.error("--write takes the whole table: not with --only")
    why = missing_requirements() or next(filter(None, (firewall_missing(b.name) for b in BACKENDS)), None)
    if why:
        print(f"bench: {why}", file=sys.stderr)
        return 4
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    start = None if args.only else startup(max(args.repeat, 9))
    sizes = [size(int(n), args.repeat, args.only) for n in args.sizes.split(",")]
    text = table(start, sizes, when)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}.md").write_text(text)
    (RESULTS / f"{stamp}.json").write_text(json.dumps({"startup": start, "sizes": sizes}, indent=2))
    if args.write:
        write(text)
    return 0


def write(text: str) -> None:
    """The table in bench/RESULTS.md, and in the README between its two markers."""
    TABLE.write_text(text)
    readme = REPO / "README.md"
    head, mark, rest = readme.read_text().partition(README_START)
    _, end, tail = rest.partition(README_END)
    if mark and end:
        body = text.split("\n", 2)[2]  # without the title line
        readme.write_text(f"{head}{README_START}\n{body}{README_END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
