"""Structured fuzzing of what the kernel and castwall's own files say: documents built the way `ip -j addr`,
`ip -j neigh`, /proc/net/arp and castwall's state file are, so the parsers' inner steps run, not only their first.

Each parser gets two properties: a document valid by construction is read completely (an exact oracle), and the
same document with any part turned into any other JSON value (or line) is read as far as it goes, raising nothing
but BadData where the parser raises at all.
"""

import ipaddress
import json

from hypothesis import given, settings, strategies as st

from castwall.errors import BadData
from castwall.model import AppChoice, Device, Kind, Lan, PortRange, Rule, State, Tracking, canonical_mac
from castwall.sanitize import safe_text
from castwall.state import dump_state, load_state
from castwall.system.interfaces import parse_ip_addr
from castwall.system.neighbours import parse_ip_neigh, parse_proc_arp

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                      st.text(max_size=12))
json_any = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                          max_size=3), max_leaves=8)
# A value of another type than the one expected: a number, a truth value, or any JSON at all.
wrong = st.one_of(st.integers(1, 2**31), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), json_any)
macs = st.binary(min_size=6, max_size=6).filter(lambda b: any(b)).map(lambda b: b.hex(":"))
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=15)


@st.composite
def mutated(draw, doc):
    """doc with one part, anywhere in it, replaced by any JSON value (or dropped from its object)."""
    if not isinstance(doc, (dict, list)) or not doc or draw(st.integers(0, 3)) == 0:  # deeper, mostly
        return draw(wrong)
    if isinstance(doc, list):
        i = draw(st.integers(0, len(doc) - 1))
        return doc[:i] + [draw(mutated(doc[i]))] + doc[i + 1:]
    key = draw(st.sampled_from(sorted(doc)))
    out = dict(doc)
    if draw(st.integers(0, 2)) == 0:
        del out[key]
    else:
        out[key] = draw(mutated(doc[key]))
    return out


# ip -j addr

@st.composite
def addr_info(draw):
    ip = draw(st.ip_addresses())
    return {"family": "inet" if ip.version == 4 else "inet6", "local": str(ip),
            "prefixlen": draw(st.integers(0, 32 if ip.version == 4 else 128)), "scope": "global"}


interfaces = st.lists(st.fixed_dictionaries({
    "ifname": names, "flags": st.lists(st.sampled_from(["UP", "LOWER_UP", "MULTICAST", "LOOPBACK", "BROADCAST"]),
                                       unique=True),
    "operstate": st.sampled_from(["UP", "DOWN", "UNKNOWN"]), "addr_info": st.lists(addr_info(), max_size=3)}), max_size=4)


@given(interfaces)
def test_ip_addr_reads_every_interface_and_address_of_a_valid_document(doc):
    got = parse_ip_addr(json.dumps(doc))
    assert [i.name for i in got] == [d["ifname"] for d in doc]
    for item, iface in zip(doc, got, strict=True):
        assert iface.up == ("UP" in item["flags"] and item["operstate"] != "DOWN")
        assert (iface.multicast, iface.loopback) == ("MULTICAST" in item["flags"], "LOOPBACK" in item["flags"])
        assert iface.addresses == tuple(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}") for a in item["addr_info"])


@given(interfaces.flatmap(mutated))
@settings(max_examples=500)
def test_ip_addr_reads_a_damaged_document_as_far_as_it_goes(doc):
    try:
        got = parse_ip_addr(json.dumps(doc))
    except BadData:
        assert not isinstance(doc, list)
        return
    named = [d for d in doc if isinstance(d, dict) and isinstance(d.get("ifname"), str)]
    assert [i.name for i in got] == [d["ifname"] for d in named]


# ip -j neigh, /proc/net/arp

neigh_entry = st.fixed_dictionaries({
    "dst": st.ip_addresses().map(str), "dev": names, "lladdr": macs,
    "state": st.lists(st.sampled_from(["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP", "FAILED",
                                       "INCOMPLETE"]), min_size=1, max_size=2, unique=True)})


def neigh_oracle(doc):
    table = {}
    for e in doc:
        if set(e["state"]) & {"REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"}:
            table[ipaddress.ip_address(e["dst"])] = (canonical_mac(e["lladdr"]), e["dev"])
    return table


