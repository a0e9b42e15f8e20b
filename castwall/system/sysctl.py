"""The kernel's local port range, which answers to Chrome's discovery arrive on."""

from pathlib import Path

from castwall.errors import BadData
from castwall.model import PortRange

PORT_RANGE_PATH = Path("/proc/sys/net/ipv4/ip_local_port_range")


def parse_port_range(text: str, source: str = "port range") -> PortRange:
    """Parse the two whitespace-separated integers of ip_local_port_range.

    Raises BadData for anything but two integers in 1-65535 with low <= high.
    """
    fields = text.split()
    if len(fields) != 2 or not all(f.isascii() and f.isdigit() for f in fields):
        raise BadData(f"{source}: expected two port numbers, found {text.strip()[:40]!r}")
    try:
        return PortRange(int(fields[0]), int(fields[1]))
    except ValueError as exc:
        raise BadData(f"{source}: {exc}") from None


def read_port_range(path: Path = PORT_RANGE_PATH) -> PortRange:
    """Read and validate the local port range.

    Raises BadData when the file is missing, unreadable or malformed.
    """
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise BadData(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_port_range(text, str(path))
