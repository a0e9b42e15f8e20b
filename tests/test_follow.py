"""Follow mode's pure planner: when rules move, go and come back, and when nothing moves."""

import ipaddress
import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from castwall.follow import MAX_MOVES, approvals, lan_problem, plan_follow, tracked
from castwall.model import Action, AppChoice, Kind, Lan, PortRange, Rule, State, Tracking
from castwall.planner import device_rules
from castwall.state import dump_state, load_state
from tests.fakes import device

RANGE = PortRange(32768, 60999)
NOW = datetime(2026, 12, 2, 1, 0, 0)
HOME = Lan(ipaddress.ip_network("192.168.77.0/24"), ipaddress.ip_address("192.168.77.1"), "02:ca:57:fe:00:01")
CAFE = Lan(HOME.subnet, HOME.gateway, "02:ca:57:fe:00:02")
STRANGER = "02:ca:57:ee:00:01"
TV, SPEAKER = device(1, name="Living Room TV"), device(2, name="Kitchen speaker", kind=Kind.AUDIO)


def ip(text):
    return ipaddress.ip_address(text)


def approved(*devices, apps=(), **tracking):
    rules = [r for d in devices for r in device_rules(d.ip, d.uuid, RANGE, apps)]
    return State(RANGE, tuple(devices), tuple(sorted(rules, key=Rule.sort_key)), "2026-12-01T00:00:00Z", tuple(apps),
                 tuple(Tracking(d.uuid, d.mac, HOME, **tracking) for d in devices))


def arp(*devices, **extra):
    """What raw ARP answers: each device's MAC at its address, plus extra (address -> MACs)."""
    out = {d.ip: {d.mac} for d in devices}
    for address, macs in extra.items():
        out[ip(address.replace("_", "."))] = set(macs)
    return out


def plan(state, seen, answers, lans=(HOME,), refused=None, firewall=None, now=NOW, **kw):
    rules = list(state.rules) if firewall is None else firewall
    return plan_follow(state, seen, refused or {}, rules, answers, list(lans), RANGE, now, **kw)


def steps(p):
    return [(s.action, str(s.rule.ip), s.rule.proto) for s in p.steps]


def test_a_device_seen_at_a_new_address_with_its_mac_alone_takes_its_rules_there():
    state = approved(TV, SPEAKER)
    moved = replace(TV, ip=ip("192.168.77.150"))
    p = plan(state, [moved, SPEAKER], arp(moved, SPEAKER, **{"192_168_77_101": []}))
    assert steps(p) == [(Action.DELETE, "192.168.77.101", "udp"), (Action.ADD, "192.168.77.150", "udp")]
    assert [e.kind for e in p.events] == ["moved"]
    assert "moved: Living Room TV from 192.168.77.101 to 192.168.77.150" in p.events[0].text
    assert p.state.device(TV.uuid).ip == moved.ip and p.state.tracking(TV.uuid).moves == ("2026-12-02T01:00:00Z",)
    assert {r.ip for r in p.state.rules} == {moved.ip, SPEAKER.ip} and p.expected == frozenset(p.state.rules)


def test_the_move_takes_the_apps_rules_along():
    vlc = AppChoice("vlc", PortRange(8010, 8010))
    state = approved(TV, apps=(vlc,))
    moved = replace(TV, ip=ip("192.168.77.150"))
    p = plan(state, [moved], arp(moved))
    assert sorted(steps(p)) == sorted([(Action.DELETE, "192.168.77.101", "udp"), (Action.DELETE, "192.168.77.101", "tcp"),
                                       (Action.ADD, "192.168.77.150", "udp"), (Action.ADD, "192.168.77.150", "tcp")])


@pytest.mark.parametrize("answers, why", [
    ({"192_168_77_150": [STRANGER]}, f"ARP for 192.168.77.150 is answered by {STRANGER}, not by its MAC"),
    ({"192_168_77_150": [STRANGER, TV.mac]}, "as well as by its own"),
    ({}, "nobody answers ARP for 192.168.77.150"),
])
def test_an_announcement_from_another_address_moves_nothing_unless_only_the_approved_mac_answers_there(answers, why):
    state = approved(TV)
    elsewhere = replace(TV, ip=ip("192.168.77.150"))
    p = plan(state, [elsewhere], {**arp(TV), **arp(**answers)})
    assert p.steps == () and [e.kind for e in p.events] == ["refused"]
    assert "not moved: Living Room TV is announced from 192.168.77.150, but" in p.events[0].text and why in p.events[0].text
    assert p.state.device(TV.uuid).ip == TV.ip and p.state.tracking(TV.uuid).away is None


