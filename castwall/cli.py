"""The castwall command line: the commands, their options and help, and exit codes.

What a command does lives in castwall.commands.<command>, imported only when it runs:
--help and --version stay as quick as click itself allows.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import TYPE_CHECKING

import click

from castwall import __version__
from castwall.cli_params import (AddressType, AppNameType, AppType, FormatType, device_option, dry_run_option,
                                 firewall_options, interface_option, timeout_option, yes_option)
from castwall.errors import CastwallError, ExitCode

if TYPE_CHECKING:  # annotations only: the real imports happen when a command runs
    from castwall.commands.services import Services
    from castwall.model import Address


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
            if getattr(ctx.obj, "debug", False):
                traceback.print_exc()
            else:
                click.echo(
                    f"castwall: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
                    err=True,
                )
            ctx.exit(int(ExitCode.INTERNAL))


@click.group(cls=CastwallGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="castwall", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show timings, which firewall castwall chose and how it drives it, and tracebacks "
                                            "for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Let Chromecasts and other Cast devices through the firewall, with narrow rules per device.

    castwall finds Cast devices on the LAN with mDNS and DIAL, as Chrome
    does, resolves their MAC addresses, reads the local port range and
    allows UDP from each device's address to that range: the path of the
    devices' DIAL answers, which a default-deny firewall drops and which is
    Chrome's only way to find them where the LAN loses multicast. So casting
    from Chrome works while the firewall keeps denying everything else, and
    'castwall check' measures whether Chrome can find and reach each device.
    The rules go in the firewall that filters: ufw if it is enabled,
    firewalld if it runs, else the admin's nftables input chain that drops
    (--firewall and --nft-chain choose; where nothing filters, setup says
    there is nothing to open). With
    'setup --app' each device may also fetch media from a sender app (VLC,
    catt, ...) on exactly that app's ports. It suggests a DHCP reservation for each device so
    its address, and so its rule, stays valid ('castwall hints' prints them in
    the syntax of many routers); where the router cannot reserve, 'castwall
    follow enable' moves the rules with the devices, and shuts them while this
    computer is on another network.

    \b
    Exit codes:
      0  success, or all in place (status, check)
      1  internal error (a bug; --debug shows the traceback)
      2  usage error
      3  status or check: something needs attention
      4  root needed
      5  a required program is missing (ufw, nft, firewall-cmd, ip; dnsmasq for --reserve; pychromecast for check --app; systemd for follow), or no firewall castwall drives filters alone (ufw and firewalld both; iptables without ufw)
      6  a firewall command or the dnsmasq reservations failed; any change of the run was undone
      7  a firewall change failed and could not be fully undone
      8  unusable system data (port range, state file, command output)
      9  no Cast device found, or --device matched nothing
     10  another castwall run holds the lock
     11  not confirmed; nothing changed
     12  no usable network interface, or mDNS unavailable
    130  interrupted (changes of the run undone)
    """
    if ctx.obj is None:
        from castwall.commands.services import Services

        ctx.obj = Services()
    ctx.obj.debug = debug


@cli.command()
@timeout_option
@interface_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
@click.pass_obj
def discover(svc: Services, timeout: float, interfaces: tuple[str, ...], as_json: bool) -> None:
    """List the Cast devices on the LAN (no root needed).

    One line per device: friendly name, model, kind (video, audio, group),
    address, port, MAC address where known, how it was found (mDNS, unicast
    mDNS to a device set up before, DIAL) and UUID. A Cast group is shown
    with the device that hosts it. Without root only the DIAL answers that
    this computer's firewall lets in are seen; as root also those it drops.
    """
    from castwall.commands.discover import run

    run(svc, timeout, interfaces, as_json)


@cli.command()
@yes_option
@dry_run_option
@device_option
@timeout_option
@interface_option
@click.option("--app", "app_choices", multiple=True, type=AppType(), metavar="NAME[=PORT|=LOW:HIGH]",
              help="Also let each device fetch media from this sender app (repeatable; 'castwall apps' lists them): "
                   "TCP from the device to the app's ports. NAME=PORT when you run the app on another port; "
                   "tcp-range=LOW:HIGH opens a TCP range of your choice.")
@click.option("--allow-routed", is_flag=True,
              help="Also allow devices reached through a router (not on a subnet of this computer).")
@click.option("--allow-public", is_flag=True, help="Also allow devices with public (globally routed) addresses.")
@click.option("--allow-contested", "contested", multiple=True, type=AddressType(), metavar="ADDRESS",
              help="Allow this address although two hosts or two announcements claim it (repeatable).")
