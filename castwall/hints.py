"""DHCP reservation hints: which devices to reserve, their host names, and each router's syntax.

Pure: devices in, text out. Every string that came from an announcement
reaches the output only as a derived DNS label, a restricted comment, or
through the escaping of a structured format (JSON, XML, CSV).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from castwall.model import Device, Kind
from castwall.sanitize import safe_text

Network = ipaddress.IPv4Interface | ipaddress.IPv6Interface

MAX_LABEL = 63
# Words that dnsmasq's dhcp-host reads as keywords rather than as a host name.
RESERVED_LABELS = frozenset({"ignore", "infinite", "deleted", "deprecated", "localhost"})
_COMMENT_CHARS = re.compile(r"[^A-Za-z0-9 .,()+&'_-]+")


@dataclass(frozen=True)
class Reservation:
    """One DHCP reservation: this MAC always gets this address."""

    host: str  # a DNS label, unique within one set of hints
    mac: str
    ip: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network
    name: str  # the friendly name, made printable
    model: str
    uuid: str
    seen: bool = True  # False: known from the state file, not seen on the LAN now

    @property
    def comment(self) -> str:
        """A description safe inside any format's comment or quoted string."""
        model = comment_text(self.model)
        text = comment_text(self.name) or f"Cast device {self.uuid[:8]}"
        return f"{text} ({model})" if model else text


@dataclass(frozen=True)
class Omitted:
    """A device that gets no reservation, and why."""

    name: str
    ip: str
    uuid: str
    code: str  # group, refused, ipv6, routed, no-mac, same-mac, same-ip
    reason: str


@dataclass(frozen=True)
class Hints:
    reservations: tuple[Reservation, ...]
    omitted: tuple[Omitted, ...]

    @property
    def subnets(self) -> list[ipaddress.IPv4Network]:
        return sorted({r.subnet for r in self.reservations})


# --- names ------------------------------------------------------------------


def xml_escape(text: str) -> str:
    """Escape text for an XML element (xml.sax.saxutils would pull in urllib and ssl at start-up)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def comment_text(text: str, limit: int = 60) -> str:
    """ASCII letters, digits, spaces and a few marks only: safe in every format's comments and quotes."""
    cleaned = " ".join(_COMMENT_CHARS.sub(" ", _ascii(text)).split())
    return cleaned[:limit].rstrip()


def host_label(name: str, uuid: str) -> str:
    """A DNS label (RFC 1123) for a friendly name: lower case, letters, digits, hyphens.

    It starts with a letter, so no DHCP server reads it as a number, a lease
    time or an address, and it is never one of dnsmasq's keywords. A name
    with nothing left in ASCII becomes cast-<first 8 hex digits of the UUID>.
    """
    label = re.sub(r"[^a-z0-9]+", "-", _ascii(name).lower()).strip("-")
    if not label:
        return "cast-" + uuid.replace("-", "")[:8]
    if not label[0].isalpha() or label in RESERVED_LABELS:
        label = "cast-" + label
    return label[:MAX_LABEL].rstrip("-")


def _with_suffix(label: str, uuid: str, digits: int) -> str:
    suffix = "-" + uuid.replace("-", "")[:digits]
    return label[: MAX_LABEL - len(suffix)].rstrip("-") + suffix


