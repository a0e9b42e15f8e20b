"""Which network this computer is on: each subnet of its interfaces, the default gateway there and the gateway's MAC.

Follow mode tells a home network from a café's that uses the same subnet by
the gateway's MAC: `ip -j -4 route show default` names the gateway, and ARP
says which MAC answers for it now.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Callable, Sequence

from castwall.model import Address, Lan
from castwall.system.interfaces import NetInterface
from castwall.system.neighbours import ask_arp
from castwall.system.runner import Runner


def parse_default_routes(text: str) -> dict[str, Address]:
    """Map each interface to its default gateway, from `ip -j -4 route show default` (the first route per interface)."""
    try:
        items = json.loads(text or "[]")
    except (ValueError, RecursionError):
        return {}
    out: dict[str, Address] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or item.get("dst") != "default":
            continue
        try:
            gateway = ipaddress.ip_address(item["gateway"])
            dev = str(item["dev"])
        except (KeyError, TypeError, ValueError):
            continue
        out.setdefault(dev, gateway)
    return out


def lans_of(interfaces: Sequence[NetInterface], routes: dict[str, Address], macs: dict[Address, set[str]]) -> list[Lan]:
    """One Lan per IPv4 subnet of the interfaces, with its gateway where the default route goes through it.

    A gateway answered by several MACs, or by none, has no MAC here: follow
    then cannot tell the network is the one it knew.
    """
    out = []
    for iface in interfaces:
        for addr in iface.ipv4:
            gateway = routes.get(iface.name)
            if gateway is None or gateway not in addr.network:
                out.append(Lan(addr.network))
                continue
            answered = macs.get(gateway, set())
            out.append(Lan(addr.network, gateway, next(iter(answered)) if len(answered) == 1 else None))
    return out


def default_routes(runner: Runner) -> dict[str, Address]:
    """Each interface's default gateway, as the kernel routes now (none where `ip` fails)."""
    done = runner.run(["ip", "-j", "-4", "route", "show", "default"], timeout=10)
    return parse_default_routes(done.stdout if done.returncode == 0 else "")


def current_lans(
    runner: Runner,
    interfaces: Sequence[NetInterface],
    raw_arp: Callable[[Sequence[Address], str], dict[Address, set[str]]] | None,
) -> tuple[list[Lan], str | None]:
    """The networks this computer is on now, and a warning when the gateways' MACs could not be asked (no root)."""
    routes = default_routes(runner)
    gateways = sorted(set(routes.values()), key=int)
    macs: dict[Address, set[str]] = {}
    warning = None
    if gateways and raw_arp is not None:
        macs, warning = ask_arp(gateways, interfaces, raw_arp)
    return lans_of(interfaces, routes, macs), warning
