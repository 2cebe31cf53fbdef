"""Every way a job ends, and everything that follows, in one place.

A job ends by :meth:`Events.end`: finished (its process exited), skipped (it never ran) or lost
(its outcome cannot be known).  That one method takes it out of the running registry or the
queue, records the outcome, and then either gives it another attempt (``--retry``) or emits the
end: ``TS_ONFINISH``, ``-m`` mail and ``--notify`` (``on_end``), the waiters (``ts -w``,
``-f``), forgetting the oldest ended jobs (``TS_MAXFINISHED``) and a scheduling pass (its
dependants may start now).  What a user's removal of a job must do is here too, so an ended and
a removed job wake the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from spooler.daemon.hooks import Helpers
from spooler.daemon.launcher.spec import environment
from spooler.daemon.outcome import cuda_out_of_memory, disk_full, read_result, result_path
from spooler.daemon.running import RunningJobs
from spooler.daemon.table import JobTable
from spooler.daemon.terminals import Terminals
from spooler.daemon.waiters import Waiters
from spooler.durations import format_duration
from spooler.jobs import Job, JobState

log = logging.getLogger("spooler")


class Events:
    def __init__(
        self,
        table: JobTable,
        running: RunningJobs,
        waiters: Waiters,
        terminals: Terminals,
        helpers: Helpers,
        runs_dir: str,
        kick: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.table = table
        self.running = running
        self.waiters = waiters
        self.terminals = terminals
        self.helpers = helpers
        self.runs_dir = runs_dir
        self.kick = kick
        self.clock = clock
        self.snapshots_root = ""  # where ts --snapshot copies live: removed with their last job
        self.on_end: list[Callable[[Job], None]] = []  # told of every end (not of a retry)

    def end(
        self,
        job: Job,
        state: JobState,
        reason: str = "",
        *,
        code: int | None = None,
        sig: int | None = None,
        at: float | None = None,
        retry: bool = True,
    ) -> None:
        """The one way into a done state (``FINISHED`` with ``code``/``sig``, ``SKIPPED``, ``LOST``;
        a job that ``FINISHED`` after its time limit fired ends as ``TIMEOUT``).  ``retry``:
        False where another attempt could run beside this one, which may still run."""
        if job in self.running:
            self.running.remove(job)
        elif job.state.is_waiting:
            self.table.queue.remove(job)
        if state is JobState.FINISHED and job.timed_out:
            state = JobState.TIMEOUT
            reason = "; ".join(
                filter(None, [f"reached its time limit ({format_duration(job.time_limit or 0)})", reason])
            )
        job.transition(state, at or self.clock())
        job.reason = reason
        if state is JobState.LOST and retry and self._retries(job):
            self._retry(job)  # its process is gone (that is how it was found lost): run it again
            return
        if state in (JobState.FINISHED, JobState.TIMEOUT):
            self._outcome(job, code, sig)
            if self._retries(job):
                self._retry(job)
                return
            # Hooks run as the daemon's user: never for a job a shared daemon runs for someone
            # else (their TS_ONFINISH would run as root; their log could be a link to any file).
            if job.uid is None or job.uid == os.geteuid():
                env = self.job_env(job)
                self.helpers.on_finish(job, env)
                if job.mail:
                    self.helpers.mail(job, env)
        for observer in self.on_end:
            observer(job)
        self.terminals.close(job.id)
        forget = self.table.ended(job)
        self.waiters.ended(job.id, job)
        for old in forget:
            self.removed(old)
        self.kick()

    @staticmethod
    def _retries(job: Job) -> bool:
        """--retry: a failed or lost attempt runs again, unless the user killed it; a timed-out
        one only with --retry-timeout."""
        if job.killed or job.attempt > job.max_retries:
            return False
        if job.state is JobState.LOST:  # its launcher died: how it ended is unknown
            return True
        if job.state is JobState.TIMEOUT:
            return job.retry_timeout
        return job.exit_code != 0

    def _outcome(self, job: Job, code: int | None, sig: int | None) -> None:
        job.exit_code, job.signal = code, sig
        if code is None and sig is None:
            job.exit_code = 255
        # Keep the JSON the job wrote to $TS_RESULT_FILE (usable in --where as result.*).
        shared = job.uid is not None and job.uid != os.geteuid()  # a shared daemon's job of a user
        path = result_path(self.runs_dir, job.id, job.log_path if shared else None)
        job.result, problem = read_result(path, owner=job.uid if shared else None)
        notes = [job.reason, problem]
        if job.log_path and disk_full(job.log_path):
            notes.append("the disk holding its output is full: output may be cut")
        if job.assigned_gpus and job.exit_code != 0 and job.log_path:
            errors = job.log_path + ".e" if job.stderr_apart else None
            if cuda_out_of_memory(job.log_path, errors):
                notes.append("CUDA ran out of GPU memory (its output says so)")
                # A retry waits for a GPU with at least the memory this attempt started with.
                job.oom_free_mib = job.gpu_free_at_start
        job.reason = "; ".join(filter(None, notes))

    def _retry(self, job: Job) -> None:
        """--retry: put a job that failed back at its place in the queue for another attempt."""
        job.archive_attempt()
        job.transition(JobState.QUEUED, self.clock())
        job.attempt += 1
        job.log_path = None
        self.table.requeued(job, new_seq=False)
        self.table.record(job)
        self.kick()

    def unstarted(self, job: Job, why: str, *, kick: bool = True) -> None:
        """A job recorded as started whose launch never reached a launcher: it never ran, so it
        goes back to its place in the queue (not lost, and not run twice)."""
        self.running.remove(job)
        log.warning("job %d %s; it waits again", job.id, why)
        job.transition(JobState.QUEUED, self.clock())
        job.log_path = None
        self.table.requeued(job, new_seq=False)
        self.table.record(job)
        if kick:
            self.kick()

    def removed(self, job: Job) -> None:
        """Forget a job that is not running (``ts -r``, ``-C``, TS_MAXFINISHED): its waiters are
        told it was removed, and its snapshot goes with the last job using it."""
        self.table.delete(job)
        # A multi-user daemon's jobs keep their snapshots in their owner's own directory: the
        # owner removes them (root removing in a directory a user controls invites link tricks).
        if job.snapshot and job.uid is None and not self.table.snapshot_in_use(job.snapshot):
            self._remove_snapshot(job.snapshot)
        self.terminals.close(job.id)
        self.waiters.ended(job.id, None)
        self.kick()

    def _remove_snapshot(self, path: str) -> None:
        """Removed by a helper process, never in the event loop (a snapshot may be large)."""
        root = os.path.realpath(self.snapshots_root)
        if os.path.realpath(path).startswith(root + os.sep):
            self.helpers.spawn(["/bin/rm", "-rf", "--", path], {}, "/")
        else:
            log.warning("not removing %s: it is outside %s", path, root)

    def job_env(self, job: Job) -> dict[str, str]:
        """The environment hooks and mail run with: the job's own, as it was started."""
        return environment(self.table.env_of(job), self.table.settings.env_overrides, job, "")
