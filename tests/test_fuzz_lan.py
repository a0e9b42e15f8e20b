"""What any LAN host can send, fuzzed: DIAL replies, device descriptions and mDNS answers.

Each property feeds structured, mutated input (built from captured real text,
so most of it gets past the first parsing step) to the parsers and asserts
that only the documented outcomes come out: a device, or a refusal with a
printable reason. Any other exception fails the test.
"""

from __future__ import annotations

import encodings
import encodings.aliases
import ipaddress
import pkgutil

import pytest
import zeroconf  # castwall's own dependency: never a reason to skip
from hypothesis import HealthCheck, given, settings, strategies as st

from castwall.announcement import Rejected, collate
from castwall.dial import DialReply, description_path, parse_description, parse_response, read_dial
from castwall.model import Device
from tests.fakes import DATA

REPLY = (DATA / "dial-msearch-reply.txt").read_bytes()
DESCRIPTION = (DATA / "dial-device-desc.xml").read_bytes()
SOURCE = ipaddress.IPv4Address("192.168.1.66")
UUID = "5e7a1c39-2b84-4d6f-90c1-3a8b7d2e4f16"
# Every codec name this Python knows: aliases, their targets and the modules of the encodings package.
CODECS = sorted(set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
                | {m.name for m in pkgutil.iter_modules(encodings.__path__)} | {"x-anything", "", "UTF-8\x00"})
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(reply: DialReply) -> Device | Rejected:
    got = read_dial(reply)
    if isinstance(got, Rejected):
        assert got.reason and got.reason.isprintable() and len(got.reason) < 400, got
    else:
        assert got.name.isprintable() and got.model.isprintable() and got.ip == reply.source
    return got


def reply(description: bytes, text: bytes = REPLY) -> DialReply:
    return DialReply(SOURCE, "eth0", text, True, False, description, "http://192.168.1.66:8008/apps/")


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_name_python_knows_is_read_or_refused_by_name(codec):
    data = DESCRIPTION.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="' + codec.encode() + b'"?>')
    got = outcome(reply(data))
    if isinstance(got, Rejected):
        assert "declares encoding" in got.reason or "not well-formed" in got.reason, got
    else:
        assert codec.lower().replace("_", "-") in ("utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"), codec
        assert got.uuid == UUID


# --- mutations of real text ------------------------------------------------------------------------

