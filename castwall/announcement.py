"""What a Cast announcement says, read defensively: records in, devices or reasons out.

Pure: discovery hands in the records of each `_googlecast._tcp` instance as
they came off the network; nothing here trusts them.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from castwall.model import FOUND_BY, Address, Device, Kind, canonical_uuid
from castwall.sanitize import safe_text

SERVICE = "_googlecast._tcp.local."
TYPE_A, TYPE_PTR, TYPE_TXT, TYPE_SRV, CLASS_IN = 1, 12, 16, 33, 1  # the DNS record types and class it is made of
MAX_QUESTIONS = 60  # in one follow-up query for records that did not come
GROUP_MODEL = "google cast group"
# Models without a screen, as pychromecast's table lists them (lower case).
AUDIO_MODELS = frozenset(
    {
        "chromecast audio",
        "google home",
        "google home mini",
        "google home max",
        "google nest mini",
        "nest audio",
        "nest wifi point",
        "bose smart ultra soundbar",
        "c4a",
        "jbl link 10",
        "jbl link 20",
        "jbl link 300",
        "jbl link 500",
        "jbl link portable",
        "lenovocd-24502f",
        "lg wk7 thinq speaker",
        "marshall stanmore ii",
        "pioneer vsx-831",
        "pioneer vsx-1131",
    }
)


@dataclass(frozen=True)
class Announcement:
    """The records of one announced instance, as received (not yet trusted).

    port comes from the SRV record (None when none arrived), txt is the raw
    TXT rdata, addresses are the A records of the host the SRV record names.
    """

    instance: str
    port: int | None = None
    txt: bytes | None = None
    addresses: tuple[bytes, ...] = ()
    via: str = "mdns"  # "mdns": a multicast answer; "mdns-unicast": an answer to a unicast question


@dataclass(frozen=True)
class Rejected:
    """An announcement castwall did not take as a device, and why."""

    instance: str  # already made safe; for a DIAL reply, the replier's address
    reason: str
    via: str = "mdns"  # "dial" for a DIAL reply


def assemble(instance: str, lookup: Callable[[str, int], list], *, via: str = "mdns",
             own: Callable[[bytes], bool] = lambda raw: True) -> tuple[Announcement, list[tuple[str, int]]]:
    """The announcement of one instance from its records, and the questions that would complete it.

    lookup(name, type) gives the records heard for a name (newest first),
    shaped as zeroconf's: SRV with port and server, TXT with text, A with
    address. own says which addresses may be taken (all, for multicast).
    """
    srv = next(iter(lookup(instance, TYPE_SRV)), None)
    txt = next(iter(lookup(instance, TYPE_TXT)), None)
    addresses = tuple(r.address for r in lookup(srv.server, TYPE_A) if own(r.address)) if srv else ()
    missing = []
    if srv is None:
        missing.append((instance, TYPE_SRV))
    elif not addresses:
        missing.append((srv.server, TYPE_A))
    if txt is None:
        missing.append((instance, TYPE_TXT))
    found = Announcement(instance=instance, port=srv.port if srv else None, txt=txt.text if txt else None,
                         addresses=addresses, via=via)
    return found, missing


def kind_of(model: str) -> Kind:
    key = model.strip().casefold()
    if key == GROUP_MODEL:
        return Kind.GROUP
    return Kind.AUDIO if key in AUDIO_MODELS else Kind.VIDEO


def parse_txt(raw: bytes) -> dict[str, bytes | None]:
    """The key/value pairs of TXT rdata (RFC 6763 section 6).

    Keys are compared case-insensitively and the first one wins; a key
    without "=" has the value None; an entry whose length runs past the end
    is dropped, as is everything after it.
    """
    out: dict[str, bytes | None] = {}
    i = 0
    while i < len(raw):
        length = raw[i]
        entry = raw[i + 1 : i + 1 + length]
        if len(entry) < length:
            break
        i += 1 + length
        key, eq, value = entry.partition(b"=")
        if not key:
            continue
        name = key.decode("ascii", "replace").lower()
        out.setdefault(name, value if eq else None)
    return out


def _text(value: bytes | None) -> str:
    return safe_text(value.decode("utf-8", "backslashreplace")) if value else ""


def read_announcement(a: Announcement) -> list[Device] | Rejected:
    """The device(s) an announcement describes: one per IPv4 address it gives.

    Returns Rejected, saying why, when it lacks what a rule needs or does not
    describe a Cast device.
    """
    label = safe_text(a.instance.removesuffix("._googlecast._tcp.local.")) or "(no name)"
    if a.txt is None:
        return Rejected(label, "incomplete announcement: no TXT record")
    txt = parse_txt(a.txt)
    raw_id = txt.get("id")
    if not raw_id:
        return Rejected(label, "no Cast device id (TXT id=) in the announcement")
    try:
        uuid = canonical_uuid(raw_id.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return Rejected(label, f"its Cast device id is not a UUID: {safe_text(raw_id, 40)}")
    if a.port is None:
        return Rejected(label, "incomplete announcement: no SRV record (port)")
    if not 1 <= a.port <= 65535:
        return Rejected(label, f"announces port {a.port}, which is not a port")
    addresses = sorted({ipaddress.IPv4Address(raw) for raw in a.addresses if len(raw) == 4}, key=int)
    if not addresses:
        return Rejected(label, "incomplete announcement: no IPv4 address for its host")
    model = _text(txt.get("md")) or "unknown model"
    name = _text(txt.get("fn")) or "(unnamed)"
    return [Device(uuid=uuid, name=name, model=model, kind=kind_of(model), ip=ip, port=a.port, found_by=(a.via,))
            for ip in addresses]


def collate(announcements: Iterable[Announcement], dial: Iterable[Device | Rejected] = ()) -> tuple[list[Device], list[Rejected]]:
    """One device per UUID, from mDNS announcements and DIAL replies; a UUID seen at several addresses is contested.

    dial holds what castwall.dial.read_dial made of each DIAL reply. A device
    found both ways is one device: its announcement supplies the port and
    names, and found_by says every way it was found. A device's UUID at two
    addresses is either a clone or a spoof: castwall cannot tell which
    address is real, so the device is marked contested and lists every
    address (also_at); the planner writes no rule for it unless the user
    accepts one of them.
    """
    by_uuid: dict[str, list[Device]] = defaultdict(list)
    rejected: list[Rejected] = []
    for a in announcements:
        got = read_announcement(a)
        if isinstance(got, Rejected):
            rejected.append(got)
        else:
            for d in got:
                by_uuid[d.uuid].append(d)
    for got in dial:
        if isinstance(got, Rejected):
            rejected.append(got)
        else:
            by_uuid[got.uuid].append(got)
    devices = []
    for seen in by_uuid.values():
        addresses: list[Address] = sorted({d.ip for d in seen}, key=int)
        here = [d for d in seen if d.ip == addresses[0]]
        first = next((d for d in here if "dial" not in d.found_by), here[0])  # an announcement says more
        ways = {k for d in seen for k in d.found_by}
        first = replace(first, found_by=tuple(k for k in FOUND_BY if k in ways) + tuple(sorted(ways - FOUND_BY.keys())))
        if len(addresses) > 1:
            names = {}
            for d in seen:
                names.setdefault(d.ip, d.name)
            where = ", ".join(f"{ip} as {names[ip]}" for ip in addresses)
            first = replace(
                first,
                also_at=tuple(addresses[1:]),
                contested=f"its id is announced from {len(addresses)} addresses ({where}): a clone or a spoof",
            )
        devices.append(first)
    rejected.sort(key=lambda r: (r.via, r.instance.casefold(), r.reason))
    return devices, rejected


def link_groups(devices: Iterable[Device]) -> list[Device]:
    """Tie each group to the device announced at the same address (its leader).

    Returns the devices sorted by name, then address.
    """
    devices = list(devices)
    hosts: dict[Address, str] = {}
    for d in devices:
        if d.kind is not Kind.GROUP:
            hosts.setdefault(d.ip, d.uuid)
    linked = [replace(d, host=hosts.get(d.ip)) if d.kind is Kind.GROUP else d for d in devices]
    return sorted(linked, key=lambda d: (d.name.casefold(), d.ip.version, int(d.ip), d.uuid))
