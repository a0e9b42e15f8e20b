"""Pure planning for follow mode: move, withdraw and restore the rules of the devices the user approved.

A pass never adds a device the user did not approve with setup. It moves a
device's rules to a new address only when the device is announced from that
one address, the address passes setup's screening and only the MAC recorded
at approval answers ARP for it. It withdraws a device's rules when another MAC
answers for their address, or when this computer is on another network than
the one the device was approved on, and brings them back when the device
answers there again. Withdrawing is always allowed; opening needs all the proofs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Collection, Mapping, Sequence

from castwall import apps
from castwall.model import Action, Address, Device, Kind, Lan, PortRange, Rule, State, Step, Tracking
from castwall.planner import device_rules

MAX_MOVES = 3  # moves within an hour; the next one stops following the device until setup
WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Event:
    """One line of a pass's report: what changed, or what was refused and why."""

    kind: str  # moved, withdrawn, restored, refused, stopped, new-device, note
    device: str | None  # the UUID, where the line is about one device
    text: str

    @property
    def change(self) -> bool:
        return self.kind in ("moved", "withdrawn", "restored", "stopped")


@dataclass(frozen=True)
class FollowPlan:
    steps: tuple[Step, ...]
    state: State  # the state to save once the steps are in place
    events: tuple[Event, ...]
    expected: frozenset[Rule]  # castwall's rules in ufw once the steps are in place

    @property
    def changes(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.change)


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=None)
    except ValueError:
        return None


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def lan_for(ip: Address, lans: Sequence[Lan]) -> Lan | None:
    """The network an address is on, among this computer's (None: reached through a router)."""
    return next((lan for lan in lans if ip.version == lan.subnet.version and ip in lan.subnet), None)


def approvals(previous: State | None, seen: Sequence[Device], owned: Sequence[Rule], lans: Sequence[Lan]) -> tuple[Tracking, ...]:
    """What follow mode keeps after a setup: a fresh approval for each device seen now that has rules.

    A fresh approval records the MAC and the network seen now and forgets
    earlier moves and a stop. Devices not seen now keep what they had, while
    they still have rules or are away.
    """
    owners = {r.owner for r in owned}
    out = {t.uuid: t for t in tracked(previous, ()).values() if t.uuid in owners or t.away or t.stopped}
    for d in seen:
        if d.uuid in owners:
            out[d.uuid] = Tracking(d.uuid, d.mac, lan_for(d.ip, lans))
    return tuple(sorted(out.values(), key=lambda t: t.uuid))


def tracked(state: State | None, owned: Sequence[Rule]) -> dict[str, Tracking]:
    """Every approved device: those follow mode keeps, and the owners of rules a castwall before follow mode wrote.

    For the latter, the MAC setup saved is the approved one, and the network is
    unknown (the next setup records it).
    """
    out = {t.uuid: t for t in (state.follow if state else ())}
    recorded = {r.owner for r in (state.rules if state else ())} | {r.owner for r in owned if r.owner}
    for uuid in sorted(u for u in recorded if u and u not in out):
        device = state.device(uuid) if state else None
        out[uuid] = Tracking(uuid, device.mac if device else None)
    return out


def lan_problem(t: Tracking, lans: Sequence[Lan]) -> str | None:
    """Why this computer is not on the network the device was approved on, or None."""
    if t.lan is None:
        return None
    here = [lan for lan in lans if lan.subnet == t.lan.subnet]
    if not here:
        return f"this computer has no address on {t.lan.subnet} now (approved on {t.lan})"
    now = here[0]
    same = now.gateway == t.lan.gateway and (t.lan.gateway_mac is None or now.gateway_mac == t.lan.gateway_mac)
    if same:
        return None
    return f"this computer is on another network ({now}), not the one it was approved on ({t.lan})"


