"""castwall discover: list the Cast devices on the LAN."""

from __future__ import annotations

import json

import click

from castwall import render
from castwall.commands.services import Services
from castwall.commands.survey import show_rejected, take_survey
from castwall.errors import NotFound


def run(svc: Services, timeout: float, interfaces: tuple[str, ...], as_json: bool) -> None:
    survey = take_survey(svc, interfaces, timeout, svc.is_root())
    show_rejected(survey)
    devices = survey.devices
    if as_json:
        doc = render.document(
            "discover",
            interfaces=[i.name for i in survey.interfaces],
            devices=[render.device_json(d, survey.refused.get(d.uuid)) for d in devices],
            ignored=[render.rejected_json(r) for r in survey.rejected],
        )
        click.echo(json.dumps(doc, indent=2))
    elif devices:
        click.echo(render.device_table(devices, survey.refused))
    if not devices:
        raise NotFound(f"no Cast device answered within {timeout:g} s on {', '.join(i.name for i in survey.interfaces)}")
