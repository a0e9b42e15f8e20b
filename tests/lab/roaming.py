"""A laptop's networks, for follow mode (a part of Lab).

- The home LAN's gateway, always there: <p>-gw at {subnet}.1, MAC
  02:ca:57:fe:00:01, on br0; the workstation's default route goes through it.
  It routes nowhere; it answers ARP (and pings), and has no firewall, so the
  lab asks mDNS questions from it (ask_mdns) without the workstation's ufw or
  caches seeing them.
- A café (second_lan): br1 in the same bridge namespace, a gateway <p>-cg with
  the same address {subnet}.1 but MAC 02:ca:57:fe:00:02, and a stranger <p>-st
  (MAC 02:ca:57:ee:00:01) at a Cast device's address, announcing nothing.
- roam("cafe") / roam("home"): the workstation's bridge port moves between br0
  and br1 while its eth0 is down, as a laptop changing Wi-Fi networks: the
  kernel forgets its neighbours and its routes through eth0, the address stays,
  and the default route comes back as DHCP would give it.
- take_address: a host of its own on the home LAN taking an address (a
  device's old one, say), optionally announcing a device's Cast service (same
  UUID and name) and answering DIAL as it would: an impostor.
- follow_systemd: /run/systemd/system in the workstation and the lab's
  systemctl (systemctl.sh) for castwall-follow.timer and .service, whose
  passes (Lab.follow_command, default `python -m castwall follow run`) run in
  the workstation with Lab.castwall's environment, one at a time, logged to
  <lab>/follow.log, each ending with a line "follow pass exited N".
- Lab.move (re-addressing a device) waits through ask_mdns until the device's
  avahi answers at the new address, and restarts its DIAL and Cast ports
  there (_restart_cast_device).
Every host here is a namespace of its own: Lab.udp_reaches({label: host.ns},
port) sends from it to the workstation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.lab.common import SAFE_PATH, LabError
from tests.lab.systemctl import install_systemctl

if TYPE_CHECKING:
    from tests.lab import LabDevice

MDNS_ASK = Path(__file__).with_name("mdns_ask.py")
GATEWAY_MAC = "02:ca:57:fe:00:01"
CAFE_GATEWAY_MAC = "02:ca:57:fe:00:02"
STRANGER_MAC = "02:ca:57:ee:00:01"
HOME, CAFE = "home", "cafe"
BRIDGES = {HOME: "br0", CAFE: "br1"}
FOLLOW_EXITED = re.compile(r"^follow pass exited (\d+)$", re.M)


@dataclass
class LabHost:
    """A host of the lab that is not a Cast device of it: a gateway, the café's stranger, a host taking an address."""

    name: str  # what it is, for messages
    ns: str  # its namespace: Lab.in_ns, Lab.udp_reaches({label: host.ns}, port)
    ip: str
    mac: str
    lan: str  # "home" (br0) or "cafe" (br1)
    port: str  # its port on the bridge, in the bridge's namespace
    dir: Path  # its files: avahi.log, and cast.log where it answers DIAL (Lab.cast_events takes it too)
    uuid: str | None = None  # the Cast UUID it announces (32 hex digits), if any


@dataclass
class SecondLan:
    """The café of Lab.second_lan: its bridge, its gateway and the stranger at a device's address."""

    bridge: str
    gateway: LabHost
    stranger: LabHost


