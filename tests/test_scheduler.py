"""The scheduler's GPU rules, table-tested in-process: earmarks for the first waiting GPU job,
EASY backfill on time limits, and the greedy and strict first-come policies kept for comparison."""

from __future__ import annotations

from typing import Any

import pytest

from spooler.daemon.gpus.inventory import GpuInfo
from spooler.daemon.gpus.placement import GpuPool, Holder
from spooler.daemon.scheduler import Plan, plan
from spooler.jobs import JobState

NOW = 1_000_000.0


def gpus(n: int) -> list[GpuInfo]:
    return [GpuInfo(i, "Test GPU", f"GPU-test-{i}", 24000, 0) for i in range(n)]


def job(job_id: int, gpus: int = 0, **kwargs: Any) -> Any:
    from spooler.jobs import Job

    return Job(id=job_id, command=["true"], cwd="/", gpus=gpus, **kwargs)


def held(**by_gpu: tuple[int, float | None]) -> dict[int, list[Holder]]:
    """held(g0=(job id, until)) -> holders: GPU 0 held exclusively by that job until then."""
    return {int(k[1:]): [Holder(jid, None, until)] for k, (jid, until) in by_gpu.items()}


def schedule(queue: list[Any], pool: GpuPool, policy: str = "backfill", slots: int = 64) -> Plan:
    return plan(queue, slots, slots, lambda j, d: True, gpus=lambda: pool, now=NOW, policy=policy)


def started(decisions: Plan) -> dict[int, list[int]]:
    return {j.id: g for j, g in decisions.start}


def waiting(decisions: Plan) -> dict[int, str]:
    return {j.id: why for j, why in decisions.allocating}


def test_the_first_waiting_gpu_job_is_not_starved_by_later_small_ones() -> None:
    """The issue's scenario: 3 of 4 GPUs busy, a 4-GPU job, then 1-GPU jobs behind it."""
    pool = GpuPool(gpus(4), free_perc=90, holders=held(g0=(1, None), g1=(2, None), g2=(3, None)))
    big, small = job(10, 4), [job(11 + i, 1) for i in range(3)]
    decisions = schedule([big, *small], pool)
    assert started(decisions) == {}
    assert decisions.earmark is not None and decisions.earmark.job is big
    assert decisions.earmark.gpus == [3]
    assert "GPU 3 held for it" in waiting(decisions)[10]
    assert "GPU 3 held for job 10" in waiting(decisions)[11]


def test_greedy_policy_gives_the_freed_gpu_to_a_later_small_job() -> None:
    pool = GpuPool(gpus(4), free_perc=90, holders=held(g0=(1, None), g1=(2, None), g2=(3, None)))
    decisions = schedule([job(10, 4), job(11, 1), job(12, 1)], pool, policy="greedy")
    assert started(decisions) == {11: [3]}
    assert decisions.earmark is None


def test_jobs_that_fit_outside_the_earmark_still_start_and_cpu_jobs_are_never_held() -> None:
    pool = GpuPool(gpus(4), free_perc=90, holders=held(g0=(1, None)))
    exact = job(10, gpu_indices=[0, 1])  # -g 0,1: GPU 1 is earmarked for it, 2 and 3 are not
    decisions = schedule([exact, job(11, 1), job(12), job(13, 1), job(14, 1)], pool)
    assert decisions.earmark is not None and decisions.earmark.gpus == [1]
    assert started(decisions) == {11: [2], 12: [], 13: [3]}
    assert "GPU 1 held for job 10" in waiting(decisions)[14]


