"""Which firewall filters this computer's incoming traffic: ufw, firewalld, or the admin's own nftables ruleset.

A rule only helps inside the firewall that drops: an accept in a table of castwall's own leaves
another table's drop in force (a packet passes a hook only if no base chain on it drops it). So
castwall finds the one that filters and puts its rules there; --firewall (and the state file)
choose when more than one is installed, and two managers filtering at once is an error, since
opening one of them would leave the other dropping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from castwall.errors import CastwallError, MissingTool, NeedRoot, UsageError
from castwall.model import NOTHING_FILTERS, FirewallChoice, NftChain  # noqa: F401 (NOTHING_FILTERS: for callers)
from castwall.system import nft_ruleset as nr
from castwall.system.runner import Runner



class TwoManagers(MissingTool):
    """Two firewall managers filter at once: castwall cannot open both, and one alone does not help."""


class IptablesOnly(MissingTool):
    """iptables rules drop incoming traffic, and no firewall castwall drives manages them (ufw gone, say)."""


class CannotTell(NeedRoot):
    """Without root castwall cannot read the nftables ruleset, and nothing else tells which firewall filters."""


@dataclass(frozen=True)
class Landscape:
    """What filters here, as far as castwall could see."""

    ufw: bool  # ufw is installed and enabled (ENABLED=yes)
    firewalld: bool  # the firewalld daemon answers
    chains: tuple[nr.InputChain, ...] | None  # the ruleset's input chains; None: not read (not root, nft missing)
    ufw_installed: bool = False
    why_unread: str | None = None
    needs_root: bool = False  # the ruleset was not read for want of root

    @property
    def managers(self) -> list[str]:
        return [name for name, on in (("ufw", self.ufw), ("firewalld", self.firewalld)) if on]

    def own_chains(self) -> list[nr.InputChain]:
        """Input chains that are the admin's own: not firewalld's table, not iptables-nft's (ufw's)."""
        return [c for c in self.chains or () if c.managed_by is None]

    def dropping(self) -> list[NftChain]:
        return [c.chain for c in self.own_chains() if c.drops]


def ufw_enabled(conf: Path) -> bool:
    """Whether ufw.conf says ENABLED=yes (ufw writes it on `ufw enable`; the file is readable without root)."""
    try:
        text = conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"^\s*ENABLED\s*=\s*['\"]?yes['\"]?\s*$", text, re.MULTILINE | re.IGNORECASE) is not None


def firewalld_running(runner: Runner, bus: Path) -> bool:
    """Whether firewalld answers on the system bus (`firewall-cmd --state`: 0 running, 252 not running)."""
    if runner.which("firewall-cmd") is None or not bus.exists():
        return False
    try:
        return runner.run(["firewall-cmd", "--state"], timeout=20).returncode == 0
    except CastwallError:
        return False


def look(runner: Runner, ufw_conf: Path, bus: Path, root: bool, read_nft=None) -> Landscape:
    """Find what filters. read_nft() returns the ruleset's JSON objects (as root); without it chains stay unread."""
    ufw_installed = runner.which("ufw") is not None
    ufw = ufw_installed and ufw_enabled(ufw_conf)
    firewalld = firewalld_running(runner, bus)
    chains, why = None, None
    if ufw or firewalld:
        why = "a firewall manager filters"
    elif not root:
        why = "reading the nftables ruleset needs root"
    elif runner.which("nft") is None or read_nft is None:
        why = "nft is not installed"
    else:
        try:
            chains = tuple(nr.input_chains(read_nft()))
        except CastwallError as exc:
            why = exc.message
    return Landscape(ufw, firewalld, chains, ufw_installed, why, needs_root=chains is None and not root and not (ufw or firewalld))


def _chain_for(land: Landscape, recorded: FirewallChoice | None) -> NftChain | None:
    """The admin's input chain castwall's rule goes in: the one that drops; the recorded one; None if unknown."""
    if recorded is not None and recorded.chain is not None and (
            land.chains is None or recorded.chain in [c.chain for c in land.own_chains()]):
        return recorded.chain
    dropping = land.dropping()
    if len(dropping) > 1:
        raise UsageError(f"{len(dropping)} nftables input chains drop by default ({', '.join(map(str, dropping))}): "
                         "name the one for castwall's rule with --nft-chain FAMILY TABLE CHAIN")
    if dropping:
        return dropping[0]
    own = land.own_chains()
    return own[0].chain if len(own) == 1 else None


