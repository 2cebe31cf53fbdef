"""Time limits (``--time``): a timer per running job that has one, a kill when it fires.

Armed when a job enters the running registry (started here, or adopted after a restart, so the
limit counts from the job's real start whatever happened to the daemon) and cancelled when it
leaves.  At the limit the job is marked ``timed_out`` (saved, so a daemon that dies before the
job ends still knows) and its process group gets SIGTERM, then SIGKILL after ``TS_KILL_GRACE``;
it then ends in the state ``timeout`` (``events``).  A timer, not a polling tick: an idle daemon
with limited jobs running does nothing until one is due.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from spooler.daemon.running import RunningJobs
from spooler.daemon.table import JobTable
from spooler.jobs import Job, JobState

log = logging.getLogger("spooler")

# stop(job, signal, escalate): signal a running job (once its pid is known); False if none is left
Stop = Callable[[Job, int, bool], bool]


class TimeLimits:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: JobTable,
        running: RunningJobs,
        stop: Stop,
        clock: Callable[[], float],
    ) -> None:
        self.loop = loop
        self.table = table
        self.running = running
        self.stop = stop
        self.clock = clock
        self._timers: dict[int, asyncio.TimerHandle] = {}
        running.on_enter.append(self.arm)
        running.on_leave.append(self.disarm)

    def arm(self, job: Job) -> None:
        deadline = job.deadline()
        if deadline is None:
            return  # (one that timed out under an earlier daemon is stopped again at once: that
            # daemon's SIGKILL after the grace period died with it)
        self.disarm(job)
        delay = max(0.0, deadline - self.clock())
        self._timers[job.id] = self.loop.call_later(delay, self._reached, job)

    def disarm(self, job: Job) -> None:
        timer = self._timers.pop(job.id, None)
        if timer is not None:
            timer.cancel()

    def _reached(self, job: Job) -> None:
        self._timers.pop(job.id, None)
        if job not in self.running or job.state is not JobState.RUNNING:
            return
        log.info("job %d reached its time limit (%d s): stopping it", job.id, job.time_limit or 0)
        job.timed_out = True
        self.table.record(job)
        if not self.stop(job, signal.SIGTERM, True):
            log.info("job %d had no process left to stop", job.id)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
