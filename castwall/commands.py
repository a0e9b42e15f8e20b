"""What each castwall command does. cli.py declares the commands and imports this module
only when one of them runs, so --help and --version load none of it."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Sequence

import click

from castwall import hints as hintlib
from castwall import render
from castwall.apply import check_empty, deferred_signals, placed, run_transaction
from castwall.announcement import Announcement, Rejected, collate, link_groups
from castwall.errors import Declined, ExitCode, NeedRoot, NotFound, UsageError
from castwall.model import Address, Device, Rule, State
from castwall.planner import Trust, assess, next_state, plan_setup, refusal, screen, select_devices, select_rules_to_remove
from castwall.system import host
from castwall.system.discovery import discover as discover_devices
from castwall.system.interfaces import NetInterface, choose_interfaces, list_interfaces, own_addresses
from castwall.system.arp import packet_arp
from castwall.system.neighbours import NeighbourTable, poke, resolve_macs
from castwall.system.runner import Runner, SubprocessRunner
from castwall.system.sysctl import read_port_range
from castwall.system.ufw import UfwFirewall

if TYPE_CHECKING:  # loaded when a command needs them: discover and --help do not
    from castwall.system.dnsmasq import Change, Dnsmasq
    from castwall.system.ufwlib import UfwLibrary


@dataclass
class Services:
    """Everything with a side effect, so tests can hand in their own."""

    paths: host.Paths = field(default_factory=host.Paths.from_environment)
    runner: Runner = field(default_factory=SubprocessRunner)
    is_root: Callable[[], bool] = host.is_root
    discover: Callable[..., list[Announcement]] = discover_devices
    raw_arp: Callable | None = packet_arp
    poke: Callable = poke
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    lock_wait: float = 10.0
    debug: bool = False
    ufw_path: str = field(default_factory=lambda: os.environ.get("CASTWALL_UFW", "auto"))

    def note(self, message: str) -> None:
        """A --debug line: what castwall does, how long it took, which path it took."""
        if self.debug:
            click.echo(f"castwall: debug: {message}", err=True)

    def interfaces(self) -> list[NetInterface]:
        return list_interfaces(self.runner)

    def firewall(self) -> UfwFirewall | UfwLibrary:
        """ufw's Python library in this process where it loads (as root), else the ufw command."""
        if self.ufw_path not in ("auto", "cli", ""):
            raise UsageError(f"CASTWALL_UFW must be 'auto' or 'cli', not {self.ufw_path!r}")
        cli = UfwFirewall(self.runner)
        why = None
        if self.ufw_path == "cli":
            why = "CASTWALL_UFW=cli"
        elif not self.is_root():
            why = "not root"
        elif not cli.installed():
            why = "ufw is not installed"
        else:
            from castwall.system.ufwlib import Unavailable, UfwLibrary

            library = UfwLibrary(self.runner, debug=self.note)
            try:
                with self.timed("loading ufw's library"):
                    library.load()
            except Unavailable as exc:
                why = str(exc)
            else:
                self.note(f"ufw path: {library.path}")
                return library
        self.note(f"ufw path: {cli.path} ({why})")
        return cli

    @contextlib.contextmanager
    def timed(self, what: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.note(f"{what}: {time.perf_counter() - start:.3f} s")

    def dnsmasq(self) -> Dnsmasq:
        from castwall.system.dnsmasq import Dnsmasq

        return Dnsmasq(self.runner, self.paths.dnsmasq_dir)


def progress(message: str) -> None:
    click.echo(message, err=True)


def warn(message: str) -> None:
    click.echo(f"castwall: warning: {message}", err=True)


@dataclass
class Survey:
    """What castwall learnt about the LAN: devices, and what it will not trust."""

    devices: list[Device]
    rejected: list[Rejected]  # announcements that describe no usable device
    refused: dict[str, str]  # UUID -> why that device may get no rule
    interfaces: list[NetInterface]
    own: set[Address]  # every address of this computer

    @property
    def networks(self) -> list:
        """The chosen interfaces' addresses, with their prefixes."""
        return [a for i in self.interfaces for a in i.addresses]


def _survey(
    svc: Services,
    interfaces: Sequence[str],
    timeout: float,
    root: bool,
    *,
    expect: State | None = None,
    trust: Trust = Trust(),
    check_claims: bool = False,
) -> Survey:
    """Discover, read, resolve and screen the devices on the chosen interfaces.

    expect (status only) lets discovery end after one round when every device
    it holds answers then. setup and discover always ask twice: a device that
    answered someone else less than a second earlier stays silent on the
    first question, and a device missing from setup would get no rule.
    """
    every = svc.interfaces()
    chosen = choose_interfaces(every, interfaces)
    addresses = [str(a.ip) for i in chosen for a in i.ipv4]
    progress(f"Looking for Cast devices on {', '.join(i.name for i in chosen)}...")
    with svc.timed("discovery"):
        announced = svc.discover(addresses, timeout, expect=[d.uuid for d in expect.devices] if expect else (), note=svc.note)
    svc.note(f"{len(announced)} announcement(s) heard")
    devices, rejected = collate(announced)
    networks = [a for i in chosen for a in i.addresses]
    own = own_addresses(every)
    # Screen twice: once to settle which address a contested device the user
    # accepted has, then again with what ARP said about each address.
    devices, _ = screen(link_groups(devices), networks, own, trust)
    table = NeighbourTable(svc.runner, svc.paths.arp, poke=svc.poke)
    with svc.timed("MAC addresses (ARP)" + (", with the claims check" if root and check_claims else "")):
        devices, warning = resolve_macs(devices, chosen, table, raw_arp=svc.raw_arp if root else None, check_claims=check_claims)
    if warning:
        warn(warning)
    devices, refused = screen(devices, networks, own, trust)
    return Survey(devices, rejected, refused, chosen, own)


def _show_rejected(survey: Survey) -> None:
    for r in survey.rejected:
        warn(f"ignored an announcement ({r.instance}): {r.reason}")


def _confirm(question: str) -> None:
    try:
        agreed = click.confirm(question, default=False, err=True)
    except click.exceptions.Abort:
        raise Declined("no answer to the confirmation question; nothing changed (use --yes to apply without asking)") from None
    if not agreed:
        raise Declined("not confirmed; nothing changed")


def _firewall(svc: Services, dry_run: bool, need_root: str) -> tuple[bool, UfwFirewall | UfwLibrary]:
    """Whether castwall runs as root, and ufw; a change without root stops here with need_root."""
    root = svc.is_root()
    if not root and not dry_run:
        raise NeedRoot(need_root)
    firewall = svc.firewall()
    if root:
        firewall.require()
    return root, firewall


def _timestamp(svc: Services) -> str:
    return svc.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _save_state(svc: Services, state: State, problem: str | None) -> None:
    """Write the state file; an unusable one (problem) is first kept as a copy."""
    kept = host.write_state(svc.paths.state_file, state, keep_old=bool(problem), stamp=svc.now().strftime("%Y%m%dT%H%M%SZ"))
    if kept:
        progress(f"The unusable state file was kept as {kept}.")


def discover(svc: Services, timeout: float, interfaces: tuple[str, ...], as_json: bool) -> None:
    survey = _survey(svc, interfaces, timeout, svc.is_root())
    _show_rejected(survey)
    devices = survey.devices
    if as_json:
        doc = render.document(
            "discover",
            interfaces=[i.name for i in survey.interfaces],
            devices=[render.device_json(d, survey.refused.get(d.uuid)) for d in devices],
            ignored=[render.rejected_json(r) for r in survey.rejected],
        )
        click.echo(json.dumps(doc, indent=2))
    elif devices:
        click.echo(render.device_table(devices, survey.refused))
    if not devices:
        raise NotFound(f"no Cast device answered within {timeout:g} s on {', '.join(i.name for i in survey.interfaces)}")


def setup(
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
) -> None:
    root, firewall = _firewall(svc, dry_run, "setup changes the firewall and needs root: "
                               "run 'sudo castwall setup' (or add --dry-run to only see the plan)")
    dns = svc.dnsmasq() if reserve else None
    unit = dns.require() if dns else None
    port_range = read_port_range(svc.paths.port_range)
    previous, problem = host.read_state(svc.paths.state_file)
    if problem:
        warn(f"{problem}; castwall rebuilds it from its tagged rules in ufw" + (", keeping the old file as a copy" if not dry_run else ""))
    trust = Trust(routed=allow_routed, public=allow_public, contested=frozenset(contested))
    survey = _survey(svc, interfaces, timeout, root, trust=trust, check_claims=root)
    _show_rejected(survey)
    devices = survey.devices
    if not devices:
        raise NotFound(f"no Cast device answered within {timeout:g} s; is the device on and on this LAN?")
    scope, unmatched = select_devices(devices, selectors)
    if unmatched:
        raise NotFound(f"no Cast device matches {', '.join(repr(s) for s in unmatched)}; 'castwall discover' lists them")

    def planned(rules: Sequence[Rule]):
        return plan_setup(devices, port_range, rules, scope=scope, refused=survey.refused, accepted=trust.contested)

    lock = host.run_lock(svc.paths.lock_file, wait=svc.lock_wait, notify=progress) if not dry_run else contextlib.nullcontext()
    with lock:
        if root:
            ruleset = firewall.rules()
            current, order = ruleset.rules, ruleset.order
            active = firewall.active()
            for message in _drift(previous, [r for r in current if r.owner]):
                warn(message)
        else:
            current, order = (previous.rules if previous else ()), ()
            active = None
            warn("not root: ufw's rules were taken from the state file, not read from ufw")
        plan = planned(current)
        found = hintlib.collect(plan.devices, survey.networks, survey.refused)
        change = _reservations(dns, plan, previous, survey.networks) if dns else None
        click.echo(render.plan_text(plan, source=str(svc.paths.port_range), known=previous.devices if previous else (),
                                    hints=found, extra=[change.describe()] if change else ()))
        if dry_run:
            click.echo("\nDry run: nothing was changed.")
            return

        def save(rules: Sequence[Rule]) -> None:
            owned = [r for r in rules if r.owner]
            _save_state(svc, next_state(previous, plan.devices, owned, port_range, _timestamp(svc)), problem)

        if not plan.empty or (change and not change.empty):
            if not yes:
                click.echo("")
                _confirm(_question(len(plan.steps), change))

            def finish() -> None:
                after = firewall.rules().rules
                check_empty(planned(after).steps)
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
            click.echo(f"\nDone: {_done(len(plan.steps), change)} {render.allowed_summary(plan)}")
        else:
            save(current)
            click.echo(f"\nNothing to change: every device already has its rule. {render.allowed_summary(plan)}")
        if active is False:
            warn("ufw is INACTIVE: these rules have no effect until you run 'sudo ufw enable' (castwall does not enable it for you)")


def _reservations(dns: Dnsmasq, plan, previous: State | None, networks) -> Change:
    """The drop-in for every device that has a castwall rule once the plan has run."""
    owners = {r.owner for r in plan.wanted_rules()}
    pool = {d.uuid: d for d in (previous.devices if previous else ())}
    pool.update({d.uuid: d for d in plan.devices})
    return dns.plan(hintlib.collect([d for u, d in pool.items() if u in owners], networks))


def _question(steps: int, change: Change | None) -> str:
    parts = [f"{steps} ufw command(s)"] if steps else []
    if change and not change.empty:
        parts.append("the dnsmasq change")
    return f"Run {' and '.join(parts)}?"


def _done(steps: int, change: Change | None) -> str:
    parts = [f"{steps} ufw change(s) applied and verified."] if steps else []
    if change and not change.empty:
        parts.append(f"dnsmasq restarted with {change.path}." if change.new else f"{change.path} removed; dnsmasq restarted.")
    return " ".join(parts)


def _drift(recorded: State | None, owned: Sequence[Rule]) -> list[str]:
    """What differs between the state file and castwall's rules in ufw, as warnings.

    A run killed part way (SIGKILL, power loss) leaves such a difference; the
    run that sees it plans from ufw's rules and saves a state that matches.
    """
    known = set(recorded.rules) if recorded else set()
    extra = [r for r in owned if r not in known]
    gone = known - set(owned)
    out = []
    if extra and recorded is not None:
        out.append(f"ufw holds {len(extra)} castwall rule(s) the state file does not record (an interrupted run?): "
                   + ", ".join(f"{r.ip} port {r.ports}" for r in sorted(extra, key=Rule.sort_key)) + "; castwall takes them into account")
    if gone:
        out.append(f"{len(gone)} rule(s) recorded in the state file are no longer in ufw: "
                   + ", ".join(f"{r.ip} port {r.ports}" for r in sorted(gone, key=Rule.sort_key)))
    return out


def status(svc: Services, as_json: bool, no_discover: bool, timeout: float, interfaces: tuple[str, ...]) -> None:
    root = svc.is_root()
    port_range = read_port_range(svc.paths.port_range)
    state, problem = host.read_state(svc.paths.state_file)
    firewall = svc.firewall()
    live, odd = None, ()
    if not firewall.installed():
        ufw = "missing"
    elif root:
        ruleset = firewall.rules()
        live, odd = ruleset.rules, ruleset.odd_tagged
        ufw = "active" if firewall.active() else "inactive"
    else:
        ufw = "unknown"
    survey = None if no_discover else _survey(svc, interfaces, timeout, root, expect=state, check_claims=root)
    if survey:
        _show_rejected(survey)
    discovered = survey.devices if survey else None
    findings = assess(state, port_range, discovered, live, ufw, odd, refused=survey.refused if survey else {}, state_problem=problem)
    rules = live if live is not None else (state.rules if state else ())
    if as_json:
        doc = render.document(
            "status",
            port_range=[port_range.low, port_range.high],
            ufw=ufw,
            state_file=str(svc.paths.state_file),
            state_written=state.written if state else None,
            known=[render.device_json(d) for d in (state.devices if state else ())],
            discovered=None if survey is None else [render.device_json(d, survey.refused.get(d.uuid)) for d in survey.devices],
            ignored=None if survey is None else [render.rejected_json(r) for r in survey.rejected],
            rules=[render.rule_json(r) for r in rules],
            findings=[render.finding_json(f) for f in findings],
            ok=not any(f.attention for f in findings),
        )
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render.status_text(
            port_range=port_range,
            ufw=ufw,
            state_path=str(svc.paths.state_file),
            state=state,
            discovered=discovered,
            rules=rules,
            findings=findings,
        ))
    if any(f.attention for f in findings):
        click.get_current_context().exit(int(ExitCode.ATTENTION))


