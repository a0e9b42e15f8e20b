"""Fakes at the process boundary, behaving as the real programs were seen to (tests/data)."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

from castwall.announcement import Announcement
from castwall.dial import DialReply
from castwall.commands.services import Services
from castwall.model import Device, Kind
from castwall.system.host import Paths
from castwall.system.runner import Completed

DATA = Path(__file__).with_name("data")


def data(name: str) -> str:
    return (DATA / name).read_text()


@dataclass
class FakeUfw:
    """A runner that answers `ufw` and `ip` as ufw 0.36.2 and iproute2 do.

    Rules are kept as `ufw show added` lines. ufw's identity of a rule ignores
    its comment, as the real one's does. fail_calls lists the 1-based numbers
    of the allow/delete calls that fail, as a ufw error would.
    """

    lines: list[str] = field(default_factory=list)
    active: bool = True
    installed: bool = True
    root: bool = True
    fail_calls: set[int] = field(default_factory=set)
    ip_addr: str = field(default_factory=lambda: data("ip-addr.json"))
    calls: list[tuple[str, ...]] = field(default_factory=list)
    changes: int = 0
    dnsmasq_unit: str | None = "dnsmasq.service"  # the active unit systemctl reports, None: none
    dnsmasq_rejects: bool = False  # `dnsmasq --test` fails
    restart_fails: set[int] = field(default_factory=set)  # 1-based numbers of `systemctl restart` calls that fail
    restarts: int = 0
    routes: str = "[]"  # `ip -j -4 route show default`
    follow_timer: str | None = "disabled"  # castwall-follow.timer: "enabled", "disabled", or None (not installed)

    def which(self, program: str) -> str | None:
        if program == "ufw" and not self.installed:
            return None
        return f"/usr/sbin/{program}"

    def run(self, argv: Sequence[str], *, timeout: float = 30.0) -> Completed:
        argv = tuple(argv)
        self.calls.append(argv)
        if argv[:3] == ("ip", "-j", "addr"):
            return Completed(argv, 0, self.ip_addr, "")
        if argv[:5] == ("ip", "-j", "-4", "route", "show"):
            return Completed(argv, 0, self.routes, "")
        if argv[:2] == ("ip", "-j"):
            return Completed(argv, 0, "[]", "")
        if argv[0] == "systemctl" and "castwall-follow" in argv[-1]:
            return self._follow_unit(argv)
        if argv[0] == "systemctl":
            if argv[1] == "is-active":
                return Completed(argv, 0 if argv[-1] == self.dnsmasq_unit else 3, "", "")
            if argv[1] == "restart":
                self.restarts += 1
                if self.restarts in self.restart_fails:
                    return Completed(argv, 1, "", "Job for dnsmasq.service failed because the control process exited with error code.\n")
                return Completed(argv, 0, "", "")
        if argv[0] == "dnsmasq":
            if self.dnsmasq_rejects:
                return Completed(argv, 1, "", "\ndnsmasq: bad DHCP host name at line 4 of x\n")
            return Completed(argv, 0, "", "dnsmasq: syntax check OK.\n")
        if argv[:2] == ("firewall-cmd", "--state"):
            running = getattr(self, "firewalld_running", False)
            return Completed(argv, 0 if running else 252, "running\n" if running else "not running\n", "")
        if argv[0] == "nft" and argv[1:3] == ("-j", "-a"):
            return Completed(argv, 0, '{"nftables": []}', "")  # an empty ruleset: only ufw filters here
        assert argv[0] == "ufw", argv
        if not self.root:
            return Completed(argv, 1, "", "ERROR: You need to be root to run this script\n")
        args = argv[1:]
        if args == ("show", "added"):
            body = "".join(line + "\n" for line in self.lines)
            return Completed(argv, 0, "Added user rules (see 'ufw status' for running firewall):\n" + body, "")
        if args == ("status",):
            return Completed(argv, 0, "Status: active\n" if self.active else "Status: inactive\n", "")
        self.changes += 1
        if self.changes in self.fail_calls:
            return Completed(argv, 1, "", "ERROR: Couldn't update rules file\n")
        if args[0] == "delete":
            key = self._key(args[1:])
            for i, line in enumerate(self.lines):
                if self._key(self._args_of(line)) == key:
                    del self.lines[i]
                    return Completed(argv, 0, "Rule deleted\n" if self.active else "Rules updated\n", "")
            return Completed(argv, 0, "Could not delete non-existent rule\n", "")
        position = None
        if args[0] == "insert":
            position, args = int(args[1]), args[2:]
            if not 1 <= position <= len(self.lines):
                return Completed(argv, 1, "", f"ERROR: Invalid position '{position}'\n")
        key = self._key(args)
        line = self._line(args)
        for i, old in enumerate(self.lines):
            if self._key(self._args_of(old)) == key:
                if old == line:
                    return Completed(argv, 0, "Skipping adding existing rule\n", "")
                self.lines[i] = line
                return Completed(argv, 0, "Rule updated\n" if self.active else "Rules updated\n", "")
        if position is not None:
            self.lines.insert(position - 1, line)
            return Completed(argv, 0, "Rule inserted\n" if self.active else "Rules updated\n", "")
        self.lines.append(line)
        return Completed(argv, 0, "Rule added\n" if self.active else "Rules updated\n", "")

    def _follow_unit(self, argv: tuple[str, ...]) -> Completed:
        """systemctl for follow mode's units, as systemd 252 answers."""
        verb = next(a for a in argv[1:] if not a.startswith("-"))
        if verb == "show":
            return Completed(argv, 0, "not-found\n" if self.follow_timer is None else "loaded\n", "")
        if self.follow_timer is None:
            return Completed(argv, 1, "", f"Failed to {verb} unit: Unit file {argv[-1]} does not exist.\n")
        if verb == "is-enabled":
            return Completed(argv, 0 if self.follow_timer == "enabled" else 1, "", "")
        if verb == "is-active":
            return Completed(argv, 0 if self.follow_timer == "enabled" else 3, "", "")
        if verb in ("enable", "disable"):
            self.follow_timer = verb + "d"
        return Completed(argv, 0, "", "")

    # Only castwall's shapes are needed: allow proto udp|tcp from IP to any port P [comment C], and
    # allow from IP to any app NAME [comment C], printed back as ufw 0.36.2 prints them.
    @staticmethod
    def _key(args: Sequence[str]) -> tuple:
        words = list(args)
        if "comment" in words:
            words = words[: words.index("comment")]
        fields = dict(zip(words[1::2], words[2::2], strict=False)) if words and words[0] == "allow" else {}
        return (words[0] if words else "", fields.get("proto"), fields.get("from"), fields.get("to"), fields.get("port"),
                fields.get("app"))

    @staticmethod
    def _line(args: Sequence[str]) -> str:
        fields = dict(zip(args[1::2], args[2::2], strict=False))
        if "app" in fields:
            line = f"ufw allow from {fields['from']} to any app {fields['app']}"
        else:
            line = f"ufw allow from {fields['from']} to any port {fields['port']} proto {fields['proto']}"
        return line + (f" comment '{fields['comment']}'" if "comment" in fields else "")

    @staticmethod
    def _args_of(line: str) -> tuple[str, ...]:
        import shlex

        words = shlex.split(line)[1:]
        out = [words[0]]
        rest = words[1:]
        pairs = dict(zip(rest[::2], rest[1::2], strict=False))
        for key in ("proto", "from", "to", "port", "app", "comment"):
            if key in pairs:
                out += [key, pairs[key]]
        return tuple(out)

    def castwall_lines(self) -> list[str]:
        return [line for line in self.lines if "castwall:" in line]


