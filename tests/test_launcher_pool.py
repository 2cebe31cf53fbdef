"""Several launchers: started while launches come faster than one launcher spawns them, each
job belonging to the launcher it was sent to, so that a dead launcher costs only its own jobs."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import Spool, alive, wait_for

from spooler.daemon.launcher import handle
from spooler.daemon.launcher.pool import MAX_LAUNCHERS, LauncherPool
from spooler.daemon.launcher.spec import Launch

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
    assert 2 <= len(pool) <= min(os.cpu_count() or 1, MAX_LAUNCHERS)
    parent = {j: psutil.Process(spool.job(j)["pid"]).ppid() for j in jobs}
    assert len(set(parent.values())) >= 2 and set(parent.values()) <= {p.pid for p in pool}
    victim = parent[max(jobs)]  # the last launch went to a launcher started for it
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


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[LauncherPool, list[list[object]]]]:
    """Real launcher processes driven by the pool outside a daemon; the notes they send."""
    loop = asyncio.new_event_loop()
    notes: list[list[object]] = []
    launchers = LauncherPool(loop, str(tmp_path), notes.append, lambda jobs: None, size=2)
    launchers.start()
    yield launchers, notes
    launchers.close()
    loop.close()


def _spec(tmp_path: Path, job_id: int) -> Launch:
    return Launch(job_id, ["true"], False, "/", {"PATH": "/usr/bin:/bin"}, str(tmp_path / f"r{job_id}"))


def test_a_launcher_that_cannot_be_started_leaves_the_others_serving(
    pool: tuple[LauncherPool, list[list[object]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launchers, notes = pool
    launchers.launch(_spec(tmp_path, 1))
    launchers.launch(_spec(tmp_path, 2))  # the first has two unreported: the next grows the pool

    def out_of_processes(*args: object, **kwargs: object) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(handle.os, "posix_spawn", out_of_processes)
        launchers.launch(_spec(tmp_path, 3))  # goes to the launcher there is
    assert len(launchers.launchers) == 1
    launchers.launch(_spec(tmp_path, 4))  # and the pool grows once it can
    assert len(launchers.launchers) == 2

    def ended() -> set[object]:
        launchers.loop.run_until_complete(asyncio.sleep(0.01))  # the notes are read on the loop
        return {n[1] for n in notes if n[0] == "ended"}

    wait_for(lambda: ended() == {1, 2, 3, 4}, what="every job to end")
