"""The daemon core in-process (``core_harness``): how jobs end and what follows — retries,
recovery and adoption across restarts, launcher loss, waiters and the ended-jobs and queue
limits — with a fake launcher and clock.  No processes, no sleeps."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from core_harness import Connection, Core, MakeCore

from spooler.protocol import RequestError
from spooler.protocol.requests import Clear, Remove, Submit

# -- retries -----------------------------------------------------------------------------------

# An attempt's outcome: an exit code, or ("signal", n).
Outcome = int | tuple[str, int]


def _end(c: Core, job: int, outcome: Outcome) -> None:
    c.started(job, pid=20_000 + 100 * job + c.job(job).attempt)
    if isinstance(outcome, tuple):
        c.ended(job, signal=outcome[1])
    else:
        c.ended(job, outcome)


@pytest.mark.parametrize(
    ("retry", "outcomes", "exit_status"),
    [
        pytest.param(0, [1], 1, id="no retry"),
        pytest.param(2, [3, 3, 3], 3, id="two retries, all fail"),
        pytest.param(5, [1, 0], 0, id="a succeeding attempt stops the retries"),
        pytest.param(1, [0], 0, id="success at once"),
        pytest.param(1, [("signal", signal.SIGSEGV), 4], 4, id="a crash is retried"),
    ],
)
def test_retries(core: Core, retry: int, outcomes: list[Outcome], exit_status: int) -> None:
    c = core
    job = c.submit("flaky", retry=retry)
    waiter = c.wait(job)
    logs = []
    for n, outcome in enumerate(outcomes, 1):
        assert c.state(job) == "running" and c.job(job).attempt == n
        assert c.launch_env(job)["TS_ATTEMPT"] == str(n)
        logs.append(c.job(job).log_path)
        assert waiter.replies == []
        _end(c, job, outcome)
    record = c.job(job)
    assert record.state.value == "finished" and record.attempt == len(outcomes)
    assert c.launched() == [job] * len(outcomes)
    assert [a["attempt"] for a in record.attempts] == list(range(1, len(outcomes)))
    codes = [o if isinstance(o, int) else None for o in outcomes[:-1]]
    assert [a["exit_code"] for a in record.attempts] == codes
    assert [a["output"] for a in record.attempts] == logs[:-1]  # each attempt has its own log
    assert len(set(logs)) == len(logs)
    assert waiter.replies == [{"ok": True, "id": job, "exit_status": exit_status, "state": "finished"}]


def test_a_retry_keeps_its_place_in_the_queue(core: Core) -> None:
    c = core
    low = c.submit("true", priority=-1)  # starts first: the queue was empty
    flaky = c.submit("flaky", retry=1)
    later = c.submit("true")
    c.run(low)
    c.run(flaky, 1)
    assert c.queue() == [later] and c.launched() == [low, flaky, flaky]
    c.run(flaky, 1)
    assert c.launched()[-1] == later and c.job(flaky).attempt == 2


@pytest.mark.parametrize("before_start", [False, True], ids=["running", "just launched"])
def test_a_killed_job_is_not_retried(core: Core, before_start: bool) -> None:
    c = core
    job = c.submit("sleep", retry=3)
    if before_start:  # killed before its shim reported its pid: signalled once it does
        assert c.kill(job) == {"ok": True, "id": job}
        assert c.signals == []
        pid = c.started(job)
    else:
        pid = c.started(job)
        c.kill(job)
    assert c.signals == [(pid, signal.SIGTERM)]
    c.loop.advance(c.sp.config.kill_grace)  # whatever is left of it gets SIGKILL
    assert c.signals == [(pid, signal.SIGTERM), (pid, signal.SIGKILL)]
    c.ended(job, signal=signal.SIGTERM)
    assert c.state(job) == "finished" and c.job(job).attempt == 1 and c.job(job).attempts == []
    assert c.launched() == [job] and c.job(job).exit_status == 255


def test_only_running_jobs_can_be_killed(core: Core) -> None:
    job = core.submit("true")
    queued = core.submit("true")
    with pytest.raises(RequestError, match="not running"):
        core.kill(queued)
    core.run(job)
    with pytest.raises(RequestError, match="not running"):
        core.kill(job)
    assert core.signals == []


def test_a_kill_that_found_no_process_does_not_cancel_the_retries(core: Core) -> None:
    c = core
    job = c.submit("flaky", retry=1)
    pid = c.started(job)
    c.gone.add(pid)  # it has just exited on its own; the launcher's report is on its way
    with pytest.raises(RequestError, match="no process left to signal"):
        c.kill(job)
    assert c.signals == []
    c.ended(job, 1)
    assert c.state(job) == "running" and c.job(job).attempt == 2


def test_a_failed_job_recorded_while_the_daemon_was_down_is_retried_by_the_next(core: Core) -> None:
    c = core
    job = c.submit("flaky", retry=1)
    c.started(job)
    c.stop()
    c.record_exit(job, 9)
    c.loop.advance(1)
    c.start()
    assert c.state(job) == "running" and c.job(job).attempt == 2 and c.launched() == [job]
    assert [a["exit_code"] for a in c.job(job).attempts] == [9]


def test_the_reaped_report_of_an_earlier_attempts_shim_is_ignored(core: Core) -> None:
    c = core
    job = c.submit("flaky", retry=1, gzip=True)  # -z: the job runs under a shim of its own
    shim = c.started(job, pid=31_000)
    c.record_exit(job, 1)  # the shim records the end, then reports it ...
    c.loop.advance(0.1)
    c.ended(job, 1)
    assert c.job(job).attempt == 2 and c.launched() == [job, job]  # attempt 2 launched at once
    c.loop.advance(0.1)
    c.reaped(job, 0, shim_pid=shim)  # ... and the launcher reaps the old shim a moment later
    assert c.state(job) == "running" and c.job(job).attempt == 2


@pytest.mark.parametrize("gone", ["cleared", "forgotten"])
def test_a_retry_does_not_forget_that_its_dependency_succeeded(make_core: MakeCore, gone: str) -> None:
    c = make_core(2, TS_MAXFINISHED="1")
    dep = c.submit("true")
    dependant = c.submit("flaky", after_ok=[dep], retry=1)
    c.run(dep)
    assert c.state(dependant) == "running"
    if gone == "cleared":
        assert c.request(Clear()) == {"ok": True, "cleared": 1}
    else:
        c.run(c.submit("true"))  # TS_MAXFINISHED=1: the dependency is forgotten
    assert dep not in c.sp.table.jobs
    c.run(dependant, 1)
    assert c.state(dependant) == "running" and c.job(dependant).attempt == 2


# -- adoption and recovery across a restart ----------------------------------------------------


@pytest.mark.parametrize(
    ("case", "state", "exit_code", "sig"),
    [
        pytest.param("exit recorded", "finished", 3, None, id="exit recorded while down"),
        pytest.param("signal recorded", "finished", None, signal.SIGKILL, id="signal recorded while down"),
        pytest.param("recorded, start not reported", "finished", 6, None, id="recorded, pid never known"),
        pytest.param("neither", "lost", None, None, id="no record, shim gone"),
        pytest.param("never started", "queued", None, None, id="launch sent, never started"),
        pytest.param("started, not reported", "running", None, None, id="start only in the log"),
        pytest.param("alive", "running", None, None, id="shim alive: adopted"),
    ],
)
def test_recovery_of_running_jobs_at_start(
    core: Core, case: str, state: str, exit_code: int | None, sig: int | None
) -> None:
    c = core
    job = c.submit("work")
    behind = c.submit("true")  # one slot
    if case not in ("never started", "recorded, start not reported", "started, not reported"):
        pid = c.started(job)
    c.stop()
    c.loop.advance(1)
    if case == "started, not reported":  # the daemon died before it heard the report
        c.record_start(job, 778)
        c.adoption.alive.add(778)
    elif case == "exit recorded":
        c.record_exit(job, 3)
    elif case == "signal recorded":
        c.record_exit(job, signal=signal.SIGKILL)
    elif case == "recorded, start not reported":
        c.record_exit(job, 6, pid=777)
    elif case == "alive":
        c.adoption.alive.add(pid)
    c.start()
    record = c.job(job)
    if state == "queued":  # it never ran: it goes first again, and only now starts
        assert c.launched() == [job] and c.state(job) == "running" and record.attempt == 1
        assert c.queue() == [behind]
        return
    assert record.state.value == state
    assert (record.exit_code, record.signal) == (exit_code, sig)
    assert c.launched() == ([] if state == "running" else [behind])  # never launched again
    if case == "started, not reported":
        assert (record.shim_pid, record.pid) == (778, 778)
    if state == "lost":
        assert "exit status was never recorded" in record.reason and record.exit_status == 255
    if state == "running":
        assert c.adoption.adopted == [job] and c.running() == [job]
        assert c.sp.running.is_adopted(job) and c.state(behind) == "queued"


@pytest.mark.parametrize(
    ("code", "state", "reason"),
    [(4, "finished", ""), (None, "lost", "without recording an exit status")],
    ids=["exit recorded", "no exit recorded"],
)
def test_an_adopted_job_ends_when_its_shim_exits(
    core: Core, code: int | None, state: str, reason: str
) -> None:
    c = core
    job = c.submit("work")
    behind = c.submit("true")
    c.adoption.alive.add(c.started(job))
    c.restart()
    waiter = c.wait(job)
    c.ended(job, 9)  # a report for an adopted job (from no launcher of ours) is ignored
    assert c.state(job) == "running"
    c.adopted_exit(job, code)
    if code is None:  # its launcher may still be writing the status: waited for a while
        assert c.state(job) == "running"
        c.loop.advance(6)
    record = c.job(job)
    assert record.state.value == state and record.exit_code == code and reason in record.reason
    assert waiter.replies == [{"ok": True, "id": job, "exit_status": code or 255, "state": state}]
    assert c.launched() == [behind]


@pytest.mark.parametrize(
    ("case", "state", "exit_code"),
    [("alive", "running", None), ("exit recorded", "finished", 5), ("neither", "lost", None)],
)
def test_launcher_loss_while_jobs_run(
    make_core: MakeCore, case: str, state: str, exit_code: int | None
) -> None:
    c = make_core(2)
    job = c.submit("work")
    just_launched = c.submit("work")
    pid = c.started(job)
    waiter = c.wait(job)
    if case == "alive":
        c.adoption.alive.add(pid)
    elif case == "exit recorded":
        c.record_exit(job, 5)
    c.launcher_died()
    assert c.state(job) == state and c.job(job).exit_code == exit_code
    # Its launch died with the launcher, unstarted (no start record): the new launcher runs it.
    assert c.state(just_launched) == "running" and c.launched() == [job, just_launched, just_launched]
    if state == "running":
        assert waiter.replies == [] and c.sp.running.is_adopted(job)
        c.adopted_exit(job, 0)
        assert c.state(job) == "finished"
    else:
        assert waiter.replies[0]["state"] == state
    new = c.submit("true")  # the daemon goes on launching
    assert c.launched()[-1] == new


def test_a_shim_that_died_without_reporting_the_end(core: Core) -> None:
    job = core.submit("work", gzip=True)
    core.started(job)
    core.reaped(job, signal.SIGKILL)
    record = core.job(job)
    assert record.state.value == "finished" and "ended unexpectedly" in record.reason
    assert record.exit_status == 255


# -- waiters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "reply"),
    [
        ("finishes", {"exit_status": 3, "state": "finished"}),
        ("killed", {"exit_status": 255, "state": "finished"}),
        ("removed while queued", {"exit_status": 255, "state": "removed", "removed": True}),
        ("skipped", {"exit_status": 255, "state": "skipped"}),
        ("already ended", {"exit_status": 0, "state": "finished"}),
    ],
)
def test_wait(core: Core, scenario: str, reply: dict[str, Any]) -> None:
    c = core
    first = c.submit("true")
    job = c.submit("true", after_ok=[first]) if scenario == "skipped" else c.submit("true")
    if scenario == "already ended":
        c.run(first)
        c.run(job)
    waiter = c.wait(job)
    if scenario == "already ended":
        assert waiter.deferred == 0
    else:
        assert waiter.replies == [] and waiter.deferred == 1
        if scenario == "finishes":
            c.run(first)
            c.run(job, 3)
        elif scenario == "killed":
            c.run(first)
            c.started(job)
            c.kill(job)
            c.ended(job, signal=signal.SIGTERM)
        elif scenario == "removed while queued":
            c.request(Remove(id=job))
        elif scenario == "skipped":
            c.run(first, 1)
    assert waiter.replies == [{"ok": True, "id": job, **reply}]
    assert waiter.deferred == 0


def test_wait_until_start_is_answered_once_the_process_runs(core: Core) -> None:
    c = core
    job = c.submit("true")
    waiter = c.wait(job, until="start")
    assert c.state(job) == "running" and waiter.replies == []  # launched, pid not known yet
    c.started(job)
    assert waiter.replies == [{"ok": True, "id": job, "exit_status": 255, "state": "running"}]
    assert c.wait(job, until="start").replies[0]["state"] == "running"  # started: at once


def test_every_waiter_is_answered_and_a_gone_client_is_not(core: Core) -> None:
    c = core
    job = c.submit("true")
    waiters = [c.wait(job) for _ in range(3)]
    gone = c.wait(job)
    gone.close()
    c.run(job, 7)
    assert [w.replies for w in waiters] == [
        [{"ok": True, "id": job, "exit_status": 7, "state": "finished"}]
    ] * 3
    assert gone.replies == []


def test_foreground_submit_gets_a_second_reply_when_the_job_ends(core: Core) -> None:
    conn = Connection()
    reply = core.request(Submit(command=["x"], cwd=str(core.root), env={}, foreground=True), conn)
    assert reply is not None
    job = reply["id"]
    assert conn.deferred == 1
    core.run(job, 2)
    assert conn.replies == [{"ok": True, "id": job, "exit_status": 2, "state": "finished"}]


# -- the ended-jobs limit (TS_MAXFINISHED) --------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "end_order", "kept"),
    [
        pytest.param(2, [0, 1, 2, 3], [2, 3], id="the oldest go"),
        pytest.param(2, [3, 0, 2, 1], [2, 1], id="oldest by end, not by id"),
        pytest.param(5, [0, 1, 2], [0, 1, 2], id="under the limit"),
        pytest.param(0, [1, 0], [], id="zero keeps none"),
    ],
)
def test_max_finished_forgets_the_oldest_ended_jobs(
    make_core: MakeCore, limit: int, end_order: list[int], kept: list[int]
) -> None:
    c = make_core(4, TS_MAXFINISHED=str(limit))
    ids = [c.submit("true") for _ in range(4)]
    queued = c.submit("true")  # waiting jobs are never forgotten
    for job in ids:
        c.started(job)
    waiter = c.wait(end_order[0])
    for n, job in enumerate(end_order):
        c.loop.advance(1)
        c.ended(job, n)
    still = [i for i in ids if i in c.sp.table.jobs]
    assert [i for i in still if c.sp.table.jobs[i].state.is_done] == sorted(kept)
    assert [j.id for j in c.sp.table.ended_in_order()] == kept
    assert queued in c.sp.table.jobs and c.state(queued) == "running"
    # A waiter is told how the job ended, even when it is forgotten at once.
    assert waiter.replies == [{"ok": True, "id": end_order[0], "exit_status": 0, "state": "finished"}]


def test_max_finished_counts_the_jobs_ended_before_a_restart(make_core: MakeCore) -> None:
    c = make_core(1, TS_MAXFINISHED="2")
    ids = [c.submit("true") for _ in range(3)]
    for job in ids[:2]:
        c.loop.advance(1)
        c.run(job)
    c.restart()
    c.loop.advance(1)
    c.run(ids[2])
    assert sorted(c.sp.table.jobs) == ids[1:]


# -- the queue limit (TS_MAXCONN) ----------------------------------------------------------------


def test_a_full_queue_makes_the_submitter_wait_unless_no_block(make_core: MakeCore) -> None:
    c = make_core(1, TS_MAXCONN="1")
    running = c.submit("true")
    c.submit("true")  # the queue holds one waiting job
    with pytest.raises(RequestError, match="queue is full"):
        c.submit("true", no_block=True)
    conn = Connection()
    assert c.request(Submit(command=["late"], cwd=str(c.root), env={}), conn) is None
    assert conn.deferred == 1 and len(c.sp.table.jobs) == 2
    c.run(running)  # the queued job starts: there is room
    assert conn.replies == [{"ok": True, "id": 2}] and c.queue() == [2]


def test_a_foreground_submitter_that_waited_for_room_is_told_the_end_too(make_core: MakeCore) -> None:
    c = make_core(1, TS_MAXCONN="1")
    running = c.submit("true")
    queued = c.submit("true")
    conn = Connection()
    assert c.request(Submit(command=["late"], cwd=str(c.root), env={}, foreground=True), conn) is None
    c.run(running)
    late = conn.replies[0]["id"]
    c.run(queued)
    c.run(late, code=3)
    assert len(conn.replies) == 2 and conn.deferred == 0
    assert conn.replies[1]["exit_status"] == 3


def test_a_time_limit_fires_and_is_enforced_again_after_a_restart(core: Core) -> None:
    c = core
    job = c.submit("work", time_limit=60)
    pid = c.started(job)
    c.loop.advance(59)
    assert c.signals == []
    c.loop.advance(2)
    assert c.signals == [(pid, signal.SIGTERM)] and c.job(job).timed_out
    c.adoption.alive.add(pid)
    c.restart()  # the job ignored SIGTERM and the daemon died before its SIGKILL
    assert c.signals[-1] == (pid, signal.SIGTERM)  # stopped again at once, escalation re-armed
    c.loop.advance(11)  # TS_KILL_GRACE
    assert c.signals[-1] == (pid, signal.SIGKILL)
    c.adopted_exit(job, 137)
    assert c.state(job) == "timeout"


def test_a_job_lost_with_its_launcher_runs_again_with_retry(make_core: MakeCore) -> None:
    """Lost is found only once its process is gone: with --retry it gets another attempt (and
    without, it stays lost); a job the user killed is not retried."""
    c = make_core(3)
    retried = c.submit("work", retry=1)
    plain = c.submit("work")
    killed = c.submit("work", retry=1)
    for job in (retried, plain, killed):
        c.started(job)
    c.kill(killed)
    c.launcher_died()  # no process alive, no exit recorded: all three are lost
    assert (c.state(retried), c.job(retried).attempt) == ("running", 2)
    assert c.job(retried).attempts[0]["reason"].startswith("was running when")
    assert c.state(plain) == "lost" and c.state(killed) == "lost"
    assert c.launched() == [retried, plain, killed, retried]


def test_a_job_whose_launcher_died_while_starting_it_is_lost_and_not_run_again(core: Core) -> None:
    """Only the launcher's intent is in its log (it died between that and the spawn's pid): the
    job may be running, so it is lost, and even --retry does not start a second copy."""
    c = core
    job = c.submit("work", retry=3)
    c.stop()
    c.loop.advance(1)
    c.record_start(job, 0)
    c.start()
    assert c.state(job) == "lost" and "may have run" in c.job(job).reason
    assert c.launched() == []


def test_a_job_whose_launcher_never_drained_is_lost_not_run_again(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live launcher of the earlier daemon still had not said it started everything it was
    sent when the new daemon stopped waiting: a job with no start record may yet start."""
    from spooler.daemon.launcher import exits

    c = core
    job = c.submit("work")
    c.stop()
    monkeypatch.setattr(exits, "read_settled", lambda runs_dir: exits.Logs(settled=False))
    c.start()
    assert c.state(job) == "lost" and "did not say" in c.job(job).reason and c.launched() == []


def test_a_lost_job_whose_pid_is_taken_is_not_retried(core: Core) -> None:
    """Its shim could not be adopted, but some process has its pid: that may be the job itself,
    still running (not recognised as ours), so even --retry does not start a second copy."""
    c = core
    job = c.submit("work", retry=2)
    c.started(job, pid=5151)
    c.stop()
    c.adoption.alive.add(5151)  # a process has the pid ...
    c.adoption.adopt = lambda job: False  # type: ignore[method-assign]  # ... not adoptable
    c.start()
    assert c.state(job) == "lost" and c.launched() == []
