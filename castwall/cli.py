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
from castwall import render
from castwall.apply import check_empty, deferred_signals, placed, run_transaction
from castwall.announcement import Announcement, Rejected, collate, link_groups
from castwall.errors import CastwallError, Declined, ExitCode, NeedRoot, NotFound, UsageError
from castwall.model import Address, Device, Rule, State
from castwall.planner import Trust, assess, next_state, plan_setup, screen, select_devices, select_rules_to_remove
from castwall.system import host
from castwall.system.discovery import discover as discover_devices
from castwall.system.interfaces import NetInterface, choose_interfaces, list_interfaces, own_addresses
from castwall.system.neighbours import NeighbourTable, poke, resolve_macs, scapy_arp
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
    raw_arp: Callable | None = scapy_arp
    poke: Callable = poke
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    lock_wait: float = 10.0
    debug: bool = False

    def interfaces(self) -> list[NetInterface]:
        return list_interfaces(self.runner)

    def firewall(self) -> UfwFirewall:
        return UfwFirewall(self.runner)


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
    its address, and so its rule, stays valid.

    \b
    Exit codes:
      0  success, or all in place (status)
      1  internal error (a bug; --debug shows the traceback)
      2  usage error
      3  status: something needs attention
      4  root needed
      5  a required program is missing (ufw, ip)
      6  a ufw command failed; any change of the run was undone
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
    return Survey(devices, rejected, refused, chosen)


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
    """
    root = svc.is_root()
    if not root and not dry_run:
        raise NeedRoot("setup changes the firewall and needs root: run 'sudo castwall setup' (or add --dry-run to only see the plan)")
    firewall = svc.firewall()
    if root:
        firewall.require()
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
        click.echo(render.plan_text(plan, source=str(svc.paths.port_range), known=previous.devices if previous else ()))
        if dry_run:
            click.echo("\nDry run: nothing was changed.")
            return

        def save(rules: Sequence[Rule]) -> None:
            owned = [r for r in rules if r.owner]
            _save_state(svc, next_state(previous, plan.devices, owned, port_range, _timestamp(svc)), problem)

        if not plan.empty:
            if not yes:
                click.echo("")
                _confirm(f"Run these {len(plan.steps)} ufw command(s)?")

            def finish() -> None:
                after = firewall.rules().rules
                check_empty(planned(after).steps)
                save(after)

            with deferred_signals() as interrupted:
                run_transaction(firewall, placed(plan.steps, order), finish=finish, interrupted=interrupted, progress=progress)
            click.echo(f"\nDone: {len(plan.steps)} ufw change(s) applied and verified. {render.allowed_summary(plan)}")
        else:
            save(current)
            click.echo(f"\nNothing to change: every device already has its rule. {render.allowed_summary(plan)}")
        if active is False:
            warn("ufw is INACTIVE: these rules have no effect until you run 'sudo ufw enable' (castwall does not enable it for you)")


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
        if not steps:
            click.echo("castwall has no rules in ufw; nothing to remove.")
            return
        click.echo(f"ufw commands castwall will run ({len(steps)}):")
        click.echo(render.steps_text(steps))
        if dry_run:
            click.echo("\nDry run: nothing was changed.")
            return
        if not yes:
            click.echo("")
            _confirm(f"Delete these {len(steps)} rule(s)?")

        def finish() -> None:
            remaining = firewall.rules().owned
            check_empty([s for s in steps if s.rule in remaining])
            owners = {r.owner for r in remaining}
            devices = tuple(d for d in state.devices if d.uuid in owners)
            rules = tuple(sorted(remaining, key=Rule.sort_key))
            _save_state(svc, State(state.port_range, devices, rules, _timestamp(svc)), problem)

        with deferred_signals() as interrupted:
            run_transaction(firewall, placed(steps, order), finish=finish, interrupted=interrupted, progress=progress)
        click.echo(f"\nDone: {len(steps)} castwall rule(s) removed; other ufw rules were not touched.")


def main() -> None:
    cli(prog_name="castwall")
