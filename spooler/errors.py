"""The one exception hierarchy.  Each error reaches the user as one line and an exit status."""

from __future__ import annotations


class SpoolerError(Exception):
    """Base class: ``str(err)`` is the line shown to the user, ``exit_status`` the code."""

    exit_status = 1


class UsageError(SpoolerError):
    """Bad command line: unknown flag, missing or malformed value."""

    exit_status = 2


class UnsafePathError(SpoolerError):
    """A socket or state path that another user could control."""


class DaemonUnavailable(SpoolerError):
    """No daemon answers and none could be started."""


class ConnectionLost(DaemonUnavailable):
    """The connection dropped before the reply came: the daemon died (or was stopped)."""


class BadConfigFile(DaemonUnavailable):
    """The daemon refused to start: its config file does not parse or holds a bad setting."""

    exit_status = 2


class DaemonDiedStarting(DaemonUnavailable):
    """The daemons ``ts`` started died before they served, without saying why (killed)."""


class VersionMismatch(SpoolerError):
    """Client and daemon speak different protocol versions."""


class RemoteError(SpoolerError):
    """The daemon refused a request; ``code`` is the protocol's error code."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class QueueFull(RemoteError):
    """``-B`` was given and the queue is at its limit (exit 2, as in the original)."""

    exit_status = 2


class PartlyQueued(RemoteError):
    """Only some jobs of a batch or sweep could be recorded (a full disk); ``ids`` are queued."""

    def __init__(self, message: str, ids: list[int]) -> None:
        super().__init__(message, "internal")
        self.ids = ids
