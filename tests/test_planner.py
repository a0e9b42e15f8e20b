import ipaddress

from castwall.model import Action, Device, Kind, PortRange, Rule, State
from dataclasses import replace

from castwall.findings import assess
from castwall.planner import Trust, next_state, plan_setup, refusal, screen, select_devices, select_rules_to_remove, uniform
from tests.fakes import device

PR = PortRange(32768, 60999)
ip = ipaddress.ip_address


def tagged(d, ports=PR, at=None):
    return Rule(ip(at) if at else d.ip, ports, d.uuid)


def adds(plan):
    return [s.rule for s in plan.steps if s.action is Action.ADD]


def deletes(plan):
    return [s.rule for s in plan.steps if s.action is Action.DELETE]


def test_new_devices_get_one_rule_per_address():
    a, b = device(1), device(2)
    plan = plan_setup([a, b], PR, [])
    assert adds(plan) == [tagged(a), tagged(b)] and deletes(plan) == []


def test_second_run_changes_nothing():
    a, b = device(1), device(2)
    plan = plan_setup([a, b], PR, [tagged(a), tagged(b)])
    assert plan.empty and set(plan.kept) == {tagged(a), tagged(b)}


def test_group_is_covered_by_the_rule_of_the_device_hosting_it():
    host = device(1)
    group = device(9, kind=Kind.GROUP, ip=str(host.ip), port=32161)
    plan = plan_setup([host, group], PR, [])
    assert adds(plan) == [tagged(host)]
    assert [s.device for s in plan.skipped] == [group]


def test_group_whose_host_is_not_seen_gets_its_own_rule():
    group = device(9, kind=Kind.GROUP, port=32161)
    assert adds(plan_setup([group], PR, [])) == [tagged(group)]


def test_moved_device_has_its_old_rule_replaced():
    a = device(1)
    old = tagged(a, at="192.168.77.200")
    plan = plan_setup([a], PR, [old])
    assert deletes(plan) == [old] and adds(plan) == [tagged(a)]
    assert plan.steps[0].action is Action.DELETE  # delete first: ufw keeps one rule per traffic
    assert "moved from 192.168.77.200" in plan.steps[0].reason


def test_changed_port_range_replaces_rules_even_of_devices_not_seen_now():
    a, gone = device(1), device(2)
    old = PortRange(32768, 61000)
    plan = plan_setup([a], PR, [tagged(a, old), tagged(gone, old)])
    assert set(deletes(plan)) == {tagged(a, old), tagged(gone, old)}
    assert set(adds(plan)) == {tagged(a), tagged(gone)}


def test_rule_of_a_device_not_seen_is_left_alone():
    a, gone = device(1), device(2)
    plan = plan_setup([a], PR, [tagged(gone)])
    assert adds(plan) == [tagged(a)] and deletes(plan) == []


def test_untagged_rules_are_never_touched_and_never_taken_over():
    a, b = device(1), device(2)
    users = Rule(a.ip, PR, None)  # the user's own rule for the same traffic
    unrelated = Rule(ip("192.168.77.60"), PR, None)
    plan = plan_setup([a, b], PR, [users, unrelated])
    assert adds(plan) == [tagged(b)]  # adding a's would make ufw re-tag the user's rule
    assert users not in deletes(plan) and unrelated not in deletes(plan)
    assert any(s.device == a and "did not write" in s.reason for s in plan.skipped)


def test_address_now_owned_by_another_device_moves_the_rule():
    a = device(1)
    b = device(2, ip=str(a.ip))
    gone_a = tagged(a)
    plan = plan_setup([b], PR, [gone_a])
    assert deletes(plan) == [gone_a] and adds(plan) == [tagged(b)]


def test_two_devices_on_one_address_get_no_rule():
    a = device(1)
    b = device(2, ip=str(a.ip))
    plan = plan_setup([a, b], PR, [])
    assert plan.steps == ()
    assert {s.device for s in plan.skipped} == {a, b} and all(s.refused for s in plan.skipped)
    # accepted by the user: one rule, for the address, owned by one of them
    plan = plan_setup([a, b], PR, [], accepted={a.ip})
    assert adds(plan) == [tagged(a)]