def test_a_refused_announcement_moves_nothing_and_says_why():
    state = approved(TV)
    elsewhere = replace(TV, ip=ip("192.168.77.150"), also_at=(TV.ip,))
    p = plan(state, [elsewhere], arp(TV, **{"192_168_77_150": [TV.mac]}), refused={TV.uuid: "announced from 2 addresses: contested"})
    assert p.steps == () and "contested" in p.events[0].text


def test_another_mac_at_the_rules_address_withdraws_them_and_the_device_is_kept_as_away_until_it_answers_again():
    state = approved(TV, SPEAKER)
    p = plan(state, [SPEAKER], arp(SPEAKER, **{"192_168_77_101": [STRANGER]}))
    assert steps(p) == [(Action.DELETE, "192.168.77.101", "udp")]
    assert [e.kind for e in p.events] == ["withdrawn"] and STRANGER in p.events[0].text
    t = p.state.tracking(TV.uuid)
    assert t.away and STRANGER in t.away and p.state.device(TV.uuid) is not None
    assert all(r.owner != TV.uuid for r in p.state.rules)
    # Asleep: nobody answers, nothing comes back.
    quiet = plan(p.state, [SPEAKER], arp(SPEAKER))
    assert quiet.steps == () and quiet.events == ()
    # Back: only its MAC answers at its address.
    back = plan(p.state, [TV, SPEAKER], arp(TV, SPEAKER))
    assert steps(back) == [(Action.ADD, "192.168.77.101", "udp")] and [e.kind for e in back.events] == ["restored"]
    assert back.state.tracking(TV.uuid).away is None


def test_another_network_withdraws_every_rule_at_once_and_the_home_network_brings_them_back():
    state = approved(TV, SPEAKER)
    cafe = plan(state, [], arp(TV, SPEAKER), lans=[CAFE])  # even where the devices' MACs would answer
    assert sorted(steps(cafe)) == [(Action.DELETE, "192.168.77.101", "udp"), (Action.DELETE, "192.168.77.102", "udp")]
    assert all("another network" in e.text and "02:ca:57:fe:00:02" in e.text for e in cafe.events)
    assert cafe.state.rules == ()
    again = plan(cafe.state, [], {}, lans=[CAFE])
    assert again.steps == () and again.events == ()
    home = plan(cafe.state, [TV, SPEAKER], arp(TV, SPEAKER))
    assert sorted(steps(home)) == [(Action.ADD, "192.168.77.101", "udp"), (Action.ADD, "192.168.77.102", "udp")]


@pytest.mark.parametrize("lans, words", [
    ([], "no address on 192.168.77.0/24"),
    ([Lan(HOME.subnet)], "another network"),
    ([Lan(HOME.subnet, ip("192.168.77.254"), HOME.gateway_mac)], "another network"),
    ([Lan(HOME.subnet, HOME.gateway, None)], "another network"),
])
def test_a_network_other_than_the_approved_one_is_never_taken_for_it(lans, words):
    t = Tracking(TV.uuid, TV.mac, HOME)
    assert words in lan_problem(t, lans)


def test_no_network_check_for_a_device_approved_before_follow_mode_recorded_networks():
    assert lan_problem(Tracking(TV.uuid, TV.mac, None), [CAFE]) is None


