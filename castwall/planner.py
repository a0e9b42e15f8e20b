"""Pure planning: from what is seen and what the firewall holds to the steps that reconcile them."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Collection, Mapping, Sequence

from castwall import apps
from castwall.model import (Action, Address, AppChoice, Device, FirewallChoice, Kind, Plan, PortRange, Rule, Skip, State, Step, Tracking,
                            canonical_uuid)

Network = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Trust:
    """What the user allowed beyond castwall's default of private addresses on attached subnets."""

    routed: bool = False  # --allow-routed
    public: bool = False  # --allow-public
    contested: frozenset[Address] = field(default_factory=frozenset)  # --allow-contested ADDRESS


def refusal(ip: Address, networks: Sequence[Network], own: Collection[Address], trust: Trust = Trust(), *,
            gateways: Collection[Address] = ()) -> str | None:
    """Why no rule may name ip, or None when it may.

    networks are the addresses (with prefix) of the interfaces castwall works
    on; own holds every address of this computer; gateways the routers its
    default routes go through, which are never Cast devices.
    """
    if ip.is_unspecified:
        return f"{ip} is not a host address"
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return f"{ip} is the broadcast address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_reserved:
        return f"{ip} is a reserved address"
    if ip.version == 6 and ip.is_link_local:
        return f"{ip} is a link-local IPv6 address, which a ufw rule cannot pin to one link"
    if ip in own:
        return f"{ip} is this computer's own address"
    if ip in gateways:
        return f"{ip} is this computer's default gateway, not a Cast device"
    attached = [n.network for n in networks if ip in n.network]  # never a network of the other IP version
    for net in attached:
        if net.version == 4 and net.prefixlen <= 30:
            if ip == net.network_address:
                return f"{ip} is the network address of {net}"
            if ip == net.broadcast_address:
                return f"{ip} is the broadcast address of {net}"
    if not attached and not trust.routed:
        return f"{ip} is not on a subnet of this computer's interfaces: it is reached through a router (--allow-routed allows it)"
    if ip.is_global and not trust.public:
        return f"{ip} is a public address (--allow-public allows it)"
    return None


def screen(
    devices: Sequence[Device], networks: Sequence[Network], own: Collection[Address], trust: Trust = Trust(), *,
    gateways: Collection[Address] = (),
) -> tuple[list[Device], dict[str, str]]:
    """Check every device's address before any rule is planned for it.

    Returns the devices (a contested one the user accepted now has the
    accepted address) and, by UUID, the reason each refused device gets no rule.
    """
    out, refused = [], {}
    for d in devices:
        if d.contested:
            accepted = [ip for ip in d.addresses if ip in trust.contested]
            if len(accepted) == 1:
                d = replace(d, ip=accepted[0], also_at=tuple(ip for ip in d.addresses if ip != accepted[0]))
            else:
                how = f"--allow-contested {d.ip}" if not d.also_at else "one address with --allow-contested ADDRESS"
                refused[d.uuid] = f"{d.contested}; no rule unless you accept {how}"
        out.append(d)
        if d.uuid not in refused:
            why = refusal(d.ip, networks, own, trust, gateways=gateways)
            if why:
                refused[d.uuid] = why
    return out, refused


def _owners(devices: Sequence[Device], accepted: Collection[Address]) -> tuple[dict[str, Address], list[Skip]]:
    """One owner per address: the physical device announced there (a group only where no device is)."""
    by_ip: dict[Address, list[Device]] = defaultdict(list)
    for d in devices:
        by_ip[d.ip].append(d)
    owners: dict[str, Address] = {}
    skipped: list[Skip] = []
    for ip, here in by_ip.items():
        physical = sorted({d.uuid: d for d in here if d.kind is not Kind.GROUP}.values(), key=lambda d: d.uuid)
        groups = sorted((d for d in here if d.kind is Kind.GROUP), key=lambda d: d.uuid)
        if len(physical) > 1 and ip not in accepted:
            names = ", ".join(d.name for d in physical)
            for d in physical + groups:
                skipped.append(Skip(d, f"{ip} is announced by {len(physical)} devices ({names}): contested; "
                                       f"no rule unless you accept it with --allow-contested {ip}", refused=True))
            continue
        owner = physical[0] if physical else groups[0]
        owners[owner.uuid] = ip
        for g in groups:
            if g is not owner:
                skipped.append(Skip(g, f"shares {ip} with {owner.name}, whose rules cover it"))
    return owners, skipped