class Roaming:
    """Lab's gateway, second LAN, roaming workstation, address takers and stand-in systemd for follow mode."""

    cafe: SecondLan | None = None
    lan: str = HOME  # where the workstation is now
    _follow_command: list[str] | None = None
    _follow_env: dict[str, str] = {}

    # --- the networks ----------------------------------------------------------

    def _add_gateway(self, ws: str) -> None:
        """The home LAN's gateway, and the workstation's default route through it (called while building)."""
        ns, ip = self._add_ns("gw"), f"{self.subnet}.1"
        self._attach(ns, "gw", ip, GATEWAY_MAC)
        where = self.dir / "gw"
        where.mkdir()
        self.gateway = LabHost("gateway", ns, ip, GATEWAY_MAC, HOME, "gw", where)
        self.taken: list[LabHost] = []
        self._sh("ip", "-n", ws, "route", "add", "default", "via", ip, "dev", "eth0")

    def _plug(self, name: str, tag: str, ip: str, mac: str, lan: str) -> LabHost:
        """A new namespace <p>-tag with eth0 (ip/24, mac) on that LAN's bridge, through port tag."""
        ns, br = self._add_ns(tag), self._bridge_ns()
        self._sh("ip", "-n", br, "link", "add", tag, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._sh("ip", "-n", br, "link", "set", tag, "master", BRIDGES[lan], "up")
        self._sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        self._sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        self._sh("ip", "-n", ns, "link", "set", "eth0", "up")
        where = self.dir / tag
        where.mkdir()
        return LabHost(name, ns, ip, mac, lan, tag, where)

    def second_lan(self, stranger_ip: str | None = None) -> SecondLan:
        """Build the café: br1, its gateway at {subnet}.1 (another MAC) and a silent stranger at stranger_ip.

        stranger_ip defaults to the first Cast device's address (now). The
        workstation stays at home until roam("cafe"). Also kept as lab.cafe.
        """
        if self.cafe is not None:
            raise LabError("the lab has its second LAN already")
        if stranger_ip is None:
            stranger_ip = self.devices[0].ip if self.devices else f"{self.subnet}.101"
        br = self._bridge_ns()
        self._sh("ip", "-n", br, "link", "add", "br1", "type", "bridge", "mcast_snooping", "0")
        self._sh("ip", "-n", br, "link", "set", "br1", "up")
        gateway = self._plug("café gateway", "cg", f"{self.subnet}.1", CAFE_GATEWAY_MAC, CAFE)
        stranger = self._plug("stranger", "st", stranger_ip, STRANGER_MAC, CAFE)
        self.cafe = SecondLan("br1", gateway, stranger)
        return self.cafe

    def roam(self, to: str, timeout: float = 10.0) -> LabHost:
        """Move the workstation to the "cafe" (built with defaults if need be) or "home" LAN; return its gateway.

        eth0 goes down (the kernel drops its neighbour entries and the routes
        through it; the address stays), the bridge port moves, eth0 comes up
        and the default route via {subnet}.1 is added again. Returns once the
        workstation's ARP for {subnet}.1 is answered by that LAN's gateway.
        """
        if to not in BRIDGES:
            raise ValueError(f"roam to {HOME!r} or {CAFE!r}, not {to!r}")
        if to == CAFE and self.cafe is None:
            self.second_lan()
        gateway = self.gateway if to == HOME else self.cafe.gateway
        ws, br = f"{self.prefix}-ws", self._bridge_ns()
        self._sh("ip", "-n", ws, "link", "set", "eth0", "down")
        self._sh("ip", "-n", br, "link", "set", "ws", "nomaster")
        self._sh("ip", "-n", br, "link", "set", "ws", "master", BRIDGES[to])
        self._sh("ip", "-n", ws, "link", "set", "eth0", "up")
        self._sh("ip", "-n", ws, "route", "replace", "default", "via", gateway.ip, "dev", "eth0")
        self.lan = to
        seen = self.ws_mac_of(gateway.ip, expect=gateway.mac, timeout=timeout)
        if seen != gateway.mac:
            raise LabError(f"after roaming to {to}, {gateway.ip} is at {seen}, not {gateway.mac} (the {gateway.name})")
        return gateway

    def ws_mac_of(self, ip: str, *, expect: str | None = None, timeout: float = 3.0) -> str | None:
        """The MAC the workstation's kernel has for ip: it sends UDP datagrams there and reads /proc/net/arp.

        Returns the first complete entry, or with expect, waits until the
        entry is that MAC; after timeout it returns what the cache holds then
        (None if ip does not answer).
        """
        done = self.ws([self.python, "-c", _RESOLVE, ip, (expect or "").lower(), str(timeout)], check=True,
                       timeout=timeout + 15)
        return json.loads(done.stdout)["mac"]

    def take_address(self, ip: str, mac: str, announce: LabDevice | None = None, *, dial: bool = True,
                     garp: bool = True, hostname: str | None = None) -> LabHost:
        """A new host on the home LAN with ip and mac (a host that takes a device's old address, say).

        With garp it announces the address by ARP as it comes up (an RFC 5227
        announcement, as DHCP clients send), which moves the workstation's
        existing neighbour entry for ip to it. With announce, it also
        publishes that device's Cast service through an avahi of its own (the
        same instance name, UUID, name and TXT id=, not a group it hosts; its
        own host name, hostname or ta<N>-<uuid prefix>) and, with dial, answers
        DIAL and the Cast port as the device does (cast_device.py, cast.log).
        Returns once avahi says the service is established. Kept in lab.taken.
        """
        tag = f"ta{len(self.taken) + 1}"
        host = self._plug(f"host at {ip} ({tag})", tag, ip, mac, HOME)
        self.taken.append(host)
        if garp:
            self.in_ns(host.ns, [self.python, "-c", _GARP, "eth0", ip, mac])
        if announce is None:
            return host
        host.uuid = announce.uuid
        twin = dataclasses.replace(announce, index=-1, ip=ip, mac=mac, ns=host.ns, dir=host.dir, group=None,
                                   strict=False)
        self._start_avahi(host.ns, host.dir, hostname or f"{tag}-{announce.uuid[:8]}", self._cast_services(twin))
        if dial:
            self._start_cast_device(twin)
        log = host.dir / "avahi.log"
        self._wait(lambda: "successfully established" in log.read_text(), f"avahi of the {host.name}")
        if dial:
            self._wait(lambda: '"ready"' in (host.dir / "cast.log").read_text(),
                       f"DIAL and Cast ports of the {host.name}")
        return host

    def unplug(self, host: LabHost) -> None:
        """Take a host of take_address or second_lan off its LAN (its bridge port leaves the bridge)."""
        self._sh("ip", "-n", self._bridge_ns(), "link", "set", host.port, "nomaster")

    def ask_mdns(self, ip: str, *, a_name: str | None = None, want_a: str | None = None, want_txt: str | None = None,
                 via: str | None = None, timeout: float = 10.0, check: bool = True) -> list[dict]:
        """The records ip's mDNS responder answers for _googlecast._tcp.local. PTR (and a_name's A), asked by
        legacy unicast from the namespace via (default: the home gateway), so nothing else on the LAN hears it.

        Asks again every 0.1 s until the answers hold an A record for want_a and
        a TXT record containing want_txt (e.g. "id=<uuid>"), each if given;
        raises LabError if they do not within timeout (with check). Records are
        {"name", "type": "PTR"|"SRV"|"TXT"|"A", "data"} (mdns_ask.py).
        """
        argv = [self.python, str(MDNS_ASK), "--host", ip, "--timeout", str(timeout)]
        for flag, value in (("--a-name", a_name), ("--want-a", want_a), ("--want-txt", want_txt)):
            if value is not None:
                argv += [flag, value]
        done = self.in_ns(via or self.gateway.ns, argv, check=False, timeout=timeout + 15)
        try:
            result = json.loads(done.stdout)
        except ValueError:
            raise LabError(f"mdns_ask.py failed: {done.stderr.strip()}") from None
        if check and not result["ok"]:
            raise LabError(f"{ip} did not answer mDNS with A {want_a} / TXT {want_txt} within {timeout:g} s: "
                           f"{result['records']}")
        return result["records"]

    def _restart_cast_device(self, dev: LabDevice):
        """Start the device's cast_device.py again at dev.ip; return a function that waits until it is ready."""
        for proc in [p for p in self.procs if isinstance(p.args, list) and p.args[:4] == ["ip", "netns", "exec", dev.ns]
                     and any(str(a).endswith("/cast_device.py") for a in p.args)]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.procs.remove(proc)
        log = dev.dir / "cast.log"
        before = log.read_text().count('"ready"') if log.exists() else 0
        self._start_cast_device(dev)
        return lambda: self._wait(lambda: log.read_text().count('"ready"') > before,
                                  f"DIAL and Cast ports of {dev.name} at {dev.ip}")

    def _announced_at(self, dev: LabDevice, ip: str, timeout: float = 10.0) -> None:
        """Wait until the device's avahi answers with its A record at ip (probing done).

        Not its TXT as well: a device that also hosts a group answers with
        more than a legacy-unicast answer holds, and avahi then leaves records
        out; the TXT does not change with the address anyway.
        """
        self.ask_mdns(ip, a_name=f"{dev.uuid}.local.", want_a=ip, timeout=timeout)

    # --- systemd for follow mode --------------------------------------------------

    @property
    def follow_command(self) -> list[str]:
        """What a pass of castwall-follow.service runs (settable, also after follow_systemd)."""
        return list(self._follow_command or [self.python, "-m", "castwall", "follow", "run"])

    @follow_command.setter
    def follow_command(self, argv: list[str]) -> None:
        self._follow_command = list(argv)
        if (self.dir / "follow").is_dir():
            self._write_follow_pass()

    def follow_systemd(self, *, enabled: bool = False, command: list[str] | None = None,
                       env: dict[str, str] | None = None) -> Path:
        """Make the workstation a systemd system with castwall-follow.timer and .service; return follow.log's path.

        Creates /run/systemd/system in the workstation's private /run and
        bind-mounts the lab's systemctl (shared with serve_dhcp; calls in
        systemctl_calls()). For both units: `show -p LoadState --value` says
        loaded. The timer: is-enabled (enabled/disabled, exit 0/1),
        is-active (active/inactive, exit 0/3), enable [--now], disable
        [--now], start, stop; state in <lab>/follow/. The service: is-enabled
        says static (it has no [Install]); is-active says activating while a
        pass runs, failed after a failed one, else inactive (exit 3 each);
        start [--no-block] runs one pass of follow_command (waiting for it
        unless --no-block, exit 1 if it failed); passes never overlap: a
        start while one runs queues another. With enabled=True the timer
        starts enabled and active. The timer never fires by itself: a test
        starts passes. env adds to the passes' environment.
        """
        (self.dir / "ws-run" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
        state = self.dir / "follow"
        state.mkdir(exist_ok=True)
        if command is not None:
            self._follow_command = list(command)
        if env is not None:
            self._follow_env = dict(env)
        runner = state / "run"
        runner.write_text(_FOLLOW_RUNNER.replace("@LAB@", shlex.quote(str(self.dir))))
        runner.chmod(0o755)
        if enabled:
            (state / "enabled").touch()
            (state / "active").touch()
        self._write_follow_pass()
        install_systemctl(self)
        return self.dir / "follow.log"

    def _write_follow_pass(self) -> None:
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": "/", "PYTHONPATH": str(self.dir / "src"),
               "CASTWALL_STATE_DIR": str(self.state_dir), "PYTHONDONTWRITEBYTECODE": "1", **self._follow_env}
        script = ("#!/bin/sh\n# One pass of castwall-follow.service: Lab.follow_command, Lab.castwall's environment.\n"
                  "cd / || exit 1\nexec env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
                  + " " + shlex.join(self.follow_command) + "\n")
        path, tmp = self.dir / "follow" / "pass", self.dir / "follow" / "pass.new"
        tmp.write_text(script)
        tmp.chmod(0o755)
        tmp.replace(path)

    def follow_units(self) -> dict[str, bool]:
        """The stand-in's state: the timer enabled, the timer active, a pass running."""
        state = self.dir / "follow"
        try:
            pid = int((state / "running").read_text())
            os.kill(pid, 0)
            running = True
        except (FileNotFoundError, ValueError, ProcessLookupError):
            running = False
        return {"enabled": (state / "enabled").exists(), "active": (state / "active").exists(), "running": running}

    def follow_log(self) -> str:
        """The passes' stdout and stderr, each between lines "follow pass started" and "follow pass exited N"."""
        path = self.dir / "follow.log"
        return path.read_text() if path.exists() else ""

    def follow_passes(self) -> list[int]:
        """The exit status of every finished pass, oldest first."""
        return [int(n) for n in FOLLOW_EXITED.findall(self.follow_log())]

    def wait_follow_pass(self, n: int = 1, timeout: float = 60.0) -> str:
        """Wait until n passes in all have finished (LabError after timeout); return follow.log's text."""
        self._wait(lambda: len(self.follow_passes()) >= n, f"follow pass {n} (done: {self.follow_passes()})",
                   timeout=timeout)
        return self.follow_log()

    def wait_follow_started(self, n: int = 1, timeout: float = 60.0) -> str:
        """Wait until n passes in all have started (LabError after timeout); return follow.log's text."""
        self._wait(lambda: self.follow_log().count("follow pass started\n") >= n, f"start of follow pass {n}",
                   timeout=timeout)
        return self.follow_log()

    def _end_follow_passes(self) -> None:
        """Kill every pass still running (its whole process group) and wait until each has ended (close() calls it)."""
        try:
            pids = {int(p) for p in (self.dir / "follow" / "pids").read_text().split()}
        except (FileNotFoundError, ValueError):
            return
        ws = f"{self.prefix}-ws"
        if not pids or ws not in self.namespaces:
            return
        in_ws = set(self._sh("ip", "netns", "pids", ws, check=False).stdout.split())
        ending = []
        for pid in sorted(pids):
            if str(pid) not in in_ws:
                continue
            try:
                fd = os.pidfd_open(pid)  # pins the process: the checks and the wait are about this one
            except OSError:
                continue
            try:
                if os.getpgid(pid) == pid:  # the runner leads its own session: the group is the pass alone
                    os.killpg(pid, signal.SIGKILL)
                    ending.append(fd)
                    continue
            except OSError:
                pass
            os.close(fd)
        deadline = time.monotonic() + 5
        for fd in ending:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            os.close(fd)


# A pass, as systemd runs a oneshot service: one at a time (flock), output appended to follow.log.
_FOLLOW_RUNNER = """#!/bin/sh
# One pass of castwall-follow.service (started by the lab's systemctl in a session of its own).
LAB=@LAB@
F="$LAB/follow" LOG="$LAB/follow.log"
echo $$ >> "$F/pids"
exec 9>>"$F/lock"
flock 9
echo $$ > "$F/running"
echo "follow pass started" >> "$LOG"
"$F/pass" 9>&- </dev/null >>"$LOG" 2>&1
rc=$?
[ -z "$(tail -c1 "$LOG")" ] || echo >> "$LOG"
echo $rc > "$F/last"
rm -f "$F/running"
echo "follow pass exited $rc" >> "$LOG"
exit $rc
"""

_RESOLVE = """
import json, socket, sys, time
ip, want, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
def cached():
    with open("/proc/net/arp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[0] == ip and int(fields[2], 16) & 2:  # ATF_COM: resolved
                return fields[3].lower()
    return None
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, nudge = time.monotonic() + timeout, 0.0
while ((mac := cached()) is None or (want and mac != want)) and time.monotonic() < end:
    if time.monotonic() >= nudge:  # a datagram makes the kernel resolve ip (or re-check a stale entry)
        try:
            s.sendto(b"", (ip, 9))
        except OSError:
            pass
        nudge = time.monotonic() + 0.1
    time.sleep(0.01)
print(json.dumps({"mac": mac}))
"""

# An RFC 5227 ARP announcement (a request with sender and target both the host's address), sent twice.
_GARP = """
import socket, sys
iface, ip, mac = sys.argv[1:4]
hw, addr = bytes.fromhex(mac.replace(":", "")), socket.inet_aton(ip)
arp = bytes.fromhex("000108000604" "0001") + hw + addr + bytes(6) + addr
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for _ in range(2):
    s.send(b"\\xff" * 6 + hw + b"\\x08\\x06" + arp)
"""
