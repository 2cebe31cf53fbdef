"""The user's control over a queued job's life: hold and release (``--hold``, ``--release``).

A held job stays in the queue at its place (so ``-u``, ``-U`` and ``--priority`` still move it)
but the scheduler passes over it, and jobs that depend on it wait, since it has not ended.
"""

from __future__ import annotations

from collections.abc import Callable

from spooler.daemon.table import JobTable
from spooler.jobs import Job, JobState
from spooler.protocol import E_INVALID, RequestError


class JobControl:
    def __init__(self, table: JobTable, kick: Callable[[], None], clock: Callable[[], float]) -> None:
        self.table = table
        self.kick = kick
        self.clock = clock

    def hold(self, job: Job) -> None:
        if job.state is JobState.HELD:
            return
        if not job.state.is_waiting:
            raise RequestError(E_INVALID, f"job {job.id} is not queued (it is {job.state.value})")
        job.transition(JobState.HELD, self.clock())
        job.reason = ""  # no longer waiting for GPUs: for the user to release
        self.table.save(job)
        self.kick()  # GPUs earmarked for it go to others

    def release(self, job: Job) -> None:
        if job.state is not JobState.HELD:
            raise RequestError(E_INVALID, f"job {job.id} is not held (it is {job.state.value})")
        job.transition(JobState.QUEUED, self.clock())
        self.table.save(job)
        self.kick()
