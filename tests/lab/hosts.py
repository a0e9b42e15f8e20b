"""Hosts on the lab's LAN that are not its Cast devices: hostile responders and an impostor (a part of Lab)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HOSTILE = Path(__file__).with_name("hostile.py")
HOSTILE_DIAL = Path(__file__).with_name("hostile_dial.py")


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



class OtherHosts:
    """Lab's hostile hosts: each a namespace of its own on the LAN's bridge."""

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

    def add_hostile_dial(self, cases: list[dict], *, decoys: list[str] = (), listen: list[int] = (8008,),
                         ns: str | None = None, tag: str = "hd") -> HostileDial:
        """A host answering every M-SEARCH with crafted replies, one address per case (see hostile_dial.py).

        decoys are more addresses of that host which answer nothing: a request to one is a
        request castwall should never have sent. Every request it gets is in its log. With ns,
        the host is that namespace as it is (the gateway, say), its addresses already there.
        """
        if ns is None:
            ns = self._add_ns(tag)
            ips = [c["ip"] for c in cases] + list(decoys)
            self._attach(ns, tag, ips[0], "02:ca:57:66:d1:a1")
            for ip in ips[1:]:
                self._sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        where = self.dir / tag
        where.mkdir()
        (where / "cases.json").write_text(json.dumps(cases))
        log = where / "hostile-dial.log"
        self._spawn(["ip", "netns", "exec", ns, self.python, str(HOSTILE_DIAL), "--cases", str(where / "cases.json"),
                     "--listen", ",".join(str(p) for p in listen), "--log", str(log)], where / "hostile-dial.out")
        self._wait(lambda: '"ready"' in log.read_text(), "hostile DIAL host")
        return HostileDial(ns, log)

    def add_second_subnet(self, subnet: str = "10.99.0") -> tuple[str, str]:
        """A second interface of the workstation, eth1 ({subnet}.10/24), cabled to one host at {subnet}.5.

        As a management LAN beside the Cast LAN: castwall must never be made to send it a request by
        a reply forged on the other LAN. Returns (the host's namespace, its address).
        """
        ns = self._add_ns("mg")
        ws = f"{self.prefix}-ws"
        self._sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1", "netns", ws)
        self._sh("ip", "-n", ns, "addr", "add", f"{subnet}.5/24", "dev", "eth0")
        self._sh("ip", "-n", ns, "link", "set", "eth0", "up")
        self._sh("ip", "-n", ws, "addr", "add", f"{subnet}.10/24", "dev", "eth1")
        self._sh("ip", "-n", ws, "link", "set", "eth1", "up")
        return ns, f"{subnet}.5"

    def add_impostor(self, ip: str, mac: str) -> str:
        """A silent host that takes ip too: it answers ARP for it, as a spoofer would."""
        ns = self._add_ns("im")
        self._attach(ns, "im", ip, mac)
        return ns
