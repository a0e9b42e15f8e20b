"""Pure rendering of devices, plans and status as text and as versioned JSON."""

from __future__ import annotations

import shlex
from typing import Mapping, Sequence

from castwall import __version__
from castwall.hints import Hints, plain_rows
from castwall import apps
from castwall.model import Action, AppChoice, Device, Kind, Plan, PortRange, Rule, State, Step, port_text
from castwall.findings import Finding
from castwall.sanitize import safe_text
from castwall.announcement import Rejected
from castwall.state import device_json as _device_json
from castwall.verdict import DIAL_WORDS, Verdict

SCHEMA = 1
UFW_WORDS = {
    "active": "ufw active",
    "inactive": "ufw INACTIVE (rules have no effect)",
    "missing": "ufw not installed",
    "unknown": "ufw (live rules need root; shown from the state file)",
}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _note(device: Device, by_uuid: dict[str, Device], refused: Mapping[str, str]) -> str:
    if device.uuid in refused:
        return f"no rule: {refused[device.uuid]}"
    if device.kind is Kind.GROUP:
        host = by_uuid.get(device.host or "")
        return f"group hosted by {host.name}" if host else "group; its host device was not seen"
    if device.mac is None and device.mac_note:
        return f"no MAC: {device.mac_note}"
    return ""


def device_table(devices: Sequence[Device], refused: Mapping[str, str] | None = None) -> str:
    by_uuid = {d.uuid: d for d in devices}
    refused = refused or {}
    rows = [
        [
            safe_text(d.name),
            safe_text(d.model),
            d.kind.value,
            str(d.ip),
            str(d.port),
            d.mac or "-",
            d.found_by_text,
            d.uuid,
            _note(d, by_uuid, refused),
        ]
        for d in devices
    ]
    return table(["NAME", "MODEL", "KIND", "ADDRESS", "PORT", "MAC", "FOUND BY", "UUID", "NOTE"], rows)


def command_line(step: Step) -> str:
    return shlex.join(("ufw",) + step.ufw_args())


def hint_lines(hints: Hints) -> list[str]:
    """setup's short form of the plain hints: the reservations, and why a device has none."""
    out = []
    if hints.reservations:
        out += ["DHCP reservations to make on your router, so these addresses never change",
                "('castwall hints --format list' shows the syntax of many routers):"]
        out += plain_rows(hints.reservations)
    # Groups share their host's reservation, and refused devices are listed with the skipped ones.
    why_not = [o for o in hints.omitted if o.code not in ("group", "refused")]
    if why_not:
        out += ["No DHCP reservation hint for:"]
        out += [f"  {o.name} ({o.ip}): {o.reason}" for o in why_not]
    return out


def plan_text(plan: Plan, *, source: str, known: Sequence[Device] = (), hints: Hints | None = None,
              extra: Sequence[str] = (), firewall: str = "ufw", commands: Sequence[str] | None = None) -> str:
    """The plan as the user approves it: devices, hints, commands, and what the firewall lets in afterwards.

    extra holds further sections of the plan (the dnsmasq drop-in, with --reserve). firewall names
    the firewall; commands are its native commands for the steps (None: ufw's, one per step).
    """
    out = [f"Port range: {plan.port_range} (from {source})", ""]
    out.append(f"Devices ({len(plan.devices)}):")
    refused = {s.device.uuid: "see below" for s in plan.skipped if s.refused}
    out.extend("  " + line for line in device_table(plan.devices, refused).splitlines())
    lines = hint_lines(hints) if hints else []
    if lines:
        out += [""] + lines
    if plan.skipped:
        out += ["", f"Rules castwall does not write ({len(plan.skipped)}):"]
        out.extend(f"  {safe_text(s.device.name)} ({s.device.ip}): {s.reason}" for s in plan.skipped)
    out.append("")
    if plan.steps:
        out += changes_text(plan.steps, firewall, commands)
    else:
        out.append(f"{firewall}: nothing to change.")
    for section in extra:
        out += ["", section]
    out += ["", allowed_list(plan, known)]
    return "\n".join(out)


def allowed_summary(plan: Plan) -> str:
    """One sentence: how many addresses castwall's rules let in once the plan has run."""
    rules = plan.wanted_rules()
    if not rules:
        return "castwall's rules let in no address."
    ips = list(dict.fromkeys(str(r.ip) for r in rules))
    apps_part = f", and TCP for {', '.join(c.name for c in plan.apps)}" if plan.apps else ""
    return f"castwall's rules let in UDP{apps_part} from {len(ips)} address(es): " + ", ".join(ips) + "."


