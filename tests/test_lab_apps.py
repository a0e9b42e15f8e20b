"""Sender apps in the lab: a real sender (catt) against the lab's Cast receivers, through real ufw.

The lab's devices fetch the media the sender serves, as real Cast devices do,
through the workstation's ufw (default deny). castwall's rules must open
exactly that path: from the devices castwall set up, to the app's ports.
"""


import pytest

from tests.conftest import need
from tests.lab.senders import catt_missing, pychromecast_missing

pytestmark = pytest.mark.lab

TCP_PROBE = ("import socket, sys\n"
             "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
             "s.close()\n")


def listen(lab, port: int):
    """A TCP listener in the workstation (it only accepts), ready when its line is printed."""
    return lab.serve_media(lab.dir, port)


def tcp_opens(lab, ns: str, port: int) -> bool:
    """Whether a TCP connection from namespace ns to the workstation's port opens (2 s timeout)."""
    return lab.in_ns(ns, [lab.python, "-c", TCP_PROBE, lab.ws_ip, str(port)], check=False).returncode == 0


def skip_without_catt():
    need(catt_missing())


def test_catt_is_dropped_then_plays_after_setup_app_and_is_closed_again_by_remove(make_lab):
    skip_without_catt()
    lab = make_lab(devices=3)
    lab.install_profiles()
    first, second, contested = lab.devices
    lab.add_impostor(contested.ip, "02:66:00:00:00:02")  # castwall refuses the address two hosts claim
    lab.ufw("allow", "22/tcp", check=True)
    mine = [line for line in lab.ufw_added()]
    media = lab.media_file()

    before = lab.catt_cast(first, media)
    assert before.state == "LOAD_FAILED" and before.fetch and not before.fetch["ok"], before

    setup = lab.castwall("setup", "--yes", "--app", "catt")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    added = lab.ufw_added()
    through = [line for line in added if " app castwall-catt comment 'castwall:" in line]
    assert sorted(line.split()[3] for line in through) == sorted([first.ip, second.ip]), added
    assert all(line in added for line in mine)
    assert "through ufw's app profile castwall-catt" in setup.stdout

    after = lab.catt_cast(first, media)
    assert after.state == "PLAYING" and after.fetch["ok"] and after.fetch["bytes"] > 0, after
    # castwall gave the contested address nothing. (Two hosts answer ARP for it, so catt may not even reach the
    # device: whatever the ARP race, nothing may fetch from catt's port.)
    assert not [line for line in lab.ufw_added() if f" {contested.ip} " in line]
    refused = lab.catt_cast(contested, media)
    assert refused.state != "PLAYING" and not (refused.fetch and refused.fetch["ok"]), refused

    with listen(lab, 45123):
        assert tcp_opens(lab, second.ns, 45123)  # a device castwall set up reaches the port ...
        assert not tcp_opens(lab, lab.other_ns, 45123)  # ... a host that is not a Cast device does not
        assert not tcp_opens(lab, second.ns, 47001)  # and only catt's ports are open

    again = lab.castwall("setup", "--yes")  # catt is kept in the state file: nothing to change
    assert again.returncode == 0 and "Nothing to change" in again.stdout, again.stdout
    status = lab.castwall("status", "--no-discover")
    assert status.returncode == 0 and "catt" in status.stdout, status.stdout

    removed = lab.castwall("remove", "--yes", "--app", "catt")
    assert removed.returncode == 0, removed.stderr
    assert not [line for line in lab.ufw_added() if "castwall-catt" in line]
    assert all(line in lab.ufw_added() for line in mine)
    closed = lab.catt_cast(first, media)
    assert closed.state == "LOAD_FAILED", closed


def test_the_ufw_command_and_its_library_write_the_same_app_rules_with_and_without_profiles(make_lab):
    lab = make_lab(devices=2)
    for profiled in (False, True):
        if profiled:
            lab.install_profiles()
        wrote = {}
        for path in ("cli", "library"):
            env = {"CASTWALL_UFW": "cli"} if path == "cli" else {}
            result = lab.castwall("setup", "--yes", "--app", "vlc", "--app", "tcp-range=40000:40010", env=env)
            assert result.returncode == 0, result.stderr
            assert ("not installed" in result.stderr) is not profiled and "a broad rule, 11 port(s)" in result.stdout
            wrote[path] = lab.ufw_added()
            again = lab.castwall("setup", "--yes", env=env)
            assert "Nothing to change" in again.stdout, again.stdout + again.stderr
            assert lab.castwall("remove", "--yes", "--all", env=env).returncode == 0
            assert not [line for line in lab.ufw_added() if "castwall:" in line]
        assert wrote["cli"] == wrote["library"]
        tcp = [line for line in wrote["cli"] if "proto tcp" in line or " app " in line]
        vlc = [line for line in tcp if ("app castwall-vlc" if profiled else "port 8010 proto tcp") in line]
        wide = [line for line in tcp if "port 40000:40010 proto tcp" in line]  # a range of the user's: never a profile
        assert len(tcp) == 4 and len(vlc) == 2 and len(wide) == 2, wrote["cli"]


def test_check_app_proves_the_path_with_the_cast_protocol(make_lab):
    lab = make_lab(devices=1)
    need(pychromecast_missing(lab.python))
    (dev,) = lab.devices
    before = lab.castwall("check", "--app", "vlc", "--device", dev.name, "--yes", "--timeout", "4")
    assert before.returncode == 3, before.stdout + before.stderr
    assert "did not fetch the test sound from TCP 8010" in before.stdout and "setup --app vlc" in before.stdout
    assert lab.cast_events(dev, "load"), "the device was asked to play"
    assert lab.castwall("setup", "--yes", "--app", "vlc").returncode == 0
    after = lab.castwall("check", "--app", "vlc", "--device", dev.name, "--yes", "--json")
    assert after.returncode == 0, after.stdout + after.stderr
    assert '"arrived": true' in after.stdout and '"port": 8010' in after.stdout
    asked = lab.castwall("check", "--app", "vlc", "--device", dev.name, input="n\n")
    assert asked.returncode == 11 and "play one second of silence" in asked.stderr
