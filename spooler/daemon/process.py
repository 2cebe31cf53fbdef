"""Small process utilities shared by the daemon and the processes it starts (the launcher, a
shim, a compaction child): naming a process, dropping inherited descriptors, signalling a job.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_NAME = 15
try:  # loaded once in the daemon, so naming a shim costs nothing
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def name_process(name: bytes) -> None:
    """What ps and top show for this process (its comm), instead of the parent's name."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_NAME, name, 0, 0, 0)


def close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def kill_group(pgid: int, sig: int = signal.SIGTERM) -> bool:
    """Signal a job's whole process group; False when nothing of it is left."""
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True
