"""The lab's stand-in for systemctl in the workstation: systemctl.sh, bind-mounted over /usr/bin/systemctl.

systemd cannot run in a namespace. One shim serves every unit the lab runs
(dnsmasq.service for dhcp.py, castwall-follow.timer and .service for
roaming.py); each part of the lab installs it (once) and then writes the
files that make its units known. Every call is logged to <lab>/systemctl.log.
"""

from __future__ import annotations

import shlex
from pathlib import Path

SHIM = Path(__file__).with_name("systemctl.sh")


def install_systemctl(lab) -> Path:
    """Bind-mount the lab's systemctl over the workstation's, unless that is done already; return its log."""
    shim, log = lab.dir / "systemctl", lab.dir / "systemctl.log"
    if not shim.exists():
        shim.write_text(SHIM.read_text().replace("@LAB@", shlex.quote(str(lab.dir))))
        shim.chmod(0o755)
        try:
            lab.ws(["mount", "--bind", str(shim), "/usr/bin/systemctl"], check=True)
        except BaseException:
            shim.unlink()
            raise
    return log