LAN_IF = [ipaddress.ip_interface("192.168.77.10/24"), ipaddress.ip_interface("10.20.0.5/30")]
OWN = {ip("192.168.77.10"), ip("10.20.0.5"), ip("127.0.0.1"), ip("172.17.0.1")}


def test_only_private_host_addresses_on_an_attached_subnet_are_allowed():
    refused = {
        "0.0.0.0": "not a host address",
        "255.255.255.255": "the broadcast address",
        "224.0.0.251": "multicast",
        "239.255.255.250": "multicast",
        "127.0.0.1": "loopback",
        "127.8.8.8": "loopback",
        "240.0.0.9": "reserved",
        "192.168.77.10": "own address",
        "172.17.0.1": "own address",  # another interface of this computer
        "192.168.77.0": "network address of 192.168.77.0/24",
        "192.168.77.255": "broadcast address of 192.168.77.0/24",
        "10.20.0.4": "network address of 10.20.0.4/30",
        "10.20.0.7": "broadcast address of 10.20.0.4/30",
        "10.9.9.9": "reached through a router",
        "8.8.8.8": "reached through a router",
        "fe80::1": "link-local IPv6",
        "::": "not a host address",
        "ff02::fb": "multicast",
    }
    for address, why in refused.items():
        got = refusal(ip(address), LAN_IF, OWN)
        assert got and why in got, (address, got)
    for address in ("192.168.77.1", "192.168.77.254", "10.20.0.6"):
        assert refusal(ip(address), LAN_IF, OWN) is None, address


def test_routed_and_public_addresses_need_their_own_option():
    assert refusal(ip("10.9.9.9"), LAN_IF, OWN, Trust(routed=True)) is None
    assert "public address (--allow-public" in refusal(ip("8.8.8.8"), LAN_IF, OWN, Trust(routed=True))
    assert refusal(ip("8.8.8.8"), LAN_IF, OWN, Trust(routed=True, public=True)) is None
    public_lan = [ipaddress.ip_interface("203.0.113.0/24"), ipaddress.ip_interface("81.2.69.0/24")]
    assert "public address" in refusal(ip("81.2.69.20"), public_lan, set())
    assert refusal(ip("81.2.69.20"), public_lan, set(), Trust(public=True)) is None
    # no option ever allows the special ones
    everything = Trust(routed=True, public=True, contested=frozenset({ip("224.0.0.1")}))
    for address in ("0.0.0.0", "224.0.0.1", "127.0.0.1", "192.168.77.10", "192.168.77.255"):
        assert refusal(ip(address), LAN_IF, OWN, everything), address


def test_screen_refuses_contested_devices_unless_one_address_is_accepted():
    real = device(1)
    clone = replace(real, ip=ip("192.168.77.66"), also_at=(real.ip,), contested="its id is announced from 2 addresses")
    good = device(2)
    devices, refused = screen([clone, good], LAN_IF, OWN)
    assert set(refused) == {real.uuid} and "--allow-contested" in refused[real.uuid]
    plan = plan_setup(devices, PR, [tagged(real)], refused=refused)
    assert adds(plan) == [tagged(good)] and deletes(plan) == []  # its approved rule stays as it was
    assert plan.untouched == (tagged(real),)
    [accepted, _], refused = screen([clone, good], LAN_IF, OWN, Trust(contested=frozenset({real.ip})))
    assert not refused and accepted.ip == real.ip and accepted.also_at == (ip("192.168.77.66"),)
    # accepting an address nobody claims changes nothing
    _, refused = screen([clone], LAN_IF, OWN, Trust(contested=frozenset({ip("192.168.77.99")})))
    assert real.uuid in refused


def test_refused_devices_get_no_rule_and_groups_at_their_address_neither():
    evil = device(1, ip="192.168.77.10")  # this computer's own address
    group = device(9, kind=Kind.GROUP, ip="192.168.77.10")
    devices, refused = screen([evil, group], LAN_IF, OWN)
    assert set(refused) == {evil.uuid, group.uuid}
    plan = plan_setup(devices, PR, [], refused=refused)
    assert plan.steps == () and all(s.refused for s in plan.skipped)


