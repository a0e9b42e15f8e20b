"""What the commands that change the firewall share: root and ufw, confirmation, the state file, drift."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import click

from castwall.commands.services import Services, progress
from castwall.errors import Declined, NeedRoot
from castwall.model import Rule, State
from castwall.system import host
from castwall.system.ufw import UfwFirewall

if TYPE_CHECKING:
    from castwall.system.dnsmasq import Change
    from castwall.system.ufwlib import UfwLibrary


def confirm(question: str) -> None:
    try:
        agreed = click.confirm(question, default=False, err=True)
    except click.exceptions.Abort:
        raise Declined("no answer to the confirmation question; nothing changed (use --yes to apply without asking)") from None
    if not agreed:
        raise Declined("not confirmed; nothing changed")


def firewall_for(svc: Services, dry_run: bool, need_root: str) -> tuple[bool, UfwFirewall | UfwLibrary]:
    """Whether castwall runs as root, and ufw; a change without root stops here with need_root."""
    root = svc.is_root()
    if not root and not dry_run:
        raise NeedRoot(need_root)
    firewall = svc.firewall()
    if root:
        firewall.require()
    return root, firewall


def timestamp(svc: Services) -> str:
    return svc.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def save_state(svc: Services, state: State, problem: str | None) -> None:
    """Write the state file; an unusable one (problem) is first kept as a copy."""
    kept = host.write_state(svc.paths.state_file, state, keep_old=bool(problem), stamp=svc.now().strftime("%Y%m%dT%H%M%SZ"))
    if kept:
        progress(f"The unusable state file was kept as {kept}.")


def done_text(steps: int, change: Change | None) -> str:
    parts = [f"{steps} ufw change(s) applied and verified."] if steps else []
    if change and not change.empty:
        parts.append(f"dnsmasq restarted with {change.path}." if change.new else f"{change.path} removed; dnsmasq restarted.")
    return " ".join(parts)


def drift(recorded: State | None, owned: Sequence[Rule]) -> list[str]:
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
                   + ", ".join(f"{r.traffic} from {r.ip}" for r in sorted(extra, key=Rule.sort_key)) + "; castwall takes them into account")
    if gone:
        out.append(f"{len(gone)} rule(s) recorded in the state file are no longer in ufw: "
                   + ", ".join(f"{r.traffic} from {r.ip}" for r in sorted(gone, key=Rule.sort_key)))
    return out
