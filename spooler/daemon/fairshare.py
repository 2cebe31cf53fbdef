"""Per-user limits and fair share on a multi-user daemon.  Pure: the scheduler asks, nothing here
touches the job table or the clock.

- Limits (config ``[limits]``, with ``[limits.users.NAME]`` overrides): at most so many running
  jobs and so many GPUs held per user at once; a job over its user's limit waits with the reason.
  ``max_queued_per_user`` is checked when a job is queued (``handlers.submit``).
- Fair share: between users at the same priority, the next job to start is the oldest waiting
  job of the user who holds the fewest GPUs (then slots) right now, counting the jobs this pass
  has already decided to start, so one user's 500-job sweep cannot keep another's single job
  waiting behind it.  Within a user, queue order holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from spooler.jobs import Job


@dataclass(frozen=True)
class UserLimits:
    """None: no limit."""

    max_running: int | None = None
    max_gpus: int | None = None
    max_queued: int | None = None


@dataclass(frozen=True)
class Limits:
    default: UserLimits = field(default_factory=UserLimits)
    users: Mapping[str, UserLimits] = field(default_factory=dict)

    def of(self, user: str | None) -> UserLimits:
        return self.users.get(user or "", self.default)


@dataclass
class Usage:
    """What one user holds right now."""

    running: int = 0
    gpus: int = 0
    slots: int = 0

    def add(self, job: Job, gpus: int) -> None:
        self.running += 1
        self.gpus += gpus
        self.slots += job.slots


def usage_of(running: Iterable[Job]) -> dict[str | None, Usage]:
    held: dict[str | None, Usage] = {}
    for job in running:
        held.setdefault(job.user, Usage()).add(job, len(job.assigned_gpus))
    return held


def gpus_wanted(job: Job) -> int:
    return len(job.gpu_indices) if job.gpu_indices else job.gpus


def over_limit(job: Job, held: Usage, limits: UserLimits) -> str:
    """Why the job must wait for its user's other jobs, or ""."""
    if limits.max_running is not None and held.running + 1 > limits.max_running:
        return f"{job.user} already runs {held.running} job(s) (max_running_per_user = {limits.max_running})"
    wanted = gpus_wanted(job)
    if wanted and limits.max_gpus is not None and held.gpus + wanted > limits.max_gpus:
        return (
            f"{job.user} holds {held.gpus} GPU(s) and this job needs {wanted} "
            f"(max_gpus_per_user = {limits.max_gpus})"
        )
    return ""


def fair_order(queue: Iterable[Job], held: Mapping[str | None, Usage]) -> Iterator[Job]:
    """The waiting jobs in the order they are considered: by priority, and within a priority by
    turns, each turn to the user holding the fewest GPUs, then slots (ties: the older job).

    Lazy, and ``held`` is read at each step, so the scheduler's updates (jobs it starts) count.
    """
    level: list[Job] = []
    for job in queue:  # queue order: priority first, then first in, first out
        if level and job.priority != level[0].priority:
            yield from _by_turns(level, held)
            level = []
        level.append(job)
    yield from _by_turns(level, held)


def _by_turns(level: list[Job], held: Mapping[str | None, Usage]) -> Iterator[Job]:
    per_user: dict[str | None, list[Job]] = {}
    for job in reversed(level):  # each user's list pops its oldest job from the end
        per_user.setdefault(job.user, []).append(job)
    none = Usage()
    while per_user:
        user = min(
            per_user,
            key=lambda u: (held.get(u, none).gpus, held.get(u, none).slots, per_user[u][-1].seq),
        )
        jobs = per_user[user]
        yield jobs.pop()
        if not jobs:
            del per_user[user]