def device(n: int, *, name: str | None = None, kind: Kind = Kind.VIDEO, ip: str | None = None,
           mac: str | None = "auto", port: int = 8009, model: str | None = None) -> Device:
    """Device number n of a made-up LAN (192.168.77.0/24, like the lab)."""
    return Device(
        uuid=f"{n:08x}-0000-4000-8000-{n:012x}",
        name=name or f"Device {n}",
        model=model or ("Google Cast Group" if kind is Kind.GROUP else "Chromecast"),
        kind=kind,
        ip=ipaddress.ip_address(ip or f"192.168.77.{100 + n}"),
        port=port,
        mac=f"02:ca:57:00:00:{n:02x}" if mac == "auto" else mac,
    )


def txt_record(*entries: bytes) -> bytes:
    return b"".join(bytes([len(e)]) + e for e in entries)


def announcement(d: Device) -> Announcement:
    """The records a device like d announces (a Cast device's TXT keys)."""
    hexid = d.uuid.replace("-", "")
    body = txt_record(b"id=" + hexid.encode(), b"md=" + d.model.encode(), b"fn=" + d.name.encode(), b"ve=05")
    return Announcement(f"Chromecast-{hexid}._googlecast._tcp.local.", d.port, body,
                        tuple(ip.packed for ip in d.addresses))


def arp_text(devices: Sequence[Device]) -> str:
    rows = ["IP address       HW type     Flags       HW address            Mask     Device"]
    rows += [f"{d.ip}   0x1   0x2   {d.mac}   *   eth0" for d in devices if d.mac and d.kind is not Kind.GROUP]
    return "\n".join(rows) + "\n"


