"""The daemon core: the parts that hold a job's life, wired together, and the user's actions.

Where a job is ...
- queued: :meth:`Spooler.submit`, into the job table (``table``: persisted, over ``store``);
- scheduled and launched: ``dispatch`` (the pure policy is ``scheduler``; GPUs are ``gpus``),
  through the launcher (``launcher``);
- running: ``running``, the one registry of running jobs and slot use;
- reaped: ``reaper`` (the launcher's reports, exit logs, adoption), ending through ``events``,
  the one place for what follows a job's end.

The request handlers (``handlers``) call the methods here; the server (``server``) knows none
of it.  The clock, the launcher and the adoption of earlier jobs can be injected, so the
in-process tests drive this core in milliseconds without processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping

from spooler.commands import needs_shell
from spooler.daemon.caller import Caller
from spooler.daemon.config import StartupConfig
from spooler.daemon.control import JobControl
from spooler.daemon.dispatch import Backend, Dispatcher
from spooler.daemon.events import Events
from spooler.daemon.gpus.manager import GpuManager
from spooler.daemon.hooks import Helpers, find_sendmail
from spooler.daemon.launcher import exits
from spooler.daemon.launcher.pool import LauncherPool
from spooler.daemon.limits import TimeLimits
from spooler.daemon.notify import Notifier
from spooler.daemon.process import kill_group
from spooler.daemon.queues import Queue
from spooler.daemon.reaper import Reaper
from spooler.daemon.recovery import Adoption
from spooler.daemon.running import RunningJobs
from spooler.daemon.slurm.backend import SlurmBackend
from spooler.daemon.slurm.dispatch import SlurmDispatcher
from spooler.daemon.slurm.tools import Tools
from spooler.daemon.table import JobTable, ensure_dirs
from spooler.daemon.terminals import Terminals
from spooler.daemon.waiters import Waiters
from spooler.daemon.wakeups import Wakeups
from spooler.jobs import Job, JobState
from spooler.protocol import E_INTERNAL, E_INVALID, E_NOT_FOUND, E_QUEUE_FULL, RequestError
from spooler.protocol.requests import Submit

log = logging.getLogger("spooler")

# A --begin time this much in the past is refused; less is the time the request took to arrive.
BEGIN_SLACK = 60.0

# (reaper.note, reaper.launcher_lost) -> the backend that starts jobs
# on_lost: a launcher died; the jobs it was sent (None: every job started here)
LostJobs = Callable[[frozenset[int] | None], None]
BackendFactory = Callable[[Callable[[list[object]], None], LostJobs], Backend]


class Spooler:
    def __init__(
        self,
        config: StartupConfig,
        loop: asyncio.AbstractEventLoop,
        keep_fds: frozenset[int] = frozenset(),
        *,
        clock: Callable[[], float] = time.time,
        backend: BackendFactory | None = None,
        adoption: Adoption | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.loop = loop
        self.clock = clock
        self.runs_dir = config.savelist + ".runs"
        self.snapshots_dir = snapshots_dir(config.savelist)
        self.table = JobTable(config, keep_fds)
        self.table.warnings += config.warnings
        self.running = RunningJobs()
        self.waiters = Waiters()
        self.terminals = Terminals()
        self.helpers = Helpers(loop)
        self.gpu = GpuManager(env, self.settings, loop, owner=config.savelist)
        self.events = Events(
            self.table, self.running, self.waiters, self.terminals, self.helpers, self.runs_dir,
            self.kick, clock,
        )  # fmt: skip
        self.events.snapshots_root = self.snapshots_dir
        # Where jobs run: the local launcher, or SLURM (a backend injected by tests is local-like).
        to_slurm = config.backend == "slurm" and backend is None
        self.dispatcher = (SlurmDispatcher if to_slurm else Dispatcher)(
            loop, self.table, self.running, self.gpu, self.events, self.terminals, self.runs_dir, clock
        )
        self.dispatcher.policy, self.dispatcher.user_limits = config.policy, config.user_limits
        self.wakeups = Wakeups(loop, clock, self.kick)  # --begin times
        self.notifier = Notifier(loop, self.table, clock)
        self.events.on_end.append(self.notifier.job_ended)
        self.limits = TimeLimits(loop, self.table, self.running, self.stop, clock)
        # kill_group looked up at each call: the in-process tests replace it.
        self.control = JobControl(self.table, self.limits, lambda g, s: kill_group(g, s), self.kick, clock)
        self.reaper = Reaper(
            loop, self.table, self.running, self.events, self.waiters, self.runs_dir, self.signal, adoption
        )
        self.slurm: SlurmBackend | None = None
        if to_slurm:
            tools = Tools(loop, env, self.helpers.watch)
            self.slurm = SlurmBackend(
                loop, self.table, self.running, self.events, tools, config.slurm, self.runs_dir,
                self.kick, self._started_in_slurm, clock,
            )  # fmt: skip
            assert isinstance(self.dispatcher, SlurmDispatcher)
            self.dispatcher.slurm = self.slurm
            self.backend: Backend = self.slurm
        else:
            make_backend = backend or self._local_launcher
            self.backend = make_backend(self.reaper.note, self.reaper.launcher_lost)
        self.dispatcher.backend = self.backend

    def _local_launcher(self, on_note: Callable[[list[object]], None], on_lost: LostJobs) -> Backend:
        return LauncherPool(self.loop, self.runs_dir, on_note, on_lost)

    def _started_in_slurm(self, job: Job) -> None:
        self.table.record(job)
        self.waiters.started(job.id, job)
        self.limits.arm(job)  # its time limit counts from SLURM's start

    @property
    def warnings(self) -> list[str]:
        return self.table.warnings

    # -- the daemon's life -------------------------------------------------------------------

    def load(self) -> None:
        """Read the save-list, settle the jobs an earlier daemon left running, start the launcher."""
        ensure_dirs(self.config.savelist, self.runs_dir)
        was_running = self.table.load()
        self.table.keep_recent_tokens(self.clock())
        if self.slurm is not None:
            # Jobs sent to SLURM (or about to be) by an earlier daemon: found again, never resent.
            in_slurm = [j for j in self.table.jobs.values() if j.slurm_token and not j.state.is_done]
            for job in in_slurm:
                if job.state.is_waiting:
                    self.table.queue.remove(job)
                    job.state = JobState.ALLOCATING
            was_running = [j for j in was_running if not j.slurm_token]
            self.slurm.adopt(in_slurm)
        else:
            for job in [j for j in self.table.queue if j.slurm_token]:
                # In SLURM under an earlier daemon: never run here a second time.
                why = "it was sent to SLURM; this daemon runs jobs locally (TS_BACKEND=slurm follows it)"
                self.events.end(job, JobState.SKIPPED, why)
        logs = exits.read_settled(self.runs_dir) if was_running else exits.Logs()
        for job in was_running:
            self.reaper.recover(job, logs)
        # The logs of dead launchers go only once what was read from them is durable.
        self.table.commit()
        exits.remove_logs_of_dead_launchers(self.runs_dir, alive=set())
        for job in self.table.queue:
            if job.begin_at is not None:
                self.wakeups.at(job.begin_at)
        self.backend.start()
        self.table.compact_at_start()

    def commit(self) -> None:
        """Called before replies go out: make acknowledged changes durable, compact if due."""
        self.table.commit()

    def close(self) -> None:
        """At shutdown: the save-list is complete and synced when this returns."""
        self.table.close()

    def shutdown_jobs(self) -> None:
        """Stop adopting and launching: running jobs keep running in their own sessions."""
        self.reaper.close()
        self.limits.close()
        self.wakeups.close()
        self.notifier.close()
        self.backend.close()
        self.dispatcher.spare_logs.drop()
        self.gpu.close()

    def reap_children(self) -> None:
        """SIGCHLD: collect every child of the daemon itself (a compaction, a hook) that exited."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if not self.table.compactor.reaped(pid, wait_status):
                self.helpers.reaped(pid, wait_status)

    def kick(self) -> None:
        """Something may let a job start: one scheduling pass on the next turn of the loop."""
        self.dispatcher.kick()

    # -- lookups -----------------------------------------------------------------------------

    def get(self, job_id: int | None, default: str = "added") -> Job:
        return self.table.get(job_id, default, self.running)

    def running_now(self) -> tuple[int, int]:
        """(jobs running, slots they take), for ``ts -R`` and ``ts -l``: in SLURM, only what it
        runs (a job it keeps pending holds its share of -S, but does not run)."""
        if self.slurm is None:
            return len(self.running), self.running.busy_slots
        count = sum(1 for j in self.running if j.state is JobState.RUNNING)
        return count, count

    def ordered(self) -> Iterator[Job]:
        """Running jobs, then waiting ones in queue order, then ended ones in the order they
        ended (as the original's ``ts -l``)."""
        yield from self.running.by_id()
        yield from self.table.queue
        yield from self.table.ended_in_order()

    def has_started(self, job: Job) -> bool:
        """Its process runs: the launcher reported it (so its log exists), or it was adopted."""
        if self.slurm is not None:
            return self.slurm.has_started(job)
        return job.state.is_active and (job.shim_pid is not None or job.pid is not None)

    # -- queueing ----------------------------------------------------------------------------

    def submit(
        self,
        request: Submit,
        command: list[str],
        terminal: tuple[int, int] | None = None,
        owner: Caller | None = None,
    ) -> Job:
        """Queue one job of a submission (a batch or a sweep queues one per command); ``owner``:
        the caller on a multi-user daemon, whose job it is and as whom it runs."""
        for dep in [*request.after, *request.after_ok]:
            if dep not in self.table.jobs:
                raise RequestError(E_NOT_FOUND, f"cannot depend on job {dep}: it does not exist")
        if request.mail and find_sendmail(request.env) is None:
            raise RequestError(E_INVALID, "-m: no sendmail found to mail the output; install one or drop -m")
        if self.slurm is None:
            self.gpu.validate(request.gpus, request.gpu_indices or None)
        if request.begin_at is not None and request.begin_at < self.clock() - BEGIN_SLACK:
            raise RequestError(E_INVALID, "--begin: that time is in the past")
        limit = self.config.queue_limit
        if limit is not None and len(self.table.queue) >= limit:
            raise RequestError(E_QUEUE_FULL, f"the queue is full ({limit} jobs waiting, TS_MAXCONN)")
        if request.queue is not None:
            self.queue_named(request.queue)
        job = job_of(request, command, self.clock())
        if owner is not None:
            job.uid, job.user, job.umask = owner.uid, owner.name, request.umask
        if job.time_limit is None:
            job.time_limit = self.config.default_time
        try:
            self.table.add(job, request.env)
        except OSError as exc:
            raise RequestError(E_INTERNAL, f"could not record the job: {exc.strerror or exc}") from None
        if terminal is not None:
            self.terminals.hold(job.id, terminal)
        if job.begin_at is not None:
            self.wakeups.at(job.begin_at)
        self.kick()
        return job

    def admit(self, request: Submit, command: list[str]) -> None:
        """Once per submission, before any of its jobs is queued: the backend may refuse it
        (SLURM: ``sbatch --test-only``), and then nothing is queued."""
        if isinstance(self.dispatcher, SlurmDispatcher):
            self.dispatcher.admit(job_of(request, command, self.clock()), request)

    def requeue(self, job: Job) -> None:
        """--requeue: an ended job goes back to the end of the queue with fresh attempts."""
        if not job.state.is_done:
            raise RequestError(E_INVALID, f"job {job.id} has not ended (it is {job.state.value})")
        if job.start_time is not None:
            job.archive_attempt()
        job.transition(JobState.QUEUED, self.clock())
        job.attempt = 1
        job.log_path = None
        job.oom_free_mib = None
        job.reason = ""
        # Dependencies still listed are judged again (they may run again too); the outcome of
        # one removed since is all that is left of it.
        job.dep_outcomes = {d: ok for d, ok in job.dep_outcomes.items() if d not in self.table.jobs}
        self.table.requeued(job, new_seq=True)
        self.table.save(job)
        self.kick()

    def requeue_cascade(self, job: Job) -> list[int]:
        """--requeue --cascade: the job, and the jobs skipped because it failed (their -W
        dependency), and theirs, transitively; their dependencies are kept, so they wait again."""
        self.requeue(job)
        requeued = [job.id]
        chosen = {job.id}
        grew = True
        while grew:
            grew = False
            for other in sorted(self.table.jobs.values(), key=lambda j: j.id):
                if (
                    other.state is JobState.SKIPPED
                    and other.id not in chosen
                    and chosen & set(other.after_ok)
                ):
                    self.requeue(other)
                    requeued.append(other.id)
                    chosen.add(other.id)
                    grew = True
        return requeued

    # -- the user's actions ------------------------------------------------------------------

    def remove(self, job: Job) -> None:
        if job in self.running and not job.state.is_active:
            raise RequestError(E_INVALID, f"job {job.id} is in SLURM; kill it first (ts -k {job.id})")
        if job.state.is_active:
            raise RequestError(
                E_INVALID, f"job {job.id} is {job.state.value}; kill it first (ts -k {job.id})"
            )
        self.events.removed(job)

    def clear_finished(self, owner: Caller | None = None) -> int:
        """-C: every ended job, or only those ``owner`` may remove (multi-user)."""
        done = [j for j in self.table.jobs.values() if j.state.is_done and (owner is None or owner.owns(j))]
        for job in done:
            self.events.removed(job)
        return len(done)

    def kill(self, job: Job, sig: int = signal.SIGTERM, escalate: bool = True) -> None:
        """Signal the job's process group; unless told not to, SIGKILL whatever is left after the
        grace period.  (``ts -f`` forwards Ctrl-C without escalation, as a terminal would.)"""
        in_slurm = self.slurm is not None and job in self.running  # pending there, or running
        if not job.state.is_active and not in_slurm:
            raise RequestError(E_INVALID, f"job {job.id} is not running (it is {job.state.value})")
        if not self.stop(job, sig, escalate):
            raise RequestError(E_INVALID, f"job {job.id} has no process left to signal")
        job.killed = True  # a job the user killed is not retried

    def stop(self, job: Job, sig: int = signal.SIGTERM, escalate: bool = True) -> bool:
        """Signal a running job (``-k``, its time limit); one just launched is signalled as soon as
        its pid is known.  False when nothing of it is left to signal.  In SLURM: scancel."""
        if self.slurm is not None:
            return self.slurm.cancel(job)
        if job.shim_pid is None:
            self.running.kill_when_started(job, sig, escalate)
            return True
        return self.signal(job, sig, escalate)

    def signal(self, job: Job, sig: int, escalate: bool = True) -> bool:
        if not job.pid or not kill_group(job.pid, sig):
            return False
        if job.state is JobState.PAUSED and sig not in (signal.SIGSTOP, signal.SIGCONT):
            self.control.continued(job)  # a stopped process cannot act on the signal
            self.table.record(job)
        if escalate and sig != signal.SIGKILL:
            # Whatever ignores the signal, or outlives the job in its process group, is killed
            # after the grace period: nothing of a killed job survives.
            self.loop.call_later(self.config.kill_grace, kill_group, job.pid, signal.SIGKILL)
        return True

    def make_urgent(self, job: Job) -> None:
        _check_waiting(job, self.running)
        self.table.queue.move_first(job)
        self._saved(job)

    def set_priority(self, job: Job, priority: int) -> None:
        _check_waiting(job, self.running)
        self.table.queue.set_priority(job, priority)
        self._saved(job)

    def swap(self, a: Job, b: Job) -> None:
        _check_waiting(a, self.running)
        _check_waiting(b, self.running)
        self.table.queue.swap(a, b)
        self.table.save(a)
        self._saved(b)

    def _saved(self, job: Job) -> None:
        self.table.save(job)
        self.kick()

    def set_slots(self, slots: int, queue: str | None = None) -> None:
        if queue is None:
            self.settings.slots = slots
        else:
            self.queue_named(queue).slots = slots
        self.table.save_settings()
        self.kick()

    def queue_named(self, name: str) -> Queue:
        """A named queue; one named for the first time springs into being with one slot."""
        queue = self.settings.queues.get(name)
        if queue is None:
            queue = self.settings.queues[name] = Queue(name)
            self.table.save_settings()
        return queue

    def set_logdir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise RequestError(E_INVALID, f"{path} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise RequestError(E_INVALID, f"{path} is not writable")
        self.settings.logdir = path
        self.table.save_settings()


def job_of(request: Submit, command: list[str], now: float) -> Job:
    """A new job from a submission: the one place where a request's fields become a job's.
    (Lists are copied: a batch makes all its jobs from one request.)"""
    return Job(
        id=-1,  # the table gives it the next id
        command=command,
        cwd=sys.intern(request.cwd),
        shell=needs_shell(command),
        enqueue_time=now,
        label=request.label,
        slots=request.slots,
        store_output=not request.no_output,
        stderr_apart=request.stderr_apart,
        gzip=request.gzip,
        log_name=request.log_name,
        mail=request.mail,
        after=list(request.after),
        after_ok=list(request.after_ok),
        env_info=request.env_info,
        gpus=request.gpus,
        gpu_indices=list(request.gpu_indices) or None,
        gpu_mem_mib=request.gpu_mem_mib,
        priority=request.priority,
        max_retries=request.retry,
        retry_timeout=request.retry_timeout,
        time_limit=request.time_limit,
        args=request.args,
        sweep=request.sweep,
        skip_if_exists=request.skip_if_exists,
        snapshot=request.snapshot,
        snapshot_info=request.snapshot_info,
        begin_at=request.begin_at,
        queue=request.queue,
        notify_url=request.notify_url,
        notify_on=request.notify_on,
        state=JobState.HELD if request.hold else JobState.QUEUED,
        token=request.token,
    )


def snapshots_dir(savelist: str) -> str:
    """Where ``ts --snapshot`` copies code: beside the save-list, so ``-r`` may remove it."""
    return savelist + ".snapshots"


def _check_waiting(job: Job, running: RunningJobs) -> None:
    if job in running and job.state.is_waiting:  # allocating in SLURM: out of our queue
        raise RequestError(E_INVALID, f"job {job.id} is in SLURM already (it is {job.state.value})")
    if not job.state.is_waiting:
        raise RequestError(E_INVALID, f"job {job.id} is not queued (it is {job.state.value})")