@click.option("--reserve", type=click.Choice(["dnsmasq"]), default=None,
              help="Also make the DHCP reservations on this machine's dnsmasq: a drop-in file of castwall's own "
                   "in /etc/dnsmasq.d, checked with 'dnsmasq --test', then dnsmasq is restarted.")
@firewall_options
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
    app_choices: tuple,
) -> None:
    """Allow each Cast device through the firewall (needs root unless --dry-run).

    Discovers the devices, resolves their MAC addresses, reads the local port
    range, then shows the plan: a DHCP reservation hint per device and the
    exact firewall commands (ufw's, nft's or firewall-cmd's). After confirmation it applies them as one transaction
    (undone if any step fails), verifies the result and saves it in the state
    file. Running it again changes nothing unless a device moved, the port
    range changed or an app's ports changed.

    Only private addresses on a subnet of this computer get a rule; setup
    refuses, with the reason, special addresses, this computer's own, routed
    or public ones, and addresses that two hosts or two announcements claim.
    The --allow-* options lift those refusals one kind at a time.

    With --reserve dnsmasq, on a machine that is the LAN's DHCP server with
    dnsmasq, setup also writes the reservations of the devices that have a
    rule to /etc/dnsmasq.d/castwall.conf (its own file; no other is touched),
    checks it with 'dnsmasq --test' before putting it in place and restarts
    dnsmasq, all in the same transaction as the ufw changes.

    With --app (sender apps such as VLC or catt, which serve the media
    themselves), every device that gets a rule also gets TCP from its address
    to exactly that app's ports, written through castwall's ufw application
    profile (castwall-NAME) where it is installed, else as a plain port rule.
    The apps are kept in the state file: a later setup gives them to new and
    moved devices too, until 'castwall remove --app NAME'.
    """
    from castwall.commands.setup import run

    run(svc, yes, dry_run, selectors, timeout, interfaces, allow_routed, allow_public, contested, reserve, app_choices)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@click.option("--no-discover", is_flag=True, help="Report from the state file and ufw only; do not look for devices.")
@click.option("--check", "check", is_flag=True,
              help="Also measure, as 'castwall check' does, whether Chrome can find and reach each device.")
@timeout_option
@interface_option
@firewall_options
@click.pass_obj
def status(svc: Services, as_json: bool, no_discover: bool, check: bool, timeout: float, interfaces: tuple[str, ...]) -> None:
    """Show castwall's rules, the devices, and what needs attention (no root needed).

    Reports a device whose address moved since its rule was written, a rule
    for a device no longer seen, a new device without a rule, a port range
    that changed since the rules were written, the firewall inactive or
    missing (or nothing filtering at all), castwall's nftables set, rule or
    include line missing, an unusable state file, a device without the rule of
    a chosen sender app (or with one for an old port), and app rules whose ufw
    profile has gone or was changed. Devices that may get no rule are listed
    with the reason. With root it also checks the live firewall rules against
    the state file (a run killed part way shows here) and asks every device's address
    by ARP: an address two hosts claim needs attention. Exits 0 when all is
    in place and 3 when something needs action. With --check it also reports
    each device that Chrome could not find or reach (see 'castwall check').
    """
    from castwall.commands.status import run

    run(svc, as_json, no_discover, check, timeout, interfaces)


@cli.command()
@device_option
@interface_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
@timeout_option
@click.option("--app", "app", type=AppType(), default=None, metavar="NAME[=PORT|=LOW:HIGH]",
              help="Instead, prove that one --device can fetch media from this sender app: it plays a test sound "
                   "served on the app's port (needs pychromecast; asks first).")
@click.option("--yes", "-y", is_flag=True, help="With --app: play the test sound without asking.")
@firewall_options
@click.pass_obj
def check(svc: Services, selectors: tuple[str, ...], interfaces: tuple[str, ...], as_json: bool, timeout: float,
          app, yes: bool) -> None:
    """Measure whether Chrome can find and reach each device (no root needed).

    castwall changes nothing. For every device seen now or set up before, it measures what Chrome
    needs on this computer: whether the device's mDNS answers arrive by
    multicast; whether its DIAL reply to an M-SEARCH sent from a random local
    port, as Chrome sends it, reaches that port (as root castwall also reads
    the wire, so a reply this computer's firewall drops is reported as
    such); and whether a TCP connection to its Cast port opens. It gives one
    verdict per device: how Chrome finds it, or what is missing and the
    command that fixes it. Root sees more. A device castwall refuses a rule
    for its address (this computer's own, a broadcast, routed or public one)
    and nobody approved is listed as not checked. Exits 0 when Chrome can
    find and reach every device, 3 otherwise, 9 when no device is seen or
    known.

    With --app NAME --device D it proves instead, end to end, the path a
    sender app needs: castwall serves one second of silence on the app's
    port, asks the device over the Cast protocol to play it, and reports
    whether the device's own connection arrived (exit 0) or not (exit 3,
    with the fix). It needs pychromecast (python3-pychromecast) and asks
    before it plays anything, unless --yes.
    """
    from castwall.commands.check import run

    run(svc, selectors, interfaces, as_json, timeout, app, yes)


