"""castwall setup: allow each Cast device through ufw, as one transaction."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Sequence

import click

from castwall import apps
from castwall import hints as hintlib
from castwall import render
from castwall.apply import check_empty, deferred_signals, placed, run_transaction
from castwall.commands.change import choice_of, commands_for, confirm, done_text, drift, firewall_for, nothing_filters, save_state, timestamp
from castwall.commands.services import Services, not_root_hint, note, progress, warn
from castwall.commands.survey import show_rejected, take_survey
from castwall.errors import NotFound, UsageError
from castwall.follow import approvals
from castwall.model import Address, AppChoice, FirewallChoice, Rule, State
from castwall.planner import Trust, next_state, plan_setup, select_devices, uniform
from castwall.system import host
from castwall.system.gateway import current_lans
from castwall.system.sysctl import read_port_range
from castwall.system.ufw import installed_profiles

if TYPE_CHECKING:
    from castwall.system.dnsmasq import Change, Dnsmasq


def run(
    svc: Services,
    yes: bool,
    dry_run: bool,
    selectors: tuple[str, ...],
    timeout: float,
    interfaces: tuple[str, ...],
    allow_routed: bool,
    allow_public: bool,
    contested: tuple[Address, ...],
    reserve: str | None,
    given: Sequence[AppChoice] = (),
) -> None:
    previous, problem = host.read_state(svc.paths.state_file)
    root, firewall = firewall_for(svc, dry_run, "setup changes the firewall and needs root: "
                                  "run 'sudo castwall setup' (or add --dry-run to only see the plan)", previous)
    if firewall is None:
        click.echo(f"{nothing_filters()}. Nothing was changed.")
        return
    fw = firewall.name
    # A state file from before castwall knew other firewalls names none: its rules are in ufw.
    before = (previous.firewall or FirewallChoice("ufw")) if previous else None
    if before is not None and before != choice_of(firewall) and previous.rules:
        where = f"--firewall {before.name}" + (f" --nft-chain {before.chain}" if before.chain else "")
        warn(f"castwall's rules were in {before}, and now {choice_of(firewall)} filters: this setup writes them there; "
             f"the old ones stay until 'sudo castwall remove --all {where}'")
    dns = svc.dnsmasq() if reserve else None
    unit = dns.require() if dns else None
    port_range = read_port_range(svc.paths.port_range)
    if problem:
        warn(f"{problem}; castwall rebuilds it from its tagged rules in {fw}" + (", keeping the old file as a copy" if not dry_run else ""))
    try:
        chosen = apps.merge(previous.apps if previous else (), given)
    except apps.AppError as exc:
        raise UsageError(str(exc)) from None
    profiles, profile_note = installed_profiles(svc.paths.ufw_profiles) if fw == "ufw" else (frozenset(), None)
    if profile_note and any(apps.is_default(c) for c in chosen):
        note(profile_note)
    trust = Trust(routed=allow_routed, public=allow_public, contested=frozenset(contested))
    survey = take_survey(svc, interfaces, timeout, root, known=previous, trust=trust, check_claims=root)
    show_rejected(survey)
    devices = survey.devices
    refused = dict(survey.refused)
    if fw != "ufw":
        refused.update({d.uuid: f"{d.ip} is an IPv6 address; castwall's {fw} rules hold IPv4 addresses"
                        for d in devices if d.ip.version != 4 and d.uuid not in refused})
    if not devices:
        hint = "" if root else not_root_hint("setup")
        raise NotFound(f"no Cast device answered within {timeout:g} s; is the device on and on this LAN?{hint}")
    scope, unmatched = select_devices(devices, selectors)
    if unmatched:
        raise NotFound(f"no Cast device matches {', '.join(repr(s) for s in unmatched)}; 'castwall discover' lists them")

    def planned(rules: Sequence[Rule]):
        plan = plan_setup(devices, port_range, rules, scope=scope, refused=refused, accepted=trust.contested,
                          chosen=chosen, profiles=profiles)
        return uniform(plan, fw) if fw == "firewalld" else plan

    lock = host.run_lock(svc.paths.lock_file, wait=svc.lock_wait, notify=progress) if not dry_run else contextlib.nullcontext()
    with lock:
        if root and not dry_run:
            firewall.sync()  # what a run cut short left between the firewall's live and kept rules
        if root:
            ruleset = firewall.rules()
            current, order = ruleset.rules, ruleset.order
            active = firewall.active()
            for message in drift(previous, [r for r in current if r.owner], fw):
                warn(message)
        else:
            current, order = (previous.rules if previous else ()), ()
            active = None
            warn(f"not root: {fw}'s rules were taken from the state file, not read from {fw}")
        try:  # apps whose rules ufw holds but the state file does not name stay chosen
            chosen = apps.merge(apps.recovered(previous.apps if previous else (), [r for r in current if r.owner]), given)
        except apps.AppError as exc:
            raise UsageError(str(exc)) from None
        if fw == "firewalld":  # an entry someone added by hand to castwall's ipset: theirs, and so is that device
            hand = {r.ip for r in current if r.owner is None}
            refused.update({d.uuid: f"{d.ip} is in firewalld's ipset castwall as an entry castwall did not add; "
                                    "castwall leaves it, and this device, alone" for d in devices if d.ip in hand})
        plan = planned(current)
        found = hintlib.collect(plan.devices, survey.networks, survey.refused)
        change = _reservations(dns, plan, previous, survey.networks) if dns else None
        extra = [render.apps_section(plan, given, scope is not None)] if chosen else []
        extra += [change.describe()] if change else []
        commands = commands_for(firewall, plan.steps, root)
        click.echo(render.plan_text(plan, source=str(svc.paths.port_range), known=previous.devices if previous else (),
                                    hints=found, extra=extra, firewall=fw, commands=commands))
        if dry_run:
            click.echo("\nDry run: nothing was changed.")
            return

        lans, lan_warning = current_lans(svc.runner, survey.interfaces, svc.raw_arp if root else None)
        if lan_warning:
            warn(lan_warning)

        def save(rules: Sequence[Rule]) -> None:
            owned = [r for r in rules if r.owner]
            follow = approvals(previous, [d for d in plan.devices if d.uuid not in refused], owned, lans)
            save_state(svc, next_state(previous, plan.devices, owned, port_range, timestamp(svc), chosen, follow,
                                       choice_of(firewall)), problem)

        if not plan.empty or (change and not change.empty):
            if not yes:
                click.echo("")
                confirm(_question(len(commands) if commands is not None else len(plan.steps), change, fw))

            def finish() -> None:
                after = firewall.rules().rules
                check_empty(planned(after).steps, fw)
                with dns.applied(change, unit, progress) if dns and change else contextlib.nullcontext():
                    save(after)

            if dns and change:
                dns.stage(change)
            try:
                with deferred_signals() as interrupted, svc.timed(f"apply phase: {len(plan.steps)} step(s) through {firewall.path}, "
                                                                 "then verify and save"):
                    run_transaction(firewall, placed(plan.steps, order), finish=finish, interrupted=interrupted, progress=progress)
            finally:
                if dns:
                    dns.discard()
            click.echo(f"\nDone: {done_text(len(plan.steps), change, fw)} {render.allowed_summary(plan)}")
        else:
            save(current)
            click.echo(f"\nNothing to change: every device already has its rule. {render.allowed_summary(plan)}")
        if active is False:
            warn(INACTIVE.get(fw, f"{fw} does not filter incoming traffic now: castwall's rules take effect when it does"))
        for line in firewall.problems():  # after a run: castwall's part is in place, so only what it cannot fix
            note(line)


INACTIVE = {
    "ufw": "ufw is INACTIVE: these rules have no effect until you run 'sudo ufw enable' (castwall does not enable it for you)",
    "nftables": "the nftables chain castwall's rule is in does not drop by default: the rule changes nothing until it does",
    "firewalld": "firewalld is not running: castwall's ipset entries take effect when it starts",
}


def _reservations(dns: Dnsmasq, plan, previous: State | None, networks) -> Change:
    """The drop-in for every device that has a castwall rule once the plan has run."""
    owners = {r.owner for r in plan.wanted_rules()}
    pool = {d.uuid: d for d in (previous.devices if previous else ())}
    pool.update({d.uuid: d for d in plan.devices})
    return dns.plan(hintlib.collect([d for u, d in pool.items() if u in owners], networks))


def _question(steps: int, change: Change | None, firewall: str = "ufw") -> str:
    parts = [f"{steps} {firewall} command(s)"] if steps else []
    if change and not change.empty:
        parts.append("the dnsmasq change")
    return f"Run {' and '.join(parts)}?"
