"""How the daemon learns that jobs started and ended: the launcher's reports, the exit logs, and
the jobs an earlier daemon started, adopted until they end.

Jobs end here only through :meth:`spooler.daemon.events.Events.end`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

from spooler.daemon.events import Events
from spooler.daemon.launcher import exits
from spooler.daemon.launcher.exits import decode_wait_status
from spooler.daemon.recovery import Adoption
from spooler.daemon.running import RunningJobs
from spooler.daemon.table import JobTable
from spooler.daemon.waiters import Waiters
from spooler.jobs import Job, JobState

STATUS_WAIT_TRIES = 250  # 5 s in steps of 20 ms
# signal(job, signal, escalate): signal a running job's process group
Signal = Callable[[Job, int, bool], bool]


class Reaper:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: JobTable,
        running: RunningJobs,
        events: Events,
        waiters: Waiters,
        runs_dir: str,
        signal: Signal,
        adoption: Adoption | None = None,
    ) -> None:
        self.loop = loop
        self.table = table
        self.running = running
        self.events = events
        self.waiters = waiters
        self.runs_dir = runs_dir
        self.signal = signal
        self.adoption = adoption or Adoption(loop, self.adopted_exited)
        self._reported_shims: set[int] = set()  # -z shims whose job's end was reported

    def _collect(self, job: Job, logs: exits.Logs | None = None) -> exits.Exit | None:
        """How this run of the job ended, from the launchers' logs; None if not recorded."""
        found = logs if logs is not None else exits.read(self.runs_dir)
        return exits.find(found, job.id, job.shim_pid, job.start_time)

    def _finish(self, job: Job, wait_status: int, reason: str = "", end: float | None = None) -> None:
        code, sig = decode_wait_status(wait_status)
        self.events.end(job, JobState.FINISHED, reason, code=code, sig=sig, at=end)

    def note(self, note: list[Any]) -> None:
        """A report from the launcher or a shim (see spooler.daemon.launcher.handle)."""
        kind, job_id, shim_pid = note[0], note[1], note[2]
        if kind == "reaped" and shim_pid in self._reported_shims:
            self._reported_shims.discard(shim_pid)  # its job's end was reported already
            return
        job = self.running.get(job_id)
        if job is None or job.shim_pid not in (None, shim_pid) or self.running.is_adopted(job.id):
            return  # an earlier attempt's late report, or a job adopted from an earlier daemon
        if kind == "started":
            job.shim_pid, job.pid = shim_pid, note[3] or None
            self.table.record(job)  # where the next daemon finds it if this one dies
            self.waiters.started(job.id, job)
            pending = self.running.pending_kill(job)
            if pending is not None and job.pid:
                self.signal(job, *pending)
        elif kind == "ended":
            if job.gzip and job.store_output and shim_pid:
                # A -z job's shim is reaped after it reports: that report must not end the next
                # attempt of a retried job, launched meanwhile.
                self._reported_shims.add(shim_pid)
            self._finish(job, int(note[3]), str(note[4] or ""), float(note[5]))
        elif kind == "reaped":  # the shim died without reporting the end
            record = self._collect(job)
            if record is not None:
                self._finish(job, record.wait_status, record.error, record.end)
            else:
                code, sig = decode_wait_status(int(note[3]))
                reason = f"its supervising process ended unexpectedly ({code or sig})"
                self.events.end(job, JobState.FINISHED, reason)

    def recover(self, job: Job, logs: exits.Logs | None = None) -> None:
        """A job whose launcher's reports will not come (an earlier daemon started it, or the
        launcher died): collect its end, adopt it, put it back in the queue, or mark it lost.

        ``logs`` must be settled (see ``exits.read_settled``): a launcher that may still start
        what it was sent would make a job without a start record look as if it never started.
        """
        logs = logs if logs is not None else exits.read(self.runs_dir)
        record = self._collect(job, logs)
        if record is not None:
            self.running.add(job)
            self._finish(job, record.wait_status, record.error, record.end)
            return
        start = exits.find_start(logs, job.id, job.shim_pid, job.start_time)
        if job.shim_pid is None:
            if start is None and not logs.settled:
                reason = "its launcher did not say whether it started it: it may run, so it is not run again"
                self.events.end(job, JobState.LOST, reason, retry=False)
                return
            if start is None:
                # The daemon died (or the launcher did) between recording the start and the
                # launcher starting it: it never ran.
                self.events.unstarted(job, "was being handed to the launcher when it or the daemon stopped")
                return
            if not start.pid:  # the launcher died in the middle of starting it
                reason = "its launcher died while starting it: it may have run, so it is not run again"
                self.events.end(job, JobState.LOST, reason, retry=False)
                return
            # Its start was never reported to (or recorded by) the daemon: the log knows it.
            job.shim_pid, job.pid = start.pid, start.job_pid or None
            self.table.record(job)
        if self.adoption.adopt(job):
            self.running.add(job, adopted=True)
        elif start is not None and exits.launcher_alive(start.launcher):
            # Gone, but its launcher lives: it records the end in a moment (it reaps, then writes).
            self.running.add(job, adopted=True)
            self.adopted_exited(job.id)
        else:
            # Wakes anyone waiting on it: its launcher may have died under this daemon.  Run
            # again (--retry) only if no process has its pid: one that is there but could not be
            # adopted (not recognised as ours) may be it, still running.
            reason = "was running when the daemon stopped, and its exit status was never recorded"
            self.events.end(job, JobState.LOST, reason, retry=self.adoption.gone(job.shim_pid))

    def launcher_lost(self, jobs: Collection[int] | None = None) -> None:
        """A launcher died (it should not): watch its orphaned jobs until they end.  ``jobs``:
        the ones it was sent, where several launchers run (None: every job started here)."""
        for job in self.running.launched_here():
            if jobs is None or job.id in jobs:
                self.running.remove(job)
                self.recover(job)

    def adopted_exited(self, job_id: int, tries: int = 0) -> None:
        job = self.running.get(job_id)
        if job is None or not self.running.is_adopted(job_id):
            return
        record = self._collect(job)
        if record is None and tries < STATUS_WAIT_TRIES:
            # The job's launcher (of an earlier daemon) writes the status file just after the
            # job's end, which is what woke us: give it a moment.
            self.loop.call_later(0.02, self.adopted_exited, job_id, tries + 1)
            return
        if record is not None:
            self._finish(job, record.wait_status, record.error, record.end)
        else:
            reason = "its launcher (or shim) died without recording an exit status"
            self.events.end(job, JobState.LOST, reason)

    def close(self) -> None:
        """Stop adopting: running jobs keep running in their own sessions."""
        self.adoption.close()
