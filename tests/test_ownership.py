"""Whose rule is it: castwall's tag read on every backend, exactly (ufw comments, nftables comments, firewalld's
journal). A rule is castwall's only when its tag is the whole comment and names a valid UUID (and an app where the
rule's shape needs one); anything else tagged is odd (reported, never touched); anything untagged is the user's."""

import ipaddress
import json

import pytest

from castwall.model import PortRange, Rule, format_tag, parse_tag
from castwall.system import nft_ruleset
from castwall.system.firewalld_view import IpsetInfo, Journal, Layer, PolicyInfo, Spec, read_journal, rule_set
from castwall.system.ufw import parse_rule_line

U = "1d19441f-de2a-5a8b-dbeb-dcaae5ab99cb"
IP = ipaddress.ip_address("192.168.77.101")
PR = PortRange(32768, 60999)
VLC = PortRange(8010, 8010)
DIAL = f"ufw allow from {IP} to any port 32768:60999 proto udp"


# ufw: `ufw show added` lines

@pytest.mark.parametrize("line, rule", [
    (f"{DIAL} comment 'castwall:{U}'", Rule(IP, PR, U)),
    (f"{DIAL} comment 'castwall:{U.upper()}'", Rule(IP, PR, U)),
    (f"{DIAL} comment 'castwall:{U.replace('-', '')}'", Rule(IP, PR, U)),
    (DIAL, Rule(IP, PR, None)),  # the user's own rule of castwall's shape
    (f"{DIAL} comment 'mine'", Rule(IP, PR, None)),
    (f"{DIAL} comment 'see castwall:{U}'", Rule(IP, PR, None)),  # a mention, not a tag: the user's
    (f"ufw allow from {IP} to any port 8010 proto tcp comment 'castwall:{U}/vlc'", Rule(IP, VLC, U, "tcp", "vlc")),
    (f"ufw allow from {IP} to any port 8010 proto tcp comment 'castwall:{U}/tcp-range'",
     Rule(IP, VLC, U, "tcp", "tcp-range")),
    (f"ufw allow from {IP} to any port 8010 proto tcp", Rule(IP, VLC, None, "tcp")),
    (f"ufw allow from {IP} to any app castwall-vlc comment 'castwall:{U}'", Rule(IP, VLC, U, "tcp", "vlc", profile=True)),
    (f"ufw allow from {IP} to any app castwall-vlc comment 'castwall:{U}/vlc'",
     Rule(IP, VLC, U, "tcp", "vlc", profile=True)),
    (f"ufw allow from {IP} to any app castwall-vlc", Rule(IP, VLC, None, "tcp")),  # the user's, through our profile
    (f"ufw allow from {IP} to any app castwall-vlc comment 'mine'", Rule(IP, VLC, None, "tcp")),
])
def test_ufw_rules_of_castwalls_shape_and_whose_they_are(line, rule):
    got = parse_rule_line(line)
    assert got == rule and (got.app, got.profile) == (rule.app, rule.profile)


