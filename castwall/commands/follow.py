"""castwall follow: run one pass (follow run), turn the systemd timer on or off, and say how it stands."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timezone

import click

from castwall import render
from castwall.apply import deferred_signals, placed, run_transaction
from castwall.commands.change import firewall_for, nothing_filters, save_state, timestamp
from castwall.commands.services import Services, progress, warn
from castwall.commands.survey import take_survey
from castwall.errors import BadData, CastwallError, MissingTool, NeedRoot, NetworkUnavailable, ToolFailed
from castwall.follow import Event, FollowPlan, plan_follow, recent_moves, tracked
from castwall.model import Rule
from castwall.system import host
from castwall.system.gateway import default_routes, lans_of
from castwall.system.neighbours import ask_arp
from castwall.system.sysctl import read_port_range
from castwall.system.systemd import Systemd
from castwall.system.ufw import installed_profiles


def say(event: Event | str) -> None:
    """One line on standard output: under systemd, one line in the journal (identifier castwall)."""
    click.echo(f"castwall follow: {event.text if isinstance(event, Event) else event}")


def run_pass(svc: Services, interfaces: tuple[str, ...], timeout: float) -> None:
    """One follow pass, as the service runs it: non-interactive, all or nothing, recorded for status."""
    recorded, _ = host.read_state(svc.paths.state_file)
    _, firewall = firewall_for(svc, False, "follow run changes the firewall and needs root: run 'sudo castwall follow run'",
                               recorded, prefer_recorded=True)
    if firewall is None:
        say(f"{nothing_filters()}; nothing to follow")
        return
    # A pass that cannot start (no root, no ufw, another run holds the lock) is no pass: the record keeps the last one.
    with host.run_lock(svc.paths.lock_file, wait=svc.lock_wait, notify=progress):
        started = timestamp(svc)
        events: list[Event] = []
        try:
            _pass(svc, firewall, interfaces, timeout, events)
        except CastwallError as exc:
            _record(svc, started, int(exc.exit_code), [e for e in events if not e.change], exc.message)
            raise
        _record(svc, started, 0, events, None)


def _pass(svc: Services, firewall, interfaces: tuple[str, ...], timeout: float, events: list[Event]) -> None:
    """One pass under the lock; events gets its lines (the changes only once they are in place)."""
    state, problem = host.read_state(svc.paths.state_file)
    if problem:
        raise BadData(f"{problem}; follow mode changes nothing until 'sudo castwall setup' rebuilds the state file")
    firewall.sync()  # what a run cut short left between the firewall's live and kept rules
    ruleset = firewall.rules()
    if state is None or not tracked(state, ruleset.owned):
        say("no device is approved yet; nothing to follow (run 'sudo castwall setup')")
        return
    port_range = read_port_range(svc.paths.port_range)
    profiles, _ = installed_profiles(svc.paths.ufw_profiles) if firewall.name == "ufw" else (frozenset(), None)
    try:
        # As setup does, ask twice: a pass must hear every announcement, an impostor's and a new device's too.
        survey = take_survey(svc, interfaces, timeout, True, known=state, check_claims=True)
        seen, refused, chosen = survey.devices, survey.refused, survey.interfaces
    except NetworkUnavailable as exc:  # off every network: every rule that checks its network goes
        say(f"no network: {exc.message}")
        seen, refused, chosen = [], {}, []
    # One raw ARP question for everything: the devices' addresses, old and new, and the gateways.
    routes = default_routes(svc.runner) if chosen else {}
    follow = tracked(state, ruleset.owned)
    ips = {r.ip for r in ruleset.owned} | {d.ip for d in state.devices if d.uuid in follow}
    ips |= {d.ip for d in seen if d.uuid in follow} | set(routes.values())
    answers, warning = ask_arp(sorted(ips, key=lambda ip: (ip.version, int(ip))), chosen, svc.raw_arp) if chosen else ({}, None)
    if warning:
        warn(warning)
    lans = lans_of(chosen, routes, answers)
    svc.note(f"follow: {len(follow)} approved device(s), {len(seen)} seen, networks: {', '.join(map(str, lans)) or 'none'}")
    now = svc.now().astimezone(timezone.utc).replace(tzinfo=None)
    plan = plan_follow(state, seen, refused, ruleset.rules, answers, lans, port_range, now, profiles)
    for event in plan.events:  # refusals and new devices now; changes once they are in place
        if not event.change:
            say(event)
    events.extend(e for e in plan.events if not e.change)
    if plan.steps:
        _apply(svc, firewall, plan, ruleset.order)
        for event in plan.changes:
            say(event)
        events.extend(plan.changes)
        say(f"{len(plan.steps)} {firewall.name} change(s) applied and verified")
    else:
        if replace(plan.state, written=None) != replace(state, written=None):
            save_state(svc, plan.state, None)
        for event in plan.changes:  # a change of the state alone (a device stopped, or away, with no rule left)
            say(event)
        events.extend(plan.changes)
        say(f"nothing to change ({len(follow)} approved device(s))")


def _apply(svc: Services, firewall, plan: FollowPlan, order) -> None:
    def finish() -> None:
        after = frozenset(firewall.rules().owned)
        if after != plan.expected:
            missing = sorted(plan.expected - after, key=Rule.sort_key)
            extra = sorted(after - plan.expected, key=Rule.sort_key)
            parts = [f"missing {r.traffic} from {r.ip}" for r in missing] + [f"unexpected {r.traffic} from {r.ip}" for r in extra]
            raise ToolFailed(f"{firewall.name} does not show the expected rules afterwards: " + "; ".join(parts))
        save_state(svc, plan.state, None)

    with deferred_signals() as interrupted, svc.timed(f"follow: {len(plan.steps)} step(s) through {firewall.path}"):
        run_transaction(firewall, placed(plan.steps, order), finish=finish, interrupted=interrupted, progress=progress)


def _record(svc: Services, started: str, code: int, events: list[Event], error: str | None) -> None:
    """Keep the last pass for status: a failure to write it is a warning, never the pass's result."""
    doc = {
        "started": started,
        "finished": timestamp(svc),
        "exit": code,
        "error": error,
        "changes": [e.text for e in events if e.change],
        "refusals": [e.text for e in events if e.kind == "refused"],
        "new_devices": [e.text for e in events if e.kind == "new-device"],
    }
    try:
        host.write_file(svc.paths.follow_record, json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        if svc.is_root():
            warn(f"cannot write {svc.paths.follow_record}: {exc.strerror or exc}")


def last_pass(svc: Services) -> dict | None:
    """The last follow pass as recorded, or None (never run, or the record is unreadable)."""
    try:
        doc = json.loads(svc.paths.follow_record.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("exit"), int):
        return None
    for key in ("changes", "refusals", "new_devices"):
        if not isinstance(doc.get(key, []), list):
            return None
    return doc


def enable(svc: Services) -> None:
    _need_root(svc, "enable")
    systemd = Systemd(svc.runner, svc.paths.systemd_booted)
    units = systemd.units()
    if not units.systemd or not units.installed:
        raise MissingTool(f"follow mode needs systemd and castwall's units: follow mode is {units.describe()}; "
                          "without them, run 'sudo castwall follow run' from your own scheduler")
    state, problem = host.read_state(svc.paths.state_file)
    first = systemd.enable()
    if first:
        warn(f"the timer is on, but the first pass could not be started now ({first}); it runs within 5 minutes")
    click.echo("Follow mode is on: castwall-follow.timer runs a pass now and every 5 minutes, and whenever this "
               "computer joins a network. Each change is a line in the journal: journalctl -t castwall")
    if problem:
        warn(f"{problem}; passes change nothing until 'sudo castwall setup' rebuilds it")
    elif state is None or not tracked(state, ()):
        warn("no device is approved yet: follow mode only follows devices that 'sudo castwall setup' allowed")


def disable(svc: Services, quiet_if_off: bool = False) -> bool:
    """Turn the timer off; True when it was on. With quiet_if_off, no error where there is nothing to turn off."""
    if not quiet_if_off:
        _need_root(svc, "disable")
    systemd = Systemd(svc.runner, svc.paths.systemd_booted)
    units = systemd.units()
    if not units.systemd or not units.installed:
        if quiet_if_off:
            return False
        raise MissingTool(f"follow mode is {units.describe()}; there is nothing to turn off")
    if not units.enabled and not units.active:
        if not quiet_if_off:
            click.echo("Follow mode is already off.")
        return False
    systemd.disable()
    if not quiet_if_off:
        click.echo("Follow mode is off. The rules stay where the last pass left them: 'castwall status' shows them, "
                   "'sudo castwall remove --all' removes them.")
    return True


def _need_root(svc: Services, verb: str) -> None:
    if not svc.is_root():
        raise NeedRoot(f"follow {verb} changes systemd units and needs root: run 'sudo castwall follow {verb}'")


def report(svc: Services, read=None) -> dict:
    """How follow mode stands, for follow status and status: units, last pass, each approved device.

    read is host.read_state's answer where the caller has it already (status).
    """
    units = Systemd(svc.runner, svc.paths.systemd_booted).units()
    state, problem = read if read is not None else host.read_state(svc.paths.state_file)
    follow = tracked(state, ()) if state else {}
    devices = []
    for uuid, t in sorted(follow.items()):
        d = state.device(uuid) if state else None
        devices.append({
            "uuid": uuid, "name": d.name if d else None, "ip": str(d.ip) if d else None, "mac": t.mac,
            "lan": None if t.lan is None else str(t.lan),
            "status": "stopped" if t.stopped else "away" if t.away else "followed",
            "reason": t.stopped or t.away, "moves_last_hour": len(recent_moves(t, svc.now())),
        })
    return {"mode": "on" if units.on else "off" if units.systemd and units.installed else "unavailable",
            "units": units.describe(), "state_problem": problem, "last_pass": last_pass(svc), "devices": devices}


def status(svc: Services, as_json: bool) -> None:
    doc = report(svc)
    if as_json:
        click.echo(json.dumps(render.document("follow-status", **doc), indent=2))
        return
    click.echo(render.follow_text(doc))

