"""Starting jobs: one scheduling pass after anything that may let a job start, and the start itself.

Every event that may let a job start calls :meth:`Dispatcher.kick`, which runs one pass on the
next turn of the event loop (many events, one pass).  The pass asks the pure scheduler
(``scheduler.plan``) what to do and applies it: skip, wait for GPUs, or start, which builds the
launch (``launcher.spec``) and hands it to the launcher.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from spooler.daemon import scheduler
from spooler.daemon.events import Events
from spooler.daemon.fairshare import Limits, usage_of
from spooler.daemon.gpus.leases import Lease
from spooler.daemon.gpus.manager import GpuManager
from spooler.daemon.gpus.placement import GpuPool
from spooler.daemon.launcher.spec import Launch, environment, place_output
from spooler.daemon.outcome import result_path
from spooler.daemon.queues import Queue
from spooler.daemon.running import RunningJobs
from spooler.daemon.spare_logs import MAX_SPARES, SpareLogs
from spooler.daemon.table import JobTable
from spooler.daemon.terminals import Terminals, close_pair
from spooler.jobs import Job, JobState


class Backend(Protocol):
    """Where jobs are started: the local launchers (``launcher.pool.LauncherPool``), SLURM
    (``slurm.backend.SlurmBackend``), or a fake."""

    def start(self) -> None: ...

    def launch(
        self, spec: Launch, terminal: tuple[int, int] | None = None, keep: Sequence[int] = ()
    ) -> None: ...

    def close(self) -> None: ...


class Dispatcher:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: JobTable,
        running: RunningJobs,
        gpu: GpuManager,
        events: Events,
        terminals: Terminals,
        runs_dir: str,
        clock: Callable[[], float],
    ) -> None:
        self.loop = loop
        self.table = table
        self.running = running
        self.gpu = gpu
        self.events = events
        self.terminals = terminals
        self.runs_dir = runs_dir
        self.clock = clock
        self.backend: Backend | None = None  # set once the daemon has started it
        self.space_waiters: deque[Callable[[], bool]] = deque()  # submitters blocked on a full queue
        self._kicked = False
        self.policy = "backfill"  # see scheduler: backfill, greedy or fcfs
        self.earmarked: dict[int, int] = {}  # GPU index -> the job it is held for (last pass)
        self.user_limits: Limits | None = None  # a multi-user daemon's: per-user limits, fair share
        self.over_limit: set[int] = set()  # jobs whose reason is their user's limit (last pass)
        self.spare_logs = SpareLogs()  # log files made ahead for the next starts
        self._spare_would_do = False  # this pass started a job whose log could be a spare
        # The queues whose jobs this pass starts (None: every queue), where another backend
        # runs the others (``backends``: a queue bound to SLURM).
        self.takes: Callable[[str | None], bool] | None = None

    def kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            self.loop.call_soon(self.schedule)

    def schedule(self) -> None:
        self._kicked = False
        now = self.clock()
        settings = self.table.settings
        jobs: Iterable[Job] = self.table.queue
        waiting = self.table.queue.per_queue
        named: Iterable[Queue] = settings.queues.values()
        takes = self.takes
        if takes is not None:  # the other queues' jobs are another backend's
            jobs = (job for job in jobs if takes(job.queue))
            waiting = {name: count for name, count in waiting.items() if takes(name)}
            named = [queue for queue in named if takes(queue.name)]
        decisions = scheduler.plan(
            jobs,
            free_slots=settings.slots - self.running.busy_in(None),
            total_slots=settings.slots,
            outcome=self.table.dependency_outcome,
            gpus=lambda: self.gpu.pool(self.running),  # NVML is read only if a GPU job is reached
            now=now,
            policy=self.policy,
            queues={
                queue.name: (queue.slots - self.running.busy_in(queue.name), queue.slots) for queue in named
            },
            waiting=waiting,
            limits=self.user_limits,
            usage=usage_of(self.running) if self.user_limits is not None else None,
        )
        earmark = decisions.earmark
        self.earmarked = {i: earmark.job.id for i in earmark.gpus} if earmark else {}
        for job, reason in decisions.skip:
            self.events.end(job, JobState.SKIPPED, reason, at=now)
        for job, reason in decisions.allocating:
            self._allocating(job, reason, now)
        self._note_over_limit(decisions.over_limit)
        lease_lost = False
        pool = decisions.gpus
        for job, gpus in decisions.start:
            leases: list[Lease] = []
            if gpus and isinstance(pool, GpuPool):
                job.gpu_free_at_start = pool.least_free(gpus)
                taken = self.gpu.lease(job, pool.uuids(gpus))
                if isinstance(taken, str):  # another daemon was quicker: try again at the next poll
                    self._allocating(job, taken, now)
                    lease_lost = True
                    continue
                leases = taken
            self._start(job, now, gpus, leases)
        # Poll NVML only while a job waits for GPUs (a pass that stopped short of one is re-run
        # when a slot frees, so it is not forgotten).  Not a scan of the queue: cost stays flat.
        self.gpu.poll(bool(decisions.allocating) or lease_lost, self.kick)
        self._prepare_logs()
        while self.space_waiters and self.space_waiters[0]():
            self.space_waiters.popleft()

    def _prepare_logs(self) -> None:
        """Log files for the next starts, made once this pass's launches are out (while those
        jobs run), where one of them could have used one; none kept once nothing waits."""
        queued = len(self.table.queue)
        if self._spare_would_do and queued:
            count = min(queued, self.table.settings.slots, MAX_SPARES)
            self.loop.call_soon(self.spare_logs.refill, self.table.settings.logdir, count)
        elif not queued and self.spare_logs:
            self.spare_logs.drop()
        self._spare_would_do = False

    def _note_over_limit(self, over: list[tuple[Job, str]]) -> None:
        """A job over its user's limit shows why (-i, -M); the reason goes once it no longer is
        (only the jobs marked last pass are looked at, never the whole queue)."""
        for job, reason in over:
            if job.reason != reason:  # saved only when it changes
                job.reason = reason
                self.table.record(job)
        now_over = {job.id for job, _ in over}
        for job_id in self.over_limit - now_over:
            was_over = self.table.jobs.get(job_id)
            if was_over is not None and was_over.state.is_waiting and "_per_user = " in was_over.reason:
                was_over.reason = ""
                self.table.record(was_over)
        self.over_limit = now_over

    def _allocating(self, job: Job, reason: str, now: float) -> None:
        if job.state is JobState.QUEUED:
            job.transition(JobState.ALLOCATING, now)
        if job.reason != reason:  # saved only when it changes, not at every GPU poll
            job.reason = reason
            self.table.record(job)

    def _start(self, job: Job, now: float, gpus: list[int], leases: list[Lease]) -> None:
        if job.skip_if_exists and os.path.exists(os.path.join(job.cwd, job.skip_if_exists)):
            for lease in leases:
                lease.release()
            self.events.end(job, JobState.SKIPPED, f"{job.skip_if_exists} exists (--skip-if-exists)", at=now)
            return
        self.table.queue.remove(job)
        # Remember how its dependencies ended: a retry must see the same even if they are
        # removed (ts -C, TS_MAXFINISHED) while it runs.
        for dep in (*job.after, *job.after_ok):
            if dep in self.table.jobs:
                job.dep_outcomes[dep] = self.table.jobs[dep].succeeded
        job.assigned_gpus = gpus
        terminal = self.terminals.take(job.id)
        results = result_path(self.runs_dir, job.id)
        settings = self.table.settings
        env = environment(self.table.env_of(job), settings.env_overrides, job, results)
        spec = Launch(
            job.id,
            job.command,
            job.shell,
            job.cwd,
            env,
            results,
            compress=job.gzip and job.store_output,
            uid=job.uid,
            umask=job.umask,
        )
        place_output(spec, job, settings.logdir, terminal is not None, self.spare_logs)
        generated = spec.exclusive and spec.stdout_path is not None  # not -n, -nf, -O
        self._spare_would_do |= spec.precreated or (generated and job.uid is None and not job.gzip)
        if job.uid is not None and job.uid != os.geteuid() and job.log_path:
            # A user's job cannot write in the daemon's directory: its result goes beside its log.
            spec.result_path = spec.env["TS_RESULT_FILE"] = result_path(self.runs_dir, job.id, job.log_path)
        assert self.backend is not None, "jobs start only once the daemon has started its launcher"
        job.transition(JobState.RUNNING, now)
        job.pid = job.shim_pid = None  # known when the launcher reports in
        # Recorded before the launch is sent: a daemon that dies after sending it must leave a
        # job the next daemon looks for in the launchers' logs, never one it starts again.  (On
        # a full disk the record is missed and the queue goes on, as everywhere: a daemon that
        # then dies at this very moment may start the job again.)
        self.table.record(job)
        try:
            self.backend.launch(spec, terminal, [fd for lease in leases for fd in lease.fds])
        except OSError as exc:  # no launcher could be started: the job waits for the next pass
            for lease in leases:
                lease.release()
            self.events.unstarted(job, f"could not be handed to a launcher: {exc}", kick=False)
            self.loop.call_later(1.0, self.kick)  # not at once: that would spin
            return
        except BaseException:
            for lease in leases:
                lease.release()
            raise
        finally:
            close_pair(terminal)
            for lease in leases:  # the launcher holds them now, until the job ends
                lease.close()
        # Only now: a launcher replaced during the launch must not count it among its own.
        self.running.add(job)
        self.table.last_run = job.id
