"""Answers to castwall's unicast mDNS questions, read from real packets (zeroconf parses, castwall decides)."""

import ipaddress
import struct

import zeroconf

from castwall.announcement import collate
from castwall.system.unicast_mdns import UnicastAsker
from tests.lab.responder import SERVICE, TXT, encode_name, record

DEVICE = ipaddress.IPv4Address("192.168.77.101")
HEX = "1d19441fde2a5a8bdbebdcaae5ab99cb"


def packet(asker, *, txt=True, address="192.168.77.101") -> bytes:
    """What avahi answers a legacy unicast question with: the query's id, PTR, SRV, TXT, A."""
    instance = f"Chromecast-{HEX}.{SERVICE}"
    target = f"{HEX}.local."
    rrs = [record(SERVICE, 12, encode_name(instance), ttl=10),
           record(instance, 33, struct.pack("!HHH", 0, 0, 8009) + encode_name(target), ttl=10)]
    if txt:
        body = b"".join(bytes([len(e)]) + e for e in (f"id={HEX}".encode(), b"md=Chromecast", b"fn=Living Room TV"))
        rrs.append(record(instance, TXT, body, ttl=10))
    rrs.append(record(target, 1, ipaddress.IPv4Address(address).packed, ttl=10))
    return struct.pack("!6H", asker.id, 0x8400, 0, len(rrs), 0, 0) + b"".join(rrs)


def asker_with(*packets) -> UnicastAsker:
    asker = UnicastAsker(zeroconf, [])
    for data in packets:
        incoming = zeroconf.DNSIncoming(data(asker))
        answers = incoming.answers() if callable(incoming.answers) else incoming.answers
        asker.records.setdefault(DEVICE, []).extend(answers)
    return asker


def test_a_full_answer_is_one_device_found_by_unicast_mdns():
    found, missing = asker_with(packet).announcements()
    [d], rejected = collate(found)
    assert not missing and not rejected
    assert (d.name, str(d.ip), d.port, d.found_by) == ("Living Room TV", "192.168.77.101", 8009, ("mdns-unicast",))


def test_an_answer_cut_at_512_bytes_asks_for_what_it_lacks_once():
    asker = asker_with(lambda a: packet(a, txt=False))
    _, missing = asker.announcements()
    assert missing == {DEVICE: [(f"Chromecast-{HEX}.{SERVICE}", 16)]}
    sent = []
    asker.ask = lambda questions=None: sent.append(questions)
    asker.follow_up()
    asker.follow_up()
    assert sent == [missing]  # once, not on every news


def test_only_the_asked_address_is_taken_from_its_answer():
    found, missing = asker_with(lambda a: packet(a, address="192.168.77.66")).announcements()
    assert [a.addresses for a in found] == [()] and missing == {DEVICE: [(f"{HEX}.local.", 1)]}
