"""MAC addresses of devices: the kernel's neighbour table, raw ARP (system/arp.py) as a fallback."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from castwall.model import Address, Device, canonical_mac
from castwall.system.interfaces import NetInterface, attached_interface
from castwall.system.runner import Runner

ARP_PATH = Path("/proc/net/arp")
ATF_COM = 0x2  # the kernel's "entry complete" flag in /proc/net/arp
_HAVE_MAC = {"REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"}

VIA_ROUTER = "reached through a router: its MAC is not visible from here"
NO_ANSWER = "no answer to ARP: the device may be asleep or gone"


def parse_proc_arp(text: str) -> dict[Address, tuple[str, str]]:
    """Map each complete entry of /proc/net/arp to (MAC, interface).

    Incomplete entries, the all-zero MAC and malformed lines are skipped.
    """
    table: dict[Address, tuple[str, str]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        try:
            ip = ipaddress.ip_address(fields[0])
            flags = int(fields[2], 16)
            mac = canonical_mac(fields[3])
        except ValueError:
            continue
        if flags & ATF_COM:
            table[ip] = (mac, fields[5])
    return table


def parse_ip_neigh(text: str) -> dict[Address, tuple[str, str]]:
    """Map each usable entry of `ip -j neigh show` to (MAC, interface)."""
    try:
        items = json.loads(text or "[]")
    except (ValueError, RecursionError):
        return {}
    table: dict[Address, tuple[str, str]] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        state = item.get("state") or []
        if not isinstance(state, list) or not _HAVE_MAC.intersection(s for s in state if isinstance(s, str)):
            continue
        if not isinstance(item.get("dst"), str):  # ip_address() would take a number too
            continue
        try:
            ip = ipaddress.ip_address(item["dst"])
            mac = canonical_mac(item["lladdr"])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        table[ip] = (mac, str(item.get("dev", "")))
    return table


def poke(ips: Iterable[Address]) -> None:
    """Send one empty UDP datagram to each address so the kernel resolves it."""
    socks: dict[int, socket.socket] = {}
    try:
        for ip in ips:
            family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family not in socks:
                socks[family] = socket.socket(family, socket.SOCK_DGRAM)
                socks[family].setblocking(False)
            try:
                socks[family].sendto(b"", (str(ip), 9))  # discard port; any port works
            except OSError:
                pass
    finally:
        for s in socks.values():
            s.close()


class NeighbourTable:
    """Reads the kernel's neighbour entries: /proc/net/arp for IPv4, `ip -j neigh` for IPv6."""

    def __init__(self, runner: Runner, arp_path: Path = ARP_PATH, poke: Callable[[Iterable[Address]], None] = poke):
        self.runner = runner
        self.arp_path = arp_path
        self.poke = poke

    def read(self, want_v6: bool) -> dict[Address, tuple[str, str]]:
        try:
            table = parse_proc_arp(self.arp_path.read_text(errors="replace"))
        except OSError:
            table = {}
        if want_v6:
            done = self.runner.run(["ip", "-j", "-6", "neigh", "show"], timeout=10)
            table.update(parse_ip_neigh(done.stdout))
        return table


def ask_arp(
    ips: Sequence[Address],
    interfaces: Sequence[NetInterface],
    raw_arp: Callable[[Sequence[Address], str], dict[Address, set[str]]],
) -> tuple[dict[Address, set[str]], str | None]:
    """Ask by raw ARP, on the interface each address is attached to, who answers for it now.

    Returns every MAC that answered, per address (addresses nobody answered
    for are absent), and a warning when the question could not be asked on an
    interface. Unlike the kernel's neighbour table this holds no stale entry:
    after a move to another network, only the hosts there answer.
    """
    by_iface: dict[str, list[Address]] = {}
    for ip in ips:
        iface = attached_interface(ip, interfaces) if ip.version == 4 else None
        if iface is not None:
            by_iface.setdefault(iface.name, []).append(ip)
    found: dict[Address, set[str]] = {}
    warning = None
    for iface, some in by_iface.items():
        try:
            found.update(raw_arp(some, iface))
        except (OSError, RuntimeError) as exc:
            warning = f"the ARP check on {iface} failed ({exc}); claims on an address were not checked"
    return found, warning


def resolve_macs(
    devices: Sequence[Device],
    interfaces: Sequence[NetInterface],
    table: NeighbourTable,
    *,
    raw_arp: Callable[[Sequence[Address], str], dict[Address, set[str]]] | None = None,
    check_claims: bool = False,
    wait: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[Device], str | None]:
    """Return the devices with MAC (or the reason there is none) filled in, and a warning.

    raw_arp (root only) is tried for what the kernel did not resolve. With
    check_claims it also asks for every address on the LAN, to see whether
    more than one host answers for it: such a device is marked contested.
    The warning says when that check could not run.
    """
    local = {d.ip for d in devices if attached_interface(d.ip, interfaces) is not None}
    found: dict[Address, tuple[str, str]] = {}
    if local:
        table.poke(local)
        deadline = clock() + wait
        want_v6 = any(ip.version == 6 for ip in local)
        while True:
            found = {ip: v for ip, v in table.read(want_v6).items() if ip in local}
            if len(found) == len(local) or clock() >= deadline:
                break
            time.sleep(0.01)
    extra: dict[Address, set[str]] = {}
    warning = None
    v4 = sorted((ip for ip in local if ip.version == 4), key=int)
    probe = v4 if check_claims else [ip for ip in v4 if ip not in found]
    if check_claims and raw_arp is None:
        warning = "cannot check whether two hosts claim a device's address (needs root)"
    if raw_arp and probe:
        extra, warning = ask_arp(probe, interfaces, raw_arp)
    result = []
    for d in devices:
        claims = set(extra.get(d.ip, ()))
        if d.ip in found:
            claims.add(found[d.ip][0])
        if d.ip not in local:
            result.append(d.with_mac(None, VIA_ROUTER))
        elif len(claims) > 1:
            macs = ", ".join(sorted(claims))
            result.append(replace(
                d.with_mac(None, f"several hosts answer ARP for this address ({macs})"),
                contested=d.contested or f"{len(claims)} hosts answer ARP for {d.ip} ({macs}): the address is contested or spoofed",
            ))
        elif claims:
            result.append(d.with_mac(next(iter(claims))))
        else:
            result.append(d.with_mac(None, NO_ANSWER))
    return result, warning
