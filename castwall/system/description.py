"""The device description a DIAL reply names, fetched over HTTP within one deadline and one byte budget.

castwall.system.ssdp decides whether to fetch (only from the replier's own
address, on the subnet of the interface its reply came in on); this module
does the exchange and castwall.dial reads what came back. Nothing here
trusts the server: no redirect is followed, and a server that sends its
answer a byte at a time is cut off at the same deadline as a silent one.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
from typing import Callable

from castwall import __version__
from castwall.dial import DESCRIPTION_PORT, MAX_DESCRIPTION
from castwall.sanitize import safe_text

FETCH_TIMEOUT = 1.0  # for one description: the whole exchange, connect to the last byte
MAX_HEAD = 16 * 1024  # bytes of status line and headers a description's answer may take


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every wait ends at one deadline and whose reads count against one byte budget.

    http.client reads the status line and headers a line at a time: a socket
    timeout alone lets a server that drips one byte a second hold a fetch for
    ever. Here each call gets only the time left of the whole exchange.
    """

    deadline: float = 0.0
    budget: int = 0
    clock: Callable[[], float] = time.monotonic

    def _arm(self) -> None:
        left = self.deadline - self.clock()
        if left <= 0:
            raise TimeoutError("the fetch's deadline passed")
        self.settimeout(left)

    def connect(self, address) -> None:
        self._arm()
        super().connect(address)

    def sendall(self, data, flags: int = 0) -> None:
        self._arm()
        super().sendall(data, flags)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        got = super().recv_into(buffer, nbytes, flags)
        self.budget -= got
        if self.budget < 0:
            raise _TooLarge()
        return got


class _TooLarge(OSError):
    pass


class _Connection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, deadline: float, clock: Callable[[], float]):
        super().__init__(host, port)
        self.deadline, self.clock = deadline, clock

    def connect(self) -> None:
        sock = _DeadlineSocket(socket.AF_INET, socket.SOCK_STREAM)
        sock.deadline, sock.clock, sock.budget = self.deadline, self.clock, MAX_DESCRIPTION + MAX_HEAD
        try:
            sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def fetch_description(ip: ipaddress.IPv4Address, path: str, timeout: float = FETCH_TIMEOUT,
                      clock: Callable[[], float] = time.monotonic, port: int = DESCRIPTION_PORT) -> tuple[bytes, str | None]:
    """GET path from ip's port 8008: the body and the Application-URL header.

    No redirect is followed; the whole exchange (connect, status line,
    headers, body) must end within timeout and bring at most MAX_DESCRIPTION
    bytes of body. Raises ValueError, saying why not.
    """
    too_large = ValueError(f"its description is larger than {MAX_DESCRIPTION // 1024} KiB")
    conn = _Connection(str(ip), port, clock() + timeout, clock)
    try:
        conn.request("GET", path, headers={"Host": f"{ip}:{port}", "User-Agent": f"castwall/{__version__}",
                                           "Accept": "application/xml, text/xml"})
        response = conn.getresponse()
        if response.status != 200:
            raise ValueError(f"its description answered HTTP {response.status}, not 200 (castwall follows no redirect)")
        length = (response.getheader("Content-Length") or "").strip()
        if length.isascii() and length.isdigit() and (len(length) > 9 or int(length) > MAX_DESCRIPTION):
            raise too_large
        body = bytearray()
        while chunk := response.read1(8192):
            body += chunk
            if len(body) > MAX_DESCRIPTION:
                raise too_large
        return bytes(body), response.getheader("Application-URL")
    except _TooLarge:
        raise too_large from None
    except (socket.timeout, TimeoutError):
        raise ValueError(f"its description did not arrive within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        what = safe_text(getattr(exc, "strerror", None) or exc, 80) or type(exc).__name__
        raise ValueError(f"its description could not be fetched from {ip}:{port} ({what})") from None
    finally:
        conn.close()
