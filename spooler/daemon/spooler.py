"""The daemon core: the parts that hold a job's life, wired together, and the user's actions.

Where a job is ...
- queued: :meth:`Spooler.submit`, into the job table (``table``: persisted, over ``store``);
- scheduled and launched: ``dispatch`` (the pure policy is ``scheduler``; GPUs are ``gpus``),
  through the launcher (``launcher``), or sent to SLURM (``slurm``), as its queue is bound
  (``backends``);
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
import time
from collections.abc import Callable, Iterator, Mapping

from spooler.daemon.backends import LOCAL, SLURM, Binding, settle_sent_to_slurm, slurm_side, taken
from spooler.daemon.caller import Caller
from spooler.daemon.config import StartupConfig
from spooler.daemon.control import JobControl
from spooler.daemon.dispatch import Backend, Dispatcher
from spooler.daemon.events import Events
from spooler.daemon.gpus.manager import GpuManager
from spooler.daemon.hooks import Helpers
from spooler.daemon.launcher import exits
from spooler.daemon.launcher.pool import LauncherPool
from spooler.daemon.limits import TimeLimits
from spooler.daemon.notify import Notifier
from spooler.daemon.process import kill_group
from spooler.daemon.queues import Queue, configure
from spooler.daemon.reaper import Reaper
from spooler.daemon.recovery import Adoption
from spooler.daemon.running import RunningJobs
from spooler.daemon.slurm.backend import SlurmBackend
from spooler.daemon.slurm.dispatch import SlurmDispatcher
from spooler.daemon.submission import check, job_of
from spooler.daemon.table import JobTable, ensure_dirs
from spooler.daemon.terminals import Terminals
from spooler.daemon.waiters import Waiters
from spooler.daemon.wakeups import Wakeups
from spooler.jobs import Job, JobState
from spooler.protocol import E_INTERNAL, E_INVALID, RequestError
from spooler.protocol.requests import Submit

log = logging.getLogger("spooler")

# (reaper.note, reaper.launcher_lost: the jobs of a launcher that died, None: every job) -> backend
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
        self.snapshots_dir = config.savelist + ".snapshots"  # ts --snapshot's copies: -r removes them
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
        # Where each queue's jobs run: the local launcher, or SLURM (``backends``; a backend
        # injected by tests is local-like, and then every queue is local).
        self.binding = Binding(config.backend, config.queues, config.slurm) if backend is None else Binding()
        self.dispatcher = Dispatcher(
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
        self.dispatchers: list[Dispatcher] = []  # each backend's scheduling pass
        self.backend: Backend | None = None  # the local launcher, where a queue runs jobs here
        if self.binding.uses(LOCAL):
            self.backend = (backend or self._local_launcher)(self.reaper.note, self.reaper.launcher_lost)
            self.dispatcher.backend = self.backend
            self.dispatchers.append(self.dispatcher)
        self.env = env
        self.slurm: SlurmBackend | None = None
        self.slurm_dispatcher: SlurmDispatcher | None = None
        if self.binding.uses(SLURM):
            self.follow_slurm()

    def follow_slurm(self) -> None:
        """Start the SLURM side: for the queues bound to it, or (at load) for jobs sent there."""
        self.slurm, self.slurm_dispatcher = slurm_side(self, self.env, self._started_in_slurm)
        self.slurm_dispatcher.policy = self.config.policy
        self.dispatchers.append(self.slurm_dispatcher)
        if self.binding.uses(LOCAL):
            self.dispatcher.takes = self.binding.local

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
        if configure(self.settings.queues, self.config.queues):  # [queues.NAME] of the config file
            self.table.save_settings()
        was_running = settle_sent_to_slurm(self, was_running)
        logs = exits.read_settled(self.runs_dir) if was_running else exits.Logs()
        for job in was_running:
            self.reaper.recover(job, logs)
        # The logs of dead launchers go only once what was read from them is durable.
        self.table.commit()
        exits.remove_logs_of_dead_launchers(self.runs_dir, alive=set())
        for job in self.table.queue:
            if job.begin_at is not None:
                self.wakeups.at(job.begin_at)
        for backend in (self.backend, self.slurm):
            if backend is not None:
                backend.start()
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
        for backend in (self.backend, self.slurm):
            if backend is not None:
                backend.close()
        self.dispatcher.spare_logs.close()
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
        """Something may let a job start: one scheduling pass on the next turn of the loop (each
        backend's)."""
        for dispatcher in self.dispatchers:
            dispatcher.kick()

    # -- lookups -----------------------------------------------------------------------------

    def get(self, job_id: int | None, default: str = "added") -> Job:
        return self.table.get(job_id, default, self.running)

    @property
    def mixed(self) -> bool:
        """Some queues run their jobs here and others in SLURM."""
        return self.slurm is not None and self.backend is not None

    def in_slurm(self, job: Job) -> bool:
        """Whether SLURM runs the job: one sent there (its token says so; an ended one ran there),
        or a waiting one whose queue is bound to SLURM.  The one question for every action that
        differs between the backends."""
        if self.slurm is None:
            return False
        return bool(job.slurm_token) or (job.state.is_waiting and self.binding.in_slurm(job.queue))

    def running_now(self) -> tuple[int, int]:
        """(jobs running, slots they take), for ``ts -R``: in SLURM, only what it runs (a job it
        keeps pending holds its share of -S, but does not run), one slot each."""
        if self.slurm is None:
            return len(self.running), self.running.busy_slots
        return taken(self.running)

    def busy_in(self, queue: str | None) -> int:
        """Slots one queue's running jobs take (None: the default queue), for ``ts -l``."""
        if self.slurm is None:
            return self.running.busy_in(queue)
        return taken(j for j in self.running if j.queue == queue)[1]

    def ordered(self) -> Iterator[Job]:
        """Running jobs, then waiting ones in queue order, then ended ones in the order they
        ended (as the original's ``ts -l``)."""
        yield from self.running.by_id()
        yield from self.table.queue
        yield from self.table.ended_in_order()

    def has_started(self, job: Job) -> bool:
        """Its process runs: the launcher reported it (so its log exists), or it was adopted."""
        if self.slurm is not None and self.in_slurm(job):
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
        local = not (self.slurm is not None and self.binding.in_slurm(request.queue))
        check(request, self.table, self.gpu if local else None, self.clock(), self.config.queue_limit)
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

    def admit(
        self, request: Submit, command: list[str], answer: Callable[[RequestError | None], None]
    ) -> bool:
        """Once per submission, before any of its jobs is queued: the backend may refuse it
        (SLURM: ``sbatch --test-only``), and then nothing is queued.  True when the verdict
        comes later, through ``answer``; a refusal known at once is raised."""
        if self.slurm_dispatcher is None or not self.binding.in_slurm(request.queue):
            return False
        return self.slurm_dispatcher.admit(job_of(request, command, self.clock()), request, answer)

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
        in_slurm = self.in_slurm(job) and job in self.running  # pending there, or running
        if not job.state.is_active and not in_slurm:
            raise RequestError(E_INVALID, f"job {job.id} is not running (it is {job.state.value})")
        if not self.stop(job, sig, escalate):
            raise RequestError(E_INVALID, f"job {job.id} has no process left to signal")
        job.killed = True  # a job the user killed is not retried

    def stop(self, job: Job, sig: int = signal.SIGTERM, escalate: bool = True) -> bool:
        """Signal a running job (``-k``, its time limit); one just launched is signalled as soon as
        its pid is known.  False when nothing of it is left to signal.  In SLURM: scancel."""
        if self.slurm is not None and self.in_slurm(job):
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
        if self.slurm_dispatcher is not None and self.binding.in_slurm(queue):
            self.slurm_dispatcher.rethrottle(queue, slots)  # job arrays already in SLURM: their share anew
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
        self.dispatcher.spare_logs.drop()  # made for the old directory


def _check_waiting(job: Job, running: RunningJobs) -> None:
    if job in running and job.state.is_waiting:  # allocating in SLURM: out of our queue
        raise RequestError(E_INVALID, f"job {job.id} is in SLURM already (it is {job.state.value})")
    if not job.state.is_waiting:
        raise RequestError(E_INVALID, f"job {job.id} is not queued (it is {job.state.value})")
