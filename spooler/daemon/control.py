"""The user's control over a job's life: hold, release and edit a queued job (``--hold``,
``--release``, ``--edit``), pause and resume a running one (``--pause``, ``--resume``).

A held job stays in the queue at its place (so ``-u``, ``-U`` and ``--priority`` still move it)
but the scheduler passes over it, and jobs that depend on it wait, since it has not ended.

A paused job's process group is stopped (SIGSTOP) and stays in the running registry: it keeps
its slots and its GPUs, whose memory it still holds.  Its time limit is disarmed while it is
paused (``Job.deadline`` leaves the paused time out), so a limit counts running time only.  Its
state is saved, so a daemon that restarts adopts it paused and can resume it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from spooler.commands import needs_shell
from spooler.daemon.limits import TimeLimits
from spooler.daemon.table import JobTable
from spooler.jobs import Job, JobState
from spooler.protocol import E_INVALID, RequestError

# signal_group(process group, signal): False when nothing is left in it
SignalGroup = Callable[[int, int], bool]


class JobControl:
    def __init__(
        self,
        table: JobTable,
        limits: TimeLimits,
        signal_group: SignalGroup,
        kick: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.table = table
        self.limits = limits
        self.signal_group = signal_group
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

    def edit(self, job: Job, command: list[str] | None, label: str | None, priority: int | None) -> None:
        """Change what a job that has not started will run; one that has started is left as it is."""
        if not job.state.is_waiting:
            raise RequestError(E_INVALID, f"job {job.id} has started (it is {job.state.value}): not changed")
        if command is not None:
            job.command = command
            job.shell = needs_shell(command)
        if label is not None:
            job.label = label or None
        if priority is not None and priority != job.priority:
            self.table.queue.set_priority(job, priority)
        self.table.save(job)
        self.kick()

    def pause(self, job: Job) -> None:
        if job.slurm_id:
            raise RequestError(E_INVALID, f"job {job.id} runs in SLURM: --pause is not available there")
        if job.state is not JobState.RUNNING:
            raise RequestError(E_INVALID, f"job {job.id} is not running (it is {job.state.value})")
        if not job.pid:
            raise RequestError(E_INVALID, f"job {job.id} is starting: its process is not known yet")
        if not self.signal_group(job.pid, signal.SIGSTOP):
            raise RequestError(E_INVALID, f"job {job.id} has no process left to pause")
        job.transition(JobState.PAUSED, self.clock())
        self.limits.disarm(job)
        self.table.save(job)

    def resume(self, job: Job) -> None:
        if job.state is not JobState.PAUSED:
            raise RequestError(E_INVALID, f"job {job.id} is not paused (it is {job.state.value})")
        self.continued(job)
        self.table.save(job)

    def continued(self, job: Job) -> None:
        """SIGCONT a paused job: resumed, or signalled (``-k``) and so it must run to act on it."""
        if job.pid:
            self.signal_group(job.pid, signal.SIGCONT)
        job.transition(JobState.RUNNING, self.clock())
        self.limits.arm(job)
