"""Cast discovery over mDNS: the only module that imports pychromecast and zeroconf.

Uses only the API that pychromecast 9.4 (Debian 12) and 14.x share.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Collection, Iterable, Sequence

from castwall.errors import NetworkUnavailable
from castwall.model import Device, Kind, canonical_uuid
from castwall.sanitize import safe_text

SERVICE = "_googlecast._tcp.local."
GROUP_MODEL = "google cast group"
# Models without a screen, as pychromecast's own table lists them (lower case).
AUDIO_MODELS = frozenset(
    {
        "chromecast audio",
        "google home",
        "google home mini",
        "google home max",
        "google nest mini",
        "nest audio",
        "nest wifi point",
        "bose smart ultra soundbar",
        "c4a",
        "jbl link 10",
        "jbl link 20",
        "jbl link 300",
        "jbl link 500",
        "jbl link portable",
        "lenovocd-24502f",
        "lg wk7 thinq speaker",
        "marshall stanmore ii",
        "pioneer vsx-831",
        "pioneer vsx-1131",
    }
)


def kind_of(model: str) -> Kind:
    key = model.strip().casefold()
    if key == GROUP_MODEL:
        return Kind.GROUP
    return Kind.AUDIO if key in AUDIO_MODELS else Kind.VIDEO


@dataclass(frozen=True)
class StopRule:
    """When discovery has heard enough.

    A responder may not multicast a record again within 1 s of the last time
    (RFC 6762 section 6; avahi: 500 ms), so a device whose answer to someone
    else's query went out just before castwall started stays silent on the
    first query. castwall may not use the unicast-answer bit (ufw drops those
    answers), so it asks a second time, requery seconds after the first, and
    ends once the answers to that round have come in and the LAN has been
    quiet for settle seconds (longer when answers came late: a slow LAN gets
    more time). When every device castwall set up before has already answered
    the first round, it ends then. --timeout caps it all.
    """

    first_quiet: float = 0.2  # round one is over after this long without news
    requery: float = 1.0
    answer_window: float = 0.15  # responders answer a query within 120 ms
    settle: float = 0.15
    harvest: float = 0.5  # longest wait for pychromecast to read a cached answer

    def quiet(self, elapsed: float, last_answer: float | None, window: float) -> bool:
        if last_answer is None:
            return elapsed >= window
        return elapsed - last_answer >= max(window, last_answer / 4)


def link_groups(devices: Iterable[Device]) -> list[Device]:
    """Tie each group to the device announced at the same address (its leader).

    Returns the devices sorted by name, then address.
    """
    devices = list(devices)
    hosts = {}
    for d in devices:
        if d.kind is not Kind.GROUP:
            hosts.setdefault(d.ip, d.uuid)
    linked = [replace(d, host=hosts.get(d.ip)) if d.kind is Kind.GROUP else d for d in devices]
    return sorted(linked, key=lambda d: (d.name.casefold(), d.ip.version, int(d.ip), d.uuid))


def device_from_info(info) -> Device | None:
    """Turn a pychromecast CastInfo into a Device; None when it has no usable address."""
    try:
        ip = ipaddress.ip_address(str(info.host))
    except ValueError:
        return None
    model = safe_text(info.model_name or "unknown model")
    try:
        return Device(
            uuid=str(info.uuid),
            name=safe_text(info.friendly_name or "") or "(unnamed)",
            model=model,
            kind=kind_of(model),
            ip=ip,
            port=int(info.port),
        )
    except (TypeError, ValueError):
        return None


def _send_multicast_query(zc, zeroconf) -> None:
    out = zeroconf.DNSOutgoing(0)  # flags 0: a standard query
    out.add_question(zeroconf.DNSQuestion(SERVICE, 12, 1))  # PTR, class IN, QM
    zc.send(out)


def _no_http_polling(browser) -> None:
    # pychromecast's host browser (9.4 and 14.x alike) polls every announced
    # device over HTTP as soon as it starts, with a 30 s timeout, and
    # stop_discovery() waits for it. castwall needs only the announcements,
    # and must not hang on a device that does not answer: stop that thread
    # before it starts. Guarded, as it is not part of the documented API.
    stop = getattr(getattr(browser, "host_browser", None), "stop", None)
    if isinstance(stop, threading.Event):
        stop.set()


def discover(
    addresses: Sequence[str],
    timeout: float,
    *,
    expect: Collection[str] = (),
    rule: StopRule = StopRule(),
    clock: Callable[[], float] = time.monotonic,
) -> list[Device]:
    """Browse for Cast devices from the given local IPv4 addresses.

    expect holds the UUIDs of devices set up before: when all of them answer
    the first query, discovery ends without a second round.
    Raises NetworkUnavailable when mDNS cannot be started on them.
    """
    # Why two browsers, in this order: python-zeroconf's browser (which
    # pychromecast's uses) opens with a QU question, and a responder answers
    # QU by unicast to port 5353, which ufw's default deny drops; avahi even
    # drops its pending multicast answer then. So castwall asks with QM
    # questions only (multicast answers, which ufw's stock rules admit) and
    # watches the answers arrive. Once the first round has gone quiet it
    # starts pychromecast's browser, which finds the answers in zeroconf's
    # cache and sends its QU question with them as known answers, so no
    # responder needs to reply to it.
    import zeroconf
    from pychromecast.discovery import CastBrowser, SimpleCastListener

    activity = threading.Condition()
    names: set[str] = set()
    last_heard: float | None = None

    def on_record(zeroconf, service_type, name, state_change):  # zeroconf passes these by keyword
        nonlocal last_heard
        with activity:
            names.add(name)
            last_heard = clock()
            activity.notify_all()

    def on_cast(uuid, service):
        with activity:
            activity.notify_all()

    try:
        zc = zeroconf.Zeroconf(interfaces=list(addresses))
    except (OSError, zeroconf.Error) as exc:
        where = ", ".join(addresses)
        raise NetworkUnavailable(f"cannot start mDNS on {where}: {getattr(exc, 'strerror', None) or exc}") from None
    watcher = browser = None
    expected = {canonical_uuid(u) for u in expect}
    second_round = False
    try:
        start = clock()
        _send_multicast_query(zc, zeroconf)
        watcher = zeroconf.ServiceBrowser(zc, SERVICE, handlers=[on_record], question_type=zeroconf.DNSQuestionType.QM)
        with activity:
            while True:
                elapsed = clock() - start
                last = None if last_heard is None else last_heard - start
                if elapsed >= timeout:
                    break
                if browser is None and rule.quiet(elapsed, last, rule.first_quiet):
                    browser = CastBrowser(SimpleCastListener(add_callback=on_cast, update_callback=on_cast), zc)
                    _no_http_polling(browser)
                    browser.start_discovery()
                    harvest_end = elapsed + rule.harvest
                if not second_round and elapsed >= rule.requery:
                    _send_multicast_query(zc, zeroconf)
                    second_round = True
                if browser is not None:
                    found = {str(u) for u in dict(browser.devices)}
                    harvested = len(found) >= len(names) or elapsed >= harvest_end
                    if harvested and expected and expected <= found and not second_round:
                        break
                    if harvested and second_round and elapsed >= rule.requery + rule.answer_window \
                            and rule.quiet(elapsed, last, rule.settle):
                        break
                activity.wait(0.02)
        infos = list(dict(browser.devices).values()) if browser is not None else []
    finally:
        if watcher is not None:
            watcher.cancel()
        if browser is not None:
            browser.stop_discovery()  # also closes zc
        else:
            zc.close()
    return [d for d in map(device_from_info, infos) if d is not None]
