"""The workstation as the LAN's DHCP server: a real dnsmasq, and a client in a device (a part of Lab)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from tests.lab.systemctl import install_systemctl

if TYPE_CHECKING:
    from tests.lab import LabDevice

DHCP_CLIENT = Path(__file__).with_name("dhcp_client.py")


class DhcpServer:
    """Lab's DHCP server in the workstation, and the devices' lease requests."""

    def serve_dhcp(self, first: int = 200, last: int = 250) -> Path:
        """Run a real dnsmasq as the LAN's DHCP server in the workstation; return its drop-in directory.

        Its dynamic pool is .first-.last, away from the devices' addresses, so
        an address a device gets outside it can only come from a reservation.
        systemd does not run in a namespace, so the lab's stand-in systemctl
        (systemctl.sh) answers `systemctl is-active|restart dnsmasq.service`
        for castwall by restarting this dnsmasq (calls logged in systemctl.log). ufw lets in
        DHCP requests, as the admin of such a server would.
        """
        dropins = self.dir / "dnsmasq.d"
        dropins.mkdir(mode=0o755)
        (dropins / "00-lab.conf").write_text("# the admin's own file, which castwall must not touch\nlog-dhcp\n")
        argv = ["/usr/sbin/dnsmasq", "--conf-file=/dev/null", f"--conf-dir={dropins}", "--port=0", "--interface=eth0",
                "--bind-interfaces", f"--dhcp-range={self.subnet}.{first},{self.subnet}.{last},255.255.255.0,1h",
                f"--dhcp-leasefile={self.dir / 'dnsmasq.leases'}", "--pid-file=/run/lab-dnsmasq.pid",
                f"--log-facility={self.dir / 'dnsmasq.log'}", "--user=root"]
        (self.dir / "dnsmasq.cmd").write_text(shlex.join(argv) + "\n")
        install_systemctl(self)
        self.ws(["systemctl", "restart", "dnsmasq.service"], check=True)
        self.ufw("allow", "in", "on", "eth0", "to", "any", "port", "67", "proto", "udp", check=True)
        return dropins

    def systemctl_calls(self) -> list[str]:
        path = self.dir / "systemctl.log"
        return path.read_text().splitlines() if path.exists() else []

    def dhcp_lease(self, dev: LabDevice) -> dict:
        """Ask for a lease from the device's namespace with its MAC (DISCOVER, OFFER, REQUEST, ACK)."""
        done = self._sh("ip", "netns", "exec", dev.ns, self.python, str(DHCP_CLIENT), "--iface", "eth0",
                        "--mac", dev.mac, timeout=30)
        return json.loads(done.stdout)
