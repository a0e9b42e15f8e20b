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
from datetime import datetime, timedelta, timezone
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
    expected: frozenset[Rule]  # castwall's rules in the firewall once the steps are in place

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


def recent_moves(t: Tracking, now: datetime) -> tuple[str, ...]:
    """When follow mode moved the device within the hour before now (naive UTC, or aware)."""
    naive = now if now.tzinfo is None else now.astimezone(timezone.utc).replace(tzinfo=None)
    return tuple(m for m in t.moves if (when := _parse_time(m)) is not None and naive - when < WINDOW)


def lan_for(ip: Address, lans: Sequence[Lan]) -> Lan | None:
    """The network an address is on, among this computer's (None: reached through a router)."""
    return next((lan for lan in lans if ip in lan.subnet), None)  # an address is never in another version's network


def approvals(previous: State | None, seen: Sequence[Device], owned: Sequence[Rule], lans: Sequence[Lan]) -> tuple[Tracking, ...]:
    """What follow mode keeps after a setup: a fresh approval for each device seen now that has rules.

    A fresh approval records the MAC and the network seen now and forgets
    earlier moves and a stop. Devices not seen now keep what they had, while
    they still have rules or are away.
    """
    owners = {r.owner for r in owned}
    before = tracked(previous, ())
    out = {t.uuid: t for t in before.values() if t.uuid in owners or t.away or t.stopped}
    for d in seen:
        if d.uuid in owners:  # an ARP answer missed now does not forget the MAC approved before
            old = before.get(d.uuid)
            out[d.uuid] = Tracking(d.uuid, d.mac or (old.mac if old else None), lan_for(d.ip, lans))
    return tuple(sorted(out.values(), key=lambda t: t.uuid))


def tracked(state: State | None, owned: Sequence[Rule]) -> dict[str, Tracking]:
    """Every approved device: those follow mode keeps, and the owners of rules a castwall before follow mode wrote.

    For the latter, the MAC setup saved is the approved one, and the network is
    unknown (the next setup records it).
    """
    out = {t.uuid: t for t in (state.follow if state else ())}
    recorded = {r.owner for r in (state.rules if state else ())} | {r.owner for r in owned if r.owner}
    for uuid in sorted(u for u in recorded if u not in out):
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
    for now in here:  # two interfaces may be on the subnet: one that matches is enough
        if now.gateway == t.lan.gateway and (t.lan.gateway_mac is None or now.gateway_mac == t.lan.gateway_mac):
            return None
    return f"this computer is on another network ({here[0]}), not the one it was approved on ({t.lan})"


