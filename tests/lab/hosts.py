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

    def add_impostor(self, ip: str, mac: str) -> str:
        """A silent host that takes ip too: it answers ARP for it, as a spoofer would."""
        ns = self._add_ns("im")
        self._attach(ns, "im", ip, mac)
        return ns
