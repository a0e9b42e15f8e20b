"""DHCP reservation hints: host names, which devices, and every format's exact text.

Formats without a checker in Debian are compared with golden files in
tests/golden, written from each system's documentation (facts.md, "Router DHCP
reservation syntax"); CASTWALL_UPDATE_GOLDEN=1 rewrites them after a deliberate
change. Formats with a real checker are also run through it in
test_hint_checkers.py.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import random
import re
import string
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from castwall import hints
from tests.hint_devices import DEVICES, NETWORKS, REFUSED, UNSEEN, dev, uid

GOLDEN = Path(__file__).with_name("golden")
LABEL = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
SAFE_COMMENT = re.compile(r"^# [A-Za-z0-9 .,()+&'_;:/=!@-]*$")


def the_hints():
    return hints.collect(DEVICES, NETWORKS, REFUSED, UNSEEN)


# --- host names -----------------------------------------------------------------


@pytest.mark.parametrize("name, label", [
    ("Living Room TV", "living-room-tv"),
    ("Küche Lautsprecher", "kuche-lautsprecher"),
    ("Café  --  Bar!", "cafe-bar"),
    ("2nd floor TV", "cast-2nd-floor-tv"),
    ("ignore", "cast-ignore"),
    ("INFINITE", "cast-infinite"),
    ("-leading and trailing-", "leading-and-trailing"),
    ("客厅电视", "cast-0000002a"),
    ("", "cast-0000002a"),
    ("x" * 100, "x" * 63),
])
def test_host_label(name, label):
    assert hints.host_label(name, uid(42)) == label


names = st.text(max_size=80)


@given(st.lists(names, min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_labels_are_valid_unique_and_independent_of_order(given_names):
    named = [(n, uid(i + 1)) for i, n in enumerate(given_names)]
    labels = hints.unique_labels(named)
    assert len(set(labels.values())) == len(named)
    for label in labels.values():
        assert LABEL.match(label), label
        assert label not in hints.RESERVED_LABELS
    shuffled = named[:]
    random.Random(1).shuffle(shuffled)
    assert hints.unique_labels(shuffled) == labels


def test_clashing_names_all_get_a_suffix_and_a_lone_name_keeps_its_label():
    named = [("Living Room TV", uid(1)), ("living room tv", uid(2)), ("Kitchen", uid(3))]
    assert hints.unique_labels(named) == {
        uid(1): "living-room-tv-00000001", uid(2): "living-room-tv-00000002", uid(3): "kitchen"}


def test_a_suffix_that_meets_another_label_grows_until_all_differ():
    # Two devices whose UUIDs start alike, and a third named like the first suffixed label.
    a, b = "12345678-0000-4000-8000-00000000000a", "12345679-0000-4000-8000-00000000000b"
    named = [("TV", a), ("TV", b), ("tv 1234", "99999999-0000-4000-8000-000000000000")]
    labels = hints.unique_labels(named)
    assert len(set(labels.values())) == 3 and all(LABEL.match(v) for v in labels.values())
    assert labels[a].startswith("tv-12345678") and labels[b].startswith("tv-12345679")


# --- which devices ----------------------------------------------------------------


def test_collect_reserves_physical_devices_and_gives_every_other_a_reason():
    found = the_hints()
    reserved = {r.uuid for r in found.reservations}
    assert reserved == {uid(n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 14, 15)}
    codes = {o.uuid: o.code for o in found.omitted}
    assert codes == {uid(9): "group", uid(10): "no-mac", uid(11): "routed", uid(12): "same-mac", uid(13): "refused"}
    by = {o.uuid: o.reason for o in found.omitted}
    assert "Küche Lautsprecher" in by[uid(9)]
    assert "no ARP answer" in by[uid(10)]
    assert "broadcast address" in by[uid(13)]
    subnets = {r.uuid: str(r.subnet) for r in found.reservations}
    assert subnets[uid(2)] == "10.0.5.0/24" and subnets[uid(1)] == "192.168.1.0/24"
    assert [r.seen for r in found.reservations if r.uuid == uid(14)] == [False]


def test_same_address_twice_is_reserved_once():
    twins = [dev(1, "A", "192.168.1.50", "aa:bb:cc:00:00:01"), dev(2, "B", "192.168.1.50", "aa:bb:cc:00:00:02")]
    found = hints.collect(twins, NETWORKS)
    assert len(found.reservations) == 1 and found.omitted[0].code == "same-ip"


def test_ipv6_device_is_named_not_reserved():
    found = hints.collect([dev(1, "V6", "fd00::5", "aa:bb:cc:00:00:01")], [ipaddress.ip_interface("fd00::1/64")])
    assert found.reservations == () and found.omitted[0].code == "ipv6"


def test_the_same_devices_give_the_same_text_every_time():
    shuffled = DEVICES[:]
    random.Random(7).shuffle(shuffled)
    for f in hints.FORMATS:
        if f.render:
            assert f.render(hints.collect(shuffled, NETWORKS, REFUSED, UNSEEN)) == f.render(the_hints())


# --- formats: golden files ----------------------------------------------------------


TEXT_FORMATS = [f for f in hints.FORMATS if f.render is not None]


@pytest.mark.parametrize("fmt", TEXT_FORMATS, ids=lambda f: f.name)
def test_format_matches_its_golden_file(fmt):
    text = fmt.render(the_hints())
    golden = GOLDEN / f"hints.{fmt.name}"  # scripts/update-golden rewrites it after a deliberate change
    assert text == golden.read_text(encoding="utf-8")


def test_every_format_has_a_golden_file_and_no_golden_file_is_stale():
    assert {p.name for p in GOLDEN.glob("hints.*")} == {f"hints.{f.name}" for f in TEXT_FORMATS}


def test_format_names_and_aliases():
    assert hints.find_format("PiHole").name == "dnsmasq"
    assert hints.find_format("vyos-1.4").name == "edgeos"
    assert hints.find_format("opnsense").name == "pfsense"
    assert hints.find_format("fritzbox") is None
    listed = hints.format_list()
    assert all(f.name in listed for f in hints.FORMATS)


# --- formats: hostile names -------------------------------------------------------------


hostile = st.text(max_size=120) | st.sampled_from([
    '"; reboot #', "$(id)`id`", "a\nb\rc", "\x1b]0;pwn\x07", "\u202egnp.exe", "]]><x/>", "<!-- -->", "'", '"',
    "ignore", "infinite", "set:x", "tag:!known", "id:*", "1h", "00:11:22:33:44:55", "10.0.0.1", "=1+1", "@SUM(A1)",
])


def hostile_devices(names_):
    return [dev(i + 1, name, f"192.168.1.{20 + i}", f"aa:bb:cc:00:01:{i:02x}", model=name[::-1])
            for i, name in enumerate(names_)]


LINE_SHAPES = {
    "dnsmasq": [r"dhcp-host=[0-9a-f:]{17},192\.168\.1\.\d+,[a-z][a-z0-9-]*"],
    "openwrt": [r"uci set dhcp\.castwall_[a-z0-9_]+=host", r"uci set dhcp\.castwall_[a-z0-9_]+\.(name|mac|ip)='[a-z0-9:.-]+'",
                r"uci commit dhcp", r"/etc/init\.d/dnsmasq restart"],
    "openwrt-config": [r"", r"config host 'castwall_[a-z0-9_]+'", r"\toption (name|mac|ip) '[a-z0-9:.-]+'"],
    "isc-dhcpd": [r"", r"host [a-z][a-z0-9-]* \{", r"  hardware ethernet [0-9a-f:]{17};", r"  fixed-address [0-9.]+;", r"\}"],
    "mikrotik": [r"/ip dhcp-server lease",
                 r'add address=[0-9.]+ mac-address=[0-9A-F:]{17} comment="[A-Za-z0-9 .,()+&\'_-]+"'],
    "edgeos": [r"configure", r"commit", r"save", r"exit",
               r"set service dhcp-server shared-network-name LAN subnet [0-9./]+ static-mapping [a-z][a-z0-9-]* "
               r"(ip-address [0-9.]+|mac-address [0-9a-f:]{17})"],
    "vyos": [r"configure", r"commit", r"save", r"exit",
             r"set service dhcp-server shared-network-name LAN subnet [0-9./]+ static-mapping [a-z][a-z0-9-]* "
             r"(ip-address [0-9.]+|mac [0-9a-f:]{17})"],
    "networkd": [r"", r"\[DHCPServerStaticLease\]", r"MACAddress=[0-9a-f:]{17}", r"Address=[0-9.]+"],
    "pfsense": [r'<\?xml version="1\.0"\?>', r"<!-- .*", r"     .*", r"</?dhcpd>", r"\t</?lan>", r"\t\t</?staticmap>",
                r"\t\t\t<(mac|ipaddr|hostname)>[a-z0-9:.-]+</\1>", r"\t\t\t<descr>[^<>]*</descr>"],
}


@given(st.lists(hostile, min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_hostile_names_give_only_well_formed_lines_in_every_format(given_names):
    found = hints.collect(hostile_devices(given_names), NETWORKS)
    assert len(found.reservations) == len(given_names)
    for name, shapes in LINE_SHAPES.items():
        text = hints.find_format(name).render(found)
        for line in text.splitlines():
            if line.startswith("#"):
                assert SAFE_COMMENT.match(line), (name, line)
            else:
                assert any(re.fullmatch(s, line) for s in shapes), (name, line)
    # Structured formats: they parse, and give back exactly what was put in.
    kea = json.loads(hints.render_kea(found))
    assert sum(len(s["reservations"]) for s in kea["subnet4"]) == len(given_names)
    root = ET.fromstring(hints.render_pfsense(found).encode())
    assert [e.tag for e in root] == ["lan"]  # one subnet, one interface
    assert [m.findtext("mac") for m in root.iter("staticmap")] == [r.mac for r in found.reservations]
    assert [m.findtext("descr") for m in root.iter("staticmap")] == [r.name for r in found.reservations]
    rows = list(csv.DictReader(io.StringIO(hints.render_csv(found))))
    assert [row["mac"] for row in rows] == [r.mac for r in found.reservations]
    for row in rows:
        assert row["name"][:1] not in ("=", "+", "-", "@") and row["model"][:1] not in ("=", "+", "-", "@")
    for text in (hints.render_plain(found), hints.render_pfsense(found), hints.render_csv(found)):
        assert all(ch.isprintable() or ch in "\n\t" for ch in text)


def test_each_subnet_gets_its_own_interface_in_pfsense_xml():
    root = ET.fromstring(hints.render_pfsense(the_hints()).encode())
    assert [e.tag for e in root] == ["lan", "opt1"]
    assert [m.findtext("ipaddr") for m in root.find("lan").iter("staticmap")] == ["10.0.5.20"]
    assert len(list(root.find("opt1").iter("staticmap"))) == 9


def test_json_format_lists_reservations_and_omissions():
    doc = hints.hints_json(the_hints())
    assert [r["host_name"] for r in doc["reservations"]][:2] == ["living-room-tv-00000002", "living-room-tv-00000001"]
    assert {o["code"] for o in doc["omitted"]} == {"group", "no-mac", "routed", "same-mac", "refused"}
    json.dumps(doc)  # serialisable as it is


def test_comment_text_keeps_only_safe_characters():
    assert hints.comment_text('Ruß "TV" $(x) \\ `y`') == "Ru TV (x) y"
    assert set(hints.comment_text("".join(map(chr, range(0x2500))))) <= set(string.ascii_letters + string.digits + " .,()+&'_-")