def test_device_scope_limits_changes_and_a_group_brings_its_host():
    host, other = device(1), device(2)
    group = device(9, kind=Kind.GROUP, ip=str(host.ip), name="Whole House")
    scope, unmatched = select_devices([host, other, group], ["whole house", "nobody"])
    assert unmatched == ["nobody"]
    plan = plan_setup([host, other, group], PR, [tagged(other, at="192.168.77.250")], scope=scope)
    assert adds(plan) == [tagged(host)] and deletes(plan) == []


def test_remove_selects_by_name_uuid_or_all():
    a, b = device(1, name="Den TV"), device(2)
    owned = [tagged(a), tagged(b)]
    steps, unmatched = select_rules_to_remove(owned, [a, b], ["den tv", b.uuid.replace("-", ""), "ghost"])
    assert [s.rule for s in steps] == owned and unmatched == ["ghost"]
    assert all(s.action is Action.DELETE for s in steps)
    steps, _ = select_rules_to_remove(owned, [], [])
    assert len(steps) == 2


def codes(findings):
    return sorted(f.code for f in findings if f.attention)


def test_assess_all_in_place():
    a = device(1)
    state = State(PR, (a,), (tagged(a),))
    assert codes(assess(state, PR, [a], [tagged(a)], "active")) == []


def test_assess_reports_each_kind_of_trouble():
    a, b, new = device(1), device(2), device(3)
    moved = device(1, ip="192.168.77.222")
    state = State(PR, (a, b), (tagged(a), tagged(b)))
    found = assess(state, PortRange(40000, 50000), [moved, new], [tagged(a), tagged(b)], "inactive")
    assert codes(found) == ["device-missing", "ip-moved", "new-device", "port-range-changed", "ufw-inactive"]


def test_assess_compares_live_rules_with_the_state_file():
    a, b = device(1), device(2)
    state = State(PR, (a, b), (tagged(a), tagged(b)))
    found = assess(state, PR, None, [tagged(a), tagged(device(3))], "active")
    assert codes(found) == ["rule-missing", "rule-unrecorded"]


def test_assess_without_state_or_ufw():
    assert codes(assess(None, PR, [], None, "missing")) == ["not-set-up", "ufw-missing"]
    notes = assess(State(PR, (), ()), PR, [], None, "unknown")
    assert codes(notes) == [] and [f.code for f in notes] == ["ufw-unread"]


def test_next_state_keeps_unseen_devices_only_while_they_own_a_rule():
    a, gone, forgotten = device(1), device(2), device(3)
    previous = State(PR, (gone, forgotten), (tagged(gone),))
    state = next_state(previous, [a], [tagged(a), tagged(gone)], PR, "t")
    assert {d.uuid for d in state.devices} == {a.uuid, gone.uuid}


def test_uniform_plans_for_firewalld_give_every_address_every_port_and_a_second_run_changes_nothing():
    a = Device("11111111-1111-1111-1111-111111111111", "A", "m", Kind.VIDEO, ipaddress.IPv4Address("192.168.1.20"), 8009)
    b = Device("22222222-2222-2222-2222-222222222222", "B", "m", Kind.VIDEO, ipaddress.IPv4Address("192.168.1.21"), 8009)
    old, new = PortRange(32768, 60999), PortRange(40000, 60999)
    rules = [Rule(a.ip, old, a.uuid), Rule(b.ip, old, b.uuid)]

    def planned(current):  # setup --device A after the port range changed
        return uniform(plan_setup([a, b], new, current, scope=[a.uuid]), "firewalld")

    plan = planned(rules)
    # B keeps its old range, so A keeps it too (the policy has one list of ports), and B gets the new one.
    assert [(s.action.value, str(s.rule.ip), str(s.rule.ports)) for s in plan.steps] == [
        ("add", "192.168.1.20", "40000:60999"), ("add", "192.168.1.21", "40000:60999")]
    assert {(str(r.ip), str(r.ports)) for r in plan.wanted_rules()} == {
        (ip, ports) for ip in ("192.168.1.20", "192.168.1.21") for ports in ("32768:60999", "40000:60999")}
    after = list(plan.wanted_rules())
    assert planned(after).steps == ()