def _verify(t: Tracking, ip: Address, answers: Mapping[Address, Collection[str]], shared: str | None = None) -> tuple[bool | None, str]:
    """Whether only the approved MAC answers ARP for ip: True, False (another MAC does), None (unknown).

    shared names another approved device with the same MAC (a repeater that
    rewrites MACs, say): ARP then cannot prove which of them answers.
    """
    macs = set(answers.get(ip, ()))
    if t.mac is None:
        return None, "no MAC was recorded when you approved it (run 'sudo castwall setup' while it answers ARP)"
    if not macs:
        return None, f"nobody answers ARP for {ip}"
    if macs == {t.mac}:
        if shared:
            return None, f"its MAC {t.mac} is also {shared}'s, so ARP cannot tell which of them answers"
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
    firewall holds every rule of castwall's shape in the firewall; answers maps
    addresses to the MACs that answered raw ARP for them just now (every
    address that holds a tracked device's rules or where one is seen); lans
    are this computer's networks now. now is naive UTC.
    """
    owned = [r for r in firewall if r.owner]
    untagged = [r for r in firewall if r.owner is None]
    follow = tracked(state, owned)
    by_uuid = {d.uuid: d for d in seen}
    devices = {d.uuid: d for d in state.devices}
    by_mac: dict[str, list[str]] = {}
    for t in follow.values():
        if t.mac:
            by_mac.setdefault(t.mac, []).append(t.uuid)
    events: list[Event] = []
    withdrawals: list[Step] = []
    moves: dict[str, tuple[list[Step], list[Step], Event | None]] = {}  # uuid -> (stale deletes, adds, its line)
    targets: dict[str, Address] = {}
    new_follow: dict[str, Tracking] = {}

    def name(uuid: str) -> str:
        d = devices.get(uuid) or by_uuid.get(uuid)
        return d.name if d else f"device {uuid}"

    def withdraw(uuid: str, rules: Sequence[Rule], why: str) -> None:
        if rules:
            where = ", ".join(sorted({str(r.ip) for r in rules}))
            events.append(Event("withdrawn", uuid, f"withdrawn: {name(uuid)}'s rules for {where}: {why}"))
            withdrawals.extend(Step(Action.DELETE, r, f"withdrawn: {why}") for r in sorted(rules, key=Rule.sort_key))

    for uuid, t in sorted(follow.items(), key=lambda item: (name(item[0]).casefold(), item[0])):
        rules = [r for r in owned if r.owner == uuid]
        new_follow[uuid] = t
        if t.stopped:
            continue
        problem = lan_problem(t, lans)
        if problem:
            withdraw(uuid, rules, problem)
            new_follow[uuid] = replace(t, away=problem)
            continue
        shared = next((name(u) for u in by_mac.get(t.mac, ()) if u != uuid), None)
        recorded = devices.get(uuid)
        home = next((r.ip for r in rules if r.is_dial), rules[0].ip if rules else (recorded.ip if recorded else None))
        s = by_uuid.get(uuid)
        target = None
        moved = False
        if s is not None and any(ip != home for ip in s.addresses) and (uuid in refused or s.also_at):
            # Announced from two addresses (a clone or a spoof), or refused by setup's screening: no move.
            where = " and ".join(str(ip) for ip in s.addresses)
            events.append(Event("refused", uuid, f"not moved: {name(uuid)} is announced from {where}, but "
                                                 f"{refused.get(uuid) or s.contested or 'from more than one address'}"))
        elif s is not None and s.ip != home:
            ok, why = _verify(t, s.ip, answers, shared)
            if ok is True:
                recent = recent_moves(t, now)
                if len(recent) >= MAX_MOVES:
                    why = (f"it moved {len(recent) + 1} times within an hour (now to {s.ip}); follow mode withdraws its "
                           "rules and stops following it until you run 'sudo castwall setup'")
                    events.append(Event("stopped", uuid, f"stopped following {name(uuid)}: {why}"))
                    withdraw(uuid, rules, "follow mode stopped following it: it moves too often")
                    new_follow[uuid] = replace(t, away="it moves too often", stopped=why, moves=recent)
                    continue
                target, moved = s.ip, True
                new_follow[uuid] = replace(t, away=None, moves=recent + (_stamp(now),))
            else:
                events.append(Event("refused", uuid, f"not moved: {name(uuid)} is announced from {s.ip}, but {why}"))
                if rules and t.mac is None:
                    # Its MAC cannot be checked anywhere; it says it is elsewhere: its old address is not its own.
                    withdraw(uuid, rules, f"it is announced from {s.ip} alone now, and without a recorded MAC "
                                          "castwall cannot follow it")
                    new_follow[uuid] = replace(t, away=f"announced from {s.ip}; no MAC recorded to follow it by")
                    continue
        if target is None:
            # Check every address that holds its rules (an interrupted pass may have left two), then where it was.
            verdicts = {ip: _verify(t, ip, answers, shared) for ip in sorted({r.ip for r in rules} | ({home} if home else set()),
                                                                               key=lambda ip: (ip.version, int(ip)))}
            for ip, (ok, why) in verdicts.items():
                if ok is False:  # another MAC answers there: away, and the rules there (if any) go
                    withdraw(uuid, [r for r in rules if r.ip == ip], f"{why}; its rules return when it answers there again")
                    new_follow[uuid] = replace(t, away=why)
            if home is None or verdicts[home][0] is not True:
                continue
            target = home
            new_follow[uuid] = replace(new_follow[uuid], away=None)
        targets[uuid] = target
        stale = [Step(Action.DELETE, r, f"{name(uuid)} moved from {r.ip} to {target}")
                 for r in sorted(rules, key=Rule.sort_key) if r.ip != target]
        jobs = {apps.purpose(r) for r in rules if r.ip == target}
        wanted = [w for w in device_rules(target, uuid, port_range, state.apps, profiles) if apps.purpose(w) not in jobs]
        wanted = [w for w in wanted if not any(u.covers(w) for u in untagged)]
        adds = [Step(Action.ADD, w, f"{name(uuid)} moved to {target}" if moved else f"{name(uuid)} answers at {target}")
                for w in wanted]
        line = None
        if moved:
            old = f" from {home}" if home is not None else ""
            line = Event("moved", uuid, f"moved: {name(uuid)}{old} to {target} (announced there alone, and only its MAC "
                                        f"{t.mac} answers ARP there)")
        elif adds or stale:
            before = ("it was away" if t.away else "an interrupted pass left its rules at two addresses" if stale
                      else "an interrupted pass had begun to move it" if recorded and recorded.ip != target
                      else "its rules were missing from ufw")
            line = Event("restored", uuid, f"restored: {name(uuid)} at {target}, where only its MAC {t.mac} answers ARP "
                                           f"({before})")
        if stale or adds:
            moves[uuid] = (stale, adds, line)

    # One rule per address and traffic: an address that keeps another device's rules cannot take these.
    deleted = {s.rule for s in withdrawals} | {s.rule for stale, _, _ in moves.values() for s in stale}
    steps = list(withdrawals)
    added: list[Step] = []
    for uuid, (stale, adds, line) in moves.items():
        steps.extend(stale)
        clash = next((r for r in owned if r not in deleted and r.owner != uuid and any(r.same_traffic(a.rule) for a in adds)), None)
        if clash is not None:
            why = f"{targets[uuid]} holds the rules of {name(clash.owner)}"
            if stale:
                events.append(Event("withdrawn", uuid, f"withdrawn: {name(uuid)}'s rules for "
                                                       f"{', '.join(sorted({str(s.rule.ip) for s in stale}))}: it answers at "
                                                       f"{targets[uuid]} now, but {why}"))
            else:
                events.append(Event("refused", uuid, f"not restored: {name(uuid)} at {targets[uuid]}: {why}"))
            new_follow[uuid] = replace(new_follow[uuid], away=why, moves=follow[uuid].moves)
            targets.pop(uuid)
            continue
        added.extend(adds)
        if line is not None:
            events.append(line)
    steps.extend(added)
    for d in seen:
        if d.uuid in follow or (d.kind is Kind.GROUP and d.ip in targets.values()):
            continue
        extra = f" (castwall would refuse it: {refused[d.uuid]})" if d.uuid in refused else ""
        events.append(Event("new-device", d.uuid, f"new device: {d.name} at {d.ip} is not approved: "
                                                  f"run 'sudo castwall setup' to allow it{extra}"))
    expected = frozenset([r for r in owned if r not in deleted] + [s.rule for s in added])
    new_devices = tuple(replace(d, ip=targets[d.uuid], also_at=()) if d.uuid in targets else d for d in state.devices)
    saved = replace(state, devices=new_devices, rules=tuple(sorted(expected, key=Rule.sort_key)), written=_stamp(now),
                    follow=tuple(sorted(new_follow.values(), key=lambda t: t.uuid)))
    return FollowPlan(tuple(steps), saved, tuple(events), expected)