def remove(svc: Services, selectors: tuple[str, ...], remove_all: bool, yes: bool, dry_run: bool) -> None:
    if not selectors and not remove_all:
        raise UsageError("say what to remove: --device NAME|UUID (repeatable) or --all")
    if selectors and remove_all:
        raise UsageError("--all and --device cannot be used together")
    root, firewall = _firewall(svc, dry_run, "remove changes the firewall and needs root: "
                               "run 'sudo castwall remove' (or add --dry-run)")
    recorded, problem = host.read_state(svc.paths.state_file)
    if problem:
        warn(f"{problem}; castwall's tagged rules in ufw are used instead" + (", and the old file is kept as a copy" if not dry_run else ""))
    state = recorded or State(None, (), ())
    lock = host.run_lock(svc.paths.lock_file, wait=svc.lock_wait, notify=progress) if not dry_run else contextlib.nullcontext()
    with lock:
        if root:
            ruleset = firewall.rules()
            owned, order = ruleset.owned, ruleset.order
            for message in _drift(recorded, owned):
                warn(message)
        else:
            owned, order = tuple(r for r in state.rules if r.owner), ()
            warn("not root: castwall's rules were taken from the state file, not read from ufw")
        steps, unmatched = select_rules_to_remove(owned, state.devices, selectors)
        if unmatched:
            raise NotFound(f"castwall has no rule for {', '.join(repr(s) for s in unmatched)}")
        dns = svc.dnsmasq()
        removed = {s.rule for s in steps}
        staying = {r.owner for r in owned if r not in removed}
        change = dns.removal(None if remove_all else {d.mac for d in state.devices if d.uuid in staying and d.mac})
        if change is not None and change.empty:
            change = None
        if not steps and change is None:
            click.echo("castwall has no rules in ufw; nothing to remove.")
            return
        if steps:
            click.echo(f"ufw commands castwall will run ({len(steps)}):")
            click.echo(render.steps_text(steps))
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
            _confirm(f"Delete these {len(steps)} rule(s)" + (" and change the dnsmasq drop-in?" if change else "?")
                     if steps else "Change the dnsmasq drop-in?")

        def finish() -> None:
            remaining = firewall.rules().owned
            check_empty([s for s in steps if s.rule in remaining])
            owners = {r.owner for r in remaining}
            devices = tuple(d for d in state.devices if d.uuid in owners)
            rules = tuple(sorted(remaining, key=Rule.sort_key))
            with dns.applied(change, unit, progress) if change else contextlib.nullcontext():
                _save_state(svc, State(state.port_range, devices, rules, _timestamp(svc)), problem)

        if change:
            dns.stage(change)
        try:
            with deferred_signals() as interrupted, svc.timed(f"apply phase: {len(steps)} step(s) through {firewall.path}, "
                                                             "then verify and save"):
                run_transaction(firewall, placed(steps, order), finish=finish, interrupted=interrupted, progress=progress)
        finally:
            dns.discard()
        click.echo(f"\nDone: {len(steps)} castwall rule(s) removed; other ufw rules were not touched."
                   + (f" {_done(0, change)}" if change else ""))


