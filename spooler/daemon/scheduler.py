"""Which waiting jobs may start now.  Pure: no I/O, no clock; the daemon applies the decisions.

Policy, in queue order:
- a job whose dependencies have not all ended is passed over (jobs behind it may start);
- a ``-W`` job whose dependency failed, was skipped or was removed is skipped;
- a job that needs GPUs that are not free is passed over with the reason (it is *allocating*),
  so GPU jobs never hold up CPU jobs;
- a job that needs more slots than are free stops the pass, so a wide job is never starved by
  narrow ones queued after it; one wider than all the slots waits for ``-S`` without blocking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from spooler.jobs import Job

# outcome(job, dependency id): None while the dependency has not ended, else whether it succeeded.
Outcome = Callable[[Job, int], "bool | None"]
# place(job): the GPU indices reserved for a job that needs GPUs, or why it must wait.
Place = Callable[[Job], "list[int] | str"]


def _no_gpus(job: Job) -> list[int] | str:
    return "no GPUs are managed here"


@dataclass
class Plan:
    start: list[tuple[Job, list[int]]] = field(default_factory=list)  # with the GPUs reserved
    skip: list[tuple[Job, str]] = field(default_factory=list)
    allocating: list[tuple[Job, str]] = field(default_factory=list)


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
    queue: Iterable[Job], free_slots: int, total_slots: int, outcome: Outcome, place: Place = _no_gpus
) -> Plan:
    decisions = Plan()
    for job in queue:
        ready, skip_reason = dependency_verdict(job, outcome)
        if skip_reason:
            decisions.skip.append((job, skip_reason))
            continue
        if not ready:
            continue
        if job.slots > total_slots:
            continue
        if job.slots > free_slots:
            break
        placed = place(job) if job.gpus or job.gpu_indices else []
        if isinstance(placed, str):
            decisions.allocating.append((job, placed))
            continue
        decisions.start.append((job, placed))
        free_slots -= job.slots
    return decisions
