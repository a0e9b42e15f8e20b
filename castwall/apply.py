"""Run a plan's steps as one transaction: undo in reverse on failure, verify at the end."""

from __future__ import annotations

import contextlib
import signal
from dataclasses import replace
from typing import Callable, Iterator, Protocol, Sequence

from castwall.errors import CastwallError, FirewallInconsistent, FirewallRolledBack, Interrupted, ToolFailed
from castwall.model import Action, Rule, RuleSet, Step


class Firewall(Protocol):
    """What castwall needs of a firewall: ufw (its command or its library), firewalld, nftables.

    Reading: installed(), require() (MissingTool), active() (it filters now), rules() (what it
    holds of castwall's shape), problems(recorded) (lines for status; recorded: the state file's rules), commands(steps) (its native
    commands for a plan, None when there is one per step, as ufw's), sync() (bring what it keeps
    across reboots in line with what runs). A run: begin() before the first step, apply() per
    step (True when it changes something; a batch backend only records it), commit() after the
    last one (a batch backend changes the firewall here, whole or not at all), revert() to undo a
    run's changes (it returns the steps that may still differ and words on where), end() always.
    """

    name: str  # "ufw", "firewalld", "nftables"
    path: str  # how castwall drives it, for --debug

    def installed(self) -> bool: ...

    def require(self) -> None: ...

    def active(self) -> bool: ...

    def rules(self) -> RuleSet: ...

    def problems(self, recorded: Sequence[Rule] = ()) -> list[str]: ...

    def commands(self, steps: Sequence[Step]) -> list[str] | None: ...

    def sync(self) -> None: ...

    def begin(self) -> None: ...

    def apply(self, step: Step) -> bool: ...

    def commit(self) -> None: ...

    def revert(self, done: Sequence[Step], progress: Callable[[str], None]) -> tuple[list[Step], str]: ...

    def end(self) -> None: ...


@contextlib.contextmanager
def deferred_signals(signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[Callable[[], int | None]]:
    """Hold SIGINT and SIGTERM until the caller checks, so no ufw call is cut in half.

    Yields a function that returns the first signal received, or None.
    """
    received: list[int] = []

    def note(signum, frame):
        received.append(signum)

    previous = {s: signal.signal(s, note) for s in signums}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def placed(steps: Sequence[Step], order: Sequence[Rule | None]) -> list[Step]:
    """The steps with each DELETE's place in ufw's IPv4 rule list, as it will be then.

    order is that list before the run (None for rules of other shapes). With
    the place known, undoing a delete puts the rule back where it stood, so a
    rolled-back run leaves ufw's rules in their old order, not only the old set.
    """
    current = list(order)
    out = []
    for step in steps:
        if step.action is Action.DELETE:
            index = next((i for i, r in enumerate(current) if r is not None and r.same_traffic(step.rule)), None)
            if index is None:
                out.append(step)
                continue
            last = index == len(current) - 1
            del current[index]
            out.append(replace(step, position=None if last else index + 1))
        else:
            current.append(step.rule)  # a planned add appends, as plain `ufw allow` does
            out.append(step)
    return out


def describe(step: Step) -> str:
    verb = "allow" if step.action is Action.ADD else "removal of"
    return f"{verb} {step.rule.traffic} from {step.rule.ip}"


def _left_over(failed: Sequence[Step]) -> str:
    """What an incomplete undo leaves in ufw, in words."""
    ordered = sorted(failed, key=lambda s: s.rule.sort_key())
    present = [f"{s.rule.traffic} from {s.rule.ip}" for s in ordered if s.action is Action.ADD]
    missing = [f"{s.rule.traffic} from {s.rule.ip}" for s in ordered if s.action is Action.DELETE]
    parts = []
    if present:
        parts.append("still allowed (added by this run): " + ", ".join(present))
    if missing:
        parts.append("no longer allowed (deleted by this run): " + ", ".join(missing))
    return "; ".join(parts)


def run_transaction(
    firewall: Firewall,
    steps: Sequence[Step],
    *,
    finish: Callable[[], None] = lambda: None,
    interrupted: Callable[[], int | None] = lambda: None,
    progress: Callable[[str], None] = lambda msg: None,
) -> list[Step]:
    """Apply steps in order, then finish (verify and record); on any failure or
    signal undo what was done, newest first.

    Returns the steps that changed the firewall. Raises FirewallRolledBack when
    it is back as it was, Interrupted when a signal stopped the run and it is
    back as it was, FirewallInconsistent when the undo failed too (its message
    says exactly which rules differ).
    """
    name = firewall.name
    done: list[Step] = []
    total = len(steps)
    position = 0
    firewall.begin()
    try:
        for position, step in enumerate(steps, 1):
            signum = interrupted()
            if signum is not None:
                raise Interrupted(f"interrupted by {signal.Signals(signum).name} before step {position} of {total}")
            progress(f"[{position}/{total}] {describe(step)}")
            if firewall.apply(step):
                done.append(step)
        position = total + 1
        firewall.commit()
        # A batch firewall changes everything in commit(): a signal that came meanwhile undoes it, before the
        # state is saved. Once finish() has verified and saved, the run is complete and stays.
        signum = interrupted()
        if signum is not None:
            raise Interrupted(f"interrupted by {signal.Signals(signum).name} at the end of the run")
        finish()
    except CastwallError as exc:
        where = exc.message if isinstance(exc, Interrupted) else (
            f"step {position} of {total} failed: {exc.message}" if position <= total else f"after the changes: {exc.message}"
        )
        failed, note = firewall.revert(done, progress)
        if failed:
            raise FirewallInconsistent(
                f"{where}; undoing it failed too, so {name} differs from before this run: {_left_over(failed)}{note}"
            ) from None
        restored = (
            f"the {len(done)} change(s) made before it were undone" if done else "nothing had been changed"
        )
        message = f"{where}; {restored}, so {name} is as it was before this run"
        raise (Interrupted(message) if isinstance(exc, Interrupted) else FirewallRolledBack(message)) from None
    finally:
        firewall.end()
    return done


def undo_each(firewall: Firewall, done: Sequence[Step], progress: Callable[[str], None]) -> list[Step]:
    """Undo steps newest first, each by its inverse; return those whose undo failed."""
    failed = []
    for step in reversed(done):
        inverse = step.inverse()
        progress(f"undo: {describe(inverse)}")
        try:
            firewall.apply(inverse)
        except CastwallError:
            failed.append(step)
    return failed


def check_empty(steps: Sequence[Step], firewall: str = "ufw") -> None:
    """Verification: a fresh plan after applying must have nothing left to do."""
    if steps:
        raise ToolFailed(f"{firewall} does not show the expected rules afterwards: " + "; ".join(describe(s) for s in steps))
