"""A simulated LAN of Cast devices in Linux network namespaces, with real ufw.

Layout (all namespaces are the lab's own; the host's network is never touched):

    <p>-br   a bridge (multicast snooping off) joining every host below
    <p>-ws   the workstation: real ufw, default deny, on a private copy of
             /etc/ufw and its own /run (a mount namespace kept open by a
             sleeping process); castwall runs here
    <p>-dN   one namespace per Cast device, each with its own address and MAC,
             announcing _googlecast._tcp with avahi-daemon (or the lab's
             RFC-strict responder); one device also hosts a Cast group.
             Next to it cast_device.py answers DIAL as a real Chromecast
             (M-SEARCH on UDP 1900, the device description on TCP 8008),
             accepts the Cast port 8009 and logs it all to <dir>/cast.log
    <p>-ot   a host that is not a Cast device (it announces a printer)

lose_multicast() makes the LAN drop mDNS multicast towards the workstation
(an nft bridge table in <p>-br); chromium_discovery() runs Debian's Chromium
in the workstation and reports what it found (chromium.py).

Needs root, iproute2, ufw, avahi-daemon (and nft, chromium for those two).
Everything it starts is recorded and ended by PID on close(), which also
deletes the namespaces, even after a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parents[2]
RESPONDER = Path(__file__).with_name("responder.py")
HOSTILE = Path(__file__).with_name("hostile.py")
HOSTILE_DIAL = Path(__file__).with_name("hostile_dial.py")
DHCP_CLIENT = Path(__file__).with_name("dhcp_client.py")
CAST_DEVICE = Path(__file__).with_name("cast_device.py")
MDNS_PROBE = Path(__file__).with_name("mdns_probe.py")
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534

CATALOGUE = [
    ("Living Room TV", "Chromecast"),
    ("Kitchen speaker", "Google Home Mini"),
    ("Bedroom TV", "Chromecast Ultra"),
    ("Office display", "Google Nest Hub"),
    ("Den speaker", "Nest Audio"),
    ("Garage TV", "Chromecast HD"),
]
GROUP_HOST = 1  # index of the device that hosts the Cast group
GROUP_NAME = "Whole House"
GROUP_PORT = 32161
LOSSY_TABLE = "lab_lossy_lan"  # the bridge's nft table of lose_multicast()


def _hex_id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def dashed(uuid_hex: str) -> str:
    h = uuid_hex
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class LabDevice:
    index: int
    name: str
    model: str
    uuid: str  # 32 hex digits, as announced in TXT id=
    ip: str
    mac: str
    ns: str
    strict: bool = False
    group: tuple[str, str, int] | None = None  # (name, uuid hex, port)
    dir: Path = field(default=Path("/nonexistent"))

    @property
    def kind(self) -> str:
        return "audio" if self.model in ("Google Home Mini", "Nest Audio") else "video"


class LabError(RuntimeError):
    pass


@dataclass
class HostileDial:
    """The hostile DIAL host of Lab.add_hostile_dial: its namespace, and what it was asked."""

    ns: str
    log: Path

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def hostile_case(label: bytes, uuid_hex: str, *, addresses: list[str], name: bytes = b"Cast", model: bytes = b"Chromecast",
                 target: str = "evil.local.", port: int | None = 8009, txt: bytes | None = None) -> dict:
    """One crafted announcement for Lab.add_hostile (see hostile.py for the fields)."""
    if txt is None:
        entries = [b"id=" + uuid_hex.encode(), b"md=" + model, b"fn=" + name, b"ve=05"]
        txt = b"".join(bytes([len(e)]) + e for e in entries)
    return {"instance": label.hex(), "target": target, "port": port, "txt": txt.hex(), "addresses": list(addresses)}


def missing_requirements() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    for tool in ("ip", "ufw", "avahi-daemon", "nsenter", "unshare", "setpriv"):
        if shutil.which(tool, path=SAFE_PATH) is None:
            return f"the lab needs {tool} (run scripts/test, which installs it)"
    return None


class Lab:
    def __init__(self, devices: int = 3, *, strict: int = 0, subnet: str = "192.168.77", python: str | None = None,
                 no_dial: tuple[int, ...] | list[int] | set[int] = ()):
        if not 0 <= devices + strict <= 150:
            raise ValueError("between 0 and 150 devices")
        self.count, self.strict_count = devices, strict
        self.no_dial = set(no_dial)  # indices of devices that never answer an M-SEARCH
        self.subnet = subnet
        self.python = python or sys.executable
        self.prefix = f"cw{os.getpid() % 10000:04d}{os.urandom(2).hex()}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.dir.chmod(0o755)  # castwall also runs as nobody in the lab
        self.ws_ip = f"{subnet}.10"
        self.other_ip = f"{subnet}.50"
        self.state_dir = self.dir / "state"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.devices: list[LabDevice] = []
        self.ws_pid: int | None = None

    # --- building -----------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _sh(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={"PATH": SAFE_PATH, "LANG": "C"})
        if check and done.returncode != 0:
            raise LabError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
        return done

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env={"PATH": SAFE_PATH, "LANG": "C"},
            )
        self.procs.append(proc)
        return proc

    def _add_ns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self._sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        self._sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _attach(self, ns: str, port: str, ip: str, mac: str | None = None) -> None:
        br = self.namespaces[0]
        self._sh("ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._sh("ip", "-n", br, "link", "set", port, "master", "br0", "up")
        if mac:
            self._sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        self._sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        self._sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def _build(self) -> None:
        # castwall also runs as nobody here, who may not reach the checkout: run a copy.
        shutil.copytree(REPO / "castwall", self.dir / "src" / "castwall", ignore=shutil.ignore_patterns("__pycache__"))
        # Byte-compiled as an installed package is (dh_python3 and pip do it), so a run does not
        # compile castwall's modules first; nobody may not write them there.
        self._sh(self.python, "-m", "compileall", "-q", str(self.dir / "src" / "castwall"))
        br = self._add_ns("br")
        self._sh("ip", "-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        self._sh("ip", "-n", br, "link", "set", "br0", "up")

        ws = self._add_ns("ws")
        self._attach(ws, "ws", self.ws_ip)
        etc_ufw, run = self.dir / "etc-ufw", self.dir / "ws-run"
        shutil.copytree("/etc/ufw", etc_ufw, symlinks=True)
        run.mkdir()
        self.state_dir.mkdir(mode=0o755)
        ready = self.dir / "ws-ready"
        script = f"mount --bind {etc_ufw} /etc/ufw && mount --bind {run} /run && touch {ready} && exec sleep infinity"
        proc = self._spawn(["ip", "netns", "exec", ws, "unshare", "--mount", "--propagation", "private", "sh", "-c", script], self.dir / "ws.log")
        self._wait(lambda: ready.exists(), "workstation mount namespace", proc)
        self.ws_pid = proc.pid

        total = self.count + self.strict_count
        for i in range(total):
            name, model = CATALOGUE[i] if i < len(CATALOGUE) else (f"Cast device {i + 1}", "Chromecast")
            dev = LabDevice(
                index=i,
                name=name,
                model=model,
                uuid=_hex_id(f"castwall-lab-device-{i}"),
                ip=f"{self.subnet}.{101 + i}",
                mac=f"02:ca:57:00:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}",
                ns=self._add_ns(f"d{i + 1}"),
                strict=i >= self.count,
            )
            if i == GROUP_HOST and not dev.strict:
                dev.group = (GROUP_NAME, _hex_id("castwall-lab-group"), GROUP_PORT)
            dev.dir = self.dir / f"d{i + 1}"
            dev.dir.mkdir()
            self._attach(dev.ns, f"d{i + 1}", dev.ip, dev.mac)
            self.devices.append(dev)
            if dev.strict:
                self._start_strict(dev)
            else:
                self._start_avahi(dev.ns, dev.dir, dev.uuid, self._cast_services(dev))
            self._start_cast_device(dev)

        other = self._add_ns("ot")
        self._attach(other, "ot", self.other_ip, "02:ca:57:ff:00:01")
        self.other_ns = other
        odir = self.dir / "ot"
        odir.mkdir()
        printer = self._service_xml("Office printer", "_ipp._tcp", 631, ["txtvers=1", "ty=Lab Printer"])
        self._start_avahi(other, odir, "office-printer", {"printer.service": printer})

        for dev in self.devices:
            if dev.strict:
                self._wait(lambda d=dev: '"ready"' in (d.dir / "responder.log").read_text(), f"responder of {dev.name}")
            else:
                n = 2 if dev.group else 1
                self._wait(lambda d=dev, n=n: (d.dir / "avahi.log").read_text().count("successfully established") >= n, f"avahi of {dev.name}")
            self._wait(lambda d=dev: '"ready"' in (d.dir / "cast.log").read_text(), f"DIAL and Cast ports of {dev.name}")
        self._wait(lambda: "successfully established" in (odir / "avahi.log").read_text(), "avahi of the printer")
        self.ufw("--force", "enable", check=True)

    def _wait(self, ready, what: str, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except FileNotFoundError:
                pass
            if proc is not None and proc.poll() is not None:
                raise LabError(f"{what} exited early (status {proc.returncode})")
            time.sleep(0.05)
        raise LabError(f"{what} not ready after {timeout:g} s; logs in {self.dir}")

    @staticmethod
    def _service_xml(name: str, stype: str, port: int, txt: list[str], subtypes: list[str] = ()) -> str:
        lines = [
            "<?xml version=\"1.0\" standalone='no'?>",
            '<!DOCTYPE service-group SYSTEM "avahi-service.dtd">',
            "<service-group>",
            f"  <name>{escape(name)}</name>",
            "  <service>",
            f"    <type>{stype}</type>",
            *(f"    <subtype>{s}</subtype>" for s in subtypes),
            f"    <port>{port}</port>",
            *(f"    <txt-record>{escape(t)}</txt-record>" for t in txt),
            "  </service>",
            "</service-group>",
        ]
        return "\n".join(lines) + "\n"

    def _cast_services(self, dev: LabDevice) -> dict[str, str]:
        # The records a real Cast device publishes (values shortened where private).
        txt = [f"id={dev.uuid}", f"cd={dev.uuid[:16].upper()}", "rm=", "ve=05", f"md={dev.model}",
               "ic=/setup/icon.png", f"fn={dev.name}", "ca=201221" if dev.kind == "video" else "ca=199172",
               "st=0", "bs=FA8FCA000000", "nf=1", "rs="]
        prefix = "Google-Home-Mini" if dev.model == "Google Home Mini" else dev.model.replace(" ", "-")
        services = {"cast.service": self._service_xml(f"{prefix}-{dev.uuid}", "_googlecast._tcp", 8009, txt,
                                                       ["_CC1AD845._sub._googlecast._tcp"])}
        if dev.group:
            gname, guuid, gport = dev.group
            gtxt = [f"id={guuid}", f"cd={guuid[:16].upper()}", "rm=", "ve=05", "md=Google Cast Group",
                    "ic=/setup/icon.png", f"fn={gname}", "ca=199204", "st=0", "bs=FA8FCA000001", "nf=1", "rs="]
            services["group.service"] = self._service_xml(f"Google-Cast-Group-{guuid}", "_googlecast._tcp", gport, gtxt)
        return services

    def _start_avahi(self, ns: str, where: Path, hostname: str, services: dict[str, str]) -> None:
        svc, run = where / "services", where / "run"
        svc.mkdir()
        run.mkdir()
        for fname, text in services.items():
            (svc / fname).write_text(text)
        conf = where / "avahi-daemon.conf"
        conf.write_text(
            "[server]\n"
            f"host-name={hostname}\nuse-ipv4=yes\nuse-ipv6=no\nenable-dbus=no\nallow-interfaces=eth0\n"
            "ratelimit-interval-usec=1000000\nratelimit-burst=1000\n"
            "[wide-area]\nenable-wide-area=no\n"
            "[publish]\npublish-hinfo=no\npublish-workstation=no\npublish-addresses=yes\n"
        )
        script = (
            f"mount --bind {svc} /etc/avahi/services && mount --bind {run} /run && mkdir -p /run/avahi-daemon && "
            f"exec avahi-daemon -f {conf} --no-drop-root --no-chroot --no-rlimits --no-proc-title"
        )
        self._spawn(["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script], where / "avahi.log")

    def _start_strict(self, dev: LabDevice) -> None:
        argv = ["ip", "netns", "exec", dev.ns, self.python, str(RESPONDER), "--ip", dev.ip, "--uuid", dev.uuid,
                "--name", dev.name, "--model", dev.model, "--log", str(dev.dir / "responder.log")]
        self._spawn(argv, dev.dir / "responder.out")

    def _start_cast_device(self, dev: LabDevice) -> None:
        """DIAL (SSDP, the device description on 8008) and the Cast port 8009, as a real device has them."""
        argv = ["ip", "netns", "exec", dev.ns, self.python, str(CAST_DEVICE), "--ip", dev.ip, "--uuid", dev.uuid,
                "--name", dev.name, "--model", dev.model, "--log", str(dev.dir / "cast.log")]
        if dev.group:
            argv += ["--group-port", str(dev.group[2])]
        if dev.index in self.no_dial:
            argv.append("--no-dial")
        self._spawn(argv, dev.dir / "cast.out")

    # --- using --------------------------------------------------------------

    def ws_argv(self, argv: list[str], *, root: bool = True) -> list[str]:
        wrap = ["nsenter", "-t", str(self.ws_pid), "-n", "-m", "--"]
        if not root:
            wrap += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
        return wrap + argv

    def ws(self, argv: list[str], *, root: bool = True, env: dict | None = None, check: bool = False,
           timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
        full_env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": "/", **(env or {})}
        done = subprocess.run(self.ws_argv(argv, root=root), capture_output=True, text=True, timeout=timeout,
                              env=full_env, input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise LabError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def castwall(self, *args: str, root: bool = True, input: str | None = None, python: str | None = None,
                 timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        env = {"PYTHONPATH": str(self.dir / "src"), "CASTWALL_STATE_DIR": str(self.state_dir), "PYTHONDONTWRITEBYTECODE": "1",
               **(env or {})}
        return self.ws([python or self.python, "-m", "castwall", *args], root=root, env=env, input=input, timeout=timeout)

    def ufw(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return self.ws(["ufw", *args], check=check)

    def ufw_added(self) -> list[str]:
        """The `ufw show added` rule lines, in order."""
        out = self.ufw("show", "added", check=True).stdout
        return [line for line in out.splitlines() if line.startswith("ufw ")]

    def in_ns(self, ns: str, argv: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return self._sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)

    def udp_reaches(self, senders: dict[str, str], port: int, listen: float = 1.0) -> set[str]:
        """Which senders' UDP datagrams to the workstation's port arrive (namespace -> label)."""
        def send() -> None:
            for label, ns in senders.items():
                self.in_ns(ns, [self.python, "-c", _SENDER, self.ws_ip, str(port), label])

        return self._listen([_LISTENER, str(port), str(listen)], send, listen, "UDP listener")

    def _listen(self, script: list[str], send, listen: float, what: str) -> set[str]:
        """Run a listener script in the workstation, send once it listens, and return the labels it heard."""
        listener = subprocess.Popen(
            self.ws_argv([self.python, "-c", *script]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            if listener.stdout.readline().strip() != "listening":
                raise LabError(f"{what} failed: {listener.stderr.read()}")
            send()
            out, _ = listener.communicate(timeout=listen + 10)
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
        return set(json.loads(out))

    def multicast_reaches(self, senders: dict[str, LabDevice], group: str, port: int, listen: float = 3.0) -> set[str]:
        """Which devices' datagrams to group:port reach a listener in the workstation (label -> device).

        The listener ends as soon as every sender's datagram arrived, else after listen seconds.
        """
        def send() -> None:
            for label, dev in senders.items():
                self.in_ns(dev.ns, [self.python, "-c", _MC_SENDER, group, str(port), dev.ip, label])

        return self._listen([_MC_LISTENER, group, str(port), self.ws_ip, str(listen), *senders], send, listen,
                            "multicast listener")

    def device(self, name: str) -> LabDevice:
        return next(d for d in self.devices if d.name == name)

    def move(self, dev: LabDevice, new_ip: str) -> None:
        """Give a device a new address, as a DHCP server without a reservation might."""
        log = dev.dir / "avahi.log"
        # Delete first: removing a primary address also removes its secondaries.
        self._sh("ip", "-n", dev.ns, "addr", "del", f"{dev.ip}/24", "dev", "eth0")
        self._sh("ip", "-n", dev.ns, "addr", "add", f"{new_ip}/24", "dev", "eth0")
        dev.ip = new_ip
        self._wait(lambda: f"Registering new address record for {new_ip}" in log.read_text(), f"{dev.name} at {new_ip}")
        time.sleep(1.5)  # avahi probes the new record (3 x 250 ms) before it answers with it

    def cast_events(self, dev: LabDevice, event: str | None = None) -> list[dict]:
        """What the device's DIAL and Cast ports saw (cast_device.py's JSON lines), oldest first."""
        try:
            lines = (dev.dir / "cast.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:  # a line being written
                continue
        return [e for e in events if event is None or e["event"] == event]

    def wait_for_event(self, dev: LabDevice, event: str, timeout: float = 5.0, **fields) -> dict:
        """The device's first logged event of that kind (with those field values), waiting for it up to timeout."""
        found: list[dict] = []

        def seen() -> bool:
            found[:] = [e for e in self.cast_events(dev, event) if all(e.get(k) == v for k, v in fields.items())]
            return bool(found)

        self._wait(seen, f"{event} event of {dev.name}", timeout=timeout)
        return found[0]

    def _bridge_ns(self) -> str:
        """The LAN's namespace, checked to be this lab's own: nft must never run anywhere else."""
        br = f"{self.prefix}-br"
        if br not in self.namespaces:
            raise LabError("the lab's bridge namespace is gone")
        return br

    def lose_multicast(self, lost: bool = True) -> None:
        """Make the LAN lose mDNS multicast on its way to the workstation (as a Wi-Fi AP may), or stop that.

        An nft bridge table in the bridge's namespace, and nowhere else, drops
        frames to 224.0.0.251 as they leave the bridge through the
        workstation's port; unicast and SSDP (239.255.255.250) still pass.
        """
        if shutil.which("nft", path=SAFE_PATH) is None:
            raise LabError("lose_multicast needs nft (scripts/bootstrap installs nftables)")
        script = f"add table bridge {LOSSY_TABLE}\ndelete table bridge {LOSSY_TABLE}\n"
        if lost:
            script += (f"table bridge {LOSSY_TABLE} {{\n"
                       "  chain to_workstation {\n"
                       "    type filter hook forward priority 0; policy accept;\n"
                       "    oifname \"ws\" ip daddr 224.0.0.251 counter drop\n"
                       "  }\n"
                       "}\n")
        br = self._bridge_ns()
        done = subprocess.run(["ip", "netns", "exec", br, "nft", "-f", "-"], input=script,
                              capture_output=True, text=True, timeout=30, env={"PATH": SAFE_PATH, "LANG": "C"})
        if done.returncode != 0:
            raise LabError(f"nft in {br}: {done.stderr.strip()}")

    def multicast_dropped(self) -> int:
        """How many mDNS frames the lossy bridge has dropped so far (0 when it is off)."""
        done = self._sh("ip", "netns", "exec", self._bridge_ns(), "nft", "-j", "list", "table", "bridge", LOSSY_TABLE,
                        check=False)
        if done.returncode != 0:
            return 0
        return sum(e["counter"]["packets"] for item in json.loads(done.stdout)["nftables"] if "rule" in item
                   for e in item["rule"]["expr"] if "counter" in e)

    def mdns_answers(self, until, *, unicast: list[str] | tuple[str, ...] = (), timeout: float = 5.0) -> dict[str, set[str]]:
        """Ask the LAN for Cast devices from the workstation, as a full mDNS querier does, until until(seen) holds.

        mdns_probe.py asks by multicast (QM, from port 5353) once a second and
        once by legacy unicast to each address in unicast. seen is
        {"multicast": addresses whose mDNS responses arrived by multicast,
        "unicast": those whose answers arrived by unicast}; until is checked
        on every answer and every 50 ms. Raises LabError if it does not hold
        within timeout.
        """
        argv = [self.python, str(MDNS_PROBE), "--ip", self.ws_ip, "--timeout", str(timeout + 5)]
        for ip in unicast:
            argv += ["--unicast", ip]
        probe = subprocess.Popen(self.ws_argv(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in probe.stdout], daemon=True)
        reader.start()
        seen: dict[str, set[str]] = {"multicast": set(), "unicast": set()}
        try:
            first = lines.get(timeout=10)
            if json.loads(first)["event"] != "listening":
                raise LabError(f"mDNS probe: {first}")
            probe.stdin.write("query\n")
            probe.stdin.flush()
            deadline = time.monotonic() + timeout
            while not until(seen):
                if time.monotonic() > deadline:
                    raise LabError(f"mDNS probe: condition not met after {timeout:g} s; seen {seen}")
                try:
                    line = lines.get(timeout=0.05)
                except queue.Empty:
                    continue
                event = json.loads(line)
                if event["event"] == "answer":
                    seen[event["via"]].add(event["from"])
            return seen
        except (ValueError, queue.Empty) as e:
            raise LabError(f"mDNS probe failed ({e}): {probe.stderr.read() if probe.poll() is not None else ''}") from None
        finally:
            if probe.poll() is None:
                probe.terminate()
            try:
                probe.wait(timeout=3)
            except subprocess.TimeoutExpired:
                probe.kill()
                probe.wait()

    def chromium_discovery(self, expect: dict | None = None, **kw):
        """Run a real Chromium in the workstation and report, device by device, what it did (see chromium.py)."""
        from tests.lab.chromium import chromium_discovery
        return chromium_discovery(self, expect, **kw)

    def set_port_range(self, low: int, high: int) -> None:
        self.ws(["sh", "-c", f"echo '{low} {high}' > /proc/sys/net/ipv4/ip_local_port_range"], check=True)

    # --- hostile hosts and faults ----------------------------------------------

    def add_hostile(self, cases: list[dict], ip: str) -> None:
        """A host at ip that answers Cast queries with crafted announcements (see hostile.py)."""
        ns = self._add_ns("hx")
        self._attach(ns, "hx", ip, "02:ca:57:66:66:66")
        where = self.dir / "hx"
        where.mkdir()
        (where / "cases.json").write_text(json.dumps(cases))
        argv = ["ip", "netns", "exec", ns, self.python, str(HOSTILE), "--ip", ip, "--cases", str(where / "cases.json"),
                "--log", str(where / "hostile.log")]
        self._spawn(argv, where / "hostile.out")
        self._wait(lambda: '"ready"' in (where / "hostile.log").read_text(), "hostile responder")

    def add_hostile_dial(self, cases: list[dict], *, decoys: list[str] = (), listen: list[int] = (8008,)) -> HostileDial:
        """A host answering every M-SEARCH with crafted replies, one address per case (see hostile_dial.py).

        decoys are more addresses of that host which answer nothing: a request to one is a
        request castwall should never have sent. Every request it gets is in its log.
        """
        ns = self._add_ns("hd")
        ips = [c["ip"] for c in cases] + list(decoys)
        self._attach(ns, "hd", ips[0], "02:ca:57:66:d1:a1")
        for ip in ips[1:]:
            self._sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        where = self.dir / "hd"
        where.mkdir()
        (where / "cases.json").write_text(json.dumps(cases))
        log = where / "hostile-dial.log"
        self._spawn(["ip", "netns", "exec", ns, self.python, str(HOSTILE_DIAL), "--cases", str(where / "cases.json"),
                     "--listen", ",".join(str(p) for p in listen), "--log", str(log)], where / "hostile-dial.out")
        self._wait(lambda: '"ready"' in log.read_text(), "hostile DIAL host")
        return HostileDial(ns, log)

    def castwall_measured(self, *args: str, root: bool = True) -> subprocess.CompletedProcess:
        """castwall under /usr/bin/time: the result also has peak_rss_mb (its stderr loses time's line)."""
        env = {"PYTHONPATH": str(self.dir / "src"), "CASTWALL_STATE_DIR": str(self.state_dir), "PYTHONDONTWRITEBYTECODE": "1"}
        done = self.ws(["/usr/bin/time", "-f", "castwall-lab-rss %M", self.python, "-m", "castwall", *args],
                       root=root, env=env)
        lines = done.stderr.splitlines()
        rss = [line for line in lines if line.startswith("castwall-lab-rss ")]
        if not rss:
            raise LabError(f"/usr/bin/time printed no peak RSS: {done.stderr[-300:]}")
        done.stderr = "".join(line + "\n" for line in lines if not line.startswith("castwall-lab-rss "))
        done.peak_rss_mb = int(rss[-1].split()[1]) / 1024
        return done

    def add_impostor(self, ip: str, mac: str) -> str:
        """A silent host that takes ip too: it answers ARP for it, as a spoofer would."""
        ns = self._add_ns("im")
        self._attach(ns, "im", ip, mac)
        return ns

    def inject_ufw_fault(self, mode: str, at: int) -> None:
        """Make the workstation's ufw misbehave on its at-th allow, insert or delete call from now on.

        mode: "fail" (that call fails), "fail-from" (it and every later call
        fail), "term" (SIGTERM to the caller during that call), "kill" (the
        call succeeds, then SIGKILL to the caller, as a power cut would).
        """
        real, wrapper = self.dir / "ufw-real", self.dir / "ufw-wrapper"
        control = self.dir / "ufw-fault"
        if not wrapper.exists():
            shutil.copy2("/usr/sbin/ufw", real)
            wrapper.write_text(_UFW_WRAPPER.format(real=real, control=control))
            wrapper.chmod(0o755)
            self.ws(["mount", "--bind", str(wrapper), "/usr/sbin/ufw"], check=True)
        control.write_text(f"{mode} {at}\n")
        (self.dir / "ufw-fault.count").write_text("0\n")

    def inject_iptables_fault(self, mode: str, at: int) -> None:
        """The same faults for castwall's in-process ufw path: iptables misbehaves on the at-th
        `iptables -L ufw-user-input` from now on, the call with which ufw's library starts to
        change the running chain for each rule (after it has rewritten its rules file).

        mode as for inject_ufw_fault, except that "fail-from" makes every later iptables
        call of any kind fail too, so ufw's reload fails as well.
        """
        binary = Path(os.path.realpath("/usr/sbin/iptables"))  # xtables' multi-call binary
        real, wrapper = self.dir / "xtables-real", self.dir / "xtables-wrapper"
        control = self.dir / "iptables-fault"
        if not wrapper.exists():
            shutil.copy2(binary, real)
            wrapper.write_text(_IPTABLES_WRAPPER.format(real=real, control=control))
            wrapper.chmod(0o755)
            self.ws(["mount", "--bind", str(wrapper), str(binary)], check=True)
        control.write_text(f"{mode} {at}\n")
        (self.dir / "iptables-fault.count").write_text("0\n")
        (self.dir / "iptables-fault.broken").unlink(missing_ok=True)

    def clear_ufw_fault(self) -> None:
        """End the faults of both injectors."""
        for name in ("ufw-fault", "iptables-fault", "iptables-fault.broken"):
            (self.dir / name).unlink(missing_ok=True)

    def running_rules(self) -> str:
        """The workstation's running ufw-user-input chain, as iptables holds it now."""
        return self.ws(["iptables", "-S", "ufw-user-input"], check=True).stdout

    def hide_ufw(self) -> None:
        """Make ufw look uninstalled in the workstation (a non-executable file over it)."""
        blank = self.dir / "no-ufw"
        blank.write_text("")
        blank.chmod(0o644)
        self.ws(["mount", "--bind", str(blank), "/usr/sbin/ufw"], check=True)

    # --- the workstation as the LAN's DHCP server -----------------------------

    def serve_dhcp(self, first: int = 200, last: int = 250) -> Path:
        """Run a real dnsmasq as the LAN's DHCP server in the workstation; return its drop-in directory.

        Its dynamic pool is .first-.last, away from the devices' addresses, so
        an address a device gets outside it can only come from a reservation.
        systemd does not run in a namespace, so a small stand-in answers
        `systemctl is-active|restart dnsmasq.service` for castwall by
        restarting this dnsmasq (calls logged in systemctl.log). ufw lets in
        DHCP requests, as the admin of such a server would.
        """
        dropins, shim = self.dir / "dnsmasq.d", self.dir / "systemctl"
        dropins.mkdir(mode=0o755)
        (dropins / "00-lab.conf").write_text("# the admin's own file, which castwall must not touch\nlog-dhcp\n")
        argv = ["/usr/sbin/dnsmasq", "--conf-file=/dev/null", f"--conf-dir={dropins}", "--port=0", "--interface=eth0",
                "--bind-interfaces", f"--dhcp-range={self.subnet}.{first},{self.subnet}.{last},255.255.255.0,1h",
                f"--dhcp-leasefile={self.dir / 'dnsmasq.leases'}", "--pid-file=/run/lab-dnsmasq.pid",
                f"--log-facility={self.dir / 'dnsmasq.log'}", "--user=root"]
        shim.write_text(_SYSTEMCTL_SHIM.format(argv=" ".join(argv), log=self.dir / "systemctl.log"))
        shim.chmod(0o755)
        self.ws(["mount", "--bind", str(shim), "/usr/bin/systemctl"], check=True)
        self.ws(["systemctl", "restart", "dnsmasq.service"], check=True)
        self.ufw("allow", "in", "on", "eth0", "to", "any", "port", "67", "proto", "udp", check=True)
        return dropins

    def systemctl_calls(self) -> list[str]:
        path = self.dir / "systemctl.log"
        return path.read_text().splitlines() if path.exists() else []

    def dhcp_lease(self, dev: LabDevice) -> dict:
        """Ask for a lease from the device's namespace with its MAC (DISCOVER, OFFER, REQUEST, ACK)."""
        done = self._sh("ip", "netns", "exec", dev.ns, self.python, str(DHCP_CLIENT), "--iface", "eth0",
                        "--mac", dev.mac, timeout=30)
        return json.loads(done.stdout)

    def user_rules(self) -> str:
        """ufw's own rules file of the workstation: every rule, as ufw stores it."""
        return (self.dir / "etc-ufw" / "user.rules").read_text()

    # --- tearing down ---------------------------------------------------------

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for ns in reversed(self.namespaces):
            # Anything still running in a lab namespace was started by the lab.
            pids = self._sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            self._sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