@pytest.mark.parametrize(
    ("time_limit", "backfills"),
    [
        (100, True),  # ends long before the big job could start
        (300, True),  # ends exactly when it could start
        (301, False),  # would delay it
        (None, False),  # no --time: never backfills
    ],
)
def test_backfill_only_when_the_time_limit_ends_before_the_earmarked_job_could_start(
    time_limit: int | None, backfills: bool
) -> None:
    # GPUs 0-2 are released at the latest at NOW+100, +200, +300: the 4-GPU job needs all three.
    holders = held(g0=(1, NOW + 100), g1=(2, NOW + 200), g2=(3, NOW + 300))
    pool = GpuPool(gpus(4), free_perc=90, holders=holders)
    decisions = schedule([job(10, 4), job(11, 1, time_limit=time_limit)], pool)
    assert decisions.earmark is not None and decisions.earmark.start_by == NOW + 300
    assert started(decisions) == ({11: [3]} if backfills else {})
    assert (decisions.backfilled == [decisions.start[0][0]]) if backfills else not decisions.backfilled
    if not backfills:
        reason = waiting(decisions)[11]
        assert "held for job 10" in reason and ("--time" in reason)


def test_no_backfill_when_a_holder_has_no_time_limit() -> None:
    holders = held(g0=(1, NOW + 100), g1=(2, None), g2=(3, NOW + 300))
    pool = GpuPool(gpus(4), free_perc=90, holders=holders)
    decisions = schedule([job(10, 4), job(11, 1, time_limit=10)], pool)
    assert decisions.earmark is not None and decisions.earmark.start_by is None
    assert started(decisions) == {}
    assert "not known" in waiting(decisions)[10]


def test_start_by_counts_only_the_gpus_still_needed() -> None:
    # Needs 2 more than the one free: the second-earliest release among the held ones.
    holders = held(g0=(1, NOW + 500), g1=(2, NOW + 50), g2=(3, NOW + 80))
    pool = GpuPool(gpus(4), free_perc=90, holders=holders)
    decisions = schedule([job(10, 3)], pool)
    assert decisions.earmark is not None and decisions.earmark.start_by == NOW + 80


def test_another_spoolers_lease_is_not_predictable() -> None:
    holders = {0: [Holder(-1, None, None, "another spooler (user bob)")], 1: [Holder(2, None, NOW + 10)]}
    pool = GpuPool(gpus(2), free_perc=90, holders=holders)
    decisions = schedule([job(10, 2), job(11, 1, time_limit=1)], pool)
    assert decisions.earmark is not None and decisions.earmark.start_by is None
    assert "another spooler (user bob)" in waiting(decisions)[10]


def test_backfilled_jobs_take_earmarked_gpus_one_at_a_time() -> None:
    holders = held(g0=(1, NOW + 1000), g1=(2, NOW + 1000))
    pool = GpuPool(gpus(4), free_perc=90, holders=holders)
    queue = [job(10, 4), job(11, 1, time_limit=60), job(12, 1, time_limit=60), job(13, 1, time_limit=60)]
    decisions = schedule(queue, pool)
    assert decisions.earmark is not None and decisions.earmark.gpus == [2, 3]
    assert started(decisions) == {11: [2], 12: [3]}
    assert 13 in waiting(decisions)


def test_fcfs_stops_every_later_gpu_job_but_not_cpu_jobs() -> None:
    pool = GpuPool(gpus(4), free_perc=90, holders=held(g0=(1, None), g1=(2, None), g2=(3, None)))
    decisions = schedule([job(10, 2), job(11, 1), job(12)], pool, policy="fcfs")
    assert started(decisions) == {12: []}
    assert "first come, first served" in waiting(decisions)[11]


def test_a_shared_job_earmarks_too() -> None:
    busy = [
        GpuInfo(0, "Test GPU", "GPU-test-0", 24000, 20000),
        GpuInfo(1, "Test GPU", "GPU-test-1", 24000, 0),
    ]
    pool = GpuPool(busy, free_perc=90, holders={})
    sharer = job(10, 2, gpu_mem_mib=8000)  # GPU 0 has only 4000 MiB free
    decisions = schedule([sharer, job(11, 1)], pool)
    assert decisions.earmark is not None and decisions.earmark.gpus == [1]
    assert started(decisions) == {}


