"""Pure nftables: read castwall's set and rule out of the JSON that `nft -j list ruleset` prints, find the
admin's input chain, and build the batches and the include file that change and keep them.

castwall's part of an admin's ruleset is one set and one rule, both inside the admin's own table:

    set castwall {                       # one element per castwall rule, its owner in the comment
        type ipv4_addr . inet_proto . inet_service; flags interval
        elements = { 192.168.1.20 . udp . 32768-60999 comment "castwall:<UUID>",
                     192.168.1.20 . tcp . 8010 comment "castwall:<UUID>/vlc" }
    }
    chain input { ip saddr . meta l4proto . th dport @castwall accept comment "castwall"  ... }

An element is exactly one of castwall's Rules (address, protocol, ports), so a run adds and deletes
elements as ufw adds and deletes rules, and one batch is one kernel transaction.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Iterable, Sequence

from castwall import apps
from castwall.model import NftChain, PortRange, Rule, parse_tag
from castwall.sanitize import safe_text

SET = "castwall"  # not "devices": that is a keyword of nft 1.0.6's grammar, and a set so named cannot be listed
RULE_COMMENT = "castwall"
SET_TYPE = ["ipv4_addr", "inet_proto", "inet_service"]
_MATCH = {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"meta": {"key": "l4proto"}},
                     {"payload": {"protocol": "th", "field": "dport"}}]}
RULE_EXPR = [{"match": {"op": "==", "left": _MATCH, "right": "@" + SET}}, {"accept": None}]
RULE_TEXT = f'ip saddr . meta l4proto . th dport @{SET} accept comment "{RULE_COMMENT}"'
_UNCONDITIONAL = {"counter", "log", "limit"}  # expressions that match every packet


class BadRuleset(ValueError):
    """nft printed something castwall cannot read as a ruleset."""


@dataclass(frozen=True)
class InputChain:
    """A base chain on the input hook that castwall could put its rule in."""

    chain: NftChain
    drops: bool  # its policy is drop, or its last rule drops or rejects every packet that reaches it
    managed_by: str | None = None  # "firewalld" or "iptables-nft": a table another program owns


@dataclass(frozen=True)
class Found:
    """What the ruleset holds of castwall's in one chain's table."""

    rules: tuple[Rule, ...]  # the set's elements as rules (owner None for an element castwall did not tag)
    odd: tuple[str, ...]  # castwall-tagged things of another shape, or a set named castwall of another type
    set_present: bool
    set_ok: bool  # the set has castwall's type and flags
    rule_handles: tuple[int, ...]  # castwall's rules in the chain (normally one)
    chain_present: bool
    foreign: int = 0  # elements of the set that are not castwall's shape: someone else's, so the set stays


def objects(text: str) -> list[dict]:
    """The objects of `nft -j ...` output. Raises BadRuleset."""
    try:
        doc = json.loads(text) if text.strip() else {"nftables": []}
    except (ValueError, RecursionError):
        raise BadRuleset("nft printed no JSON castwall can read") from None
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRuleset("nft printed JSON without an nftables list")
    return items


def _verdict(expr) -> str | None:
    """The final verdict of a rule that matches every packet ("drop", "reject"), else None."""
    if not isinstance(expr, list) or not expr:
        return None
    *before, last = expr
    if not all(isinstance(e, dict) and set(e) <= _UNCONDITIONAL for e in before) or not isinstance(last, dict):
        return None
    return next((v for v in ("drop", "reject") if v in last), None)


def input_chains(items: Sequence[dict]) -> list[InputChain]:
    """Every filter base chain on the input hook of an IPv4-seeing family, and whether it drops by default."""
    chains: dict[tuple[str, str, str], dict] = {}
    last_rule: dict[tuple[str, str, str], object] = {}
    table_chains: dict[tuple[str, str], set[str]] = {}
    for item in items:
        if isinstance(item.get("chain"), dict):
            c = item["chain"]
            key = (c.get("family"), c.get("table"), c.get("name"))
            table_chains.setdefault(key[:2], set()).add(str(key[2]))
            if c.get("hook") == "input" and c.get("type", "filter") == "filter":
                chains[key] = c
        elif isinstance(item.get("rule"), dict):
            r = item["rule"]
            last_rule[(r.get("family"), r.get("table"), r.get("chain"))] = r.get("expr")
    out = []
    for key, c in chains.items():
        family, table, name = key
        try:
            chain = NftChain(family, table, name)
        except (ValueError, TypeError):
            continue  # ip6, netdev, or a name castwall does not write
        names = table_chains.get((family, table), set())
        managed = ("firewalld" if table == "firewalld" else
                   "iptables-nft" if {"INPUT", "FORWARD", "OUTPUT"} & names or any(n.startswith("ufw-") for n in names)
                   else None)
        drops = c.get("policy") == "drop" or _verdict(last_rule.get(key)) is not None
        out.append(InputChain(chain, drops, managed))
    return sorted(out, key=lambda i: str(i.chain))


def _elem_rule(elem) -> tuple[Rule | None, str | None]:
    """One set element as a Rule, or None with the element's text when it is not of castwall's shape."""
    comment = None
    if isinstance(elem, dict) and "elem" in elem and isinstance(elem["elem"], dict):
        comment = elem["elem"].get("comment")
        elem = elem["elem"].get("val")
    try:
        parts = elem["concat"]
        addr, proto, port = parts
        ip = ipaddress.IPv4Address(addr)
        if proto not in ("udp", "tcp"):
            raise ValueError(proto)
        if isinstance(port, dict):
            low, high = port["range"]
        else:
            low = high = port
        ports = PortRange(low, high)  # which takes whole numbers only (no bool, no text)
    except (KeyError, TypeError, ValueError):
        return None, safe_text(json.dumps(elem), 160)
    try:
        tag = parse_tag(comment) if isinstance(comment, str) else None
    except ValueError:  # it starts as castwall's tag and is not one
        return None, safe_text(f"{ip} . {proto} . {ports} comment {comment}", 160)
    if tag is None:
        return Rule(ip, ports, None, proto=proto), None
    owner, app = tag
    if proto == "udp":
        return (Rule(ip, ports, owner), None) if app is None else (None, f"{ip} . udp . {ports} comment {comment}")
    if app not in apps.BY_NAME and app != apps.TCP_RANGE:
        return None, safe_text(f"{ip} . tcp . {ports} comment {comment}", 160)
    return Rule(ip, ports, owner, proto="tcp", app=app), None


def find(items: Sequence[dict], chain: NftChain) -> Found:
    """castwall's set and rule in chain's table."""
    rules: list[Rule] = []
    odd: list[str] = []
    set_present = set_ok = chain_present = False
    foreign = 0
    handles: list[int] = []
    for item in items:
        if isinstance(item.get("set"), dict):
            s = item["set"]
            if (s.get("family"), s.get("table"), s.get("name")) != (chain.family, chain.table, SET):
                continue
            set_present = True
            set_ok = s.get("type") == SET_TYPE and "interval" in (s.get("flags") or [])
            if not set_ok:
                odd.append(f"set {chain.family} {chain.table} {SET} has type {safe_text(json.dumps(s.get('type')), 80)}, "
                           "not castwall's")
                continue
            for elem in s.get("elem") or []:
                rule, text = _elem_rule(elem)
                if rule is not None:
                    rules.append(rule)
                else:
                    odd.append(f"element of set {SET}: {text}")
                    foreign += 1
        elif isinstance(item.get("chain"), dict):
            c = item["chain"]
            if (c.get("family"), c.get("table"), c.get("name")) == (chain.family, chain.table, chain.chain):
                chain_present = True
        elif isinstance(item.get("rule"), dict):
            r = item["rule"]
            if (r.get("family"), r.get("table"), r.get("chain")) != (chain.family, chain.table, chain.chain):
                continue
            if r.get("comment") == RULE_COMMENT:
                if r.get("expr") == RULE_EXPR and isinstance(r.get("handle"), int):
                    handles.append(r["handle"])
                else:
                    odd.append(f"rule in chain {chain} with castwall's comment but another match (handle {r.get('handle')})")
    return Found(tuple(rules), tuple(odd), set_present, set_ok, tuple(handles), chain_present, foreign)


def element(rule: Rule) -> dict:
    port = rule.ports.low if rule.ports.low == rule.ports.high else {"range": [rule.ports.low, rule.ports.high]}
    out: dict = {"val": {"concat": [str(rule.ip), rule.proto, port]}}
    if rule.comment:
        out["comment"] = rule.comment
    return {"elem": out}


def _where(chain: NftChain) -> dict:
    return {"family": chain.family, "table": chain.table}


def set_object(chain: NftChain) -> dict:
    # No comment on the set: nft 1.0.6 takes a set's comment from its own syntax but not from JSON, so the
    # set a batch makes and the one the include file makes would differ.
    return {"set": {**_where(chain), "name": SET, "type": SET_TYPE, "flags": ["interval"]}}


def rule_object(chain: NftChain) -> dict:
    return {"rule": {**_where(chain), "chain": chain.chain, "expr": RULE_EXPR, "comment": RULE_COMMENT}}


def elements(chain: NftChain, rules: Iterable[Rule]) -> dict:
    return {"element": {**_where(chain), "name": SET, "elem": [element(r) for r in rules]}}


def batch(chain: NftChain, found: Found, adds: Sequence[Rule], deletes: Sequence[Rule], keep: bool) -> list[dict]:
    """The commands of one transaction: castwall's set and rule made (or, with keep False, removed), then the elements.

    keep False means no rule of castwall's shape is left afterwards: the rule and the set go too,
    and the admin's ruleset is as it was before castwall's first run; but a set that holds elements
    of another shape (someone else's) stays, without castwall's rule, and loses only castwall's.
    """
    out: list[dict] = []
    drop_rules = [{"delete": {"rule": {**_where(chain), "chain": chain.chain, "handle": h}}} for h in found.rule_handles]
    if not keep:
        if found.foreign:
            return drop_rules + ([{"delete": elements(chain, deletes)}] if deletes else [])
        return drop_rules + ([{"delete": {"set": {**_where(chain), "name": SET}}}] if found.set_present else [])
    if not found.set_present:
        out.append({"add": set_object(chain)})
    if deletes:
        out.append({"delete": elements(chain, deletes)})
    if adds:
        out.append({"add": elements(chain, adds)})
    if not found.rule_handles:
        out.append({"insert": rule_object(chain)})  # insert with no position: the chain's first rule
    return out + drop_rules[1:]


def restore(chain: NftChain, now: Found, before: Found) -> list[dict]:
    """The batch that puts castwall's set, its elements and its rule back as they were (before), from now."""
    if not before.set_present:
        return batch(chain, now, [], [], keep=False)
    out: list[dict] = [] if now.set_present else [{"add": set_object(chain)}]
    extra = [r for r in now.rules if r not in before.rules]
    missing = [r for r in before.rules if r not in now.rules]
    if extra:
        out.append({"delete": elements(chain, extra)})
    if missing:
        out.append({"add": elements(chain, missing)})
    if not before.rule_handles:
        out += [{"delete": {"rule": {**_where(chain), "chain": chain.chain, "handle": h}}} for h in now.rule_handles]
    elif not now.rule_handles:
        out.append({"insert": rule_object(chain)})
    return out


def command_text(command: dict) -> str:
    """One batch command as a person would type it to nft."""
    (verb, body), = command.items()
    (kind, obj), = body.items()
    where = f"{obj['family']} {obj['table']}"
    if kind == "set":
        if verb == "delete":
            return f"nft delete set {where} {SET}"
        return f"nft add set {where} {SET} '{{ type {' . '.join(SET_TYPE)}; flags interval; }}'"
    if kind == "rule":
        if verb == "delete":
            return f"nft delete rule {where} {obj['chain']} handle {obj['handle']}"
        return f"nft insert rule {where} {obj['chain']} {RULE_TEXT}"
    items = ", ".join(_element_text(e) for e in obj["elem"])
    return f"nft {verb} element {where} {SET} '{{ {items} }}'"


def _element_text(elem: dict, comments: bool = True) -> str:
    ip, proto, port = elem["elem"]["val"]["concat"]
    port_text = f"{port['range'][0]}-{port['range'][1]}" if isinstance(port, dict) else str(port)
    comment = elem["elem"].get("comment")
    return f"{ip} . {proto} . {port_text}" + (f' comment "{comment}"' if comment and comments else "")


def include_pattern(path: str) -> str:
    """The include line's pattern for castwall's file: nft skips a pattern that matches nothing, not a missing file."""
    stem, dot, ext = path.rpartition(".")
    return f"{stem}*.{ext}" if dot else f"{path}*"


def include_text(chain: NftChain, rules: Sequence[Rule], path: str) -> str:
    """The file an admin includes at the end of /etc/nftables.conf, so that a reload or a reboot keeps castwall's part.

    It holds castwall's set with every element and the one rule, in nft's own syntax; with no
    rules it holds nothing but comments, so the admin's include line never breaks a reload.
    """
    head = ["# castwall's part of this computer's nftables ruleset: written by castwall, do not edit.",
            "# Keep it across reloads and reboots: add this line at the end of /etc/nftables.conf:",
            f'#     include "{include_pattern(path)}"',
            "# (a pattern: should this file be gone, as after 'apt purge castwall', the admin's ruleset still loads)"]
    if not rules:
        return "\n".join(head + ["# castwall has no rules now."]) + "\n"
    elems = ",\n".join("\t\t\t" + _element_text(element(r)) for r in rules)
    body = [f"table {chain.family} {chain.table} {{",
            f"\tset {SET} {{",
            f"\t\ttype {' . '.join(SET_TYPE)}",
            "\t\tflags interval",
            "\t\telements = {",
            elems,
            "\t\t}",
            "\t}",
            # Declared empty: nothing to a chain that exists; should it be gone, a chain of no hook, so the load
            # never fails on the rule below (a failed load would leave the computer with no ruleset at all).
            f"\tchain {chain.chain} {{",
            "\t}",
            "}",
            f"insert rule {chain.family} {chain.table} {chain.chain} {RULE_TEXT}"]
    return "\n".join(head + body) + "\n"
