"""The lab's parts for follow mode, proved with real traffic: the gateway, the café's LAN with the same
subnet, the workstation roaming between them, hosts taking an address (an impostor announcing a
device's UUID), a moved device, and the stand-in systemd that runs castwall-follow's passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.lab import CAFE_GATEWAY_MAC, GATEWAY_MAC, STRANGER_MAC, LabError, dashed

pytestmark = [pytest.mark.lab, pytest.mark.harness]  # proves the lab itself: on one stack (scripts/test)

IN_RANGE = 45000
IMPOSTOR_MAC = "02:ca:57:dd:00:01"


def default_route(lab) -> list[dict]:
    return json.loads(lab.ws(["ip", "-j", "-4", "route", "show", "default"], check=True).stdout)


def neighbour(lab, ip: str) -> dict:
    entries = json.loads(lab.ws(["ip", "-j", "-4", "neigh", "show", ip], check=True).stdout)
    return entries[0] if entries else {}


def discover(lab, timeout: str = "5") -> dict:
    done = lab.castwall("discover", "--json", "--timeout", timeout, root=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_lan_has_a_gateway_the_workstation_routes_through_and_whose_mac_answers(make_lab):
    lab = make_lab(devices=1)
    [route] = default_route(lab)
    assert (route["gateway"], route["dev"]) == (f"{lab.subnet}.1", "eth0")
    assert (lab.gateway.ip, lab.gateway.mac) == (f"{lab.subnet}.1", GATEWAY_MAC)
    assert lab.ws_mac_of(lab.gateway.ip) == GATEWAY_MAC
    entry = neighbour(lab, lab.gateway.ip)
    assert entry["lladdr"] == GATEWAY_MAC and entry["state"] != ["FAILED"], entry
    # Its namespace sends like any host's: ufw drops it, until a rule lets it in.
    assert lab.udp_reaches({"gateway": lab.gateway.ns}, IN_RANGE) == set()
    lab.ufw("allow", "proto", "udp", "from", lab.gateway.ip, "to", "any", "port", str(IN_RANGE), check=True)
    assert lab.udp_reaches({"gateway": lab.gateway.ns}, IN_RANGE) == {"gateway"}


def test_roaming_to_the_cafe_finds_a_stranger_at_the_tvs_address_and_home_again_the_tv(make_lab):
    lab = make_lab(devices=2)
    tv, speaker = lab.devices
    assert lab.castwall("setup", "--yes").returncode == 0  # rules for the TV's and the speaker's addresses
    assert lab.ws_mac_of(tv.ip) == tv.mac
    cafe = lab.second_lan()
    assert (cafe.bridge, cafe.gateway.ip, cafe.gateway.mac) == ("br1", lab.gateway.ip, CAFE_GATEWAY_MAC)
    assert (cafe.stranger.ip, cafe.stranger.mac) == (tv.ip, STRANGER_MAC)
    senders = {"stranger": cafe.stranger.ns, "tv": tv.ns, "speaker": speaker.ns}

    gateway = lab.roam("cafe")
    assert gateway is cafe.gateway and lab.lan == "cafe"
    assert neighbour(lab, lab.gateway.ip)["lladdr"] == CAFE_GATEWAY_MAC
    assert len(default_route(lab)) == 1 and default_route(lab)[0]["gateway"] == lab.gateway.ip
    assert f"inet {lab.ws_ip}/24" in lab.ws(["ip", "-4", "addr", "show", "eth0"], check=True).stdout
    # The neighbour entries of home went with the network: the TV's address is the stranger's now.
    assert lab.ws_mac_of(tv.ip) == STRANGER_MAC
    # The rule castwall made for the TV's address lets the stranger in (what follow mode is for);
    # the devices at home are out of reach.
    assert lab.udp_reaches(senders, IN_RANGE) == {"stranger"}
    nothing = lab.castwall("discover", "--json", "--timeout", "3", root=False)  # the stranger announces nothing
    assert nothing.returncode == 9 and "no Cast device answered" in nothing.stderr, nothing.stdout + nothing.stderr

    gateway = lab.roam("home")
    assert gateway is lab.gateway and lab.lan == "home"
    assert neighbour(lab, lab.gateway.ip)["lladdr"] == GATEWAY_MAC
    assert lab.ws_mac_of(tv.ip) == tv.mac
    assert lab.udp_reaches(senders, IN_RANGE) == {"tv", "speaker"}
    found = {d["uuid"]: d for d in discover(lab)["devices"]}
    assert (found[dashed(tv.uuid)]["ip"], found[dashed(tv.uuid)]["mac"]) == (tv.ip, tv.mac)


def test_a_host_taking_an_address_answers_arp_for_it_and_sends_from_it(make_lab):
    lab = make_lab(devices=1)
    ip = f"{lab.subnet}.150"
    host = lab.take_address(ip, IMPOSTOR_MAC)
    assert (host.ip, host.mac, host.lan, host.uuid) == (ip, IMPOSTOR_MAC, "home", None) and lab.taken == [host]
    assert lab.ws_mac_of(ip) == IMPOSTOR_MAC
    assert neighbour(lab, ip)["lladdr"] == IMPOSTOR_MAC
    lab.ufw("allow", "proto", "udp", "from", ip, "to", "any", "port", str(IN_RANGE), check=True)
    assert lab.udp_reaches({"host": host.ns, "tv": lab.devices[0].ns}, IN_RANGE) == {"host"}
    lab.unplug(host)
    assert lab.udp_reaches({"host": host.ns}, IN_RANGE) == set()


_DESCRIPTION = """
import sys, urllib.request
print(urllib.request.urlopen(f"http://{sys.argv[1]}:8008/ssdp/device-desc.xml", timeout=5).read().decode())
"""


def test_an_impostor_at_a_moved_devices_old_address_announces_its_uuid_from_another_mac(make_lab):
    lab = make_lab(devices=2)
    tv = lab.devices[0]
    assert lab.castwall("setup", "--yes").returncode == 0
    assert lab.ws_mac_of(tv.ip) == tv.mac  # the workstation knows the TV's MAC at its address
    old, new = tv.ip, f"{lab.subnet}.180"

    lab.move(tv, new)
    # Moved, the TV answers mDNS and HTTP (DIAL's description) at its new address only.
    records = lab.ask_mdns(new, want_a=new, want_txt=f"id={tv.uuid}", timeout=1)
    assert {r["data"] for r in records if r["type"] == "A"} == {new}
    description = lab.in_ns(lab.gateway.ns, [lab.python, "-c", _DESCRIPTION, new]).stdout
    assert f"<UDN>uuid:{dashed(tv.uuid)}</UDN>" in description

    impostor = lab.take_address(old, IMPOSTOR_MAC, announce=tv)
    assert impostor.uuid == tv.uuid
    # Its ARP announcement moved the workstation's entry for the old address to the impostor's MAC.
    assert lab.ws_mac_of(old, expect=IMPOSTOR_MAC, timeout=3) == IMPOSTOR_MAC
    records = lab.ask_mdns(old, want_a=old, want_txt=f"id={tv.uuid}", timeout=3)
    [txt] = [r["data"] for r in records if r["type"] == "TXT"]
    assert f"id={tv.uuid}" in txt and f"fn={tv.name}" in txt and f"md={tv.model}" in txt
    assert [r["data"][0] for r in records if r["type"] == "SRV"] == [8009]
    assert {r["data"] for r in records if r["type"] == "A"} == {old}

    # castwall sees the TV's UUID at both addresses, the old one with the impostor's MAC.
    found = [d for d in discover(lab)["devices"] if d["uuid"] == dashed(tv.uuid)]
    assert len(found) == 1 and {found[0]["ip"], *found[0]["also_at"]} == {old, new}, found
    if found[0]["ip"] == old:
        assert found[0]["mac"] == IMPOSTOR_MAC
    # It answered castwall's DIAL search as the TV would, and the TV's old rule lets it in, not the TV.
    assert lab.cast_events(impostor, "reply") and lab.cast_events(tv, "reply")
    assert lab.udp_reaches({"impostor": impostor.ns, "tv": tv.ns}, IN_RANGE) == {"impostor"}


_STAND_IN = """
import json, os, pathlib, sys, time
here = pathlib.Path(sys.argv[1])
n = len(list(here.glob("began-*"))) + 1  # passes never overlap, so this counts them
(here / f"began-{n}").touch()
print(json.dumps({"pass": n, "argv": sys.argv[2:], "uid": os.getuid(), "netns": os.stat("/proc/self/ns/net").st_ino,
                  "env": dict(os.environ), "systemd": os.path.isdir("/run/systemd/system")}), flush=True)
