"""The scheduling pass of a daemon whose jobs run in SLURM: what goes to ``sbatch``, and how.

SLURM places jobs on nodes and GPUs; what is left to the pass is what SLURM does not know:
the queue order, dependencies on jobs that have no SLURM id yet, ``--skip-if-exists``, and
``-S``, which here is how many of our jobs SLURM may run at once (``max_in_flight`` caps how
many are in SLURM at all).  Jobs ready at the same pass that SLURM would be asked for in the
same way (a sweep, a ``--batch``) go out as one job array, throttled to the share of ``-S``
left (``--array=0-N%S``): one ``sbatch`` call instead of one per run.

A dependency that is in SLURM, with no retry left to it, becomes ``--dependency`` and the job
goes to SLURM at once; one that may still be retried (a new SLURM job) keeps it here.
A submission is checked once, before any of its jobs is queued (``admit``): what SLURM
``sbatch --test-only`` refuses is refused to ``ts``, with SLURM's message.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import Callable
from itertools import groupby
from typing import TYPE_CHECKING, Any

from spooler.daemon.dispatch import Dispatcher
from spooler.daemon.launcher.spec import environment
from spooler.daemon.outcome import result_path
from spooler.daemon.scheduler import dependency_verdict
from spooler.daemon.slurm import commands
from spooler.daemon.slurm.backend import SlurmBackend, Submission
from spooler.daemon.slurm.script import Task, batch_script
from spooler.daemon.slurm.tools import Result
from spooler.daemon.terminals import close_pair
from spooler.jobs import Job, JobState
from spooler.protocol import E_INTERNAL, E_INVALID, RequestError
from spooler.protocol.requests import Submit

if TYPE_CHECKING:
    from spooler.daemon.backends import Binding

log = logging.getLogger("spooler")

# How long a submitter waits for ``sbatch --test-only`` (which retries a silent controller for
# longer) before its jobs are queued unchecked, to wait for the controller.
TEST_TIMEOUT = 5.0
# Submissions made this long after a check found the controller silent are checked again (a
# controller back before any squeue could say so, with no job of ours in SLURM to poll for).
RECHECK_AFTER = 30.0

# Per-task variables: what differs between the runs of a sweep.
_DAEMON_VARIABLES = ("SLURM_CONF", "PATH")


class SlurmDispatcher(Dispatcher):
    slurm: SlurmBackend  # set by the daemon with the backend
    binding: Binding  # each queue's [slurm] keys

    def schedule(self) -> None:
        self._kicked = False
        now = self.clock()
        ready: list[Job] = []
        takes = self.takes
        waiting = self.table.queue.per_queue
        if takes is not None and not any(count and takes(queue) for queue, count in waiting.items()):
            return  # nothing waits in a queue of SLURM's: a local job's end costs no walk of the queue
        for job in list(self.table.queue):
            if takes is not None and not takes(job.queue):
                continue  # a local queue's
            if job.state is JobState.HELD or (job.begin_at is not None and job.begin_at > now):
                continue
            ok, skip = dependency_verdict(job, self._outcome)
            if skip:
                self.events.end(job, JobState.SKIPPED, skip, at=now)
            elif not ok:
                continue
            elif job.skip_if_exists and os.path.exists(os.path.join(job.cwd, job.skip_if_exists)):
                self.events.end(
                    job, JobState.SKIPPED, f"{job.skip_if_exists} exists (--skip-if-exists)", at=now
                )
            elif why := _not_in_slurm(job):  # queued before its queue was bound to SLURM
                self.events.end(job, JobState.SKIPPED, why, at=now)
            else:
                ready.append(job)
        # Each queue's share of its -S left; max_in_flight caps all our jobs in SLURM together.
        weights = self.weights()
        shares: dict[str | None, int] = {}
        room = self.slurm.config.max_in_flight - len(self.slurm.in_slurm())
        for _, grouped in groupby(ready, key=_array_key):
            group = list(grouped)
            queue = group[0].queue
            if queue not in shares:
                shares[queue] = self.table.settings.slots_of(queue) - weights.get(queue, 0)
            while group and shares[queue] > 0 and room > 0:
                batch = group[: min(len(group), room)] if _array_key(group[0]) is not None else group[:1]
                group = group[len(batch) :]
                throttle = min(shares[queue], len(batch))
                self._submit(batch, throttle, now)
                shares[queue] -= throttle
                room -= len(batch)
        while self.space_waiters and self.space_waiters[0]():
            self.space_waiters.popleft()

    # -- share of -S ----------------------------------------------------------------------------

    def weights(self) -> dict[str | None, int]:
        """Per queue, how many of our jobs SLURM may run at once now: one per job, an array's
        throttle (an array's jobs are of one queue)."""
        total: dict[str | None, int] = {}
        for sub in self.slurm.submissions.values():
            queue = sub.jobs[0].queue
            total[queue] = total.get(queue, 0) + min(sub.throttle, len(sub.live))
        return total

    def rethrottle(self, queue: str | None, slots: int) -> None:
        """The queue's -S changed: each of its job arrays in SLURM gets its share anew, in the
        order they went out (``scontrol update ArrayTaskThrottle``), so that ``ts -S 40`` lets
        a sweep already in SLURM run 40 tasks at once, and a lower -S starts fewer (SLURM lets
        the running ones end).  A single job takes one of the slots; an array at least one
        (a throttle of 0 would be no limit at all)."""
        subs = [s for s in self.slurm.submissions.values() if s.live and s.jobs[0].queue == queue]
        left = slots - sum(1 for s in subs if s.jobs[0].slurm_task is None)
        for sub in subs:
            if sub.jobs[0].slurm_task is None:
                continue
            share = max(1, min(len(sub.live), left))
            left -= share
            array = next((j.slurm_id.split("_")[0] for j in sub.jobs if j.slurm_id), None)
            if array is None:
                continue  # an array whose sbatch has not answered keeps the throttle it went with
            # Sent even when the share is unchanged: an adopted array's throttle is a guess.
            old, sub.throttle = sub.throttle, share
            argv = ["scontrol", "update", f"JobId={array}", f"ArrayTaskThrottle={share}"]
            self.slurm.tools.run(argv, functools.partial(self._rethrottled, sub, old))

    def _rethrottled(self, sub: Submission, old: int, result: Result) -> None:
        if result.returncode != 0:  # SLURM keeps the old throttle: so must our share of -S
            log.warning("scontrol update ArrayTaskThrottle failed: %s", commands.error_line(result.stderr))
            sub.throttle = old
            self.slurm.kick()

    def admit(self, job: Job, request: Submit, answer: Callable[[RequestError | None], None]) -> bool:
        """Refuse what SLURM cannot do (raised at once), and what ``sbatch --test-only`` refuses
        (a bad partition, a request over a limit: told through ``answer``, True), so that a
        refusal queues nothing.  A controller that does not answer refuses nothing: the jobs
        wait, with that reason."""
        unsupported = {
            "-g": request.gpu_indices,
            "--gpu_mem": request.gpu_mem_mib,
            "-z": request.gzip,
            # Local mode sends the output to the submitter's terminal; SLURM writes it to a file.
            "-n with -f": request.no_output and request.foreground,
        }
        for option, given in unsupported.items():
            if given:
                bound = f" (queue {request.queue} runs its jobs in SLURM)" if request.queue else ""
                raise RequestError(E_INVALID, f"{option} is not available with the slurm backend{bound}")
        if self.slurm.controller_down and self.clock() - self.slurm.down_since < RECHECK_AFTER:
            return False  # found silent a moment ago: the jobs wait for it, unchecked
        config = self.binding.slurm_of(job.queue)
        ask = commands.sbatch_args(commands.request_of(job, config, "/dev/null"), test_only=True)

        def checked(result: Result) -> None:
            try:
                verdict = self._verdict(result)
            except Exception as exc:  # a bug must cost this submission, never leave it hanging
                log.exception("sbatch --test-only: cannot judge its answer")
                verdict = RequestError(E_INTERNAL, f"internal error: {exc}")
            answer(verdict)

        self.slurm.tools.run(ask, checked, stdin="#!/bin/sh\ntrue\n", timeout=TEST_TIMEOUT)
        return True

    def _verdict(self, result: Result) -> RequestError | None:
        if result.returncode == 0:
            return None
        problem = commands.error_line(result.stderr)
        if commands.unanswered(result):
            # Found silent: the next submissions skip the ask (and its wait) for a while, or
            # until a squeue or an sbatch gets an answer.
            self.slurm.not_answering(problem)
            return None
        return RequestError(E_INVALID, f"sbatch: {problem}")

    def _outcome(self, job: Job, dep: int) -> bool | None:
        """A dependency in SLURM, with no retry left, counts as met: SLURM holds the job for it."""
        outcome = self.table.dependency_outcome(job, dep)
        other = self.table.jobs.get(dep)
        if outcome is None and other is not None and _in_slurm_for_good(other) and other in self.running:
            return True
        return outcome

    def _submit(self, jobs: list[Job], throttle: int, now: float) -> None:
        token = secrets.token_hex(8)
        array = len(jobs) > 1
        first = jobs[0]
        settings = self.table.settings
        logdir = settings.logdir
        pattern = os.path.join(logdir, f"ts-out.{token}.%a" if array else f"ts-out.{token}")
        if first.log_name:
            pattern = os.path.join(logdir, first.log_name)
        envs: list[dict[str, str]] = []
        for index, job in enumerate(jobs):
            self.table.queue.remove(job)
            for dep in (*job.after, *job.after_ok):
                if dep in self.table.jobs and self.table.jobs[dep].state.is_done:
                    job.dep_outcomes[dep] = self.table.jobs[dep].succeeded
            close_pair(self.terminals.take(job.id))  # -nf: SLURM writes where it writes
            job.slurm_token, job.slurm_task = token, index if array else None
            job.slurm_id, job.slurm_info = None, {}
            job.log_path = pattern.replace("%a", str(index)) if job.store_output else None
            env = environment(
                self.table.env_of(job), settings.env_overrides, job, result_path(self.runs_dir, job.id)
            )
            if job.gpus:
                env.pop("CUDA_VISIBLE_DEVICES", None)  # SLURM sets it to the GPUs it gives
            envs.append(env)
            if job.state is JobState.QUEUED:
                job.transition(JobState.ALLOCATING, now)
            job.reason = "being submitted to SLURM"
            self.running.add(job)
            self.table.last_run = job.id
            self.table.record(job)  # the intent, with its token, before sbatch is called
        shared = {k: v for k, v in envs[0].items() if all(e.get(k) == v for e in envs[1:])}
        for name in _DAEMON_VARIABLES:
            if name in self.slurm.tools.env and name not in shared:
                shared[name] = self.slurm.tools.env[name]
        tasks = [
            Task(
                _argv(job),
                self.slurm.status_path(job),
                {k: v for k, v in env.items() if shared.get(k) != v},
                job.id,
            )
            for job, env in zip(jobs, envs, strict=True)
        ]
        output = pattern if first.store_output else "/dev/null"
        config = self.binding.slurm_of(first.queue)
        request = commands.request_of(first, config, output, token, self._dependencies(first))
        if array:
            request = _with_array(request, len(jobs), throttle)
        sub = Submission(jobs, request, batch_script(tasks), shared, throttle)
        try:
            self.table.store.commit()  # the intent is on disk before SLURM hears of the jobs
        except OSError as exc:
            log.error("could not sync the save-list before sbatch: %s", exc)
        self.slurm.submit(sub)

    def _dependencies(self, job: Job) -> tuple[tuple[str, ...], tuple[str, ...]]:
        def ids(deps: list[int]) -> tuple[str, ...]:
            found = (self.table.jobs.get(d) for d in deps)
            return tuple(o.slurm_id for o in found if o is not None and o.slurm_id and not o.state.is_done)

        return ids(job.after), ids(job.after_ok)


def _with_array(request: commands.Request, tasks: int, throttle: int) -> commands.Request:
    from dataclasses import replace

    return replace(request, tasks=tasks, throttle=throttle if throttle < tasks else None)


def _argv(job: Job) -> list[str]:
    return ["/bin/sh", "-c", job.command[0]] if job.shell else list(job.command)


def _in_slurm_for_good(job: Job) -> bool:
    """In SLURM, and its end there is its end here (no retry makes a new SLURM job)."""
    return bool(job.slurm_id) and job.attempt > job.max_retries


def _not_in_slurm(job: Job) -> str:
    """Why SLURM cannot run the job as it was queued ("" if it can): options ``admit`` refuses
    at submission, on a job queued while its queue still ran jobs here."""
    given = {"-g": job.gpu_indices, "--gpu_mem": job.gpu_mem_mib, "-z": job.gzip}
    options = [option for option, value in given.items() if value]
    if not options:
        return ""
    why = "cannot be honoured in SLURM (its queue was bound to SLURM after it was queued)"
    return f"{', '.join(options)} {why}"


def _array_key(job: Job) -> tuple[Any, ...] | None:
    """Jobs with the same key are asked of SLURM alike and may share one job array."""
    if job.after or job.after_ok or job.log_name:
        return None
    return (
        job.queue, job.cwd, job.env_key, job.label, job.sweep, job.slots, job.gpus, job.time_limit,
        job.store_output, job.stderr_apart,
    )  # fmt: skip
