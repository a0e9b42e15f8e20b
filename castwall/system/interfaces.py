"""The host's network interfaces and the subnets attached to them."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Sequence

from castwall.errors import BadData, NetworkUnavailable, UsageError
from castwall.model import Address
from castwall.system.runner import Runner

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class NetInterface:
    name: str
    up: bool
    multicast: bool
    loopback: bool
    addresses: tuple[IPInterface, ...]

    @property
    def ipv4(self) -> tuple[ipaddress.IPv4Interface, ...]:
        return tuple(a for a in self.addresses if isinstance(a, ipaddress.IPv4Interface))

    @property
    def usable(self) -> bool:
        return self.up and self.multicast and not self.loopback and bool(self.ipv4)


def parse_ip_addr(text: str) -> list[NetInterface]:
    """Parse the JSON of `ip -j addr show`.

    Raises BadData when it is not the expected JSON; skips malformed addresses.
    """
    try:
        items = json.loads(text)
    except (ValueError, RecursionError):
        raise BadData("'ip -j addr' printed something that is not JSON") from None
    if not isinstance(items, list):
        raise BadData("'ip -j addr' printed JSON of an unexpected shape")
    result = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("ifname"), str):
            continue
        flags = item.get("flags") if isinstance(item.get("flags"), list) else []
        addrs = []
        infos = item.get("addr_info")
        for info in infos if isinstance(infos, list) else []:
            if not isinstance(info, dict) or info.get("family") not in ("inet", "inet6"):
                continue
            try:
                addrs.append(ipaddress.ip_interface(f"{info['local']}/{int(info['prefixlen'])}"))
            except (KeyError, TypeError, ValueError):
                continue
        result.append(
            NetInterface(
                name=item["ifname"],
                up="UP" in flags and item.get("operstate") != "DOWN",
                multicast="MULTICAST" in flags,
                loopback="LOOPBACK" in flags,
                addresses=tuple(addrs),
            )
        )
    return result


def list_interfaces(runner: Runner) -> list[NetInterface]:
    """Ask the kernel for interfaces and addresses. Raises MissingTool, BadData."""
    done = runner.run(["ip", "-j", "addr", "show"], timeout=10)
    if done.returncode != 0:
        raise BadData(f"'ip -j addr show' failed: {done.last_line()}")
    return parse_ip_addr(done.stdout)


def choose_interfaces(all_ifaces: Sequence[NetInterface], names: Sequence[str]) -> list[NetInterface]:
    """The interfaces to work on: those named, or every usable one.

    Raises UsageError for an unknown name and NetworkUnavailable when nothing
    usable is left.
    """
    if not names:
        chosen = [i for i in all_ifaces if i.usable]
        if not chosen:
            raise NetworkUnavailable(
                "no network interface is up with an IPv4 address and multicast; connect to the LAN first"
            )
        return chosen
    by_name = {i.name: i for i in all_ifaces}
    chosen = []
    for name in dict.fromkeys(names):
        iface = by_name.get(name)
        if iface is None:
            known = ", ".join(i.name for i in all_ifaces if not i.loopback) or "none"
            raise UsageError(f"no interface named {name!r} (interfaces here: {known})")
        if not iface.usable:
            why = "is down" if not iface.up else "has no IPv4 address" if not iface.ipv4 else "cannot multicast"
            raise NetworkUnavailable(f"interface {name} {why}; mDNS discovery cannot use it")
        chosen.append(iface)
    return chosen


def attached_interface(ip: Address, interfaces: Sequence[NetInterface]) -> NetInterface | None:
    """The interface whose subnet holds ip directly (no router between), if any."""
    for iface in interfaces:
        for addr in iface.addresses:
            if addr.version == ip.version and ip in addr.network:
                return iface
    return None


def own_addresses(interfaces: Sequence[NetInterface]) -> set[Address]:
    return {a.ip for i in interfaces for a in i.addresses}