_LISTENER = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
got, end = set(), time.monotonic() + float(sys.argv[2])
while (left := end - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        got.add(s.recv(100).decode())
    except socket.timeout:
        break
print(json.dumps(sorted(got)))
"""

# Both fault injectors count the calls they watch and decide whether this one is hit.
_FAULT_COUNT = """n=$(( $(cat {control}.count) + 1 ))
echo "$n" > {control}.count
read -r mode at < {control}
hit=no
[ "$n" -eq "$at" ] && hit=yes
[ "$mode" = fail-from ] && [ "$n" -ge "$at" ] && hit=yes
"""

_UFW_WRAPPER = """#!/bin/sh
# The lab's fault injector in front of the real ufw (see Lab.inject_ufw_fault).
case "$1" in allow|delete|insert) ;; *) exec {real} "$@" ;; esac
[ -f {control} ] || exec {real} "$@"
""" + _FAULT_COUNT + """[ $hit = yes ] || exec {real} "$@"
case "$mode" in
  fail|fail-from) echo "ERROR: lab fault injected into ufw call $n" >&2; exit 1 ;;
  term) kill -TERM "$PPID"; exec {real} "$@" ;;
  kill) {real} "$@"; kill -KILL "$PPID"; exit 0 ;;
esac
"""

_IPTABLES_WRAPPER = """#!/bin/bash
# The lab's fault injector in front of iptables (see Lab.inject_iptables_fault).
name=$(basename "$0")
[ -f {control}.broken ] && {{ echo "$name: lab fault: iptables is broken" >&2; exit 1; }}
if [ "$name" != iptables ] || [ "$1" != -L ] || [ "$2" != ufw-user-input ] || [ ! -f {control} ]; then
    exec -a "$name" {real} "$@"
