"""Sender apps: the apps that serve media to Cast devices themselves, and the ports they serve on.

Chrome streams a tab over the Cast connection it opened; apps that cast a
file instead tell the device a URL on this computer, and the device opens a
TCP connection back to fetch it. This module is pure: the catalogue, the
`--app` values, the ufw application profiles castwall ships, and which app a
castwall rule serves.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from castwall.model import PROFILE_PREFIX, AppChoice, PortRange, Rule, port_text

PROFILE_FILE = "/etc/ufw/applications.d/castwall"
TCP_RANGE = "tcp-range"  # the one entry that is not an app: a TCP range the user names


@dataclass(frozen=True)
class App:
    """One sender app: the port it serves media on, where that is written, and how to change it.

    ports is None when the app picks a new random port each time; option is
    how the user fixes or changes the port (None: the app has no way to).
    """

    name: str
    title: str
    ports: PortRange | None
    source: str
    option: str | None

    @property
    def profile(self) -> str | None:
        """The name of castwall's ufw application profile for this app (apps with fixed ports only)."""
        return None if self.ports is None else PROFILE_PREFIX + self.name

    def ports_text(self) -> str:
        return "random" if self.ports is None else port_text(self.ports)


CATALOGUE: tuple[App, ...] = (
    App("vlc", "VLC", PortRange(8010, 8010),
        "VLC's chromecast stream output serves on 8010", "--sout-chromecast-http-port PORT"),
    App("catt", "catt", PortRange(45000, 47000),
        "catt serves the file on a random port in 45000-46999 and its subtitles on the next port", None),
    App("mkchromecast", "mkchromecast", PortRange(5000, 5000),
        "mkchromecast's streaming server listens on 5000", "--port PORT"),
    App("castnow", "castnow", PortRange(4100, 4104),
        "castnow serves a local file on 4100, subtitles 4101, torrents 4102, transcoding 4103 and stdin 4104 "
        "(--subtitle-port, --torrent-port, --transcode-port and --stdin-port move the others)", "--localfile-port PORT"),
    App("pulseaudio-dlna", "pulseaudio-dlna", PortRange(8080, 8080),
        "pulseaudio-dlna streams the sound from 8080", "--port PORT"),
    App("cast-to-tv", "Cast to TV (GNOME Shell)", PortRange(4000, 4000),
        "the Cast to TV extension serves everything on 4000 "
        "(gsettings set org.gnome.shell.extensions.cast-to-tv listening-port PORT)", "its listening-port setting"),
    App("go-chromecast", "go-chromecast", None,
        "go-chromecast serves on a random port (its transcode command always does)", "--server-port PORT"),
    App("gnomecast", "gnomecast", None,
        "gnomecast serves on a random port", "GNOMECAST_HTTP_PORT=PORT"),
    App("stream2chromecast", "stream2chromecast", None,
        "stream2chromecast serves on a random port, and subtitles on another (-subtitles_port PORT)", "-port PORT"),
    App("gnome-network-displays", "GNOME Network Displays", None,
        "GNOME Network Displays always serves on a random port", None),
)
BY_NAME: Mapping[str, App] = {a.name: a for a in CATALOGUE}
_PROFILE_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9 _\-.+]*$")  # what ufw accepts as a profile name


def by_profile(profile: str) -> App | None:
    """The catalogue app whose castwall profile has this name."""
    if not profile.startswith(PROFILE_PREFIX):
        return None
    app = BY_NAME.get(profile[len(PROFILE_PREFIX):])
    return app if app is not None and app.profile == profile else None


class AppError(ValueError):
    """An --app value castwall cannot turn into a rule; the message says why and what to do."""


def _parse_ports(text: str, what: str) -> PortRange:
    low, sep, high = text.partition(":")
    try:
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError
        return PortRange(int(low), int(high) if sep else int(low))
    except ValueError:
        raise AppError(f"{what}: {text!r} is not a port (1-65535) or a range LOW:HIGH") from None


def parse_choice(value: str) -> AppChoice:
    """One --app value: NAME, NAME=PORT or NAME=LOW:HIGH, or tcp-range=LOW:HIGH.

    Raises AppError for an unknown app, a bad port, an app whose port is
    random and not given, or a tcp-range without its range.
    """
    name, sep, ports = value.strip().partition("=")
    name = name.strip().lower()
    if name == TCP_RANGE:
        if not sep:
            raise AppError("--app tcp-range needs the range it opens: --app tcp-range=LOW:HIGH")
        return AppChoice(TCP_RANGE, _parse_ports(ports.strip(), f"--app {value}"))
    app = BY_NAME.get(name)
    if app is None:
        raise AppError(f"--app {value}: no app called {name!r}; 'castwall apps' lists them "
                       f"(or use --app tcp-range=LOW:HIGH for a TCP range of your choice)")
    if sep:
        return AppChoice(app.name, _parse_ports(ports.strip(), f"--app {value}"))
    if app.ports is None:
        fix = (f"start it with {app.option} and give castwall the same port: --app {app.name}=PORT" if app.option
               else "it has no option to fix the port, so castwall cannot open it narrowly "
                    "(--app tcp-range=LOW:HIGH opens a range of your choice to the devices)")
        raise AppError(f"--app {app.name}: {app.title} serves media on a random port; {fix}")
    return AppChoice(app.name, app.ports)


