"""ufw through its command line: read the added rules, add and delete castwall's."""

from __future__ import annotations

import ipaddress
import os
import shlex
from pathlib import Path
from typing import Callable, Sequence

from castwall import apps
from castwall.apply import undo_each
from castwall.errors import MissingTool, NeedRoot, ToolFailed
from castwall.model import TAG_PREFIX, Action, PortRange, Rule, RuleSet, Step, parse_tag
from castwall.system.runner import Runner, missing_tool_message

_KEYWORDS = {"from", "to", "port", "proto", "comment", "app"}


def parse_rule_line(line: str) -> Rule | str | None:
    """Parse one `ufw show added` line.

    Returns a Rule for an allow rule from one address to a UDP or TCP port
    (or range) of this computer, or to one of castwall's application
    profiles; the line itself when it carries a castwall tag but another
    shape; else None.
    """
    try:
        tokens = shlex.split(line)
    except ValueError:
        return line if TAG_PREFIX in line else None
    comment = tokens[tokens.index("comment") + 1] if "comment" in tokens[:-1] else ""
    odd = line if comment.startswith(TAG_PREFIX) else None
    fields = _fields(tokens)
    if fields is None:
        return odd
    try:
        ip = ipaddress.ip_address(fields["from"])
        if "app" in fields:
            profiled = apps.by_profile(fields["app"])
            if profiled is None or "proto" in fields or "port" in fields:
                return odd
            proto, ports, app = "tcp", profiled.ports, profiled.name
        else:
            proto, profiled, app = fields.get("proto"), None, None
            if proto not in ("udp", "tcp"):
                return odd
            low, _, high = fields.get("port", "").partition(":")
            ports = PortRange(int(low), int(high or low))
    except ValueError:
        return odd
    try:
        owner, named = parse_tag(comment) or (None, None)
        if owner is not None:
            app = _tagged_app(proto, profiled, app, named)
    except ValueError:
        return odd
    if profiled is not None and owner is None:
        # The user's own rule through castwall's profile: castwall reads it as the ports it opens, and never changes it.
        return Rule(ip, ports, None, proto="tcp")
    return Rule(ip, ports, owner, proto=proto, app=app, profile=profiled is not None)


def _fields(tokens: list[str]) -> dict[str, str] | None:
    """The words after `ufw allow` as keyword and value, for a rule from an address to any of this computer's
    addresses; None for any other shape (another verb, a word castwall's rules never have, one twice, a word left)."""
    if tokens[:2] != ["ufw", "allow"]:
        return None
    fields: dict[str, str] = {}
    rest = tokens[2:]
    if len(rest) % 2:
        return None
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        if key not in _KEYWORDS or key in fields:
            return None
        fields[key] = value
    return fields if fields.get("to") == "any" and "from" in fields else None


def _tagged_app(proto: str, profiled: apps.App | None, app: str | None, named: str | None) -> str | None:
    """The app of a rule castwall's tag marks, from its profile or its tag; ValueError where the two do not fit."""
    if proto == "udp" and named:
        raise ValueError("a DIAL rule names no app")
    if profiled is not None and named not in (None, app):
        raise ValueError("the tag names another app than the profile")
    if proto == "tcp" and profiled is None:
        # A plain TCP rule of castwall's names its app in the tag: castwall:<UUID>/<app>.
        if named not in apps.BY_NAME and named != apps.TCP_RANGE:
            raise ValueError("a plain TCP rule's tag names no app castwall knows")
        return named
    return app


_SKIPPED_SUFFIXES = (".dpkg-new", ".dpkg-old", ".dpkg-dist", ".rpmnew", ".rpmsave", "~")
_MAX_PROFILES = 10 * 1024 * 1024  # ufw reads at most this much of its profile directory


def installed_profiles(path: Path) -> tuple[frozenset[str], str | None]:
    """castwall's ufw application profiles as ufw itself has them, and why some cannot be used.

    ufw reads every file of the profile directory (path's) in name order, and
    the last definition of a profile wins: so castwall reads them all the same
    way, and uses a profile only if what ufw will use has castwall's ports.
    Apps without a usable profile get plain port rules: the same ports, only
    without the app's name in `ufw status`.
    """
    directory = path.parent
    merged: dict[str, str] = {}
    total = 0
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []
    for name in names:
        file = directory / name
        if name.startswith(".") or name.endswith(_SKIPPED_SUFFIXES) or not file.is_file():
            continue
        try:
            size = file.stat().st_size
            if size > _MAX_PROFILES or total + size > _MAX_PROFILES:
                continue
            total += size
            merged.update(apps.read_profiles(file.read_text(encoding="utf-8", errors="replace")))
        except (OSError, ValueError):
            continue  # ufw skips a file it cannot read or parse
    found = apps.usable_profiles(merged)
    if not merged:
        why = "pip cannot install it" if not path.exists() else "ufw cannot read it"
        return frozenset(), (f"castwall's ufw application profiles are not installed ({path}: the .deb ships them, {why}): "
                             "app rules are written as plain port rules")
    changed = [a.name for a in apps.CATALOGUE if a.profile and a.profile not in found]
    note = (f"ufw's profile is missing or changed for {', '.join(changed)} (see {directory}): "
            "those apps get plain port rules") if changed else None
    return frozenset(found), note


