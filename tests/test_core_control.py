"""The daemon core in-process (``core_harness``): the user's control over the queue and each
job's life — hold and release, pause and resume, start later, named queues, editing, requeueing
with dependants, notifications — with a fake launcher and clock.  No processes, no sleeps."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

import pytest
from core_harness import Core, MakeCore

from spooler.daemon.notify import RETRY_DELAYS
from spooler.durations import parse_begin
from spooler.protocol import RequestError
from spooler.protocol.requests import (
    Edit,
    Filter,
    Hold,
    List,
    Pause,
    Release,
    Remove,
    Requeue,
    Resume,
    Slots,
    Urgent,
)
from spooler.protocol.requests import Priority as SetPriority
from spooler.protocol.requests import Queues as QueuesRequest

# -- hold and release --------------------------------------------------------------------------


def test_a_held_job_keeps_its_place_and_the_jobs_behind_it_start(make_core: MakeCore) -> None:
    c = make_core(1)
    first = c.submit("true", hold=True)
    second = c.submit("true")
    assert c.state(first) == "held" and c.launched() == [second]
    assert c.queue() == [first]
    c.run(second)
    assert c.state(first) == "held" and c.launched() == [second]
    c.request(Release(id=first))
    assert c.launched() == [second, first]


def test_holding_a_queued_job_and_releasing_it_puts_it_back_at_its_place(make_core: MakeCore) -> None:
    c = make_core(1)
    gate = c.submit("true")
    a, b, d = (c.submit("true") for _ in range(3))
    assert c.request(Hold(id=a)) == {"ok": True, "id": a}
    assert c.queue() == [a, b, d] and c.state(a) == "held"
    c.run(gate)
    assert c.launched() == [gate, b]  # a is passed over
    c.request(Release(id=a))
    c.run(b)
    assert c.launched() == [gate, b, a]  # before d: it kept its place


def test_the_dependants_of_a_held_job_wait_for_it(make_core: MakeCore) -> None:
    c = make_core(4)
    held = c.submit("true", hold=True)
    after = c.submit("true", after=[held])
    after_ok = c.submit("true", after_ok=[held])
    free = c.submit("true")
    assert c.launched() == [free]
    assert c.state(after) == "queued" and c.state(after_ok) == "queued"
    c.request(Release(id=held))
    c.run(held)
    assert set(c.launched()) == {free, held, after, after_ok}


def test_a_held_job_can_be_moved_and_removed(make_core: MakeCore) -> None:
    c = make_core(1)
    c.submit("true")
    a = c.submit("true")
    held = c.submit("true", hold=True)
    c.request(Urgent(id=held))
    assert c.queue() == [held, a] and c.state(held) == "held"


@pytest.mark.parametrize("state", ["running", "finished"])
def test_only_a_queued_job_can_be_held(core: Core, state: str) -> None:
    job = core.submit("true")
    if state == "finished":
        core.run(job)
    with pytest.raises(RequestError, match=rf"job {job} is not queued \(it is {state}\)"):
        core.request(Hold(id=job))
    assert core.state(job) == state


def test_only_a_held_job_can_be_released(make_core: MakeCore) -> None:
    c = make_core(1)
    c.submit("true")
    queued = c.submit("true")
    with pytest.raises(RequestError, match=rf"job {queued} is not held \(it is queued\)"):
        c.request(Release(id=queued))


def test_hold_and_release_by_filter(make_core: MakeCore) -> None:
    c = make_core(1)
    running = c.submit("true", label="x")
    xs = [c.submit("true", label="x") for _ in range(2)]
    other = c.submit("true", label="y")
    reply = c.request(Hold(filter=Filter(label="x")))
    assert reply == {"ok": True, "ids": xs, "left": [running]}
    assert c.state(other) == "queued"
    reply = c.request(Release(filter=Filter(states=["held"])))
    assert reply == {"ok": True, "ids": xs, "left": []}


def test_held_jobs_stay_held_across_a_restart(make_core: MakeCore) -> None:
    c = make_core(1)
    first = c.submit("true")
    held = c.submit("true", hold=True)
    queued = c.submit("true")
    c.restart()
    # The job launched before the restart never reached a launcher (no start in any log): it
    # runs again first, and the held job keeps its place before the queued one.
    assert c.state(held) == "held" and c.queue() == [held, queued] and c.launched() == [first]
    c.request(Release(id=held))
    assert c.state(held) == "queued"


# -- pause and resume --------------------------------------------------------------------------


def test_pause_stops_the_process_group_and_keeps_the_slot(make_core: MakeCore) -> None:
    c = make_core(1)
    job = c.submit("true")
    behind = c.submit("true")
    pid = c.started(job)
    assert c.request(Pause(id=job)) == {"ok": True, "id": job}
    assert c.signals == [(pid, signal.SIGSTOP)] and c.state(job) == "paused"
    assert c.launched() == [job] and c.sp.running.busy_slots == 1  # behind does not start
    c.request(Resume(id=job))
    assert c.signals[-1] == (pid, signal.SIGCONT) and c.state(job) == "running"
    c.ended(job)
    assert c.launched() == [job, behind]


def test_the_time_limit_does_not_run_while_paused(core: Core) -> None:
    c = core
    job = c.submit("true", time_limit=100)
    pid = c.started(job)
    c.loop.advance(30)
    c.request(Pause(id=job))
    c.loop.advance(1000)
    assert not c.job(job).timed_out and c.signals == [(pid, signal.SIGSTOP)]
    c.request(Resume(id=job))
    assert c.job(job).deadline() == pytest.approx(c.clock() + 70)
    c.loop.advance(69)
    assert not c.job(job).timed_out
    c.loop.advance(2)
    assert c.job(job).timed_out and c.signals[-1] == (pid, signal.SIGTERM)


def test_killing_a_paused_job_continues_it_after_the_sigterm(core: Core) -> None:
    c = core
    job = c.submit("true")
    pid = c.started(job)
    c.request(Pause(id=job))
    c.kill(job)
    assert c.signals == [(pid, signal.SIGSTOP), (pid, signal.SIGTERM), (pid, signal.SIGCONT)]
    assert c.state(job) == "running"
    c.ended(job, signal=signal.SIGTERM)
    assert c.state(job) == "finished"


def test_a_job_may_end_while_paused(core: Core) -> None:
    job = core.submit("true")
    core.started(job)
    core.request(Pause(id=job))
    core.ended(job, signal=signal.SIGKILL)
    assert core.state(job) == "finished" and core.job(job).paused_at is None


def test_a_paused_job_is_adopted_paused_and_can_be_resumed(core: Core) -> None:
    c = core
    job = c.submit("true", time_limit=100)
    pid = c.started(job)
    c.request(Pause(id=job))
    c.adoption.alive.add(pid)
    c.restart()
    assert c.state(job) == "paused" and c.running() == [job]
    c.loop.advance(500)
    assert not c.job(job).timed_out
    c.request(Resume(id=job))
    assert c.signals[-1] == (pid, signal.SIGCONT) and c.state(job) == "running"


@pytest.mark.parametrize(
    ("request_type", "message"),
    [
        (lambda job: Pause(id=job), "is not running (it is queued)"),
        (lambda job: Resume(id=job), "is not paused (it is queued)"),
    ],
)
def test_pause_and_resume_want_a_running_or_paused_job(
    make_core: MakeCore, request_type: Any, message: str
) -> None:
    c = make_core(1)
    c.submit("true")
    queued = c.submit("true")
    with pytest.raises(RequestError, match=re.escape(f"job {queued} {message}")):
        c.request(request_type(queued))
    assert c.state(queued) == "queued" and c.signals == []


def test_a_job_not_started_yet_cannot_be_paused(core: Core) -> None:
    job = core.submit("true")  # handed to the launcher, which has not reported its pid
    with pytest.raises(RequestError, match="its process is not known yet"):
        core.request(Pause(id=job))
    assert core.state(job) == "running"


# -- start later (--begin) ---------------------------------------------------------------------


def test_a_job_begins_at_its_time_on_a_timer(make_core: MakeCore) -> None:
    c = make_core(1)
    later = c.submit("true", begin_at=int(c.clock()) + 100)
    now = c.submit("true")
    assert c.launched() == [now] and c.queue() == [later]
    assert c.job(later).why_waiting(c.clock()).startswith("begins at ")
    c.run(now)
    c.loop.advance(99)
    assert c.launched() == [now]
    c.loop.advance(1)  # the timer fires at the job's time: no polling in between
    assert c.launched() == [now, later]


def test_a_job_that_begins_later_does_not_hold_up_the_slots(make_core: MakeCore) -> None:
    c = make_core(2)
    c.submit("true", begin_at=int(c.clock()) + 3600, slots=2)
    narrow = c.submit("true")
    assert c.launched() == [narrow]


def test_the_earliest_time_is_armed_and_each_is_kept(make_core: MakeCore) -> None:
    c = make_core(4)
    base = int(c.clock())
    late = c.submit("true", begin_at=base + 300)
    early = c.submit("true", begin_at=base + 100)
    assert c.loop.pending_timers() == 1
    c.loop.advance(100)
    assert c.launched() == [early]
    c.loop.advance(200)
    assert c.launched() == [early, late]


def test_begin_times_survive_a_restart(make_core: MakeCore) -> None:
    c = make_core(1)
    job = c.submit("true", begin_at=int(c.clock()) + 100)
    c.restart()
    assert c.queue() == [job] and c.launched() == []
    c.loop.advance(100)
    assert c.launched() == [job]


def test_a_begin_time_in_the_past_is_refused(core: Core) -> None:
    with pytest.raises(RequestError, match="--begin: that time is in the past"):
        core.submit("true", begin_at=int(core.clock()) - 3600)
    assert core.sp.table.jobs == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+30s", 30),
        ("+2h", 7200),
        ("+90", 5400),  # a bare number is minutes, as in --time
        ("13:00", 3600),  # the next 13:00: later today
        ("11:00", 23 * 3600),  # 11:00 is past: tomorrow's
        ("12:00:30", 30),
        ("2023-11-14T13:00:00", 3600),
    ],
)
def test_begin_times_as_users_write_them(text: str, expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        noon = 1_699_963_200  # 2023-11-14 12:00:00 UTC
        assert parse_begin(text, noon) - noon == expected
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("25:00", "is not a time of day"),
        ("tomorrow", "is not a time"),
        ("2020-01-01T00:00", "is in the past"),
        ("+0s", "at least one second"),
        ("+x", "is not a duration"),
        ("2099-01-01", "more than a year away"),
    ],
)
def test_bad_begin_times(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_begin(text, 1_699_963_200)


# -- the job an id-less action takes -----------------------------------------------------------


def test_id_less_actions_take_the_job_at_the_tail_of_the_queue(make_core: MakeCore) -> None:
    c = make_core(1)
    running, a, b = c.submit("true"), c.submit("true"), c.submit("true")
    c.request(Urgent())  # the last job (b) goes to the front
    assert c.queue() == [b, a]
    assert c.sp.get(None).id == a  # the one now last
    c.request(Remove())  # removes a
    assert c.queue() == [b] and c.sp.get(None).id == b
    c.request(Remove())
    assert c.sp.get(None).id == running  # nothing queued: the running job
    c.run(running)
    assert c.sp.get(None).id == running  # nothing left: the job that ended last


# -- named queues ------------------------------------------------------------------------------


def test_a_named_queue_runs_while_the_default_one_is_full(make_core: MakeCore) -> None:
    c = make_core(1)
    busy = c.submit("true")
    waiting = c.submit("true")
    cpu = c.submit("true", queue="cpu")  # springs into being with one slot
    cpu_waiting = c.submit("true", queue="cpu")
    assert c.launched() == [busy, cpu]
    assert c.queue() == [waiting, cpu_waiting]
    assert c.request(Slots(queue="cpu", set=2)) == {"ok": True, "slots": 2}
    assert c.launched() == [busy, cpu, cpu_waiting]
    c.run(busy)
    assert c.launched() == [busy, cpu, cpu_waiting, waiting]


def test_a_wide_job_holds_up_only_its_own_queue(make_core: MakeCore) -> None:
    c = make_core(2)
    c.request(Slots(queue="gpu", set=2))
    c.submit("true", queue="gpu")
    wide = c.submit("true", queue="gpu", slots=2)
    narrow_gpu = c.submit("true", queue="gpu")
    default = c.submit("true")
    assert c.launched() == [0, default]
    assert c.queue() == [wide, narrow_gpu]  # the narrow one does not overtake the wide one


def test_queues_list_their_slots_and_jobs_and_filter_the_list(make_core: MakeCore) -> None:
    c = make_core(1)
    c.submit("true")
    c.submit("true")
    cpu = c.submit("true", queue="cpu")
    reply = c.request(QueuesRequest(data=True))
    assert reply is not None and reply["queues"] == [
        {"name": "default", "slots": 1, "running": 1, "queued": 1},
        {"name": "cpu", "slots": 1, "running": 1, "queued": 0},
    ]
    listed = c.request(List(format="json", filter=Filter(queue="cpu")))
    assert listed is not None and [j["id"] for j in json.loads(listed["text"])] == [cpu]
    listed = c.request(List(format="json", filter=Filter(queue="default")))
    assert listed is not None and [j["queue"] for j in json.loads(listed["text"])] == ["default"] * 2
    text = c.request(List())
    assert text is not None and text["text"].splitlines()[0].split()[:3] == ["ID", "State", "Queue"]


def test_queue_slots_survive_a_restart(make_core: MakeCore) -> None:
    c = make_core(1)
    c.request(Slots(queue="cpu", set=3))
    c.request(Slots(queue="empty", set=0))
    c.restart()
    assert c.request(Slots(queue="cpu")) == {"ok": True, "slots": 3}
    assert c.request(Slots(queue="empty")) == {"ok": True, "slots": 0}
    assert c.request(Slots()) == {"ok": True, "slots": 1}


def test_the_list_has_no_queue_column_while_there_is_one_queue(core: Core) -> None:
    core.submit("true", queue="default")  # the queue without a name, named
    text = core.request(List())
    assert text is not None and "Queue" not in text["text"]
    assert core.job(0).queue is None


@pytest.mark.parametrize("name", ["a/b", "has space", "x" * 65, "", "tab\there"])
def test_bad_queue_names(core: Core, name: str) -> None:
    with pytest.raises(RequestError, match="is not a queue name"):
        core.submit("true", queue=name)
    with pytest.raises(RequestError, match="is not a queue name"):
        core.request(Slots(queue=name, set=2))
    assert core.sp.table.jobs == {} and core.sp.settings.queues == {}


# -- editing a job that has not started --------------------------------------------------------


def test_edit_a_queued_job(make_core: MakeCore) -> None:
    c = make_core(1)
    c.submit("true")
    job = c.submit("echo", "hello", label="old")
    reply = c.request(Edit(id=job, command=["echo hello && echo bye"], label="new", priority=5))
    assert reply == {"ok": True, "id": job, "command": "echo hello && echo bye"}
    edited = c.job(job)
    assert edited.command == ["echo hello && echo bye"] and edited.shell  # the shell rules
    assert (edited.label, edited.priority) == ("new", 5)
    c.request(Edit(id=job, label=""))
    assert c.job(job).label is None and c.job(job).command == ["echo hello && echo bye"]


def test_edit_keeps_a_held_job_held_and_refuses_a_started_one(make_core: MakeCore) -> None:
    c = make_core(1)
    running = c.submit("true")
    held = c.submit("true", hold=True)
    c.request(Edit(id=held, command=["false"]))
    assert c.state(held) == "held" and c.job(held).command == ["false"]
    with pytest.raises(RequestError, match=rf"job {running} has started \(it is running\): not changed"):
        c.request(Edit(id=running, command=["false"]))
    assert c.job(running).command == ["true"]


# -- requeue with dependants -------------------------------------------------------------------


def test_requeue_cascade_brings_back_the_jobs_skipped_because_it_failed(make_core: MakeCore) -> None:
    c = make_core(1)
    first = c.submit("true")
    child = c.submit("true", after_ok=[first])
    grandchild = c.submit("true", after_ok=[child])
    after_any = c.submit("true", after=[first])  # -D: runs whatever the result, never skipped
    other = c.submit("true", after_ok=[after_any])
    c.run(first, 1)
    assert c.state(child) == "skipped" and c.state(grandchild) == "skipped"
    c.run(after_any, 0)
    c.run(other, 0)
    reply = c.request(Requeue(id=first, cascade=True))
    assert reply == {"ok": True, "id": first, "ids": [first, child, grandchild]}
    assert c.running() == [first] and c.queue() == [child, grandchild]
    assert c.job(child).after_ok == [first]  # its dependency is kept: it waits for first again
    c.run(first, 0)
    c.run(child, 0)
    c.run(grandchild, 0)
    assert [c.state(j) for j in (first, child, grandchild)] == ["finished"] * 3


def test_requeue_cascade_remembers_a_dependency_removed_meanwhile(make_core: MakeCore) -> None:
    """-W a,b where a succeeded and was removed since: the requeued dependant still counts a as
    done well, and runs once b does."""
    c = make_core(1)
    a = c.submit("true")
    b = c.submit("true")
    both = c.submit("true", after_ok=[a, b])
    c.run(a, 0)
    c.run(b, 1)
    assert c.state(both) == "skipped"
    c.request(Remove(id=a))
    c.request(Requeue(id=b, cascade=True))
    c.run(b, 0)
    assert c.running() == [both]


def test_requeue_cascade_by_filter(make_core: MakeCore) -> None:
    c = make_core(1)
    a = c.submit("true", label="s")
    a_child = c.submit("true", after_ok=[a], label="s")
    c.run(a, 1)
    reply = c.request(Requeue(filter=Filter(states=["failed"]), cascade=True))
    assert reply is not None and reply["ids"] == [a, a_child]
    assert c.running() == [a] and c.queue() == [a_child]


# -- notifications -----------------------------------------------------------------------------


class FakeDelivery:
    """Stands in for the HTTP POST: records each attempt; the test answers it."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, dict[str, Any], Any]] = []

    def __call__(self, url: str, body: bytes, done: Any) -> None:
        self.attempts.append((url, json.loads(body), done))


