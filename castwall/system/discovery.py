"""Cast discovery over mDNS: the only module that imports pychromecast and zeroconf.

Uses only the API that pychromecast 9.4 (Debian 12) and 14.x share.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

from castwall.errors import NetworkUnavailable
from castwall.model import Device, Kind
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

    Responders answer a multicast query within about 120 ms, so once answers
    stop arriving for a while the LAN has answered. The quiet period grows with
    how late the last answer came, so a slow LAN gets more time; --timeout caps
    it all. With no answer at all, give up after empty_wait (which spans the
    browser's second query, sent about 1 s in).
    """

    settle: float = 0.25
    empty_wait: float = 1.5

    def done(self, elapsed: float, last_answer: float | None) -> bool:
        if last_answer is None:
            return elapsed >= self.empty_wait
        quiet = max(self.settle, last_answer / 2)
        return elapsed - last_answer >= quiet


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
    # python-zeroconf's browser opens with a QU question; responders answer it
    # by unicast to port 5353, which ufw's default deny drops. One QM question
    # first gets multicast answers, which ufw's stock rules let in. (Sent
    # before the browser starts: zeroconf suppresses a QM question it has just
    # heard asked, and it hears the browser's own QU question.)
    out = zeroconf.DNSOutgoing(0)  # flags 0: a standard query
    out.add_question(zeroconf.DNSQuestion(SERVICE, 12, 1))  # PTR, class IN
    zc.send(out)


def discover(
    addresses: Sequence[str],
    timeout: float,
    *,
    rule: StopRule = StopRule(),
    clock: Callable[[], float] = time.monotonic,
) -> list[Device]:
    """Browse for Cast devices from the given local IPv4 addresses.

    Raises NetworkUnavailable when mDNS cannot be started on them.
    """
    import zeroconf
    from pychromecast.discovery import CastBrowser, SimpleCastListener

    activity = threading.Condition()
    heard: list[float] = []

    def note(uuid, service):
        with activity:
            heard.append(clock())
            activity.notify()

    try:
        zc = zeroconf.Zeroconf(interfaces=list(addresses))
    except (OSError, zeroconf.Error) as exc:
        where = ", ".join(addresses)
        raise NetworkUnavailable(f"cannot start mDNS on {where}: {getattr(exc, 'strerror', None) or exc}") from None
    browser = CastBrowser(SimpleCastListener(add_callback=note, update_callback=note), zc)
    started = False
    try:
        start = clock()
        _send_multicast_query(zc, zeroconf)
        browser.start_discovery()
        started = True
        with activity:
            while True:
                elapsed = clock() - start
                last = heard[-1] - start if heard else None
                if elapsed >= timeout or rule.done(elapsed, last):
                    break
                activity.wait(0.02)
        infos = list(dict(browser.devices).values())
    finally:
        if started:
            browser.stop_discovery()  # also closes zc
        else:
            zc.close()
    return link_groups(d for d in map(device_from_info, infos) if d is not None)