sys.stderr.write("a last line without its newline")
gate = here / f"go-{n}"
while not gate.exists():  # the test lets each pass end by writing its exit status there
    time.sleep(0.01)
sys.exit(int(gate.read_text()))
"""


def stand_in(lab):
    """A stand-in for `castwall follow run` that reports its surroundings and ends when the test says."""
    here = lab.dir / "stand-in"
    here.mkdir()
    (here / "pass.py").write_text(_STAND_IN)
    lab.follow_command = [lab.python, str(here / "pass.py"), str(here), "follow", "run"]
    return here


def systemctl(lab, *args):
    done = lab.ws(["systemctl", *args], timeout=30)
    return done.returncode, done.stdout.strip()


def test_the_stand_in_systemd_enables_the_timer_and_runs_passes_one_at_a_time(make_lab):
    lab = make_lab(devices=0)
    log = lab.follow_systemd()
    here = stand_in(lab)
    assert lab.ws(["test", "-d", "/run/systemd/system"]).returncode == 0
    for unit in ("castwall-follow.timer", "castwall-follow.service"):
        assert systemctl(lab, "show", "-p", "LoadState", "--value", unit) == (0, "loaded")
    assert systemctl(lab, "show", "-p", "LoadState", "--value", "nothing.timer") == (0, "not-found")
    assert systemctl(lab, "is-enabled", "--quiet", "castwall-follow.timer") == (1, "")
    assert systemctl(lab, "is-enabled", "castwall-follow.timer") == (1, "disabled")
    assert systemctl(lab, "is-active", "castwall-follow.timer") == (3, "inactive")
    assert systemctl(lab, "is-enabled", "castwall-follow.service") == (0, "static")

    assert systemctl(lab, "enable", "--now", "castwall-follow.timer") == (0, "")
    assert systemctl(lab, "is-enabled", "castwall-follow.timer") == (0, "enabled")
    assert systemctl(lab, "is-active", "--quiet", "castwall-follow.timer") == (0, "")
    assert lab.follow_units() == {"enabled": True, "active": True, "running": False}

    # Two starts without waiting, the way castwall's network hooks start a pass: both return at once.
    assert systemctl(lab, "--no-block", "start", "castwall-follow.service") == (0, "")
    lab.wait_follow_started(1)
    assert systemctl(lab, "start", "--no-block", "castwall-follow.service") == (0, "")
    assert lab.follow_units()["running"] and systemctl(lab, "is-active", "castwall-follow.service") == (3, "activating")
    assert lab.follow_passes() == [] and not (here / "began-2").exists()  # the second waits for the first
    (here / "go-1").write_text("0")
    lab.wait_follow_pass(1)
    lab.wait_follow_started(2)
    (here / "go-2").write_text("3")
    text = lab.wait_follow_pass(2)
    assert lab.follow_passes() == [0, 3] and text == log.read_text() == lab.follow_log()
    reports = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [r["pass"] for r in reports] == [1, 2]
    ws_netns = os.stat(f"/run/netns/{lab.prefix}-ws").st_ino
    for report in reports:
        assert report["argv"] == ["follow", "run"] and report["uid"] == 0 and report["systemd"]
        assert report["netns"] == ws_netns  # it ran in the workstation
        env = report["env"]
        assert env["PYTHONPATH"] == str(lab.dir / "src") and env["CASTWALL_STATE_DIR"] == str(lab.state_dir)
        assert env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
    # Each pass's output ends on a line of its own, before the lab's line.
    assert text.count("a last line without its newline\nfollow pass exited ") == 2
    assert systemctl(lab, "is-active", "castwall-follow.service") == (3, "failed")

    # Started and waited for, a failed pass fails the start, as systemctl says of a failed unit.
    (here / "go-3").write_text("2")
    done = lab.ws(["systemctl", "start", "castwall-follow.service"], timeout=60)
    assert done.returncode == 1 and "castwall-follow.service failed" in done.stderr
    assert lab.follow_passes() == [0, 3, 2]
    (here / "go-4").write_text("0")
    assert systemctl(lab, "start", "castwall-follow.service") == (0, "")
    assert lab.follow_passes() == [0, 3, 2, 0]
    assert systemctl(lab, "is-active", "castwall-follow.service") == (3, "inactive")

    assert systemctl(lab, "disable", "--now", "castwall-follow.timer") == (0, "")
    assert systemctl(lab, "is-enabled", "castwall-follow.timer") == (1, "disabled")
    assert systemctl(lab, "is-active", "castwall-follow.timer") == (3, "inactive")
    assert lab.systemctl_calls()[:3] == ["show -p LoadState --value castwall-follow.timer",
                                         "show -p LoadState --value castwall-follow.service",
                                         "show -p LoadState --value nothing.timer"]
    assert lab.systemctl_calls()[-1] == "is-active castwall-follow.timer"
    assert lab.systemctl_calls().count("--no-block start castwall-follow.service") == 1


def test_the_default_pass_is_castwall_follow_run_with_the_labs_environment(make_lab):
    lab = make_lab(devices=0)
    lab.follow_systemd(enabled=True)
    assert lab.follow_command == [lab.python, "-m", "castwall", "follow", "run"]
    assert lab.follow_units() == {"enabled": True, "active": True, "running": False}
    script = (lab.dir / "follow" / "pass").read_text()
    assert f"PYTHONPATH={lab.dir / 'src'}" in script and f"CASTWALL_STATE_DIR={lab.state_dir}" in script
    assert script.rstrip().endswith(f"{lab.python} -m castwall follow run")
    # Whatever castwall's follow command does today, the pass runs it and logs its status.
    assert systemctl(lab, "start", "--no-block", "castwall-follow.service") == (0, "")
    text = lab.wait_follow_pass(1)
    [status] = lab.follow_passes()
    assert text.startswith("follow pass started\n") and text.endswith(f"follow pass exited {status}\n")


def test_dnsmasq_and_the_follow_units_share_one_stand_in_systemctl(make_lab):
    if shutil.which("dnsmasq", path="/usr/sbin:/usr/bin") is None:
        pytest.fail("dnsmasq is not installed; run scripts/test, which installs it")
    lab = make_lab(devices=0)
    lab.serve_dhcp()
    lab.follow_systemd()
    here = stand_in(lab)
    assert systemctl(lab, "is-active", "dnsmasq.service") == (0, "active")
    assert systemctl(lab, "restart", "dnsmasq.service") == (0, "")
    assert systemctl(lab, "is-active", "--quiet", "dnsmasq.service") == (0, "")
    (here / "go-1").write_text("0")
    assert systemctl(lab, "start", "castwall-follow.service") == (0, "")
    assert lab.follow_passes() == [0]
    assert systemctl(lab, "is-active", "castwall-follow.timer") == (3, "inactive")
    assert systemctl(lab, "restart", "nothing.service")[0] == 5
    assert lab.systemctl_calls() == ["restart dnsmasq.service", "is-active dnsmasq.service", "restart dnsmasq.service",
                                     "is-active --quiet dnsmasq.service", "start castwall-follow.service",
                                     "is-active castwall-follow.timer", "restart nothing.service"]


def test_close_kills_a_pass_still_running_and_leaves_no_namespace(make_lab):
    lab = make_lab(devices=0)
    lab.follow_systemd()
    stand_in(lab)  # its first pass waits for go-1, which never comes
    assert systemctl(lab, "start", "--no-block", "castwall-follow.service") == (0, "")
    lab.wait_follow_started(1)
    runner = int((lab.dir / "follow" / "running").read_text())
    stand_in_pids = [int(p) for p in lab.ws(["pgrep", "-g", str(runner)], check=True).stdout.split()]
    assert runner in stand_in_pids and len(stand_in_pids) >= 2  # the runner and the pass it runs
    prefix = lab.prefix
    lab.close()
    for pid in stand_in_pids:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state in ("Z", "X"), f"{pid} still runs after close"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert prefix not in listed
    with pytest.raises(LabError):
        lab.wait_follow_pass(1, timeout=0.1)