def choose(land: Landscape, given: str | None, chain: NftChain | None, recorded: FirewallChoice | None) -> FirewallChoice | None:
    """The firewall castwall's rules go in; None when nothing filters incoming traffic.

    given is --firewall, chain --nft-chain; recorded is the state file's choice. Raises TwoManagers
    when ufw and firewalld both filter, UsageError when --nft-chain comes without nftables or the
    chain cannot be told.
    """
    given = _asked(land, given, chain)
    if given == "nftables":
        picked = chain or _chain_for(land, recorded)
        if picked is None:
            raise UsageError("castwall cannot tell which nftables input chain is the admin's: "
                             "name it with --nft-chain FAMILY TABLE CHAIN")
        return FirewallChoice("nftables", picked)
    if given is not None:
        return FirewallChoice(given)
    return _detected(land, recorded)


def _asked(land: Landscape, given: str | None, chain: NftChain | None) -> str | None:
    """The firewall the options ask for (--nft-chain implies nftables), once they and the landscape allow it."""
    if chain is not None and given not in (None, "nftables"):
        raise UsageError("--nft-chain names an nftables chain; it goes with --firewall nftables")
    if chain is not None:
        given = "nftables"
    if len(land.managers) > 1:
        raise TwoManagers("ufw and firewalld both filter incoming traffic, so a path opened in one stays shut by the "
                          "other: stop one of them (sudo ufw disable, or sudo systemctl disable --now firewalld)")
    if chain is not None and land.chains is not None:
        owner = next((c.managed_by for c in land.chains if c.chain == chain and c.managed_by), None)
        if owner:
            raise UsageError(f"nftables chain {chain} belongs to {owner}, not to the admin's own ruleset: castwall does "
                             f"not write rules there (use --firewall {'firewalld' if owner == 'firewalld' else 'ufw'})")
    return given


def _detected(land: Landscape, recorded: FirewallChoice | None) -> FirewallChoice | None:
    """The firewall that filters, as the landscape shows it, when no option names one."""
    if land.managers:
        return FirewallChoice(land.managers[0])
    if land.chains is None:
        # The ruleset could not be read (no root): what castwall used last time, else ufw as before.
        if recorded is not None:
            return recorded
        if land.ufw_installed:
            return FirewallChoice("ufw")
        if land.needs_root:
            raise CannotTell("without root castwall cannot read the nftables ruleset, so it cannot tell whether "
                             "anything filters incoming traffic: run it with sudo")
        return None
    if land.dropping():
        return FirewallChoice("nftables", _chain_for(land, recorded))
    # An installed ufw that is not enabled yet keeps castwall's rules for the day it is (and says so).
    if land.ufw_installed:
        return FirewallChoice("ufw")
    iptables = [c.chain for c in land.chains if c.managed_by == "iptables-nft" and c.drops]
    if iptables:
        raise IptablesOnly(f"iptables rules drop incoming traffic ({', '.join(map(str, iptables))}), but ufw, which "
                           "castwall drives, is not installed: install it with: sudo apt install ufw (castwall does "
                           "not write plain iptables rules)")
    return None


def describe(land: Landscape, picked: FirewallChoice | None) -> str:
    """For --debug: what castwall saw and what it chose."""
    chains = "unread" if land.chains is None else (", ".join(
        f"{c.chain}{' drops' if c.drops else ''}{f' ({c.managed_by})' if c.managed_by else ''}" for c in land.chains) or "none")
    return (f"firewall: {picked or 'none'}; ufw {'active' if land.ufw else 'not active'}, "
            f"firewalld {'running' if land.firewalld else 'not running'}, nftables input chains: {chains}"
            + (f" ({land.why_unread})" if land.chains is None and land.why_unread else ""))
