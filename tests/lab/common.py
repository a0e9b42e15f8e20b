"""What every part of the lab shares."""

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534  # the uid and gid the lab runs unprivileged things as (nobody, nogroup)


class LabError(RuntimeError):
    pass
