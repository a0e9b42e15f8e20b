"""Follow mode's proofs, one rule at a time: each test breaks if one condition of the planner is dropped or turned.

tests/test_follow.py tells the stories (a move, a roam, a stranger); these pin the edges that scripts/mutate found
no story covered.
"""

import ipaddress
from dataclasses import replace
from datetime import timedelta, timezone

from castwall.follow import approvals, lan_for, lan_problem, recent_moves, tracked
from castwall.model import Action, AppChoice, Kind, Lan, PortRange, Rule, Tracking
from tests.fakes import device
from tests.test_follow import HOME, NOW, RANGE, SPEAKER, STRANGER, TV, approved, arp, ip, plan, steps

VLC = AppChoice("vlc", PortRange(8010, 8010))
NEW = ip("192.168.77.150")


def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# When moves count, where an address is

def test_a_move_counts_for_exactly_an_hour_and_an_aware_clock_reads_the_same():
    t = Tracking(TV.uuid, TV.mac, moves=(stamp(NOW - timedelta(minutes=60)), stamp(NOW - timedelta(minutes=59))))
    assert recent_moves(t, NOW) == t.moves[1:]  # an hour old is no longer recent
    aware = NOW.replace(tzinfo=timezone.utc).astimezone(timezone(timedelta(hours=2)))
    assert recent_moves(t, aware) == t.moves[1:]


def test_an_address_is_on_a_network_only_of_its_own_version_and_within_it():
    v6 = Lan(ipaddress.ip_network("::/96"))  # holds the IPv6 addresses whose integers are IPv4's
    other = Lan(ipaddress.ip_network("10.0.0.0/8"))
    assert lan_for(TV.ip, [v6, other]) is None
    assert lan_for(TV.ip, [v6, other, HOME]) is HOME


def test_a_network_approved_without_the_gateways_mac_is_told_by_its_gateway_alone():
    t = Tracking(TV.uuid, TV.mac, Lan(HOME.subnet, HOME.gateway, None))
    assert lan_problem(t, [HOME]) is None
    assert "another network" in lan_problem(t, [Lan(HOME.subnet, ip("192.168.77.254"), HOME.gateway_mac)])


# What setup approves, and who is tracked

def test_setup_keeps_an_unseen_device_while_it_has_rules_or_is_away_or_stopped_and_only_then():
    has_rules, away, stopped, gone = (device(n) for n in (11, 12, 13, 14))
    previous = replace(approved(has_rules, away, stopped, gone), follow=(
        Tracking(has_rules.uuid, has_rules.mac, HOME), Tracking(away.uuid, away.mac, HOME, away="another MAC"),
        Tracking(stopped.uuid, stopped.mac, HOME, stopped="moves too often"), Tracking(gone.uuid, gone.mac, HOME)))
    owned = [r for r in previous.rules if r.owner == has_rules.uuid]
    kept = {t.uuid for t in approvals(previous, [], owned, [HOME])}
    assert kept == {has_rules.uuid, away.uuid, stopped.uuid}


def test_setup_records_the_mac_that_answers_now():
    state = approved(TV)
    renewed = replace(TV, mac="02:ca:57:00:00:99")  # a new network card, approved again
    [t] = approvals(state, [renewed], list(state.rules), [HOME])
    assert t.mac == "02:ca:57:00:00:99"


def test_the_owner_of_a_rule_castwall_wrote_is_tracked_even_with_nothing_saved():
    rule = Rule(TV.ip, RANGE, TV.uuid)
    assert tracked(None, [rule, Rule(SPEAKER.ip, RANGE, None)]) == {TV.uuid: Tracking(TV.uuid, None)}


# The order of a pass, and devices that do not stop it

def test_a_pass_reports_devices_by_name_whatever_their_uuids_and_same_names_are_told_apart():
    zed, alpha = replace(TV, name="Zed"), replace(SPEAKER, name="Alpha")
    state = approved(zed, alpha)
    p = plan(state, [], {zed.ip: {STRANGER}, alpha.ip: {STRANGER}})
    assert [e.device for e in p.events] == [alpha.uuid, zed.uuid]
    twins = approved(replace(TV, name="TV"), replace(SPEAKER, name="TV"))
    p = plan(twins, [], {TV.ip: {STRANGER}, SPEAKER.ip: {STRANGER}})
    assert [e.device for e in p.events] == [TV.uuid, SPEAKER.uuid]  # the same name: by UUID


def test_a_stopped_device_does_not_stop_the_pass_for_the_others():
    alpha, beta = replace(TV, name="Alpha"), replace(SPEAKER, name="Beta")
    state = approved(alpha, beta)
    state = replace(state, follow=(replace(state.follow[0], stopped="moves too often"), state.follow[1]))
    p = plan(state, [], {beta.ip: {STRANGER}})
    assert steps(p) == [(Action.DELETE, str(beta.ip), "udp")]


