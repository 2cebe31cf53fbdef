"""Scheduling GPU jobs end to end through ``ts`` with fake GPUs: earmarks against starvation,
backfill with ``--time``, time limits and the ``timeout`` state."""

from __future__ import annotations

import json

import pytest
from conftest import Spool, wait_for
from test_gpu import fake_gpus


def gated(spool: Spool, name: str, *opts: str) -> int:
    gate = spool.root / name
    return spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done", opts=opts)


def started_order(spool: Spool) -> list[int]:
    jobs = [j for j in spool.jobs() if j["start_time"] is not None]
    return [j["id"] for j in sorted(jobs, key=lambda j: (j["start_time"], j["id"]))]


def test_a_four_gpu_job_starts_before_the_one_gpu_jobs_queued_after_it(spool: Spool) -> None:
    """The starvation scenario: 4 GPUs, -S 8, three 1-GPU jobs, a 4-GPU job, twelve 1-GPU jobs."""
    fake_gpus(spool, [0, 0, 0, 0])
    spool.ts("-S", "8")
    first = [gated(spool, f"gate{i}", "-G", "1") for i in range(3)]
    big = spool.submit("echo", "big", opts=("-G", "4"))
    later = [spool.submit("true", opts=("-G", "1")) for _ in range(12)]
    for job in first:
        spool.wait_state(job, "running")
    info = spool.ts("-i", str(big))
    assert "held for it" in info, info
    status = spool.ts("--gpu_status")
    assert f"held for job {big}" in status, status
    assert spool.job(later[0])["state"] in ("queued", "allocating")
    assert f"held for job {big}" in spool.ts("-i", str(later[0]))
    for i in range(3):  # the small jobs end one at a time
        (spool.root / f"gate{i}").touch()
        spool.wait_state(first[i], "finished")
    assert spool.run("-w", str(later[-1])).returncode == 0
    order = started_order(spool)
    assert all(order.index(big) < order.index(job) for job in later), order


def test_a_short_job_with_time_backfills_and_a_long_one_does_not(spool: Spool) -> None:
    fake_gpus(spool, [0, 0])
    spool.ts("-S", "4")
    holder = gated(spool, "gate", "-G", "1", "--time", "1h")
    spool.wait_state(holder, "running")
    big = spool.submit("true", opts=("-G", "2"))
    long = spool.submit("true", opts=("-G", "1", "--time", "2h"))
    untimed = spool.submit("true", opts=("-G", "1"))
    short = spool.submit("true", opts=("-G", "1", "--time", "10m"))
    assert spool.run("-w", str(short)).returncode == 0  # backfilled on the earmarked GPU
    assert spool.job(big)["state"] == "allocating"
    assert spool.job(long)["state"] in ("queued", "allocating")
    assert spool.job(untimed)["state"] in ("queued", "allocating")
    assert "would not end within" in spool.ts("-i", str(long))
    (spool.root / "gate").touch()
    assert spool.run("-w", str(untimed)).returncode == 0
    order = started_order(spool)
    assert order.index(short) < order.index(big) < order.index(long), order


def test_a_job_still_running_at_its_limit_ends_in_timeout(spool: Spool) -> None:
    job = spool.submit("sleep", "60", opts=("--time", "1s"))
    done = spool.run("-w", str(job))
    assert done.returncode == 124
    data = spool.job(job)
    assert data["state"] == "timeout" and data["time_limit"] == 1
    assert data["signal"] == "SIGTERM"
    assert spool.ts("-s", str(job)).strip() == "timeout"
    assert "Time limit: 1s" in spool.ts("-i", str(job))
    assert "timed out" in spool.ts("-i", str(job))
    assert str(job) in spool.ts("-l", "--state", "failed", "--ids").split()
    assert "timeout" in spool.ts("-l")