def allowed_list(plan: Plan, known: Sequence[Device] = ()) -> str:
    """Every address and port castwall's rules let in once the plan has run, and whose it is."""
    rules = plan.wanted_rules()
    if not rules:
        return "Afterwards castwall's rules let in no address."
    names = {d.uuid: d.name for d in known}
    names.update({d.uuid: d.name for d in plan.devices})
    ips = list(dict.fromkeys(r.ip for r in rules))
    lines = [f"Afterwards castwall's rules let in exactly these {len(ips)} address(es), to these ports of this computer:"]
    width = max(len(r.traffic) for r in rules)
    for r in rules:
        owner = safe_text(names.get(r.owner or "", f"device {r.owner}"))
        job = apps.purpose(r)
        what = "" if job == "dial" else f" ({job or 'an app no longer chosen'})"
        note = " (not seen now; its rule is left as it was)" if r in plan.untouched else ""
        lines.append(f"  {str(r.ip):<15}  {r.traffic:<{width}}  {owner}{what}{note}")
    broad = [c for c in plan.apps if c.name == apps.TCP_RANGE]
    for c in broad:
        lines.append(f"  note: {apps.choice_text(c)}")
    return "\n".join(lines)


def apps_section(plan: Plan, given: Sequence[AppChoice] = (), scoped: bool = False) -> str:
    """The sender apps of a setup plan: the TCP ports each device gets, and how ufw names them."""
    rules = plan.wanted_rules()
    out = [f"Sender apps ({len(plan.apps)}): each device with a rule also gets TCP from its address to these ports:"]
    rows = []
    for c in plan.apps:
        written = [r for r in rules if not r.is_dial and apps.purpose(r) == c.name]
        if not written:
            how = "no device gets it in this run"
        elif all(r.profile for r in written):
            how = f"through ufw's app profile {written[0].profile_name}"
        else:
            how = "as a plain port rule" + ("" if apps.is_default(c) or c.name == apps.TCP_RANGE else " (not the app's usual port)")
        rows.append([c.name, f"TCP {port_text(c.ports)}", how])
    out.extend("  " + line for line in table(["APP", "PORTS", "WRITTEN"], rows).splitlines()[1:])
    out.extend(f"  note: {apps.choice_text(c)}" for c in plan.apps if c.name == apps.TCP_RANGE)
    new = [c.name for c in given]
    if scoped and new:
        out.append(f"  note: {', '.join(new)} stay(s) chosen: a later setup without --device gives them to every device")
    return "\n".join(out)


def steps_text(steps: Sequence[Step]) -> str:
    return "\n".join(f"  {command_line(s)}\n      # {s.reason}" for s in steps)


def changes_text(steps: Sequence[Step], firewall: str = "ufw", commands: Sequence[str] | None = None) -> list[str]:
    """The steps of a run and the firewall's commands that carry them out.

    ufw's commands are one per step; firewalld's and nftables' carry out the whole list together
    (an nftables batch, firewalld's ipset entries), so the steps come first, then the commands.
    """
    if commands is None:
        return [f"{firewall} commands castwall will run ({len(steps)}):", steps_text(steps)]
    out = [f"Changes ({len(steps)}):"]
    for s in steps:
        verb = "allow" if s.action is Action.ADD else "stop allowing"
        out.append(f"  {verb} {s.rule.traffic} from {s.rule.ip}\n      # {s.reason}")
    out.append(f"{firewall} commands castwall will run ({len(commands)}):")
    out.extend(f"  {c}" for c in commands)
    return out


# --- status -----------------------------------------------------------------


