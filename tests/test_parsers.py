"""Parsers of outside text, on text captured from the real programs (tests/data)."""

import ipaddress
import json
import os
import stat

import pytest
from hypothesis import given, settings, strategies as st

from castwall.errors import BadData
from castwall.model import PortRange, Rule, State
from castwall.sanitize import safe_text
from castwall.state import dump_state, load_state
from castwall.system.host import read_state
from castwall.system.interfaces import choose_interfaces, parse_ip_addr
from castwall.system.neighbours import parse_ip_neigh, parse_proc_arp
from castwall.system.sysctl import parse_port_range, read_port_range
from castwall.system.ufw import parse_show_added
from tests.fakes import data, device

ip = ipaddress.ip_address


def test_port_range_as_the_kernel_writes_it():
    assert parse_port_range("32768\t60999\n") == PortRange(32768, 60999)
    assert parse_port_range(" 1024 65535") == PortRange(1024, 65535)


@pytest.mark.parametrize("text", ["", "32768", "32768 60999 1", "60999 32768", "0 100", "1 70000", "a b", "-1 5", "3.5 9", "٣ ٤"])
def test_port_range_refuses_anything_else(text):
    with pytest.raises(BadData):
        parse_port_range(text)


def test_port_range_file_missing_is_a_clear_error(tmp_path):
    with pytest.raises(BadData, match="cannot read"):
        read_port_range(tmp_path / "nope")


def test_proc_net_arp_keeps_complete_entries_only():
    table = parse_proc_arp(data("proc-net-arp-incomplete.txt"))
    assert table == {
        ip("192.168.77.101"): ("02:ca:57:00:00:00", "eth0"),
        ip("192.168.77.102"): ("02:ca:57:00:00:01", "eth0"),
        ip("192.168.77.103"): ("02:ca:57:00:00:02", "eth0"),
    }


def test_ip_neigh_json_skips_incomplete():
    table = parse_ip_neigh(data("ip-neigh.json"))
    assert ip("192.168.77.199") not in table
    assert table[ip("192.168.77.102")] == ("02:ca:57:00:00:01", "eth0")
    assert len(table) == 3


def test_ip_addr_json_gives_interfaces_and_subnets():
    ifaces = parse_ip_addr(data("ip-addr.json"))
    lo, eth0 = ifaces
    assert lo.loopback and not lo.usable
    assert eth0.usable and str(eth0.ipv4[0]) == "192.168.77.10/24"
    assert choose_interfaces(ifaces, []) == [eth0]


def test_ufw_show_added_finds_castwall_rules_and_the_users_lookalike():
    rules = parse_show_added(data("ufw-show-added.txt"))
    owned = {(str(r.ip), str(r.ports)) for r in rules.owned}
    assert owned == {("192.168.77.101", "32768:60999"), ("192.168.77.102", "32768:60999"), ("192.168.77.103", "32768:60999")}
    untagged = [r for r in rules.rules if r.owner is None]
    # the user's own rule of the same shape is recognised but not owned
    assert untagged == [Rule(ip("192.168.77.60"), PortRange(32768, 60999), None)]
    # 22/tcp, the tcp web rule, the rule bound to an interface, the deny rule
    assert rules.other == 4 and rules.odd_tagged == ()


def test_ufw_line_tagged_castwall_but_of_another_shape_is_reported_not_owned():
    text = "ufw allow from 192.168.77.9 to any port 8009 comment 'castwall:1d19441f-de2a-5a8b-dbeb-dcaae5ab99cb'\n"
    rules = parse_show_added(text)
    assert rules.rules == () and len(rules.odd_tagged) == 1


