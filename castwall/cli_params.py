"""The command line's shared options and parameter types: what --timeout, --app, --format ... accept.

Like castwall.cli, it imports only click at load time, so --help stays quick.
"""

from __future__ import annotations

import ipaddress

import click

DEFAULT_TIMEOUT = 5.0


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


FIREWALL_NAMES = ("ufw", "firewalld", "nftables")  # castwall.model.FIREWALLS (not imported: --help stays quick)


def _given_firewall(ctx: click.Context, param, value):
    if value is not None and ctx.obj is not None:
        ctx.obj.firewall_given = value
    return value


def _given_chain(ctx: click.Context, param, value):
    if not value:
        return value
    from castwall.model import NftChain

    try:
        chain = NftChain(*value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    if ctx.obj is not None:
        ctx.obj.nft_chain = chain
    return value


def firewall_options(f):
    """--firewall and --nft-chain: which firewall castwall's rules go in, when castwall should not find it itself."""
    f = click.option("--nft-chain", nargs=3, metavar="FAMILY TABLE CHAIN", default=None, expose_value=False,
                     callback=_given_chain,
                     help="The admin's nftables input chain for castwall's rule (implies --firewall nftables), "
                          "e.g. inet filter input.")(f)
    return click.option("--firewall", type=click.Choice(FIREWALL_NAMES), default=None, expose_value=False,
                        callback=_given_firewall,
                        help="The firewall castwall's rules go in. Default: the one that filters incoming traffic "
                             "(ufw if enabled, firewalld if running, else the admin's nftables input chain that "
                             "drops); status, remove and follow run use the one the state file names.")(f)


class AddressType(click.ParamType):
    name = "address"

    def convert(self, value, param, ctx):
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            self.fail(f"{value!r} is not an IP address", param, ctx)


class AppType(click.ParamType):
    """A sender app for --app: NAME, NAME=PORT, NAME=LOW:HIGH or tcp-range=LOW:HIGH."""

    name = "app"

    def convert(self, value, param, ctx):
        from castwall import apps

        if not isinstance(value, str):
            return value
        try:
            return apps.parse_choice(value)
        except apps.AppError as exc:
            self.fail(str(exc), param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from castwall import apps

        names = [a.name for a in apps.CATALOGUE if a.ports is not None] + [apps.TCP_RANGE + "="]
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]


class AppNameType(click.ParamType):
    """An app name for remove --app: one of the catalogue's, or tcp-range."""

    name = "app"

    def convert(self, value, param, ctx):
        from castwall import apps

        name = value.strip().lower()
        if name not in apps.BY_NAME and name != apps.TCP_RANGE:
            self.fail(f"no app called {value!r}; 'castwall apps' lists them", param, ctx)
        return name

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from castwall import apps

        return [CompletionItem(n) for n in [a.name for a in apps.CATALOGUE] + [apps.TCP_RANGE] if n.startswith(incomplete)]


class FormatType(click.ParamType):
    """A hint format by name or alias; 'list' asks for the list of them."""

    name = "format"

    def convert(self, value, param, ctx):
        from castwall import hints as hintlib

        if isinstance(value, hintlib.Format) or value == "list":
            return value
        found = hintlib.find_format(value)
        if found is None:
            self.fail(f"unknown format {value!r}; 'castwall hints --format list' names them", param, ctx)
        return found

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from castwall import hints as hintlib

        names = ["list"] + [f.name for f in hintlib.FORMATS]
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]
