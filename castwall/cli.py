"""The castwall command line: parse, confirm, call, render, exit."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

import click

from castwall import __version__
from castwall import hints as hintlib
from castwall import render
from castwall.apply import check_empty, deferred_signals, placed, run_transaction
from castwall.announcement import Announcement, Rejected, collate, link_groups
from castwall.errors import CastwallError, Declined, ExitCode, NeedRoot, NotFound, UsageError
from castwall.model import Address, Device, Rule, State
from castwall.planner import Trust, assess, next_state, plan_setup, refusal, screen, select_devices, select_rules_to_remove
from castwall.system import host
from castwall.system.discovery import discover as discover_devices
from castwall.system.dnsmasq import Change, Dnsmasq
from castwall.system.interfaces import NetInterface, choose_interfaces, list_interfaces, own_addresses
from castwall.system.arp import packet_arp
from castwall.system.neighbours import NeighbourTable, poke, resolve_macs
from castwall.system.runner import Runner, SubprocessRunner
from castwall.system.sysctl import read_port_range
from castwall.system.ufw import UfwFirewall

DEFAULT_TIMEOUT = 5.0


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

    def interfaces(self) -> list[NetInterface]:
        return list_interfaces(self.runner)

    def firewall(self) -> UfwFirewall:
        return UfwFirewall(self.runner)

    def dnsmasq(self) -> Dnsmasq:
        return Dnsmasq(self.runner, self.paths.dnsmasq_dir)


def progress(message: str) -> None:
    click.echo(message, err=True)


def warn(message: str) -> None:
    click.echo(f"castwall: warning: {message}", err=True)


class CastwallGroup(click.Group):
    """Maps CastwallError to its one-line message and exit code, in one place."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CastwallError as exc:
            click.echo(f"castwall: error: {exc.message}", err=True)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("castwall: interrupted; nothing was changed", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: say so in one line, trace only with --debug
            if isinstance(ctx.obj, Services) and ctx.obj.debug:
                traceback.print_exc()
            else:
                click.echo(
                    f"castwall: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
                    err=True,
                )
            ctx.exit(int(ExitCode.INTERNAL))


timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(0.1, 300),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Longest time to wait for answers; discovery ends sooner once the LAN has answered.",
)
interface_option = click.option(
    "--interface",
    "interfaces",
    multiple=True,
    metavar="NAME",
    help="Discover on this interface only (repeatable). Default: every interface that is up.",
)
device_option = click.option(
    "--device",
    "selectors",
    multiple=True,
    metavar="NAME|UUID",
    help="Only this device, by friendly name or UUID (repeatable).",
)
yes_option = click.option("--yes", "-y", is_flag=True, help="Apply without asking for confirmation.")
dry_run_option = click.option("--dry-run", "-n", is_flag=True, help="Show what would be done; change nothing (no root needed).")