@cli.command()
@device_option
@click.option("--app", "app_names", multiple=True, type=AppNameType(), metavar="NAME",
              help="Withdraw this sender app: its rules on every device, and it is no longer chosen (repeatable).")
@click.option("--all", "remove_all", is_flag=True, help="Remove every rule castwall set up.")
@yes_option
@dry_run_option
@firewall_options
@click.pass_obj
def remove(svc: Services, selectors: tuple[str, ...], app_names: tuple[str, ...], remove_all: bool, yes: bool,
           dry_run: bool) -> None:
    """Delete castwall's rules: all of them, those of some devices, or those of a sender app.

    Only rules tagged as castwall's are ever deleted; your own rules stay
    as they are. Shows the rules first and asks before deleting. --app NAME
    deletes that app's rules from every device and drops the app from the
    apps a later setup gives the devices; --device takes all of a device's
    rules away.
    """
    from castwall.commands.remove import run

    run(svc, selectors, remove_all, yes, dry_run, app_names)


@cli.group()
def follow() -> None:
    """Keep the rules with the devices when addresses change, and close them on other networks.

    A pass (what 'follow run' does, and what the systemd timer runs every 5
    minutes and the network hooks run when this computer joins a network)
    rediscovers the devices setup allowed. It moves a device's rules to its
    new address only when the device is announced from that one address, the
    address passes setup's checks and only the MAC recorded at setup answers
    ARP for it. It withdraws a device's rules while another MAC answers for
    their address, or at once when this computer is on another network than
    the one the device was allowed on (another gateway MAC or subnet), and
    brings them back when the device answers there again. It never adds a
    device that setup did not allow. A device that moves more than 3 times
    within an hour is no longer followed until the next setup. Each change and
    each refusal is one line (in the journal: journalctl -t castwall).
    """


@follow.command("run")
@timeout_option
@interface_option
@firewall_options
@click.pass_obj
def follow_run(svc: Services, timeout: float, interfaces: tuple[str, ...]) -> None:
    """Run one pass now, without asking (needs root); the service runs this."""
    from castwall.commands.follow import run_pass

    run_pass(svc, interfaces, timeout)


@follow.command("enable")
@click.pass_obj
def follow_enable(svc: Services) -> None:
    """Turn follow mode on: enable and start castwall-follow.timer, and run a pass now (needs root)."""
    from castwall.commands.follow import enable

    enable(svc)


@follow.command("disable")
@click.pass_obj
def follow_disable(svc: Services) -> None:
    """Turn follow mode off: disable and stop the timer; the network hooks then do nothing (needs root)."""
    from castwall.commands.follow import disable

    disable(svc)


@follow.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@click.pass_obj
def follow_status(svc: Services, as_json: bool) -> None:
    """Say whether follow mode is on, what its last pass did, and how each allowed device stands (no root needed)."""
    from castwall.commands.follow import status

    status(svc, as_json)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
@click.pass_obj
def apps(svc: Services, as_json: bool) -> None:
    """List the sender apps castwall knows, and their ports (no root needed).

    Apps that cast a file (VLC, catt, mkchromecast, ...) serve the media
    themselves: the Cast device connects back to a TCP port of this computer.
    For each app: the ports, where they come from, the app's own option that
    sets the port, castwall's ufw profile for it and whether it is installed,
    and whether setup --app chose it. An app that picks a random port gets no
    rule until you fix its port with that option and give castwall the same
    port (--app NAME=PORT).
    """
    from castwall.commands.apps import run

    run(svc, as_json)


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
    from castwall.commands.hints import run

    run(svc, fmt, selectors, as_json, no_discover, timeout, interfaces)


def main() -> None:
    """The console entry point: run the command, then end the process at once.

    By then every file castwall wrote is closed and every lock released by its
    context manager; the interpreter's own teardown (module objects,
    zeroconf's event loop thread) would only add ~30 ms to every run.
    """
    code: int | str | None = 0
    try:
        cli(prog_name="castwall")  # standalone mode: it ends in SystemExit
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message") semantics
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (castwall ... | head): nothing more to say
            code = code or 1
    os._exit(code or 0)