def device_rules(ip: Address, owner: str, port_range: PortRange, chosen: Sequence[AppChoice] = (),
                 profiles: Collection[str] = ()) -> list[Rule]:
    """The rules one device gets: UDP to the local port range (DIAL), then TCP to each chosen app's ports."""
    return [Rule(ip, port_range, owner)] + [apps.rule_for(c, ip, owner, profiles) for c in chosen]


def select_devices(devices: Sequence[Device], selectors: Sequence[str]) -> tuple[set[str] | None, list[str]]:
    """The UUIDs that --device selectors name (None: no selectors, so all), and those matching nothing."""
    if not selectors:
        return None, []
    scope: set[str] = set()
    unmatched = []
    for sel in selectors:
        hits = {d.uuid for d in devices if d.matches(sel)}
        if not hits:
            unmatched.append(sel)
        scope |= hits
    return scope, unmatched


def plan_setup(
    devices: Sequence[Device],
    port_range: PortRange,
    firewall: Sequence[Rule],
    *,
    scope: Collection[str] | None = None,
    refused: Mapping[str, str] | None = None,
    accepted: Collection[Address] = (),
    chosen: Sequence[AppChoice] = (),
    profiles: Collection[str] = (),
) -> Plan:
    """The steps that give every device its rules: UDP for the port range, TCP for each chosen app.

    devices are all the devices seen; scope, when given (--device), names the
    UUIDs whose rules may change (a group brings the device that hosts it).
    firewall holds every rule of castwall's shape, tagged or not. Untagged
    rules are never changed; a rule that one already allows is skipped.
    Rules of devices not seen now are left alone, except that a changed port
    range is carried over to them when no --device limits the run. refused
    maps the UUIDs that screen() turned down to the reason; they get no rule
    and their old rules are treated as those of devices not seen. accepted
    holds the addresses the user accepted although several devices claim them.
    chosen are the sender apps (setup --app, and those chosen before);
    profiles names castwall's ufw application profiles that ufw has as
    castwall ships them, through which an app's rule is written.
    """
    refused = refused or {}
    owner_ip, all_skipped = _owners([d for d in devices if d.uuid not in refused], accepted)
    all_skipped += [Skip(d, refused[d.uuid], refused=True) for d in devices if d.uuid in refused]
    if scope is None:
        in_scope = {d.uuid for d in devices}
    else:
        owner_at = {ip: u for u, ip in owner_ip.items()}
        in_scope = set(scope) | {owner_at[d.ip] for d in devices if d.uuid in scope and d.ip in owner_at}
    wanted = {u: device_rules(ip, u, port_range, chosen, profiles) for u, ip in owner_ip.items() if u in in_scope}
    skipped = [s for s in all_skipped if s.device.uuid in in_scope]
    wanted_ips = {ip: u for u, ip in owner_ip.items() if u in in_scope}
    names = {d.uuid: d.name for d in devices}
    deletes: list[Step] = []
    swaps: list[Step] = []  # deletes that run after the adds: the same ports, another form (profile or plain)
    adds: list[Step] = []
    kept: list[Rule] = []
    for r in sorted((r for r in firewall if r.owner), key=Rule.sort_key):
        want = wanted.get(r.owner)
        job = apps.purpose(r)
        if want is not None:
            if r in want:
                if r not in kept:
                    kept.append(r)
            elif r.ip != want[0].ip:
                deletes.append(Step(Action.DELETE, r, f"{names[r.owner]} moved from {r.ip} to {want[0].ip}"))
            elif job == "dial":
                deletes.append(Step(Action.DELETE, r, f"port range changed from {r.ports} to {port_range}"))
            else:
                new = next((w for w in want[1:] if w.app == job), None)
                if new is None:  # every chosen app has its rule in want
                    deletes.append(Step(Action.DELETE, r, f"{job} is not chosen: castwall gives {names[r.owner]} no {r.traffic}"))
                elif new.ports == r.ports:
                    how = ("its ufw profile is installed now" if new.profile else
                           "its ufw profile is missing or changed, so a plain port rule replaces it")
                    swaps.append(Step(Action.DELETE, r, f"{job}: {how}"))
                else:
                    deletes.append(Step(Action.DELETE, r, f"{job} now uses {new.traffic}, not {r.traffic}"))
        elif r.ip in wanted_ips:
            # A firewall holds one rule per address and traffic (ufw's way): the old owner's must go.
            deletes.append(Step(Action.DELETE, r, f"{r.ip} now belongs to {names[wanted_ips[r.ip]]}"))
        elif scope is None and job == "dial" and r.ports != port_range:  # with no scope, want is None: not seen now
            deletes.append(Step(Action.DELETE, r, f"port range changed from {r.ports} to {port_range}"))
            adds.append(Step(Action.ADD, Rule(r.ip, port_range, r.owner), "port range changed; device not seen now"))
    untagged = [r for r in firewall if r.owner is None]
    replaced = {(s.rule.owner, apps.purpose(s.rule)) for s in deletes + swaps}
    for owner, rules in sorted(wanted.items(), key=lambda item: item[1][0].sort_key()):
        device = next(d for d in devices if d.uuid == owner)
        _add_wanted(device, [w for w in rules if w not in kept], untagged, replaced, adds, skipped)
    skipped.sort(key=lambda s: (s.device.name.casefold(), s.device.uuid))
    shown = tuple(d for d in devices if d.uuid in in_scope)
    changed = {s.rule for s in deletes + swaps}
    untouched = tuple(r for r in sorted(firewall, key=Rule.sort_key) if r.owner and r not in changed and r not in kept)
    return Plan(port_range, shown, tuple(deletes + adds + swaps), tuple(kept), tuple(skipped), untouched, tuple(chosen))


