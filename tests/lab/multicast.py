"""The lab LAN's multicast and DIAL: the switch that loses mDNS multicast, the devices' DIAL logs,
an mDNS probe and Chromium in the workstation (a part of Lab)."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.lab.common import SAFE_PATH, LabError

if TYPE_CHECKING:
    from tests.lab import LabDevice

MDNS_PROBE = Path(__file__).with_name("mdns_probe.py")
LOSSY_TABLE = "lab_lossy_lan"  # the bridge's nft table of lose_multicast()


class MulticastAndDial:
    """Lab's multicast-losing switch and what the devices' DIAL side logged."""

    def multicast_reaches(self, senders: dict[str, LabDevice], group: str, port: int) -> set[str]:
        """Which devices' datagrams to group:port reach a listener in the workstation (label -> device).

        Decided on events as Lab.udp_reaches is: see Lab._reaches.
        """
        return self._reaches(["multicast", str(port), group, self.ws_ip],
                             {label: (dev.ns, [_MC_SENDER, group, str(port), dev.ip, label]) for label, dev in senders.items()},
                             "multicast listener")

    def cast_events(self, dev: LabDevice, event: str | None = None) -> list[dict]:
        """What the device's DIAL and Cast ports saw (cast_device.py's JSON lines), oldest first."""
        try:
            lines = (dev.dir / "cast.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:  # a line being written
                continue
        return [e for e in events if event is None or e["event"] == event]

    def wait_for_event(self, dev: LabDevice, event: str, timeout: float = 5.0, **fields) -> dict:
        """The device's first logged event of that kind (with those field values), waiting for it up to timeout."""
        found: list[dict] = []

        def seen() -> bool:
            found[:] = [e for e in self.cast_events(dev, event) if all(e.get(k) == v for k, v in fields.items())]
            return bool(found)

        self._wait(seen, f"{event} event of {dev.name}", timeout=timeout)
        return found[0]

    def _bridge_ns(self) -> str:
        """The LAN's namespace, checked to be this lab's own: nft must never run anywhere else."""
        br = f"{self.prefix}-br"
        if br not in self.namespaces:
            raise LabError("the lab's bridge namespace is gone")
        return br

    def lose_multicast(self, lost: bool = True) -> None:
        """Make the LAN lose mDNS multicast on its way to the workstation (as a Wi-Fi AP may), or stop that.

        An nft bridge table in the bridge's namespace, and nowhere else, drops
        frames to 224.0.0.251 as they leave the bridge through the
        workstation's port; unicast and SSDP (239.255.255.250) still pass.
        """
        if shutil.which("nft", path=SAFE_PATH) is None:
            raise LabError("lose_multicast needs nft (scripts/bootstrap installs nftables)")
        script = f"add table bridge {LOSSY_TABLE}\ndelete table bridge {LOSSY_TABLE}\n"
        if lost:
            script += (f"table bridge {LOSSY_TABLE} {{\n"
                       "  chain to_workstation {\n"
                       "    type filter hook forward priority 0; policy accept;\n"
                       "    oifname \"ws\" ip daddr 224.0.0.251 counter drop\n"
                       "  }\n"
                       "}\n")
        br = self._bridge_ns()
        done = subprocess.run(["ip", "netns", "exec", br, "nft", "-f", "-"], input=script,
                              capture_output=True, text=True, timeout=30, env={"PATH": SAFE_PATH, "LANG": "C"})
        if done.returncode != 0:
            raise LabError(f"nft in {br}: {done.stderr.strip()}")

    def multicast_dropped(self) -> int:
        """How many mDNS frames the lossy bridge has dropped so far (0 when it is off)."""
        done = self._sh("ip", "netns", "exec", self._bridge_ns(), "nft", "-j", "list", "table", "bridge", LOSSY_TABLE,
                        check=False)
        if done.returncode != 0:
            return 0
        return sum(e["counter"]["packets"] for item in json.loads(done.stdout)["nftables"] if "rule" in item
                   for e in item["rule"]["expr"] if "counter" in e)

    def mdns_answers(self, until, *, unicast: list[str] | tuple[str, ...] = (), timeout: float = 5.0) -> dict[str, set[str]]:
        """Ask the LAN for Cast devices from the workstation, as a full mDNS querier does, until until(seen) holds.

        mdns_probe.py asks by multicast (QM, from port 5353) once a second and
        once by legacy unicast to each address in unicast. seen is
        {"multicast": addresses whose mDNS responses arrived by multicast,
        "unicast": those whose answers arrived by unicast}; until is checked
        on every answer and every 50 ms. Raises LabError if it does not hold
        within timeout.
        """
        argv = [self.python, str(MDNS_PROBE), "--ip", self.ws_ip, "--timeout", str(timeout + 5)]
        for ip in unicast:
            argv += ["--unicast", ip]
        probe = subprocess.Popen(self.ws_argv(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in probe.stdout], daemon=True)
        reader.start()
        seen: dict[str, set[str]] = {"multicast": set(), "unicast": set()}
        try:
            first = lines.get(timeout=10)
            if json.loads(first)["event"] != "listening":
                raise LabError(f"mDNS probe: {first}")
            probe.stdin.write("query\n")
            probe.stdin.flush()
            deadline = time.monotonic() + timeout
            while not until(seen):
                if time.monotonic() > deadline:
                    raise LabError(f"mDNS probe: condition not met after {timeout:g} s; seen {seen}")
                try:
                    line = lines.get(timeout=0.05)
                except queue.Empty:
                    continue
                event = json.loads(line)
                if event["event"] == "answer":
                    seen[event["via"]].add(event["from"])
            return seen
        except (ValueError, queue.Empty) as e:
            raise LabError(f"mDNS probe failed ({e}): {probe.stderr.read() if probe.poll() is not None else ''}") from None
        finally:
            if probe.poll() is None:
                probe.terminate()
            try:
                probe.wait(timeout=3)
            except subprocess.TimeoutExpired:
                probe.kill()
                probe.wait()

    def chromium_discovery(self, expect: dict | None = None, **kw):
        """Run a real Chromium in the workstation and report, device by device, what it did (see chromium.py)."""
        from tests.lab.chromium import chromium_discovery
        return chromium_discovery(self, expect, **kw)


_MC_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[3]))
for _ in range(3):
    s.sendto(sys.argv[4].encode(), (sys.argv[1], int(sys.argv[2])))
"""