def test_state_round_trips_and_refuses_what_it_cannot_read():
    d = device(1, name="Living Room TV")
    state = State(PortRange(32768, 60999), (d,), (Rule(d.ip, PortRange(32768, 60999), d.uuid),), "2026-11-21T10:00:00Z")
    assert load_state(dump_state(state)) == state
    doc = json.loads(dump_state(state))
    for bad, why in [
        ("{", "not valid JSON"),
        ("[]", "not a castwall state file"),
        (json.dumps({**doc, "version": 99}), "newer castwall"),
        (json.dumps({**doc, "devices": [{"uuid": "x"}]}), "invalid entry"),
        (json.dumps({**doc, "rules": [{"ip": "1.2.3.4", "ports": [9, 1], "owner": None}]}), "invalid entry"),
        ("[" * 100_000, "nests too deeply"),  # json's decoder would raise RecursionError
        ('{"format": ' * 50_000, "nests too deeply"),
    ]:
        with pytest.raises(BadData, match=why):
            load_state(bad)


# --- properties: no outside text makes a parser fail in any other way ---------

text = st.text(st.characters(), max_size=400)


@given(text)
def test_port_range_parser_only_ever_raises_bad_data(s):
    try:
        r = parse_port_range(s)
    except BadData:
        return
    assert 1 <= r.low <= r.high <= 65535


@given(text)
def test_arp_and_neigh_parsers_never_raise(s):
    for parsed in (parse_proc_arp(s), parse_ip_neigh(s)):
        for mac, _interface in parsed.values():
            assert len(mac) == 17


@given(st.lists(st.sampled_from(data("ufw-show-added.txt").splitlines() + ["ufw allow from", "ufw allow 'x", "ufw allow from 1.2.3.4 to any port 9:1 proto udp", "ufw allow from x to any port 1 proto udp"]), max_size=12), text)
def test_ufw_parser_never_raises_and_owns_only_tagged(lines, junk):
    rules = parse_show_added("\n".join(lines + [junk]))
    assert all(r.comment and r.comment.startswith("castwall:") for r in rules.owned)


@given(text)
@settings(max_examples=200)
def test_state_parser_only_ever_raises_bad_data(s):
    try:
        load_state(s)
    except BadData:
        pass


@given(text)
def test_ip_addr_parser_only_ever_raises_bad_data(s):
    try:
        parse_ip_addr(s)
    except BadData:
        pass


@given(st.one_of(text, st.binary(max_size=300)))
def test_safe_text_is_one_printable_bounded_line(s):
    out = safe_text(s)
    assert len(out) <= 64
    assert all(c.isprintable() for c in out)


