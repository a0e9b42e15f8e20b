"""DIAL discovery: the M-SEARCH, its replies (from the socket and, as root, from the wire) and the descriptions.

Chrome sends its M-SEARCH from a random local port and each Cast device answers
by unicast to that port, from a random port of its own: a default-deny
firewall drops the answer, since conntrack does not tie it to a multicast
question. castwall asks the same way. As root it also reads the interface
through a packet socket, which sees a reply before the firewall drops it:
those replies are the very traffic castwall exists to allow, and comparing
the two says whether this computer's firewall drops them. Everything a reply
says is untrusted (castwall.dial reads it); castwall.system.description
fetches a description only from the replier's own address, port 8008, within
one deadline and a size cap.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ipaddress
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from castwall import __version__
from castwall.dial import MAX_REPLY, SEARCH_TARGET, DialReply, description_path, parse_response
from castwall.sanitize import safe_text
from castwall.system.description import fetch_description

GROUP = ("239.255.255.250", 1900)
MX = 1  # seconds a device may wait before it answers, as Chrome asks
COPIES = (0.0, 0.1)  # when the M-SEARCH goes out: twice, as UDP may lose one
MARGIN = 0.15  # after the last answer time, for the reply to cross the LAN
MAX_SOURCES = 256  # distinct repliers castwall reads; a flood from more is cut here
# Descriptions fetched at once: every replier's, each in a thread of its own (made as needed). Each
# fetch ends within FETCH_TIMEOUT, so no number of repliers that never finish their answer can
# keep another's description from arriving within FETCH_TIMEOUT of its reply.
FETCHERS = MAX_SOURCES
DRAIN_BATCH = 64  # datagrams read off one socket before the reader looks at its stop flag and clock again
JOIN_TIMEOUT = 1.0  # for the reader thread, which checks its stop flag every DRAIN_BATCH datagrams
IP_PKTINFO = 8  # <linux/in.h>: the interface a datagram arrived on, as ancillary data
WIRE_READ = 60 + 8 + MAX_REPLY + 1  # the longest IP header, UDP's, and one byte past the longest reply read

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
# Room for a burst: a flood of replies must not push the real devices' out of the queue
# (about 3,000 replies; the reader thread drains them as they come).
RECEIVE_BUFFER = 4 * 1024 * 1024

MSEARCH = (
    "M-SEARCH * HTTP/1.1\r\n"
    f"HOST: {GROUP[0]}:{GROUP[1]}\r\n"
    'MAN: "ssdp:discover"\r\n'
    f"MX: {MX}\r\n"
    f"ST: {SEARCH_TARGET}\r\n"
    f"USER-AGENT: castwall/{__version__}\r\n"
    "\r\n"
).encode("ascii")


HTTP = 0x48545450  # "HTTP": how every SSDP response begins
SKF_NET_OFF = -0x100000  # classic BPF: an offset from the IP header, where a socket's filter starts elsewhere
FILTER_GROUP = 200  # sources compared before the filter's next drop (a jump reaches 255 instructions)


def reply_filter(port: int | None = None, heard: Sequence[ipaddress.IPv4Address] = ()) -> bytes:
    """A classic BPF program that keeps only what may be a new DIAL reply, so a flood is dropped in the kernel.

    With port, for a cooked packet socket (which sees the IP header first):
    IPv4 UDP datagrams, first fragments, to that port. Without, for
    castwall's UDP socket (whose filter sees the UDP header first). Either
    way the payload must begin with "HTTP", as every reply does, and come
    from none of the addresses in heard (MAX_SOURCES at most): castwall
    keeps a replier's first reply only, so once a source is heard the rest
    of its datagrams are left to the kernel to drop.
    """
    drop = "drop"
    if port is not None:
        ops: list[tuple] = [
            (0x30, 0, 0, 9),  # ldb [9]: the IP protocol
            (0x15, 0, drop, 17),  # jeq UDP, else drop
            (0x28, 0, 0, 6),  # ldh [6]: flags and fragment offset
            (0x45, drop, 0, 0x1FFF),  # jset offset: a later fragment, drop
            (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): the IP header's length
            (0x48, 0, 0, 2),  # ldh [x+2]: the UDP destination port
            (0x15, 0, drop, port),  # jeq port, else drop
            (0x40, 0, 0, 8),  # ld [x+8]: the payload's first four bytes (a shorter one is dropped)
        ]
        source = 12  # ld [12]: the source address
    else:
        ops = [(0x20, 0, 0, 8)]  # ld [8]: the payload's first four bytes, after the UDP header
        source = (SKF_NET_OFF + 12) & 0xFFFFFFFF
    ops += [
        (0x15, 0, drop, HTTP),  # jeq "HTTP", else drop
        (0x05, 0, 0, 1),  # ja: past the drop, to the sources
        (0x06, 0, 0, 0),  # drop: ret 0
        (0x20, 0, 0, source),
    ]
    # A jump reaches at most 255 instructions ahead: after each group of sources, a drop of its own.
    heard = list(heard)[:MAX_SOURCES]
    groups = [heard[i:i + FILTER_GROUP] for i in range(0, len(heard), FILTER_GROUP)]
    for n, group in enumerate(groups):
        ops += [(0x15, f"drop{n}", 0, int(ip)) for ip in group]  # jeq a replier heard before: drop
        ops += [(0x05, 0, 0, 1), (0x06, 0, 0, f"drop{n}")]  # ja: past this group's drop; the drop
    ops.append((0x06, 0, 0, 0x40000))  # ret: accept
    at = {"drop": next(i for i, op in enumerate(ops) if op == (0x06, 0, 0, 0))}
    at.update({op[3]: i for i, op in enumerate(ops) if isinstance(op[3], str)})
    resolved = []
    for i, (code, jt, jf, k) in enumerate(ops):
        jt, jf = (at[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        resolved.append((code, jt, jf, 0 if isinstance(k, str) else k))
    return b"".join(struct.pack("HBBI", *op) for op in resolved)


def parse_udp(packet: bytes) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address, int, int, bytes] | None:
    """(source, destination, source port, destination port, payload) of an IPv4 UDP datagram, or None."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 17:
        return None
    header = (packet[0] & 0x0F) * 4
    if header < 20 or len(packet) < header + 8:
        return None
    total = struct.unpack_from("!H", packet, 2)[0]
    sport, dport, length = struct.unpack_from("!HHH", packet, header)
    end = min(len(packet), total, header + length)
    return (ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20]), sport, dport,
            packet[header + 8 : end])


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


