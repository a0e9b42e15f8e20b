"""What the commands that change the firewall share: root and ufw, confirmation, the state file, drift."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import click

from castwall.commands.services import Services, progress
from castwall.errors import Declined, NeedRoot
from castwall.model import FirewallChoice, Rule, State, Step
from castwall.system import host
from castwall.system.firewalls import NOTHING_FILTERS

if TYPE_CHECKING:
    from castwall.apply import Firewall
    from castwall.system.dnsmasq import Change


def confirm(question: str) -> None:
    try:
        agreed = click.confirm(question, default=False, err=True)
    except click.exceptions.Abort:
        raise Declined("no answer to the confirmation question; nothing changed (use --yes to apply without asking)") from None
    if not agreed:
        raise Declined("not confirmed; nothing changed")


def firewall_for(svc: Services, dry_run: bool, need_root: str, recorded: State | None = None,
                 prefer_recorded: bool = False) -> tuple[bool, Firewall | None]:
    """Whether castwall runs as root, and the firewall that filters (None: nothing does); a change without
    root stops here with need_root. With prefer_recorded, the firewall the state file names (if it
    names one and --firewall does not say otherwise)."""
    root = svc.is_root()
    if not root and not dry_run:
        raise NeedRoot(need_root)
    firewall = svc.firewall(recorded.firewall if recorded else None, prefer_recorded)
    if root and firewall is not None:
        firewall.require()
    return root, firewall


def commands_for(firewall: Firewall, steps: Sequence[Step], root: bool) -> list[str] | None:
    """The firewall's own commands for the steps, for the plan; without root only ufw's can be known."""
    if root or firewall.name == "ufw":
        return firewall.commands(steps)
    return [f"(the exact {firewall.name} commands need root: castwall reads the live ruleset to write them)"]


def choice_of(firewall: Firewall) -> FirewallChoice:
    """What the state file records of the firewall castwall's rules are in."""
    return FirewallChoice(firewall.name, getattr(firewall, "chain", None))


def nothing_filters() -> str:
    return f"{NOTHING_FILTERS}: castwall has nothing to open, and casting is not blocked here ('castwall check' measures it)"


def timestamp(svc: Services) -> str:
    return svc.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def save_state(svc: Services, state: State, problem: str | None) -> None:
    """Write the state file; an unusable one (problem) is first kept as a copy."""
    kept = host.write_state(svc.paths.state_file, state, keep_old=bool(problem), stamp=svc.now().strftime("%Y%m%dT%H%M%SZ"))
    if kept:
        progress(f"The unusable state file was kept as {kept}.")


def done_text(steps: int, change: Change | None, firewall: str = "ufw") -> str:
    parts = [f"{steps} {firewall} change(s) applied and verified."] if steps else []
    if change and not change.empty:
        parts.append(f"dnsmasq restarted with {change.path}." if change.new else f"{change.path} removed; dnsmasq restarted.")
    return " ".join(parts)


def drift(recorded: State | None, owned: Sequence[Rule], firewall: str = "ufw") -> list[str]:
    """What differs between the state file and castwall's rules in the firewall, as warnings.

    A run killed part way (SIGKILL, power loss) leaves such a difference; the
    run that sees it plans from ufw's rules and saves a state that matches.
    """
    known = set(recorded.rules) if recorded else set()
    extra = [r for r in owned if r not in known]
    gone = known - set(owned)
    out = []
    if extra and recorded is not None:
        out.append(f"{firewall} holds {len(extra)} castwall rule(s) the state file does not record (an interrupted run?): "
                   + ", ".join(f"{r.traffic} from {r.ip}" for r in sorted(extra, key=Rule.sort_key)) + "; castwall takes them into account")
    if gone:
        out.append(f"{len(gone)} rule(s) recorded in the state file are no longer in {firewall}: "
                   + ", ".join(f"{r.traffic} from {r.ip}" for r in sorted(gone, key=Rule.sort_key)))
    return out