def test_ufw_show_added_gives_the_ipv4_rule_order_without_ipv6_only_rules():
    text = ("ufw allow 22/tcp\n"
            "ufw allow from 192.168.77.101 to any port 32768:60999 proto udp comment 'castwall:1d19441f-de2a-5a8b-dbeb-dcaae5ab99cb'\n"
            "ufw deny from 192.168.77.6\n"
            "ufw allow from 2001:db8::5\n"
            "ufw allow from fe80::/10 to any port 9 proto udp\n")
    order = parse_show_added(text).order
    assert len(order) == 3 and order[0] is None and order[2] is None
    assert order[1].owner == "1d19441f-de2a-5a8b-dbeb-dcaae5ab99cb"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_state_file_is_read_or_reported_never_raised(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("state") / "state.json"
    path.write_bytes(content)
    state, problem = read_state(path)
    assert (state is None) != (problem is None)
    assert problem is None or problem.isprintable()


# --- raw ARP frames (castwall.system.arp) ----------------------------------------

from castwall.system import arp as rawarp


def test_arp_request_is_a_broadcast_who_has():
    frame = rawarp.request(bytes.fromhex("02ca57000001"), ipaddress.IPv4Address("192.168.77.10"),
                           ipaddress.IPv4Address("192.168.77.101"))
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x01"  # op: request
    assert frame[28:32] == bytes([192, 168, 77, 10]) and frame[38:42] == bytes([192, 168, 77, 101])


def reply_frame(ip: str, mac: str, op: int = 2) -> bytes:
    sha = bytes.fromhex(mac.replace(":", ""))
    return (b"\x02" * 6 + sha + b"\x08\x06" + bytes([0, 1, 8, 0, 6, 4, 0, op]) + sha
            + ipaddress.IPv4Address(ip).packed + b"\x02" * 6 + bytes(4))


def test_arp_reply_parsed_and_everything_else_ignored():
    assert rawarp.parse_reply(reply_frame("192.168.77.101", "02:CA:57:00:00:01")) == (
        ipaddress.IPv4Address("192.168.77.101"), "02:ca:57:00:00:01")
    assert rawarp.parse_reply(reply_frame("192.168.77.101", "02:ca:57:00:00:01", op=1)) is None  # a request
    assert rawarp.parse_reply(reply_frame("192.168.77.101", "00:00:00:00:00:00")) is None
    assert rawarp.parse_reply(reply_frame("192.168.77.101", "02:ca:57:00:00:01")[:41]) is None


def test_an_arp_reply_must_come_from_the_mac_it_names_and_answer_our_request():
    me, my_ip = b"\x02" * 6, ipaddress.IPv4Address("192.168.77.10")
    honest = reply_frame("192.168.77.101", "02:ca:57:00:00:01")
    honest = honest[:38] + my_ip.packed  # the reply names us as its target, as an answer to our request does
    assert rawarp.parse_reply(honest, me, my_ip) == (ipaddress.IPv4Address("192.168.77.101"), "02:ca:57:00:00:01")
    forged = honest[:6] + bytes.fromhex("026666666666") + honest[12:]  # sent from another card, naming the TV's MAC
    assert rawarp.parse_reply(forged) is None and rawarp.parse_reply(forged, me, my_ip) is None
    elsewhere = honest[:38] + ipaddress.IPv4Address("192.168.77.11").packed  # an answer to another host's question
    assert rawarp.parse_reply(elsewhere) is not None and rawarp.parse_reply(elsewhere, me, my_ip) is None
    to_other = b"\x04" * 6 + honest[6:32] + b"\x04" * 6 + honest[38:]
    assert rawarp.parse_reply(to_other, me, my_ip) is None


@given(st.binary(max_size=80))
def test_arp_parser_never_raises(frame):
    got = rawarp.parse_reply(frame)
    assert got is None or (isinstance(got[0], ipaddress.IPv4Address) and len(got[1]) == 17)


def test_absurd_nesting_in_castwall_s_other_files_reads_as_unusable_never_raises(tmp_path):
    from castwall.commands.follow import last_pass
    from castwall.system.firewalld_view import Journal, read_journal
    from castwall.system.gateway import parse_default_routes
    from castwall.system.neighbours import parse_ip_neigh
    from tests.fakes import services

    deep = "[" * 100_000
    assert read_journal(deep)[0] == Journal()
    assert parse_default_routes(deep) == {} and parse_ip_neigh(deep) == {}
    with pytest.raises(BadData):
        parse_ip_addr(deep)
    svc = services(tmp_path)
    svc.paths.state_dir.mkdir()
    svc.paths.follow_record.write_text(deep)
    assert last_pass(svc) is None


def test_a_corrupt_state_file_of_absurd_nesting_is_reported_and_kept(tmp_path):
    from click.testing import CliRunner

    from castwall.cli import cli
    from tests.fakes import services

    svc = services(tmp_path, [device(1)])
    svc.paths.state_dir.mkdir()
    svc.paths.state_file.write_text("[" * 100_000)
    result = CliRunner().invoke(cli, ["setup", "--yes"], obj=svc)
    assert result.exit_code == 0, result.output
    assert "nests too deeply" in result.output and "Traceback" not in result.output
    kept = list(svc.paths.state_dir.glob("state.json.unusable-*"))
    assert len(kept) == 1 and kept[0].read_text() == "[" * 100_000


def test_the_atomic_writer_never_writes_through_a_file_or_link_put_in_its_way(tmp_path):
    from castwall.system.host import write_file

    target = tmp_path / "state.json"
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    # The names an older castwall used (.NAME.PID.tmp), planted as links: write_file must not follow one.
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        (tmp_path / f".state.json.{pid}.tmp").symlink_to(victim)
    write_file(target, "new\n")
    assert target.read_text() == "new\n" and victim.read_text() == "untouched"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".state.json.*.tmp")), "the stale names are cleared once it holds the lock"
