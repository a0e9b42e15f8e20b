"""Discovery logic that needs no network; the lab tests run it for real."""

from types import SimpleNamespace
from uuid import UUID

from castwall.model import Kind
from castwall.system.discovery import StopRule, device_from_info, kind_of, link_groups
from tests.fakes import device


def info(**kw):
    base = dict(uuid=UUID("1d19441f-de2a-5a8b-dbeb-dcaae5ab99cb"), host="192.168.77.101", port=8009,
                model_name="Chromecast", friendly_name="Living Room TV", services=set())
    return SimpleNamespace(**{**base, **kw})


def test_kind_from_model_name():
    assert kind_of("Google Cast Group") is Kind.GROUP
    assert kind_of("Google Nest Mini") is Kind.AUDIO
    assert kind_of("Chromecast") is Kind.VIDEO and kind_of("Some TV") is Kind.VIDEO


def test_cast_info_to_device_in_both_library_shapes():
    d = device_from_info(info())
    assert (d.name, d.model, str(d.ip), d.port) == ("Living Room TV", "Chromecast", "192.168.77.101", 8009)
    # pychromecast 9.4 gives None for a missing md/fn, 14.x gives placeholder text
    assert device_from_info(info(model_name=None, friendly_name=None)).name == "(unnamed)"
    assert device_from_info(info(host="chromecast.local")) is None  # no address to allow


def test_names_from_the_network_are_made_safe():
    d = device_from_info(info(friendly_name="TV\x1b[2J\nrm -rf /" + "x" * 200))
    assert "\x1b" not in d.name and "\n" not in d.name and len(d.name) <= 64


def test_groups_are_tied_to_the_device_at_their_address():
    host = device(1, name="Kitchen")
    group = device(9, kind=Kind.GROUP, ip=str(host.ip), name="Whole House")
    lone = device(8, kind=Kind.GROUP, name="Upstairs")
    out = {d.uuid: d for d in link_groups([group, host, lone])}
    assert out[group.uuid].host == host.uuid and out[lone.uuid].host is None


def test_stop_rule_waits_longer_for_late_answers():
    rule = StopRule()
    assert not rule.quiet(0.1, None, 0.2) and rule.quiet(0.2, None, 0.2)
    assert rule.quiet(0.35, 0.1, 0.2)          # early answers: a short quiet period
    # a slow LAN (last answer 2 s in): the quiet period grows to a quarter of that
    assert not rule.quiet(2.3, 2.0, 0.2)
    assert rule.quiet(2.55, 2.0, 0.2)
