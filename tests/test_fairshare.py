"""Per-user limits and fair share in the pure scheduler, table-tested in-process."""

from __future__ import annotations

from typing import Any

import pytest

from spooler.daemon.fairshare import Limits, Usage, UserLimits, fair_order, usage_of
from spooler.daemon.gpus.inventory import GpuInfo
from spooler.daemon.gpus.placement import GpuPool, Holder
from spooler.daemon.scheduler import Plan, plan
from spooler.jobs import Job, JobState

NOW = 1_000_000.0


def job(job_id: int, user: str, gpus: int = 0, priority: int = 0, slots: int = 1) -> Job:
    return Job(id=job_id, command=["true"], cwd="/", gpus=gpus, user=user, uid=hash(user) % 60000,
               priority=priority, seq=float(job_id), slots=slots)  # fmt: skip


def running(job_id: int, user: str, gpus: list[int] | None = None, slots: int = 1) -> Job:
    started = job(job_id, user, len(gpus or []), slots=slots)
    started.state = JobState.RUNNING
    started.assigned_gpus = list(gpus or [])
    return started


def pool(n: int, busy: list[Job]) -> GpuPool:
    holders = {g: [Holder(j.id, None, None)] for j in busy for g in j.assigned_gpus}
    return GpuPool(
        [GpuInfo(i, "Test GPU", f"GPU-test-{i}", 24000, 0) for i in range(n)], free_perc=90, holders=holders
    )


def schedule(queue: list[Job], busy: list[Job], limits: Limits, slots: int = 64, gpus: int = 8) -> Plan:
    gpu_pool = pool(gpus, busy)
    return plan(
        queue, slots - sum(j.slots for j in busy), slots, lambda j, d: True, gpus=lambda: gpu_pool,
        now=NOW, limits=limits, usage=usage_of(busy),
    )  # fmt: skip


def started(decisions: Plan) -> list[int]:
    return [j.id for j, _ in decisions.start]


# (what runs, what waits in queue order, slots, limits) -> the ids started, in order
CASES: list[tuple[str, list[Job], list[Job], int, Limits, list[int]]] = [
    (
        "a sweep queued first does not keep another user's single job behind it",
        [],
        [job(1, "ann"), job(2, "ann"), job(3, "ann"), job(4, "bob")],
        2,
        Limits(),
        [1, 4],
    ),
    (
        "the user holding fewer GPUs goes first",
        [running(10, "ann", [0, 1])],
        [job(1, "ann", 1), job(2, "bob", 1)],
        2,
        Limits(),
        [2],
    ),
    (
        "then the user holding fewer slots",
        [running(10, "ann", slots=2)],
        [job(1, "ann"), job(2, "bob")],
        3,
        Limits(),
        [2],
    ),
    (
        "turns: one job each, oldest first within a user",
        [],
        [job(1, "ann"), job(2, "ann"), job(3, "bob"), job(4, "bob"), job(5, "cat")],
        5,
        Limits(),
        [1, 3, 5, 2, 4],
    ),
    (
        "priority comes before fair share",
        [],
        [job(1, "ann", priority=5), job(2, "ann", priority=5), job(3, "bob")],
        2,
        Limits(),
        [1, 2],
    ),
    (
        "max_running_per_user = 1: the user's second job waits while the other's runs",
        [running(10, "ann")],
        [job(1, "ann"), job(2, "bob")],
        8,
        Limits(UserLimits(max_running=1)),
        [2],
    ),
    (
        "max_gpus_per_user counts the GPUs held and wanted",
        [running(10, "ann", [0, 1])],
        [job(1, "ann", 1), job(2, "ann"), job(3, "bob", 2)],
        8,
        Limits(UserLimits(max_gpus=2)),
        [3, 2],  # bob holds no GPU: his turn first
    ),
    (
        "a user's own limits override the default",
        [running(10, "ann")],
        [job(1, "ann"), job(2, "bob"), job(3, "bob")],
        8,
        Limits(UserLimits(max_running=1), {"ann": UserLimits(max_running=3)}),
        [2, 1],
    ),
]


@pytest.mark.parametrize(("busy", "queue", "slots", "limits", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_limits_and_fair_share(
    busy: list[Job], queue: list[Job], slots: int, limits: Limits, expected: Any
) -> None:
    assert started(schedule(queue, busy, limits, slots=slots)) == expected


def test_a_job_over_its_users_limit_waits_with_the_reason() -> None:
    decisions = schedule([job(1, "ann")], [running(10, "ann")], Limits(UserLimits(max_running=1)))
    [(waiting, why)] = decisions.over_limit
    assert waiting.id == 1 and why == "ann already runs 1 job(s) (max_running_per_user = 1)"


def test_without_limits_the_queue_order_is_unchanged() -> None:
    queue = [job(1, "ann"), job(2, "ann"), job(3, "bob")]
    decisions = plan(queue, 2, 2, lambda j, d: True, now=NOW)
    assert started(decisions) == [1, 2]


def test_fair_order_reads_what_is_held_as_it_goes() -> None:
    held: dict[str | None, Usage] = {}
    order = fair_order([job(1, "ann"), job(2, "ann"), job(3, "bob")], held)
    first = next(order)
    held.setdefault(first.user, Usage()).add(first, 4)
    assert [first.id, *(j.id for j in order)] == [1, 3, 2]
