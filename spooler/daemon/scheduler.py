"""Which waiting jobs may start now.  Pure: no I/O; the time is passed in; the daemon applies
the decisions.

Policy, in queue order (priority, then first in, first out):
- a held job (``--hold``), or one whose ``--begin`` time has not come, is passed over: it keeps
  its place and holds up nothing (the daemon's ``wakeups`` kick a pass at that time);
- a job whose dependencies have not all ended is passed over (jobs behind it may start);
- a ``-W`` job whose dependency failed, was skipped or was removed is skipped;
- a job that needs more slots than are free in its queue stops the pass for that queue, so a
  wide job is never starved by narrow ones queued after it; one wider than all its queue's slots
  waits for ``-S`` without blocking (so ``-S 0`` drains: nothing starts).  Each named queue
  (``--queue``) has slots of its own: a full queue holds up only its own jobs;
- GPU jobs never hold up CPU jobs.  The first GPU job that cannot start gets the GPUs that suit
  it *earmarked* as they come free (SLURM's reservation for the first waiting job), and later
  jobs may only take GPUs nobody has earmarked, so a 4-GPU job is not starved by a stream of
  1-GPU jobs queued after it;
- backfill (EASY, as SLURM's): a later job may use earmarked GPUs when its ``--time`` makes it
  end before the earliest moment the earmarked job could start, computed from the time limits of
  the jobs holding the GPUs it waits for.  A job without ``--time`` never backfills.

On a multi-user daemon (``limits`` given), jobs of the same priority take turns by user (fair
share) and a job over its user's limits waits with the reason (``fairshare``).

Two other policies exist for comparison (``TS_SCHED_POLICY``, used by ``bench/gpu_trace.py``):
``greedy`` (no earmarks: any job that fits starts, the old pass-over) and ``fcfs`` (strict
first come, first served among GPU jobs: the first that cannot start stops every later one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from spooler.daemon.fairshare import Limits, Usage, fair_order, over_limit
from spooler.daemon.gpus.placement import Want
from spooler.durations import format_duration
from spooler.jobs import Job, JobState

# outcome(job, dependency id): None while the dependency has not ended, else whether it succeeded.
Outcome = Callable[[Job, int], "bool | None"]


class Gpus(Protocol):
    """The GPUs for one pass (``gpus.placement.GpuPool``)."""

    def choose(self, want: Want, exclude: Iterable[int] = ()) -> list[int] | str: ...

    def fitting(self, want: Want, exclude: Iterable[int] = ()) -> tuple[list[int], list[str]]: ...

    def take(self, job: Job, indices: list[int], until: float | None = None) -> None: ...

    def start_by(self, want: Want, fit: list[int]) -> float | None: ...


@dataclass
class Earmark:
    """GPUs held for the first GPU job that cannot start."""

    job: Job
    gpus: list[int]  # free now, kept for it
    start_by: float | None  # the earliest it could start (time limits of the holders); None: unknown


@dataclass
class Plan:
    start: list[tuple[Job, list[int]]] = field(default_factory=list)  # with the GPUs reserved
    skip: list[tuple[Job, str]] = field(default_factory=list)
    allocating: list[tuple[Job, str]] = field(default_factory=list)
    earmark: Earmark | None = None
    backfilled: list[Job] = field(default_factory=list)  # started on earmarked GPUs
    gpus: Gpus | str | None = None  # the pool the pass placed jobs with (None: no GPU job reached)
    over_limit: list[tuple[Job, str]] = field(default_factory=list)  # waiting for its user's jobs


def dependency_verdict(job: Job, outcome: Outcome) -> tuple[bool, str]:
    """(ready, skip reason): ready once every dependency ended; a reason when it must be skipped."""
    for dep in job.after_ok:
        result = outcome(job, dep)
        if result is None:
            return False, ""
        if not result:
            return False, f"dependency {dep} did not end well"
    for dep in job.after:
        if outcome(job, dep) is None:
            return False, ""
    return True, ""


def plan(
    queue: Iterable[Job],
    free_slots: int,
    total_slots: int,
    outcome: Outcome,
    gpus: Callable[[], Gpus | str] = lambda: "no GPUs are managed here",
    *,
    now: float = 0.0,
    policy: str = "backfill",
    queues: Mapping[str, tuple[int, int]] | None = None,
    waiting: Mapping[str | None, int] | None = None,
    limits: Limits | None = None,
    usage: dict[str | None, Usage] | None = None,
) -> Plan:
    """``free_slots`` and ``total_slots`` are the default queue's; ``queues`` gives each named
    queue's (free, total), and ``waiting`` how many jobs of ``queue`` each queue has (None: the
    default), so the pass ends once every job left is in a full queue.  ``gpus()``: the pool,
    or why GPUs cannot be placed now (every GPU job then waits with it); called once, when the
    first GPU job is reached.  ``limits`` (multi-user): per-user limits and fair share, with
    ``usage`` what each user holds now (updated here as jobs are started)."""
    decisions = Plan()
    held = usage if usage is not None else {}
    if limits is not None:
        queue = fair_order(queue, held)
    free: dict[str | None, int] = {None: free_slots}
    total: dict[str | None, int] = {None: total_slots}
    for name, (queue_free, queue_total) in (queues or {}).items():
        free[name], total[name] = queue_free, queue_total
    full: set[str | None] = set()  # queues whose next job does not fit: the pass is over for them
    unseen = dict(waiting or {})  # jobs of each queue the pass has not reached yet
    unseen_open = sum(unseen.values()) if waiting is not None else -1  # ... of queues not full
    for job in queue:
        if unseen_open == 0:
            break  # every job left is in a full queue
        if unseen_open > 0:
            unseen[job.queue] = unseen.get(job.queue, 0) - 1
            if job.queue not in full:
                unseen_open -= 1
        if job.state is JobState.HELD or (job.begin_at is not None and job.begin_at > now):
            continue
        if job.queue in full:
            continue
        ready, skip_reason = dependency_verdict(job, outcome)
        if skip_reason:
            decisions.skip.append((job, skip_reason))
            continue
        if not ready:
            continue
        if job.slots > total.get(job.queue, 0):
            continue
        if limits is not None:
            why = over_limit(job, held.get(job.user) or Usage(), limits.of(job.user))
            if why:
                decisions.over_limit.append((job, why))
                continue
        if job.slots > free[job.queue]:
            full.add(job.queue)
            if unseen_open > 0:
                unseen_open -= unseen.get(job.queue, 0)
            if len(full) == len(free):
                break  # every queue is full: nothing later can start
            continue
        if job.gpus or job.gpu_indices:
            if decisions.gpus is None:
                decisions.gpus = gpus()
            placed = _place(job, decisions.gpus, decisions, now, policy)
            if placed is None:
                continue
        else:
            placed = []
        decisions.start.append((job, placed))
        free[job.queue] -= job.slots
        if limits is not None:
            held.setdefault(job.user, Usage()).add(job, len(placed))
    return decisions


def _place(job: Job, gpus: Gpus | str, decisions: Plan, now: float, policy: str) -> list[int] | None:
    """The GPUs the job starts on, or None (it waits, with its reason in ``decisions``)."""
    if isinstance(gpus, str):
        decisions.allocating.append((job, gpus))
        return None
    want = Want.of(job)
    until = now + job.time_limit if job.time_limit else None
    earmark = decisions.earmark
    if earmark is not None and policy == "fcfs":
        decisions.allocating.append((job, f"waiting behind job {earmark.job.id} (first come, first served)"))
        return None
    held_back = earmark.gpus if earmark is not None else []
    chosen = gpus.choose(want, exclude=held_back)
    if isinstance(chosen, list):
        gpus.take(job, chosen, until)
        return chosen
    if earmark is None:
        if policy != "greedy":
            fit, _ = gpus.fitting(want)
            fit = fit[: want.count]
            decisions.earmark = Earmark(job, fit, gpus.start_by(want, fit))
            chosen = f"{chosen}; {_held_for_it(decisions.earmark, now)}"
        decisions.allocating.append((job, chosen))
        return None
    if not held_back or isinstance(gpus.choose(want), str):
        decisions.allocating.append((job, chosen))  # earmarks are not what stops it
        return None
    if (
        policy == "backfill"
        and until is not None
        and earmark.start_by is not None
        and until <= earmark.start_by
    ):
        backfill = gpus.choose(want)
        assert isinstance(backfill, list)
        gpus.take(job, backfill, until)
        decisions.backfilled.append(job)
        return backfill
    decisions.allocating.append((job, _held_for_other(earmark, job, now)))
    return None


def _gpu_list(indices: list[int]) -> str:
    return f"GPU{'s' if len(indices) > 1 else ''} {', '.join(map(str, sorted(indices)))}"


def _held_for_it(earmark: Earmark, now: float) -> str:
    held = (
        f"{_gpu_list(earmark.gpus)} held for it"
        if earmark.gpus
        else "the next GPUs to come free are held for it"
    )
    if earmark.start_by is None:
        return f"{held} (when it can start is not known: a job holding GPUs it needs has no --time)"
    return f"{held}; it can start within {format_duration(earmark.start_by - now)} at the latest"


def _held_for_other(earmark: Earmark, job: Job, now: float) -> str:
    text = f"{_gpu_list(earmark.gpus)} held for job {earmark.job.id}, queued before it"
    if earmark.start_by is None:
        return text
    window = format_duration(earmark.start_by - now)
    if job.time_limit is None:
        return f"{text} (with --time under {window} it could run first)"
    return f"{text} (its --time {format_duration(job.time_limit)} would not end within {window})"
