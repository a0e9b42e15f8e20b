"""castwall hints: DHCP reservations in the router's own syntax."""

from __future__ import annotations

import json

import click

from castwall import hints as hintlib
from castwall import render
from castwall.commands.services import Services, warn
from castwall.commands.survey import Survey, show_rejected, take_survey
from castwall.errors import NotFound, UsageError
from castwall.planner import refusal, select_devices
from castwall.system import host
from castwall.system.gateway import default_routes
from castwall.system.interfaces import choose_interfaces, own_addresses


def run(svc: Services, fmt, selectors: tuple[str, ...], as_json: bool, no_discover: bool, timeout: float,
          interfaces: tuple[str, ...]) -> None:
    if fmt == "list":
        click.echo(hintlib.format_list(), nl=False)
        return
    if as_json and fmt is not None and fmt.name != "json":
        raise UsageError(f"--json prints JSON; it cannot be combined with --format {fmt.name}")
    fmt = hintlib.find_format("json") if as_json else (fmt or hintlib.find_format("plain"))
    state, problem = host.read_state(svc.paths.state_file)
    if problem:
        warn(f"{problem}; only the devices seen now are used")
    saved = list(state.devices) if state else []
    if no_discover:
        every = svc.interfaces()
        survey = Survey([], [], {}, choose_interfaces(every, interfaces), own_addresses(every),
                        gateways=set(default_routes(svc.runner).values()))
    else:
        root = svc.is_root()
        survey = take_survey(svc, interfaces, timeout, root, known=state, check_claims=root)
        show_rejected(survey)
    seen, networks, own = survey.devices, survey.networks, survey.own
    # An address the user approved in setup (--allow-*) keeps its reservation.
    approved = {(r.owner, r.ip) for r in (state.rules if state else ())}
    refused = {d.uuid: survey.refused[d.uuid] for d in seen if d.uuid in survey.refused and (d.uuid, d.ip) not in approved}
    seen_uuids = {d.uuid for d in seen}
    unseen = [d for d in saved if d.uuid not in seen_uuids]
    for d in unseen:
        why = None if (d.uuid, d.ip) in approved else (d.contested or refusal(d.ip, networks, own, gateways=survey.gateways))
        if why:
            refused[d.uuid] = why
    devices = seen + unseen
    if not devices:
        if no_discover:
            raise NotFound("castwall has saved no devices yet: run 'castwall setup', or leave out --no-discover")
        raise NotFound(f"no Cast device answered within {timeout:g} s, and castwall has saved none")
    scope, unmatched = select_devices(devices, selectors)
    if unmatched:
        raise NotFound(f"no Cast device matches {', '.join(repr(s) for s in unmatched)}; 'castwall discover' lists them")
    # With --no-discover nothing was looked for, so nothing is marked as not seen.
    found = hintlib.collect(devices, networks, refused, unseen=frozenset() if no_discover else frozenset(d.uuid for d in unseen))
    if scope is not None:
        found = hintlib.Hints(tuple(r for r in found.reservations if r.uuid in scope),
                              tuple(o for o in found.omitted if o.uuid in scope))
    if fmt.render is None:
        click.echo(json.dumps(render.document("hints", **hintlib.hints_json(found)), indent=2))
    else:
        click.echo(fmt.render(found), nl=False)
    if not fmt.lists_omitted:
        for o in found.omitted:
            click.echo(f"castwall: note: no reservation for {o.name} ({o.ip}): {o.reason}", err=True)