def test_a_device_that_stops_being_followed_does_not_stop_the_pass_for_the_others():
    alpha, beta = replace(TV, name="Alpha"), replace(SPEAKER, name="Beta")
    recent = tuple(stamp(NOW - timedelta(minutes=m)) for m in (50, 30, 10))
    state = approved(alpha, beta)
    state = replace(state, follow=(replace(state.follow[0], moves=recent), state.follow[1]))
    moved = replace(alpha, ip=NEW)
    p = plan(state, [moved], {moved.ip: {alpha.mac}, beta.ip: {STRANGER}})
    assert [e.kind for e in p.events] == ["stopped", "withdrawn", "withdrawn"]
    assert (Action.DELETE, str(beta.ip), "udp") in steps(p)


def test_a_device_that_stops_being_followed_stays_stopped_whoever_answers_at_its_old_address():
    recent = tuple(stamp(NOW - timedelta(minutes=m)) for m in (50, 30, 10))
    state = approved(TV, moves=recent)
    moved = replace(TV, ip=NEW)
    p = plan(state, [moved], {moved.ip: {TV.mac}, TV.ip: {STRANGER}})
    t = p.state.tracking(TV.uuid)
    assert t.stopped and t.away == "it moves too often"
    assert [e.kind for e in p.events] == ["stopped", "withdrawn"]


def test_a_refused_announcement_elsewhere_still_lets_the_pass_check_the_device_at_home():
    state = approved(TV)
    two = replace(TV, ip=NEW, also_at=(TV.ip,))  # contested: no move, but home is still checked
    restored = plan(state, [two], arp(TV), refused={TV.uuid: "contested"}, firewall=[])
    assert [e.kind for e in restored.events] == ["refused", "restored"]
    elsewhere = replace(TV, ip=NEW)  # ARP does not prove the new address; a stranger answers at home
    p = plan(state, [elsewhere], {NEW: {STRANGER}, TV.ip: {STRANGER}})
    assert [e.kind for e in p.events] == ["refused", "withdrawn"] and steps(p) == [(Action.DELETE, str(TV.ip), "udp")]


def test_a_device_without_a_mac_announced_elsewhere_does_not_stop_the_pass_for_the_others():
    alpha, beta = replace(TV, name="Alpha", mac=None), replace(SPEAKER, name="Beta")
    state = replace(approved(alpha, beta), follow=(Tracking(alpha.uuid, None, HOME), Tracking(beta.uuid, beta.mac, HOME)))
    p = plan(state, [replace(alpha, ip=NEW)], {beta.ip: {STRANGER}})
    assert (Action.DELETE, str(alpha.ip), "udp") in steps(p) and (Action.DELETE, str(beta.ip), "udp") in steps(p)


def test_a_device_without_rules_or_a_mac_announced_elsewhere_keeps_why_it_is_away():
    state = replace(approved(replace(TV, mac=None)), rules=(), follow=(Tracking(TV.uuid, None, HOME, away="asleep"),))
    p = plan(state, [replace(TV, ip=NEW)], {}, firewall=[])
    assert p.steps == () and [e.kind for e in p.events] == ["refused"]
    assert p.state.tracking(TV.uuid).away == "asleep"


def test_a_device_with_no_rules_and_no_saved_address_is_left_as_it_is():
    state = replace(approved(TV), devices=(), rules=(), follow=(Tracking(TV.uuid, TV.mac, HOME, away="asleep"),))
    p = plan(state, [], arp(TV), firewall=[])
    assert p.steps == () and p.events == () and p.state.tracking(TV.uuid).away == "asleep"


def test_a_device_missing_from_the_saved_devices_is_named_as_announced():
    state = replace(approved(TV), devices=(), follow=(Tracking(TV.uuid, TV.mac, HOME),))
    p = plan(state, [replace(TV, ip=NEW)], {NEW: {STRANGER}})
    assert p.events[0].text.startswith("not moved: Living Room TV is announced from 192.168.77.150")


# Which announcements may move a device

def test_a_refused_announcement_from_one_new_address_moves_nothing():
    state = approved(TV)
    elsewhere = replace(TV, ip=NEW)  # one address only; screening refused it (a public address, say)
    p = plan(state, [elsewhere], arp(TV, **{"192_168_77_150": [TV.mac]}), refused={TV.uuid: "it is refused"})
    assert p.steps == () and [e.kind for e in p.events] == ["refused"] and "it is refused" in p.events[0].text


def test_an_accepted_contested_device_with_other_addresses_moves_nothing():
    state = approved(TV)
    accepted = replace(TV, ip=NEW, also_at=(ip("192.168.77.151"),))  # --allow-contested took one of two
    p = plan(state, [accepted], arp(TV, **{"192_168_77_150": [TV.mac], "192_168_77_151": [TV.mac]}))
    assert p.steps == () and "from more than one address" in p.events[0].text


def test_a_refused_device_announced_at_its_own_address_is_not_called_moved():
    state = approved(TV)
    p = plan(state, [TV], arp(TV), refused={TV.uuid: "it is refused"}, firewall=[])
    assert [e.kind for e in p.events] == ["restored"]  # its proofs hold at home: nothing is opened anew elsewhere


