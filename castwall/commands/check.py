"""castwall check: measure, device by device, whether Chrome can find each Cast device and cast to it."""

from __future__ import annotations

import json
from typing import Sequence

import click

from castwall import render
from castwall.commands.services import NOT_ROOT_DIAL, Services, note
from castwall.commands.survey import Survey, show_rejected, take_survey
from castwall.errors import ExitCode, NotFound
from castwall.model import Device, PortRange, Rule, State
from castwall.planner import select_devices
from castwall.system import host
from castwall.system.sysctl import read_port_range
from castwall.verdict import Verdict, dial_evidence, judge


def measure(svc: Services, devices: Sequence[Device], survey: Survey, rules: Sequence[Rule], port_range: PortRange,
            root: bool) -> list[Verdict]:
    """A verdict for each device: what its mDNS answers, its DIAL reply and its Cast channel did."""
    with svc.timed("Cast channels (TCP)"):
        opened = svc.reach([(d.ip, d.port) for d in devices])
    verdicts = []
    for d in devices:
        dial, dial_problem = dial_evidence(d, survey.dial, wire=survey.dial_seen_on_wire)
        verdicts.append(judge(d, dial=dial, dial_problem=dial_problem, cast=opened.get((d.ip, d.port), "not tried"),
                              rules=rules, port_range=port_range, refused=survey.refused.get(d.uuid), root=root))
    return verdicts


def candidates(survey: Survey, state: State | None) -> list[Device]:
    """The devices seen now, then those castwall saved that were not seen (found_by empty)."""
    seen = {d.uuid for d in survey.devices}
    return survey.devices + [d for d in (state.devices if state else ()) if d.uuid not in seen]


def known_rules(svc: Services, root: bool, state: State | None) -> list[Rule]:
    """castwall's rules (and the user's of the same shape): read from ufw as root, else from the state file."""
    if root:
        firewall = svc.firewall()
        if firewall.installed():
            return list(firewall.rules().rules)
    return list(state.rules) if state else []


def run(svc: Services, selectors: tuple[str, ...], interfaces: tuple[str, ...], as_json: bool, timeout: float) -> None:
    root = svc.is_root()
    port_range = read_port_range(svc.paths.port_range)
    state, _ = host.read_state(svc.paths.state_file)
    survey = take_survey(svc, interfaces, timeout, root, known=state, complete=True)
    show_rejected(survey)
    pool = candidates(survey, state)
    scope, unmatched = select_devices(pool, selectors)
    if unmatched:
        raise NotFound(f"no Cast device matches {', '.join(repr(s) for s in unmatched)}; 'castwall discover' lists them")
    devices = [d for d in pool if scope is None or d.uuid in scope]
    if not devices:
        hint = "" if root else "; without root only the DIAL replies this computer's firewall lets in are seen: try 'sudo castwall check'"
        raise NotFound(f"no Cast device answered within {timeout:g} s, and castwall has saved none{hint}")
    verdicts = measure(svc, devices, survey, known_rules(svc, root, state), port_range, root)
    if as_json:
        doc = render.document("check", root=root, dial_wire=survey.dial_seen_on_wire,
                              devices=[render.verdict_json(v, survey.refused.get(v.device.uuid)) for v in verdicts],
                              ignored=[render.rejected_json(r) for r in survey.rejected],
                              ok=all(v.ok for v in verdicts))
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render.check_text(verdicts))
    if not root:
        note(NOT_ROOT_DIAL)
    if not all(v.ok for v in verdicts):
        click.get_current_context().exit(int(ExitCode.ATTENTION))
