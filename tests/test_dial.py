"""DIAL replies and device descriptions, read defensively (castwall.dial), on captured real text."""

import ipaddress

import pytest

from castwall.announcement import Announcement, Rejected, collate
from castwall.dial import DialReply, description_path, parse_description, parse_response, read_dial
from castwall.model import Kind
from tests.fakes import DATA, announcement, device

REPLY = (DATA / "dial-msearch-reply.txt").read_bytes()
DESCRIPTION = (DATA / "dial-device-desc.xml").read_bytes()
SOURCE = ipaddress.IPv4Address("192.168.1.66")
UUID = "5e7a1c39-2b84-4d6f-90c1-3a8b7d2e4f16"


def reply(**fields) -> DialReply:
    values = dict(source=SOURCE, interface="eth0", text=REPLY, delivered=True, description=DESCRIPTION,
                  application_url="http://192.168.1.66:8008/apps/")
    values.update(fields)
    return DialReply(**values)


def test_a_real_reply_names_the_description_at_the_repliers_port_8008():
    headers = parse_response(REPLY)
    assert headers["st"] == "urn:dial-multiscreen-org:service:dial:1"
    assert headers["server"].endswith("Portable SDK for UPnP devices/1.6.18")
    assert description_path(headers, SOURCE) == "/ssdp/device-desc.xml"


def test_a_real_description_gives_the_cast_uuid_name_and_model():
    found = parse_description(DESCRIPTION)
    assert (found.udn, found.name, found.model, found.manufacturer) == (
        f"uuid:{UUID}", "Chromecast", "Eureka Dongle", "Google Inc.")
    d = read_dial(reply())
    assert (d.uuid, d.name, d.model, d.kind, str(d.ip), d.port, d.found_by) == (
        UUID, "Chromecast", "Eureka Dongle", Kind.VIDEO, "192.168.1.66", 8009, ("dial",))


@pytest.mark.parametrize("location, reason", [
    ("http://192.168.1.99:8008/ssdp/device-desc.xml", "names another host (192.168.1.99), not the replier 192.168.1.66"),
    ("http://192.168.1.66:9999/ssdp/device-desc.xml", "names port 9999, not the Cast devices' 8008"),
    ("http://192.168.1.66/ssdp/device-desc.xml", "names port 80"),
    ("http://evil.example:8008/x.xml", "names no address of the replier"),
    ("https://192.168.1.66:8008/x.xml", "is not an http URL"),
    ("http://user@192.168.1.66:8008/x.xml", "carries a user name"),
    ("http://192.168.1.66:8008/" + "a" * 300, "longer than 256"),
    ("http://192.168.1.66:8008/x\x1b[2J", "is not a plain URL"),
])
def test_a_location_anywhere_but_the_repliers_port_8008_is_refused(location, reason):
    headers = parse_response(REPLY.replace(b"http://192.168.1.66:8008/ssdp/device-desc.xml", location.encode("latin-1")))
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        description_path(headers, SOURCE)


@pytest.mark.parametrize("data, reason", [
    (b"HTTP/1.1 404 Not Found\r\n\r\n", "not an SSDP response"),
    (b"NOTIFY * HTTP/1.1\r\n\r\n", "not an SSDP response"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 50, "more than 40 headers"),
    (b"HTTP/1.1 200 OK\r\n" + b"X" * 3000, "is no SSDP response"),
])
def test_malformed_replies_are_refused(data, reason):
    with pytest.raises(ValueError, match=reason):
        parse_response(data)