def test_slots_still_bound_the_pass_and_zero_slots_start_nothing() -> None:
    pool = GpuPool(gpus(4), free_perc=90, holders={})
    assert started(schedule([job(1, 1), job(2, 1)], pool, slots=0)) == {}
    assert started(schedule([job(1, 1), job(2, 1), job(3)], pool, slots=1)) == {1: [0]}


def test_ignored_memory_counts_as_free_and_exclusive_mode_with_a_process_never_does() -> None:
    desktop = GpuInfo(0, "Test GPU", "GPU-test-0", 1000, 150)
    assert isinstance(GpuPool([desktop], free_perc=90, holders={}).choose(_want(1)), str)
    assert GpuPool([desktop], free_perc=90, holders={}, ignore_mib=200).choose(_want(1)) == [0]
    from spooler.daemon.gpus.inventory import GpuProcess

    locked = GpuInfo(0, "Test GPU", "GPU-test-0", 24000, 10, (GpuProcess(77, 10),), exclusive_process=True)
    reason = GpuPool([locked], free_perc=90, holders={}, ignore_mib=200).choose(_want(1))
    assert isinstance(reason, str) and "exclusive-process mode" in reason
    unlocked = GpuInfo(0, "Test GPU", "GPU-test-0", 24000, 10, (), exclusive_process=True)
    assert GpuPool([unlocked], free_perc=90, holders={}).choose(_want(1)) == [0]


def _want(count: int) -> Any:
    from spooler.daemon.gpus.placement import Want

    return Want(count)


# -- held jobs, --begin times and named queues (slots only, no GPUs) ----------------------------


def _cpu(job_id: int, **kwargs: Any) -> Any:
    return job(job_id, **kwargs)


@pytest.mark.parametrize(
    ("queue", "free", "queues", "expected"),
    [
        pytest.param([_cpu(1, state=JobState.HELD), _cpu(2)], 1, {}, [2], id="a held job is passed over"),
        pytest.param(
            [_cpu(1, begin_at=NOW + 60, slots=2), _cpu(2)], 1, {}, [2], id="a later --begin blocks nothing"
        ),
        pytest.param([_cpu(1, begin_at=NOW), _cpu(2)], 1, {}, [1], id="a --begin time that has come"),
        pytest.param(
            [_cpu(1), _cpu(2, queue="cpu"), _cpu(3, queue="cpu")],
            0,
            {"cpu": (1, 1)},
            [2],
            id="a named queue runs while the default one is full",
        ),
        pytest.param(
            [_cpu(1, queue="cpu", slots=2), _cpu(2, queue="cpu"), _cpu(3)],
            1,
            {"cpu": (1, 2)},
            [3],
            id="a wide job holds up only its own queue",
        ),
        pytest.param([_cpu(1, queue="gone"), _cpu(2)], 1, {}, [2], id="a job of a queue with no slots waits"),
        pytest.param(
            [_cpu(1), _cpu(2, queue="cpu")], 0, {"cpu": (0, 1)}, [], id="every queue full: nothing starts"
        ),
    ],
)
def test_held_begin_and_queues(
    queue: list[Any], free: int, queues: dict[str, tuple[int, int]], expected: list[int]
) -> None:
    decisions = plan(queue, free, 1, lambda j, d: True, now=NOW, queues=queues)
    assert [j.id for j, _ in decisions.start] == expected


def test_a_pass_ends_once_every_job_left_is_in_a_full_queue() -> None:
    queue = [_cpu(1, queue="cpu"), *(_cpu(i) for i in range(2, 1000))]
    visited: list[int] = []

    def walk() -> Any:
        for each in queue:
            visited.append(each.id)
            yield each

    decisions = plan(
        walk(), 0, 1, lambda j, d: True, now=NOW, queues={"cpu": (1, 1)}, waiting={None: 998, "cpu": 1}
    )
    assert [j.id for j, _ in decisions.start] == [1]
    assert visited == [1, 2, 3]  # (the third is taken from the queue, then the pass ends)