def _notifying(c: Core) -> FakeDelivery:
    delivery = FakeDelivery()
    c.sp.notifier.deliver = delivery
    return delivery


def test_a_failed_job_is_notified_and_a_good_one_is_not_by_default(make_core: MakeCore) -> None:
    c = make_core(2)
    sent = _notifying(c)
    good = c.submit("true", notify_url="http://127.0.0.1:9/hook")
    bad = c.submit("false", notify_url="http://127.0.0.1:9/hook", label="lab", sweep="sw")
    c.run(good, 0)
    c.run(bad, 3)
    assert len(sent.attempts) == 1
    url, body, done = sent.attempts[0]
    assert url == "http://127.0.0.1:9/hook"
    assert body["id"] == bad and body["state"] == "finished" and body["exit_status"] == 3
    assert (body["label"], body["sweep"], body["command"]) == ("lab", "sw", "false")
    assert body["text"].startswith(f"ts job {bad} [lab] failed (exit 3) on ")
    done(None)
    assert c.job(bad).notify_status == "delivered"


def test_notify_on_end_notifies_every_end_but_not_a_retry(make_core: MakeCore) -> None:
    c = make_core(1)
    sent = _notifying(c)
    job = c.submit("true", notify_url="https://example.invalid/x", notify_on="end", retry=1)
    c.run(job, 1)  # retried: not the end yet
    assert sent.attempts == []
    c.run(job, 0)
    assert [body["exit_status"] for _, body, _ in sent.attempts] == [0]


