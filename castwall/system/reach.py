"""Whether a TCP connection opens: the Cast channel Chrome opens once it has found a device."""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Callable, Sequence

from castwall.model import Address


def tcp_opens(targets: Sequence[tuple[Address, int]], timeout: float = 1.5,
              clock: Callable[[], float] = time.monotonic) -> dict[tuple[Address, int], str | None]:
    """Connect to every (address, port) at once; None where the connection opened, else why not.

    Nothing is sent: the connection is closed as soon as it opens.
    """
    result: dict[tuple[Address, int], str | None] = {}
    pending: dict[int, tuple[socket.socket, tuple[Address, int]]] = {}
    for target in dict.fromkeys(targets):
        ip, port = target
        sock = socket.socket(socket.AF_INET if ip.version == 4 else socket.AF_INET6, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((str(ip), port))
        if code in (0, errno.EINPROGRESS):
            pending[sock.fileno()] = (sock, target)
        else:
            result[target] = os.strerror(code).lower()
            sock.close()
    deadline = clock() + timeout
    try:
        while pending and (left := deadline - clock()) > 0:
            _, writable, _ = select.select([], [s for s, _ in pending.values()], [], left)
            for sock in writable:
                _, target = pending.pop(sock.fileno())
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                result[target] = None if code == 0 else os.strerror(code).lower()
                sock.close()
    finally:
        for sock, target in pending.values():
            result[target] = f"no answer within {timeout:g} s"
            sock.close()
    return result