def unique_labels(named: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Map each (name, uuid) to a label unique among them, by UUID.

    A device whose label is its own keeps the plain label; devices whose
    names give the same label all get a suffix from their UUID, so the result
    depends only on the set of devices, never on their order.
    """
    wanted = {uuid: host_label(name, uuid) for name, uuid in named}
    digits = {uuid: 0 for uuid in wanted}
    while True:
        labels = {u: (_with_suffix(wanted[u], u, n) if n else wanted[u]) for u, n in digits.items()}
        counts: dict[str, list[str]] = {}
        for u, label in labels.items():
            counts.setdefault(label, []).append(u)
        clashes = [us for us in counts.values() if len(us) > 1]
        if not clashes:
            return labels
        for us in clashes:
            for u in us:
                digits[u] = {0: 4, 4: 8, 8: 12}.get(digits[u], 32)


# --- which devices ------------------------------------------------------------


def collect(
    devices: Sequence[Device],
    networks: Sequence[Network],
    refused: Mapping[str, str] | None = None,
    unseen: frozenset[str] = frozenset(),
) -> Hints:
    """Sort devices into reservations and omissions, with a reason for each omission.

    networks are the addresses (with prefix) of this computer's interfaces; a
    reservation belongs to the subnet holding the device's address. unseen
    holds the UUIDs known only from the state file.
    """
    refused = refused or {}
    by_uuid = {d.uuid: d for d in devices}
    keep: list[Device] = []
    omitted: list[Omitted] = []
    by_mac: dict[str, Device] = {}
    by_ip: dict[object, Device] = {}
    subnet_of: dict[str, ipaddress.IPv4Network] = {}

    def omit(d: Device, code: str, reason: str) -> None:
        omitted.append(Omitted(safe_text(d.name), str(d.ip), d.uuid, code, reason))

    for d in sorted(devices, key=lambda d: (d.kind is Kind.GROUP, d.ip.version, int(d.ip), d.uuid)):
        if d.kind is Kind.GROUP:
            host = by_uuid.get(d.host or "")
            omit(d, "group", f"a Cast group, not a host: it runs on {safe_text(host.name)}, whose reservation covers it"
                 if host else "a Cast group, not a host: it runs on a device that was not seen")
            continue
        if d.uuid in refused:
            omit(d, "refused", f"no rule, so no reservation: {refused[d.uuid]}")
            continue
        if d.ip.version != 4:
            omit(d, "ipv6", f"{d.ip} is an IPv6 address; DHCPv4 reservations need an IPv4 address")
            continue
        subnet = next((n.network for n in networks if n.version == 4 and d.ip in n.network), None)
        if subnet is None:
            omit(d, "routed", f"reached through a router ({d.ip} is not on a subnet of this computer): "
                    "make its reservation on the DHCP server of its own subnet")
            continue
        if d.mac is None:
            omit(d, "no-mac", f"MAC address unknown ({d.mac_note})" if d.mac_note else "MAC address unknown")
            continue
        twin = by_mac.get(d.mac)
        if twin is not None:
            omit(d, "same-mac", f"same MAC address as {safe_text(twin.name)}"
                    + (", whose reservation covers it" if twin.ip == d.ip else f" at {twin.ip}: one MAC gets one address"))
            continue
        other = by_ip.get(d.ip)
        if other is not None:
            omit(d, "same-ip", f"{d.ip} is already reserved for {safe_text(other.name)} ({other.mac})")
            continue
        by_mac[d.mac] = d
        by_ip[d.ip] = d
        subnet_of[d.uuid] = subnet
        keep.append(d)
    labels = unique_labels([(d.name, d.uuid) for d in keep])
    reservations = tuple(
        Reservation(
            host=labels[d.uuid],
            mac=d.mac or "",
            ip=d.ip,  # type: ignore[arg-type]  (IPv4 checked above)
            subnet=subnet_of[d.uuid],
            name=safe_text(d.name),
            model=safe_text(d.model),
            uuid=d.uuid,
            seen=d.uuid not in unseen,
        )
        for d in keep
    )
    return Hints(reservations, tuple(omitted))


# --- formats ------------------------------------------------------------------


def _count(hints: Hints) -> str:
    n = len(hints.reservations)
    return f"{n} Cast device{'s' if n != 1 else ''}"


def _seen_note(r: Reservation) -> str:
    return "" if r.seen else "; saved by castwall setup, not seen now"


def render_plain(hints: Hints) -> str:
    out = [f"DHCP reservations for {_count(hints)}"]
    if hints.reservations:
        out += [
            "",
            "Reserve each address below for its MAC address on your router's DHCP server, so",
            "the device keeps its address and castwall's firewall rule for it stays right.",
            "",
            *plain_rows(hints.reservations),
            "",
            "Routers call this an address reservation, static lease, static DHCP or fixed IP:",
            "  1. Open your router's web page and sign in as its administrator.",
            "  2. Find the DHCP server settings (often under LAN, Network or Home Network).",
            "  3. Add one entry per row above: the MAC address, the IP address and,",
            "     if the router asks for a name, the host name.",
            "  4. Save. The devices keep their addresses; nothing needs a restart.",
            "  On a FRITZ!Box: Home Network > Network > edit the device > tick \"Always",
            "  assign this network device the same IPv4 address\".",
            "For your router's own syntax, see: castwall hints --format list",
        ]
    if hints.omitted:
        out += ["", f"No reservation ({len(hints.omitted)}):"]
        out += [f"  {o.name} ({o.ip}): {o.reason}" for o in hints.omitted]
    return "\n".join(out) + "\n"


def plain_rows(reservations: Sequence[Reservation]) -> list[str]:
    """The reservations as an indented table: host name, MAC, address, device."""
    rows = [["HOST NAME", "MAC ADDRESS", "IP ADDRESS", "DEVICE"]]
    rows += [[r.host, r.mac, str(r.ip), r.name + ("" if r.seen else " (not seen now)")] for r in reservations]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[3] for row in rows]  # the last column unpadded


def _header(hints: Hints, *lines: str, mark: str = "#") -> list[str]:
    text = [f"DHCP reservations for {_count(hints)}, from castwall.", *lines]
    return [f"{mark} {t}".rstrip() for t in text]


def render_dnsmasq(hints: Hints, header: bool = True) -> str:
    out = _header(hints, "For dnsmasq or Pi-hole: a file in /etc/dnsmasq.d/, then restart dnsmasq.") if header else []
    for r in hints.reservations:
        out += [f"# {r.comment}{_seen_note(r)}", f"dhcp-host={r.mac},{r.ip},{r.host}"]
    return "\n".join(out) + "\n"


def _uci_section(r: Reservation) -> str:
    return "castwall_" + r.host.replace("-", "_")


def render_openwrt(hints: Hints) -> str:
    out = _header(hints, "For OpenWrt: run these on the router (ssh root@router).",
                  "Each reservation is a named section, so running them again changes nothing.")
    for r in hints.reservations:
        s = f"dhcp.{_uci_section(r)}"
        out += [
            f"# {r.comment}{_seen_note(r)}",
            f"uci set {s}=host",
            f"uci set {s}.name='{r.host}'",
            f"uci set {s}.mac='{r.mac}'",
            f"uci set {s}.ip='{r.ip}'",
        ]
    if hints.reservations:
        out += ["uci commit dhcp", "/etc/init.d/dnsmasq restart"]
    return "\n".join(out) + "\n"


def render_openwrt_config(hints: Hints) -> str:
    out = _header(hints, "For OpenWrt: add to /etc/config/dhcp, then run /etc/init.d/dnsmasq restart.")
    for r in hints.reservations:
        out += [
            "",
            f"# {r.comment}{_seen_note(r)}",
            f"config host '{_uci_section(r)}'",
            f"\toption name '{r.host}'",
            f"\toption mac '{r.mac}'",
            f"\toption ip '{r.ip}'",
        ]
    return "\n".join(out) + "\n"


def render_dhcpd(hints: Hints) -> str:
    out = _header(hints, "For ISC dhcpd: add to /etc/dhcp/dhcpd.conf, check with dhcpd -t,",
                  "then restart isc-dhcp-server.")
    for r in hints.reservations:
        out += [
            "",
            f"# {r.comment}{_seen_note(r)}",
            f"host {r.host} {{",
            f"  hardware ethernet {r.mac};",
            f"  fixed-address {r.ip};",
            "}",
        ]
    return "\n".join(out) + "\n"


def render_kea(hints: Hints) -> str:
    subnets = []
    for net in hints.subnets:
        subnets.append({
            "subnet": str(net),
            "reservations": [
                {
                    "hw-address": r.mac,
                    "ip-address": str(r.ip),
                    "hostname": r.host,
                    "user-context": {"comment": r.name, "model": r.model, "uuid": r.uuid, "from": "castwall"},
                }
                for r in hints.reservations if r.subnet == net
            ],
        })
    # Kea reads \u escapes of ASCII only, so other characters go in as UTF-8.
    return json.dumps({"subnet4": subnets}, indent=2, ensure_ascii=False) + "\n"


def render_mikrotik(hints: Hints) -> str:
    out = _header(hints, "For MikroTik RouterOS: paste into a terminal (Winbox: New Terminal).")
    if hints.reservations:
        out.append("/ip dhcp-server lease")
    for r in hints.reservations:
        out.append(f'add address={r.ip} mac-address={r.mac.upper()} comment="{r.comment}"')
    return "\n".join(out) + "\n"


def render_pfsense(hints: Hints) -> str:
    out = [
        '<?xml version="1.0"?>',
        f"<!-- DHCP static mappings for {_count(hints)}, from castwall, for pfSense or OPNsense (ISC DHCP).",
        "     Add them in Services > DHCP Server > (interface) > Static Mappings, or merge the",
        "     staticmap elements into dhcpd > (interface) of config.xml. Each address must lie",
        "     in the subnet of the interface that serves it, outside its dynamic range. -->",
        "<dhcpd>",
    ]
    several = len(hints.subnets) > 1
    for i, net in enumerate(hints.subnets):
        tag = "lan" if i == 0 else f"opt{i}"
        if several:
            out.append(f"\t<!-- {net}: rename {tag} to the interface that serves this subnet if it differs -->")
        out.append(f"\t<{tag}>")
        for r in (r for r in hints.reservations if r.subnet == net):
            out += [
                "\t\t<staticmap>",
                f"\t\t\t<mac>{r.mac}</mac>",
                f"\t\t\t<ipaddr>{r.ip}</ipaddr>",
                f"\t\t\t<hostname>{r.host}</hostname>",
                f"\t\t\t<descr>{xml_escape(r.name)}</descr>",
                "\t\t</staticmap>",
            ]
        out.append(f"\t</{tag}>")
    if not hints.subnets:
        out += ["\t<lan>", "\t</lan>"]
    out.append("</dhcpd>")
    return "\n".join(out) + "\n"


def _vyos(hints: Hints, mac_word: str, *notes: str) -> str:
    out = _header(hints, *notes, "Replace LAN with the shared-network-name that holds each subnet",
                  "(see: show service dhcp-server).")
    if hints.reservations:
        out.append("configure")
    for net in hints.subnets:
        if len(hints.subnets) > 1:
            out.append(f"# Subnet {net}")
        for r in (r for r in hints.reservations if r.subnet == net):
            base = f"set service dhcp-server shared-network-name LAN subnet {r.subnet} static-mapping {r.host}"
            out += [f"# {r.comment}{_seen_note(r)}", f"{base} ip-address {r.ip}", f"{base} {mac_word} {r.mac}"]
    if hints.reservations:
        out += ["commit", "save", "exit"]
    return "\n".join(out) + "\n"


def render_edgeos(hints: Hints) -> str:
    return _vyos(hints, "mac-address", "For Ubiquiti EdgeOS and VyOS 1.4 or older: paste into the router's shell.")


def render_vyos(hints: Hints) -> str:
    return _vyos(hints, "mac", "For VyOS 1.5 and newer: paste into the router's shell.",
                 "VyOS 1.5 requires a subnet-id on each subnet; keep the one your subnet has.")


def render_networkd(hints: Hints) -> str:
    out = _header(hints, "For systemd-networkd: add to the .network file of the interface that has",
                  "DHCPServer=yes and serves the subnet, then run: networkctl reload")
    for net in hints.subnets:
        if len(hints.subnets) > 1:
            out += ["", f"# For the .network file of the interface on {net}:"]
        for r in (r for r in hints.reservations if r.subnet == net):
            out += ["", f"# {r.comment}{_seen_note(r)}", "[DHCPServerStaticLease]", f"MACAddress={r.mac}", f"Address={r.ip}"]
    return "\n".join(out) + "\n"


CSV_FIELDS = ["host_name", "mac", "ip", "subnet", "name", "model", "uuid", "seen"]


def _cell(value: str) -> str:
    """Defuse text a spreadsheet would run as a formula (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def render_csv(hints: Hints) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in hints.reservations:
        writer.writerow([r.host, r.mac, str(r.ip), str(r.subnet), _cell(r.name), _cell(r.model), r.uuid,
                         "yes" if r.seen else "no"])
    return buf.getvalue()


def hints_json(hints: Hints) -> dict:
    return {
        "reservations": [
            {"host_name": r.host, "mac": r.mac, "ip": str(r.ip), "subnet": str(r.subnet), "name": r.name,
             "model": r.model, "uuid": r.uuid, "seen": r.seen}
            for r in hints.reservations
        ],
        "omitted": [{"name": o.name, "ip": o.ip, "uuid": o.uuid, "code": o.code, "reason": o.reason} for o in hints.omitted],
    }


@dataclass(frozen=True)
class Format:
    name: str
    title: str
    render: Callable[[Hints], str] | None  # None: the CLI renders it (json)
    aliases: tuple[str, ...] = ()
    lists_omitted: bool = False  # True when the output itself names the devices left out


FORMATS = (
    Format("plain", "step-by-step text for any router's web page (the default)", render_plain, lists_omitted=True),
    Format("dnsmasq", "dnsmasq and Pi-hole: dhcp-host lines for /etc/dnsmasq.d", render_dnsmasq, ("pihole",)),
    Format("openwrt", "OpenWrt: uci commands", render_openwrt, ("uci",)),
    Format("openwrt-config", "OpenWrt: config host sections for /etc/config/dhcp", render_openwrt_config),
    Format("isc-dhcpd", "ISC dhcpd: host declarations for dhcpd.conf", render_dhcpd, ("dhcpd",)),
    Format("kea", "Kea DHCPv4: subnet4 reservations (JSON) to merge into your subnets", render_kea, ("kea-dhcp4",)),
    Format("mikrotik", "MikroTik RouterOS: /ip dhcp-server lease commands", render_mikrotik, ("routeros",)),
    Format("pfsense", "pfSense and OPNsense: staticmap XML", render_pfsense, ("opnsense",)),
    Format("edgeos", "Ubiquiti EdgeOS and VyOS 1.4 or older: set commands", render_edgeos, ("vyos-1.4",)),
    Format("vyos", "VyOS 1.5 and newer: set commands", render_vyos, ("vyos-1.5",)),
    Format("networkd", "systemd-networkd: [DHCPServerStaticLease] sections", render_networkd, ("systemd-networkd",)),
    Format("csv", "comma-separated values, one row per reservation", render_csv),
    Format("json", "a JSON document, the same as --json", None, lists_omitted=True),
)


def find_format(name: str) -> Format | None:
    key = name.strip().lower()
    return next((f for f in FORMATS if key == f.name or key in f.aliases), None)


def format_list() -> str:
    width = max(len(f.name) for f in FORMATS)
    lines = []
    for f in FORMATS:
        also = f" (also: {', '.join(f.aliases)})" if f.aliases else ""
        lines.append(f"{f.name.ljust(width)}  {f.title}{also}")
    return "\n".join(lines) + "\n"
