"""The planner's edges, one rule at a time: each test breaks if one condition of screening or planning is dropped or
turned (scripts/mutate found these uncovered by the stories in tests/test_planner.py)."""

import ipaddress
from dataclasses import replace

from castwall.model import Action, AppChoice, FirewallChoice, Kind, PortRange, Rule, State, Tracking
from castwall.planner import Trust, _owners, next_state, plan_setup, refusal, screen, select_rules_to_remove, uniform
from tests.fakes import device

PR = PortRange(32768, 60999)
OLD = PortRange(40000, 50000)
VLC = AppChoice("vlc", PortRange(8010, 8010))
CATT = AppChoice("catt", PortRange(45000, 47000))
ip = ipaddress.ip_address
TV, SPEAKER = device(1, name="Living Room TV"), device(2, name="Kitchen speaker")


def udp(d, ports=PR, at=None):
    return Rule(ip(at) if at else d.ip, ports, d.uuid)


def tcp(d, choice, at=None):
    return Rule(ip(at) if at else d.ip, choice.ports, d.uuid, proto="tcp", app=choice.name)


def reasons(plan):
    return [(s.action.value, str(s.rule.ip), s.rule.proto, s.reason) for s in plan.steps]


# Screening

def test_ipv4_link_local_and_ipv6_hosts_on_an_attached_network_may_have_rules():
    nets = [ipaddress.ip_interface("169.254.7.1/16"), ipaddress.ip_interface("fd00:77::10/64")]
    assert refusal(ip("169.254.7.9"), nets, set()) is None  # a Cast device without DHCP picks one of these
    assert refusal(ip("fd00:77::5"), nets, set()) is None
    assert "link-local IPv6" in refusal(ip("fe80::5"), nets + [ipaddress.ip_interface("fe80::1/64")], set())


def test_only_ipv4_networks_of_up_to_30_bits_have_network_and_broadcast_addresses():
    nets = [ipaddress.ip_interface("10.30.0.0/31"), ipaddress.ip_interface("fd00:77::10/64")]
    assert refusal(ip("10.30.0.1"), nets, set()) is None  # RFC 3021: both addresses of a /31 are hosts
    assert refusal(ip("fd00:77::ffff:ffff:ffff:ffff"), nets, set()) is None  # IPv6 has no broadcast address
    wide = [ipaddress.ip_interface("fd00::1/16")]
    assert refusal(ip("fd00::"), wide, set()) is None  # nor a network address, however short its prefix


def test_the_default_gateway_is_never_a_cast_device():
    lan = [ipaddress.ip_interface("192.168.77.10/24")]
    assert refusal(ip("192.168.77.1"), lan, set()) is None
    why = refusal(ip("192.168.77.1"), lan, set(), gateways={ip("192.168.77.1")})
    assert why == "192.168.77.1 is this computer's default gateway, not a Cast device"


def test_a_contested_device_is_told_the_option_that_accepts_it():
    one = replace(TV, contested=f"{TV.ip} is announced by 2 devices")
    two = replace(SPEAKER, contested="announced from 2 addresses", also_at=(ip("192.168.77.160"),))
    _, refused = screen([one, two], [ipaddress.ip_interface("192.168.77.10/24")], set())
    assert refused[one.uuid].endswith(f"no rule unless you accept --allow-contested {TV.ip}")
    assert refused[two.uuid].endswith("no rule unless you accept one address with --allow-contested ADDRESS")
    accepted, none_refused = screen([two], [ipaddress.ip_interface("192.168.77.10/24")], set(),
                                    Trust(contested=frozenset({ip("192.168.77.160")})))
    assert none_refused == {} and accepted[0].ip == ip("192.168.77.160") and accepted[0].also_at == (SPEAKER.ip,)


def test_every_contested_address_is_refused_and_every_other_gets_its_owner():
    a, b = device(1), replace(device(2), ip=ip("192.168.77.101"))
    c, d = device(3), replace(device(4), ip=ip("192.168.77.103"))
    e = device(5)
    owners, skipped = _owners([a, b, c, d, e], ())
    assert owners == {e.uuid: e.ip}
    assert sorted(s.device.uuid for s in skipped) == sorted(x.uuid for x in (a, b, c, d)) and all(s.refused for s in skipped)


# Planning for ufw and nftables

