"""The daemon core in-process (``core_harness``): the user's control over a job's life — hold
and release — with a fake launcher and clock.  No processes, no sleeps."""

from __future__ import annotations

import pytest
from core_harness import Core, MakeCore

from spooler.protocol import RequestError
from spooler.protocol.requests import Filter, Hold, Release, Urgent

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
    c.submit("true")
    held = c.submit("true", hold=True)
    queued = c.submit("true")
    c.restart()
    # The job that ran is lost (no shim survived in the harness): its slot goes to the next job.
    assert c.state(held) == "held" and c.queue() == [held] and c.launched() == [queued]
    c.request(Release(id=held))
    assert c.state(held) == "queued"
