"""nftables without a kernel: castwall's set and rule read from nft's JSON, the batches, the include file, and
which firewall castwall chooses."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from castwall.errors import UsageError
from castwall.model import FirewallChoice, NftChain, PortRange, Rule
from castwall.system import firewalls
from castwall.system import nft_ruleset as nr

UUID = "0a0b0c0d-0000-0000-0000-000000000001"
OTHER = "0a0b0c0d-0000-0000-0000-000000000002"
CHAIN = NftChain("inet", "filter", "input")
TV = ipaddress.ip_address("192.168.77.101")
UDP = Rule(TV, PortRange(32768, 60999), UUID)
VLC = Rule(TV, PortRange(8010, 8010), UUID, proto="tcp", app="vlc")


def chain(family="inet", table="filter", name="input", policy="drop", hook="input"):
    return {"chain": {"family": family, "table": table, "name": name, "handle": 1, "type": "filter", "hook": hook,
                      "prio": 0, "policy": policy}}


def rule(expr, family="inet", table="filter", name="input", handle=9, comment=None):
    body = {"family": family, "table": table, "chain": name, "handle": handle, "expr": expr}
    if comment:
        body["comment"] = comment
    return {"rule": body}


def castwall_set(*elems, type_=None):
    return {"set": {"family": "inet", "table": "filter", "name": "castwall", "type": type_ or nr.SET_TYPE,
                    "handle": 5, "flags": ["interval"], "elem": list(elems)}}


def elem(ip, proto, port, comment=None):
    val = {"concat": [ip, proto, port]}
    return {"elem": {"val": val, **({"comment": comment} if comment else {})}} if comment else val


ACCEPT_SSH = [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"accept": None}]


def test_a_ruleset_with_a_drop_policy_is_found_and_so_is_a_last_rule_that_drops_everything():
    items = [chain(), chain(table="other", policy="accept"), rule(ACCEPT_SSH, table="other"),
             rule([{"counter": {"packets": 0, "bytes": 0}}, {"drop": None}], table="other"),
             chain(table="quiet", policy="accept"), rule([{"match": {}}, {"drop": None}], table="quiet")]
    found = {str(c.chain): c.drops for c in nr.input_chains(items)}
    # A rule that drops only what it matches does not make a chain drop by default.
    assert found == {"inet filter input": True, "inet other input": True, "inet quiet input": False}


def test_tables_of_firewalld_and_iptables_nft_are_someone_elses():
    items = [chain(table="firewalld", name="filter_INPUT"), chain(family="ip", table="filter", name="INPUT"),
             chain(family="ip", table="filter", name="ufw-user-input", hook=None), chain(family="ip6", table="f")]
    chains = nr.input_chains(items)
    assert {(str(c.chain), c.managed_by) for c in chains} == {("inet firewalld filter_INPUT", "firewalld"),
                                                             ("ip filter INPUT", "iptables-nft")}
    land = firewalls.Landscape(False, False, tuple(chains))
    assert land.dropping() == []


def test_castwall_elements_are_its_rules_and_an_untagged_element_is_the_admins():
    items = [chain(), castwall_set(elem("192.168.77.101", "udp", {"range": [32768, 60999]}, f"castwall:{UUID}"),
                                   elem("192.168.77.101", "tcp", 8010, f"castwall:{UUID}/vlc"),
                                   elem("192.168.77.50", "tcp", 631)),
             rule(nr.RULE_EXPR, handle=7, comment="castwall"), rule(ACCEPT_SSH, handle=8)]
    found = nr.find(items, CHAIN)
    assert set(found.rules) == {UDP, VLC, Rule(ipaddress.ip_address("192.168.77.50"), PortRange(631, 631), None, proto="tcp")}
    assert found.rule_handles == (7,) and found.set_ok and not found.odd


@pytest.mark.parametrize("bad", [
    elem("192.168.77.101", "udp", 5000, f"castwall:{UUID}/vlc"),  # a UDP element naming an app
    elem("192.168.77.101", "tcp", 8010, f"castwall:{UUID}/nosuchapp"),
    elem("not-an-ip", "udp", 5000, f"castwall:{UUID}"),
    elem("192.168.77.101", "icmp", 5000, f"castwall:{UUID}"),
    elem("192.168.77.101", "udp", True, f"castwall:{UUID}"),
    {"elem": {"val": "192.168.77.101", "comment": f"castwall:{UUID}"}},
])
def test_hostile_or_odd_elements_are_reported_never_taken_for_castwalls(bad):
    found = nr.find([chain(), castwall_set(bad)], CHAIN)
    assert found.rules == () and len(found.odd) == 1


def test_a_set_named_castwall_of_another_type_is_left_alone():
    found = nr.find([chain(), castwall_set(type_="ipv4_addr")], CHAIN)
    assert found.set_present and not found.set_ok and found.rules == () and "not castwall's" in found.odd[0]


def test_a_rule_with_castwalls_comment_but_another_match_is_odd():
    found = nr.find([chain(), rule(ACCEPT_SSH, comment="castwall")], CHAIN)
    assert found.rule_handles == () and "another match" in found.odd[0]


def test_the_first_batch_makes_the_set_the_elements_and_the_rule_and_the_last_removes_them():
    empty = nr.find([chain()], CHAIN)
    first = nr.batch(CHAIN, empty, [UDP, VLC], [], keep=True)
    assert [next(iter(c)) for c in first] == ["add", "add", "insert"]
    assert first[1]["add"]["element"]["elem"][0] == {
        "elem": {"val": {"concat": ["192.168.77.101", "udp", {"range": [32768, 60999]}]}, "comment": f"castwall:{UUID}"}}
    assert first[1]["add"]["element"]["elem"][1]["elem"]["val"]["concat"][2] == 8010
    full = nr.find([chain(), castwall_set(), rule(nr.RULE_EXPR, handle=7, comment="castwall")], CHAIN)
    last = nr.batch(CHAIN, full, [], [UDP], keep=False)
    assert last == [{"delete": {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 7}}},
                    {"delete": {"set": {"family": "inet", "table": "filter", "name": "castwall"}}}]
    # Doubled rules (a reload without flush ruleset) come down to one.
    twice = nr.find([chain(), castwall_set(), rule(nr.RULE_EXPR, handle=7, comment="castwall"),
                     rule(nr.RULE_EXPR, handle=8, comment="castwall")], CHAIN)
    assert nr.batch(CHAIN, twice, [UDP], [], keep=True)[-1] == {
        "delete": {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 8}}}


def test_restore_puts_back_exactly_what_was_there():
    before = nr.find([chain(), castwall_set(elem("192.168.77.101", "udp", {"range": [32768, 60999]}, f"castwall:{UUID}")),
                      rule(nr.RULE_EXPR, handle=7, comment="castwall")], CHAIN)
    now = nr.find([chain(), castwall_set(elem("192.168.77.102", "udp", {"range": [32768, 60999]}, f"castwall:{OTHER}")),
                   rule(nr.RULE_EXPR, handle=7, comment="castwall")], CHAIN)
    undo = nr.restore(CHAIN, now, before)
    assert [next(iter(c)) for c in undo] == ["delete", "add"]
    assert undo[0]["delete"]["element"]["elem"][0]["elem"]["val"]["concat"][0] == "192.168.77.102"
    assert undo[1]["add"]["element"]["elem"][0]["elem"]["val"]["concat"][0] == "192.168.77.101"
    # Before castwall's first run there was nothing: the undo takes the set and the rule away again.
    assert nr.restore(CHAIN, now, nr.find([chain()], CHAIN)) == nr.batch(CHAIN, now, [], [], keep=False)


def test_the_include_file_holds_every_element_and_the_rule_and_nothing_without_rules():
    text = nr.include_text(CHAIN, [UDP, VLC], "/var/lib/castwall/nftables.nft")
    assert 'include "/var/lib/castwall/nftables*.nft"' in text  # a pattern: a missing file never breaks a reload
    assert "\tchain input {\n\t}\n}" in text  # declared empty: a vanished chain never breaks it either
    assert f'192.168.77.101 . udp . 32768-60999 comment "castwall:{UUID}"' in text
    assert f'192.168.77.101 . tcp . 8010 comment "castwall:{UUID}/vlc"' in text
    assert text.rstrip().endswith(f"insert rule inet filter input {nr.RULE_TEXT}")
    empty = nr.include_text(CHAIN, [], "/x")
    assert all(line.startswith("#") for line in empty.splitlines())


def test_a_set_that_holds_someone_elses_elements_is_never_deleted():
    found = nr.find([chain(), castwall_set(elem("10.0.0.0", "tcp", 22, "admin ssh"), elem("192.168.77.101", "udp",
                                                {"range": [32768, 60999]}, f"castwall:{UUID}")),
                     rule(nr.RULE_EXPR, handle=7, comment="castwall")], CHAIN)
    assert found.foreign == 0 and found.rules[0].owner is None  # an admin's element of castwall's shape: theirs
    odd = nr.find([chain(), castwall_set({"concat": ["10.0.0.0/8", "tcp", 22]}, elem("192.168.77.101", "udp",
                                          {"range": [32768, 60999]}, f"castwall:{UUID}"))], CHAIN)
    assert odd.foreign == 1
    assert nr.batch(CHAIN, odd, [], [UDP], keep=False) == [  # the set stays for the element that is not castwall's
        {"delete": {"element": {"family": "inet", "table": "filter", "name": "castwall", "elem": [nr.element(UDP)]}}}]


def test_commands_are_what_a_person_would_type():
    cmds = [nr.command_text(c) for c in nr.batch(CHAIN, nr.find([chain()], CHAIN), [UDP], [], keep=True)]
    assert cmds[0].startswith("nft add set inet filter castwall '{ type ipv4_addr . inet_proto . inet_service")
    assert cmds[1] == f"nft add element inet filter castwall '{{ 192.168.77.101 . udp . 32768-60999 comment \"castwall:{UUID}\" }}'"
    assert cmds[2] == f"nft insert rule inet filter input {nr.RULE_TEXT}"


@pytest.mark.parametrize("text", ["", "{", "[]", '{"nftables": 3}', '{"nftables": [1]}'])
def test_output_that_is_not_a_ruleset(text):
    if text == "":
        assert nr.objects(text) == []
    else:
        with pytest.raises(nr.BadRuleset):
            nr.objects(text)


def land(ufw=False, firewalld=False, chains=(), installed=True):
    items = [chain(table=t, policy=p) for t, p in chains]
    return firewalls.Landscape(ufw, firewalld, tuple(nr.input_chains(items)), installed)


def test_choosing_the_firewall():
    assert firewalls.choose(land(ufw=True), None, None, None) == FirewallChoice("ufw")
    assert firewalls.choose(land(firewalld=True), None, None, None) == FirewallChoice("firewalld")
    assert firewalls.choose(land(chains=[("filter", "drop")]), None, None, None) == FirewallChoice("nftables", CHAIN)
    # An installed ufw that is not enabled keeps castwall's rules, as it always did; without ufw nothing filters.
    assert firewalls.choose(land(chains=[("filter", "accept")]), None, None, None) == FirewallChoice("ufw")
    assert firewalls.choose(land(chains=[("filter", "accept")], installed=False), None, None, None) is None
    with pytest.raises(firewalls.TwoManagers, match="both filter"):
        firewalls.choose(land(ufw=True, firewalld=True), "ufw", None, None)
    with pytest.raises(UsageError, match="--nft-chain"):
        firewalls.choose(land(chains=[("a", "drop"), ("b", "drop")]), None, None, None)
    mine = NftChain("inet", "b", "input")
    assert firewalls.choose(land(chains=[("a", "drop"), ("b", "drop")]), None, mine, None) == FirewallChoice("nftables", mine)
    assert firewalls.choose(land(chains=[("a", "drop"), ("b", "drop")]), None, None,
                            FirewallChoice("nftables", mine)) == FirewallChoice("nftables", mine)
    with pytest.raises(UsageError, match="goes with --firewall nftables"):
        firewalls.choose(land(), "ufw", CHAIN, None)
    # Without root the ruleset is not read: the state file's choice stands.
    unread = firewalls.Landscape(False, False, None, True)
    assert firewalls.choose(unread, None, None, FirewallChoice("nftables", CHAIN)) == FirewallChoice("nftables", CHAIN)


@pytest.mark.parametrize("text,enabled", [("ENABLED=yes\n", True), ("# x\nENABLED=no\n", False), ("ENABLED='yes'\n", True),
                                          ("LOGLEVEL=low\n", False)])
def test_ufw_conf(tmp_path: Path, text, enabled):
    conf = tmp_path / "ufw.conf"
    conf.write_text(text)
    assert firewalls.ufw_enabled(conf) is enabled
    assert firewalls.ufw_enabled(tmp_path / "missing") is False


def test_a_json_round_trip_of_the_batch_is_what_nft_reads():
    cmds = nr.batch(CHAIN, nr.find([chain()], CHAIN), [UDP], [], keep=True)
    assert json.loads(json.dumps({"nftables": cmds}))["nftables"][2]["insert"]["rule"]["comment"] == "castwall"


def test_without_root_and_without_a_state_file_castwall_cannot_tell_and_says_so():
    unread = firewalls.Landscape(False, False, None, False, "reading the nftables ruleset needs root", needs_root=True)
    with pytest.raises(firewalls.CannotTell, match="run it with sudo"):
        firewalls.choose(unread, None, None, None)
    # As root with nft missing, nothing can filter through nftables: then "nothing filters" is the truth.
    assert firewalls.choose(firewalls.Landscape(False, False, None, False, "nft is not installed"), None, None, None) is None


def test_nft_chain_refuses_chains_of_firewalld_and_iptables_nft():
    items = [chain(table="firewalld", name="filter_INPUT"), chain(family="ip", table="filter", name="INPUT")]
    land = firewalls.Landscape(False, False, tuple(nr.input_chains(items)), False)
    for c in (NftChain("inet", "firewalld", "filter_INPUT"), NftChain("ip", "filter", "INPUT")):
        with pytest.raises(UsageError, match="not to the admin's own ruleset"):
            firewalls.choose(land, None, c, None)


def test_iptables_rules_that_drop_without_ufw_are_no_firewall_castwall_drives():
    items = [chain(family="ip", table="filter", name="INPUT"), chain(family="ip", table="filter", name="ufw-user-input", hook=None)]
    land = firewalls.Landscape(False, False, tuple(nr.input_chains(items)), False)
    with pytest.raises(firewalls.IptablesOnly, match="sudo apt install ufw"):
        firewalls.choose(land, None, None, None)
