"""Everything a command does to the outside world, in one object tests replace, and its terminal output."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

import click

from castwall.announcement import Announcement
from castwall.apply import Firewall
from castwall.model import FirewallChoice, NftChain
from castwall.system import host
from castwall.system.arp import packet_arp
from castwall.system.discovery import discover as discover_devices
from castwall.system.interfaces import NetInterface, list_interfaces
from castwall.system.neighbours import poke
from castwall.system.reach import tcp_opens
from castwall.system.runner import Runner, SubprocessRunner
from castwall.system.firewalls import Landscape, choose, describe, look
from castwall.system.nftables import NftablesFirewall
from castwall.system.ufw import UfwFirewall

if TYPE_CHECKING:  # loaded when a command needs them: discover and --help do not
    from castwall.system.dnsmasq import Dnsmasq
    from castwall.system.ssdp import DialSearch
    from castwall.system.ufwlib import UfwLibrary

DIAL_ENV = "CASTWALL_DIAL"


def dial_search(interfaces, *, wire: bool, misplaced, may_fetch, note) -> DialSearch | None:
    """A DIAL search on the interfaces, or None when CASTWALL_DIAL=off asks for mDNS alone.

    Raises UsageError for another value of CASTWALL_DIAL.
    """
    if host.switch(DIAL_ENV, ("on", "off")) == "off":
        note("DIAL: off (CASTWALL_DIAL=off)")
        return None
    from castwall.system.ssdp import DialSearch

    return DialSearch(interfaces, wire=wire, misplaced=misplaced, may_fetch=may_fetch, note=note)


@dataclass
class Services:
    """Everything with a side effect, so tests can hand in their own."""

    paths: host.Paths = field(default_factory=host.Paths.from_environment)
    runner: Runner = field(default_factory=SubprocessRunner)
    is_root: Callable[[], bool] = host.is_root
    discover: Callable[..., list[Announcement]] = discover_devices
    dial: Callable[..., DialSearch | None] = dial_search
    raw_arp: Callable | None = packet_arp
    poke: Callable = poke
    reach: Callable = tcp_opens
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    lock_wait: float = 10.0
    debug: bool = False
    ufw_path: str | None = None  # "auto" or "cli"; None: CASTWALL_UFW says
    firewall_given: str | None = None  # --firewall
    nft_chain: NftChain | None = None  # --nft-chain
    nft_cli: bool | None = None  # True: the nft command through runner, never libnftables (None: CASTWALL_NFT decides)
    firewalld_cli: bool | None = None  # True: firewall-cmd through runner, never D-Bus (None: CASTWALL_FIREWALLD decides)
    _nft: NftablesFirewall | None = field(default=None, init=False, repr=False)

    def note(self, message: str) -> None:
        """A --debug line: what castwall does, how long it took, which path it took."""
        if self.debug:
            click.echo(f"castwall: debug: {message}", err=True)

    def interfaces(self) -> list[NetInterface]:
        return list_interfaces(self.runner)

    def landscape(self) -> Landscape:
        """What filters this computer's incoming traffic."""
        root = self.is_root()
        reader = self.nftables(None).items if root else None
        with self.timed("finding the firewall"):
            return look(self.runner, self.paths.ufw_conf, self.paths.system_bus, root, reader)

    def nftables(self, chain: NftChain | None) -> NftablesFirewall:
        """nftables, read by the firewall's detection and then by the backend through one loaded library."""
        if self._nft is None:
            self._nft = NftablesFirewall(self.runner, None, self.paths.nft_include, self.paths.nftables_conf,
                                         cli=self.nft_cli, note=self.note)
        return self._nft if chain is None else self._nft.at(chain)

    def choose_firewall(self, recorded: FirewallChoice | None) -> FirewallChoice | None:
        """The firewall castwall's rules go in (None: nothing filters). Raises UsageError, TwoManagers."""
        land = self.landscape()
        picked = choose(land, self.firewall_given, self.nft_chain, recorded)
        self.note(describe(land, picked))
        return picked

    def firewall(self, recorded: FirewallChoice | None = None, prefer_recorded: bool = False) -> Firewall | None:
        """The backend of the firewall that filters, or None when nothing filters. With prefer_recorded, the
        one the state file names (recorded), unless --firewall or --nft-chain says otherwise."""
        given = self.firewall_given is not None or self.nft_chain is not None
        choice = recorded if prefer_recorded and recorded and not given else self.choose_firewall(recorded)
        if choice is None:
            return None
        if choice.name == "nftables":
            return self.nftables(choice.chain)
        if choice.name == "firewalld":
            from castwall.system.firewalld import FirewalldFirewall

            return FirewalldFirewall(self.runner, self.paths.firewalld_journal, note=self.note, cli=self.firewalld_cli)
        return self.ufw_backend()

    def ufw_backend(self) -> UfwFirewall | UfwLibrary:
        """ufw's Python library in this process where it loads (as root), else the ufw command."""
        path = host.switch("CASTWALL_UFW", ("auto", "cli"), self.ufw_path)
        cli = UfwFirewall(self.runner)
        why = None
        if path == "cli":
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

        return Dnsmasq(self.runner, self.paths.dnsmasq_dir, self.paths.dnsmasq_conf)


def progress(message: str) -> None:
    click.echo(message, err=True)


def warn(message: str) -> None:
    click.echo(f"castwall: warning: {message}", err=True)


def note(message: str) -> None:
    click.echo(f"castwall: note: {message}", err=True)


def not_root_hint(command: str) -> str:
    """The end of a "no Cast device answered" error without root."""
    return f"; without root only the DIAL replies this computer's firewall lets in are seen: try 'sudo castwall {command}'"


NOT_ROOT_DIAL = ("not root: only the DIAL replies that this computer's firewall lets in were seen; "
                 "with sudo castwall also sees the ones it drops")
