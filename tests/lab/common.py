"""What every part of the lab shares."""

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(RuntimeError):
    pass