@click.group(cls=CastwallGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="castwall", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Let Chromecasts and other Cast devices through ufw, one narrow rule per device.

    castwall finds Cast devices on the LAN with mDNS, resolves their MAC
    addresses, reads the local port range and allows UDP from each device's
    address to that range, so casting from Chrome works while ufw keeps
    denying everything else. It suggests a DHCP reservation for each device so
    its address, and so its rule, stays valid ('castwall hints' prints them in
    the syntax of many routers).

    \b
    Exit codes:
      0  success, or all in place (status)
      1  internal error (a bug; --debug shows the traceback)
      2  usage error
      3  status: something needs attention
      4  root needed
      5  a required program is missing (ufw, ip; dnsmasq for --reserve)
      6  a ufw command or the dnsmasq reservations failed; any change of the run was undone
      7  a firewall change failed and could not be fully undone
      8  unusable system data (port range, state file, command output)
      9  no Cast device found, or --device matched nothing
     10  another castwall run holds the lock
     11  not confirmed; nothing changed
     12  no usable network interface, or mDNS unavailable
    130  interrupted (changes of the run undone)
    """
    if ctx.obj is None:
        ctx.obj = Services()
    ctx.obj.debug = debug


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
    announced = svc.discover(addresses, timeout, expect=[d.uuid for d in expect.devices] if expect else ())
    devices, rejected = collate(announced)
    networks = [a for i in chosen for a in i.addresses]
    own = own_addresses(every)
    # Screen twice: once to settle which address a contested device the user
    # accepted has, then again with what ARP said about each address.
    devices, _ = screen(link_groups(devices), networks, own, trust)
    table = NeighbourTable(svc.runner, svc.paths.arp, poke=svc.poke)
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


def _timestamp(svc: Services) -> str:
    return svc.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _save_state(svc: Services, state: State, problem: str | None) -> None:
    """Write the state file; an unusable one (problem) is first kept as a copy."""
    kept = host.write_state(svc.paths.state_file, state, keep_old=bool(problem), stamp=svc.now().strftime("%Y%m%dT%H%M%SZ"))
    if kept:
        progress(f"The unusable state file was kept as {kept}.")


@cli.command()
@timeout_option
@interface_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
@click.pass_obj
def discover(svc: Services, timeout: float, interfaces: tuple[str, ...], as_json: bool) -> None:
    """List the Cast devices on the LAN (no root needed).

    One line per device: friendly name, model, kind (video, audio, group),
    address, port, MAC address where known, and UUID. A Cast group is shown
    with the device that hosts it.
    """
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


class AddressType(click.ParamType):
    name = "address"

    def convert(self, value, param, ctx):
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            self.fail(f"{value!r} is not an IP address", param, ctx)


@cli.command()
@yes_option
@dry_run_option
@device_option
@timeout_option
@interface_option
@click.option("--allow-routed", is_flag=True,
              help="Also allow devices reached through a router (not on a subnet of this computer).")
@click.option("--allow-public", is_flag=True, help="Also allow devices with public (globally routed) addresses.")
@click.option("--allow-contested", "contested", multiple=True, type=AddressType(), metavar="ADDRESS",
              help="Allow this address although two hosts or two announcements claim it (repeatable).")
@click.option("--reserve", type=click.Choice(["dnsmasq"]), default=None,
              help="Also make the DHCP reservations on this machine's dnsmasq: a drop-in file of castwall's own "
                   "in /etc/dnsmasq.d, checked with 'dnsmasq --test', then dnsmasq is restarted.")
@click.pass_obj
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
    """Allow each Cast device through ufw (needs root unless --dry-run).

    Discovers the devices, resolves their MAC addresses, reads the local port
    range, then shows the plan: a DHCP reservation hint per device and the
    exact ufw commands. After confirmation it applies them as one transaction
    (undone if any step fails), verifies the result and saves it in the state
    file. Running it again changes nothing unless a device moved or the port
    range changed.

    Only private addresses on a subnet of this computer get a rule; setup
    refuses, with the reason, special addresses, this computer's own, routed
    or public ones, and addresses that two hosts or two announcements claim.
    The --allow-* options lift those refusals one kind at a time.

    With --reserve dnsmasq, on a machine that is the LAN's DHCP server with
    dnsmasq, setup also writes the reservations of the devices that have a
    rule to /etc/dnsmasq.d/castwall.conf (its own file; no other is touched),
    checks it with 'dnsmasq --test' before putting it in place and restarts
    dnsmasq, all in the same transaction as the ufw changes.
    """
    root = svc.is_root()
    if not root and not dry_run:
        raise NeedRoot("setup changes the firewall and needs root: run 'sudo castwall setup' (or add --dry-run to only see the plan)")
    firewall = svc.firewall()
    if root:
        firewall.require()
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
                with deferred_signals() as interrupted:
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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@click.option("--no-discover", is_flag=True, help="Report from the state file and ufw only; do not look for devices.")
@timeout_option
@interface_option
@click.pass_obj
def status(svc: Services, as_json: bool, no_discover: bool, timeout: float, interfaces: tuple[str, ...]) -> None:
    """Show castwall's rules, the devices, and what needs attention (no root needed).

    Reports a device whose address moved since its rule was written, a rule
    for a device no longer seen, a new device without a rule, a port range
    that changed since the rules were written, ufw being inactive or missing,
    and an unusable state file. Devices that may get no rule are listed with
    the reason. With root it also checks the live ufw rules against the state
    file (a run killed part way shows here) and asks every device's address
    by ARP: an address two hosts claim needs attention. Exits 0 when all is
    in place and 3 when something needs action.
    """
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


@cli.command()
@device_option
@click.option("--all", "remove_all", is_flag=True, help="Remove every rule castwall set up.")
@yes_option
@dry_run_option
@click.pass_obj
def remove(svc: Services, selectors: tuple[str, ...], remove_all: bool, yes: bool, dry_run: bool) -> None:
    """Delete castwall's ufw rules: all of them, or those of some devices.

    Only rules tagged as castwall's are ever deleted; your own ufw rules stay
    as they are. Shows the rules first and asks before deleting.
    """
    if not selectors and not remove_all:
        raise UsageError("say what to remove: --device NAME|UUID (repeatable) or --all")
    if selectors and remove_all:
        raise UsageError("--all and --device cannot be used together")
    root = svc.is_root()
    if not root and not dry_run:
        raise NeedRoot("remove changes the firewall and needs root: run 'sudo castwall remove' (or add --dry-run)")
    firewall = svc.firewall()
    if root:
        firewall.require()
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
            with deferred_signals() as interrupted:
                run_transaction(firewall, placed(steps, order), finish=finish, interrupted=interrupted, progress=progress)
        finally:
            dns.discard()
        click.echo(f"\nDone: {len(steps)} castwall rule(s) removed; other ufw rules were not touched."
                   + (f" {_done(0, change)}" if change else ""))


class FormatType(click.ParamType):
    """A hint format by name or alias; 'list' asks for the list of them."""

    name = "format"

    def convert(self, value, param, ctx):
        if isinstance(value, hintlib.Format) or value == "list":
            return value
        found = hintlib.find_format(value)
        if found is None:
            self.fail(f"unknown format {value!r}; 'castwall hints --format list' names them", param, ctx)
        return found

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        names = ["list"] + [f.name for f in hintlib.FORMATS]
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]


@cli.command()
@click.option("--format", "fmt", type=FormatType(), default=None, metavar="FORMAT",
              help="The router's syntax: plain (default), dnsmasq, openwrt, openwrt-config, isc-dhcpd, kea, "
                   "mikrotik, pfsense, edgeos, vyos, networkd, csv or json; 'list' describes them.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (the same as --format json).")
@click.option("--no-discover", is_flag=True, help="Use only the devices saved by setup; do not look for devices.")
@timeout_option
@interface_option
@click.pass_obj
def hints(svc: Services, fmt, selectors: tuple[str, ...], as_json: bool, no_discover: bool, timeout: float,
          interfaces: tuple[str, ...]) -> None:
    """Print DHCP reservations for your router, in its own syntax (no root needed).

    A reservation makes the router's DHCP server always give a device the
    same address, so castwall's rule for that address stays right. The hints
    cover the devices seen now and those saved by setup. Each gets a host
    name made from its friendly name: a valid DNS label, unique in the
    output, the same on every run. Cast groups, devices whose MAC address is
    unknown, devices reached through a router and devices refused a rule are
    named with the reason instead (on standard error, except in the plain and
    json formats, which list them themselves).
    """
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


def main() -> None:
    cli(prog_name="castwall")
