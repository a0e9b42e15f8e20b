"""The one error type that crosses into the CLI, and the exit codes it maps to."""

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes; the man page and README list the same table."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    ATTENTION = 3
    NEED_ROOT = 4
    MISSING_TOOL = 5
    FIREWALL_FAILED = 6
    FIREWALL_INCONSISTENT = 7
    BAD_DATA = 8
    NOT_FOUND = 9
    BUSY = 10
    DECLINED = 11
    NETWORK = 12
    INTERRUPTED = 130


class CastwallError(Exception):
    """A failure with a message fit for the user and an exit code."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(CastwallError):
    exit_code = ExitCode.USAGE


class NeedRoot(CastwallError):
    exit_code = ExitCode.NEED_ROOT


class MissingTool(CastwallError):
    exit_code = ExitCode.MISSING_TOOL


class ToolFailed(CastwallError):
    """An external command failed or answered in a way castwall does not understand."""

    exit_code = ExitCode.FIREWALL_FAILED


class FirewallRolledBack(CastwallError):
    """A change failed part way; every step done in this run was undone."""

    exit_code = ExitCode.FIREWALL_FAILED


class FirewallInconsistent(CastwallError):
    """A change failed and undoing it failed too; the message lists what remains."""

    exit_code = ExitCode.FIREWALL_INCONSISTENT


class BadData(CastwallError):
    """A system file or command output castwall depends on is unusable."""

    exit_code = ExitCode.BAD_DATA


class NotFound(CastwallError):
    exit_code = ExitCode.NOT_FOUND


class Busy(CastwallError):
    exit_code = ExitCode.BUSY


class Declined(CastwallError):
    exit_code = ExitCode.DECLINED


class NetworkUnavailable(CastwallError):
    exit_code = ExitCode.NETWORK


class Interrupted(CastwallError):
    exit_code = ExitCode.INTERRUPTED
