from castwall.system.interfaces import parse_ip_addr
from castwall.system.neighbours import NO_ANSWER, VIA_ROUTER, NeighbourTable, resolve_macs
from tests.fakes import FakeUfw, arp_text, data, device

IFACES = parse_ip_addr(data("ip-addr.json"))  # eth0 192.168.77.10/24


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 0.05
        return self.t


def test_kernel_table_gives_the_mac_after_a_poke(tmp_path):
    a = device(1)
    arp = tmp_path / "arp"
    arp.write_text(arp_text([]))
    poked = []

    def poke(ips):
        poked.extend(ips)
        arp.write_text(arp_text([a]))  # the kernel resolves it

    table = NeighbourTable(FakeUfw(), arp, poke=poke)
    [got], warning = resolve_macs([a.with_mac(None)], IFACES, table, clock=Clock())
    assert poked == [a.ip] and got.mac == a.mac and warning is None


def test_device_behind_a_router_gets_no_mac_and_no_poke(tmp_path):
    far = device(1, ip="10.9.8.7")
    arp = tmp_path / "arp"
    arp.write_text(arp_text([]))
    poked = []
    table = NeighbourTable(FakeUfw(), arp, poke=poked.extend)
    [got], _ = resolve_macs([far.with_mac(None)], IFACES, table, clock=Clock())
    assert got.mac is None and got.mac_note == VIA_ROUTER and poked == []


def test_silent_device_and_raw_arp_fallback(tmp_path):
    a, b, c = device(1), device(2), device(3)
    arp = tmp_path / "arp"
    arp.write_text(arp_text([]))
    table = NeighbourTable(FakeUfw(), arp, poke=lambda ips: None)
    asked = []

    def raw_arp(ips, iface):
        asked.append((sorted(map(str, ips)), iface))
        return {b.ip: {b.mac}, c.ip: {"02:00:00:00:00:01", "02:00:00:00:00:02"}}

    got, _ = resolve_macs([d.with_mac(None) for d in (a, b, c)], IFACES, table, raw_arp=raw_arp, clock=Clock())
    assert asked == [(["192.168.77.101", "192.168.77.102", "192.168.77.103"], "eth0")]
    assert got[0].mac is None and got[0].mac_note == NO_ANSWER
    assert got[1].mac == b.mac
    assert got[2].mac is None and "several hosts" in got[2].mac_note
    assert "2 hosts answer ARP for 192.168.77.103" in got[2].contested


def test_claims_check_sees_a_second_host_the_kernel_does_not_show(tmp_path):
    a, b = device(1), device(2)
    arp = tmp_path / "arp"
    arp.write_text(arp_text([a, b]))  # the kernel keeps one MAC per address
    table = NeighbourTable(FakeUfw(), arp, poke=lambda ips: None)

    def raw_arp(ips, iface):
        return {a.ip: {a.mac}, b.ip: {"02:66:66:66:66:66"}}  # someone else answered for b

    got, warning = resolve_macs([a.with_mac(None), b.with_mac(None)], IFACES, table, raw_arp=raw_arp,
                                check_claims=True, clock=Clock())
    assert warning is None
    assert got[0].mac == a.mac and got[0].contested is None
    assert got[1].mac is None and f"{b.mac}" in got[1].contested and "02:66:66:66:66:66" in got[1].contested


def test_claims_check_that_cannot_run_says_so(tmp_path):
    a = device(1)
    arp = tmp_path / "arp"
    arp.write_text(arp_text([a]))
    table = NeighbourTable(FakeUfw(), arp, poke=lambda ips: None)

    def no_raw_socket(ips, iface):
        raise PermissionError(1, "Operation not permitted")

    [got], warning = resolve_macs([a.with_mac(None)], IFACES, table, raw_arp=no_raw_socket, check_claims=True, clock=Clock())
    assert got.mac == a.mac and "the ARP check on eth0 failed" in warning and "not checked" in warning
    _, warning = resolve_macs([a.with_mac(None)], IFACES, table, check_claims=True, clock=Clock())
    assert "needs root" in warning