def test_a_reply_for_another_service_is_refused():
    headers = parse_response(REPLY.replace(b"ST: urn:dial-multiscreen-org:service:dial:1", b"ST: upnp:rootdevice"))
    with pytest.raises(ValueError, match="not the DIAL service"):
        description_path(headers, SOURCE)


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device><friendlyName>&lol3;</friendlyName>
<UDN>uuid:5e7a1c39-2b84-4d6f-90c1-3a8b7d2e4f16</UDN></device></root>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/shadow">]>
<root><device><friendlyName>&x;</friendlyName><UDN>uuid:5e7a1c39-2b84-4d6f-90c1-3a8b7d2e4f16</UDN></device></root>"""


@pytest.mark.parametrize("data, reason", [
    (BOMB, "declares a document type or entities"),
    (EXTERNAL, "declares a document type or entities"),
    (b"<root><device><UDN>uuid:x</UDN>", "not well-formed XML"),
    (b"<root><device><friendlyName>TV</friendlyName></device></root>", "names no device UDN"),
    (b"<root>" + b" " * (65 * 1024) + b"</root>", "larger than 64 KiB"),
])
def test_hostile_descriptions_are_refused_without_expanding_anything(data, reason):
    with pytest.raises(ValueError, match=reason):
        parse_description(data)


@pytest.mark.parametrize("udn, reason", [
    ("5e7a1c39-2b84-4d6f-90c1-3a8b7d2e4f16", "its UDN is not a uuid"),
    ("uuid:not-a-uuid", "its UDN is not a Cast UUID"),
])
def test_a_udn_that_is_no_cast_uuid_gives_no_device(udn, reason):
    got = read_dial(reply(description=DESCRIPTION.replace(f"uuid:{UUID}".encode(), udn.encode())))
    assert isinstance(got, Rejected) and got.via == "dial" and reason in got.reason and got.instance == "192.168.1.66"


def test_names_with_control_characters_are_escaped_and_cut():
    # XML 1.0 admits no C0 control character but tab and line ends; bidi overrides it does.
    nasty = "TV\u202e\r\n\t$(reboot) `id` " + "L" * 200
    d = read_dial(reply(description=DESCRIPTION.replace(b"<friendlyName>Chromecast", f"<friendlyName>{nasty}".encode())))
    assert d.name.startswith("TV\\u202e $(reboot) `id` L") and len(d.name) <= 64 and d.name.isprintable()
    escape = read_dial(reply(description=DESCRIPTION.replace(b"<friendlyName>Chromecast", b"<friendlyName>TV\x1b[2J")))
    assert isinstance(escape, Rejected) and "not well-formed XML" in escape.reason


def test_chrome_needs_the_application_url_on_the_replier():
    assert "Application-URL" in read_dial(reply(application_url=None)).reason
    assert "names another host" in read_dial(reply(application_url="http://10.0.0.1:8008/apps/")).reason
    assert read_dial(reply(problem="its description could not be fetched")).reason == "its description could not be fetched"


def test_a_device_found_both_ways_is_one_device_and_a_clone_is_contested():
    tv = device(1, name="Living Room TV")
    dial_tv = read_dial(reply(source=tv.ip, application_url=f"http://{tv.ip}:8008/apps/",
                              description=DESCRIPTION.replace(UUID.encode(), tv.uuid.encode())))
    [one], _ = collate([announcement(tv)], [dial_tv])
    assert (one.name, one.model, one.port, one.found_by, one.contested) == ("Living Room TV", "Chromecast", 8009,
                                                                            ("mdns", "dial"), None)
    clone = read_dial(reply(source=ipaddress.IPv4Address("192.168.77.66"), application_url="http://192.168.77.66:8008/a",
                            description=DESCRIPTION.replace(UUID.encode(), tv.uuid.encode())))
    [both], _ = collate([announcement(tv)], [dial_tv, clone])
    assert both.contested and "192.168.77.66 as Chromecast" in both.contested and both.also_at


def test_a_device_only_dial_finds_and_one_only_unicast_finds():
    tv = device(1)
    unicast = Announcement(f"Chromecast-{tv.uuid.replace('-', '')}._googlecast._tcp.local.", 8009,
                           announcement(tv).txt, (tv.ip.packed,), via="mdns-unicast")
    [d], _ = collate([unicast], [])
    assert d.found_by == ("mdns-unicast",) and d.found_by_text == "unicast mDNS"
    only = read_dial(reply())
    [d], _ = collate([], [only])
    assert d.found_by_text == "DIAL"


def declaring(encoding: str, quote: str = '"') -> bytes:
    return DESCRIPTION.replace(b'<?xml version="1.0"?>', f"<?xml version={quote}1.0{quote} encoding={quote}{encoding}{quote}?>".encode())


@pytest.mark.parametrize("encoding", ["x-anything", "hex", "base64", "bz2", "rot13", "zlib", "uu", "quopri", "idna",
                                      "punycode", "utf-16", "UTF-32", "cp1252", "shift_jis", "utf_7", "", "utf-8 "])
def test_a_description_in_an_encoding_castwall_does_not_read_is_refused_by_name(encoding):
    for quote in ('"', "'"):
        data = declaring(encoding, quote)
        assert data != DESCRIPTION
        with pytest.raises(ValueError, match=r"its description declares encoding .*castwall reads descriptions in UTF-8 only"):
            parse_description(data)
        got = read_dial(reply(description=data))
        assert isinstance(got, Rejected) and "declares encoding" in got.reason, got


@pytest.mark.parametrize("encoding", ["UTF-8", "utf-8", "utf8", "US-ASCII", "ascii", "ISO-8859-1", "latin-1"])
def test_the_encodings_real_devices_use_are_read(encoding):
    assert read_dial(reply(description=declaring(encoding))).uuid == UUID


def test_a_byte_order_mark_of_utf_16_is_refused_and_one_of_utf_8_is_read():
    with pytest.raises(ValueError, match="UTF-16 or UTF-32"):
        parse_description(b"\xff\xfe" + DESCRIPTION.decode().encode("utf-16-le"))
    with pytest.raises(ValueError, match="UTF-16 or UTF-32"):
        parse_description(DESCRIPTION.decode().encode("utf-16-be"))
    assert parse_description(b"\xef\xbb\xbf" + DESCRIPTION).udn == f"uuid:{UUID}"


def test_a_latin_1_name_is_read_as_latin_1():
    data = declaring("ISO-8859-1").replace(b"<friendlyName>Chromecast", b"<friendlyName>T\xe9l\xe9")
    assert read_dial(reply(description=data)).name == "Télé"


def test_deep_nesting_is_read_or_refused_never_raised():
    deep = b"<root><device><UDN>uuid:" + UUID.encode() + b"</UDN>" + b"<a>" * 8000 + b"</a>" * 8000 + b"</device></root>"
    assert parse_description(deep).udn == f"uuid:{UUID}"
    with pytest.raises(ValueError, match="not well-formed"):
        parse_description(b"<root>" + b"<a>" * 21000)
