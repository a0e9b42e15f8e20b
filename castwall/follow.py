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

_DONE = object()  # _Pass._announced_elsewhere: the pass has nothing more to do for this device
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
    p = _Pass(state, seen, refused, firewall, answers, lans, port_range, now, profiles)
    for uuid, t in sorted(p.follow.items(), key=lambda item: (p.name(item[0]).casefold(), item[0])):
        p.follow_device(uuid, t)
    return p.result()


class _Pass:
    """One follow pass under way: what it was given, and the steps, lines and records it gathers, device by device."""

    def __init__(self, state: State, seen: Sequence[Device], refused: Mapping[str, str], firewall: Sequence[Rule],
                 answers: Mapping[Address, Collection[str]], lans: Sequence[Lan], port_range: PortRange, now: datetime,
                 profiles: Collection[str]):
        self.state, self.seen, self.refused, self.answers = state, seen, refused, answers
        self.lans, self.port_range, self.now, self.profiles = lans, port_range, now, profiles
        self.owned = [r for r in firewall if r.owner]
        self.untagged = [r for r in firewall if r.owner is None]
        self.follow = tracked(state, self.owned)
        self.by_uuid = {d.uuid: d for d in seen}
        self.devices = {d.uuid: d for d in state.devices}
        self.by_mac: dict[str, list[str]] = {}
        for t in self.follow.values():
            if t.mac:
                self.by_mac.setdefault(t.mac, []).append(t.uuid)
        self.events: list[Event] = []
        self.withdrawals: list[Step] = []
        self.moves: dict[str, tuple[list[Step], list[Step], Event | None]] = {}  # uuid -> (stale deletes, adds, its line)
        self.targets: dict[str, Address] = {}
        self.new_follow: dict[str, Tracking] = {}

    def name(self, uuid: str) -> str:
        d = self.devices.get(uuid) or self.by_uuid.get(uuid)
        return d.name if d else f"device {uuid}"

    def withdraw(self, uuid: str, rules: Sequence[Rule], why: str) -> None:
        if rules:
            where = ", ".join(sorted({str(r.ip) for r in rules}))
            self.events.append(Event("withdrawn", uuid, f"withdrawn: {self.name(uuid)}'s rules for {where}: {why}"))
            self.withdrawals.extend(Step(Action.DELETE, r, f"withdrawn: {why}") for r in sorted(rules, key=Rule.sort_key))

    def follow_device(self, uuid: str, t: Tracking) -> None:
        """Where this device's rules belong now, if anywhere this pass can prove, and what it takes to put them there."""
        rules = [r for r in self.owned if r.owner == uuid]
        self.new_follow[uuid] = t
        if t.stopped:
            return
        problem = lan_problem(t, self.lans)
        if problem:
            self.withdraw(uuid, rules, problem)
            self.new_follow[uuid] = replace(t, away=problem)
            return
        shared = next((self.name(u) for u in self.by_mac.get(t.mac, ()) if u != uuid), None)
        recorded = self.devices.get(uuid)
        home = next((r.ip for r in rules if r.is_dial), rules[0].ip if rules else (recorded.ip if recorded else None))
        target = self._announced_elsewhere(uuid, t, rules, home, shared)
        if target is _DONE:
            return
        moved = target is not None
        if target is None:
            target = self._at_home(uuid, t, rules, home, shared)
            if target is None:
                return
        self._schedule(uuid, t, rules, target, moved, home, recorded)

    def _announced_elsewhere(self, uuid: str, t: Tracking, rules: list[Rule], home: Address | None,
                             shared: str | None) -> Address | None | object:
        """The new address, if it may take the device's rules; None to check it at home; _DONE: nothing more to do."""
        s = self.by_uuid.get(uuid)
        if s is not None and any(ip != home for ip in s.addresses) and (uuid in self.refused or s.also_at):
            # Announced from two addresses (a clone or a spoof), or refused by setup's screening: no move.
            where = " and ".join(str(ip) for ip in s.addresses)
            self.events.append(Event("refused", uuid, f"not moved: {self.name(uuid)} is announced from {where}, but "
                                     f"{self.refused.get(uuid) or s.contested or 'from more than one address'}"))
            return None
        if s is None or s.ip == home:
            return None
        ok, why = _verify(t, s.ip, self.answers, shared)
        if ok is True:
            recent = recent_moves(t, self.now)
            if len(recent) >= MAX_MOVES:
                why = (f"it moved {len(recent) + 1} times within an hour (now to {s.ip}); follow mode withdraws its "
                       "rules and stops following it until you run 'sudo castwall setup'")
                self.events.append(Event("stopped", uuid, f"stopped following {self.name(uuid)}: {why}"))
                self.withdraw(uuid, rules, "follow mode stopped following it: it moves too often")
                self.new_follow[uuid] = replace(t, away="it moves too often", stopped=why, moves=recent)
                return _DONE
            self.new_follow[uuid] = replace(t, away=None, moves=recent + (_stamp(self.now),))
            return s.ip
        self.events.append(Event("refused", uuid, f"not moved: {self.name(uuid)} is announced from {s.ip}, but {why}"))
        if rules and t.mac is None:
            # Its MAC cannot be checked anywhere; it says it is elsewhere: its old address is not its own.
            self.withdraw(uuid, rules, f"it is announced from {s.ip} alone now, and without a recorded MAC "
                                       "castwall cannot follow it")
            self.new_follow[uuid] = replace(t, away=f"announced from {s.ip}; no MAC recorded to follow it by")
            return _DONE
        return None

    def _at_home(self, uuid: str, t: Tracking, rules: list[Rule], home: Address | None,
                 shared: str | None) -> Address | None:
        """Home, where only the device's MAC answers there; on the way, rules withdrawn where another MAC answers."""
        # Check every address that holds its rules (an interrupted pass may have left two), then where it was.
        addresses = sorted({r.ip for r in rules} | ({home} if home else set()), key=lambda ip: (ip.version, int(ip)))
        verdicts = {ip: _verify(t, ip, self.answers, shared) for ip in addresses}
        for ip, (ok, why) in verdicts.items():
            if ok is False:  # another MAC answers there: away, and the rules there (if any) go
                self.withdraw(uuid, [r for r in rules if r.ip == ip], f"{why}; its rules return when it answers there again")
                self.new_follow[uuid] = replace(t, away=why)
        if home is None or verdicts[home][0] is not True:
            return None
        self.new_follow[uuid] = replace(self.new_follow[uuid], away=None)
        return home

    def _schedule(self, uuid: str, t: Tracking, rules: list[Rule], target: Address, moved: bool, home: Address | None,
                  recorded: Device | None) -> None:
        """The steps that put the device's rules at target, and the line that says so."""
        self.targets[uuid] = target
        name = self.name(uuid)
        stale = [Step(Action.DELETE, r, f"{name} moved from {r.ip} to {target}")
                 for r in sorted(rules, key=Rule.sort_key) if r.ip != target]
        jobs = {apps.purpose(r) for r in rules if r.ip == target}
        wanted = [w for w in device_rules(target, uuid, self.port_range, self.state.apps, self.profiles)
                  if apps.purpose(w) not in jobs]
        wanted = [w for w in wanted if not any(u.covers(w) for u in self.untagged)]
        adds = [Step(Action.ADD, w, f"{name} moved to {target}" if moved else f"{name} answers at {target}")
                for w in wanted]
        line = None
        if moved:
            old = f" from {home}" if home is not None else ""
            line = Event("moved", uuid, f"moved: {name}{old} to {target} (announced there alone, and only its MAC "
                                        f"{t.mac} answers ARP there)")
        elif adds or stale:
            before = ("it was away" if t.away else "an interrupted pass left its rules at two addresses" if stale
                      else "an interrupted pass had begun to move it" if recorded and recorded.ip != target
                      else "its rules were missing from ufw")
            line = Event("restored", uuid, f"restored: {name} at {target}, where only its MAC {t.mac} answers ARP "
                                           f"({before})")
        if stale or adds:
            self.moves[uuid] = (stale, adds, line)

    def result(self) -> FollowPlan:
        """The pass's plan: withdrawals, then each move unless its address holds another device's rules."""
        # One rule per address and traffic: an address that keeps another device's rules cannot take these.
        deleted = {s.rule for s in self.withdrawals} | {s.rule for stale, _, _ in self.moves.values() for s in stale}
        steps = list(self.withdrawals)
        added: list[Step] = []
        for uuid, (stale, adds, line) in self.moves.items():
            steps.extend(stale)
            clash = next((r for r in self.owned if r not in deleted and r.owner != uuid
                          and any(r.same_traffic(a.rule) for a in adds)), None)
            if clash is not None:
                self._clash(uuid, stale, clash)
                continue
            added.extend(adds)
            if line is not None:
                self.events.append(line)
        steps.extend(added)
        self._new_devices()
        expected = frozenset([r for r in self.owned if r not in deleted] + [s.rule for s in added])
        new_devices = tuple(replace(d, ip=self.targets[d.uuid], also_at=()) if d.uuid in self.targets else d
                            for d in self.state.devices)
        saved = replace(self.state, devices=new_devices, rules=tuple(sorted(expected, key=Rule.sort_key)),
                        written=_stamp(self.now), follow=tuple(sorted(self.new_follow.values(), key=lambda t: t.uuid)))
        return FollowPlan(tuple(steps), saved, tuple(self.events), expected)

    def _clash(self, uuid: str, stale: list[Step], clash: Rule) -> None:
        """The device's rules cannot go to its target, which holds clash, another device's rule."""
        target = self.targets.pop(uuid)
        why = f"{target} holds the rules of {self.name(clash.owner)}"
        if stale:
            self.events.append(Event("withdrawn", uuid, f"withdrawn: {self.name(uuid)}'s rules for "
                                     f"{', '.join(sorted({str(s.rule.ip) for s in stale}))}: it answers at {target} now, "
                                     f"but {why}"))
        else:
            self.events.append(Event("refused", uuid, f"not restored: {self.name(uuid)} at {target}: {why}"))
        self.new_follow[uuid] = replace(self.new_follow[uuid], away=why, moves=self.follow[uuid].moves)

    def _new_devices(self) -> None:
        """A line for each device seen that nobody approved (a group at an address a device is followed to is covered)."""
        for d in self.seen:
            if d.uuid in self.follow or (d.kind is Kind.GROUP and d.ip in self.targets.values()):
                continue
            extra = f" (castwall would refuse it: {self.refused[d.uuid]})" if d.uuid in self.refused else ""
            self.events.append(Event("new-device", d.uuid, f"new device: {d.name} at {d.ip} is not approved: "
                                                           f"run 'sudo castwall setup' to allow it{extra}"))