@given(st.lists(neigh_entry, max_size=6))
def test_ip_neigh_reads_every_entry_with_a_mac_of_a_valid_document(doc):
    assert parse_ip_neigh(json.dumps(doc)) == neigh_oracle(doc)


@given(st.lists(neigh_entry, max_size=6).flatmap(mutated))
@settings(max_examples=500)
def test_ip_neigh_reads_a_damaged_document_as_far_as_it_goes(doc):
    got = parse_ip_neigh(json.dumps(doc))
    assert all(len(mac) == 17 and isinstance(dev, str) for mac, dev in got.values())
    if isinstance(doc, list):
        whole = [e for e in doc if isinstance(e, dict) and set(e) == {"dst", "dev", "lladdr", "state"}
                 and isinstance(e["state"], list) and all(isinstance(s, str) for s in e["state"])
                 and isinstance(e["dst"], str) and isinstance(e["lladdr"], str) and isinstance(e["dev"], str)]
        try:
            expected = neigh_oracle(whole)
        except ValueError:  # an entry of the right types with a value the oracle cannot read either
            return
        assert expected.items() <= got.items() or len(whole) != len([e for e in doc if isinstance(e, dict)])


arp_entry = st.tuples(st.ip_addresses(v=4).map(str), st.sampled_from(["0x0", "0x2", "0x6", "0x4"]), macs, names.filter(
    lambda n: n.split() == [n]))


def arp_text(entries, extra=()):
    lines = ["IP address       HW type     Flags       HW address            Mask     Device"]
    lines += [f"{ip} 0x1 {flags} {mac} * {dev}" for ip, flags, mac, dev in entries]
    return "\n".join(lines + list(extra)) + "\n"


@given(st.lists(arp_entry, max_size=6))
def test_proc_net_arp_reads_every_complete_entry_of_a_valid_table(entries):
    expected = {}
    for ip, flags, mac, dev in entries:
        if int(flags, 16) & 0x2:
            expected[ipaddress.ip_address(ip)] = (mac, dev)
    assert parse_proc_arp(arp_text(entries)) == expected


@given(st.lists(arp_entry, max_size=6), st.lists(st.text(max_size=60), max_size=3))
def test_proc_net_arp_skips_damaged_lines_and_keeps_the_rest(entries, junk):
    got = parse_proc_arp(arp_text(entries, junk))
    for ip, flags, _mac, _dev in entries:
        if int(flags, 16) & 0x2 and not any(line.split()[:1] == [ip] for line in junk):
            assert ipaddress.ip_address(ip) in got


# castwall's state file

U = [f"{n:08x}-0000-4000-8000-{n:012x}" for n in range(1, 5)]


shown = names.map(safe_text).filter(bool)  # names as castwall keeps them: already made safe


@st.composite
def states(draw):
    n = draw(st.integers(0, 3))
    devices = tuple(Device(U[i], draw(shown), draw(shown), draw(st.sampled_from(list(Kind))),
                           ipaddress.ip_address(f"192.168.77.{101 + i}"), draw(st.integers(1, 65535)),
                           mac=draw(st.none() | macs)) for i in range(n))
    pr = PortRange(32768, 60999)
    rules = tuple(Rule(d.ip, pr, d.uuid) for d in devices if draw(st.booleans()))
    apps = (AppChoice("vlc", PortRange(8010, 8010)),) if draw(st.booleans()) else ()
    lan = Lan(ipaddress.ip_network("192.168.77.0/24"), ipaddress.ip_address("192.168.77.1"), draw(st.none() | macs))
    follow = tuple(Tracking(d.uuid, d.mac, draw(st.none() | st.just(lan)), draw(st.none() | shown))
                   for d in devices if draw(st.booleans()))
    return State(pr, devices, rules, "2026-12-08T00:00:00Z", apps, follow)


@given(states())
def test_the_state_file_reads_back_what_was_written(state):
    assert load_state(dump_state(state)) == state


@given(states().flatmap(lambda s: mutated(json.loads(dump_state(s)))))
@settings(max_examples=500)
def test_a_damaged_state_file_is_read_or_refused_with_bad_data_only(doc):
    try:
        state = load_state(json.dumps(doc))
    except BadData:
        return
    assert isinstance(state, State) and all(isinstance(r, Rule) for r in state.rules)
