"""Our jobs in SLURM: submitting them, watching them with one ``squeue`` call, cancelling them,
and finding them again after a restart.

A job handed to SLURM stays in the running registry (it holds its share of ``-S``) from the
moment it is submitted until it ends: ``allocating`` while SLURM keeps it pending (its reason is
SLURM's), ``running`` once SLURM runs it.  Before ``sbatch`` is called the job's *token* is
recorded in the journal (the intent); the token travels in ``--comment``.  A daemon killed
between ``sbatch`` and recording the SLURM id leaves a job with a token and no id: the next
daemon looks for the token in ``squeue`` before it submits anything again, so no job is
submitted twice and none is lost.  (``sbatch`` itself dies with the daemon that ran it, so it
cannot submit after that look.)

Polling is one ``squeue --me`` call for every job, every ``poll_interval`` seconds while jobs
are in SLURM, backing off to eight times that while nothing changes.  How a job ended comes
from the exit status its batch script wrote (``script``), not from accounting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from spooler.daemon.config_file import SlurmConfig
from spooler.daemon.events import Events
from spooler.daemon.launcher.spec import Launch
from spooler.daemon.running import RunningJobs
from spooler.daemon.slurm import commands
from spooler.daemon.slurm.ending import end_job, status_path
from spooler.daemon.slurm.polling import Poller
from spooler.daemon.slurm.records import Records
from spooler.daemon.slurm.tools import Result, Tools
from spooler.daemon.table import JobTable
from spooler.jobs import Job, JobState

log = logging.getLogger("spooler")

NEVER_SATISFIED = "DependencyNeverSatisfied"
ANNOUNCE_TRIES = 200  # 10 s for a running job's log to appear on the shared file system
ABSENT_POLLS = 3  # a job is gone from SLURM once this many squeue calls in a row missed it


@dataclass
class Submission:
    """One ``sbatch`` call: a job, or the tasks of one job array."""

    jobs: list[Job]
    request: commands.Request
    script: str
    env: dict[str, str]
    throttle: int = 1  # how many of its tasks SLURM may run at once (its share of -S)
    live: set[int] = field(default_factory=set)  # ids of its jobs not ended yet


class SlurmBackend:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: JobTable,
        running: RunningJobs,
        events: Events,
        tools: Tools,
        config: SlurmConfig,
        runs_dir: str,
        kick: Callable[[], None],
        started: Callable[[Job], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.loop = loop
        self.table = table
        self.running = running
        self.events = events
        self.tools = tools
        self.config = config
        self.runs_dir = runs_dir
        self.kick = kick
        self.started = started  # SLURM runs it now: waiters, the time limit
        self.clock = clock
        self.submissions: dict[str, Submission] = {}  # token -> what went out under it
        self.unsubmitted: set[int] = set()  # job ids with a token and no SLURM id, to look for
        self.controller_down = ""  # why the last call failed, while the controller does not answer
        self.down_since = 0.0  # when a call last found it silent
        self.poller = Poller(
            loop, tools, config.poll_interval, lambda: bool(self.in_slurm()), self._apply, self.not_answering
        )
        self._cancel_when_submitted: set[int] = set()
        self._learnt: dict[int, int] = {}  # job id -> the last squeue started when its id (or failure) came
        self._absent: dict[int, int] = {}  # job id -> squeue calls in a row that did not list it
        self.announced: set[int] = set()  # running jobs whose start was told (their log exists)
        self.records = Records(
            tools, clock, self.status_path, self._watched, self._end, self._still_absent, self._missed
        )
        self.closed = False

    # -- the Backend seam (spooler.daemon.dispatch) -------------------------------------------

    def start(self) -> None:
        self.poll_soon()

    def launch(self, spec: Launch, terminal: tuple[int, int] | None = None, keep: Sequence[int] = ()) -> None:
        raise NotImplementedError("jobs reach SLURM through SlurmBackend.submit")

    def close(self) -> None:
        """Jobs stay in SLURM; the next daemon finds them by their tokens."""
        self.closed = True
        self.poller.close()

    # -- submitting -----------------------------------------------------------------------------

    def submit(self, sub: Submission) -> None:
        """The jobs' tokens are in the journal already: now ``sbatch``."""
        token = sub.request.token
        sub.live = {j.id for j in sub.jobs}
        self.submissions[token] = sub
        self.tools.run(
            commands.sbatch_args(sub.request),
            lambda result: self._submitted(sub, result),
            stdin=sub.script,
            env=sub.env,
            die_with_daemon=True,
        )

    def _submitted(self, sub: Submission, result: Result) -> None:
        if self.closed:
            return
        jobs = [j for j in sub.jobs if j in self.running]
        if result.returncode == 0:
            try:
                slurm_id = commands.parse_sbatch(result.stdout)
            except ValueError as exc:
                result = Result(1, result.stdout, str(exc))
            else:
                self.controller_down = ""
                for job in jobs:
                    job.slurm_id = slurm_id if sub.request.tasks is None else f"{slurm_id}_{job.slurm_task}"
                    self._learnt[job.id] = self.poller.seq
                    job.reason = "submitted to SLURM"
                    self.table.record(job)
                    if job.id in self._cancel_when_submitted:
                        self._cancel_when_submitted.discard(job.id)
                        self.cancel(job)
                self.kick()  # jobs that depend on these may go to SLURM now
                self.poll_soon()
                return
        problem = commands.error_line(result.stderr)
        if commands.unanswered(result):
            # It may have gone through: look for its token before submitting it again.
            self.controller_down = problem
            for job in jobs:
                self.unsubmitted.add(job.id)
                self._learnt[job.id] = self.poller.seq
                self._set_reason(job, f"SLURM controller not answering ({problem}); will retry")
            self.poll_soon()
            return
        self.controller_down = ""  # it answered, with a refusal
        log.warning("sbatch refused jobs %s: %s", [j.id for j in jobs], problem)
        self.submissions.pop(sub.request.token, None)
        for job in jobs:
            self.events.end(job, JobState.SKIPPED, f"sbatch refused it: {problem}")

    def adopt(self, jobs: Sequence[Job]) -> None:
        """Jobs an earlier daemon sent to SLURM (or was about to): watch them again."""
        by_token: dict[str, list[Job]] = {}
        for job in jobs:
            self.running.add(job, adopted=True)
            if job.slurm_token:
                by_token.setdefault(job.slurm_token, []).append(job)
            if not job.slurm_id:
                self.unsubmitted.add(job.id)
            elif job.state is JobState.RUNNING:
                self._announce(job)
        for token, members in by_token.items():
            request = commands.Request(name="", cwd="", output="", token=token)
            throttle = max(1, min(len(members), self.table.settings.slots_of(members[0].queue)))
            self.submissions[token] = Submission(members, request, "", {}, throttle, {j.id for j in members})
        self.poll_soon()

    def _announce(self, job: Job, tries: int = 0) -> None:
        """Tell who waits for the job's start, once its log exists: SLURM says RUNNING when it
        has allocated the job, a moment before the node has started it (``ts -t`` reads the log)."""
        if job not in self.running or job.state is not JobState.RUNNING:
            return
        if job.log_path and not os.path.exists(job.log_path) and tries < ANNOUNCE_TRIES:
            self.loop.call_later(0.05, self._announce, job, tries + 1)
            return
        self.announced.add(job.id)
        self.started(job)

    def has_started(self, job: Job) -> bool:
        return job.id in self.announced

    # -- cancelling -----------------------------------------------------------------------------

    def cancel(self, job: Job) -> bool:
        """scancel the job (the whole job: every process of it, on every node)."""
        if not job.slurm_id:
            self._cancel_when_submitted.add(job.id)
            return True
        self.tools.run(["scancel", job.slurm_id], self._cancelled)
        return True

    def _cancelled(self, result: Result) -> None:
        if result.returncode != 0:
            log.warning("scancel failed: %s", commands.error_line(result.stderr))
        self.poll_soon()

    # -- polling (spooler.daemon.slurm.polling) ------------------------------------------------

    def poll_soon(self, delay: float = 0.0) -> None:
        self.poller.soon(delay)

    def in_slurm(self) -> list[Job]:
        return [j for j in self.running if j.slurm_token]

    def not_answering(self, why: str) -> None:
        """A SLURM tool found the controller silent: jobs waiting for it say so, and what would
        ask it (``sbatch --test-only`` for each submission) skips the ask until it answers."""
        self.controller_down = why
        self.down_since = self.clock()
        for job in self.in_slurm():
            if job.state is JobState.ALLOCATING:
                self._set_reason(job, f"SLURM controller not answering ({why})")

    def _apply(self, rows: list[commands.QueueRow], seq: int) -> bool:
        """What one squeue said (True if anything changed).  A job whose id (or whose failed
        sbatch) we learnt while this squeue ran may be missing from it: the next one judges it."""
        self.controller_down = ""
        by_id = {row.id: row for row in rows}
        by_token: dict[str, list[commands.QueueRow]] = {}
        for row in rows:
            if row.token:
                by_token.setdefault(row.token, []).append(row)
        changed = False
        for job in self.in_slurm():
            if not job.slurm_id:
                changed |= self._find(job, by_token, seq)
                continue
            found = by_id.get(job.slurm_id)
            if found is not None:
                self._absent.pop(job.id, None)
                self.records.listed(job)
                changed |= self._update(job, found)
            elif self._learnt.get(job.id, -1) < seq:
                # A task of a job array may be missing from one squeue while SLURM splits it
                # off the array's record: only a job missing from several is gone.
                self._absent[job.id] = self._absent.get(job.id, 0) + 1
                if self._absent[job.id] >= ABSENT_POLLS:
                    changed |= self.records.missing(job)
        return changed

    def _find(self, job: Job, by_token: dict[str, list[commands.QueueRow]], seq: int) -> bool:
        """A job with a token and no SLURM id: in SLURM after all, or to be submitted again."""
        if job.id not in self.unsubmitted or self._learnt.get(job.id, -1) >= seq:
            return False  # its sbatch is still running, or ended while this squeue ran
        rows = by_token.get(job.slurm_token or "", [])
        if rows:
            array = rows[0].array_job
            job.slurm_id = array if job.slurm_task is None else f"{array}_{job.slurm_task}"
            log.info("job %d found in SLURM as %s by its token", job.id, job.slurm_id)
            if job.id in self._cancel_when_submitted:
                self._cancel_when_submitted.discard(job.id)
                self.cancel(job)
        elif self.controller_down:
            return False
        elif job.killed:  # ts -k while its sbatch failed: it never reached SLURM, nor will
            self._forget(job)
            self.events.end(job, JobState.SKIPPED, "killed (ts -k) before it started")
            return True
        else:
            self._resubmit(job)
        self.unsubmitted.discard(job.id)
        self.table.record(job)
        return True

    def _resubmit(self, job: Job) -> None:
        """Never reached SLURM: back to the queue, at its place, for the next pass."""
        self.running.remove(job)
        self._forget(job)
        job.slurm_token = job.slurm_id = None
        job.slurm_task = None
        job.transition(JobState.QUEUED, self.clock())
        self.table.requeued(job, new_seq=False)
        self.kick()

    def _update(self, job: Job, row: commands.QueueRow) -> bool:
        info = {"state": row.state, "partition": row.partition, "node": row.nodes, "gres": row.gres}
        if "gpus" in job.slurm_info and row.state == "RUNNING" and row.nodes == job.slurm_info["node"]:
            info["gpus"] = job.slurm_info["gpus"]  # what ts -i learnt, until SLURM moves the job
        changed = info != job.slurm_info
        job.slurm_info = info
        seen = commands.verdict(row.state, row.reason)
        if seen.ended:
            start, end = commands.timestamp(row.start), commands.timestamp(row.end)
            if self.records.put_off(job, seen, start, end):
                return False
            self._end(job, seen, start, end)
            return True
        if seen.state is JobState.RUNNING and job.state is JobState.ALLOCATING:
            job.transition(JobState.RUNNING, commands.timestamp(row.start) or self.clock())
            self._announce(job)
            changed = True
        if job.state is JobState.ALLOCATING:
            if row.reason == NEVER_SATISFIED:
                job.reason = "a dependency did not end well"
                self._cancel_and_skip(job)
                return True
            waits = row.reason not in ("", "None")
            changed |= self._set_reason(job, f"SLURM: {row.reason}" if waits else "pending in SLURM")
        elif changed:
            self.table.record(job)
        return changed

    def _cancel_and_skip(self, job: Job) -> None:
        if job.slurm_id:
            self.tools.run(["scancel", job.slurm_id], lambda _: None)
        self._forget(job)
        self.events.end(job, JobState.SKIPPED, job.reason)

    def _end(
        self, job: Job, seen: commands.Verdict, start: float | None = None, end: float | None = None
    ) -> None:
        self._forget(job)
        self.records.forget(job)
        end_job(self.events, job, seen, self.status_path(job), start or self.clock(), end)

    def _watched(self, job: Job) -> bool:
        return job in self.running and not self.closed

    def _still_absent(self, job: Job) -> bool:
        return self._absent.get(job.id, 0) >= ABSENT_POLLS

    def _missed(self, job: Job) -> None:
        self._absent.pop(job.id, None)

    def _forget(self, job: Job) -> None:
        sub = self.submissions.get(job.slurm_token or "")
        if sub is not None:
            sub.live.discard(job.id)
            if not sub.live:
                del self.submissions[job.slurm_token or ""]
        self.unsubmitted.discard(job.id)
        self.announced.discard(job.id)
        self._learnt.pop(job.id, None)
        self._absent.pop(job.id, None)

    def _set_reason(self, job: Job, reason: str) -> bool:
        if job.reason == reason:
            return False
        job.reason = reason
        self.table.record(job)
        return True

    def status_path(self, job: Job) -> str:
        return status_path(job, self.runs_dir)

    # -- ts -i ----------------------------------------------------------------------------------

    def details(self, job: Job) -> None:
        """The GPUs SLURM gave a running job (``scontrol -d``), asked when ``ts -i`` wants them."""
        if job.state is not JobState.RUNNING or not job.slurm_id or not job.slurm_info.get("gres"):
            return
        if "gpus" in job.slurm_info or self.controller_down:
            return  # known already (they do not change while it runs), or nobody to ask
        result = self.tools.run_now(["scontrol", "-o", "-d", "show", "job", job.slurm_id], timeout=2.0)
        if commands.unanswered(result):
            self.not_answering(commands.error_line(result.stderr))
            return
        for fields in commands.parse_scontrol(result.stdout):
            gpus = commands.allocated_gpus(fields)
            if gpus:
                job.slurm_info = {**job.slurm_info, "gpus": gpus}
