"""What a DIAL reply and a device description say, read defensively: bytes in, a device or a reason out.

Pure: castwall.system.ssdp sends the M-SEARCH, collects the replies and
fetches the descriptions; nothing here trusts what they hold. A Cast device
answers Chrome's M-SEARCH for the DIAL service with an SSDP response whose
LOCATION names its device description (http://<its address>:8008/ssdp/device-desc.xml);
the description's UDN is uuid:<its Cast UUID>, the id its mDNS announcement
carries too, so a device found both ways is one device.
"""

from __future__ import annotations

import ipaddress
import re
import xml.parsers.expat
from dataclasses import dataclass
from urllib.parse import urlsplit

from castwall.announcement import Rejected, kind_of
from castwall.model import Device, Kind, canonical_uuid
from castwall.sanitize import safe_text

SEARCH_TARGET = "urn:dial-multiscreen-org:service:dial:1"
DESCRIPTION_PORT = 8008  # where every Cast device serves its description and DIAL apps
CAST_PORT = 8009  # the Cast channel a DIAL-found device is reached on, as Chrome assumes
MAX_REPLY = 2048  # bytes of an SSDP response castwall reads; a real one is ~450
MAX_HEADERS = 40
MAX_DESCRIPTION = 64 * 1024  # a real description is ~1.5 KiB
MAX_FIELD = 512  # characters kept of one element's text
MAX_PATH = 256
# The encodings a description may declare: UTF-8, which real devices send, and its subsets and
# the one single-byte charset expat decodes itself. Any other name would send expat to Python's
# codec registry, which knows names that are no text encoding at all (hex, bz2, rot13).
READABLE_ENCODINGS = {"utf-8": "UTF-8", "utf8": "UTF-8", "us-ascii": "US-ASCII", "ascii": "US-ASCII",
                      "iso-8859-1": "ISO-8859-1", "latin-1": "ISO-8859-1", "latin1": "ISO-8859-1"}
_DECLARATION = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*<\?xml\b([^>]{0,200})\?>")  # match(): at the start only
_DECLARED_ENCODING = re.compile(rb"""\bencoding[ \t\r\n]*=[ \t\r\n]*(?:"([^"]*)"|'([^']*)')""")


@dataclass(frozen=True)
class DialReply:
    """One host's answer to castwall's M-SEARCH, as received (not yet trusted).

    delivered: a reply reached castwall's socket (this computer's firewall let
    it in). on_wire: a reply was seen on the interface through a packet socket
    (root only), whether or not the firewall then dropped it. description and
    application_url come from the fetch of LOCATION; problem says why nothing
    was fetched, or why the fetch failed.
    """

    source: ipaddress.IPv4Address
    interface: str  # the interface the first reply came in on (which a forged source does not belong to)
    text: bytes
    delivered: bool = False
    on_wire: bool = False
    description: bytes | None = None
    application_url: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Description:
    udn: str
    name: str
    model: str
    manufacturer: str
    device_type: str


def parse_response(data: bytes) -> dict[str, str]:
    """The headers of an SSDP response (HTTP/1.1 200 over UDP), names in lower case; the first of a name wins.

    Raises ValueError, saying why, for anything else.
    """
    if len(data) > MAX_REPLY:
        raise ValueError(f"a reply of {len(data)} bytes is no SSDP response")
    text = data.decode("latin-1")
    lines = text.replace("\r\n", "\n").split("\n")
    status = lines[0].split()  # version, code, then the reason's words
    if len(status) < 2 or status[0] not in ("HTTP/1.1", "HTTP/1.0") or status[1] != "200":
        raise ValueError(f"not an SSDP response: {safe_text(lines[0], 40)!r}")
    headers: dict[str, str] = {}
    for count, line in enumerate(lines[1:]):
        if not line.strip():
            break
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            raise ValueError(f"a malformed header line: {safe_text(line, 40)!r}")
        if count >= MAX_HEADERS:
            raise ValueError(f"more than {MAX_HEADERS} headers")
        headers.setdefault(name.strip().lower(), value.strip())
    return headers


