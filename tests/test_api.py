"""The Python API against a real daemon: ``from spooler import Client``."""

from __future__ import annotations

import select
from pathlib import Path

import pytest
from conftest import Spool, wait_for

import spooler
from spooler import Client


def test_submit_wait_and_jobs(api: Client, spool: Spool) -> None:
    with api:
        job = api.submit(["sh", "-c", "echo %(greeting); exit 3"], args={"greeting": "hi there"}, label="x")
        assert api.wait(job) == 3
        record = api.job(job)
        assert record["label"] == "x" and record["args"] == {"greeting": "hi there"}
        assert Path(record["output"]).read_text() == "hi there\n"
        assert [j["id"] for j in api.jobs(state="failed")] == [job]
        assert api.jobs(label="nope") == []


def test_a_sweep_from_python_then_requeue_its_failures(api: Client, spool: Spool) -> None:
    with api:
        ids = api.sweep("exit %(code)", [{"code": c} for c in (0, 1, 0, 2)], name="py", retry=0)
        statuses = [api.wait(i) for i in ids]
        assert statuses == [0, 1, 0, 2]
        assert {j["sweep"] for j in api.jobs(sweep="py")} == {"py"}
        again = api.requeue(sweep="py", state="failed")
        assert sorted(again) == [ids[1], ids[3]]
        api.wait(ids[3])
        assert len(api.job(ids[3])["attempts"]) == 1


def test_kill_and_remove(api: Client, spool: Spool) -> None:
    with api:
        running = api.submit("sleep 300")
        queued = api.submit(["true"], label="later")
        spool.wait_state(running, "running")
        assert api.remove(label="later") == [queued]
        assert api.kill(running) == [running]
        assert api.wait(running) == 255


def test_errors_are_spooler_errors(api: Client) -> None:
    with api:
        with pytest.raises(spooler.UsageError):
            api.submit("echo %(x)", args={})
        with pytest.raises(spooler.UsageError):
            api.submit("echo %(x)", args={"x": float("nan")})
        with pytest.raises(spooler.RemoteError):
            api.wait(12345)
        with pytest.raises(spooler.UsageError):
            api.kill()


def test_the_connection_survives_the_daemons_idle_timeout(api: Client, spool: Spool) -> None:
    with api:
        job = api.submit(["true"])
        # The daemon closes a connection left idle past its request deadline ...
        wait_for(
            lambda: select.select([api.sock], [], [], 0)[0], timeout=30, what="the idle connection to close"
        )
        # ... and the client reconnects before its next request instead of failing.
        assert api.wait(job) == 0


def test_time_limits_from_python(api: Client, spool: Spool) -> None:
    with api:
        job = api.submit(["sleep", "60"], time="1s")
        assert api.wait(job) == 124
        assert api.job(job)["state"] == "timeout" and api.job(job)["time_limit"] == 1
        assert api.submit(["true"], time=90) >= 0
        for bad in ("abc", 0, 10**9, True):
            with pytest.raises(spooler.SpoolerError, match="time"):
                api.submit(["true"], time=bad)