def _add_wanted(device: Device, rules: Sequence[Rule], untagged: Sequence[Rule], replaced: Collection[tuple],
                adds: list[Step], skipped: list[Skip]) -> None:
    """An add step for each of a device's rules that is missing, unless a rule castwall did not write covers it."""
    for want in rules:
        job = apps.purpose(want)
        what = "" if job == "dial" else f" ({job})"
        mine = next((u for u in untagged if u.covers(want)), None)
        if mine is not None:
            skipped.append(Skip(device, f"{want.traffic} is already allowed by a ufw rule castwall did not write "
                                        f"({mine.traffic} from {mine.ip}); left alone"))
            continue
        adds.append(Step(Action.ADD, want, f"replaces the old rule{what}" if (device.uuid, job) in replaced
                         else f"new: {device.name}{what}"))


def next_state(
    previous: State | None,
    seen: Sequence[Device],
    owned: Sequence[Rule],
    port_range: PortRange,
    written: str,
    chosen: Sequence[AppChoice] = (),
    follow: Sequence[Tracking] | None = None,
    firewall: FirewallChoice | None = None,
) -> State:
    """The state to save after a run: what was seen now, plus what still owns a rule or is followed, and the chosen apps.

    follow is what follow mode keeps, firewall the firewall the rules are in (None for either: as before).
    """
    firewall = firewall or (previous.firewall if previous else None)
    follow = tuple(previous.follow if previous else ()) if follow is None else tuple(follow)
    devices = {d.uuid: d for d in (previous.devices if previous else ())}
    devices.update({d.uuid: d for d in seen})
    current = {d.uuid for d in seen}
    owners = {r.owner for r in owned} | {t.uuid for t in follow}
    kept = sorted(
        (d for u, d in devices.items() if u in current or u in owners),
        key=lambda d: (d.name.casefold(), d.uuid),
    )
    return State(port_range, tuple(kept), tuple(sorted(owned, key=Rule.sort_key)), written, tuple(chosen), follow, firewall)