fi
""" + _FAULT_COUNT + """[ $hit = yes ] || exec -a "$name" {real} "$@"
case "$mode" in
  fail) echo "iptables: lab fault injected into call $n" >&2; exit 1 ;;
  fail-from) touch {control}.broken; echo "iptables: lab fault injected into call $n" >&2; exit 1 ;;
  term) kill -TERM "$PPID"; exec -a "$name" {real} "$@" ;;
  kill) (exec -a "$name" {real} "$@"); kill -KILL "$PPID"; exit 0 ;;
esac
"""

_MC_LISTENER = """
import json, socket, sys, time
group, port, ip, listen, want = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), set(sys.argv[5:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(ip))
print("listening", flush=True)
got, end = set(), time.monotonic() + listen
while got < want and (left := end - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        got.add(s.recv(100).decode(errors="replace"))
    except socket.timeout:
        break
print(json.dumps(sorted(got & want)))
"""

_MC_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[3]))
for _ in range(3):
    s.sendto(sys.argv[4].encode(), (sys.argv[1], int(sys.argv[2])))
"""

_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"""


_SYSTEMCTL_SHIM = """#!/bin/sh
# The lab's stand-in for systemctl: one unit, dnsmasq.service, run by the lab.
echo "$*" >> {log}
pid() {{ cat /run/lab-dnsmasq.pid 2>/dev/null; }}
running() {{ p=$(pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }}
unit=""
for a in "$@"; do case "$a" in *.service) unit="$a";; esac; done
[ "$unit" = dnsmasq.service ] || {{ echo "Unit $unit could not be found." >&2; exit 4; }}
case "$1" in
is-active)
    running && exit 0 || exit 3;;
restart)
    if running; then
        p=$(pid); kill "$p"
        for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f /run/lab-dnsmasq.pid
    {argv} || {{ echo "Job for dnsmasq.service failed." >&2; exit 1; }}
    for i in $(seq 50); do running && exit 0; sleep 0.1; done
    exit 1;;
esac
exit 1
"""
