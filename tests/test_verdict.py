"""The check's verdict, case by case: what castwall measured of a device, and what it tells the user."""

import ipaddress
from dataclasses import replace

import pytest

from castwall.model import Kind, PortRange, Rule
from castwall.verdict import (DIAL_DROPPED, DIAL_NONE, DIAL_OK, DIAL_SILENT, DIAL_UNREAD, DIAL_UNSEEN, dial_evidence,
                              judge)
from tests.fakes import device, dial_reply

RANGE = PortRange(32768, 60999)
OLD_RANGE = PortRange(40000, 50000)
TV = replace(device(1), found_by=("mdns",))
HIDDEN = replace(device(2), found_by=("dial",))  # its mDNS answers do not arrive here
GROUP = replace(device(3, kind=Kind.GROUP), found_by=("mdns",))
LOST_GROUP = replace(device(4, kind=Kind.GROUP), found_by=("dial",))


def rule(d, ports=RANGE, proto="udp", app=None):
    return Rule(d.ip, ports, d.uuid, proto=proto, app=app)


def verdict(d, dial, *, rules=(), refused=None, cast=None, dial_problem=None):
    return judge(d, dial=dial, dial_problem=dial_problem, cast=cast, rules=rules, port_range=RANGE, refused=refused)


# dial_evidence: from the DIAL search's replies to one word per device

def test_a_delivered_reply_whose_description_names_the_device_arrives():
    assert dial_evidence(TV, [dial_reply(device(5)), dial_reply(TV)], wire=True) == (DIAL_OK, None)


def test_a_reply_seen_on_the_wire_but_never_delivered_was_dropped_here():
    assert dial_evidence(TV, [dial_reply(TV, delivered=False, on_wire=True)], wire=True) == (DIAL_DROPPED, None)


def test_no_reply_is_silence_to_root_and_unseen_to_a_user():
    others = [dial_reply(device(5))]
    assert dial_evidence(TV, others, wire=True) == (DIAL_SILENT, None)
    assert dial_evidence(TV, others, wire=False) == (DIAL_UNSEEN, None)


def test_a_group_has_no_dial_whatever_answers_from_its_address():
    assert dial_evidence(GROUP, [dial_reply(replace(TV, ip=GROUP.ip))], wire=True) == (DIAL_NONE, None)


def test_a_description_that_names_another_device_is_no_evidence_for_this_one():
    other = device(9).uuid
    state, why = dial_evidence(TV, [dial_reply(TV, uuid=other)], wire=True)
    assert state == DIAL_UNREAD and why == f"its description names another device ({other})"


def test_a_reply_whose_description_is_refused_says_why():
    broken = replace(dial_reply(TV), application_url=None)
    state, why = dial_evidence(TV, [broken], wire=True)
    assert state == DIAL_UNREAD and "Application-URL" in why


# judge: found how, by whom, and what to do

def test_found_both_ways_and_reached_is_fine():
    v = verdict(TV, DIAL_OK)
    assert v.ok and v.ways == ("mDNS", "DIAL") and v.mdns and v.note is None and v.fix is None


def test_found_by_mdns_only_is_fine_and_a_dropped_dial_is_a_note_with_the_fix():
    v = verdict(TV, DIAL_DROPPED)
    assert v.ok and v.ways == ("mDNS",)
    assert v.note.startswith("DIAL replies are dropped by this computer's firewall") and v.note.endswith(
        "run 'sudo castwall setup'")


def test_unseen_dial_is_a_note_that_sends_the_user_to_root():
    v = verdict(TV, DIAL_UNSEEN)
    assert v.ok and "'sudo castwall check' tells" in v.note


@pytest.mark.parametrize("dial", [DIAL_OK, DIAL_SILENT, DIAL_UNREAD])
def test_other_dial_states_of_a_device_found_by_mdns_need_no_note(dial):
    assert verdict(TV, dial).note is None


def test_a_cast_channel_that_does_not_open_is_the_problem():
    v = verdict(TV, DIAL_OK, cast="connection refused")
    assert not v.ok and v.problem == ("Chrome finds it by mDNS and DIAL but cannot open its Cast channel "
                                      f"(TCP {TV.ip}:8009: connection refused)")