def _ipv6_only(line: str) -> bool:
    """Whether a rule line names an IPv6 address, so it is not in ufw's IPv4 list."""
    words = line.split()
    for key, value in zip(words, words[1:], strict=False):  # each word and the next
        if key in ("from", "to"):
            try:
                if ipaddress.ip_network(value.strip("'\""), strict=False).version == 6:
                    return True
            except ValueError:
                continue
    return False


def parse_show_added(text: str) -> RuleSet:
    """Read `ufw show added`: IPv4 rules (and rules for both) in ufw's order, then IPv6-only ones."""
    rules, odd, other, order = [], [], 0, []
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("ufw "):
            continue
        parsed = parse_rule_line(line)
        if isinstance(parsed, Rule):
            rules.append(parsed)
        elif isinstance(parsed, str):
            odd.append(parsed)
        else:
            other += 1
        if not _ipv6_only(line):
            order.append(parsed if isinstance(parsed, Rule) else None)
    return RuleSet(tuple(rules), tuple(odd), other, tuple(order))


class UfwCommon:
    """What both ufw paths (its command, its library) answer alike."""

    name = "ufw"

    def commands(self, steps: Sequence[Step]) -> None:
        """None: ufw runs one command per step, and the plan shows each with its step."""
        return None

    def problems(self, recorded: Sequence[Rule] = ()) -> list[str]:
        return []  # what differs in ufw shows as rules missing or unrecorded

    def sync(self) -> None:
        pass  # ufw keeps its rules in its own files


class UfwFirewall(UfwCommon):
    """ufw 0.36+ driven through its CLI; every call needs root."""

    path = "the ufw command, one call per rule"

    def __init__(self, runner: Runner):
        self.runner = runner

    def installed(self) -> bool:
        return self.runner.which("ufw") is not None

    def require(self) -> None:
        """Raises MissingTool when ufw is not installed."""
        if not self.installed():
            raise MissingTool(missing_tool_message("ufw"))

    def _ufw(self, *args: str):
        done = self.runner.run(["ufw", *args], timeout=60)
        if done.returncode != 0:
            line = done.last_line()
            if "need to be root" in line:
                raise NeedRoot("ufw needs root: run castwall with sudo")
            raise ToolFailed(f"'ufw {' '.join(args)}' failed: {line}")
        return done

    def rules(self) -> RuleSet:
        """The rules in ufw's configuration, active or not. Raises ToolFailed, NeedRoot."""
        return parse_show_added(self._ufw("show", "added").stdout)

    def active(self) -> bool:
        """Whether ufw is enabled. Raises ToolFailed, NeedRoot."""
        first = self._ufw("status").stdout.strip().splitlines()
        if first and first[0].strip() == "Status: active":
            return True
        if first and first[0].strip() == "Status: inactive":
            return False
        raise ToolFailed("'ufw status' printed no status line castwall understands")

    def apply(self, step: Step) -> bool:
        """Carry out one step; True if ufw changed something, False if already so. Raises ToolFailed."""
        done = self._ufw(*step.ufw_args())
        return outcome(step, done.stdout, done.last_line())

    # One call is one whole change, so a run needs no start, commit or end.
    def begin(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def end(self) -> None:
        pass

    def revert(self, done: Sequence[Step], progress: Callable[[str], None]) -> tuple[list[Step], str]:
        """Undo the steps newest first, one ufw call each; returns those whose undo failed."""
        return undo_each(self, done, progress), ""


def outcome(step: Step, text: str, last_line: str) -> bool:
    """Whether ufw's answer to a step says it changed something. Raises ToolFailed.

    ufw exits 0 both for "Rule added" and "Skipping adding existing rule",
    so its message, not its exit status, tells what happened. While ufw is
    inactive it answers "Rules updated" to every change it makes.
    """
    if "Rules updated" in text:
        return True
    if step.action is Action.ADD:
        if "Rule added" in text or "Rule inserted" in text:
            return True
        if "Skipping adding existing rule" in text or "Skipping inserting existing rule" in text:
            return False
        if "Rule updated" in text:
            raise ToolFailed(
                f"ufw merged 'ufw {' '.join(step.ufw_args())}' into an existing rule "
                "(another program changed ufw during this run)"
            )
    else:
        if "Rule deleted" in text:
            return True
        if "Could not delete non-existent rule" in text:
            return False
    raise ToolFailed(f"'ufw {' '.join(step.ufw_args())}' answered: {last_line}")
