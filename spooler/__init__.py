"""spooler: a task spooler for GPU servers, the successor of GPU Task Spooler (``ts``).

The public API is :class:`Client` (``from spooler import Client``), the job states and the error
classes.  They are loaded on first use: ``ts`` imports this package on every call and must not
pay for what it does not need.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = [
    "Client",
    "DaemonUnavailable",
    "JobState",
    "RemoteError",
    "SpoolerError",
    "UsageError",
    "VersionMismatch",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from spooler.api import Client

        return Client
    if name == "JobState":
        from spooler.jobs import JobState

        return JobState
    if name in ("DaemonUnavailable", "RemoteError", "SpoolerError", "UsageError", "VersionMismatch"):
        from spooler import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'spooler' has no attribute {name!r}")