@pytest.mark.parametrize("line", [
    f"ufw deny from {IP} to any port 32768:60999 proto udp comment 'castwall:{U}'",  # not an allow
    f"ufw6 allow from {IP} to any port 32768:60999 proto udp comment 'castwall:{U}'",
    f"ufw comment 'castwall:{U}'",
    f"{DIAL} comment 'castwall:{U}' log",  # a word left over
    f"{DIAL} via eth0 comment 'castwall:{U}'",  # a word ufw's shape of castwall's rules never has
    f"ufw allow from {IP} from 192.168.77.102 to any port 32768:60999 proto udp comment 'castwall:{U}'",  # twice
    f"ufw allow from {IP} to 192.168.77.10 port 32768:60999 proto udp comment 'castwall:{U}'",  # to one address
    f"ufw allow to any port 32768:60999 proto udp comment 'castwall:{U}'",  # from anywhere
    f"ufw allow from {IP} to any port 32768:60999 proto any comment 'castwall:{U}'",
    f"ufw allow from {IP} to any port 32768:60999 comment 'castwall:{U}'",  # no protocol
    f"ufw allow from {IP} to any port x proto udp comment 'castwall:{U}'",
    f"ufw allow from nowhere to any port 32768:60999 proto udp comment 'castwall:{U}'",
    f"{DIAL} comment 'castwall:{U} extra'",  # more than the tag
    f"{DIAL} comment 'castwall:{U}\n'", f"{DIAL} comment 'castwall: {U}'", f"{DIAL} comment 'castwall:{U}/vlc\n'",
    f"{DIAL} comment 'castwall:not-a-uuid'",
    f"{DIAL} comment 'castwall:{'-' * 36}'",  # UUID-shaped to the pattern, no UUID
    f"{DIAL} comment 'castwall:{U}/vlc'",  # a DIAL rule names no app
    f"{DIAL} comment 'castwall:{U}/'", f"{DIAL} comment 'castwall:/vlc'", f"{DIAL} comment 'castwall:{U}/a/b'",
    f"ufw allow from {IP} to any port 8010 proto tcp comment 'castwall:{U}/VLC'",
    f"ufw allow from {IP} to any port 8010 proto tcp comment 'castwall:{U}'",  # a plain TCP rule must name its app
    f"ufw allow from {IP} to any port 8010 proto tcp comment 'castwall:{U}/nosuch'",
    f"ufw allow from {IP} to any app castwall-vlc comment 'castwall:{U}/catt'",  # another app than its profile's
    f"ufw allow from {IP} to any app castwall-nosuch comment 'castwall:{U}'",
    f"ufw allow from {IP} to any app castwall-vlc proto tcp comment 'castwall:{U}'",
    f"ufw allow from {IP} to any app castwall-vlc port 8010 comment 'castwall:{U}'",
    f"{DIAL} comment 'castwall:{U}",  # an unbalanced quote
])
def test_ufw_lines_tagged_castwall_of_any_other_shape_are_odd(line):
    assert parse_rule_line(line) == line


@pytest.mark.parametrize("line", [
    "ufw allow 22/tcp", "ufw deny from 192.168.77.6", f"ufw deny from {IP} to any port 32768:60999 proto udp", "ufw",
    "", "ufw allow from 192.168.77.5 to any app OpenSSH", f"{DIAL} comment 'mine", "ufw allow from x comment 'a b'",
])
def test_ufw_lines_of_other_shapes_without_a_tag_are_not_castwalls_business(line):
    assert parse_rule_line(line) is None


# nftables: the set's elements and their comments

def element(addr="192.168.77.101", proto="udp", port=None, comment=None):
    val = {"concat": [addr, proto, port if port is not None else {"range": [32768, 60999]}]}
    return {"elem": {"val": val, "comment": comment}} if comment is not None else val


@pytest.mark.parametrize("elem, rule", [
    (element(comment=f"castwall:{U}"), Rule(IP, PR, U)),
    (element(comment=f"castwall:{U.upper()}"), Rule(IP, PR, U)),
    (element(), Rule(IP, PR, None)),
    (element(comment="mine"), Rule(IP, PR, None)),
    (element(comment="012345678" + U), Rule(IP, PR, None)),  # as long as the prefix, but not it
    (element(proto="tcp", port=8010, comment=f"castwall:{U}/vlc"), Rule(IP, VLC, U, "tcp", "vlc")),
    (element(proto="tcp", port=8010, comment=f"castwall:{U}/tcp-range"), Rule(IP, VLC, U, "tcp", "tcp-range")),
])
def test_nft_elements_of_castwalls_shape_and_whose_they_are(elem, rule):
    got, odd = nft_ruleset._elem_rule(elem)
    assert got == rule and got.app == rule.app and odd is None


@pytest.mark.parametrize("elem", [
    element(comment=f"castwall:{U}/vlc"),  # a DIAL rule names no app
    element(comment="castwall:nope"), element(comment=f"castwall: {U}"), element(comment=f"castwall:{U}/"),
    element(comment=f"castwall:{U}/a/b"),  # tagged, but no tag castwall writes: as ufw's, odd
    element(proto="tcp", port=8010, comment=f"castwall:{U}/nosuch"),
    element(proto="sctp", comment=f"castwall:{U}"), element(proto="sctp"),
    element(port=True), element(port="8010"), element(port={"range": [60999, 32768]}),
    element(addr="2001:db8::1"), element(addr="nowhere"),
    {"elem": 5}, {"elem": {"val": "x"}}, "elem", ["elem"], {"concat": ["192.168.77.101", "udp"]}, None,
])
def test_nft_elements_of_other_shapes_are_odd_and_said_as_they_are(elem):
    got, odd = nft_ruleset._elem_rule(elem)
    assert got is None and odd