def dial_reply(d: Device, *, delivered: bool = True, on_wire: bool = False, uuid: str | None = None) -> DialReply:
    """What castwall's DIAL search gets from a device like d: its reply and its description."""
    desc = (DATA / "dial-device-desc.xml").read_bytes()
    desc = desc.replace(b"5e7a1c39-2b84-4d6f-90c1-3a8b7d2e4f16", (uuid or d.uuid).encode())
    desc = desc.replace(b"<friendlyName>Chromecast", b"<friendlyName>" + d.name.encode())
    text = (DATA / "dial-msearch-reply.txt").read_bytes().replace(b"192.168.1.66", str(d.ip).encode())
    heard = delivered or on_wire  # castwall fetches the description of a reply seen either way
    return DialReply(d.ip, "eth0", text, delivered, on_wire, desc if heard else None,
                     f"http://{d.ip}:8008/apps/" if heard else None)


def screened(reply: DialReply, may_fetch) -> DialReply:
    """What the real search makes of a reply: castwall asks for no description where may_fetch says why not."""
    why = may_fetch(reply.source)
    if why is None:
        return reply
    return dataclasses.replace(reply, description=None, application_url=None, problem=f"not asked for its description: {why}")


def services(tmp_path: Path, devices: Sequence[Device] = (), *, root: bool = True, ufw: FakeUfw | None = None,
             port_range: str = "32768\t60999\n", extra: Sequence[Announcement] = (),
             impostors: dict[str, str] | None = None, dial: Sequence[DialReply] | None = None,
             closed: Sequence[str] = (), mdns: Sequence[Device] | None = None) -> Services:
    """Services for CliRunner tests: a fake LAN and ufw, real files under tmp_path.

    The LAN announces devices (and extra, raw announcements; mdns, when given,
    are the devices whose announcements arrive) and answers ARP for the
    devices' addresses; impostors (address -> MAC) answer ARP too. dial holds
    the DIAL replies castwall's search gets (None: no DIAL search), closed the
    addresses whose Cast port does not open.
    """
    def raw_arp(ips, iface):
        answers = {}
        for d in devices:
            if d.mac and d.kind is not Kind.GROUP:
                answers.setdefault(d.ip, set()).add(d.mac)
        for ip, mac in (impostors or {}).items():
            answers.setdefault(ipaddress.ip_address(ip), set()).add(mac)
        return {ip: macs for ip, macs in answers.items() if ip in ips}

    ufw = ufw or FakeUfw(root=root)
    paths = Paths(
        state_dir=tmp_path / "state",
        lock_file=tmp_path / "run" / "castwall.lock",
        port_range=tmp_path / "ip_local_port_range",
        arp=tmp_path / "arp",
        dnsmasq_dir=tmp_path / "dnsmasq.d",
        dnsmasq_conf=tmp_path / "dnsmasq.conf",
        ufw_conf=tmp_path / "ufw.conf",
        nftables_conf=tmp_path / "nftables.conf",
        system_bus=tmp_path / "no-system-bus",  # firewalld is not running
        # Never this machine's own: a test that wants profiles or systemd makes them here.
        ufw_profiles=tmp_path / "ufw-applications.d" / "castwall",
        systemd_booted=tmp_path / "no-systemd",
    )
    paths.ufw_conf.write_text(f"ENABLED={'yes' if ufw.active else 'no'}\n")
    paths.port_range.write_text(port_range)
    paths.arp.write_text(arp_text(devices))
    svc = Services(
        paths=paths,
        runner=ufw,
        is_root=lambda: root,
        discover=lambda addresses, timeout, **options: [announcement(d) for d in (devices if mdns is None else mdns)] + list(extra),
        dial=lambda interfaces, wire=False, misplaced=lambda ip, interface: None, may_fetch=lambda ip: None, **options: (
            None if dial is None else SimpleNamespace(
                replies=[screened(r, may_fetch) for r in dial if not misplaced(r.source, r.interface)],
                forged=[dataclasses.replace(r, text=b"", description=None, application_url=None,
                                            problem=misplaced(r.source, r.interface))
                        for r in dial if misplaced(r.source, r.interface)],
                wire_problem=None if wire else "not root")),
        reach=lambda targets: {t: (None if str(t[0]) not in closed else "connection refused") for t in targets},
        raw_arp=raw_arp,
        poke=lambda ips: None,  # never send packets from a unit test
        now=lambda: datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc),
        ufw_path="cli",  # the fake ufw is a command; never load the real ufw's library here
        nft_cli=True,  # nor libnftables, which would read this machine's own ruleset
    )
    svc.ufw = ufw  # for assertions
    return svc
