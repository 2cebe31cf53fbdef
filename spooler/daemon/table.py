"""The job table: everything that is persisted, and nothing that lives only while the daemon runs.

It holds the jobs, the distinct captured environments, the next id, the order in which jobs
ended and the queue of waiting jobs, over the save-list (``store``: snapshot plus journal) and
its compaction in a forked child.  Every change to a job that must survive a restart goes
through :meth:`JobTable.save` (a user's request: it fails loudly) or :meth:`JobTable.record` (a
change the daemon made itself: a full disk must not stop the queue).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator

import msgpack

from spooler.daemon.compaction import Compactor
from spooler.daemon.config import Settings, StartupConfig
from spooler.daemon.jobqueue import JobQueue
from spooler.daemon.store import Snapshot, Store
from spooler.jobs import Job, JobState
from spooler.protocol import E_NOT_FOUND, RequestError

log = logging.getLogger("spooler")

# How long a submission's token is remembered: a client sends a submission again within
# seconds of the daemon's death (its reconnect starts a new one); minutes leave a wide margin.
TOKEN_RETENTION = 600.0


class JobTable:
    def __init__(self, config: StartupConfig, keep_fds: frozenset[int] = frozenset()) -> None:
        """``keep_fds``: the lock file, which a compaction child holds until its snapshot is in place."""
        self.settings: Settings = config.settings
        self.max_finished = config.max_finished
        self.store = Store(config.savelist, fsync=config.fsync)
        self.compactor = Compactor(self.store, self.snapshot, keep_fds)
        self.jobs: dict[int, Job] = {}
        self.queue = JobQueue()  # waiting jobs (queued, allocating) in the order they may start
        self.envs: dict[str, dict[str, str]] = {}
        self.next_id = 0
        self.last_added: int | None = None
        self.last_run: int | None = None
        self.done_order: OrderedDict[int, None] = OrderedDict()  # ended ids, oldest first
        self.warnings: list[str] = []
        # Recent submissions' tokens -> the ids of their jobs, oldest first (see Submit.token).
        self.tokens: OrderedDict[str, list[int]] = OrderedDict()

    # -- loading and compaction ------------------------------------------------------------

    def load(self) -> list[Job]:
        """Read the save-list; returns the jobs that were running (or paused) when the last daemon
        stopped."""
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
        return [j for j in self.jobs.values() if j.state.is_active]

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

    def compact_at_start(self) -> None:
        try:
            self.compact()
        except OSError as exc:  # a full disk: serve from the journal, compact later
            self.warnings.append(f"could not compact the save-list: {exc}")
            self.store.postpone_compaction()

    def commit(self) -> None:
        """Called before replies go out: make acknowledged changes durable, compact if due."""
        self.store.commit()
        if self.store.needs_compaction and not self.compactor.running:
            try:
                self._drop_unused_envs()  # before the fork: the child writes the state as it is then
                if not self.compactor.start():
                    self.compact()
            except OSError as exc:
                # The journal holds every change: only the compaction is put off.
                log.error("could not compact the save-list: %s", exc)
                self.store.postpone_compaction()

    def close(self) -> None:
        """At shutdown: the save-list is complete and synced when this returns."""
        self.compactor.wait()
        self.store.close()

    # -- changes ---------------------------------------------------------------------------

    def save(self, job: Job) -> None:
        self.store.put_job(job.to_record())

    def record(self, job: Job) -> None:
        """Save a change the daemon made itself (a job started or ended): a save-list that cannot
        be written (a full disk) must not stop the queue; the next compaction writes it all."""
        try:
            self.save(job)
        except (OSError, ValueError, TypeError, OverflowError) as exc:  # a full disk; a value
            log.error("could not record job %d in the save-list: %s", job.id, exc)
            self.store.missed()

    def save_settings(self) -> None:
        for key, value in self.settings.to_record().items():
            self.store.put_setting(key, value)

    def _env_key(self, env: dict[str, str]) -> str:
        """Identical environments (the usual case for a sweep) are stored once."""
        packed = msgpack.packb(sorted(env.items()), use_bin_type=True)
        key = hashlib.blake2b(packed, digest_size=12).hexdigest()
        if key not in self.envs:
            self.store.put_env(key, env)  # first: an environment not recorded is not reused
            self.envs[key] = env
        return sys.intern(key)

    def add(self, job: Job, env: dict[str, str]) -> None:
        """Queue a new job under the next id, recorded before it counts: raises OSError if the
        save-list cannot be written, and then nothing is queued."""
        job.id = self.next_id
        job.env_key = self._env_key(env)
        self.queue.add(job)
        try:
            self.save(job)
        except OSError:
            self.queue.remove(job)
            raise
        self.next_id += 1
        self.jobs[job.id] = job
        self.last_added = job.id
        if job.token is not None:
            self._forget_tokens(job.enqueue_time)
            self.tokens.setdefault(job.token, []).append(job.id)

    def keep_recent_tokens(self, now: float) -> None:
        """At start-up: remember the tokens of the submissions a client may still repeat."""
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            if job.token is not None:
                self.tokens.setdefault(job.token, []).append(job.id)
        self._forget_tokens(now)

    def _forget_tokens(self, now: float) -> None:
        """Tokens older than the retention are dropped, from the jobs too (so a compaction
        leaves them out): the memory they take stays bounded however long the list grows."""
        while self.tokens:
            token, ids = next(iter(self.tokens.items()))
            first = self.jobs.get(ids[0])
            if first is not None and first.enqueue_time > now - TOKEN_RETENTION:
                return
            del self.tokens[token]
            for job_id in ids:
                job = self.jobs.get(job_id)
                if job is not None:
                    job.token = None

    def ended(self, job: Job) -> list[Job]:
        """Note that the job ended; returns the oldest ended jobs beyond TS_MAXFINISHED, to forget."""
        self.record(job)
        self.done_order.pop(job.id, None)
        self.done_order[job.id] = None
        old: list[Job] = []
        while len(self.done_order) > self.max_finished:
            old_id, _ = self.done_order.popitem(last=False)
            other = self.jobs.get(old_id)
            if other is not None and other.state.is_done:
                old.append(other)
        return old

    def requeued(self, job: Job, *, new_seq: bool) -> None:
        """An ended job goes back in the queue (at the end, or at its old place for a retry)."""
        self.done_order.pop(job.id, None)
        self.queue.add(job, new_seq=new_seq)

    def delete(self, job: Job) -> None:
        """Forget a job that is not running; its dependants remember how it ended."""
        del self.jobs[job.id]
        self.done_order.pop(job.id, None)
        if job.state.is_waiting:
            self.queue.remove(job)
        outcome = job.succeeded
        # Waiting dependants, and skipped ones (``--requeue --cascade`` may run them again): the
        # ended jobs kept are at most TS_MAXFINISHED, so the cost stays bounded.
        skipped = (self.jobs[i] for i in self.done_order if self.jobs[i].state is JobState.SKIPPED)
        for other in [*self.queue, *skipped]:
            if job.id in other.after or job.id in other.after_ok:
                other.dep_outcomes[job.id] = outcome
                self.record(other)
        self.store.delete_job(job.id)

    def snapshot_in_use(self, path: str) -> bool:
        return any(other.snapshot == path for other in self.jobs.values())

    # -- lookups ---------------------------------------------------------------------------

    def get(self, job_id: int | None, default: str = "added", running: Iterable[Job] = ()) -> Job:
        """The job with this id; without one, the last run job (``default="run"``) or the job at
        the tail of the list (``"added"``, see :meth:`tail`)."""
        if job_id is None:
            job_id = self.last_run if default == "run" else self.tail(running)
            if job_id is None or job_id not in self.jobs:
                if default == "run" and self.last_added in self.jobs:
                    job_id = self.last_added
                else:
                    raise RequestError(E_NOT_FOUND, "no jobs in the queue")
        job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(E_NOT_FOUND, f"job {job_id} does not exist")
        return job

    def tail(self, running: Iterable[Job]) -> int | None:
        """What the original's id-less actions (``-w``, ``-r``, ``-u``, ``-s``, ...) take as "the
        last added job": the job at the tail of the queue (so after ``-u`` moved the last job to
        the front, the one now last; after ``-r`` removed it, the one before), else the last
        running one, else the one that ended last."""
        last = self.queue.last()
        if last is not None:
            return last.id
        started = max(running, key=lambda j: j.id, default=None)
        if started is not None:
            return started.id
        return next(reversed(self.done_order), None)

    def dependency_outcome(self, job: Job, dep: int) -> bool | None:
        """None while the dependency has not ended, else whether it succeeded."""
        other = self.jobs.get(dep)
        if other is None:
            return job.dep_outcomes.get(dep, False)
        if not other.state.is_done:
            return None
        return other.succeeded

    def ended_in_order(self) -> Iterator[Job]:
        """Ended jobs in the order they ended (as the original's ``ts -l``)."""
        return (self.jobs[i] for i in self.done_order if i in self.jobs)

    def env_of(self, job: Job) -> dict[str, str]:
        return self.envs.get(job.env_key, {})


def ensure_dirs(savelist: str, runs_dir: str) -> None:
    os.makedirs(os.path.dirname(savelist), mode=0o700, exist_ok=True)
    os.makedirs(runs_dir, mode=0o700, exist_ok=True)
