"""Pure judgement for status: from the state file, ufw's rules and what is seen to the findings that need action."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

from castwall import apps
from castwall.model import NOTHING_FILTERS, Device, PortRange, Rule, State, port_text


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    attention: bool = True


def assess(
    state: State | None,
    port_range: PortRange,
    discovered: Sequence[Device] | None,
    live: Sequence[Rule] | None,
    status: str,
    odd_tagged: Sequence[str] = (),
    *,
    refused: Mapping[str, str] | None = None,
    state_problem: str | None = None,
    profiles: Collection[str] | None = None,
    firewall: str = "ufw",
    problems: Sequence[str] = (),
) -> list[Finding]:
    """What status reports: each thing that needs action, and useful notes.

    discovered is None when discovery did not run; live is None when the live
    rules could not be read (not root). status is the firewall's: "active",
    "inactive", "missing", "unknown", or "none" when nothing filters incoming traffic. refused maps the UUIDs of discovered
    devices that may get no rule to the reason (see screen); state_problem
    says why the state file could not be used. profiles names castwall's ufw
    application profiles installed as castwall ships them (None: not known).
    firewall names the firewall castwall's rules are in; problems are its
    own findings (castwall's set or rule missing after a reload, ...).
    """
    fw = firewall
    refused = refused or {}
    out: list[Finding] = []
    if state_problem:
        out.append(Finding(
            "state-unusable",
            f"{state_problem}; 'sudo castwall setup' rebuilds it from castwall's rules in {fw} and keeps the old file as a copy",
        ))
    out += _firewall_findings(status, fw)
    out.extend(Finding("firewall-problem", line) for line in problems)
    if state is None and not state_problem and status != "none":
        out.append(Finding("not-set-up", "castwall has not set anything up yet: run 'sudo castwall setup'"))
    if state is None:
        state = State(port_range=None, devices=(), rules=())
    rules = list(live) if live is not None else list(state.rules)
    owned = [r for r in rules if r.owner]
    out += _stale_range(owned, port_range)
    reported: set[tuple[str | None, str | None]] = set()
    if live is not None and not state_problem:
        out += _rules_against_state(state, live, owned, fw, reported)
    if profiles is not None:
        out += _profiles_changed(owned, profiles)
    for line in odd_tagged:
        out.append(Finding("rule-odd", f"{fw} holds a rule tagged castwall that castwall did not write; left alone: {line}"))
    if discovered is not None:
        out += _devices_seen(state, discovered, rules, owned, refused, status)
    out += _apps_missing(state, rules, discovered, refused, reported)
    out += _follow_findings(state)
    return out


def _firewall_findings(status: str, fw: str) -> list[Finding]:
    """What the firewall's own state means for castwall's rules."""
    if status == "none":
        return [Finding("nothing-filters", f"{NOTHING_FILTERS}: casting needs no rule here", False)]
    if fw == "unknown":
        return [Finding("firewall-unknown", "not root: which firewall filters is not known (castwall reads the nftables "
                                            "ruleset as root): run 'sudo castwall status'", False)]
    if fw != "ufw":
        return {"missing": [Finding("firewall-missing", f"{fw} is not installed")],
                "inactive": [Finding("firewall-inactive", f"{fw} does not filter incoming traffic now: castwall's rules have "
                                                          "no effect until it does")],
                "unknown": [Finding("firewall-unread", f"not root: the live {fw} rules were not read (run with sudo to check "
                                                       "them)", False)]}.get(status, [])
    return {"missing": [Finding("ufw-missing", "ufw is not installed: install it with: sudo apt install ufw")],
            "inactive": [Finding("ufw-inactive", "ufw is inactive: its rules, castwall's included, have no effect until "
                                                 "'sudo ufw enable'")],
            "unknown": [Finding("ufw-unread", "not root: the live ufw rules were not read (run with sudo to check them)",
                                False)]}.get(status, [])


def _stale_range(owned: Sequence[Rule], port_range: PortRange) -> list[Finding]:
    """castwall's DIAL rules written for a local port range no longer in force."""
    stale = [r for r in owned if r.is_dial and r.ports != port_range]
    if not stale:
        return []
    ranges = ", ".join(sorted({str(r.ports) for r in stale}))
    return [Finding("port-range-changed",
                    f"the local port range is now {port_range}, but {len(stale)} rule(s) were written for {ranges}")]


def _rules_against_state(state: State, live: Sequence[Rule], owned: Sequence[Rule], fw: str,
                         reported: set[tuple[str | None, str | None]]) -> list[Finding]:
    """The state file's rules missing from the firewall, and castwall's rules there that it does not record.

    Adds each missing rule's (owner, app) to reported.
    """
    out = []
    recorded = set(state.rules)
    for r in state.rules:
        if r not in live:
            reported.add((r.owner, r.app))
            out.append(Finding("rule-missing", f"the {_job(r)} for {_name(state, r.owner)} ({r.ip}) is missing from {fw}"))
    for r in owned:
        if r not in recorded:
            out.append(Finding("rule-unrecorded", f"{fw} holds a castwall rule for {r.ip} ({r.traffic}) that the state file "
                                                  "does not record (an interrupted run?)"))
    return out


def _profiles_changed(owned: Sequence[Rule], profiles: Collection[str]) -> list[Finding]:
    """Rules through one of castwall's ufw profiles that ufw no longer has as castwall ships it."""
    out = []
    for profile in sorted({r.profile_name for r in owned if r.profile and r.profile_name not in profiles}):
        count = sum(1 for r in owned if r.profile_name == profile)
        app = apps.by_profile(profile)
        out.append(Finding("profile-changed", f"{count} rule(s) go through ufw's app profile {profile}, which is missing or "
                                              f"changed, so they may not open exactly TCP {port_text(app.ports)}: "
                                              "'sudo castwall setup' writes plain port rules instead"))
    return out


def _devices_seen(state: State, discovered: Sequence[Device], rules: Sequence[Rule], owned: Sequence[Rule],
                  refused: Mapping[str, str], status: str) -> list[Finding]:
    """Rules whose device is gone or moved, and devices seen now that are refused or have no rule."""
    out = []
    seen = {d.uuid: d for d in discovered}
    # One finding per device, from its first rule (the UDP one, where it has it).
    for r in {r.owner: r for r in sorted(owned, key=lambda r: not r.is_dial, reverse=True)}.values():
        d = seen.get(r.owner)
        if d is None:
            out.append(Finding("device-missing", f"{_name(state, r.owner)} ({r.ip}) has a rule but was not seen on the LAN"))
        elif d.ip != r.ip and d.uuid not in refused:
            out.append(Finding("ip-moved", f"{d.name} moved from {r.ip} to {d.ip}: its rule is for the old address"))
    for d in discovered:
        if d.uuid in refused:
            if d.contested:
                out.append(Finding("contested", f"{d.name} ({d.ip}) gets no rule: {refused[d.uuid]}"))
            else:
                out.append(Finding("refused", f"{d.name} gets no rule: {refused[d.uuid]}", False))
        elif not _covered(state, d, rules, owned) and status != "none":  # where nothing filters, no rule is needed
            out.append(Finding("new-device", f"{d.name} ({d.ip}) has no rule: run 'sudo castwall setup'"))
    return out


def _covered(state: State, d: Device, rules: Sequence[Rule], owned: Sequence[Rule]) -> bool:
    """Whether a device needs no new-device finding: a DIAL rule for its address, a rule of its own elsewhere (reported
    as moved), or follow mode's record of why its rules were withdrawn (reported with the follow findings)."""
    return (any(r.ip == d.ip and r.is_dial for r in rules) or any(r.owner == d.uuid for r in owned)
            or any(t.uuid == d.uuid and (t.away or t.stopped) for t in state.follow))


def _follow_findings(state: State) -> list[Finding]:
    """Devices whose rules follow mode withdrew, and why."""
    out = []
    for t in state.follow:
        if t.stopped:
            out.append(Finding("follow-stopped", f"follow mode withdrew {_name(state, t.uuid)}'s rules and no longer follows "
                                                 f"it: {t.stopped}"))
        elif t.away:
            out.append(Finding("away", f"follow mode withdrew {_name(state, t.uuid)}'s rules: {t.away}", False))
    return out


def _apps_missing(state: State, rules: Sequence[Rule], discovered: Sequence[Device] | None, refused: Mapping[str, str],
                  reported: Collection[tuple[str | None, str | None]]) -> list[Finding]:
    """Devices with castwall's UDP rule whose rule for a chosen app is missing, or for another port.

    Not for a device seen elsewhere (moved), not seen, or refused (setup gives
    none of them rules now), nor where the user's own rule already lets the
    app's ports in; reported names the (device, app) rules that status already
    says are missing from ufw.
    """
    out = []
    owned = [r for r in rules if r.owner]
    seen = None if discovered is None else {d.uuid: d for d in discovered}
    for r in owned:
        if not r.is_dial:
            continue
        if seen is not None and (r.owner not in seen or seen[r.owner].ip != r.ip or r.owner in refused):
            continue
        for c in state.apps:
            if (r.owner, c.name) in reported:
                continue
            mine = [o for o in owned if o.owner == r.owner and o.ip == r.ip and o.app == c.name]
            want = Rule(r.ip, c.ports, None, proto="tcp")
            if any(o.ports == c.ports for o in mine) or any(u.owner is None and u.covers(want) for u in rules):
                continue
            if mine:
                out.append(Finding("app-port", f"the {c.name} rule for {_name(state, r.owner)} ({r.ip}) is for "
                                               f"{mine[0].traffic}, but {c.name} is chosen on TCP {port_text(c.ports)}: "
                                               "run 'sudo castwall setup'"))
            else:
                out.append(Finding("app-missing", f"{_name(state, r.owner)} ({r.ip}) has no rule for {c.name} yet: "
                                                  "run 'sudo castwall setup'"))
    return out


def _job(rule: Rule) -> str:
    job = apps.purpose(rule)
    return "UDP rule" if job == "dial" else f"{job or 'TCP'} rule"


def _name(state: State, uuid: str | None) -> str:
    device = state.device(uuid) if uuid else None
    return device.name if device else f"device {uuid}"