@dataclass
class _Source:
    """What one replier sent, merged over all its replies."""

    interface: str  # the interface its first reply arrived on
    text: bytes
    delivered: bool = False
    on_wire: bool = False
    problem: str | None = None
    fetch: concurrent.futures.Future | None = None


@dataclass
class _Interface:
    name: str
    ip: ipaddress.IPv4Address
    udp: socket.socket
    port: int
    wire: socket.socket | None = None


@dataclass
class DialSearch:
    """One DIAL search on the chosen interfaces, running in the background while mDNS asks.

    interfaces: (name, IPv4 address) pairs. wire: also read each interface
    through a packet socket (needs root). misplaced(ip, interface) says why
    a reply from ip that came in on that interface cannot be ip's (None: it
    can): the packet socket sees replies before reverse-path filtering, so a
    host on one LAN can forge the address of a device on another. Such a
    reply is reported but never stands for its source address, so the
    device's own reply is still taken. may_fetch(ip) says why castwall may
    not fetch from ip (None: it may): castwall passes its own screening.
    """

    interfaces: Sequence[tuple[str, ipaddress.IPv4Address]]
    wire: bool = False
    misplaced: Callable[[ipaddress.IPv4Address, str], str | None] = lambda ip, interface: None
    may_fetch: Callable[[ipaddress.IPv4Address], str | None] = lambda ip: None
    clock: Callable[[], float] = time.monotonic
    note: Callable[[str], None] = lambda message: None
    fetch: Callable[..., tuple[bytes, str | None]] = fetch_description
    _sources: dict[ipaddress.IPv4Address, _Source] = field(default_factory=dict)
    _forged: dict[tuple[ipaddress.IPv4Address, str], _Source] = field(default_factory=dict)  # (source, interface)
    _ifaces: list[_Interface] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pool: concurrent.futures.ThreadPoolExecutor | None = None
    _started: float = 0.0
    _sent: int = 0
    _names: dict[int, str] = field(default_factory=dict)  # interface index -> name, as datagrams name them
    dropped_sources: int = 0
    until: float = 60.0  # seconds after start() at which the reader stops by itself, finish() or not
    datagrams: int = 0  # read off the sockets, replies and junk alike
    wire_problem: str | None = None
    replies: list[DialReply] = field(default_factory=list)  # set by finish()
    forged: list[DialReply] = field(default_factory=list)  # set by finish(): replies misplaced() refused, apart
    waited: bool = False  # whether DIAL kept discovery going after mDNS had heard enough

    def start(self) -> None:
        """Open the sockets and send the first M-SEARCH; the rest happens in a thread of its own."""
        self._started = self.clock()
        for name, ip in self.interfaces:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)  # capped by rmem_max
                udp.bind((str(ip), 0))
                udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                _attach_filter(udp, reply_filter())
                udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, ip.packed)
                udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 4)
                udp.setblocking(False)
            except OSError as exc:
                udp.close()
                self.note(f"DIAL: no socket on {name} ({exc.strerror or exc})")
                continue
            iface = _Interface(name, ip, udp, udp.getsockname()[1])
            if self.wire:
                iface.wire = self._open_wire(name, iface.port)
            self._ifaces.append(iface)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=FETCHERS, thread_name_prefix="castwall-dial")
        self._send()
        self._thread = threading.Thread(target=self._read, name="castwall-dial-reader", daemon=True)
        self._thread.start()

    def _open_wire(self, name: str, port: int) -> socket.socket | None:
        try:
            # Protocol 0 receives nothing until bind, so the filter is in place before the first packet.
            wire = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        except OSError as exc:
            self.wire_problem = f"cannot open a packet socket ({exc.strerror or exc})"
            return None
        try:
            _attach_filter(wire, reply_filter(port))
            wire.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)  # root: past rmem_max
            wire.bind((name, ETH_P_IP))
            wire.setblocking(False)
        except OSError as exc:
            wire.close()
            self.wire_problem = f"cannot read {name} through a packet socket ({exc.strerror or exc})"
            return None
        return wire

    def _send(self) -> None:
        for iface in self._ifaces:
            try:
                iface.udp.sendto(MSEARCH, GROUP)
            except OSError as exc:
                self.note(f"DIAL: M-SEARCH on {iface.name} failed ({exc.strerror or exc})")
        self._sent += 1

    def window_end(self) -> float:
        """Seconds after start by which every device has answered the last M-SEARCH."""
        return COPIES[-1] + MX + MARGIN

    def _read(self) -> None:
        by_socket = {}
        for iface in self._ifaces:
            by_socket[iface.udp] = (iface, False)
            if iface.wire is not None:
                by_socket[iface.wire] = (iface, True)
        while not self._stop.is_set() and by_socket:
            elapsed = self.clock() - self._started
            if elapsed >= self.until:
                return
            if self._sent < len(COPIES) and elapsed >= COPIES[self._sent]:
                self._send()
            try:
                ready, _, _ = select.select(list(by_socket), [], [], 0.02)
            except (OSError, ValueError):  # a socket closed under us: finish() is under way
                return
            for sock in ready:
                iface, wire = by_socket[sock]
                try:
                    self._drain(sock, iface, wire)
                except OSError:
                    return

    def _drain(self, sock: socket.socket, iface: _Interface, wire: bool) -> None:
        """Take what is queued on sock, DRAIN_BATCH datagrams at most, so a flood cannot keep the reader from its stop flag."""
        for _ in range(DRAIN_BATCH):
            try:
                if wire:
                    packet, address = sock.recvfrom(WIRE_READ)
                else:
                    data, ancillary, _, (host, _) = sock.recvmsg(MAX_REPLY + 1, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            self.datagrams += 1
            if not wire:
                self._heard(self._arrived_on(ancillary, iface), ipaddress.IPv4Address(host), data, wire=False)
                continue
            if address[2] == PACKET_OUTGOING:
                continue
            udp = parse_udp(packet)
            if udp is not None and udp[1] == iface.ip and udp[3] == iface.port:
                self._heard(address[0], udp[0], udp[4], wire=True)

    def _arrived_on(self, ancillary: list, iface: _Interface) -> str:
        """The interface a datagram came in on (IP_PKTINFO), which need not be the one its socket is bound to."""
        for level, kind, data in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 4:
                index = struct.unpack_from("i", data)[0]
                if index not in self._names:
                    try:
                        self._names[index] = socket.if_indextoname(index)
                    except OSError:
                        self._names[index] = f"interface #{index}"
                return self._names[index]
        return iface.name

    def _heard(self, arrived_on: str, source: ipaddress.IPv4Address, data: bytes, *, wire: bool) -> None:
        with self._lock:
            known = self._sources.get(source)
            why = None if known is not None and known.interface == arrived_on else self.misplaced(source, arrived_on)
            if why:  # kept apart, and never filtered: the real host's reply must still come through and count alone
                if len(self._forged) < MAX_SOURCES:
                    self._forged.setdefault((source, arrived_on), _Source(arrived_on, b"", problem=why))
                return
            if known is None:
                if len(self._sources) >= MAX_SOURCES:
                    self.dropped_sources += 1
                    return
                known = self._sources[source] = _Source(arrived_on, data[: MAX_REPLY + 1])
                self._examine(source, known)
            fresh = not (known.on_wire if wire else known.delivered)
            if wire:
                known.on_wire = True
            else:
                known.delivered = True
            if fresh:
                self._refilter(wire)

    def _refilter(self, wire: bool) -> None:
        """Have the kernel drop what more the sources already heard on this kind of socket send (a flood above all).

        Each kind keeps its own list: whether a reply reached the UDP socket
        (the firewall let it in) must not depend on which copy was read first.
        """
        heard = [ip for ip, s in self._sources.items() if (s.on_wire if wire else s.delivered)]
        for iface in self._ifaces:
            sock = iface.wire if wire else iface.udp
            if sock is None:
                continue
            try:
                _attach_filter(sock, reply_filter(iface.port if wire else None, heard))
            except OSError:  # a socket closed by finish(): nothing left to filter
                pass

    def _examine(self, source: ipaddress.IPv4Address, found: _Source) -> None:
        """Check a new replier's first reply; fetch its description if castwall may."""
        try:
            path = description_path(parse_response(found.text), source)
        except ValueError as exc:
            found.problem = str(exc)
            return
        why = self.may_fetch(source)
        if why:
            found.problem = f"not asked for its description: {why}"
            return
        try:
            if self._pool is None or self._stop.is_set():  # finish() is under way: no new fetch
                raise RuntimeError("finished")
            found.fetch = self._pool.submit(self.fetch, source, path)
        except RuntimeError:  # the pool was shut down between the two
            found.problem = "its description was not asked for before discovery ended"

    def repliers(self) -> set[ipaddress.IPv4Address]:
        with self._lock:
            return set(self._sources)

    def settled(self, announced: set, heard_any: bool, *, complete: bool = False) -> bool:
        """Whether discovery may end now, as far as DIAL is concerned.

        announced holds the addresses mDNS announced, heard_any whether mDNS
        heard anything at all. Where multicast reaches this computer, mDNS
        has found the devices by the time it ends, and DIAL adds no wall
        time. castwall waits for every DIAL answer (window_end) only when
        mDNS heard nothing, when a DIAL replier is a host mDNS did not
        announce (multicast is lost for some), or when complete (castwall
        check) asks for it.
        """
        if not complete and heard_any and not (self.repliers() - announced):
            return True  # descriptions still under way get finish()'s grace
        if self.clock() - self._started >= self.window_end() and not self._pending():
            return True
        self.waited = True
        return False

    def _pending(self) -> bool:
        with self._lock:
            return any(s.fetch is not None and not s.fetch.done() for s in self._sources.values())

    def finish(self, wait: float) -> list[DialReply]:
        """Stop reading, give description fetches up to wait seconds more, close everything; the replies."""
        deadline = self.clock() + max(0.0, wait)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT)
        with self._lock:
            sources = dict(self._sources)
            forged = dict(self._forged)
        for found in sources.values():
            if found.fetch is not None:
                try:
                    found.fetch.result(timeout=max(0.0, deadline - self.clock()))
                except Exception:  # read in _reply, whatever it was
                    pass
        for iface in self._ifaces:
            iface.udp.close()
            if iface.wire is not None:
                iface.wire.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        replies = [self._reply(ip, found) for ip, found in sorted(sources.items(), key=lambda item: int(item[0]))]
        self.forged = [DialReply(ip, where, b"", problem=found.problem)
                       for (ip, where), found in sorted(forged.items(), key=lambda item: (int(item[0][0]), item[0][1]))]
        if self.dropped_sources:
            self.note(f"DIAL: replies from {self.dropped_sources} more host(s) ignored (at most {MAX_SOURCES})")
        self.replies = replies
        return replies

    @staticmethod
    def _reply(ip: ipaddress.IPv4Address, found: _Source) -> DialReply:
        description, app_url, problem = None, None, found.problem
        job = found.fetch
        if job is not None:
            if not job.done() or job.cancelled():
                problem = "its description did not arrive before discovery ended"
            elif isinstance(job.exception(), ValueError):
                problem = str(job.exception())
            elif job.exception() is not None:
                problem = f"its description could not be read ({safe_text(job.exception(), 80)})"
            else:
                description, app_url = job.result()
        return DialReply(ip, found.interface, found.text, found.delivered, found.on_wire, description, app_url, problem)
