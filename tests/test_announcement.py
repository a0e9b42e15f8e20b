"""Reading announcements: records as they come off the network, hostile ones included."""

import ipaddress
import socket

from hypothesis import given, settings, strategies as st

from castwall.announcement import Announcement, Rejected, collate, kind_of, link_groups, parse_txt, read_announcement
from castwall.model import Kind
from castwall.system.discovery import StopRule
from tests.fakes import device

UUID_HEX = "1d19441fde2a5a8bdbebdcaae5ab99cb"
UUID = "1d19441f-de2a-5a8b-dbeb-dcaae5ab99cb"


def txt(*entries: bytes) -> bytes:
    return b"".join(bytes([len(e)]) + e for e in entries)


UUID_BYTES = UUID_HEX.encode()


def cast(ip="192.168.77.101", *, fn=b"Living Room TV", md=b"Chromecast", uuid=UUID_BYTES, port=8009,
         instance="Chromecast-" + UUID_HEX, more=()) -> Announcement:
    entries = [b"id=" + uuid, b"md=" + md, b"fn=" + fn, b"ve=05", *more]
    addrs = tuple(socket.inet_aton(a) for a in ([ip] if isinstance(ip, str) else ip))
    return Announcement(f"{instance}._googlecast._tcp.local.", port, txt(*entries), addrs)


def test_a_real_device_announcement():
    [d] = read_announcement(cast())
    assert (d.uuid, d.name, d.model, d.kind, str(d.ip), d.port) == (UUID, "Living Room TV", "Chromecast", Kind.VIDEO, "192.168.77.101", 8009)


def test_kind_from_model_name():
    assert kind_of("Google Cast Group") is Kind.GROUP
    assert kind_of("Google Nest Mini") is Kind.AUDIO
    assert kind_of("Chromecast") is Kind.VIDEO and kind_of("Some TV") is Kind.VIDEO


def test_txt_keys_are_case_insensitive_first_wins_and_overruns_stop():
    assert parse_txt(txt(b"ID=a", b"id=b", b"flag", b"=x", b"fn=")) == {"id": b"a", "flag": None, "fn": b""}
    assert parse_txt(b"\x04id=a\x09md=") == {"id": b"a"}  # the second entry claims 9 bytes, has 3
    assert parse_txt(b"") == {}


def test_hostile_names_come_out_as_one_safe_bounded_line():
    nasty = b"TV\x1b[2J\n$(reboot)'; ufw allow from any \xff\xfe" + b"x" * 200  # a TXT entry holds 255 bytes
    [d] = read_announcement(cast(fn=nasty, md=b"\xc3\x28 model\r\n"))
    for text in (d.name, d.model):
        assert text.isprintable() and len(text) <= 64
        assert "\x1b" not in text and "\n" not in text
    assert d.name.startswith("TV\\x1b[2J $(reboot)'; ufw allow from any \\xff\\xfe")


def test_announcements_that_describe_no_usable_device_are_rejected_with_a_reason():
    cases = {
        "no TXT record": Announcement("A._googlecast._tcp.local.", 8009, None, (socket.inet_aton("192.168.77.5"),)),
        "no Cast device id": cast(uuid=b""),
        "is not a UUID": cast(uuid=b"../../etc/passwd"),
        "no SRV record": cast(port=None),
        "which is not a port": cast(port=0),
        "no IPv4 address": cast(ip=[]),
    }
    for why, a in cases.items():
        got = read_announcement(a)
        assert isinstance(got, Rejected) and why in got.reason, (why, got)
        assert got.instance.isprintable()


def test_a_uuid_announced_from_two_addresses_is_contested():
    devices, rejected = collate([cast("192.168.77.101"), cast("192.168.77.66", instance="Evil-" + UUID_HEX)])
    [d] = devices
    assert not rejected
    assert str(d.ip) == "192.168.77.66" and [str(a) for a in d.also_at] == ["192.168.77.101"]
    assert "announced from 2 addresses (192.168.77.66 as Living Room TV, 192.168.77.101 as Living Room TV)" in d.contested
    # one instance giving two addresses for its host is the same story
    [d] = collate([cast(["192.168.77.101", "192.168.77.7"])])[0]
    assert d.contested and len(d.addresses) == 2


def test_the_same_device_heard_twice_at_one_address_is_one_device():
    devices, _ = collate([cast(), cast()])
    assert len(devices) == 1 and devices[0].contested is None


def test_groups_are_tied_to_the_device_at_their_address():
    host = device(1, name="Kitchen")
    group = device(9, kind=Kind.GROUP, ip=str(host.ip), name="Whole House")
    lone = device(8, kind=Kind.GROUP, name="Upstairs")
    out = {d.uuid: d for d in link_groups([group, host, lone])}
    assert out[group.uuid].host == host.uuid and out[lone.uuid].host is None


def test_stop_rule_waits_longer_for_late_answers():
    rule = StopRule()
    assert not rule.quiet(0.1, None, 0.2) and rule.quiet(0.2, None, 0.2)
    assert rule.quiet(0.35, 0.1, 0.2)          # early answers: a short quiet period
    # a slow LAN (last answer 2 s in): the quiet period grows to a quarter of that
    assert not rule.quiet(2.3, 2.0, 0.2)
    assert rule.quiet(2.55, 2.0, 0.2)


records = st.builds(
    Announcement,
    instance=st.text(max_size=80),
    port=st.one_of(st.none(), st.integers(-5, 70000)),
    txt=st.one_of(st.none(), st.binary(max_size=300),
                  st.lists(st.binary(max_size=80), max_size=8).map(lambda es: txt(*es)),
                  st.builds(lambda fn, md: txt(b"id=" + UUID_HEX.encode(), b"fn=" + fn, b"md=" + md),
                            st.binary(max_size=200), st.binary(max_size=80))),
    addresses=st.lists(st.binary(min_size=0, max_size=17), max_size=3).map(tuple),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(records, max_size=6))
def test_no_announcement_can_break_reading_and_all_text_is_safe(announcements):
    devices, rejected = collate(announcements)
    for d in devices:
        assert d.name.isprintable() and len(d.name) <= 64 and d.model.isprintable()
        assert isinstance(d.ip, ipaddress.IPv4Address) and 1 <= d.port <= 65535
    for r in rejected:
        assert r.instance.isprintable() and r.reason.isprintable()
