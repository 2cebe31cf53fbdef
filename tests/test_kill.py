"""``-k`` leaves nothing of a job behind: SIGTERM, then SIGKILL after the grace period."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from conftest import TS, Spool, alive, text_of, wait_for, wait_pid_file


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(spool: Spool) -> None:
    spool.env["TS_KILL_GRACE"] = "0.5"
    pidfile = spool.root / "child"
    job = spool.submit("sh", "-c", f"trap '' TERM; sleep 300 & echo $! > {pidfile}; wait; wait")
    child = wait_pid_file(pidfile)
    spool.ts("-k", str(job))
    assert spool.run("-w", str(job)).returncode == 255
    assert spool.job(job)["signal"] == "SIGKILL"
    wait_for(lambda: not alive(child), what="the child to be killed")


def test_children_left_behind_by_a_killed_job_are_killed_too(spool: Spool) -> None:
    spool.env["TS_KILL_GRACE"] = "0.5"
    pidfile = spool.root / "child"
    job = spool.submit("sh", "-c", f"(trap '' TERM; exec sleep 300) & echo $! > {pidfile}; wait")
    child = wait_pid_file(pidfile)
    spool.ts("-k", str(job))
    assert spool.run("-w", str(job)).returncode == 255
    assert spool.job(job)["signal"] == "SIGTERM"  # the job itself obeyed
    wait_for(lambda: not alive(child), what="the child that ignored SIGTERM to be killed")


def test_ctrl_c_on_ts_f_reaches_the_job_without_escalation(spool: Spool) -> None:
    spool.env["TS_KILL_GRACE"] = "0.2"
    # The trap outlives the grace period: a forwarded Ctrl-C must not turn into SIGKILL.
    script = "trap 'echo got-int; sleep 1; exit 9' INT; echo ready; while :; do sleep 0.02; done"
    client = subprocess.Popen(
        [*TS, "-f", "sh", "-c", script], env=spool.env, stderr=subprocess.PIPE, text=True
    )
    log = Path(wait_for(lambda: spool.jobs() and spool.jobs()[-1]["output"], what="the job's log"))
    wait_for(lambda: "ready" in text_of(log), what="the job to start")
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=30)
    assert (client.returncode, err) == (9, "")
    assert log.read_text().split() == ["ready", "got-int"]


def test_ctrl_c_on_ts_f_removes_a_job_that_has_not_started(spool: Spool) -> None:
    gate = spool.root / "gate"
    blocker = spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done")
    client = subprocess.Popen([*TS, "-f", "true"], env=spool.env, stderr=subprocess.PIPE, text=True)
    queued = wait_for(lambda: len(spool.jobs()) == 2 and spool.jobs()[-1]["id"], what="the -f job")
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=30)
    assert (client.returncode, err) == (130, "")
    assert [j["id"] for j in spool.jobs()] == [blocker]
    assert queued != blocker
    gate.touch()


def test_ctrl_c_on_ts_f_waiting_for_room_in_a_full_queue_queues_nothing(spool: Spool) -> None:
    spool.env["TS_MAXCONN"] = "3"  # three jobs may wait, three clients may connect
    gate = spool.root / "gate"
    kept = [spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done")]
    kept += [spool.submit("true") for _ in range(3)]
    sockets = spool.daemon_sockets()
    client = subprocess.Popen(
        [*TS, "-f", "echo", "abandoned"], env=spool.env, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: spool.daemon_sockets() > sockets, what="ts -f to wait for room")
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=30)
    assert (client.returncode, err) == (130, "")
    gate.touch()  # room again: the abandoned submission must not be queued now
    assert spool.run("-w", str(kept[-1])).returncode == 0
    assert [j["id"] for j in spool.jobs()] == kept