def test_time_left_is_shown_and_a_job_that_ends_in_time_is_finished(spool: Spool) -> None:
    job = gated(spool, "gate", "--time", "2h")
    spool.wait_state(job, "running")
    info = spool.ts("-i", str(job))
    assert "Time limit: 2h" in info and "left)" in info, info
    (spool.root / "gate").touch()
    assert spool.run("-w", str(job)).returncode == 0
    assert spool.job(job)["state"] == "finished"


def test_a_job_ignoring_sigterm_is_killed_after_the_grace_period(spool: Spool) -> None:
    script = "trap '' TERM; sleep 30"
    job = spool.submit("sh", "-c", script, opts=("--time", "1s"), env={"TS_KILL_GRACE": "0.5"})
    assert spool.run("-w", str(job)).returncode == 124
    assert spool.job(job)["signal"] == "SIGKILL"


@pytest.mark.parametrize(("extra", "attempts"), [((), 1), (("--retry-timeout",), 2)])
def test_retry_does_not_retry_a_timeout_unless_asked(
    spool: Spool, extra: tuple[str, ...], attempts: int
) -> None:
    job = spool.submit("sleep", "60", opts=("--time", "1s", "--retry", "1", *extra))
    assert spool.run("-w", str(job)).returncode == 124
    data = spool.job(job)
    assert data["state"] == "timeout" and data["attempt"] == attempts


def test_the_limit_survives_a_daemon_restart(spool: Spool) -> None:
    job = spool.submit("sleep", "60", opts=("--time", "3s"))
    spool.wait_state(job, "running")
    spool.kill_daemon()
    wait_for(lambda: spool.job(job)["state"] == "timeout", timeout=30, what="the adopted job to time out")
    data = spool.job(job)
    assert 2.5 <= data["end_time"] - data["start_time"] < 20


def test_default_time_applies_to_jobs_without_time(spool: Spool) -> None:
    spool.env["TS_DEFAULT_TIME"] = "1s"
    job = spool.submit("sleep", "60")
    assert spool.run("-w", str(job)).returncode == 124
    assert spool.job(job)["time_limit"] == 1


@pytest.mark.parametrize("value", ["0", "abc", "400d", "-5m", "1:2:3:4"])
def test_bad_time_values_get_one_line(spool: Spool, value: str) -> None:
    done = spool.run("--time", value, "true")
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "--time" in done.stderr
    assert "Traceback" not in done.stderr


def test_time_in_a_sweep_file(spool: Spool) -> None:
    sweep = spool.root / "sweep.json"
    sweep.write_text(
        json.dumps({"command": "sleep %(s)", "grid": [{"s": [0, 60]}], "options": {"time": "1s"}})
    )
    ids = [int(i) for i in spool.ts("sweep", str(sweep)).split()]
    spool.ts("-S", "2")
    assert [spool.run("-w", str(i)).returncode for i in ids] == [0, 124]


def test_cuda_out_of_memory_is_named_and_the_retry_waits_for_the_memory(spool: Spool) -> None:
    from test_gpu import write_gpus

    path = fake_gpus(spool, [0])
    gate = spool.root / "gate"
    script = (
        f'if [ "$TS_ATTEMPT" = 1 ]; then until [ -e {gate} ]; do sleep 0.02; done; '
        'echo "torch.OutOfMemoryError: CUDA out of memory." >&2; exit 1; fi'
    )
    job = spool.submit("sh", "-c", script, opts=("-G", "1", "--retry", "1"))
    spool.wait_state(job, "running")
    # Meanwhile some memory is taken elsewhere: the retry must wait until it is free again.
    spool.ts("--set_gpu_free_perc", "50")
    write_gpus(path, [1000])
    gate.touch()
    wait_for(lambda: "ran out with" in (spool.job(job)["reason"] or ""), what="the retry to wait for memory")
    assert spool.job(job)["attempt"] == 2
    assert "CUDA ran out of GPU memory" in spool.ts("-i", str(job))
    write_gpus(path, [0])
    assert spool.run("-w", str(job)).returncode == 0
