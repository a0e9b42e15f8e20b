"""One LAN's worth of devices for the hint tests: ordinary, clashing, foreign and hostile names,
and every reason a device gets no reservation."""

from __future__ import annotations

import ipaddress

from castwall.model import Device, Kind

NETWORKS = [ipaddress.ip_interface("192.168.1.10/24"), ipaddress.ip_interface("10.0.5.1/24")]


def uid(n: int) -> str:
    return f"{n:08x}-7c1e-4d2a-9b3f-{n:012x}"


def dev(n: int, name: str, ip: str, mac: str | None, *, model: str = "Chromecast", kind: Kind = Kind.VIDEO,
        note: str | None = None, host: str | None = None) -> Device:
    return Device(uid(n), name, model, kind, ipaddress.ip_address(ip), 8009, mac, note, host)


DEVICES = [
    dev(1, "Living Room TV", "192.168.1.50", "aa:bb:cc:00:00:01"),
    dev(2, "Living-Room TV!", "10.0.5.20", "aa:bb:cc:00:00:02", model='Chromecast "Ultra"'),
    dev(3, "Küche Lautsprecher", "192.168.1.51", "aa:bb:cc:00:00:03", model="Google Home Mini", kind=Kind.AUDIO),
    dev(4, "客厅电视", "192.168.1.52", "aa:bb:cc:00:00:04", model="Chromecast with Google TV"),
    dev(5, '"; rm -rf / # \\x1b[31m $(reboot) `id` <b>&amp;', "192.168.1.53", "aa:bb:cc:00:00:05", model="x'; DROP"),
    dev(6, "2nd floor TV", "192.168.1.54", "aa:bb:cc:00:00:06"),
    dev(7, "ignore", "192.168.1.55", "aa:bb:cc:00:00:07", model="Nest Audio", kind=Kind.AUDIO),
    dev(8, "=HYPERLINK(\"http://x\")", "192.168.1.56", "aa:bb:cc:00:00:08"),
    dev(9, "Whole House", "192.168.1.51", "aa:bb:cc:00:00:03", model="Google Cast Group", kind=Kind.GROUP, host=uid(3)),
    dev(10, "Hall TV", "192.168.1.60", None, note="no ARP answer from 192.168.1.60"),
    dev(11, "Branch office TV", "172.16.9.9", None, note="172.16.9.9 is reached through a router"),
    dev(12, "Clone of Living Room TV", "192.168.1.70", "aa:bb:cc:00:00:01"),
    dev(13, "Refused one", "192.168.1.255", "aa:bb:cc:00:00:0d"),
    dev(14, "Attic speaker", "192.168.1.57", "aa:bb:cc:00:00:0e", model="Nest Mini", kind=Kind.AUDIO),
    dev(15, "A" * 70 + " very long name", "192.168.1.58", "aa:bb:cc:00:00:0f"),
]
REFUSED = {uid(13): "192.168.1.255 is the broadcast address of 192.168.1.0/24"}
UNSEEN = frozenset({uid(14)})
