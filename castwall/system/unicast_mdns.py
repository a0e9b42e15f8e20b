"""Unicast mDNS questions to the Cast devices castwall already knows (RFC 6762 section 6.7).

zeroconf is handed in by castwall.system.discovery, the only module that imports it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Sequence

from castwall.announcement import CLASS_IN, MAX_QUESTIONS, SERVICE, TYPE_PTR, Announcement, assemble

MAX_UNICAST_RECORDS = 64  # records read from one known device's answers
READ_BATCH = 64  # datagrams read per call of read(): discovery's loop checks its clock between calls
MDNS_PORT = 5353


class UnicastAsker:
    """Unicast questions to the devices castwall knows, answered by unicast that conntrack admits.

    Each question goes from a random local port to the device's port 5353, a
    "legacy unicast" query (RFC 6762 section 6.7): the device answers by
    unicast to that port, and the firewall lets the answer in as the reply it
    is. So a known device is found even where multicast answers never arrive.
    Only what the asked address itself sends is read, and only its own
    address is taken from the answer.
    """

    def __init__(self, zeroconf, targets: Sequence[tuple[str, str]]):
        self.zeroconf = zeroconf
        self.id = int.from_bytes(os.urandom(2), "big") or 1
        self.sockets: dict[str, socket.socket] = {}
        self.targets: list[tuple[str, ipaddress.IPv4Address]] = []
        self.records: dict[ipaddress.IPv4Address, list] = {}
        self.followed: set[tuple] = set()  # (address, name, type) asked again because an answer lacked it
        for local, remote in targets:
            if local not in self.sockets:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    sock.bind((local, 0))
                except OSError:
                    sock.close()
                    continue
                sock.setblocking(False)
                self.sockets[local] = sock
            self.targets.append((local, ipaddress.IPv4Address(remote)))

    def ask(self, questions: dict[ipaddress.IPv4Address, list[tuple[str, int]]] | None = None) -> None:
        """The PTR question to every target, or the given questions to some."""
        for local, remote in self.targets:
            wanted = [(SERVICE, TYPE_PTR)] if questions is None else questions.get(remote)
            if not wanted:
                continue
            out = self.zeroconf.DNSOutgoing(0, False, self.id)  # flags 0: a query; not multicast
            for name, rtype in wanted[:MAX_QUESTIONS]:
                out.add_question(self.zeroconf.DNSQuestion(name, rtype, CLASS_IN))
            for packet in out.packets():
                try:
                    self.sockets[local].sendto(packet, (str(remote), MDNS_PORT))
                except OSError:
                    pass

    def read(self) -> bool:
        """Take whatever answers have arrived; True when there was news."""
        news = False
        asked = {remote for _, remote in self.targets}
        for sock in self.sockets.values():
            # A bounded batch per call: discovery's loop calls again after checking its clock,
            # so a flood to this port cannot hold it here.
            for _ in range(READ_BATCH):
                try:
                    data, (host, port) = sock.recvfrom(9000)
                except OSError:  # nothing more queued (BlockingIOError) or the socket failed
                    break
                source = ipaddress.IPv4Address(host)
                if port != MDNS_PORT or source not in asked:
                    continue
                try:
                    incoming = self.zeroconf.DNSIncoming(data)
                    answers = incoming.answers() if callable(incoming.answers) else incoming.answers
                    if incoming.id != self.id or not incoming.flags & 0x8000:
                        continue
                except Exception:  # a packet zeroconf cannot read is ignored, like any malformed one
                    continue
                kept = self.records.setdefault(source, [])
                room = MAX_UNICAST_RECORDS - len(kept)
                if room > 0 and answers:
                    kept.extend(list(answers)[:room])
                    news = True
        return news

    def follow_up(self) -> None:
        """Ask once more, at once, for what an answer lacked (a legacy unicast answer holds 512 bytes)."""
        _, missing = self.announcements()
        fresh = {ip: [q for q in wanted if (ip, *q) not in self.followed] for ip, wanted in missing.items()}
        fresh = {ip: wanted for ip, wanted in fresh.items() if wanted}
        if fresh:
            self.followed.update((ip, *q) for ip, wanted in fresh.items() for q in wanted)
            self.ask(fresh)

    def announcements(self) -> tuple[list[Announcement], dict[ipaddress.IPv4Address, list[tuple[str, int]]]]:
        """What each known device answered, and the questions that would complete it."""
        found, missing = [], {}
        for source, records in self.records.items():
            def of(name: str, rtype: int, records=records) -> list:  # bound: assemble calls it at once
                return [r for r in records if r.type == rtype and r.name.lower() == name.lower()]

            for instance in dict.fromkeys(ptr.alias for ptr in of(SERVICE, TYPE_PTR)):
                announcement, wanted = assemble(instance, of, via="mdns-unicast", own=lambda raw, source=source: raw == source.packed)
                if wanted:
                    missing.setdefault(source, []).extend(wanted)
                found.append(announcement)
        return found, missing

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