# Restoring, and what the lines and steps say

def test_steps_say_moved_for_a_move_and_answers_for_a_restore():
    state = approved(TV)
    moved = replace(TV, ip=NEW)
    [add] = [s for s in plan(state, [moved], arp(moved)).steps if s.action is Action.ADD]
    assert add.reason == "Living Room TV moved to 192.168.77.150"
    [back] = plan(state, [TV], arp(TV), firewall=[]).steps
    assert back.reason == "Living Room TV answers at 192.168.77.101"


def test_a_stale_copy_elsewhere_alone_is_cleaned_up_with_a_line():
    state = approved(TV)
    copy = Rule(NEW, RANGE, TV.uuid)  # an interrupted pass added it there and never deleted the original
    p = plan(state, [TV], arp(TV), firewall=list(state.rules) + [copy])
    assert steps(p) == [(Action.DELETE, str(NEW), "udp")]
    assert [e.kind for e in p.events] == ["restored"] and "left its rules at two addresses" in p.events[0].text


def test_a_restore_for_a_device_not_in_the_saved_devices_says_its_rules_were_missing():
    state = replace(approved(TV, apps=(VLC,)), devices=(), follow=(Tracking(TV.uuid, TV.mac, HOME),))
    udp = next(r for r in state.rules if r.is_dial)
    p = plan(state, [], arp(TV), firewall=[udp])
    assert [e.kind for e in p.events] == ["restored"] and "missing from ufw" in p.events[0].text


# An address that holds another device's rules

def test_an_address_that_holds_one_of_another_devices_rules_still_clashes():
    no_mac = replace(SPEAKER, mac=None)
    state = replace(approved(TV, no_mac, apps=(VLC,)),
                    follow=(Tracking(TV.uuid, TV.mac, HOME), Tracking(SPEAKER.uuid, None, HOME)))
    speaker_udp = Rule(SPEAKER.ip, RANGE, SPEAKER.uuid)  # its app rule is missing
    onto = replace(TV, ip=SPEAKER.ip)
    firewall = [r for r in state.rules if r.owner == TV.uuid] + [speaker_udp]
    p = plan(state, [onto], {SPEAKER.ip: {TV.mac}}, firewall=firewall)
    assert all(s.action is Action.DELETE for s in p.steps)
    assert "holds the rules of Kitchen speaker" in p.events[0].text


def test_a_restore_onto_an_address_that_holds_another_devices_rules_is_refused_and_the_pass_goes_on():
    alpha, beta = replace(TV, name="Alpha"), replace(SPEAKER, name="Beta")
    state = replace(approved(alpha, beta), follow=(Tracking(alpha.uuid, alpha.mac, HOME), Tracking(beta.uuid, None, HOME)))
    squatter = Rule(alpha.ip, RANGE, beta.uuid)  # beta's rule at alpha's address; beta has no MAC to check it by
    vlc_state = replace(state, apps=(VLC,))
    p = plan(vlc_state, [], {alpha.ip: {alpha.mac}}, firewall=[squatter])
    assert [e.kind for e in p.events] == ["refused"]
    assert p.events[0].text == "not restored: Alpha at 192.168.77.101: 192.168.77.101 holds the rules of Beta"
    assert p.steps == () and p.state.tracking(alpha.uuid).away
    gamma = device(7, name="Gamma")  # a device after the clash in the pass is still restored
    three = replace(vlc_state, devices=vlc_state.devices + (gamma,),
                    follow=vlc_state.follow + (Tracking(gamma.uuid, gamma.mac, HOME),))
    p = plan(three, [], {alpha.ip: {alpha.mac}, gamma.ip: {gamma.mac}}, firewall=[squatter, Rule(gamma.ip, RANGE, gamma.uuid)])
    assert [(e.kind, e.device) for e in p.events] == [("refused", alpha.uuid), ("restored", gamma.uuid)]


def test_a_devices_own_rule_of_the_same_traffic_never_blocks_it():
    same_port = AppChoice("tcp-range", PortRange(8010, 8010))
    state = approved(TV, apps=(VLC,))
    state = replace(state, apps=(VLC, same_port))
    p = plan(state, [TV], arp(TV))
    assert not [e for e in p.events if e.kind == "refused"]


# Devices nobody approved

def test_a_group_at_an_address_a_device_is_followed_to_is_no_new_device_but_any_other_is():
    group_here = replace(device(20, kind=Kind.GROUP), ip=TV.ip)
    group_elsewhere = replace(device(21, kind=Kind.GROUP), ip=ip("192.168.77.160"))
    stranger_here = replace(device(22), ip=TV.ip)
    state = approved(TV)
    p = plan(state, [TV, group_here, group_elsewhere, stranger_here], arp(TV))
    assert [e.device for e in p.events if e.kind == "new-device"] == [group_elsewhere.uuid, stranger_here.uuid]
