"""castwall discover: list the Cast devices on the LAN."""

from __future__ import annotations

import json

import click

from castwall import render
from castwall.commands.services import NOT_ROOT_DIAL, Services, not_root_hint, note
from castwall.commands.survey import show_rejected, take_survey
from castwall.errors import NotFound
from castwall.system import host


def run(svc: Services, timeout: float, interfaces: tuple[str, ...], as_json: bool) -> None:
    root = svc.is_root()
    state, _ = host.read_state(svc.paths.state_file)
    survey = take_survey(svc, interfaces, timeout, root, known=state)
    show_rejected(survey)
    if not root:
        note(NOT_ROOT_DIAL)
    devices = survey.devices
    if as_json:
        doc = render.document(
            "discover",
            interfaces=[i.name for i in survey.interfaces],
            dial_wire=survey.dial_seen_on_wire,
            devices=[render.device_json(d, survey.refused.get(d.uuid)) for d in devices],
            ignored=[render.rejected_json(r) for r in survey.rejected],
        )
        click.echo(json.dumps(doc, indent=2))
    elif devices:
        click.echo(render.device_table(devices, survey.refused))
    if not devices:
        hint = "" if root else not_root_hint("discover")
        raise NotFound(f"no Cast device answered within {timeout:g} s on {', '.join(i.name for i in survey.interfaces)}{hint}")
