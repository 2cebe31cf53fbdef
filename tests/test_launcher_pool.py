"""Several launchers: started while launches come faster than one launcher spawns them, each
job belonging to the launcher it was sent to, so that a dead launcher costs only its own jobs."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from conftest import Spool, alive, wait_for

pytestmark = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2, reason="a second launcher is started only on a machine with two CPUs or more"
)


def launchers(spool: Spool) -> list[psutil.Process]:
    daemon = spool.daemon_pid()
    assert daemon is not None
    return [p for p in psutil.Process(daemon).children() if "spooler.daemon.launcher" in p.cmdline()]


def test_one_launcher_while_jobs_start_one_at_a_time(spool: Spool) -> None:
    spool.ts("-S", "4")
    for code in range(3):
        job = spool.submit("sh", "-c", f"exit {code}")
        assert spool.wait_state(job, "finished")["exit_code"] == code
    assert len(launchers(spool)) == 1


def test_a_dead_launcher_costs_only_its_own_jobs(spool: Spool) -> None:
    spool.ts("-S", "5")  # four jobs and, after the kill, one more
    go, end = spool.root / "go", spool.root / "end"
    gate = spool.submit("sh", "-c", f"until [ -e {go} ]; do sleep 0.02; done", opts=("-N", "5"))
    spool.wait_state(gate, "running")
    wait = f"until [ -e {end} ]; do sleep 0.02; done"
    jobs = {spool.submit("sh", "-c", f"{wait}; exit {10 + i}"): 10 + i for i in range(4)}
    go.touch()  # one pass sends the four launches at once: the second finds the first busy
    for job in jobs:
        spool.wait_state(job, "running")
    wait_for(lambda: all(spool.job(j).get("pid") for j in jobs), what="every job's pid")
    pool = launchers(spool)
    assert len(pool) == 2
    parent = {j: psutil.Process(spool.job(j)["pid"]).ppid() for j in jobs}
    assert set(parent.values()) == {p.pid for p in pool}  # both launchers run some of them
    victim = pool[1].pid
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not alive(victim), what="the launcher to die")
    assert spool.run("-f", "sh", "-c", "exit 5").returncode == 5  # a new launcher serves
    end.touch()
    for job, code in jobs.items():
        record = spool.wait_state(job, "finished", "lost")
        if parent[job] == victim:  # nobody could collect its exit status
            assert record["state"] == "lost" and "exit status" in record["reason"]
        else:  # its launcher lives: the end it reports stands
            assert (record["state"], record["exit_code"]) == ("finished", code)
