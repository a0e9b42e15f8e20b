"""A Cast sender on pychromecast, run in the lab's workstation by Lab.pychromecast_play (senders.py).

Whichever pychromecast the Python running it has (Debian 12's 9.4, PyPI's
14): connects to one device by address (no discovery), launches the Default
Media Receiver, plays a URL, and waits until the device says PLAYING or that
the load failed (LOAD_FAILED, which pychromecast 9.4 does not pass on: there
an IDLE status with idleReason ERROR says it), or --timeout passes. With
--controls, then PAUSE, PLAY and STOP, each waited for. Then it quits the
app, disconnects and prints one JSON line on stdout:

    {"version": V, "connected": BOOL, "app": APP_ID, "display_name": NAME, "state": "PLAYING" | "LOAD_FAILED" | null,
     "error_code": CODE or null, "player_state": STATE, "content_id": URL, "controls": [STATE, ...], "seconds": S}

pychromecast's own log goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from importlib import metadata
from uuid import UUID

import pychromecast

MEDIA_RECEIVER = "CC1AD845"


class Watcher:
    """Media and receiver status listener for both pychromecast versions (they only call these methods)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.player_state = None
        self.idle_reason = None
        self.load_failed: int | None = None
        self.app_id = None

    def new_media_status(self, status) -> None:
        with self.changed:
            self.player_state, self.idle_reason = status.player_state, status.idle_reason
            self.changed.notify_all()

    def load_media_failed(self, queue_item_id, error_code) -> None:  # pychromecast 14
        with self.changed:
            self.load_failed = error_code
            self.changed.notify_all()

    def new_cast_status(self, status) -> None:
        with self.changed:
            self.app_id = status.app_id if status else None
            self.changed.notify_all()

    def wait(self, ready, timeout: float):
        with self.changed:
            self.changed.wait_for(ready, timeout=timeout)
            return ready()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, default=8009)
    p.add_argument("--uuid", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--content-type", default="audio/wav")
    p.add_argument("--timeout", type=float, default=15.0, help="for the outcome of the LOAD")
    p.add_argument("--controls", action="store_true", help="then PAUSE, PLAY and STOP")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(threadName)s %(name)s %(message)s")

    start = time.monotonic()
    result = {"version": metadata.version("PyChromecast"), "connected": False, "app": None, "display_name": None,
              "state": None, "error_code": None, "player_state": None, "content_id": None, "controls": []}
    watcher = Watcher()
    cast = pychromecast.get_chromecast_from_host((args.ip, args.port, UUID(args.uuid), args.model, args.name),
                                                 tries=1, timeout=5)
    try:
        cast.register_status_listener(watcher)
        cast.wait(timeout=10)
        result["connected"] = cast.socket_client.is_connected
        cast.start_app(MEDIA_RECEIVER)  # 14 waits for the answer, 9.4 does not
        watcher.wait(lambda: watcher.app_id == MEDIA_RECEIVER or cast.app_id == MEDIA_RECEIVER, 10)
        result["app"], result["display_name"] = cast.app_id, cast.status.display_name if cast.status else None
        mc = cast.media_controller
        mc.register_status_listener(watcher)
        mc.play_media(args.url, args.content_type)

        def outcome():
            if watcher.player_state == "PLAYING":
                return "PLAYING"
            if watcher.load_failed is not None or (watcher.player_state == "IDLE" and watcher.idle_reason == "ERROR"):
                return "LOAD_FAILED"
            return None

        result["state"] = watcher.wait(outcome, args.timeout)
        result["error_code"] = watcher.load_failed
        result["player_state"], result["content_id"] = mc.status.player_state, mc.status.content_id
        if args.controls and result["state"] == "PLAYING":
            for command, state in ((mc.pause, "PAUSED"), (mc.play, "PLAYING"), (mc.stop, "IDLE")):
                command()
                result["controls"].append(state if watcher.wait(lambda s=state: watcher.player_state == s, 5)
                                          else f"not {state}: {watcher.player_state}")
        if cast.app_id == MEDIA_RECEIVER:
            cast.quit_app()
            watcher.wait(lambda: watcher.app_id is None, 5)
        result["app_after_quit"] = watcher.app_id
    finally:
        cast.disconnect(timeout=5)
        result["seconds"] = round(time.monotonic() - start, 2)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
