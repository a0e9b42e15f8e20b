"""The state file's JSON format: what castwall set up, versioned."""

from __future__ import annotations

import ipaddress
import json

from castwall import apps
from castwall.errors import BadData
from castwall.model import AppChoice, Device, FirewallChoice, Kind, Lan, NftChain, PortRange, Rule, State, Tracking
from castwall.sanitize import safe_text

FORMAT = "castwall-state"
VERSION = 4  # 2: rules carry proto and app, the chosen sender apps; 3: follow mode; 4: the firewall (1-3 are still read)


def device_json(d: Device) -> dict:
    return {
        "uuid": d.uuid,
        "name": d.name,
        "model": d.model,
        "kind": d.kind.value,
        "ip": str(d.ip),
        "port": d.port,
        "mac": d.mac,
        "mac_note": d.mac_note,
        "host": d.host,
        "also_at": [str(ip) for ip in d.also_at],
        "contested": d.contested,
    }


def _rule_json(r: Rule) -> dict:
    return {"ip": str(r.ip), "proto": r.proto, "ports": [r.ports.low, r.ports.high], "app": r.app, "profile": r.profile,
            "owner": r.owner}


def app_json(c: AppChoice) -> dict:
    return {"name": c.name, "ports": [c.ports.low, c.ports.high]}


def lan_json(lan: Lan | None) -> dict | None:
    if lan is None:
        return None
    return {"subnet": str(lan.subnet), "gateway": None if lan.gateway is None else str(lan.gateway), "gateway_mac": lan.gateway_mac}


def tracking_json(t: Tracking) -> dict:
    return {"uuid": t.uuid, "mac": t.mac, "lan": lan_json(t.lan), "away": t.away, "moves": list(t.moves), "stopped": t.stopped}


def firewall_json(choice: FirewallChoice | None) -> dict | None:
    if choice is None:
        return None
    chain = choice.chain
    return {"name": choice.name, "chain": None if chain is None else [chain.family, chain.table, chain.chain]}


def _firewall(item) -> FirewallChoice | None:
    if item is None:
        return None
    chain = item.get("chain")
    if chain is not None and (not isinstance(chain, list) or len(chain) != 3):
        raise ValueError("an nftables chain must be a list of family, table and chain")
    return FirewallChoice(item["name"], None if chain is None else NftChain(*chain))


def dump_state(state: State) -> str:
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "written": state.written,
        "port_range": None if state.port_range is None else [state.port_range.low, state.port_range.high],
        "devices": [device_json(d) for d in state.devices],
        "rules": [_rule_json(r) for r in state.rules],
        "apps": [app_json(c) for c in state.apps],
        "follow": [tracking_json(t) for t in state.follow],
        "firewall": firewall_json(state.firewall),
    }
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


def _ports(value) -> PortRange:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("port range must be a list of two numbers")
    return PortRange(value[0], value[1])


def _device(item: dict) -> Device:
    return Device(
        uuid=item["uuid"],
        name=safe_text(item["name"]),
        model=safe_text(item["model"]),
        kind=Kind(item["kind"]),
        ip=ipaddress.ip_address(item["ip"]),
        port=int(item["port"]),
        mac=item.get("mac"),
        mac_note=None if item.get("mac_note") is None else safe_text(item["mac_note"], 200),
        host=item.get("host"),
        also_at=tuple(ipaddress.ip_address(ip) for ip in item.get("also_at") or ()),
        contested=None if item.get("contested") is None else safe_text(item["contested"], 300),
    )


def _rule(item: dict) -> Rule:
    proto, app, profile = item.get("proto", "udp"), item.get("app"), item.get("profile", False)
    if not isinstance(proto, str) or not (app is None or isinstance(app, str)) or not isinstance(profile, bool):
        raise ValueError("proto and app must be strings, profile true or false")
    rule = Rule(ipaddress.ip_address(item["ip"]), _ports(item["ports"]), item["owner"], proto=proto, app=app, profile=profile)
    if rule.proto == "tcp" and rule.owner is not None:
        known = apps.BY_NAME.get(rule.app or "")
        if known is None and rule.app != apps.TCP_RANGE:
            raise ValueError(f"a TCP rule for {rule.app!r}, which is no app in castwall's catalogue")
        if rule.profile and known.ports != rule.ports:
            raise ValueError(f"a rule through {rule.profile_name} for other ports than the profile's")
    return rule


def _app(item: dict) -> AppChoice:
    if item.get("name") not in apps.BY_NAME and item.get("name") != apps.TCP_RANGE:
        raise ValueError(f"no app called {item.get('name')!r} in castwall's catalogue")
    return AppChoice(item["name"], _ports(item["ports"]))


def _text_or_none(value, limit: int = 300) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("a reason must be a string")
    return None if value is None else safe_text(value, limit)


def _lan(item) -> Lan | None:
    if item is None:
        return None
    gateway = item.get("gateway")
    return Lan(ipaddress.ip_network(item["subnet"]), None if gateway is None else ipaddress.ip_address(gateway),
               item.get("gateway_mac"))


def _tracking(item: dict) -> Tracking:
    moves = item.get("moves") or []
    if not isinstance(moves, list) or not all(isinstance(m, str) for m in moves):
        raise ValueError("moves must be a list of times")
    return Tracking(item["uuid"], item.get("mac"), _lan(item.get("lan")), _text_or_none(item.get("away")),
                    tuple(moves), _text_or_none(item.get("stopped")))


def load_state(text: str, source: str = "state file") -> State:
    """Parse a state document.

    Raises BadData, saying what is wrong, for anything but a valid document of
    a version this castwall reads.
    """
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BadData(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:  # json's decoder recurses once per level of nesting
        raise BadData(f"{source} is not a castwall state file (it nests too deeply)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadData(f"{source} is not a castwall state file")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise BadData(f"{source} has no valid version number")
    if version > VERSION:
        raise BadData(f"{source} was written by a newer castwall (format version {version})")
    try:
        port_range = None if doc.get("port_range") is None else _ports(doc["port_range"])
        devices = tuple(_device(d) for d in doc.get("devices", []))
        rules = tuple(_rule(r) for r in doc.get("rules", []))
        chosen = tuple(_app(a) for a in doc.get("apps", []))
        if len({a.name for a in chosen}) != len(chosen):
            raise ValueError("an app is listed twice")
        follow = tuple(_tracking(t) for t in doc.get("follow", []))
        if len({t.uuid for t in follow}) != len(follow):
            raise ValueError("a device is followed twice")
        firewall = _firewall(doc.get("firewall"))
        written = doc.get("written")
        if written is not None and not isinstance(written, str):
            raise ValueError("written must be a string")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadData(f"{source} holds an invalid entry: {safe_text(exc, 120)}") from None
    return State(port_range=port_range, devices=devices, rules=rules, written=written, apps=chosen, follow=follow,
                 firewall=firewall)
