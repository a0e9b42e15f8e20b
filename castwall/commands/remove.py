"""castwall remove: delete castwall's rules, and nothing else."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import click

from castwall import render
from castwall.apply import check_empty, deferred_signals, placed, run_transaction
from castwall.commands.change import choice_of, commands_for, confirm, done_text, drift, firewall_for, nothing_filters, save_state, timestamp
from castwall.commands.services import Services, progress, warn
from castwall.errors import NotFound, UsageError
from castwall.model import Rule, State
from castwall.planner import select_rules_to_remove
from castwall.system import host


def run(svc: Services, selectors: tuple[str, ...], remove_all: bool, yes: bool, dry_run: bool,
        app_names: tuple[str, ...] = ()) -> None:
    if not selectors and not remove_all and not app_names:
        raise UsageError("say what to remove: --device NAME|UUID, --app NAME (both repeatable) or --all")
    if remove_all and (selectors or app_names):
        raise UsageError("--all removes everything; it cannot be combined with --device or --app")
    if selectors and app_names:
        raise UsageError("--app withdraws an app from every device, and --device takes all of a device's rules away: "
                         "use one of them")
    recorded, problem = host.read_state(svc.paths.state_file)
    # castwall's rules are taken out of the firewall the state file says they are in, unless --firewall says otherwise.
    root, firewall = firewall_for(svc, dry_run, "remove changes the firewall and needs root: "
                                  "run 'sudo castwall remove' (or add --dry-run)", recorded, prefer_recorded=True)
    if firewall is None:
        click.echo(f"{nothing_filters()}; castwall has no rules to remove.")
        return
    fw = firewall.name
    if problem:
        warn(f"{problem}; castwall's tagged rules in {fw} are used instead" + (", and the old file is kept as a copy" if not dry_run else ""))
    state = recorded or State(None, (), ())
    lock = host.run_lock(svc.paths.lock_file, wait=svc.lock_wait, notify=progress) if not dry_run else contextlib.nullcontext()
    with lock:
        if root and not dry_run:
            firewall.sync()  # what a run cut short left between the firewall's live and kept rules
        if root:
            ruleset = firewall.rules()
            owned, order = ruleset.owned, ruleset.order
            for message in drift(recorded, owned, fw):
                warn(message)
        else:
            owned, order = tuple(r for r in state.rules if r.owner), ()
            warn(f"not root: castwall's rules were taken from the state file, not read from {fw}")
        steps, unmatched = select_rules_to_remove(owned, state.devices, selectors, app_names, state.apps)
        # A device whose rules follow mode withdrew (away) has no rule, but is still approved: forget it.
        away = {sel: _away(state, sel) for sel in unmatched}
        unmatched = [sel for sel, uuids in away.items() if not uuids]
        if unmatched:
            raise NotFound(f"castwall has no rule for {', '.join(repr(s) for s in unmatched)}")
        chosen = () if remove_all else tuple(c for c in state.apps if c.name not in app_names)
        dns = svc.dnsmasq()
        removed = {s.rule for s in steps}
        staying = {r.owner for r in owned if r not in removed}
        forget = {t.uuid for t in state.follow} if remove_all else (
            {r.owner for r in removed} - staying | {u for uuids in away.values() for u in uuids})
        follow = tuple(t for t in state.follow if t.uuid not in forget)
        change = dns.removal(None if remove_all else {d.mac for d in state.devices if d.uuid in staying and d.mac})
        if change is not None and change.empty:
            change = None
        if not steps and change is None and remove_all and not dry_run:
            _follow_off(svc)
        if not steps and change is None and follow != state.follow:
            if dry_run:
                click.echo("No rule to remove; without --dry-run castwall would stop following "
                           f"{len(state.follow) - len(follow)} device(s) whose rules follow mode withdrew.\n\nDry run: nothing was changed.")
                return
            kept = {r.owner for r in owned} | {t.uuid for t in follow}
            save_state(svc, replace(state, devices=tuple(d for d in state.devices if d.uuid in kept), follow=follow,
                                    written=timestamp(svc)), problem)
            click.echo(f"No rule to remove; castwall no longer follows {len(state.follow) - len(follow)} device(s) "
                       "whose rules follow mode had withdrawn.")
            return
        if not steps and change is None:
            if app_names and chosen != state.apps and dry_run:
                click.echo(f"No device has a rule for {', '.join(app_names)}; without --dry-run castwall would only "
                           "stop choosing it.\n\nDry run: nothing was changed.")
                return
            if app_names and chosen != state.apps:
                with_apps = replace(state, apps=chosen, written=timestamp(svc))
                save_state(svc, with_apps, problem)
                click.echo(f"No device had a rule for {', '.join(app_names)}; no longer chosen, so setup gives it to none.")
                return
            click.echo(f"castwall has no rules in {fw}; nothing to remove.")
            return
        if steps:
            commands = commands_for(firewall, steps, root)
            click.echo("\n".join(render.changes_text(steps, fw, commands)))
        if change:
            click.echo(("\n" if steps else "") + change.describe())
        unit = dns.active_unit() if change else None
        if change and unit is None:
            warn("dnsmasq is not running as a systemd service: the drop-in changes, but restart dnsmasq yourself to load it")
        if dry_run:
            click.echo("\nDry run: nothing was changed.")
            return
        if not yes:
            click.echo("")
            confirm(f"Delete these {len(steps)} rule(s)" + (" and change the dnsmasq drop-in?" if change else "?")
                     if steps else "Change the dnsmasq drop-in?")

        def finish() -> None:
            remaining = firewall.rules().owned
            check_empty([s for s in steps if s.rule in remaining], fw)
            owners = {r.owner for r in remaining} | {t.uuid for t in follow}
            devices = tuple(d for d in state.devices if d.uuid in owners)
            rules = tuple(sorted(remaining, key=Rule.sort_key))
            with dns.applied(change, unit, progress) if change else contextlib.nullcontext():
                save_state(svc, State(state.port_range, devices, rules, timestamp(svc), chosen, follow, choice_of(firewall)), problem)

        if remove_all:
            _follow_off(svc)  # before the rules go: no pass may bring them back
        if change:
            dns.stage(change)
        try:
            with deferred_signals() as interrupted, svc.timed(f"apply phase: {len(steps)} step(s) through {firewall.path}, "
                                                             "then verify and save"):
                run_transaction(firewall, placed(steps, order), finish=finish, interrupted=interrupted, progress=progress)
        finally:
            dns.discard()
        withdrawn = f" {', '.join(app_names)} no longer chosen: setup gives it to no device." if app_names else ""
        click.echo(f"\nDone: {len(steps)} castwall rule(s) removed; other {fw} rules were not touched.{withdrawn}"
                   + (f" {done_text(0, change)}" if change else ""))


def _away(state: State, selector: str) -> set[str]:
    """The UUIDs of approved devices without rules (follow mode withdrew them) that a --device selector names."""
    uuids = set()
    for t in state.follow:
        d = state.device(t.uuid)
        if (t.away or t.stopped) and (d.matches(selector) if d else selector.strip().lower() == t.uuid):
            uuids.add(t.uuid)
    return uuids


def _follow_off(svc: Services) -> None:
    """remove --all turns follow mode off too, first: no pass may bring rules back."""
    from castwall.commands.follow import disable

    if disable(svc, quiet_if_off=True):
        progress("Follow mode turned off (castwall-follow.timer disabled and stopped).")