@st.composite
def mutated(draw, base: bytes) -> bytes:
    """base with a few bytes replaced, inserted or cut: mostly still shaped like the real thing."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 6))):
        how = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "replace" and data:
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif how == "delete" and data:
            del data[at:at + draw(st.integers(1, 20))]
        elif how == "truncate":
            del data[at:]
    return bytes(data)


@SETTINGS
@given(mutated(REPLY))
def test_a_mutated_m_search_reply_gives_a_path_or_a_reason(data):
    try:
        path = description_path(parse_response(data), SOURCE)
    except ValueError as exc:
        assert str(exc).isprintable()
    else:
        assert path.startswith("/") and path.isprintable() and len(path) <= 256


# Pieces a hostile description is made of, put together in any order and depth. Most draws keep the
# declaration and document type plain, so that most documents get past them to the elements.
declarations = st.one_of(
    st.just(b""), st.just(b'<?xml version="1.0" encoding="UTF-8"?>'), st.just(b'<?xml version="1.0"?>'),
    st.sampled_from(CODECS).map(lambda c: b'<?xml version="1.0" encoding="' + c.encode("utf-8", "replace") + b'"?>'),
    st.binary(max_size=60).map(lambda b: b"<?xml " + b + b"?>"),
)
doctypes = st.sampled_from([b""] * 6 + [
    b"<!DOCTYPE root>", b'<!DOCTYPE r [<!ENTITY a "aaaa">]>', b'<!DOCTYPE r SYSTEM "file:///etc/shadow">',
    b'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://10.0.0.1/x">%p;]>',
])
# Element text: any bytes (often not UTF-8, or with markup), or what a device would put there.
texts = st.one_of(st.binary(max_size=80), st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
                  st.just(b"uuid:" + UUID.encode()), st.just(b"&a;"), st.just(b"&lt;b&gt; &amp; &#x202e;"))
fields = st.lists(st.tuples(st.sampled_from([b"friendlyName", b"modelName", b"UDN", b"manufacturer", b"deviceType", b"x:UDN"]),
                            texts), max_size=6)


@st.composite
def descriptions(draw) -> bytes:
    depth = draw(st.sampled_from([0, 0, 1, 50, 3000]))
    pairs = draw(fields)
    if draw(st.integers(0, 9)) < 7:  # mostly a device's own UDN, first or after the rest
        pairs.insert(draw(st.integers(0, len(pairs))), (b"UDN", b"uuid:" + UUID.encode()))
    body = b"".join(b"<" + name + b">" + text + b"</" + name + b">" for name, text in pairs)
    inner = b"<root><device>" + body + b"<a>" * depth + b"</a>" * depth + b"</device></root>"
    data = draw(declarations) + draw(doctypes) + inner
    return draw(mutated(data)) if draw(st.integers(0, 3)) == 0 else data


@SETTINGS
@given(descriptions())
def test_a_hostile_description_gives_a_device_or_a_refusal(data):
    outcome(reply(data))
    try:
        parse_description(data)
    except ValueError as exc:
        assert str(exc).isprintable()


@SETTINGS
@given(mutated(DESCRIPTION))
def test_a_mutated_real_description_gives_a_device_or_a_refusal(data):
    outcome(reply(data))


# --- mDNS answers: real packets, mutated, through zeroconf's reader and castwall's ---------------------


def answer_packet(name: bytes, model: bytes, uuid_hex: bytes, port: int, address: bytes) -> bytes:
    instance = "TV-1._googlecast._tcp.local."
    txt = b"".join(bytes([len(e)]) + e for e in (b"id=" + uuid_hex, b"md=" + model, b"fn=" + name))
    out = zeroconf.DNSOutgoing(0x8400, True)
    out.add_answer_at_time(zeroconf.DNSPointer("_googlecast._tcp.local.", 12, 1, 120, instance), 0)
    out.add_answer_at_time(zeroconf.DNSService(instance, 33, 1, 120, 0, 0, port, "tv1.local."), 0)
    out.add_answer_at_time(zeroconf.DNSText(instance, 16, 1, 120, txt), 0)
    out.add_answer_at_time(zeroconf.DNSAddress("tv1.local.", 1, 1, 120, address), 0)
    return out.packets()[0]


@st.composite
def mdns_packets(draw) -> bytes:
    packet = answer_packet(draw(st.binary(max_size=60)), draw(st.binary(max_size=40)),
                           draw(st.one_of(st.just(UUID.replace("-", "").encode()), st.binary(max_size=40))),
                           draw(st.sampled_from([8009, 8009, 0, 65535, 32161])),
                           draw(st.one_of(st.just(bytes([192, 168, 1, 66])), st.binary(min_size=4, max_size=4))))
    # A third of the packets mutated as well: the rest reach castwall's reading of the records whole.
    return draw(mutated(packet)) if draw(st.integers(0, 2)) == 0 else packet


@SETTINGS
@given(st.lists(mdns_packets(), min_size=1, max_size=3))
def test_mutated_mdns_answers_give_devices_or_refusals(packets):
    from castwall.system.unicast_mdns import UnicastAsker

    asker = UnicastAsker(zeroconf, [])
    for packet in packets:
        try:
            incoming = zeroconf.DNSIncoming(packet)
            answers = incoming.answers() if callable(incoming.answers) else incoming.answers
        except Exception:  # zeroconf's own refusal; castwall's reader skips such a packet
            continue
        asker.records.setdefault(SOURCE, []).extend(list(answers)[:64])
    announcements, _ = asker.announcements()
    devices, rejected = collate(announcements)
    for d in devices:
        assert d.ip == SOURCE and d.name.isprintable() and 1 <= d.port <= 65535
    for r in rejected:
        assert r.reason.isprintable() and r.instance.isprintable()