def test_a_device_scope_that_names_a_refused_device_plans_nothing_for_it():
    plan = plan_setup([TV, SPEAKER], PR, [], scope=[TV.uuid], refused={TV.uuid: "it is refused"})
    assert plan.steps == () and [s.reason for s in plan.skipped] == ["it is refused"]


def test_each_change_says_why():
    moved = plan_setup([TV], PR, [udp(TV, at="192.168.77.200"), tcp(TV, VLC, at="192.168.77.200")], chosen=[VLC])
    assert reasons(moved) == [
        ("delete", "192.168.77.200", "udp", "Living Room TV moved from 192.168.77.200 to 192.168.77.101"),
        ("delete", "192.168.77.200", "tcp", "Living Room TV moved from 192.168.77.200 to 192.168.77.101"),
        ("add", "192.168.77.101", "udp", "replaces the old rule"),
        ("add", "192.168.77.101", "tcp", "replaces the old rule (vlc)")]
    fresh = plan_setup([TV], PR, [], chosen=[VLC])
    assert [r[3] for r in reasons(fresh)] == ["new: Living Room TV", "new: Living Room TV (vlc)"]
    ranged = plan_setup([TV], PR, [udp(TV, ports=OLD)])
    assert reasons(ranged)[0][3] == f"port range changed from {OLD} to {PR}"
    dropped = plan_setup([TV], PR, [udp(TV), tcp(TV, VLC)])
    assert reasons(dropped) == [("delete", "192.168.77.101", "tcp",
                                 "vlc is not chosen: castwall gives Living Room TV no TCP 8010")]


def test_a_changed_range_is_carried_to_unseen_devices_dial_rules_only_and_only_without_a_scope():
    firewall = [udp(SPEAKER, ports=OLD), tcp(SPEAKER, VLC)]
    carried = plan_setup([TV], PR, firewall, chosen=[VLC])
    assert [(s.action, s.rule) for s in carried.steps if s.rule.owner == SPEAKER.uuid] == [
        (Action.DELETE, udp(SPEAKER, ports=OLD)), (Action.ADD, udp(SPEAKER))]
    scoped = plan_setup([TV], PR, firewall, chosen=[VLC], scope=[TV.uuid])
    assert [s for s in scoped.steps if s.rule.owner == SPEAKER.uuid] == []


def test_a_users_rule_that_covers_one_of_a_devices_rules_leaves_the_others_to_be_added():
    mine = Rule(TV.ip, PortRange(1, 65535), None)
    plan = plan_setup([TV, SPEAKER], PR, [mine], chosen=[VLC])
    assert [(str(s.rule.ip), s.rule.proto) for s in plan.steps] == [
        ("192.168.77.101", "tcp"), ("192.168.77.102", "udp"), ("192.168.77.102", "tcp")]
    assert "already allowed by a ufw rule castwall did not write" in plan.skipped[0].reason


def test_skipped_devices_are_listed_by_name():
    zed, alpha = device(1, name="Zed"), device(2, name="alpha")
    plan = plan_setup([zed, alpha], PR, [], refused={zed.uuid: "no", alpha.uuid: "no"})
    assert [s.device.name for s in plan.skipped] == ["alpha", "Zed"]


def test_untouched_rules_are_those_of_devices_not_seen_and_nothing_kept_or_changed():
    plan = plan_setup([TV], PR, [udp(TV), udp(SPEAKER)])
    assert plan.kept == (udp(TV),) and plan.untouched == (udp(SPEAKER),)


# The state saved after a run

def test_the_next_state_keeps_the_firewall_and_the_follow_list_it_is_not_given():
    chain = FirewallChoice("firewalld")
    follow = (Tracking(TV.uuid, TV.mac),)
    previous = State(PR, (TV,), (udp(TV),), "t", (), follow, chain)
    kept = next_state(previous, [TV], [udp(TV)], PR, "t2")
    assert kept.firewall == chain and kept.follow == follow
    told = next_state(previous, [TV], [udp(TV)], PR, "t2", follow=(), firewall=FirewallChoice("ufw"))
    assert told.firewall == FirewallChoice("ufw") and told.follow == ()
    assert next_state(None, [TV], [], PR, "t").firewall is None


def test_the_next_state_keeps_a_device_seen_now_without_rules():
    assert [d.uuid for d in next_state(None, [TV], [], PR, "t").devices] == [TV.uuid]


# remove

