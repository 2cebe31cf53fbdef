"""The job list and everything that changes it: submit, start, finish, remove, reorder.

One ``Spooler`` lives in the daemon.  Every change to a job goes through :meth:`Spooler.save` so
the save-list journal sees it; every event that may let a job start calls :meth:`kick`, which
runs one scheduling pass on the next turn of the event loop (many events, one pass).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from spooler import exits, runner, scheduler
from spooler.commands import needs_shell
from spooler.daemon import launch
from spooler.daemon.compaction import Compactor
from spooler.daemon.config import StartupConfig
from spooler.daemon.errors import RequestError
from spooler.daemon.gpus import GpuManager
from spooler.daemon.hooks import Helpers, find_sendmail
from spooler.daemon.jobqueue import JobQueue
from spooler.daemon.launcher import Launcher
from spooler.daemon.recovery import Adoption
from spooler.jobs import Job, JobState
from spooler.store import Snapshot, Store

log = logging.getLogger("spooler")

Waiter = Callable[[Job | None], None]
MAX_RESULT = 1024 * 1024  # bytes of $TS_RESULT_FILE kept with a job
STATUS_WAIT_TRIES = 250  # 5 s in steps of 20 ms


@dataclass
class Submission:
    """A validated submit request for one job (the handler builds it from the wire)."""

    command: list[str]
    cwd: str
    env: dict[str, str]
    label: str | None = None
    slots: int = 1
    store_output: bool = True
    stderr_apart: bool = False
    gzip: bool = False
    log_name: str | None = None
    mail: bool = False
    after: list[int] = field(default_factory=list)
    after_ok: list[int] = field(default_factory=list)
    env_info: str | None = None
    gpus: int = 0  # -G
    gpu_indices: list[int] | None = None  # -g
    gpu_mem_mib: int | None = None  # --gpu_mem: share a GPU, needing this much
    priority: int = 0
    max_retries: int = 0
    args: dict[str, Any] | None = None
    sweep: str | None = None
    skip_if_exists: str | None = None
    snapshot: str | None = None
    snapshot_info: str | None = None
    terminal_fds: tuple[int, int] | None = None  # -nf: the client's stdout and stderr


# Submission fields that become the job's fields of the same name as they are.
_COPIED_FIELDS = tuple(
    f.name for f in fields(Submission) if f.name not in ("command", "cwd", "env", "terminal_fds")
)


class Spooler:
    def __init__(
        self, config: StartupConfig, loop: asyncio.AbstractEventLoop, keep_fds: frozenset[int] = frozenset()
    ) -> None:
        """``keep_fds``: the lock file, which a compaction child holds until its snapshot is in place."""
        self.config = config
        self.settings = config.settings
        self.loop = loop
        self.store = Store(config.savelist, fsync=config.fsync)
        self.compactor = Compactor(self.store, self.snapshot, keep_fds)
        self.runs_dir = config.savelist + ".runs"
        self.snapshots_dir = snapshots_dir(config.savelist)
        self.jobs: dict[int, Job] = {}
        self.queue = JobQueue()  # waiting jobs (queued, allocating) in the order they may start
        self.envs: dict[str, dict[str, str]] = {}
        self.next_id = 0
        self.last_added: int | None = None
        self.last_run: int | None = None
        self.busy_slots = 0
        self.running: dict[int, Job] = {}  # job id -> every running job, adopted ones included
        self.done_order: OrderedDict[int, None] = OrderedDict()  # ended ids, oldest first (TS_MAXFINISHED)
        self.waiters: dict[int, list[Waiter]] = {}  # woken when the job ends or is removed
        self.start_waiters: dict[int, list[Waiter]] = {}  # woken when it starts (or never will)
        self.terminal_fds: dict[int, tuple[int, int]] = {}
        self.warnings: list[str] = list(config.warnings)
        self.helpers = Helpers(loop)
        self.gpu = GpuManager(os.environ, self.settings, loop)
        self.space_waiters: deque[Callable[[], bool]] = deque()  # submitters blocked on a full queue
        self._kicked = False
        self.adoption = Adoption(loop, self._adopted_exited)  # jobs started by an earlier daemon
        self._adopted_ids: set[int] = set()
        self.launcher = Launcher(loop, self.runs_dir, self._note, self._launcher_lost)
        # job id -> (signal, escalate) for jobs killed before their pid was known
        self.pending_kills: dict[int, tuple[int, bool]] = {}

    # -- persistence ---------------------------------------------------------------------

    def load(self) -> None:
        os.makedirs(os.path.dirname(self.config.savelist), mode=0o700, exist_ok=True)
        os.makedirs(self.runs_dir, mode=0o700, exist_ok=True)
        loaded = self.store.load()
        self.warnings += loaded.warnings
        self.settings.update_from_record(loaded.settings)
        self.envs = loaded.envs
        self.next_id = loaded.next_id
        for record in sorted(loaded.jobs.values(), key=lambda r: int(r["id"])):
            try:
                job = Job.from_record(record)
            except (TypeError, ValueError, KeyError) as exc:
                self.warnings.append(f"save-list: dropped an unreadable job record ({exc})")
                continue
            self.jobs[job.id] = job
        self.queue.restore([j for j in self.jobs.values() if j.state.is_waiting])
        for job in self.queue:
            if job.state is JobState.ALLOCATING:
                job.state = JobState.QUEUED
        for job in self.jobs.values():
            self.queue.note_seq(job.seq)
        done = sorted((j for j in self.jobs.values() if j.state.is_done), key=lambda j: j.end_time or 0)
        self.done_order.update((j.id, None) for j in done)
        if self.jobs:
            self.last_added = max(self.jobs)
            started = [j for j in self.jobs.values() if j.start_time is not None]
            if started:
                self.last_run = max(started, key=lambda j: j.start_time or 0).id
        self.store.open()
        logs = exits.read(self.runs_dir)
        for job in [j for j in self.jobs.values() if j.state is JobState.RUNNING]:
            self._recover(job, logs)
        exits.remove_logs_of_dead_launchers(self.runs_dir, alive=set())
        self.launcher.start()
        try:
            self.compact()
        except OSError as exc:  # a full disk: serve from the journal, compact later
            self.warnings.append(f"could not compact the save-list: {exc}")
            self.store.postpone_compaction()

    def snapshot(self) -> Snapshot:
        """The whole state, for a compaction; call _drop_unused_envs first."""
        return Snapshot(
            jobs=(j.to_record() for j in self.jobs.values()),
            job_count=len(self.jobs),
            envs=self.envs,
            settings=self.settings.to_record(),
            next_id=self.next_id,
        )

    def _drop_unused_envs(self) -> None:
        """Environments no job uses any more are not carried into the next snapshot."""
        used = {j.env_key for j in self.jobs.values()}
        self.envs = {k: v for k, v in self.envs.items() if k in used}

    def compact(self) -> None:
        """Compact the save-list here and now (at start-up, or when the background way failed)."""
        began = time.monotonic()
        self._drop_unused_envs()
        self.store.compact(self.snapshot())
        log.info("save-list compacted in place in %.3f s", time.monotonic() - began)

    def _compact_in_background(self) -> None:
        self._drop_unused_envs()  # before the fork: the child writes the state as it is then
        if not self.compactor.start():
            self.compact()

    def save(self, job: Job) -> None:
        self.store.put_job(job.to_record())

    def record(self, job: Job) -> None:
        """Save a change the daemon made itself (a job started or ended): a save-list that cannot
        be written (a full disk) must not stop the queue; the next compaction writes it all."""
        try:
            self.save(job)
        except OSError as exc:
            log.error("could not record job %d in the save-list: %s", job.id, exc)
            self.store.missed()

    def save_settings(self) -> None:
        for key, value in self.settings.to_record().items():
            self.store.put_setting(key, value)

    def commit(self) -> None:
        """Called before replies go out: make acknowledged changes durable, compact if due."""
        self.store.commit()
        if self.store.needs_compaction and not self.compactor.running:
            try:
                self._compact_in_background()
            except OSError as exc:
                # The journal holds every change: only the compaction is put off.
                log.error("could not compact the save-list: %s", exc)
                self.store.postpone_compaction()

    def close(self) -> None:
        """At shutdown: the save-list is complete and synced when this returns."""
        self.compactor.wait()
        self.store.close()

    def _env_key(self, env: dict[str, str]) -> str:
        """Identical environments (the usual case for a sweep) are stored once."""
        packed = msgpack.packb(sorted(env.items()), use_bin_type=True)
        key = hashlib.blake2b(packed, digest_size=12).hexdigest()
        if key not in self.envs:
            self.store.put_env(key, env)  # first: an environment not recorded is not reused
            self.envs[key] = env
        return sys.intern(key)

    # -- lookups -------------------------------------------------------------------------

    def get(self, job_id: int | None, default: str = "added") -> Job:
        """The job with this id; without one, the last added (or the last run) job."""
        if job_id is None:
            job_id = self.last_run if default == "run" else self.last_added
            if job_id is None or job_id not in self.jobs:
                if default == "run" and self.last_added in self.jobs:
                    job_id = self.last_added
                else:
                    raise RequestError("not_found", "no jobs in the queue")
        job = self.jobs.get(job_id)
        if job is None:
            raise RequestError("not_found", f"job {job_id} does not exist")
        return job

    def ordered(self) -> Iterator[Job]:
        """Running jobs, then waiting ones in queue order, then ended ones in the order they
        ended (as the original's ``ts -l``)."""
        yield from sorted(self.running.values(), key=lambda j: j.id)
        yield from self.queue
        yield from (self.jobs[i] for i in self.done_order if i in self.jobs)

    @property
    def running_count(self) -> int:
        return len(self.running)

    # -- submit --------------------------------------------------------------------------

    def submit(self, sub: Submission, now: float) -> Job:
        for dep in [*sub.after, *sub.after_ok]:
            if dep not in self.jobs:
                raise RequestError("not_found", f"cannot depend on job {dep}: it does not exist")
        if sub.mail and find_sendmail(sub.env) is None:
            raise RequestError("invalid", "-m: no sendmail found to mail the output; install one or drop -m")
        self.gpu.validate(sub.gpus, sub.gpu_indices)
        limit = self.config.queue_limit
        if limit is not None and len(self.queue) >= limit:
            raise RequestError("queue_full", f"the queue is full ({limit} jobs waiting, TS_MAXCONN)")
        job = Job(
            id=self.next_id,
            command=sub.command,
            cwd=sys.intern(sub.cwd),
            env_key="",
            shell=needs_shell(sub.command),
            enqueue_time=now,
        )
        # The other fields the submission shares with a job are copied by name (lists copied:
        # a batch reuses one submission for all its jobs).
        for name in _COPIED_FIELDS:
            value = getattr(sub, name)
            setattr(job, name, list(value) if isinstance(value, list) else value)
        try:
            job.env_key = self._env_key(sub.env)
            self.queue.add(job)
            try:
                self.save(job)  # first: a job that cannot be recorded is not queued either
            except OSError:
                self.queue.remove(job)
                raise
        except OSError as exc:
            raise RequestError("internal", f"could not record the job: {exc.strerror or exc}") from None
        self.next_id += 1
        self.jobs[job.id] = job
        self.last_added = job.id
        if sub.terminal_fds is not None:
            self.terminal_fds[job.id] = sub.terminal_fds
        self.kick()
        return job

    # -- scheduling ----------------------------------------------------------------------

    def kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            self.loop.call_soon(self._schedule)

    def _dep_outcome(self, job: Job, dep: int) -> bool | None:
        other = self.jobs.get(dep)
        if other is None:
            return job.dep_outcomes.get(dep, False)
        if not other.state.is_done:
            return None
        return other.succeeded

    def _schedule(self) -> None:
        self._kicked = False
        now = time.time()
        decisions = scheduler.plan(
            self.queue,
            free_slots=self.settings.slots - self.busy_slots,
            total_slots=self.settings.slots,
            outcome=self._dep_outcome,
            place=self.gpu.placer(self.running.values()),
        )
        for job, reason in decisions.skip:
            self._skip(job, reason, now)
        for job, reason in decisions.allocating:
            self._allocating(job, reason, now)
        for job, gpus in decisions.start:
            self._start(job, now, gpus)
        # Poll NVML only while a job waits for GPUs (a pass that stopped short of one is re-run
        # when a slot frees, so it is not forgotten).  Not a scan of the queue: cost stays flat.
        self.gpu.poll(bool(decisions.allocating), self.kick)
        while self.space_waiters and self.space_waiters[0]():
            self.space_waiters.popleft()

    def _skip(self, job: Job, reason: str, now: float) -> None:
        self.queue.remove(job)
        job.transition(JobState.SKIPPED, now)
        job.reason = reason
        self._ended(job)

    def _allocating(self, job: Job, reason: str, now: float) -> None:
        if job.state is JobState.QUEUED:
            job.transition(JobState.ALLOCATING, now)
        if job.reason != reason:  # saved only when it changes, not at every GPU poll
            job.reason = reason
            self.record(job)

    def _start(self, job: Job, now: float, gpus: list[int]) -> None:
        self.queue.remove(job)
        if job.skip_if_exists and os.path.exists(os.path.join(job.cwd, job.skip_if_exists)):
            job.transition(JobState.SKIPPED, now)
            job.reason = f"{job.skip_if_exists} exists (--skip-if-exists)"
            self._ended(job)
            return
        job.assigned_gpus = gpus
        terminal = self.terminal_fds.pop(job.id, None)
        spec = runner.Launch(
            job.id,
            job.command,
            job.shell,
            job.cwd,
            launch.environment(
                self.envs.get(job.env_key, {}), self.settings.env_overrides, job, self._result_path(job)
            ),
            self._result_path(job),
            compress=job.gzip and job.store_output,
        )
        launch.place_output(spec, job, self.settings.logdir, terminal is not None)
        try:
            self.launcher.launch(spec, terminal)
        finally:
            for fd in set(terminal or ()):
                os.close(fd)
        job.transition(JobState.RUNNING, now)
        job.pid = job.shim_pid = None  # known when the shim reports in
        self.running[job.id] = job
        self.busy_slots += job.slots
        self.last_run = job.id
        self.record(job)

    def has_started(self, job: Job) -> bool:
        """Its process runs: the launcher reported it (so its log exists), or it was adopted."""
        return job.state is JobState.RUNNING and (job.shim_pid is not None or job.pid is not None)

    def job_env(self, job: Job) -> dict[str, str]:
        """The environment hooks and mail run with: the job's own, as it was started."""
        return launch.environment(self.envs.get(job.env_key, {}), self.settings.env_overrides, job, "")

    # -- job end -------------------------------------------------------------------------

    def reap(self) -> None:
        """SIGCHLD: collect every child that has exited."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if not self.compactor.reaped(pid, wait_status):
                self.helpers.reaped(pid)

    def _collect(self, job: Job, logs: dict[int, list[exits.Exit]] | None = None) -> exits.Exit | None:
        """How this run of the job ended, from the launchers' exit logs; None if not recorded."""
        return exits.find(
            logs if logs is not None else exits.read(self.runs_dir), job.id, job.shim_pid, job.start_time
        )

    def _finish_recorded(self, job: Job, record: exits.Exit) -> None:
        code, sig = runner.decode_wait_status(record.wait_status)
        self._finish(job, code, sig, record.error, record.end)

    def _note(self, note: list[Any]) -> None:
        """A report from the launcher or a shim (see spooler.daemon.launcher)."""
        kind, job_id, shim_pid = note[0], note[1], note[2]
        job = self.running.get(job_id)
        if job is None or job.shim_pid not in (None, shim_pid) or job.id in self._adopted_ids:
            return  # an earlier attempt's late report, or a job adopted from an earlier daemon
        if kind == "started":
            job.shim_pid, job.pid = shim_pid, note[3] or None
            self.record(job)  # where the next daemon finds it if this one dies
            self._wake_starters(job.id, job)
            pending = self.pending_kills.pop(job.id, None)
            if pending is not None and job.pid:
                self._signal(job, *pending)
        elif kind == "ended":
            code, sig = runner.decode_wait_status(int(note[3]))
            self._finish(job, code, sig, str(note[4] or ""), float(note[5]))
        elif kind == "reaped":  # the shim died without reporting the end
            record = self._collect(job)
            if record is not None:
                self._finish_recorded(job, record)
            else:
                code, sig = runner.decode_wait_status(int(note[3]))
                self._finish(job, None, None, f"its supervising process ended unexpectedly ({code or sig})")

    def _finish(
        self, job: Job, code: int | None, sig: int | None, reason: str, end: float | None = None
    ) -> None:
        job.transition(JobState.FINISHED, end or time.time())
        job.exit_code, job.signal, job.reason = code, sig, reason
        if job.exit_code is None and job.signal is None:
            job.exit_code = 255
        self._read_result(job)
        if job.log_path and launch.disk_full(job.log_path):
            job.reason = "; ".join(
                filter(None, [job.reason, "the disk holding its output is full: output may be cut"])
            )
        self.busy_slots -= job.slots
        self.running.pop(job.id, None)
        if job.exit_code != 0 and not job.killed and job.attempt <= job.max_retries:
            self._retry(job)
            return
        env = self.job_env(job)
        self.helpers.on_finish(job, env)
        if job.mail:
            self.helpers.mail(job, env)
        self._ended(job)

    def _result_path(self, job: Job) -> str:
        return os.path.join(self.runs_dir, f"{job.id}.result.json")

    def _read_result(self, job: Job) -> None:
        """Keep the JSON the job wrote to $TS_RESULT_FILE (usable in --where as result.*)."""
        job.result, problem = launch.read_result(self._result_path(job), MAX_RESULT)
        if problem:
            job.reason = "; ".join(filter(None, [job.reason, problem]))

    def _retry(self, job: Job) -> None:
        """--retry: put a job that failed back at its place in the queue for another attempt."""
        job.archive_attempt()
        job.transition(JobState.QUEUED, time.time())
        job.attempt += 1
        job.log_path = None
        self.queue.add(job, new_seq=False)
        self.record(job)
        self.kick()

    def requeue(self, job: Job) -> None:
        """--requeue: an ended job goes back to the end of the queue with fresh attempts."""
        if not job.state.is_done:
            raise RequestError("invalid", f"job {job.id} has not ended (it is {job.state.value})")
        if job.start_time is not None:
            job.archive_attempt()
        job.transition(JobState.QUEUED, time.time())
        job.attempt = 1
        job.log_path = None
        job.reason = ""
        job.dep_outcomes.clear()
        self.done_order.pop(job.id, None)
        self.queue.add(job)
        self.save(job)
        self.kick()

    def _ended(self, job: Job) -> None:
        """Bookkeeping shared by every way a job can end."""
        fds = self.terminal_fds.pop(job.id, None)
        if fds:
            for fd in set(fds):
                os.close(fd)
        self.record(job)
        self.done_order.pop(job.id, None)
        self.done_order[job.id] = None
        self._wake(job.id, job)
        self._trim_finished()
        self.kick()

    def _wake(self, job_id: int, job: Job | None) -> None:
        self._wake_starters(job_id, job)
        for waiter in self.waiters.pop(job_id, []):
            waiter(job)

    def _wake_starters(self, job_id: int, job: Job | None) -> None:
        for waiter in self.start_waiters.pop(job_id, []):
            waiter(job)

    def _trim_finished(self) -> None:
        while len(self.done_order) > self.config.max_finished:
            old, _ = self.done_order.popitem(last=False)
            job = self.jobs.get(old)
            if job is not None and job.state.is_done:
                self.delete(job)

    # -- recovery of jobs started by an earlier daemon ----------------------------------

    def _recover(self, job: Job, logs: dict[int, list[exits.Exit]] | None = None) -> None:
        """A job that was running when the last daemon stopped: collect, adopt, or mark lost."""
        record = self._collect(job, logs)
        if record is not None or self.adoption.adopt(job):
            self.running[job.id] = job
            self.busy_slots += job.slots
            if record is not None:
                self._finish_recorded(job, record)
            else:
                self._adopted_ids.add(job.id)
            return
        job.transition(JobState.LOST, time.time())
        job.reason = "was running when the daemon stopped, and its exit status was never recorded"
        self._ended(job)  # wakes anyone waiting on it: its launcher may have died under this daemon

    def _launcher_lost(self) -> None:
        """The launcher died (it should not): watch its orphaned jobs until they end."""
        for job in list(self.running.values()):
            if job.id not in self._adopted_ids:
                self.running.pop(job.id)
                self.busy_slots -= job.slots
                self._recover(job)

    def _adopted_exited(self, job_id: int, tries: int = 0) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING:
            self._adopted_ids.discard(job_id)
            return
        record = self._collect(job)
        if record is None and tries < STATUS_WAIT_TRIES:
            # The job's launcher (of an earlier daemon) writes the status file just after the
            # job's end, which is what woke us: give it a moment.
            self.loop.call_later(0.02, self._adopted_exited, job_id, tries + 1)
            return
        self._adopted_ids.discard(job_id)
        if record is not None:
            self._finish_recorded(job, record)
            return
        self.busy_slots -= job.slots
        self.running.pop(job.id, None)
        job.transition(JobState.LOST, time.time())
        job.reason = "its supervising process ended without recording an exit status"
        self._ended(job)

    # -- user actions --------------------------------------------------------------------

    def delete(self, job: Job) -> None:
        """Forget a job that is not running; dependents remember how it ended."""
        del self.jobs[job.id]
        self.done_order.pop(job.id, None)
        if job.state.is_waiting:
            self.queue.remove(job)
        if job.snapshot and not any(other.snapshot == job.snapshot for other in self.jobs.values()):
            self._remove_snapshot(job.snapshot)  # the last job using it (a sweep shares one)
        outcome = job.succeeded
        for other in self.queue:
            if job.id in other.after or job.id in other.after_ok:
                other.dep_outcomes[job.id] = outcome
                self.record(other)
        self.store.delete_job(job.id)
        fds = self.terminal_fds.pop(job.id, None)
        if fds:
            for fd in set(fds):
                os.close(fd)
        self._wake(job.id, None)
        self.kick()

    def _remove_snapshot(self, path: str) -> None:
        """Snapshots go with their job; removed by a helper process, never in the event loop."""
        root = os.path.realpath(self.snapshots_dir)
        if os.path.realpath(path).startswith(root + os.sep):
            self.helpers.spawn(["/bin/rm", "-rf", "--", path], {}, "/")
        else:
            log.warning("not removing %s: it is outside %s", path, root)

    def remove(self, job: Job) -> None:
        if job.state is JobState.RUNNING:
            raise RequestError("invalid", f"job {job.id} is running; kill it first (ts -k {job.id})")
        self.delete(job)

    def kill(self, job: Job, sig: int = signal.SIGTERM, escalate: bool = True) -> None:
        """Signal the job's process group; unless told not to, SIGKILL whatever is left after the
        grace period.  (``ts -f`` forwards Ctrl-C without escalation, as a terminal would.)"""
        if job.state is not JobState.RUNNING:
            raise RequestError("invalid", f"job {job.id} is not running (it is {job.state.value})")
        job.killed = True  # a job the user killed is not retried
        if job.shim_pid is None:  # just launched: signalled as soon as its shim reports its pid
            self.pending_kills[job.id] = (sig, escalate)
            return
        if not job.pid or not self._signal(job, sig, escalate):
            raise RequestError("invalid", f"job {job.id} has no process left to signal")

    def _signal(self, job: Job, sig: int, escalate: bool = True) -> bool:
        if not job.pid or not runner.kill_group(job.pid, sig):
            return False
        if escalate and sig != signal.SIGKILL:
            # Whatever ignores the signal, or outlives the job in its process group, is killed
            # after the grace period: nothing of a killed job survives.
            self.loop.call_later(self.config.kill_grace, runner.kill_group, job.pid, signal.SIGKILL)
        return True

    def clear_finished(self) -> int:
        done = [j for j in self.jobs.values() if j.state.is_done]
        for job in done:
            self.delete(job)
        return len(done)

    def make_urgent(self, job: Job) -> None:
        _check_waiting(job)
        self.queue.move_first(job)
        self.save(job)
        self.kick()

    def set_priority(self, job: Job, priority: int) -> None:
        _check_waiting(job)
        self.queue.set_priority(job, priority)
        self.save(job)
        self.kick()

    def swap(self, a: Job, b: Job) -> None:
        _check_waiting(a)
        _check_waiting(b)
        self.queue.swap(a, b)
        self.save(a)
        self.save(b)
        self.kick()

    def set_slots(self, slots: int) -> None:
        self.settings.slots = slots
        self.save_settings()
        self.kick()

    def set_logdir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise RequestError("invalid", f"{path} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise RequestError("invalid", f"{path} is not writable")
        self.settings.logdir = path
        self.save_settings()

    def shutdown_jobs(self) -> None:
        """Stop adopting: running jobs keep running in their own sessions."""
        self.adoption.close()
        self.launcher.close()
        self.gpu.close()


def snapshots_dir(savelist: str) -> str:
    """Where ``ts --snapshot`` copies code: beside the save-list, so ``-r`` may remove it."""
    return savelist + ".snapshots"


def _check_waiting(job: Job) -> None:
    if not job.state.is_waiting:
        raise RequestError("invalid", f"job {job.id} is not queued (it is {job.state.value})")
