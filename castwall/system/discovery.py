"""Cast discovery over mDNS, with DIAL alongside: the only module that imports zeroconf.

It gathers the records announced for `_googlecast._tcp` and hands them over
raw; castwall.announcement reads them. It also asks the devices castwall
already knows by unicast, and lets a DIAL search (castwall.system.ssdp) run
alongside until both have heard enough. Uses only zeroconf API that 0.47
(Debian 12) and the newest releases share.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Collection, Sequence

from castwall.announcement import CLASS_IN, MAX_QUESTIONS, SERVICE, TYPE_PTR, Announcement, assemble, collate
from castwall.errors import NetworkUnavailable
from castwall.model import canonical_uuid
from castwall.system.unicast_mdns import UnicastAsker

if TYPE_CHECKING:
    from castwall.system.ssdp import DialSearch

MAX_INSTANCES = 1000  # a flood of announcements is cut here, newest first
FETCH_GRACE = 1.0  # seconds a description fetch still under way at the end may take


@dataclass(frozen=True)
class StopRule:
    """When discovery has heard enough.

    castwall asks with QM questions only: ufw drops the unicast answers that
    a QU question gets. A responder may not multicast a record again within
    1 s of the last time (RFC 6762 section 6; avahi: 500 ms), so a device
    that answered someone else's question just before castwall started stays
    silent on the first one. castwall asks at 0 s and again at requery, and
    ends once that second question's answers have had answer_window seconds
    and the LAN has been quiet for settle seconds (more when answers came
    late: a slow LAN gets more time). If the second question brought devices
    the first did not, or nothing had answered at all, some responder may be
    inside its limit: castwall asks a third time at last_call, when every
    limit has passed, and ends the same way after it. When every device
    castwall set up before answers the first question (status), it ends then.
    An announcement that arrived without all its records gets one more
    question for them. --timeout caps it all.
    """

    first_quiet: float = 0.2  # round one is over after this long without news
    requery: float = 0.5
    last_call: float = 1.0
    answer_window: float = 0.13  # responders answer 20-120 ms after a query (RFC 6762 section 6)
    settle: float = 0.15

    def quiet(self, elapsed: float, last_answer: float | None, window: float) -> bool:
        if last_answer is None:
            return elapsed >= window
        return elapsed - last_answer >= max(window, last_answer / 4)


def _query(zc, zeroconf, questions: Sequence[tuple[str, int]]) -> None:
    """Send QM questions (multicast answers, which ufw's stock rules admit)."""
    out = zeroconf.DNSOutgoing(0)  # flags 0: a standard query
    for name, rtype in questions:
        out.add_question(zeroconf.DNSQuestion(name, rtype, CLASS_IN))  # no unicast-response bit
    zc.send(out)


def _records(zc, zeroconf, name: str, rtype: int) -> list:
    now = zeroconf.current_time_millis()
    for _ in range(3):
        try:
            records = zc.cache.get_all_by_details(name, rtype, CLASS_IN)
            break
        except RuntimeError:  # the network thread changed the cache under us: read again
            continue
    else:
        return []
    return sorted((r for r in records if not r.is_expired(now)), key=lambda r: r.created, reverse=True)


def _instances(zc, zeroconf) -> set[str]:
    return {r.alias for r in _records(zc, zeroconf, SERVICE, TYPE_PTR)[:MAX_INSTANCES]}


def _announcements(zc, zeroconf) -> tuple[list[Announcement], list[tuple[str, int]]]:
    """What the cache holds for the service, and the questions that would complete it."""
    found, missing = [], []
    for ptr in _records(zc, zeroconf, SERVICE, TYPE_PTR)[:MAX_INSTANCES]:
        announcement, wanted = assemble(ptr.alias, lambda name, rtype: _records(zc, zeroconf, name, rtype))
        found.append(announcement)
        missing += wanted
    return found, missing[:MAX_QUESTIONS]


def discover(
    addresses: Sequence[str],
    timeout: float,
    *,
    expect: Collection[str] = (),
    known: Sequence[tuple[str, str]] = (),
    dial: DialSearch | None = None,
    complete: bool = False,
    rule: StopRule = StopRule(),
    clock: Callable[[], float] = time.monotonic,
    note: Callable[[str], None] = lambda message: None,
) -> list[Announcement]:
    """Gather the Cast announcements heard from the given local IPv4 addresses.

    expect holds the UUIDs of devices set up before: when all of them answer
    the first query, discovery ends without a second round. known holds
    (local address, device address) pairs to ask by unicast as well. dial,
    when given, is started first and runs alongside; discovery ends only when
    it has heard enough too (see DialSearch.settled; complete: every DIAL
    answer), and its replies are in dial.replies afterwards.
    Raises NetworkUnavailable when mDNS cannot be started on them.
    """
    if dial is not None:
        dial.until = timeout + FETCH_GRACE  # the reader's own bound, should this function never reach finish()
        dial.start()
    # Why only QM questions: python-zeroconf's browser opens with a QU question,
    # and a responder answers QU by unicast to port 5353, which ufw's default
    # deny drops; avahi even drops its pending multicast answer then. Answers to
    # QM questions are multicast, which ufw's stock rules admit.
    # Why castwall reads the records itself: a library that decodes them in
    # its browser thread can lose every later device to one malformed record.
    loading = clock()
    import zeroconf

    note(f"zeroconf {getattr(zeroconf, '__version__', '?')} loaded in {clock() - loading:.3f} s")

    activity = threading.Condition()
    last_heard: float | None = None
    news = 0

    def on_record(zeroconf, service_type, name, state_change):  # zeroconf passes these by keyword
        nonlocal last_heard, news
        with activity:
            last_heard = clock()
            news += 1
            activity.notify_all()

    try:
        zc = zeroconf.Zeroconf(interfaces=list(addresses))
    except (OSError, zeroconf.Error) as exc:
        if dial is not None:
            dial.finish(0)
        where = ", ".join(addresses)
        raise NetworkUnavailable(f"cannot start mDNS on {where}: {getattr(exc, 'strerror', None) or exc}") from None
    watcher = None
    unicast = UnicastAsker(zeroconf, known) if known else None
    mdns_over = False  # mDNS has heard enough; waiting for DIAL only
    announced: set = set()
    announced_at = -1
    expected = {canonical_uuid(u) for u in expect}
    asked: list[float] = []  # when each round's question went out
    before_second: set[str] = set()  # the instances heard before the second question
    third: bool | None = None  # whether a third question is due, once the second one's answers are in
    completing_since: float | None = None
    checked = -1
    mdns_ended = 0.0

    def ask(elapsed: float) -> None:
        _query(zc, zeroconf, [(SERVICE, TYPE_PTR)])
        if unicast is not None and len(asked) < 2:
            unicast.ask()
        asked.append(elapsed)

    def heard() -> list[Announcement]:
        found = _announcements(zc, zeroconf)[0]
        return found + (unicast.announcements()[0] if unicast is not None else [])

    try:
        start = clock()
        ask(0.0)
        watcher = zeroconf.ServiceBrowser(zc, SERVICE, handlers=[on_record], question_type=zeroconf.DNSQuestionType.QM)
        with activity:
            while True:
                if unicast is not None and unicast.read():
                    last_heard = clock()
                    news += 1
                    unicast.follow_up()
                elapsed = clock() - start
                last = None if last_heard is None else last_heard - start
                if elapsed >= timeout:
                    break
                if mdns_over:
                    if news != announced_at:
                        announced_at = news
                        announced = {ipaddress.IPv4Address(raw) for a in heard() for raw in a.addresses if len(raw) == 4}
                    if dial.settled(announced, last_heard is not None, complete=complete):
                        break
                    activity.wait(0.005)
                    continue
                if len(asked) == 1 and elapsed >= rule.requery:
                    before_second = _instances(zc, zeroconf)
                    ask(elapsed)
                heard_enough = False
                if expected and len(asked) == 1 and news != checked and rule.quiet(elapsed, last, rule.first_quiet):
                    checked = news
                    devices, _ = collate(heard())
                    heard_enough = expected <= {d.uuid for d in devices}
                if len(asked) >= 2 and elapsed >= asked[-1] + rule.answer_window and rule.quiet(elapsed, last, rule.settle):
                    if len(asked) == 2 and third is None:
                        third = not before_second or bool(_instances(zc, zeroconf) - before_second)
                    if len(asked) == 2 and third:
                        if elapsed >= rule.last_call:  # a responder may have been inside its limit: once more
                            ask(elapsed)
                    else:
                        heard_enough = True
                if completing_since is not None:
                    if elapsed >= completing_since + rule.answer_window and rule.quiet(elapsed, last, rule.settle):
                        mdns_over = True
                elif heard_enough:
                    _, missing = _announcements(zc, zeroconf)
                    if not missing:
                        mdns_over = True
                    else:
                        _query(zc, zeroconf, missing)  # ask once for the records that did not come
                        completing_since = elapsed
                if mdns_over:
                    mdns_ended = elapsed
                    if dial is None:
                        break
                activity.wait(0.005)  # news wakes it at once; this is for the clock's deadlines
        if not mdns_over:  # the timeout came first
            mdns_ended = clock() - start
        found = heard()
        note(f"questions at {', '.join(f'{t:.2f}' for t in asked)} s"
             + (f" and one for missing records at {completing_since:.2f} s" if completing_since is not None else "")
             + f"; {len(found)} instance(s); last news at "
             + ("-" if last_heard is None else f"{last_heard - start:.3f} s") + f"; ended at {clock() - start:.3f} s")
    finally:
        if watcher is not None:
            watcher.cancel()
        if unicast is not None:
            unicast.close()
        zc.close()
        if dial is not None:
            # Descriptions asked for just before the end get a moment more, within --timeout.
            replies = dial.finish(min(FETCH_GRACE, max(0.0, timeout - (clock() - start))))
            note(f"DIAL: {len(replies)} replier(s), "
                 + f"{sum(r.delivered for r in replies)} reached the socket, {sum(r.on_wire for r in replies)} seen on the wire"
                 + (f" ({dial.wire_problem})" if dial.wire_problem else "") + f"; mDNS was done at {mdns_ended:.3f} s, "
                 + f"DIAL at {clock() - start:.3f} s, "
                 + ("after waiting for every DIAL answer" if dial.waited else "without waiting longer than mDNS")
                 + f"; {dial.datagrams} datagram(s) read")
    return found