def hints(svc: Services, fmt, selectors: tuple[str, ...], as_json: bool, no_discover: bool, timeout: float,
          interfaces: tuple[str, ...]) -> None:
    if fmt == "list":
        click.echo(hintlib.format_list(), nl=False)
        return
    if as_json and fmt is not None and fmt.name != "json":
        raise UsageError(f"--json prints JSON; it cannot be combined with --format {fmt.name}")
    fmt = hintlib.find_format("json") if as_json else (fmt or hintlib.find_format("plain"))
    state, problem = host.read_state(svc.paths.state_file)
    if problem:
        warn(f"{problem}; only the devices seen now are used")
    saved = list(state.devices) if state else []
    if no_discover:
        every = svc.interfaces()
        survey = Survey([], [], {}, choose_interfaces(every, interfaces), own_addresses(every))
    else:
        root = svc.is_root()
        survey = _survey(svc, interfaces, timeout, root, check_claims=root)
        _show_rejected(survey)
    seen, networks, own = survey.devices, survey.networks, survey.own
    # An address the user approved in setup (--allow-*) keeps its reservation.
    approved = {(r.owner, r.ip) for r in (state.rules if state else ())}
    refused = {d.uuid: survey.refused[d.uuid] for d in seen if d.uuid in survey.refused and (d.uuid, d.ip) not in approved}
    seen_uuids = {d.uuid for d in seen}
    unseen = [d for d in saved if d.uuid not in seen_uuids]
    for d in unseen:
        why = None if (d.uuid, d.ip) in approved else (d.contested or refusal(d.ip, networks, own))
        if why:
            refused[d.uuid] = why
    devices = seen + unseen
    if not devices:
        if no_discover:
            raise NotFound("castwall has saved no devices yet: run 'castwall setup', or leave out --no-discover")
        raise NotFound(f"no Cast device answered within {timeout:g} s, and castwall has saved none")
    scope, unmatched = select_devices(devices, selectors)
    if unmatched:
        raise NotFound(f"no Cast device matches {', '.join(repr(s) for s in unmatched)}; 'castwall discover' lists them")
    # With --no-discover nothing was looked for, so nothing is marked as not seen.
    found = hintlib.collect(devices, networks, refused, unseen=frozenset() if no_discover else frozenset(d.uuid for d in unseen))
    if scope is not None:
        found = hintlib.Hints(tuple(r for r in found.reservations if r.uuid in scope),
                              tuple(o for o in found.omitted if o.uuid in scope))
    if fmt.render is None:
        click.echo(json.dumps(render.document("hints", **hintlib.hints_json(found)), indent=2))
    else:
        click.echo(fmt.render(found), nl=False)
    if not fmt.lists_omitted:
        for o in found.omitted:
            click.echo(f"castwall: note: no reservation for {o.name} ({o.ip}): {o.reason}", err=True)