def test_a_device_that_moves_too_often_is_no_longer_followed_and_its_rules_go():
    recent = tuple((NOW - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ") for m in (50, 30, 10))
    state = approved(TV, moves=recent)
    assert len(recent) == MAX_MOVES
    moved = replace(TV, ip=ip("192.168.77.150"))
    p = plan(state, [moved], arp(moved))
    assert steps(p) == [(Action.DELETE, "192.168.77.101", "udp")]
    assert [e.kind for e in p.events] == ["stopped", "withdrawn"]
    assert "moved 4 times within an hour" in p.events[0].text and "sudo castwall setup" in p.events[0].text
    t = p.state.tracking(TV.uuid)
    assert t.stopped and t.away
    assert plan(p.state, [TV], arp(TV)).steps == ()  # not followed, not even back home, until setup
    # Moves older than an hour do not count.
    old = tuple((NOW - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ") for m in (200, 100, 61))
    assert [e.kind for e in plan(approved(TV, moves=old), [moved], arp(moved)).events] == ["moved"]


def test_a_new_device_is_reported_and_gets_nothing():
    state = approved(TV)
    stranger = device(5, name="Neighbour's TV")
    p = plan(state, [TV, stranger], arp(TV, stranger))
    assert p.steps == () and [e.kind for e in p.events] == ["new-device"]
    assert "Neighbour's TV at 192.168.77.105 is not approved: run 'sudo castwall setup' to allow it" in p.events[0].text


def test_no_recorded_mac_means_no_move_and_the_old_address_goes_once_the_device_is_announced_elsewhere():
    state = approved(replace(TV, mac=None))
    state = replace(state, follow=(Tracking(TV.uuid, None, HOME),))
    moved = replace(TV, ip=ip("192.168.77.150"))
    p = plan(state, [moved], {moved.ip: {TV.mac}, TV.ip: {STRANGER}})
    assert steps(p) == [(Action.DELETE, "192.168.77.101", "udp")]
    assert [e.kind for e in p.events] == ["refused", "withdrawn"] and "no MAC was recorded" in p.events[0].text
    assert p.state.tracking(TV.uuid).away and p.state.device(TV.uuid).ip == TV.ip
    # Not announced elsewhere: its rules stay, as nobody can check them.
    assert plan(state, [TV], {TV.ip: {STRANGER}}).steps == ()


def test_two_approved_devices_with_one_mac_are_never_moved_or_restored_by_arp():
    twin = replace(SPEAKER, mac=TV.mac)  # behind a repeater that rewrites MACs
    state = approved(TV, twin)
    moved = replace(TV, ip=ip("192.168.77.150"))
    p = plan(state, [moved, twin], {moved.ip: {TV.mac}, twin.ip: {TV.mac}})
    assert p.steps == () and "also Kitchen speaker's" in p.events[0].text
    away = plan(state, [twin], {TV.ip: {STRANGER}, twin.ip: {TV.mac}})
    assert steps(away) == [(Action.DELETE, "192.168.77.101", "udp")]  # another MAC still withdraws
    assert plan(away.state, [twin], {TV.ip: {TV.mac}, twin.ip: {TV.mac}}).steps == ()  # but nothing comes back


def test_every_address_that_holds_a_devices_rules_is_checked():
    vlc = AppChoice("vlc", PortRange(8010, 8010))
    state = approved(TV, apps=(vlc,))
    udp, tcp = sorted(state.rules, key=lambda r: r.proto != "udp")
    split = [udp, replace(tcp, ip=ip("192.168.77.150"))]  # an interrupted pass left the app rule elsewhere
    p = plan(state, [], {ip("192.168.77.150"): {STRANGER}}, firewall=split)
    assert steps(p) == [(Action.DELETE, "192.168.77.150", "tcp")] and STRANGER in p.events[0].text
    healed = plan(state, [TV], arp(TV), firewall=split)
    assert sorted(steps(healed)) == [(Action.ADD, "192.168.77.101", "tcp"), (Action.DELETE, "192.168.77.150", "tcp")]
    assert [e.kind for e in healed.events] == ["restored"] and "two addresses" in healed.events[0].text


def test_a_missing_rule_is_put_back_with_a_line_and_the_state_follows_the_rules():
    vlc = AppChoice("vlc", PortRange(8010, 8010))
    state = approved(TV, apps=(vlc,))
    udp = next(r for r in state.rules if r.proto == "udp")
    p = plan(state, [TV], arp(TV), firewall=[udp])
    assert steps(p) == [(Action.ADD, "192.168.77.101", "tcp")]
    assert [e.kind for e in p.events] == ["restored"] and "missing from ufw" in p.events[0].text
    moved = replace(TV, ip=ip("192.168.77.150"))
    there = [replace(r, ip=moved.ip) for r in state.rules][:1]  # killed after the first add, before it saved
    finished = plan(state, [moved], arp(moved), firewall=there)
    assert finished.state.device(TV.uuid).ip == moved.ip and "interrupted pass had begun to move it" in finished.events[0].text


def test_a_network_check_passes_when_any_interface_on_the_subnet_has_the_approved_gateway():
    assert lan_problem(Tracking(TV.uuid, TV.mac, HOME), [Lan(HOME.subnet), HOME]) is None


def test_a_move_onto_the_address_of_another_approved_device_withdraws_that_device_first():
    state = approved(TV, SPEAKER)
    onto = replace(TV, ip=SPEAKER.ip)  # the speaker is gone; the TV got its lease
    p = plan(state, [onto], {SPEAKER.ip: {TV.mac}, TV.ip: set()})
    actions = steps(p)
    assert actions.index((Action.DELETE, str(SPEAKER.ip), "udp")) < actions.index((Action.ADD, str(SPEAKER.ip), "udp"))
    assert {r.owner for r in p.expected} == {TV.uuid} and p.state.tracking(SPEAKER.uuid).away


def test_a_move_onto_an_address_that_keeps_another_devices_rules_withdraws_the_old_rules_and_says_so():
    no_mac = replace(SPEAKER, mac=None)
    state = replace(approved(TV, no_mac), follow=(Tracking(TV.uuid, TV.mac, HOME), Tracking(SPEAKER.uuid, None, HOME)))
    onto = replace(TV, ip=SPEAKER.ip)
    p = plan(state, [onto], {SPEAKER.ip: {TV.mac}})
    assert steps(p) == [(Action.DELETE, "192.168.77.101", "udp")]  # the TV's old rule goes; nothing is added
    assert [e.kind for e in p.events] == ["withdrawn"] and "holds the rules of Kitchen speaker" in p.events[0].text
    assert p.state.device(TV.uuid).ip == TV.ip and p.state.tracking(TV.uuid).away
    assert {r.owner for r in p.expected} == {SPEAKER.uuid}


def test_a_users_own_rule_that_covers_the_new_address_is_left_alone():
    state = approved(TV)
    moved = replace(TV, ip=ip("192.168.77.150"))
    mine = Rule(moved.ip, PortRange(1, 65535), None)
    p = plan(state, [moved], arp(moved), firewall=list(state.rules) + [mine])
    assert steps(p) == [(Action.DELETE, "192.168.77.101", "udp")]


def test_rules_written_before_follow_mode_are_followed_with_the_mac_setup_saved():
    state = replace(approved(TV), follow=())
    assert tracked(state, ()) == {TV.uuid: Tracking(TV.uuid, TV.mac)}
    moved = replace(TV, ip=ip("192.168.77.150"))
    assert [e.kind for e in plan(state, [moved], arp(moved)).events] == ["moved"]


def test_an_interrupted_move_is_finished_by_the_next_pass():
    state = approved(TV)
    moved = replace(TV, ip=ip("192.168.77.150"))
    half = [r for r in state.rules if r.owner != TV.uuid]  # killed after the delete, before the add
    p = plan(state, [moved], arp(moved), firewall=half)
    assert steps(p) == [(Action.ADD, "192.168.77.150", "udp")]


def test_setup_approves_afresh_what_it_sees_and_keeps_the_others():
    stopped = approved(TV, SPEAKER, moves=("2026-12-02T00:59:00Z",), stopped="moves too often", away="x")
    owned = [r for r in stopped.rules]
    out = approvals(stopped, [TV], owned, [HOME])
    fresh = next(t for t in out if t.uuid == TV.uuid)
    assert fresh == Tracking(TV.uuid, TV.mac, HOME)
    assert next(t for t in out if t.uuid == SPEAKER.uuid).stopped == "moves too often"
    assert approvals(stopped, [], [], [HOME]) == tuple(sorted(stopped.follow, key=lambda t: t.uuid))  # away ones stay
    assert approvals(None, [TV], [], [HOME]) == ()  # no rule, no approval
    missed = approvals(stopped, [replace(TV, mac=None)], owned, [HOME])  # ARP missed it this time
    assert next(t for t in missed if t.uuid == TV.uuid).mac == TV.mac


def test_the_state_file_keeps_what_follow_mode_knows():
    state = approved(TV, away="gone", moves=("2026-12-02T00:59:00Z",), stopped=None)
    again = load_state(dump_state(state))
    assert again.follow == state.follow and again.follow[0].lan == HOME
    doc = json.loads(dump_state(state))
    assert doc["version"] == 4 and doc["follow"][0]["lan"]["gateway_mac"] == HOME.gateway_mac
    v2 = {**doc, "version": 2}
    del v2["follow"]
    assert load_state(json.dumps(v2)).follow == ()
    for bad in ({"uuid": "nope", "mac": None}, {"uuid": TV.uuid, "mac": "zz"}, {"uuid": TV.uuid, "mac": None, "moves": "x"},
                {"uuid": TV.uuid, "mac": None, "lan": {"subnet": "nonsense"}}):
        from castwall.errors import BadData

        with pytest.raises(BadData):
            load_state(json.dumps({**doc, "follow": [bad]}))