def test_a_failed_delivery_is_retried_with_back_off_then_given_up(make_core: MakeCore) -> None:
    c = make_core(1)
    sent = _notifying(c)
    job = c.submit("false", notify_url="http://127.0.0.1:9/")
    c.run(job, 1)
    for n, delay in enumerate(RETRY_DELAYS, 1):
        sent.attempts[-1][2]("connection refused")
        assert c.job(job).notify_status == f"failed (connection refused); retrying in {delay:g} s"
        c.loop.advance(delay - 0.1)
        assert len(sent.attempts) == n
        c.loop.advance(0.1)
        assert len(sent.attempts) == n + 1
    sent.attempts[-1][2]("connection refused")
    status = c.job(job).notify_status
    assert status == f"failed (connection refused); gave up after {len(RETRY_DELAYS) + 1} attempts"
    assert c.loop.pending_timers() == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"notify_url": "ftp://host/x"}, "is not an http:// or https:// URL"),
        ({"notify_url": "http://"}, "is not an http:// or https:// URL"),
        ({"notify_url": "http://a b/"}, "has spaces"),
        ({"notify_url": "http://h/", "notify_on": "always"}, "notify_on must be end or fail"),
    ],
)
def test_bad_notification_settings(core: Core, fields: dict[str, str], message: str) -> None:
    with pytest.raises(RequestError, match=re.escape(message)):
        core.submit("true", **fields)
    assert core.sp.table.jobs == {}


def test_the_queue_counts_its_waiting_jobs_per_named_queue(make_core: MakeCore) -> None:
    c = make_core(1)
    c.submit("true")
    c.submit("true", queue="x")  # runs: x has a slot of its own
    b = c.submit("true")
    x2 = c.submit("true", queue="x", hold=True)

    def counts() -> dict[str | None, int]:
        return {k: v for k, v in c.sp.table.queue.per_queue.items() if v}

    c.request(SetPriority(id=b, set=3))
    c.request(Urgent(id=x2))
    assert counts() == {None: 1, "x": 1}
    c.request(Remove(id=b))
    c.restart()
    assert counts() == {"x": 1}
