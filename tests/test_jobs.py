"""The job state machine and the scheduler's decisions: pure, table-driven."""

from __future__ import annotations

import pytest

from spooler.daemon.gpus.inventory import GpuInfo
from spooler.daemon.gpus.placement import GpuPool, Holder
from spooler.daemon.scheduler import plan
from spooler.jobs import Job, JobState, TransitionError

S = JobState
ALLOWED = {
    (S.QUEUED, S.ALLOCATING),
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.SKIPPED),
    (S.ALLOCATING, S.QUEUED),
    (S.ALLOCATING, S.RUNNING),
    (S.ALLOCATING, S.SKIPPED),
    (S.RUNNING, S.FINISHED),
    (S.RUNNING, S.LOST),
    (S.RUNNING, S.TIMEOUT),
    (S.RUNNING, S.QUEUED),  # its launch never reached a launcher: it never ran
    (S.FINISHED, S.QUEUED),
    (S.SKIPPED, S.QUEUED),
    (S.LOST, S.QUEUED),
    (S.TIMEOUT, S.QUEUED),
    (S.QUEUED, S.HELD),
    (S.ALLOCATING, S.HELD),
    (S.HELD, S.QUEUED),
    (S.RUNNING, S.PAUSED),
    (S.PAUSED, S.RUNNING),
    (S.PAUSED, S.FINISHED),
    (S.PAUSED, S.LOST),
    (S.PAUSED, S.TIMEOUT),
}


def gpu(index: int, used: int = 0) -> GpuInfo:
    return GpuInfo(index, "Test GPU", f"GPU-test-{index}", 24000, used)


def make(job_id: int = 1, **kwargs: object) -> Job:
    return Job(id=job_id, command=["true"], cwd="/", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
def test_transitions(old: JobState, new: JobState) -> None:
    job = make(state=old)
    if (old, new) in ALLOWED:
        job.transition(new, 100.0)
        assert job.state is new
    else:
        with pytest.raises(TransitionError):
            job.transition(new, 100.0)
        assert job.state is old


def test_transition_records_times_and_requeue_resets_the_outcome() -> None:
    job = make()
    job.transition(S.RUNNING, 10.0)
    job.exit_code = 3
    job.transition(S.FINISHED, 12.5)
    assert (job.start_time, job.end_time, job.exit_status) == (10.0, 12.5, 3)
    job.transition(S.QUEUED, 20.0)
    assert (job.start_time, job.end_time, job.exit_code) == (None, None, None)


def test_exit_status_is_255_for_signals_and_skips() -> None:
    killed = make(state=S.FINISHED, signal=9)
    assert killed.exit_status == 255
    assert make(state=S.SKIPPED).exit_status == 255


def test_record_round_trip_ignores_unknown_fields() -> None:
    job = make(7, label="x", after=[1, 2], dep_outcomes={1: True})
    record = job.to_record()
    record["field_from_a_newer_version"] = 42
    again = Job.from_record(record)
    assert again.to_record() == job.to_record()


def outcomes(table: dict[int, bool | None]):  # type: ignore[no-untyped-def]
    return lambda job, dep: table.get(dep)


def test_plan_fills_free_slots_in_order() -> None:
    jobs = [make(i) for i in range(4)]
    decided = plan(jobs, free_slots=2, total_slots=2, outcome=outcomes({}))
    assert [j.id for j, _ in decided.start] == [0, 1]


def test_plan_passes_over_jobs_waiting_on_dependencies() -> None:
    blocked = make(0, after=[9])
    free = make(1)
    decided = plan([blocked, free], free_slots=1, total_slots=1, outcome=outcomes({9: None}))
    assert decided.start == [(free, [])]


def test_plan_skips_a_job_whose_success_dependency_failed() -> None:
    job = make(0, after_ok=[9])
    decided = plan([job], free_slots=1, total_slots=1, outcome=outcomes({9: False}))
    assert decided.skip and decided.skip[0][0] is job and not decided.start


def test_plan_runs_an_any_result_dependent_after_a_failure() -> None:
    job = make(0, after=[9])
    decided = plan([job], free_slots=1, total_slots=1, outcome=outcomes({9: False}))
    assert decided.start == [(job, [])]


def test_a_wide_job_blocks_narrow_ones_behind_it() -> None:
    wide, narrow = make(0, slots=2), make(1)
    decided = plan([wide, narrow], free_slots=1, total_slots=2, outcome=outcomes({}))
    assert decided.start == []


def test_a_job_wider_than_all_slots_does_not_block_the_queue() -> None:
    huge, narrow = make(0, slots=5), make(1)
    decided = plan([huge, narrow], free_slots=2, total_slots=2, outcome=outcomes({}))
    assert decided.start == [(narrow, [])]


def test_a_job_waiting_for_gpus_does_not_hold_up_cpu_jobs() -> None:
    gpu_job, cpu_job = make(0, gpus=1), make(1)
    decided = plan([gpu_job, cpu_job], free_slots=2, total_slots=2, outcome=outcomes({}), gpus=lambda: "busy")
    assert decided.allocating == [(gpu_job, "busy")]
    assert decided.start == [(cpu_job, [])]


def test_placed_gpu_jobs_start_with_their_gpus() -> None:
    job = make(0, gpus=2)
    pool = GpuPool(
        [gpu(i) for i in range(4)], free_perc=90, holders={0: [Holder(9, None)], 2: [Holder(8, None)]}
    )
    decided = plan([job], free_slots=1, total_slots=1, outcome=outcomes({}), gpus=lambda: pool)
    assert decided.start == [(job, [1, 3])]
