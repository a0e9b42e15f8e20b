"""castwall check: measure, device by device, whether Chrome can find each Cast device and cast to it."""

from __future__ import annotations

import json
from typing import Sequence

import click

from castwall import apps, render
from castwall.commands.change import confirm
from castwall.commands.services import NOT_ROOT_DIAL, Services, not_root_hint, note
from castwall.commands.survey import Survey, show_rejected, take_survey
from castwall.errors import ExitCode, NotFound, UsageError
from castwall.model import AppChoice, Device, PortRange, Rule, State, port_text
from castwall.planner import select_devices
from castwall.system import host
from castwall.system.sysctl import read_port_range
from castwall.verdict import Verdict, dial_evidence, judge


def measure(svc: Services, devices: Sequence[Device], survey: Survey, rules: Sequence[Rule],
            port_range: PortRange) -> list[Verdict]:
    """A verdict for each device: what its mDNS answers, its DIAL reply and its Cast channel did."""
    with svc.timed("Cast channels (TCP)"):
        opened = svc.reach([(d.ip, d.port) for d in devices])
    verdicts = []
    for d in devices:
        dial, dial_problem = dial_evidence(d, survey.dial, wire=survey.dial_seen_on_wire)
        verdicts.append(judge(d, dial=dial, dial_problem=dial_problem, cast=opened.get((d.ip, d.port), "not tried"),
                              rules=rules, port_range=port_range, refused=survey.refused.get(d.uuid)))
    return verdicts


def candidates(survey: Survey, state: State | None, rules: Sequence[Rule]) -> tuple[list[Device], list[Device]]:
    """The devices to check, and those left out.

    Checked: the devices seen now, then those castwall set up that were not
    seen (found_by empty). Left out: a device castwall refuses for its
    address (this computer's own, a broadcast, routed or public one), unless
    the user approved it with a rule: nobody asked to cast to it. A contested
    device is checked: it may be a real device that someone clones. A device
    the state file holds without a rule was never approved, and is not
    looked for.
    """
    seen = {d.uuid for d in survey.devices}
    approved = {r.owner for r in rules if r.owner} | {r.ip for r in rules if r.is_dial}
    pool = survey.devices + [d for d in (state.devices if state else ()) if d.uuid not in seen and d.uuid in approved]
    left_out = [d for d in pool if d.uuid in survey.refused and not d.contested
                and d.uuid not in approved and d.ip not in approved]
    return [d for d in pool if d not in left_out], left_out


def known_rules(svc: Services, root: bool, state: State | None) -> list[Rule]:
    """castwall's rules (and the user's of the same shape): read from the firewall as root, else from the state file.

    Where nothing filters, there are none, and check still measures what gets through.
    """
    if root:
        firewall = svc.firewall(state.firewall if state else None)
        if firewall is None:
            return []
        if firewall.installed():
            return list(firewall.rules().rules)
    return list(state.rules) if state else []


def run(svc: Services, selectors: tuple[str, ...], interfaces: tuple[str, ...], as_json: bool, timeout: float,
        app: AppChoice | None = None, yes: bool = False) -> None:
    if app is not None and len(selectors) != 1:
        raise UsageError("check --app plays a test sound on one device: name it with one --device NAME|UUID")
    root = svc.is_root()
    port_range = read_port_range(svc.paths.port_range)
    state, _ = host.read_state(svc.paths.state_file)
    survey = take_survey(svc, interfaces, timeout, root, known=state, complete=True)
    show_rejected(survey)
    rules = known_rules(svc, root, state)
    pool, left_out = candidates(survey, state, rules)
    scope, unmatched = select_devices(pool + left_out, selectors)
    if unmatched:
        raise NotFound(f"no Cast device matches {', '.join(repr(s) for s in unmatched)}; 'castwall discover' lists them")
    devices = [d for d in pool + left_out if d.uuid in scope] if scope is not None else pool
    if not devices:
        hint = "" if root else not_root_hint("check")
        raise NotFound(f"no Cast device answered within {timeout:g} s, and castwall has saved none{hint}")
    if selectors:
        left_out = []
    if app is not None:
        run_app(svc, app, devices, left_out, rules, state, as_json, timeout, yes)
        return
    verdicts = measure(svc, devices, survey, rules, port_range)
    if as_json:
        doc = render.document("check", root=root, dial_wire=survey.dial_seen_on_wire,
                              devices=[render.verdict_json(v, survey.refused.get(v.device.uuid)) for v in verdicts],
                              left_out=[render.device_json(d, survey.refused[d.uuid]) for d in left_out],
                              ignored=[render.rejected_json(r) for r in survey.rejected],
                              ok=all(v.ok for v in verdicts))
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render.check_text(verdicts, {d: survey.refused[d.uuid] for d in left_out}))
    if not root:
        note(NOT_ROOT_DIAL)
    if not all(v.ok for v in verdicts):
        click.get_current_context().exit(int(ExitCode.ATTENTION))


def run_app(svc: Services, app: AppChoice, devices: Sequence[Device], left_out: Sequence[Device], rules: Sequence[Rule],
            state: State | None, as_json: bool, timeout: float, yes: bool) -> None:
    """check --app: the device fetches a test sound from this computer on the app's port, or it does not."""
    from castwall.system import cast_sender

    if len(devices) != 1:
        raise UsageError("--device names several devices; check --app plays a test sound on one of them")
    (device,) = devices
    if device in left_out:
        raise NotFound(f"{device.name} ({device.ip}) gets no rule from castwall, so castwall does not cast to it")
    chosen = {c.name: c for c in (state.apps if state else ())}
    if app.name in chosen and apps.is_default(app):
        app = chosen[app.name]  # the port setup was given for it
    cast_sender.load_pychromecast()
    if not yes:
        confirm(f"castwall asks {device.name} ({device.ip}) to play one second of silence, fetched from TCP "
                f"{port_text(app.ports)} of this computer as {app.name} would serve it; the device shows it for a moment. Go on?")
    fetch = cast_sender.fetch_test(device, app.ports, timeout)
    wanted = Rule(device.ip, app.ports, None, proto="tcp")
    has_rule = any(r.covers(wanted) for r in rules if r.proto == "tcp")  # castwall's (the group's host's too) or yours
    where = f"TCP {fetch.port} of this computer"
    if fetch.arrived:
        verdict, fix = f"{device.name} ({device.ip}) fetched the test sound from {where}: {app.name} can cast to it", None
    elif fetch.error:
        verdict, fix = f"{device.name} ({device.ip}) could not be asked to play: {fetch.error}", fetch.fix
    else:
        verdict = f"{device.name} ({device.ip}) did not fetch the test sound from {where} within {timeout:g} s"
        fix = ("a rule for these ports is in place, so another rule of this computer's firewall drops the connection "
               "first: look at 'sudo ufw status numbered'") if has_rule else (
            f"run 'sudo castwall setup --app {app.name}" + ("" if apps.is_default(app) else f"={port_text(app.ports)}") + "'")
    if as_json:
        click.echo(json.dumps(render.document(
            "check-app", app=render.app_json(app), device=render.device_json(device), port=fetch.port, url=fetch.url,
            arrived=fetch.arrived, error=fetch.error, rule=has_rule, ok=fetch.arrived, verdict=verdict, fix=fix), indent=2))
    else:
        click.echo(verdict + ("." if fix is None else f".\n  fix: {fix}"))
    if not fetch.arrived:
        click.get_current_context().exit(int(ExitCode.ATTENTION))
