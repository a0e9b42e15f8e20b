import ipaddress

import pytest

from castwall.model import Action, Device, Kind, PortRange, Rule, Step, canonical_mac, canonical_uuid
from tests.fakes import device

U = "1d19441f-de2a-5a8b-dbeb-dcaae5ab99cb"


def test_port_range_validates_and_prints_in_ufw_syntax():
    assert str(PortRange(32768, 60999)) == "32768:60999"
    for low, high in [(0, 10), (10, 65536), (5000, 4000), (True, 10)]:
        with pytest.raises(ValueError):
            PortRange(low, high)


def test_uuid_and_mac_are_canonical():
    assert canonical_uuid(U.replace("-", "").upper()) == U
    assert canonical_mac("02-CA-57-00-00-01") == "02:ca:57:00:00:01"
    for bad in ["00:00:00:00:00:00", "02:ca:57:00:00", "zz:ca:57:00:00:01"]:
        with pytest.raises(ValueError):
            canonical_mac(bad)
    with pytest.raises(ValueError):
        canonical_uuid("not-a-uuid")


def test_uuid_and_mac_may_come_with_surrounding_whitespace_only():
    assert canonical_uuid(f" \t{U}\r\n") == U
    assert canonical_mac(" 02:CA:57:00:00:01\n") == "02:ca:57:00:00:01"
    with pytest.raises(ValueError):
        canonical_uuid(f"\v{U}")  # whitespace, but none a TXT record or a UDN is padded with


@pytest.mark.parametrize("text", [
    "02:ca:57:00:00:01:02",  # seven octets: a trailing one
    "x02:ca:57:00:00:01", "02:ca:57:00:00:01x",  # junk before, after
    "002:ca:57:00:00:01", "02:ca:57:00:00:001",  # an octet of three digits, first or last
    "2:ca:57:00:00:01", "02:ca:57:0:00:01",  # of one digit
    "02:ca:57:00:00:01 02:ca:57:00:00:02",  # two addresses
    "02:ca:57\n00:00:01", "", "::::::",
])
def test_a_mac_is_six_two_digit_octets_and_nothing_else(text):
    with pytest.raises(ValueError):
        canonical_mac(text)


@pytest.mark.parametrize("text", [
    "urn:uuid:" + U, "{" + U + "}", "0x" + U.replace("-", ""), "+" + U.replace("-", "")[1:],
    "\u0663" + U.replace("-", "")[1:],  # an Arabic-Indic digit, which int() and uuid.UUID take
    "\uff11" + U.replace("-", "")[1:],  # a full-width digit
    U.replace("-", "")[:12] + "-" + U.replace("-", "")[12:],  # a dash out of place
    U[:-1], U + "0", U.replace("-", "_"), "", "-" * 36,
    U + "}", U + "-", U + "urn:", U.replace("-", "") + "uuid:",  # what uuid.UUID strips, after a whole UUID
])
def test_only_the_ascii_forms_cast_devices_send_are_uuids(text):
    with pytest.raises(ValueError):
        canonical_uuid(text)


def test_the_two_forms_devices_send_are_one_uuid():
    assert canonical_uuid(U) == canonical_uuid(U.upper()) == canonical_uuid(U.replace("-", "")) == U


def test_rule_builds_both_add_and_delete_from_one_place():
    rule = Rule(ipaddress.ip_address("192.168.77.101"), PortRange(32768, 60999), U)
    assert rule.ufw_add_args() == (
        "allow", "proto", "udp", "from", "192.168.77.101", "to", "any", "port", "32768:60999",
        "comment", f"castwall:{U}",
    )
    assert rule.ufw_delete_args() == (
        "delete", "allow", "proto", "udp", "from", "192.168.77.101", "to", "any", "port", "32768:60999",
    )
    step = Step(Action.ADD, rule, "new")
    assert step.inverse().action is Action.DELETE and step.inverse().rule == rule
    assert step.inverse().ufw_args() == rule.ufw_delete_args()


def test_same_traffic_ignores_the_tag_as_ufw_does():
    ip = ipaddress.ip_address("192.168.77.5")
    assert Rule(ip, PortRange(1, 2), U).same_traffic(Rule(ip, PortRange(1, 2), None))
    assert not Rule(ip, PortRange(1, 2), U).same_traffic(Rule(ip, PortRange(1, 3), U))


def test_device_selector_matches_uuid_in_any_form_or_name_ignoring_case():
    d = device(1, name="Living Room TV")
    assert d.matches(d.uuid) and d.matches(d.uuid.replace("-", "").upper())
    assert d.matches("living room tv")
    assert not d.matches("Living")
    assert not device(2).matches(d.uuid)


def test_device_rejects_bad_values():
    with pytest.raises(ValueError):
        Device("nope", "x", "m", Kind.VIDEO, ipaddress.ip_address("10.0.0.1"), 8009)
    with pytest.raises(ValueError):
        device(1, port=0)