def test_an_odd_elements_text_is_bounded():
    got, odd = nft_ruleset._elem_rule({"concat": ["x" * 500]})
    assert got is None and len(odd) == 160 and odd.endswith("\u2026")
    got, odd = nft_ruleset._elem_rule(element(proto="tcp", port=8010, comment=f"castwall:{U}/" + "a" * 300))
    assert got is None and len(odd) == 160
    got, odd = nft_ruleset._elem_rule(element(comment="castwall:" + "x" * 300))
    assert got is None and len(odd) == 160


def test_one_tag_codec_reads_exactly_what_it_writes():
    assert parse_tag(format_tag(U)) == (U, None) and format_tag(U) == f"castwall:{U}"
    assert parse_tag(format_tag(U, "vlc")) == (U, "vlc") and format_tag(U, "vlc") == f"castwall:{U}/vlc"
    assert parse_tag(f"castwall:{U.upper()}/tcp-range") == (U, "tcp-range")
    assert parse_tag(f"castwall:{U.replace('-', '')}") == (U, None)
    for other in ("", "mine", "012345678" + U, f"xcastwall:{U}", U, f" castwall:{U}"):
        assert parse_tag(other) is None, other  # no tag at all: the user's
    for bad in ("castwall:", "castwall:nope", f"castwall: {U}", f"castwall:{U} ", f"castwall:{U}\n", f"castwall:{U}/",
                f"castwall:{U}/VLC", f"castwall:{U}/a/b", f"castwall:{U}/vlc\n", "castwall:" + "-" * 36, f"castwall:/{U}"):
        with pytest.raises(ValueError):
            parse_tag(bad)  # castwall's prefix, not castwall's tag: odd


# firewalld: rich rules carry no comment, so castwall's journal names the owners

def test_the_journal_names_owners_and_apps_and_leaves_out_whatever_is_no_valid_pair():
    text = json.dumps({
        "entries": {"192.168.77.101": U.upper(), "192.168.77.102": "nope", "nowhere": U, "192.168.77.103": 5},
        "ports": {"xtcp/8011": "vlc", "tcp/8012x": "vlc", "udp/8010": "vlc", "tcp/99999": "vlc", "tcp/5000-4000": "x",
                  "tcp/8010": "vlc", "tcp/45000-47000": "catt", "tcp/4100": "not an app!"},
    })
    journal, problem = read_journal(text)
    assert problem is None
    assert journal.owners == {"192.168.77.101": U}
    assert journal.apps == {"tcp/8010": "vlc", "tcp/45000-47000": "catt"}


@pytest.mark.parametrize("text, why", [
    ("{", "not valid JSON"), ("[]", "not a JSON object"), ("[" * 100000, "nests too deeply"),
])
def test_a_journal_castwall_cannot_read_says_why(text, why):
    journal, problem = read_journal(text)
    assert journal == Journal() and why in problem


def test_firewalld_rules_are_castwalls_where_the_journal_says_so_and_apps_only_on_tcp():
    specs = (Spec("udp", PR).rich_rule, Spec("tcp", VLC).rich_rule)
    layer = Layer(IpsetInfo("hash:ip", (("family", "inet"),), ("192.168.77.101", "192.168.77.102")),
                  PolicyInfo("CONTINUE", ("ANY",), ("HOST",), specs, ()))
    journal = Journal({"192.168.77.101": U}, {"tcp/8010": "vlc"})
    got = rule_set(layer, journal)
    other = ipaddress.ip_address("192.168.77.102")
    assert got.rules == (Rule(IP, VLC, U, "tcp", "vlc"), Rule(IP, PR, U), Rule(other, VLC, None, "tcp"), Rule(other, PR, None))
    assert got.other == 0 and got.odd_tagged == ()
    unnamed = rule_set(layer, Journal({"192.168.77.101": U}, {}))
    assert unnamed.rules[:2] == (Rule(IP, VLC, None, "tcp"), Rule(IP, PR, U))  # a TCP port no app is named for: nobody's


# What castwall writes

def test_the_tag_castwall_writes_names_the_app_only_where_the_rule_cannot():
    assert Rule(IP, PR, None).comment is None
    assert Rule(IP, PR, U).comment == f"castwall:{U}"
    assert Rule(IP, VLC, U, "tcp", "vlc").comment == f"castwall:{U}/vlc"
    assert Rule(IP, VLC, U, "tcp", "vlc", profile=True).comment == f"castwall:{U}"  # the profile names the app
    assert Rule(IP, VLC, U, "tcp").comment == f"castwall:{U}"
