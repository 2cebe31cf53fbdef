"""``-k`` leaves nothing of a job behind: SIGTERM, then SIGKILL after the grace period."""

from __future__ import annotations

from conftest import Spool, alive, wait_for


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(spool: Spool) -> None:
    spool.env["TS_KILL_GRACE"] = "0.5"
    pidfile = spool.root / "child"
    job = spool.submit("sh", "-c", f"trap '' TERM; sleep 300 & echo $! > {pidfile}; wait; wait")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the child's pid")
    spool.ts("-k", str(job))
    assert spool.run("-w", str(job)).returncode == 255
    assert spool.job(job)["signal"] == "SIGKILL"
    wait_for(lambda: not alive(int(pidfile.read_text())), what="the child to be killed")


def test_children_left_behind_by_a_killed_job_are_killed_too(spool: Spool) -> None:
    spool.env["TS_KILL_GRACE"] = "0.5"
    pidfile = spool.root / "child"
    job = spool.submit("sh", "-c", f"(trap '' TERM; exec sleep 300) & echo $! > {pidfile}; wait")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the child's pid")
    child = int(pidfile.read_text())
    spool.ts("-k", str(job))
    assert spool.run("-w", str(job)).returncode == 255
    assert spool.job(job)["signal"] == "SIGTERM"  # the job itself obeyed
    wait_for(lambda: not alive(child), what="the child that ignored SIGTERM to be killed")
