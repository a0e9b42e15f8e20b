"""castwall status: what is in place, and what needs attention."""

from __future__ import annotations

import json

import click

from castwall import render
from castwall.commands.services import Services
from castwall.commands.survey import show_rejected, take_survey
from castwall.commands.check import candidates, measure
from castwall.commands.follow import report
from castwall.errors import ExitCode, UsageError
from castwall.findings import Finding, assess
from castwall.system import host
from castwall.system.sysctl import read_port_range
from castwall.system.firewalls import CannotTell, IptablesOnly
from castwall.system.ufw import installed_profiles


def run(svc: Services, as_json: bool, no_discover: bool, check: bool, timeout: float, interfaces: tuple[str, ...]) -> None:
    if check and no_discover:
        raise UsageError("--check measures what the devices answer; it cannot be combined with --no-discover")
    root = svc.is_root()
    port_range = read_port_range(svc.paths.port_range)
    state, problem = host.read_state(svc.paths.state_file)
    recorded = state.firewall if state else None
    try:
        firewall = svc.firewall(recorded, prefer_recorded=True)
        fw = firewall.name if firewall else "none"
    except CannotTell:  # without root and without a state file: which firewall filters is unknown
        firewall, fw = None, "unknown"
    except IptablesOnly:  # iptables drops, ufw is gone: status says ufw is missing
        firewall, fw = None, "ufw"
    live, odd, problems = None, (), []
    if fw == "unknown":
        status = "unknown"
    elif firewall is None and fw == "ufw":
        status = "missing"
    elif firewall is None:
        status = "none"
    elif not firewall.installed():
        status = "missing"
    elif root:
        ruleset = firewall.rules()
        live, odd = ruleset.rules, ruleset.odd_tagged
        status = "active" if firewall.active() else "inactive"
        problems = firewall.problems(state.rules if state else ())
    else:
        status = "unknown"
    survey = None if no_discover else take_survey(svc, interfaces, timeout, root, known=state, expect=not check,
                                                  complete=check, check_claims=root)
    if survey:
        show_rejected(survey)
    discovered = survey.devices if survey else None
    profiles, _ = installed_profiles(svc.paths.ufw_profiles) if fw == "ufw" else (None, None)
    findings = assess(state, port_range, discovered, live, status, odd, refused=survey.refused if survey else {}, state_problem=problem,
                      profiles=profiles, firewall=fw, problems=problems)
    rules = live if live is not None else (state.rules if state else ())
    verdicts = measure(svc, candidates(survey, state, rules)[0], survey, rules, port_range) if check and survey else None
    findings += verdict_findings(verdicts or ())
    follow = report(svc, (state, problem))
    if as_json:
        doc = render.document(
            "status",
            port_range=[port_range.low, port_range.high],
            ufw=status if fw == "ufw" else None,  # the key of castwall 0.1's first documents
            firewall={"name": fw, "status": status, "chain": str(firewall.chain) if getattr(firewall, "chain", None) else None},
            state_file=str(svc.paths.state_file),
            state_written=state.written if state else None,
            known=[render.device_json(d) for d in (state.devices if state else ())],
            discovered=None if survey is None else [render.device_json(d, survey.refused.get(d.uuid)) for d in survey.devices],
            ignored=None if survey is None else [render.rejected_json(r) for r in survey.rejected],
            rules=[render.rule_json(r) for r in rules],
            apps=[render.app_json(c) for c in (state.apps if state else ())],
            findings=[render.finding_json(f) for f in findings],
            follow=follow,
            check=None if verdicts is None else [render.verdict_json(v, survey.refused.get(v.device.uuid)) for v in verdicts],
            ok=not any(f.attention for f in findings),
        )
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render.status_text(
            port_range=port_range,
            status=status,
            firewall=fw,
            state_path=str(svc.paths.state_file),
            state=state,
            discovered=discovered,
            rules=rules,
            findings=findings,
            follow=follow,
        ))
    if any(f.attention for f in findings):
        click.get_current_context().exit(int(ExitCode.ATTENTION))


def verdict_findings(verdicts) -> list[Finding]:
    """What the check found, as status's findings: a device Chrome cannot find or reach needs attention."""
    out = []
    for v in verdicts:
        if not v.ok:
            out.append(Finding("check-failed", f"{v.device.name} ({v.device.ip}): {v.problem}; fix: {v.fix}"))
        elif v.note:
            out.append(Finding("check-note", f"{v.device.name}: {v.note}", False))
    return out
