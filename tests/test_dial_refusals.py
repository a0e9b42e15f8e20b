"""DIAL replies and descriptions at their edges: each test breaks if one check of castwall.dial is dropped or moved
(tests/test_dial.py reads real captures; these pin the limits and refusals scripts/mutate found unpinned)."""

import ipaddress

import pytest

from castwall.announcement import Rejected
from castwall.dial import (MAX_DESCRIPTION, MAX_HEADERS, MAX_PATH, MAX_REPLY, DialReply, description_path,
                           parse_description, parse_response, read_dial)
from castwall.model import Kind
from tests.fakes import DATA

REPLY = (DATA / "dial-msearch-reply.txt").read_bytes()
DESCRIPTION = (DATA / "dial-device-desc.xml").read_bytes()
SOURCE = ipaddress.IPv4Address("192.168.1.66")
UUID = "5e7a1c39-2b84-4d6f-90c1-3a8b7d2e4f16"
ST = "urn:dial-multiscreen-org:service:dial:1"


def response(*headers: str, status: str = "HTTP/1.1 200 OK") -> bytes:
    return ("\r\n".join((status, *headers)) + "\r\n\r\n").encode()


def description(device: str, after: str = "") -> bytes:
    return (f'<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>{device}</device>{after}'
            "</root>").encode()


def reply(**fields) -> DialReply:
    values = dict(source=SOURCE, interface="eth0", text=REPLY, delivered=True, description=DESCRIPTION,
                  application_url="http://192.168.1.66:8008/apps/")
    values.update(fields)
    return DialReply(**values)


# The SSDP response

@pytest.mark.parametrize("status", ["HTTP/1.1 200 OK", "HTTP/1.0 200 OK", "HTTP/1.1 200"])
def test_a_200_over_http_1_0_or_1_1_is_a_response_with_or_without_a_reason(status):
    assert parse_response(response("ST: x", status=status)) == {"st": "x"}


@pytest.mark.parametrize("status", ["HTTP/2 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1", "NOTIFY * HTTP/1.1", ""])
def test_anything_else_is_no_response(status):
    with pytest.raises(ValueError, match="not an SSDP response"):
        parse_response(response("ST: x", status=status))


def test_a_reply_may_fill_the_limit_and_not_a_byte_more():
    base = response("ST: x")
    padded = base[:-2] + b"X-Pad: " + b"p" * (MAX_REPLY - len(base) - 9) + b"\r\n\r\n"
    assert len(padded) == MAX_REPLY and parse_response(padded)["x-pad"]
    with pytest.raises(ValueError, match="no SSDP response"):
        parse_response(padded[:-4] + b"p\r\n\r\n")


def test_what_follows_the_blank_line_is_no_header():
    got = parse_response(b"HTTP/1.1 200 OK\r\nST: x\r\n\r\nLOCATION: http://evil/\r\nno colon here\r\n")
    assert got == {"st": "x"}


@pytest.mark.parametrize("line", ["no colon here", "nocolon", ": a value without a name", " : blank name", "Bad Name: x",
                                  "Na\tme: x"])
def test_a_malformed_header_line_refuses_the_reply(line):
    with pytest.raises(ValueError, match="malformed header line"):
        parse_response(response("ST: x", line))


def test_forty_headers_are_read_and_the_forty_first_refuses_the_reply():
    headers = [f"X-{n}: {n}" for n in range(MAX_HEADERS)]
    assert len(parse_response(response(*headers))) == MAX_HEADERS
    with pytest.raises(ValueError, match=f"more than {MAX_HEADERS} headers"):
        parse_response(response(*headers, "X-Last: 1"))


# Where castwall may fetch the description from

def headers(location: str, **more) -> dict:
    return {"st": ST, "location": location, "usn": f"uuid:{UUID}::{ST}", **more}


@pytest.mark.parametrize("location, path", [
    ("http://192.168.1.66:8008/ssdp/device-desc.xml", "/ssdp/device-desc.xml"),
    ("http://192.168.1.66:8008", "/"),
    ("http://192.168.1.66:8008/d?x=1&y=2", "/d?x=1&y=2"),
    ("HTTP://192.168.1.66:8008/a", "/a"),
    ("http://192.168.1.66:8008/" + "a" * (MAX_PATH - 1), "/" + "a" * (MAX_PATH - 1)),
])
def test_the_description_is_fetched_from_the_repliers_port_8008_only(location, path):
    assert description_path(headers(location), SOURCE) == path


