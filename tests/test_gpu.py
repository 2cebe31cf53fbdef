"""GPU allocation end to end through ``ts``, with the fake NVML inventory (TS_FAKE_GPUS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Spool, text_of, wait_for

TOTAL = 24000


def fake_gpus(spool: Spool, used: list[int], poll: str = "0.1") -> Path:
    path = spool.root / "gpus.json"
    write_gpus(path, used)
    spool.env["TS_FAKE_GPUS"] = str(path)
    spool.env["TS_GPU_POLL"] = poll
    return path


def write_gpus(path: Path, used: list[int]) -> None:
    data = [
        {"total_mib": TOTAL, "used_mib": u, "name": "Fake A100", "uuid": f"GPU-{i}"}
        for i, u in enumerate(used)
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def gpu_job(spool: Spool, name: str, *opts: str) -> int:
    """A job that records the GPUs it sees, then runs until the test creates file ``name``."""
    gate = spool.root / name
    script = f'echo "$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER"; until [ -e {gate} ]; do sleep 0.02; done'
    return spool.submit("sh", "-c", script, opts=opts)


def seen(spool: Spool, job: int) -> str:
    path = Path(spool.job(job)["output"])
    wait_for(lambda: text_of(path).strip(), what=f"job {job} to print its GPUs")
    return path.read_text().split()[0]


def test_eight_jobs_on_four_gpus_run_four_at_a_time_on_distinct_gpus(spool: Spool) -> None:
    fake_gpus(spool, [0, 0, 0, 0])
    spool.ts("-S", "8")
    jobs = [gpu_job(spool, f"gate{i}", "-G", "1") for i in range(8)]
    first = jobs[:4]
    for job in first:
        spool.wait_state(job, "running")
    gpus = {job: spool.job(job)["gpus"] for job in first}
    assert sorted(g[0] for g in gpus.values()) == [0, 1, 2, 3]
    assert all(spool.job(job)["state"] == "allocating" for job in jobs[4:])
    for job in first:
        assert seen(spool, job) == str(gpus[job][0])
    # Each GPU that frees goes to the next waiting job, and only that one.
    (spool.root / "gate1").touch()
    nxt = spool.wait_state(jobs[4], "running")
    assert nxt["gpus"] == gpus[jobs[1]]
    assert [spool.job(j)["state"] for j in jobs[5:]] == ["allocating"] * 3
    for i in range(8):
        (spool.root / f"gate{i}").touch()
    for job in jobs:
        assert spool.run("-w", str(job)).returncode == 0
    held = [tuple(spool.job(j)["gpus"]) for j in jobs]
    assert all(len(h) == 1 for h in held)


def test_the_job_environment(spool: Spool) -> None:
    fake_gpus(spool, [0, 0])
    job = gpu_job(spool, "g", "-G", "2")
    spool.wait_state(job, "running")
    path = Path(spool.job(job)["output"])
    wait_for(lambda: text_of(path).strip(), what="the job's output")
    assert path.read_text().split() == ["0,1", "PCI_BUS_ID"]
    (spool.root / "g").touch()
    cpu = spool.submit("sh", "-c", 'echo "[$CUDA_VISIBLE_DEVICES]"', env={"CUDA_VISIBLE_DEVICES": "3"})
    spool.run("-w", str(cpu))
    assert Path(spool.job(cpu)["output"]).read_text() == "[]\n"
    keep = spool.submit(
        "sh",
        "-c",
        'echo "[$CUDA_VISIBLE_DEVICES]"',
        env={"CUDA_VISIBLE_DEVICES": "3", "TS_KEEP_CUDA_VISIBLE_DEVICES": "1"},
    )
    spool.run("-w", str(keep))
    assert Path(spool.job(keep)["output"]).read_text() == "[3]\n"


def test_threshold_decides_which_gpu_is_free(spool: Spool) -> None:
    path = fake_gpus(spool, [int(TOTAL * 0.2), int(TOTAL * 0.05)])
    assert spool.ts("--get_gpu_free_perc").strip() == "90"
    spool.ts("-S", "2")
    first = gpu_job(spool, "a", "-G", "1")
    assert seen(spool, first) == "1"  # GPU 0 is only 80% free
    second = gpu_job(spool, "b", "-G", "1")
    reason = spool.wait_state(second, "allocating")["reason"]
    assert "GPU 0 below 90% free" in reason and f"GPU 1 held by job {first}" in reason
    assert f"Reason: {reason}" in spool.ts("-i", str(second))
    spool.ts("--set_gpu_free_perc", "75")
    assert seen(spool, second) == "0"
    for bad in ("0", "101", "x"):
        assert spool.run("--set_gpu_free_perc", bad).returncode != 0
    assert spool.ts("--get_gpu_free_perc").strip() == "75"
    write_gpus(path, [0, 0])
    (spool.root / "a").touch()
    (spool.root / "b").touch()


def test_memory_freed_later_lets_a_waiting_job_start(spool: Spool) -> None:
    path = fake_gpus(spool, [TOTAL])
    job = gpu_job(spool, "g", "-G", "1")
    spool.wait_state(job, "allocating")
    write_gpus(path, [0])  # someone else's process left the GPU
    spool.wait_state(job, "running")
    (spool.root / "g").touch()


def test_visible_devices_restrict_the_daemon(spool: Spool) -> None:
    fake_gpus(spool, [0, 0, 0, 0])
    spool.env["TS_VISIBLE_DEVICES"] = "2,3"
    spool.ts("-S", "3")
    a, b = gpu_job(spool, "a", "-G", "1"), gpu_job(spool, "b", "-G", "1")
    c = gpu_job(spool, "c", "-G", "1")
    assert {seen(spool, a), seen(spool, b)} == {"2", "3"}
    assert spool.job(c)["state"] == "allocating"
    assert spool.run("-G", "3", "true").returncode != 0  # only 2 visible: it could never run
    spool.ts("--setenv", "TS_VISIBLE_DEVICES=0")
    (spool.root / "a").touch()
    assert seen(spool, c) == "0"
    for name in "bc":
        (spool.root / name).touch()


def test_explicit_gpu_indices(spool: Spool) -> None:
    fake_gpus(spool, [TOTAL, 0, 0])
    spool.ts("-S", "4")
    pinned = gpu_job(spool, "a", "-g", "0,2")
    assert seen(spool, pinned) == "0,2"  # GPU 0 is full: -g does not check memory
    waits = gpu_job(spool, "b", "-g", "2")
    assert "GPU 2 held by job" in spool.wait_state(waits, "allocating")["reason"]
    free_one = gpu_job(spool, "c", "-G", "1")
    assert seen(spool, free_one) == "1"
    unknown = spool.run("-g", "7", "true")
    assert unknown.returncode != 0 and "no GPU 7" in unknown.stderr
    (spool.root / "a").touch()
    assert seen(spool, waits) == "2"
    for name in "bc":
        (spool.root / name).touch()


def test_gpu_mem_packs_jobs_onto_a_shared_gpu(spool: Spool) -> None:
    fake_gpus(spool, [2000])  # 22000 MiB free
    spool.ts("-S", "4")
    a = gpu_job(spool, "a", "--gpu_mem", "10G")
    b = gpu_job(spool, "b", "--gpu_mem", "10G")
    c = gpu_job(spool, "c", "--gpu_mem", "10G")
    assert seen(spool, a) == "0" and seen(spool, b) == "0"
    assert "promised" in spool.wait_state(c, "allocating")["reason"]
    exclusive = gpu_job(spool, "d", "-G", "1")
    assert spool.wait_state(exclusive, "allocating")
    (spool.root / "a").touch()
    assert seen(spool, c) == "0"
    for name in "bcd":
        (spool.root / name).touch()


def test_nvml_errors_make_gpu_jobs_wait_and_cpu_jobs_run(spool: Spool) -> None:
    path = fake_gpus(spool, [0])
    spool.ts("-S", "2")
    path.write_text("{ not json")
    gpu = gpu_job(spool, "g", "-G", "1")
    reason = spool.wait_state(gpu, "allocating")["reason"]
    assert "cannot be read" in reason and str(path) in reason
    cpu = spool.submit("true")
    assert spool.run("-w", str(cpu)).returncode == 0
    write_gpus(path, [0])
    spool.wait_state(gpu, "running")
    (spool.root / "g").touch()


def test_views(spool: Spool) -> None:
    fake_gpus(spool, [0, 0])
    spool.ts("-S", "2")
    job = gpu_job(spool, "a", "-G", "1")
    spool.wait_state(job, "running")
    cpu = spool.submit("true")
    spool.run("-w", str(cpu))
    listing = spool.ts("-l")
    assert listing.splitlines()[0].split()[:7] == [
        "ID",
        "State",
        "Output",
        "E-Level",
        "Time",
        "GPUs",
        "Command",
    ]
    on_gpus = spool.ts("-g")
    assert f"\n{job} " in "\n" + on_gpus and "\ntrue" not in on_gpus
    status = spool.ts("--gpu_status")
    assert "Fake A100" in status and str(job) in status
    info = spool.ts("-i", str(job))
    assert "GPUs required: 1 GPU(s)" in info and "GPUs assigned: " in info
    (spool.root / "a").touch()


@pytest.mark.parametrize("args", [("-G", "0", "true"), ("-G", "3", "true"), ("-g", "1,x", "true")])
def test_bad_gpu_requests(spool: Spool, args: tuple[str, ...]) -> None:
    fake_gpus(spool, [0, 0])
    done = spool.run(*args)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert spool.jobs() == []


def test_without_any_gpu_cpu_jobs_run_and_gpu_jobs_are_refused(spool: Spool) -> None:
    done = spool.run("-G", "1", "true")
    assert done.returncode != 0 and "no GPU" in done.stderr
    assert spool.run("-w", str(spool.submit("true"))).returncode == 0
    assert "GPUs" not in spool.ts("-l").splitlines()[0]