def test_remove_takes_a_uuid_in_any_form_even_of_a_device_it_no_longer_knows():
    owned = [udp(TV), udp(SPEAKER)]
    steps, unmatched = select_rules_to_remove(owned, [], [TV.uuid.replace("-", "").upper()])
    assert [s.rule for s in steps] == [udp(TV)] and unmatched == []
    assert steps[0].reason == f"remove: {TV.uuid}"


def test_remove_by_app_reports_only_apps_neither_chosen_nor_ruled():
    owned = [udp(TV), tcp(TV, VLC)]
    steps, unmatched = select_rules_to_remove(owned, [TV], [], ["vlc", "catt", "castnow"], chosen=[CATT])
    assert [s.rule for s in steps] == [tcp(TV, VLC)] and unmatched == ["castnow"]
    assert steps[0].reason == "remove: Living Room TV (vlc)"
    everything, _ = select_rules_to_remove(owned, [TV], [])
    assert [s.reason for s in everything] == ["remove: Living Room TV", "remove: Living Room TV (vlc)"]


def test_remove_by_device_and_app_takes_both():
    owned = [udp(TV), tcp(TV, VLC), udp(SPEAKER), tcp(SPEAKER, VLC)]
    steps, unmatched = select_rules_to_remove(owned, [TV, SPEAKER], [TV.name], ["vlc"])
    assert {s.rule for s in steps} == {udp(TV), tcp(TV, VLC), tcp(SPEAKER, VLC)} and unmatched == []


# firewalld: one list of ports for every address

def test_uniform_adds_the_missing_ports_dial_first_then_by_port_and_keeps_what_a_delete_would_remove():
    plan = plan_setup([TV, SPEAKER], PR, [udp(TV), tcp(TV, VLC), tcp(TV, CATT), udp(SPEAKER)], chosen=[VLC, CATT],
                      scope=[SPEAKER.uuid])
    assert [(str(s.rule.ip), s.rule.proto, str(s.rule.ports)) for s in plan.steps] == [
        ("192.168.77.102", "tcp", "8010:8010"), ("192.168.77.102", "tcp", "45000:47000")]
    # Chosen no more: the apps' rules go for the speaker; the TV keeps them, so firewalld's list of ports does too.
    dropped = plan_setup([TV, SPEAKER], PR, [udp(TV), tcp(TV, VLC), udp(SPEAKER), tcp(SPEAKER, VLC)], scope=[SPEAKER.uuid])
    assert [s.rule for s in dropped.steps] == [tcp(SPEAKER, VLC)]
    same = uniform(dropped, "firewalld")
    assert same.steps == () and tcp(SPEAKER, VLC) in same.kept
    # A device whose rules are missing gets every port the others have: DIAL's first, then by port.
    bare = uniform(plan_setup([TV, SPEAKER], PR, [udp(TV), tcp(TV, CATT), tcp(TV, VLC), tcp(SPEAKER, CATT)],
                              chosen=[VLC, CATT], scope=[TV.uuid]), "firewalld")
    assert [(str(s.rule.ip), s.rule.proto, str(s.rule.ports), s.rule.app) for s in bare.steps] == [
        ("192.168.77.102", "udp", "32768:60999", None), ("192.168.77.102", "tcp", "8010:8010", "vlc")]
    assert all(s.reason == "firewalld opens its ports to every address castwall lets in" for s in bare.steps)


def test_uniform_keeps_the_other_deletes_of_a_plan():
    a, b, gone = TV, SPEAKER, device(3)
    plan = plan_setup([a, b, gone], PR, [udp(a), tcp(a, VLC), udp(b), tcp(b, VLC), udp(gone, at="192.168.77.200")],
                      scope=[b.uuid, gone.uuid])
    assert [s.action for s in plan.steps] == [Action.DELETE, Action.DELETE, Action.ADD]
    kept = uniform(plan, "firewalld")
    assert [(s.action, s.rule) for s in kept.steps] == [(Action.DELETE, udp(gone, at="192.168.77.200")),
                                                        (Action.ADD, udp(gone)),
                                                        (Action.ADD, tcp(gone, VLC))]
    assert tcp(b, VLC) in kept.kept
    assert [r for r in kept.kept] == sorted(kept.kept, key=Rule.sort_key)


def test_a_group_brings_its_host_into_scope_only_where_the_host_owns_the_address():
    host, group = TV, replace(device(9, kind=Kind.GROUP), ip=TV.ip, port=32161)
    plan = plan_setup([host, group], PR, [], scope=[group.uuid])
    assert [s.rule for s in plan.steps] == [udp(host)]