def status_rows(state: State | None, discovered: Sequence[Device] | None, rules: Sequence[Rule]) -> list[list[str]]:
    known: dict[str, Device] = {d.uuid: d for d in (state.devices if state else ())}
    seen = {d.uuid: d for d in discovered or ()}
    rows = []
    for uuid in sorted(known.keys() | seen.keys(), key=lambda u: (seen.get(u) or known[u]).name.casefold()):
        d = seen.get(uuid) or known[uuid]
        dial = [r for r in rules if r.is_dial]
        rule = next((r for r in dial if r.owner == uuid), None) or next((r for r in dial if r.ip == d.ip), None)
        if rule is None:
            allowed = "no rule"
        elif rule.ip != d.ip:
            allowed = f"rule for old {rule.ip}"
        elif rule.owner is None:
            allowed = f"your rule {rule.ports}"
        else:
            allowed = f"allowed {rule.ports}"
        # A group is reached through its host's rules, which share its address.
        reach = sorted({r.app for r in rules if r.owner and r.app and r.ip == d.ip and (r.owner == uuid or d.kind is Kind.GROUP)})
        if uuid in seen:
            where = f"seen ({seen[uuid].found_by_text})" if seen[uuid].found_by else "seen"
        else:
            where = "not seen" if discovered is not None else "recorded"
        mac = d.mac or (known[uuid].mac if uuid in known else None) or "-"
        rows.append([safe_text(d.name), d.kind.value, str(d.ip), mac, allowed, ", ".join(reach) or "-", where])
    return rows


def firewall_words(firewall: str, status: str) -> str:
    """The firewall line of status: "ufw active", "nftables (inet filter input) filtering", "none: ..."."""
    if status == "none":
        return "none: nothing filters incoming traffic here"
    if firewall == "unknown":
        return "unknown (telling which firewall filters needs root)"
    if firewall == "ufw":
        return UFW_WORDS.get(status, status)
    words = {"active": "filtering", "inactive": "NOT filtering (rules have no effect)", "missing": "not installed",
             "unknown": "(live rules need root; shown from the state file)"}
    return f"{firewall} {words.get(status, status)}"


def status_text(
    *,
    port_range: PortRange,
    status: str,
    state_path: str,
    firewall: str = "ufw",
    state: State | None,
    discovered: Sequence[Device] | None,
    rules: Sequence[Rule],
    findings: Sequence[Finding],
    follow: dict | None = None,
) -> str:
    out = [
        f"Port range:  {port_range}",
        f"Firewall:    {firewall_words(firewall, status)}",
        f"State file:  {state_path}" + (f" (written {state.written})" if state and state.written else " (none yet)" if state is None else ""),
    ]
    if follow is not None:
        out.append(f"Follow mode: {follow_summary(follow)}")
    if state and state.apps:
        out.append("Apps:        " + "; ".join(apps.choice_text(c) for c in state.apps))
    out.append("")
    rows = status_rows(state, discovered, rules)
    if rows:
        out.append(table(["NAME", "KIND", "ADDRESS", "MAC", "FIREWALL", "APPS", "LAN"], rows))
    else:
        out.append("No Cast devices known or seen.")
    attention = [f for f in findings if f.attention]
    notes = [f for f in findings if not f.attention]
    if attention:
        out += ["", f"Needs attention ({len(attention)}):"]
        out.extend(f"  ! {safe_text(f.message, 300)}" for f in attention)
    if notes:
        out += [""] + [f"  note: {safe_text(f.message, 300)}" for f in notes]
    if not attention:
        out += ["", "All in place."]
    elif all(f.code == "check-failed" for f in attention):
        out += ["", "The rules are in place, but Chrome cannot find or reach some devices: see the fixes above."]
    elif all(f.code == "firewall-problem" and "include" in f.message for f in attention):
        out += ["", "castwall's rules are in place; add the include line above so that they last."]
    else:
        out += ["", "Run 'sudo castwall setup' to bring the rules up to date."]
    return "\n".join(out)


# --- follow -----------------------------------------------------------------


def last_pass_text(last: dict | None) -> str:
    if last is None:
        return "no pass has run yet"
    changes = last.get("changes") or []
    ended = "ended well" if last["exit"] == 0 else f"FAILED (exit {last['exit']}): {safe_text(last.get('error') or '', 300)}"
    return f"{safe_text(str(last.get('finished')), 40)}, {ended}; {len(changes)} change(s)"


def follow_summary(doc: dict) -> str:
    """One line for status: on or off, and the last pass."""
    return f"{doc['units']}; last pass: {last_pass_text(doc['last_pass'])}"