def select_rules_to_remove(
    owned: Sequence[Rule],
    known: Sequence[Device],
    selectors: Sequence[str],
    app_names: Sequence[str] = (),
    chosen: Sequence[AppChoice] = (),
) -> tuple[list[Step], list[str]]:
    """Delete steps for the owned rules the selectors name (all when none are given).

    With app_names (remove --app), only the rules of those apps, on every
    device; chosen (the apps in the state file) tells which rule serves which
    app. Returns the steps and the selectors or apps that matched nothing.
    """
    steps, unmatched = [], []
    chosen_rules: dict[Rule, None] = {}
    if not selectors and not app_names:
        chosen_rules = dict.fromkeys(owned)
    for sel in selectors:
        uuids = {d.uuid for d in known if d.matches(sel)}
        try:
            uuids.add(canonical_uuid(sel))
        except ValueError:
            pass
        hits = [r for r in owned if r.owner in uuids]
        if not hits:
            unmatched.append(sel)
        chosen_rules.update(dict.fromkeys(hits))
    names = {d.uuid: d.name for d in known}
    for app in app_names:
        hits = [r for r in owned if apps.purpose(r) == app]
        if not hits and app not in {c.name for c in chosen}:
            unmatched.append(app)
        chosen_rules.update(dict.fromkeys(hits))
    for r in sorted(chosen_rules, key=Rule.sort_key):
        job = apps.purpose(r)
        what = "" if job == "dial" else f" ({job})"  # an owned TCP rule always names its app
        steps.append(Step(Action.DELETE, r, f"remove: {names.get(r.owner, r.owner)}{what}"))
    return steps, unmatched


def uniform(plan: Plan, firewall: str) -> Plan:
    """The plan for a firewall that lets every address it holds reach every port it opens (firewalld's
    castwall policy: one ipset, one list of ports): with the added steps that make this so, shown
    like any other, so the plan still names every address and port let in. A rule the plan deletes
    that this would add again simply stays.
    """
    final = plan.wanted_rules()
    owner_of = {r.ip: r.owner for r in final}
    kinds: dict[tuple[str, PortRange], str | None] = {}  # what is let in (the app of the first rule that does)
    for r in sorted(final, key=Rule.sort_key):
        kinds.setdefault((r.proto, r.ports), r.app)
    deleted = {(s.rule.ip, s.rule.proto, s.rule.ports): s.rule for s in plan.steps if s.action is Action.DELETE}
    have = {(r.ip, r.proto, r.ports) for r in final}
    missing = [(ip, owner, proto, ports, kinds[proto, ports])
               for ip, owner in sorted(owner_of.items(), key=lambda item: int(item[0]))
               for proto, ports in sorted(kinds, key=lambda k: (k[0] != "udp", k[1])) if (ip, proto, ports) not in have]
    stays = [deleted[(ip, proto, ports)] for ip, _, proto, ports, _ in missing if (ip, proto, ports) in deleted]
    extra = [Step(Action.ADD, Rule(ip, ports, owner, proto=proto, app=app),
                  f"{firewall} opens its ports to every address castwall lets in")
             for ip, owner, proto, ports, app in missing if (ip, proto, ports) not in deleted]
    # A deleted rule that stays loses its delete step (the plan never adds a rule it deletes).
    steps = tuple(s for s in plan.steps if s.rule not in stays) + tuple(extra)
    return replace(plan, steps=steps, kept=tuple(sorted(plan.kept + tuple(stays), key=Rule.sort_key)))