@pytest.mark.parametrize("location, why", [
    ("http://192.168.1.66:8008/caf\u00e9", "not a plain URL"),
    ("http://192.168.1.66:8008/a b", "not a plain URL"),
    ("http://192.168.1.66:8008/\x7f", "not a plain URL"),
    ("https://192.168.1.66:8008/", "not an http URL"),
    ("http://user@192.168.1.66:8008/", "carries a user name"),
    ("http://:secret@192.168.1.66:8008/", "carries a user name"),
    ("http://chromecast.local:8008/", "names no address"),
    ("http:///d.xml", "names no address"),
    ("http://192.168.1.67:8008/", "names another host"),
    ("http://192.168.1.66/", "names port 80"),
    ("http://192.168.1.66:8009/", "names port 8009"),
    ("http://192.168.1.66:8008/" + "a" * MAX_PATH, f"longer than {MAX_PATH} characters"),
])
def test_any_other_location_is_refused_with_the_reason(location, why):
    with pytest.raises(ValueError, match=why):
        description_path(headers(location), SOURCE)


@pytest.mark.parametrize("fields, why", [
    ({"st": ST, "usn": "uuid:x"}, "no LOCATION"),
    ({"st": ST, "location": "", "usn": "uuid:x"}, "no LOCATION"),
    ({"location": "http://192.168.1.66:8008/d.xml", "usn": "uuid:x"}, "not the DIAL service"),
    ({"st": "ssdp:all", "location": "http://192.168.1.66:8008/d.xml", "usn": "uuid:x"}, "not the DIAL service"),
])
def test_a_reply_for_another_service_or_without_a_location_is_refused(fields, why):
    with pytest.raises(ValueError, match=why):
        description_path(fields, SOURCE)


def test_a_reply_without_a_usn_is_refused_as_chrome_refuses_it():
    with pytest.raises(ValueError, match="no USN"):
        description_path({"st": ST, "location": "http://192.168.1.66:8008/d.xml"}, SOURCE)


# The description

def test_a_description_may_be_as_large_as_the_limit():
    base = description(f"<UDN>uuid:{UUID}</UDN>")
    full = base.replace(b"<device>", b"<device>" + b" " * (MAX_DESCRIPTION - len(base)))
    assert len(full) == MAX_DESCRIPTION and parse_description(full).udn == f"uuid:{UUID}"
    with pytest.raises(ValueError, match="larger than 64 KiB"):
        parse_description(full + b" ")


def test_a_declaration_anywhere_but_the_start_is_not_read_as_one():
    late = b"<root><?xml version='1.0' encoding='hex'?><device><UDN>uuid:x</UDN></device></root>"
    with pytest.raises(ValueError, match="not well-formed XML"):  # not "declares encoding 'hex'"
        parse_description(late)


def test_the_fields_are_those_of_the_first_device_itself():
    got = parse_description(description(
        f"x<UDN>uuid:{UUID}</UDN><friendlyName><b>bold</b>TV</friendlyName>"
        "<iconList><icon><modelName>deep</modelName></icon></iconList><modelName>Chromecast</modelName>"
        "<deviceType>urn:dial-multiscreen-org:device:dial:1</deviceType>",
        after="<device><manufacturer>second</manufacturer></device><x><manufacturer>outside</manufacturer></x>"))
    assert (got.udn, got.name, got.model) == (f"uuid:{UUID}", "TV", "Chromecast")
    assert got.device_type == "urn:dial-multiscreen-org:device:dial:1"
    assert got.manufacturer == ""  # neither the second device's nor one outside any device


def test_a_device_without_a_udn_is_refused():
    with pytest.raises(ValueError, match="names no device UDN"):
        parse_description(description("<friendlyName>TV</friendlyName>", after=f"<x><UDN>uuid:{UUID}</UDN></x>"))
    with pytest.raises(ValueError, match="names no device UDN"):
        parse_description(f"<root><UDN>uuid:{UUID}</UDN></root>".encode())


def test_a_long_field_is_cut_at_512_characters():
    got = parse_description(description(f"<UDN>uuid:{UUID}</UDN><friendlyName>{'n' * 600}</friendlyName>"))
    assert got.name == "n" * 512


# From a reply to a device

def test_a_reply_whose_description_was_not_fetched_is_refused():
    got = read_dial(reply(description=None))
    assert isinstance(got, Rejected) and got.reason == "its device description was not fetched"


def test_missing_names_are_said_as_such_and_strange_ones_are_escaped():
    bare = read_dial(reply(description=description(f"<UDN>uuid:{UUID}</UDN>")))
    assert (bare.name, bare.model) == ("(unnamed)", "unknown model")
    odd = read_dial(reply(description=description(
        f"<UDN>uuid:{UUID}</UDN><friendlyName>TV\u202e</friendlyName><modelName>Cast\u202e</modelName>")))
    assert (odd.name, odd.model) == ("TV\\u202e", "Cast\\u202e")


@pytest.mark.parametrize("model, kind", [
    ("Google Cast Group", Kind.VIDEO),  # groups answer no M-SEARCH: whatever did is one device
    ("Google Home Mini", Kind.AUDIO),
    ("Chromecast", Kind.VIDEO),
])
def test_the_kind_of_a_dial_device_comes_from_its_model_and_is_never_a_group(model, kind):
    got = read_dial(reply(description=description(f"<UDN>uuid:{UUID}</UDN><modelName>{model}</modelName>")))
    assert got.kind is kind and got.found_by == ("dial",) and got.port == 8009