def follow_text(doc: dict) -> str:
    """follow status: the units, the last pass with its lines, and each approved device."""
    out = [f"Follow mode: {doc['units']}", f"Last pass:   {last_pass_text(doc['last_pass'])}"]
    last = doc["last_pass"] or {}
    for key in ("changes", "refusals", "new_devices"):
        out += [f"  {safe_text(str(line), 400)}" for line in last.get(key) or []]
    if doc["state_problem"]:
        out += ["", f"The state file is unusable: {safe_text(doc['state_problem'], 300)}; passes change nothing until "
                    "'sudo castwall setup' rebuilds it."]
    out.append("")
    if not doc["devices"]:
        out.append("No device is approved: follow mode follows only the devices 'sudo castwall setup' allowed.")
        return "\n".join(out)
    rows = [[safe_text(d["name"] or d["uuid"]), d["ip"] or "-", d["mac"] or "unknown", d["lan"] or "unknown (run setup)",
             d["status"] + (f": {safe_text(d['reason'], 200)}" if d["reason"] else "")] for d in doc["devices"]]
    out.append(table(["NAME", "ADDRESS", "APPROVED MAC", "APPROVED ON", "FOLLOW"], rows))
    return "\n".join(out)


# --- check ------------------------------------------------------------------


def check_rows(verdicts: Sequence[Verdict]) -> list[list[str]]:
    rows = []
    for v in verdicts:
        if v.ok:
            chrome = f"finds it by {' and '.join(v.ways)}, can cast"
        elif v.ways:
            chrome = "finds it, CANNOT CAST"
        else:
            chrome = "CANNOT FIND IT"
        mdns = "arrives" if v.mdns else ("not here" if v.device.found_by else "no answer")
        rows.append([safe_text(v.device.name), str(v.device.ip), mdns, DIAL_WORDS[v.dial],
                     f"{v.device.port} " + ("opens" if v.cast is None else "fails"), chrome])
    return rows


def check_text(verdicts: Sequence[Verdict], left_out: Mapping[Device, str] | None = None) -> str:
    """What Chrome needs, device by device: the table, the problems with their fixes, then notes.

    left_out: devices not checked (refused for their address, never approved), with the reason.
    """
    out = [table(["NAME", "ADDRESS", "MDNS", "DIAL", "CAST PORT", "CHROME"], check_rows(verdicts))]
    bad = [v for v in verdicts if not v.ok]
    if bad:
        out += ["", f"Needs attention ({len(bad)}):"]
        for v in bad:
            out.append(f"  ! {safe_text(v.device.name)} ({v.device.ip}): {safe_text(v.problem, 400)}")
            out.append(f"    fix: {safe_text(v.fix, 400)}")
    notes = [v for v in verdicts if v.note]
    if notes:
        out += [""] + [f"  note: {safe_text(v.device.name)}: {safe_text(v.note, 400)}" for v in notes]
    if left_out:
        out += ["", f"Not checked ({len(left_out)}): castwall refuses them a rule and nobody approved one:"]
        out += [f"  {safe_text(d.name)} ({d.ip}): {safe_text(why, 300)}" for d, why in left_out.items()]
    out += ["", f"Chrome can find and cast to all {len(verdicts)} device(s)." if not bad else
            f"Chrome cannot find or reach {len(bad)} of {len(verdicts)} device(s)."]
    return "\n".join(out)


# --- JSON -------------------------------------------------------------------


def document(kind: str, **fields) -> dict:
    return {"castwall": __version__, "kind": kind, "schema": SCHEMA, **fields}


def device_json(d: Device, refused: str | None = None) -> dict:
    return {**_device_json(d), "found_by": list(d.found_by), "refused": refused}


def rejected_json(r: Rejected) -> dict:
    if r.via == "dial":
        return {"via": "dial", "source": r.instance, "reason": r.reason}
    return {"via": "mdns", "instance": r.instance, "reason": r.reason}


def rule_json(r: Rule) -> dict:
    return {"ip": str(r.ip), "proto": r.proto, "ports": [r.ports.low, r.ports.high], "profile": r.profile_name,
            "for": apps.purpose(r) if r.owner else None, "owner": r.owner, "comment": r.comment}


def app_json(c: AppChoice) -> dict:
    app = apps.BY_NAME.get(c.name)
    return {"name": c.name, "proto": "tcp", "ports": [c.ports.low, c.ports.high], "profile": app.profile if app else None,
            "default_ports": None if app is None or app.ports is None else [app.ports.low, app.ports.high]}


def verdict_json(v: Verdict, refused: str | None = None) -> dict:
    return {**device_json(v.device, refused), "mdns": v.mdns, "dial": v.dial,
            "cast": {"port": v.device.port, "opens": v.cast is None, "error": v.cast},
            "chrome_finds_by": [w.lower() for w in v.ways], "ok": v.ok, "problem": v.problem, "fix": v.fix, "note": v.note}


def finding_json(f: Finding) -> dict:
    return {"code": f.code, "message": f.message, "attention": f.attention}
