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
             is a Cast v2 receiver on the Cast port 8009 (TLS with the
             lab's self-signed certificate, <lab>/cast-cert.pem; a LOAD
             makes it fetch the media itself), serves eureka_info on 8008
             and 8443, and logs it all to <dir>/cast.log
    <p>-ot   a host that is not a Cast device (it announces a printer)
    <p>-gw   the LAN's gateway ({subnet}.1, MAC 02:ca:57:fe:00:01): the
             workstation's default route goes through it (roaming.py)

This module builds the LAN and runs things in it; the rest of Lab comes in
parts, one job each: multicast.py (lose_multicast() makes the LAN drop mDNS
multicast towards the workstation with an nft bridge table in <p>-br, the
devices' DIAL logs, an mDNS probe, and chromium_discovery(), which runs
Debian's Chromium in the workstation: chromium.py), faults.py (faults
injected into ufw and iptables), hosts.py (hostile hosts, an impostor),
dhcp.py (a real dnsmasq as the LAN's DHCP server), senders.py (real Cast
senders in the workstation: catt, pychromecast, VLC, and the media they serve)
and roaming.py (for follow mode: the gateway, a second LAN with the same
subnet, the workstation roaming between them, hosts taking addresses, and a
stand-in systemd running castwall-follow's passes). firewalls.py: the
workstation's firewall, Lab(firewall=...): "ufw" (the default, as above),
"nftables", "firewalld" or "none", and faults injected into them.

Needs root, iproute2, ufw, avahi-daemon, openssl (and nft, chromium for those two).
Everything it starts is recorded and ended by PID on close(), which also
deletes the namespaces, even after a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from tests.lab.common import NOBODY, SAFE_PATH, LabError
from tests.lab.dhcp import DhcpServer
from tests.lab.faults import Faults
from tests.lab.firewalls import FIREWALLS, Firewalls
from tests.lab.hosts import HostileDial, OtherHosts, hostile_case  # noqa: F401 - the lab's API
from tests.lab.multicast import LOSSY_TABLE, MulticastAndDial  # noqa: F401
from tests.lab.roaming import CAFE_GATEWAY_MAC, GATEWAY_MAC, STRANGER_MAC, LabHost, Roaming, SecondLan  # noqa: F401
from tests.lab.senders import Senders

REACH_GRACE = 2.0  # seconds a datagram not yet arrived gets once its sender has exited (see Lab._reaches)
REPO = Path(__file__).resolve().parents[2]
RESPONDER = Path(__file__).with_name("responder.py")
CAST_DEVICE = Path(__file__).with_name("cast_device.py")

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


def missing_requirements() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    for tool in ("ip", "ufw", "avahi-daemon", "nsenter", "unshare", "setpriv", "openssl"):
        if shutil.which(tool, path=SAFE_PATH) is None:
            return f"the lab needs {tool} (run scripts/test, which installs it)"
    return None


class Lab(MulticastAndDial, Faults, OtherHosts, DhcpServer, Senders, Roaming, Firewalls):
    """The LAN, built by start() and torn down by close(); multicast and DIAL, faults, other hosts, DHCP, senders
    and roaming come from the mixins."""

    def __init__(self, devices: int = 3, *, strict: int = 0, subnet: str = "192.168.77", python: str | None = None,
                 no_dial: tuple[int, ...] | list[int] | set[int] = (), firewall: str = "ufw", ship_xml: bool = True,
                 group: bool = True):
        if not 0 <= devices + strict <= 150:
            raise ValueError("between 0 and 150 devices")
        if firewall not in FIREWALLS:
            raise ValueError(f"firewall is one of {', '.join(FIREWALLS)}")
        self.firewall, self.ship_xml = firewall, ship_xml  # the workstation's firewall (firewalls.py)
        self.count, self.strict_count = devices, strict
        self.no_dial = set(no_dial)  # indices of devices that never answer an M-SEARCH
        self.group = group  # whether device GROUP_HOST also hosts the Cast group (which answers no DIAL)
        self.subnet = subnet
        self.python = python or sys.executable
        self.prefix = f"cw{os.getpid() % 10000:04d}{os.urandom(2).hex()}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.dir.chmod(0o755)  # castwall also runs as nobody in the lab
        self.ws_ip = f"{subnet}.10"
        self.other_ip = f"{subnet}.50"
        self.state_dir = self.dir / "state"
        self.cert, self.cert_key = self.dir / "cast-cert.pem", self.dir / "cast-key.pem"
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
        # One self-signed certificate for every device's TLS (Cast port 8009, HTTPS 8443): senders do not verify it.
        self._sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=castwall-lab",
                 "-keyout", str(self.cert_key), "-out", str(self.cert))
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
        self._add_gateway(ws)

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
            if i == GROUP_HOST and not dev.strict and self.group:
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
        self._start_firewall()  # ufw enabled, or the firewall Lab(firewall=...) asks for (firewalls.py)

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
        """DIAL (SSDP, the device description on 8008) and the Cast v2 receiver on 8009, as a real device has them."""
        argv = ["ip", "netns", "exec", dev.ns, self.python, str(CAST_DEVICE), "--ip", dev.ip, "--uuid", dev.uuid,
                "--name", dev.name, "--model", dev.model, "--log", str(dev.dir / "cast.log"),
                "--cert", str(self.cert), "--key", str(self.cert_key)]
        if dev.kind == "audio":
            argv.append("--audio")
        if dev.group:
            argv += ["--group-port", str(dev.group[2]), "--group-name", dev.group[0], "--group-uuid", dev.group[1]]
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

    def udp_reaches(self, senders: dict[str, str], port: int) -> set[str]:
        """Which senders' UDP datagrams to the workstation's port arrive (namespace -> label); see _reaches."""
        return self._reaches(["udp", str(port), "-", "-"], {label: (ns, [_SENDER, self.ws_ip, str(port), label])
                                                            for label, ns in senders.items()}, "UDP listener")

    def _reaches(self, listener_args: list[str], senders: dict[str, tuple[str, list[str]]], what: str) -> set[str]:
        """Run the listener in the workstation, then every sender at once; return the labels the listener heard.

        Decided on events, not on a window: the listener ends as soon as every
        sender's datagram has arrived. Only what did not arrive waits: the
        listener gives it REACH_GRACE seconds counted from the moment every
        sender has exited, that is once each sendto() has returned. Over the
        lab's veth pairs a datagram passes the firewall and reaches the socket
        within the sender's own system call, or within ksoftirqd's next turn
        on a loaded machine (milliseconds), so the grace is generous.
        """
        listener = subprocess.Popen(
            self.ws_argv([self.python, "-c", _LISTENER, str(REACH_GRACE), *listener_args, *senders]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        running: list[subprocess.Popen] = []
        try:
            if listener.stdout.readline().strip() != "listening":
                raise LabError(f"{what} failed: {listener.stderr.read()}")
            for ns, script in senders.values():
                running.append(subprocess.Popen(["ip", "netns", "exec", ns, self.python, "-c", *script],
                                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE, text=True, env={"PATH": SAFE_PATH, "LANG": "C"}))
            for proc in running:
                _, err = proc.communicate(timeout=60)
                if proc.returncode != 0:
                    raise LabError(f"a sender for the {what} failed: {err.strip()}")
            try:
                listener.stdin.write("sent\n")  # the grace starts now
                listener.stdin.flush()
            except BrokenPipeError:
                pass  # it has heard every sender already, and ended
            out, err = listener.communicate(timeout=REACH_GRACE + 60)
            if listener.returncode != 0:
                raise LabError(f"{what} failed: {err.strip()}")
        finally:
            for proc in [listener, *running]:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return set(json.loads(out))

    def device(self, name: str) -> LabDevice:
        return next(d for d in self.devices if d.name == name)

    def move(self, dev: LabDevice, new_ip: str) -> None:
        """Give a device a new address, as a DHCP server without a reservation might.

        Its avahi announces the new address; its DIAL and Cast ports
        (cast_device.py, bound to the address) start again there. Returns once
        avahi answers with its records at new_ip and the ports are ready.
        """
        log = dev.dir / "avahi.log"
        # Delete first: removing a primary address also removes its secondaries.
        self._sh("ip", "-n", dev.ns, "addr", "del", f"{dev.ip}/24", "dev", "eth0")
        self._sh("ip", "-n", dev.ns, "addr", "add", f"{new_ip}/24", "dev", "eth0")
        dev.ip = new_ip
        ports_ready = self._restart_cast_device(dev)
        self._wait(lambda: f"Registering new address record for {new_ip}" in log.read_text(), f"{dev.name} at {new_ip}")
        # avahi probes the new records (3 x 250 ms) before it answers with them: wait until it does.
        self._announced_at(dev, new_ip)
        ports_ready()

    def install_profiles(self) -> None:
        """castwall's ufw application profiles in the workstation's private /etc/ufw, as the .deb installs them."""
        shutil.copy(REPO / "data" / "ufw-profiles" / "castwall", self.dir / "etc-ufw" / "applications.d" / "castwall")

    def set_port_range(self, low: int, high: int) -> None:
        self.ws(["sh", "-c", f"echo '{low} {high}' > /proc/sys/net/ipv4/ip_local_port_range"], check=True)

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

    def user_rules(self) -> str:
        """ufw's own rules file of the workstation: every rule, as ufw stores it."""
        return (self.dir / "etc-ufw" / "user.rules").read_text()

    # --- tearing down ---------------------------------------------------------

    def close(self) -> None:
        self._end_follow_passes()
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
import json, os, select, socket, sys, time
grace, kind, port, group, ip, want = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], set(sys.argv[6:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if kind == "multicast":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((group, port))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(ip))
else:
    s.bind(("0.0.0.0", port))
print("listening", flush=True)
got, end = set(), None  # no deadline until the senders are done: the test's own timeout guards that
while not want <= got:
    left = None if end is None else end - time.monotonic()
    if left is not None and left <= 0:
        break
    ready, _, _ = select.select([s, 0], [], [], left)
    if s in ready:
        got.add(s.recv(100).decode(errors="replace"))
    if 0 in ready:
        if not os.read(0, 64):  # the test went away
            break
        end = time.monotonic() + grace
print(json.dumps(sorted(got & want)))
"""

# Both fault injectors count the calls they watch and decide whether this one is hit.





_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"""


