"""Jobs started by an earlier daemon: adopt the ones still running, notice when they end.

A job's shim is a child of the daemon that started it, so a new daemon cannot wait for it.
It watches the shim through a pidfd instead (readable once the process has exited) and then
reads the exit status the shim recorded.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from spooler.jobs import Job


def same_process(pid: int, started: float | None) -> bool:
    """Is ``pid`` still the shim we started (and not a new process that reused the pid)?"""
    try:
        import psutil

        created = psutil.Process(pid).create_time()
    except Exception:  # gone, or not ours to inspect
        return False
    return started is None or abs(created - started) < 5.0


class Adoption:
    def __init__(self, loop: asyncio.AbstractEventLoop, ended: Callable[[int], None]) -> None:
        self.loop = loop
        self.ended = ended  # called with the job id once its shim has exited
        self._pidfds: dict[int, int] = {}  # pidfd -> job id

    def adopt(self, job: Job) -> bool:
        """Watch a running job's shim; False when it is gone (or is no longer our shim)."""
        if not job.shim_pid or not same_process(job.shim_pid, job.start_time):
            return False
        try:
            pidfd = os.pidfd_open(job.shim_pid)
        except OSError:
            return False
        self._pidfds[pidfd] = job.id
        self.loop.add_reader(pidfd, self._exited, pidfd)
        return True

    @staticmethod
    def gone(pid: int | None) -> bool:
        """No process has this pid (so a job that had it cannot still be running)."""
        if not pid:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _exited(self, pidfd: int) -> None:
        self.loop.remove_reader(pidfd)
        os.close(pidfd)
        self.ended(self._pidfds.pop(pidfd))

    def close(self) -> None:
        """Stop watching; the jobs keep running and the next daemon adopts them."""
        for pidfd in list(self._pidfds):
            self.loop.remove_reader(pidfd)
            os.close(pidfd)
        self._pidfds.clear()