def test_the_rule_that_counts_is_the_devices_own_dial_rule():
    others = [rule(device(7)), rule(TV, ports=PortRange(8010, 8010), proto="tcp", app="vlc")]
    # Another device's DIAL rule, or this device's app rule, is not its DIAL rule: setup is what lets it in.
    assert verdict(TV, DIAL_DROPPED, rules=others).note.endswith("run 'sudo castwall setup'")
    here = verdict(TV, DIAL_DROPPED, rules=others + [rule(TV)])
    assert "castwall's rule is in place, so another rule of this computer's firewall drops the replies first" in here.note


def test_a_rule_for_a_port_range_no_longer_in_force_is_not_in_place():
    v = verdict(TV, DIAL_DROPPED, rules=[rule(TV, ports=OLD_RANGE)])
    assert v.note.endswith(f"its rule is for ports {OLD_RANGE}, not the port range now in force: run 'sudo castwall setup'")


def test_a_refused_device_is_told_why_it_gets_no_rule_whatever_rules_there_are():
    for rules in ((), [rule(TV)], [rule(TV, ports=OLD_RANGE)]):
        v = verdict(TV, DIAL_DROPPED, rules=rules, refused="192.168.77.101 is contested")
        assert v.note.endswith("castwall gives it no rule: 192.168.77.101 is contested"), rules


# Not found at all: what stands in the way

def test_a_hidden_device_whose_dial_is_dropped_gets_setup_as_its_fix():
    v = verdict(HIDDEN, DIAL_DROPPED)
    assert not v.ok and v.ways == () and not v.mdns
    assert v.problem.startswith("Chrome cannot find it: its mDNS answers do not arrive by multicast here")
    assert v.problem.endswith("and this computer's firewall drops its DIAL replies")
    assert v.fix == "run 'sudo castwall setup'"
    assert verdict(HIDDEN, DIAL_DROPPED, rules=[rule(HIDDEN, ports=OLD_RANGE)]).fix.startswith("its rule is for ports")


def test_a_hidden_device_whose_description_fails_is_told_what_failed():
    v = verdict(HIDDEN, DIAL_UNREAD, dial_problem="its description names another device (x)")
    assert v.problem.endswith("and its DIAL reply arrives but its description names another device (x)")
    assert v.fix.startswith("restart the device")


def test_a_hidden_device_unseen_without_root_is_sent_to_root_and_to_setup_only_when_setup_would_help():
    plain = "run 'sudo castwall check' to see whether this computer's firewall drops its DIAL replies"
    assert verdict(HIDDEN, DIAL_UNSEEN).fix == plain + " ('sudo castwall setup' lets them in)"
    assert verdict(HIDDEN, DIAL_UNSEEN, rules=[rule(HIDDEN)]).fix == plain  # its rule is in place already
    assert verdict(HIDDEN, DIAL_UNSEEN, rules=[rule(HIDDEN, ports=OLD_RANGE)]).fix == plain + \
        " ('sudo castwall setup' lets them in)"
    assert verdict(HIDDEN, DIAL_UNSEEN, refused="it is contested").fix == plain  # setup would give it no rule
    assert verdict(HIDDEN, DIAL_UNSEEN).problem.endswith("and no DIAL reply from it reached this computer")


def test_a_hidden_silent_device_may_be_off():
    v = verdict(HIDDEN, DIAL_SILENT)
    assert v.problem.endswith("and it sends no DIAL reply") and v.fix == "check that the device is on and on this LAN"


def test_a_group_whose_mdns_is_lost_cannot_be_found_at_all():
    for dial in (DIAL_NONE, DIAL_DROPPED, DIAL_UNREAD):
        v = verdict(LOST_GROUP, dial)
        assert v.problem.startswith("Chrome cannot find this group") and "groups answer no DIAL search" in v.problem
        assert v.fix.startswith("make multicast reach this computer")


def test_a_device_found_by_unicast_mdns_only_is_not_found_by_chrome():
    v = verdict(replace(TV, found_by=("mdns-unicast",)), DIAL_SILENT)
    assert not v.ok and not v.mdns and v.ways == ()


def test_the_verdict_keeps_what_was_measured():
    v = verdict(TV, DIAL_UNSEEN, cast=None)
    assert (v.device, v.dial, v.cast) == (TV, DIAL_UNSEEN, None)
    assert TV.ip == ipaddress.ip_address("192.168.77.101")