def _verify(t: Tracking, ip: Address, answers: Mapping[Address, Collection[str]]) -> tuple[bool | None, str]:
    """Whether only the approved MAC answers ARP for ip: True, False (another MAC does), None (unknown)."""
    if t.mac is None:
        return None, "no MAC was recorded when you approved it (run 'sudo castwall setup' while it answers ARP)"
    macs = set(answers.get(ip, ()))
    if not macs:
        return None, f"nobody answers ARP for {ip}"
    if macs == {t.mac}:
        return True, f"{ip} is answered by its MAC {t.mac}"
    others = ", ".join(sorted(macs - {t.mac}))
    also = " as well as by its own" if t.mac in macs else f", not by its MAC {t.mac}"
    return False, f"ARP for {ip} is answered by {others}{also}"


def plan_follow(
    state: State,
    seen: Sequence[Device],
    refused: Mapping[str, str],
    firewall: Sequence[Rule],
    answers: Mapping[Address, Collection[str]],
    lans: Sequence[Lan],
    port_range: PortRange,
    now: datetime,
    profiles: Collection[str] = (),
) -> FollowPlan:
    """One follow pass: the steps, the state to save after them, and a line for each change and refusal.

    seen are the devices discovered now (screened: refused maps the UUIDs
    that screen() turned down to the reason, a contested device among them);
    firewall holds every rule of castwall's shape in ufw; answers maps
    addresses to the MACs that answered raw ARP for them just now (the
    tracked devices' addresses, old and new); lans are this computer's
    networks now. now is naive UTC.
    """
    owned = [r for r in firewall if r.owner]
    untagged = [r for r in firewall if r.owner is None]
    follow = tracked(state, owned)
    by_uuid = {d.uuid: d for d in seen}
    devices = {d.uuid: d for d in state.devices}
    events: list[Event] = []
    deletes: list[Step] = []
    adds: dict[str, list[Step]] = {}
    targets: dict[str, Address] = {}
    new_follow: dict[str, Tracking] = {}
    moved_to: dict[str, Address] = {}
    news: dict[str, Event] = {}  # moved and restored, said once the clash check lets them through

    def name(uuid: str) -> str:
        d = devices.get(uuid) or by_uuid.get(uuid)
        return d.name if d else f"device {uuid}"

    def withdraw(uuid: str, rules: Sequence[Rule], why: str, t: Tracking) -> Tracking:
        if rules:
            where = ", ".join(sorted({str(r.ip) for r in rules}))
            events.append(Event("withdrawn", uuid, f"withdrawn: {name(uuid)}'s rules for {where}: {why}"))
            deletes.extend(Step(Action.DELETE, r, f"withdrawn: {why}") for r in sorted(rules, key=Rule.sort_key))
        return replace(t, away=why)

    for uuid, t in sorted(follow.items(), key=lambda item: (name(item[0]).casefold(), item[0])):
        rules = [r for r in owned if r.owner == uuid]
        if t.stopped:
            new_follow[uuid] = t
            continue
        problem = lan_problem(t, lans)
        if problem:
            new_follow[uuid] = withdraw(uuid, rules, problem, t)
            continue
        recorded = devices.get(uuid)
        home = next((r.ip for r in rules if r.is_dial), rules[0].ip if rules else (recorded.ip if recorded else None))
        s = by_uuid.get(uuid)
        target = None
        if s is not None and any(ip != home for ip in s.addresses) and (uuid in refused or s.also_at):
            # Announced from two addresses (a clone or a spoof), or refused by setup's screening: no move.
            where = " and ".join(str(ip) for ip in s.addresses)
            events.append(Event("refused", uuid, f"not moved: {name(uuid)} is announced from {where}, but "
                                                 f"{refused.get(uuid) or s.contested or 'from more than one address'}"))
        elif s is not None and s.ip != home:
            ok, why = _verify(t, s.ip, answers)
            problems = [] if ok is True else [why]
            if not problems:
                recent = [m for m in t.moves if (when := _parse_time(m)) is not None and now - when < WINDOW]
                if len(recent) >= MAX_MOVES:
                    why = (f"it moved {len(recent) + 1} times within an hour (now to {s.ip}); follow mode stops moving it "
                           "until you run 'sudo castwall setup'")
                    events.append(Event("stopped", uuid, f"stopped following {name(uuid)}: {why}"))
                    away = withdraw(uuid, rules, "follow stopped: it moves too often", t)
                    new_follow[uuid] = replace(away, stopped=why, moves=tuple(recent))
                    continue
                target = s.ip
                moved_to[uuid] = s.ip
                new_follow[uuid] = replace(t, away=None, moves=tuple(recent) + (_stamp(now),))
            else:
                events.append(Event("refused", uuid, f"not moved: {name(uuid)} is announced from {s.ip}, but "
                                                     + "; ".join(problems)))
        if target is None and home is not None:
            ok, why = _verify(t, home, answers)
            if ok is False:
                new_follow[uuid] = withdraw(uuid, rules, f"{why}; its rules return when it answers there again", t)
                continue
            if ok is None:
                new_follow[uuid] = t  # nobody answers, or no MAC to check: leave its rules as they are
                continue
            target = home
            new_follow[uuid] = replace(t, away=None)
        if target is None:
            new_follow[uuid] = t
            continue
        targets[uuid] = target
        stale = [r for r in rules if r.ip != target]
        here = [r for r in rules if r.ip == target]
        deletes.extend(Step(Action.DELETE, r, f"{name(uuid)} moved from {r.ip} to {target}") for r in sorted(stale, key=Rule.sort_key))
        jobs = {apps.purpose(r) for r in here}
        wanted = [w for w in device_rules(target, uuid, port_range, state.apps, profiles) if apps.purpose(w) not in jobs]
        wanted = [w for w in wanted if not any(u.covers(w) for u in untagged)]
        if uuid in moved_to:
            old = f" from {home}" if home is not None else ""
            news[uuid] = Event("moved", uuid, f"moved: {name(uuid)}{old} to {target} (announced there alone, "
                                              f"and only its MAC {t.mac} answers ARP there)")
        elif wanted and (t.away or not rules):
            before = "it was away" if t.away else "its rules were missing from ufw"
            news[uuid] = Event("restored", uuid, f"restored: {name(uuid)} at {target}, where only its MAC {t.mac} "
                                                 f"answers ARP ({before})")
        if wanted or uuid in moved_to:
            reason = f"{name(uuid)} moved to {target}" if uuid in moved_to else f"{name(uuid)} answers at {target} again"
            adds[uuid] = [Step(Action.ADD, w, reason) for w in wanted]

    # ufw holds one rule per address and traffic: an address that keeps another device's rules cannot take these.
    deleted = {s.rule for s in deletes}
    remaining = [r for r in owned if r not in deleted]
    steps = list(deletes)
    for uuid, planned in adds.items():
        clash = next((r for r in remaining if r.owner != uuid and any(r.same_traffic(s.rule) for s in planned)), None)
        if clash is not None:
            why = f"{targets[uuid]} holds the rules of {name(clash.owner)}"
            events.append(Event("refused", uuid, f"not moved: {name(uuid)} to {targets[uuid]}: {why}"))
            new_follow[uuid] = replace(new_follow[uuid], away=why, moves=follow[uuid].moves)
            moved_to.pop(uuid, None)
            continue
        steps.extend(planned)
        if uuid in news:
            events.append(news[uuid])
    for d in seen:
        if d.uuid in follow or (d.kind is Kind.GROUP and d.ip in targets.values()):
            continue
        extra = f" (castwall would refuse it: {refused[d.uuid]})" if d.uuid in refused else ""
        events.append(Event("new-device", d.uuid, f"new device: {d.name} at {d.ip} is not approved: "
                                                  f"run 'sudo castwall setup' to allow it{extra}"))
    expected = frozenset([r for r in owned if r not in deleted] + [s.rule for s in steps if s.action is Action.ADD])
    new_devices = tuple(replace(d, ip=moved_to[d.uuid], also_at=()) if d.uuid in moved_to else d for d in state.devices)
    saved = replace(state, devices=new_devices, rules=tuple(sorted(expected, key=Rule.sort_key)), written=_stamp(now),
                    follow=tuple(sorted(new_follow.values(), key=lambda t: t.uuid)))
    return FollowPlan(tuple(steps), saved, tuple(events), expected)
