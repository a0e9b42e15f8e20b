"""VLC in the lab: Debian's cvlc casts to the lab's Cast receivers through the workstation's real ufw.

VLC's chromecast output (Lab.vlc_cast, tests/lab/senders.py) transcodes the
file, serves it from its own HTTP server on the workstation's TCP port 8010
and tells the device that URL; the device fetches it, as a real Chromecast
does, through ufw (default deny). So VLC plays only where castwall's
`setup --app vlc` let the devices reach 8010, and VLC ends either way: the
device says FINISHED once it has read the stream, or hangs up on VLC when
the fetch was dropped (cast_receiver.py).
"""

import re

import pytest

from tests.conftest import need
from tests.lab.senders import VLC_HTTP_PORT, vlc_missing

pytestmark = pytest.mark.lab





def stream_url(lab, run) -> bool:
    """Whether the device was told to play VLC's stream: its HTTP server, on the workstation's port 8010."""
    return bool(run.load and re.fullmatch(rf"http://{re.escape(lab.ws_ip)}:{VLC_HTTP_PORT}/chromecast/\d+/\d+/stream",
                                          run.load["url"]))


def assert_dropped(lab, run) -> None:
    """ufw dropped the device's fetch; the device never played, hung up on VLC, and cvlc gave up by itself."""
    assert stream_url(lab, run), run
    assert run.fetch and (run.fetch["ok"], run.fetch["status"], run.fetch["error"]) == (False, None, "timed out"), run
    assert run.state == "LOAD_FAILED" and not run.finished, run
    assert not [e for e in run.events if e["event"] == "media" and e["state"] == "PLAYING"], run
    assert run.hangup and run.hangup["from"] == lab.ws_ip, run
    assert not run.ended_by_lab and run.returncode == 0, run


def assert_played(lab, run) -> None:
    """The device fetched VLC's whole stream, played it, said FINISHED, and cvlc exited by itself."""
    assert stream_url(lab, run) and run.load["content_type"] == "audio/x-matroska", run  # a WAV: MP3 in Matroska
    fetched = run.fetch
    assert fetched and (fetched["ok"], fetched["status"], fetched["complete"]) == (True, 200, True), run
    assert fetched["bytes"] > 0, run
    assert run.state == "PLAYING" and run.finished and not run.hangup, run
    assert not run.ended_by_lab and run.returncode == 0, run


def vlc_spoke(run) -> set[tuple[str, str | None]]:
    """The (namespace, type) of what VLC sent the device."""
    return {(e["namespace"].rsplit(".", 1)[-1], e["type"]) for e in run.events
            if e["event"] == "cast" and e["source"] == "sender-vlc"}


def test_vlc_is_dropped_before_any_castwall_rule_and_gives_up(make_lab):
    need(vlc_missing())
    lab = make_lab(devices=1)
    (tv,) = lab.devices
    lab.ufw("allow", "22/tcp", check=True)
    mine = lab.ufw_added()

    run = lab.vlc_cast(tv, lab.media_file())
    assert_dropped(lab, run)
    # VLC went all the way to its LOAD: device auth (answered), the receiver, then the media channel of the app.
    spoke = vlc_spoke(run)
    assert {("deviceauth", None), ("receiver", "GET_STATUS"), ("receiver", "LAUNCH"), ("media", "LOAD")} <= spoke, run
    assert [e["app"] for e in run.events if e["event"] == "launch"] == ["CC1AD845"], run
    assert lab.ufw_added() == mine
    assert not lab.cast_events(tv, "error") and not lab.cast_events(tv, "cast-error")


def test_setup_app_vlc_lets_every_device_fetch_from_vlc_and_remove_takes_it_back(make_lab):
    need(vlc_missing())
    lab = make_lab(devices=2)
    lab.install_profiles()
    tv, speaker = lab.devices
    lab.ufw("allow", "22/tcp", check=True)
    mine = lab.ufw_added()
    media = lab.media_file()

    setup = lab.castwall("setup", "--yes", "--app", "vlc")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "through ufw's app profile castwall-vlc" in setup.stdout, setup.stdout
    added = lab.ufw_added()
    through = [line for line in added if " app castwall-vlc comment 'castwall:" in line]
    assert sorted(line.split()[3] for line in through) == sorted([tv.ip, speaker.ip]), added
    assert all(line in added for line in mine), added

    for dev in (tv, speaker):
        assert_played(lab, lab.vlc_cast(dev, media))
    again = lab.vlc_cast(tv, media)  # the receiver app still runs: VLC loads straight away
    assert_played(lab, again)
    assert not [e for e in again.events if e["event"] == "launch"], again

    removed = lab.castwall("remove", "--yes", "--app", "vlc")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    left = lab.ufw_added()
    assert not [line for line in left if "castwall-vlc" in line or "port 8010 " in line], left  # VLC's rules gone ...
    assert all(line in left for line in mine), left  # ... the user's own one still there
    assert_dropped(lab, lab.vlc_cast(tv, media))
    assert lab.ufw_added() == left
    for dev in (tv, speaker):
        assert not lab.cast_events(dev, "error") and not lab.cast_events(dev, "cast-error")
