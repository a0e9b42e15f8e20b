"""castwall apps: the sender apps castwall knows, their ports, and castwall's ufw profiles for them."""

from __future__ import annotations

import json
import textwrap

import click

from castwall import apps, render
from castwall.commands.services import Services
from castwall.model import port_text
from castwall.system import host
from castwall.system.ufw import installed_profiles


def run(svc: Services, as_json: bool) -> None:
    profiles, profile_note = installed_profiles(svc.paths.ufw_profiles)
    state, problem = host.read_state(svc.paths.state_file)
    chosen = {c.name: c for c in (state.apps if state else ())}
    if as_json:
        doc = render.document(
            "apps",
            profile_file=str(svc.paths.ufw_profiles),
            apps=[_app_json(a, a.profile in profiles, chosen.get(a.name)) for a in apps.CATALOGUE],
            chosen=[render.app_json(c) for c in chosen.values()],
            notes=[n for n in (profile_note, problem) if n],
        )
        click.echo(json.dumps(doc, indent=2))
        return
    rows = []
    for a in apps.CATALOGUE:
        profile = "-" if a.profile is None else a.profile + ("" if a.profile in profiles or not profiles else " (changed)")
        mine = chosen.get(a.name)
        rows.append([a.name, a.ports_text(), a.option or "(none)", profile,
                     "-" if mine is None else f"yes, TCP {port_text(mine.ports)}"])
    out = [render.table(["APP", "TCP PORTS", "SET THE PORT WITH", "UFW PROFILE", "CHOSEN"], rows), ""]
    for a in apps.CATALOGUE:
        out += textwrap.wrap(f"{a.name}: {a.source}.", width=100, initial_indent="  ", subsequent_indent="    ")
    out += ["",
            "'sudo castwall setup --app NAME' lets every Cast device reach the app's ports; NAME=PORT or NAME=LOW:HIGH",
            "when you run it on another port (apps with random ports need that, with the option above);",
            "'--app tcp-range=LOW:HIGH' opens a TCP range of your choice (a broad rule).",
            f"ufw profiles: {svc.paths.ufw_profiles}" + (" (installed)" if profiles else " (not installed)")]
    if "tcp-range" in chosen:
        out.append(f"Chosen: {apps.choice_text(chosen['tcp-range'])}")
    for n in (profile_note, problem):
        if n:
            out.append(f"note: {n}")
    click.echo("\n".join(out))


def _app_json(app: apps.App, installed: bool, mine) -> dict:
    return {
        "name": app.name,
        "title": app.title,
        "proto": "tcp",
        "ports": None if app.ports is None else [app.ports.low, app.ports.high],
        "random": app.ports is None,
        "source": app.source,
        "option": app.option,
        "profile": app.profile,
        "profile_installed": installed if app.profile else None,
        "chosen": None if mine is None else [mine.ports.low, mine.ports.high],
    }