def merge(previous: Sequence[AppChoice], given: Sequence[AppChoice]) -> tuple[AppChoice, ...]:
    """The apps a run gives the devices: those chosen before, with the ones given now added or replacing them.

    Raises AppError when two apps would need the same TCP ports (one ufw rule cannot serve both).
    """
    chosen: dict[str, AppChoice] = {c.name: c for c in previous}
    for c in given:
        chosen[c.name] = c
    by_ports: dict[PortRange, str] = {}
    for c in chosen.values():
        other = by_ports.setdefault(c.ports, c.name)
        if other != c.name:
            raise AppError(f"{other} and {c.name} would both use TCP {port_text(c.ports)}: "
                           f"one rule serves both, so choose one of them")
    return tuple(sorted(chosen.values(), key=lambda c: c.name))


def recovered(previous: Sequence[AppChoice], owned: Sequence[Rule]) -> tuple[AppChoice, ...]:
    """The apps chosen before: those the state file names, and any app castwall's rules in ufw serve that it does not.

    A rebuilt state file, or one a killed run left behind, names fewer apps
    than ufw holds rules for; those apps stay chosen (with the ports of their
    first rule), so setup neither deletes their rules nor forgets them.
    """
    chosen = {c.name: c for c in previous}
    for r in sorted(owned, key=Rule.sort_key):
        if r.owner and r.proto == "tcp" and r.app and r.app not in chosen:
            chosen[r.app] = AppChoice(r.app, r.ports)
    return tuple(sorted(chosen.values(), key=lambda c: c.name))


def is_default(choice: AppChoice) -> bool:
    """Whether the choice uses the catalogue's ports for its app (so its ufw profile fits it)."""
    app = BY_NAME.get(choice.name)
    return app is not None and app.ports == choice.ports


def rule_for(choice: AppChoice, ip, owner: str, profiles: Iterable[str]) -> Rule:
    """The rule that lets a device at ip fetch from the app: through its profile where ufw has it as castwall ships it."""
    app = BY_NAME.get(choice.name)
    through = app is not None and is_default(choice) and app.profile in set(profiles)
    return Rule(ip, choice.ports, owner, proto="tcp", app=choice.name, profile=through)


def purpose(rule: Rule) -> str | None:
    """What a rule is for: "dial" (the UDP rule), the app a castwall TCP rule serves, or None (a user's TCP rule)."""
    return "dial" if rule.is_dial else rule.app


def choice_text(choice: AppChoice) -> str:
    """An app choice for people: "vlc (TCP 8010)", "tcp-range (TCP 40000:40100, a broad rule)"."""
    if choice.name == TCP_RANGE:
        count = choice.ports.high - choice.ports.low + 1
        return f"tcp-range (TCP {port_text(choice.ports)}: a broad rule, {count} port(s) open to every device)"
    app = BY_NAME.get(choice.name)
    own = "" if app is None or is_default(choice) else f", not {app.title}'s usual {app.ports_text()}"
    return f"{choice.name} (TCP {port_text(choice.ports)}{own})"


# --- ufw application profiles ---------------------------------------------------


def profile_text() -> str:
    """The ufw application profiles castwall ships: one section per app with fixed ports."""
    out = ["# ufw application profiles of castwall: the ports of the apps 'castwall apps' lists.",
           "# castwall writes its sender-app rules through these: ufw allow from DEVICE to any app castwall-NAME.",
           "# castwall uses a profile only while ufw has it with these ports; change one, and the next",
           "# 'sudo castwall setup' writes that app's rules as plain port rules instead.",
           ""]
    for app in CATALOGUE:
        if app.profile is None:
            continue
        out += [f"[{app.profile}]",
                f"title={app.title} casting (castwall)",
                f"description=Lets Cast devices fetch the media {app.title} serves: {app.source}",
                f"ports={port_text(app.ports)}/tcp",
                ""]
    return "\n".join(out)


def read_profiles(text: str) -> dict[str, str]:
    """castwall's profiles in one profile file, as ufw reads it: name -> its ports field.

    ufw reads a file with a strict RawConfigParser and skips the whole file
    when that fails: so does this (ValueError). Sections that are not
    castwall's, or that ufw would reject for a missing field, are left out.
    """
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ValueError(f"not a ufw profile file ufw can read: {str(exc).splitlines()[0]}") from None
    out = {}
    for section in parser.sections():
        if not section.startswith(PROFILE_PREFIX) or not _PROFILE_NAME_RE.match(section) or len(section) > 64:
            continue
        fields = {k: parser.get(section, k, fallback="").strip() for k in ("title", "description", "ports")}
        if all(fields.values()):
            out[section] = fields["ports"]
    return out


def usable_profiles(merged: Mapping[str, str]) -> dict[str, PortRange]:
    """Of the profiles ufw has (the last definition of each name wins), castwall's with exactly castwall's ports."""
    out = {}
    for name, ports in merged.items():
        app = by_profile(name)
        if app is not None and ports == f"{port_text(app.ports)}/tcp":
            out[name] = app.ports
    return out
