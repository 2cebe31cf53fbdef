"""Machine-wide GPU leases end to end: two daemons on one machine never run two ``-G`` jobs on
one GPU, say who holds it, and a lease directory that cannot be trusted is refused with a line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Spool, wait_for
from test_gpu import fake_gpus


def gated(spool: Spool, gate: Path, *opts: str) -> int:
    return spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done", opts=opts)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Spool, Spool]]:
    """Two private daemons sharing one fake GPU file and one lease directory."""
    spools = []
    for name in ("alice", "bob"):
        root = tmp_path / name
        root.mkdir()
        spools.append(Spool(root))
    a, b = spools
    path = fake_gpus(a, [0, 0])
    fake_gpus(b, [0, 0])
    for s in spools:
        s.env["TS_FAKE_GPUS"] = str(path)
        s.env["TS_GPU_LEASE_DIR"] = str(tmp_path / "leases")
    yield a, b
    for s in spools:
        s.stop()


def test_two_daemons_never_share_a_gpu_and_say_who_holds_it(two: tuple[Spool, Spool], tmp_path: Path) -> None:
    a, b = two
    gate_a, gate_b = tmp_path / "gate-a", tmp_path / "gate-b"
    first = [gated(a, gate_a, "-G", "1") for _ in range(2)]
    a.ts("-S", "2")
    for job in first:
        a.wait_state(job, "running")
    waiting = gated(b, gate_b, "-G", "1")
    reason = b.wait_state(waiting, "allocating")["reason"]
    assert "another spooler (user root)" in reason, reason
    assert "held by another spooler" in b.ts("-i", str(waiting)) or "another spooler" in b.ts(
        "-i", str(waiting)
    )
    assert "another spooler (user root)" in b.ts("--gpu_status")
    assert "GPU leases: on" in b.ts("--gpu_status")
    gate_a.touch()
    wait_for(lambda: b.job(waiting)["state"] == "running", what="bob's job to get a GPU")
    held_by_a = {g for j in first for g in a.job(j)["gpus"]}
    assert set(b.job(waiting)["gpus"]) <= held_by_a  # a GPU alice's jobs had, now free
    gate_b.touch()
    assert b.run("-w", str(waiting)).returncode == 0


def test_a_burst_from_two_daemons_never_double_books(two: tuple[Spool, Spool], tmp_path: Path) -> None:
    a, b = two
    gate = tmp_path / "gate"
    for s in (a, b):
        s.ts("-S", "0")
    jobs = {s: [gated(s, gate, "-G", "1") for _ in range(3)] for s in (a, b)}
    for s in (a, b):  # released together: four jobs race for two GPUs
        s.ts("-S", "3")

    def running() -> list[tuple[int, ...]]:
        return [tuple(s.job(j)["gpus"]) for s in (a, b) for j in jobs[s] if s.job(j)["state"] == "running"]

    wait_for(lambda: len(running()) == 2, what="both GPUs to be taken")
    held = [g for gpus in running() for g in gpus]
    assert sorted(held) == [0, 1], held
    gate.touch()
    for s in (a, b):
        for job in jobs[s]:
            assert s.run("-w", str(job)).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory owned by another user")
def test_an_untrustworthy_lease_directory_is_refused_and_scheduling_goes_on(
    spool: Spool, tmp_path: Path
) -> None:
    bad = tmp_path / "open-leases"
    bad.mkdir()
    os.chown(bad, 65534, 65534)
    bad.chmod(0o777)  # another user's, writable by all, not sticky: anyone could delete a lease
    fake_gpus(spool, [0])
    spool.env["TS_GPU_LEASE_DIR"] = str(bad)
    job = spool.submit("true", opts=("-G", "1"))
    assert spool.run("-w", str(job)).returncode == 0
    status = spool.ts("--gpu_status")
    assert "GPU leases: off" in status and "not sticky" in status, status


def test_gpu_status_lists_processes_outside_the_spooler(spool: Spool) -> None:
    """TS_FAKE_GPUS processes stand for NVML's compute processes: a foreign one (this test's
    own pid) is listed with its user and command; one of our jobs' processes is not."""
    import json
    import subprocess
    import sys

    path = fake_gpus(spool, [0, 0])
    gate = spool.root / "gate"
    job = gated(spool, gate, "-G", "1")
    pid = wait_for(lambda: spool.job(job)["pid"], what="the job's pid")
    ours_gpu = spool.job(job)["gpus"][0]
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        on_gpu = {ours_gpu: pid, 1 - ours_gpu: other.pid}
        gpus = [
            {
                "total_mib": 24000,
                "used_mib": 500,
                "uuid": f"GPU-{i}",
                "processes": [{"pid": on_gpu[i], "used_mib": 500}],
            }
            for i in (0, 1)
        ]
        path.write_text(json.dumps(gpus))
        status = spool.ts("--gpu_status")
        assert "Processes outside this spooler" in status, status
        assert str(other.pid) in status and "time.sleep(60)" in status and "root" in status
        foreign = status.split("Processes outside this spooler")[1]
        assert f" {pid} " not in foreign, foreign  # our job's process is not foreign
    finally:
        other.kill()
        other.wait()
        gate.touch()
    assert spool.run("-w", str(job)).returncode == 0