def _same_host_url(url: str, source: ipaddress.IPv4Address, what: str) -> tuple[int | None, str]:
    """(port, path and query) of an http URL that names source by address; ValueError otherwise."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError(f"its {what} is not a plain URL")
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        raise ValueError(f"its {what} is not an http URL: {safe_text(url, 80)}")
    if parts.username is not None:  # any user information: a password comes with a user name, if only ""
        raise ValueError(f"its {what} carries a user name: {safe_text(url, 80)}")
    try:
        host = ipaddress.ip_address(parts.hostname)  # None (no host) is a ValueError too
        port = parts.port
    except ValueError:
        raise ValueError(f"its {what} names no address of the replier: {safe_text(url, 80)}") from None
    if host != source:
        raise ValueError(f"its {what} names another host ({host}), not the replier {source}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if len(path) > MAX_PATH:
        raise ValueError(f"its {what} is longer than {MAX_PATH} characters")
    return port, path


def description_path(headers: dict[str, str], source: ipaddress.IPv4Address) -> str:
    """The path of the device description that LOCATION names, at source's port 8008.

    castwall fetches from nowhere else: a LOCATION that names another host,
    another port or a host name is refused (ValueError, saying why).
    """
    target = headers.get("st", "")
    if target.lower() != SEARCH_TARGET:
        raise ValueError(f"it answers for {safe_text(target, 60)!r}, not the DIAL service")
    location = headers.get("location")
    if not location:
        raise ValueError("its reply has no LOCATION")
    if not headers.get("usn"):
        raise ValueError("its reply has no USN, which Chrome requires")
    port, path = _same_host_url(location, source, "LOCATION")
    if port != DESCRIPTION_PORT:
        raise ValueError(f"its LOCATION names port {port or 80}, not the Cast devices' {DESCRIPTION_PORT}")
    return path


class _Refused(Exception):
    pass


def description_encoding(data: bytes) -> str:
    """The encoding expat is to read a description in: what its XML declaration names, if castwall reads that.

    No declaration means UTF-8 (XML 1.0 section 4.3.3). A byte-order mark of
    UTF-16 or UTF-32, or a declared encoding outside READABLE_ENCODINGS, is
    refused (ValueError, naming it).
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")) or data[:2] in (b"<\x00", b"\x00<"):
        raise ValueError("its description is in UTF-16 or UTF-32; castwall reads descriptions in UTF-8 only")
    declaration = _DECLARATION.match(data)
    if declaration is None:
        return "UTF-8"
    named = _DECLARED_ENCODING.search(declaration.group(1))
    if named is None:
        return "UTF-8"
    raw = named.group(1) if named.group(1) is not None else named.group(2)
    name = raw.decode("latin-1")
    if name.lower() not in READABLE_ENCODINGS:
        raise ValueError(f"its description declares encoding {safe_text(name, 40)!r}; castwall reads descriptions in UTF-8 only")
    return READABLE_ENCODINGS[name.lower()]


def parse_description(data: bytes) -> Description:
    """The UDN, names and type of the first device in a UPnP device description.

    The XML is read with expat and no DTD: a document type declaration, an
    entity declaration or an external entity is refused, so no entity
    expands; only the encodings of description_encoding are read. Raises
    ValueError, saying why, and nothing else whatever the bytes.
    """
    if len(data) > MAX_DESCRIPTION:
        raise ValueError(f"its description is larger than {MAX_DESCRIPTION // 1024} KiB")
    # Naming the encoding here makes expat ignore the one the document declares.
    parser = xml.parsers.expat.ParserCreate(description_encoding(data))
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse(*_):
        raise _Refused("its description declares a document type or entities, which castwall does not read")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.SkippedEntityHandler = refuse
    path: list[str] = []
    fields: dict[str, str] = {}
    text: list[str] = []
    devices = 0

    def local(name: str) -> str:
        return name.rpartition(" ")[2].rpartition(":")[2]  # expat gives "namespace name"; a prefix: goes too

    def start(name, attrs):
        nonlocal devices
        path.append(local(name))
        if path[-1] == "device":
            devices += 1
        text.clear()

    def end(name):
        # Only the first device's own fields (root/device/X), not those of embedded devices.
        if len(path) == 3 and path[:2] == ["root", "device"] and devices == 1:
            fields.setdefault(path[-1], "".join(text)[:MAX_FIELD].strip())
        path.pop()
        text.clear()

    def chars(data):
        if sum(len(t) for t in text) < MAX_FIELD:
            text.append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except xml.parsers.expat.ExpatError as exc:
        raise ValueError(f"its description is not well-formed XML ({xml.parsers.expat.ErrorString(exc.code)}, "
                         f"line {exc.lineno})") from None
    except (LookupError, UnicodeError, RecursionError, MemoryError) as exc:  # expat's own limits, whatever they are
        raise ValueError(f"its description cannot be read ({type(exc).__name__})") from None
    if "UDN" not in fields:  # fields are only ever the first device's
        raise ValueError("its description names no device UDN")
    return Description(fields["UDN"], fields.get("friendlyName", ""), fields.get("modelName", ""),
                       fields.get("manufacturer", ""), fields.get("deviceType", ""))


def read_dial(reply: DialReply) -> Device | Rejected:
    """The Cast device a DIAL reply and its description describe, or why there is none."""
    label = str(reply.source)
    if reply.problem:
        return Rejected(label, reply.problem, via="dial")
    if reply.description is None:
        return Rejected(label, "its device description was not fetched", via="dial")
    if not reply.application_url:
        return Rejected(label, "its description came without an Application-URL header, which Chrome requires", via="dial")
    try:
        _same_host_url(reply.application_url, reply.source, "Application-URL")
        found = parse_description(reply.description)
    except ValueError as exc:
        return Rejected(label, str(exc), via="dial")
    udn = found.udn
    if not udn.lower().startswith("uuid:"):
        return Rejected(label, f"its UDN is not a uuid: {safe_text(udn, 60)}", via="dial")
    try:
        uuid = canonical_uuid(udn[5:])
    except ValueError:
        return Rejected(label, f"its UDN is not a Cast UUID: {safe_text(udn, 60)}", via="dial")
    model = safe_text(found.model) or "unknown model"
    kind = kind_of(model)
    if kind is Kind.GROUP:  # groups answer no M-SEARCH: whatever answered is one device
        kind = Kind.VIDEO
    return Device(uuid=uuid, name=safe_text(found.name) or "(unnamed)", model=model, kind=kind,
                  ip=reply.source, port=CAST_PORT, found_by=("dial",))
