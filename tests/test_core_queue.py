"""The daemon core in-process (``core_harness``): what starts when — slots, queue order,
dependencies, skip-if-exists and GPUs — through the real request handlers, with a fake
launcher and clock.  No processes, no sleeps."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from core_harness import Core, MakeCore, fake_gpus, gpu_core

from spooler.protocol import RequestError
from spooler.protocol.requests import Priority as SetPriority
from spooler.protocol.requests import Remove, Slots, Submit, Swap, Urgent

# -- slots -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slots", "widths", "started"),
    [
        pytest.param(1, [1, 1, 1], [0], id="one slot: one job"),
        pytest.param(2, [1, 1, 1], [0, 1], id="two slots: two jobs"),
        pytest.param(4, [1, 2, 1], [0, 1, 2], id="widths that fit all start"),
        pytest.param(3, [2, 2, 1], [0], id="a job needing more than is free stops the pass"),
        pytest.param(2, [3, 1, 1], [1, 2], id="a job wider than all slots does not block"),
        pytest.param(2, [1, 5, 4, 1], [0, 3], id="several too wide for all slots"),
    ],
)
def test_slots_decide_what_starts(
    make_core: MakeCore, slots: int, widths: list[int], started: list[int]
) -> None:
    c = make_core(slots)  # TS_SLOTS
    ids = [c.submit("true", slots=w) for w in widths]
    assert c.launched() == started
    assert c.sp.running.busy_slots == sum(widths[i] for i in started)
    assert c.queue() == [i for i in ids if i not in started]
    assert all(c.state(i) == "queued" for i in c.queue())


def test_a_wide_job_waits_for_its_slots_and_narrow_ones_do_not_overtake_it(make_core: MakeCore) -> None:
    c = make_core(2)
    narrow = c.submit("true")
    wide = c.submit("true", slots=2)
    behind = c.submit("true")
    assert c.launched() == [narrow]  # one slot is free, but `behind` does not take it
    c.run(narrow)
    assert c.launched() == [narrow, wide] and c.state(behind) == "queued"
    c.run(wide)
    assert c.launched() == [narrow, wide, behind]


def test_raising_slots_starts_waiting_jobs_and_survives_a_restart(make_core: MakeCore) -> None:
    c = make_core(1)
    wide = c.submit("true", slots=3)
    narrow = [c.submit("true") for _ in range(2)]
    assert c.launched() == [narrow[0]]
    assert c.request(Slots(set=3)) == {"ok": True, "slots": 3}
    # Now it fits the slots: it waits for 3 free ones, and the job behind it waits too.
    assert c.launched() == [narrow[0]]
    c.run(narrow[0])
    assert c.launched() == [narrow[0], wide]
    c.run(wide)
    assert c.launched() == [narrow[0], wide, narrow[1]]
    c.restart()
    assert c.sp.settings.slots == 3  # the save-list's, not TS_SLOTS=1
    assert c.request(Slots()) == {"ok": True, "slots": 3}


def test_zero_slots_drain_the_queue_even_across_a_restart(make_core: MakeCore) -> None:
    c = make_core(2)
    running = c.submit("true")
    assert c.request(Slots(set=0)) == {"ok": True, "slots": 0}
    waiting = c.submit("true")
    c.run(running)  # its slot is not given to anyone
    assert c.launched() == [running] and c.queue() == [waiting]
    c.restart()
    assert c.sp.settings.slots == 0 and c.launched() == []
    c.request(Slots(set=1))
    assert c.launched() == [waiting]


# -- queue order: priority, first in first out, -u, -U ---------------------------------------------

Op = tuple[Any, ...]


def _reorder(c: Core, ids: list[int], op: Op) -> None:
    if op[0] == "urgent":
        c.request(Urgent(id=ids[op[1]]))
    elif op[0] == "swap":
        c.request(Swap(a=ids[op[1]], b=ids[op[2]]))
    elif op[0] == "priority":
        c.request(SetPriority(id=ids[op[1]], set=op[2]))
    else:
        raise AssertionError(op)


@pytest.mark.parametrize("restart", [False, True], ids=["", "after a restart"])
@pytest.mark.parametrize(
    ("priorities", "ops", "order"),
    [
        pytest.param([0, 0, 0], [], [0, 1, 2], id="first in first out"),
        pytest.param([-1, 0, 5, 5], [], [2, 3, 1, 0], id="priority, then FIFO"),
        pytest.param([0, 0, 0], [("urgent", 2)], [2, 0, 1], id="-u"),
        pytest.param([0, 5, 5], [("urgent", 0)], [0, 1, 2], id="-u ahead of higher priorities"),
        pytest.param([0, 0, 0], [("swap", 0, 2)], [2, 1, 0], id="-U"),
        pytest.param([5, 0, 0], [("swap", 0, 2)], [2, 1, 0], id="-U across priorities"),
        pytest.param([0, 0, 0, 0], [("urgent", 3), ("urgent", 2)], [2, 3, 0, 1], id="-u twice"),
        pytest.param(
            [-1, 0, 5, 5], [("priority", 0, 10), ("urgent", 1)], [1, 0, 2, 3], id="--priority then -u"
        ),
    ],
)
def test_queue_order(
    core: Core, priorities: list[int], ops: list[Op], order: list[int], restart: bool
) -> None:
    c = core
    gate = c.submit("true")
    pid = c.started(gate)
    ids = [c.submit("true", priority=p) for p in priorities]
    for op in ops:
        _reorder(c, ids, op)
    expected = [ids[i] for i in order]
    assert c.queue() == expected
    if restart:
        c.adoption.alive.add(pid)
        c.restart()
        assert c.queue() == expected and c.running() == [gate]
        c.adopted_exit(gate, 0)
    else:
        c.run(gate)
    for job in expected:  # one slot: they start one at a time, in that order
        assert c.launched()[-1] == job
        c.run(job)
    assert c.launched()[-len(expected) :] == expected


@pytest.mark.parametrize(
    "op", [("urgent", 0), ("swap", 0, 1), ("priority", 0, 3)], ids=["-u", "-U", "--priority"]
)
def test_only_waiting_jobs_are_reordered(core: Core, op: Op) -> None:
    running = core.submit("true")
    queued = core.submit("true")
    with pytest.raises(RequestError, match=f"job {running} is not queued"):
        _reorder(core, [running, queued], op)
    assert core.queue() == [queued] and core.job(running).priority == 0


def test_the_queue_order_after_a_retry_survives_a_restart(make_core: MakeCore) -> None:
    c = make_core(2)
    gate = c.submit("true")
    flaky = c.submit("flaky", retry=1)
    first, urgent = c.submit("true"), c.submit("true")
    c.adoption.alive.add(c.started(gate))
    c.started(flaky)
    c.request(Urgent(id=urgent))
    c.request(Slots(set=1))  # nothing more starts: the order stays visible
    c.loop.advance(1)
    c.ended(flaky, 1)  # back at its place for a retry
    before = c.queue()
    assert sorted(before) == [flaky, first, urgent] and before[-1] == first
    c.restart()
    assert c.queue() == before


# -- dependencies: -D (after) and -W (after_ok) --------------------------------------------------


def _settle(c: Core, dep: int, fate: str, blocker: int) -> None:
    """The dependency ends (or goes) as ``fate`` says, while ``blocker`` holds the only slot
    when the dependant would otherwise start at once."""
    if fate == "removed while queued":
        c.request(Remove(id=dep))
        c.run(blocker)
        return
    c.run(blocker)
    c.started(dep)
    if fate == "ok":
        c.ended(dep, 0)
    elif fate == "failed":
        c.ended(dep, 2)
    elif fate == "killed":
        c.kill(dep)
        c.ended(dep, signal=signal.SIGTERM)
    elif fate == "lost":
        c.launcher_died()  # no exit recorded, shim not alive: lost
    else:
        raise AssertionError(fate)


DEP_FATES = ["ok", "failed", "killed", "lost", "removed while queued"]


@pytest.mark.parametrize("fate", DEP_FATES)
@pytest.mark.parametrize("kind", ["after", "after_ok"])
def test_dependencies(core: Core, kind: str, fate: str) -> None:
    c = core
    blocker = c.submit("true")
    dep = c.submit("true")
    dependant = c.submit("true", **{kind: [dep]})
    assert c.state(dependant) == "queued"
    _settle(c, dep, fate, blocker)
    runs = kind == "after" or fate == "ok"
    if runs:
        assert c.state(dependant) == "running" and c.launched()[-1] == dependant
    else:
        assert c.state(dependant) == "skipped" and dependant not in c.launched()
        assert c.job(dependant).reason == f"dependency {dep} did not end well"
        assert c.job(dependant).exit_status == 255


@pytest.mark.parametrize("kind", ["after", "after_ok"])
def test_a_dependency_removed_after_it_succeeded_still_counts(core: Core, kind: str) -> None:
    c = core
    dep = c.submit("true")
    gate = c.submit("true")
    dependant = c.submit("true", **{kind: [dep]})
    c.run(dep)  # the gate starts next; the dependant waits for the slot
    assert c.state(gate) == "running"
    assert c.request(Remove(id=dep)) == {"ok": True, "id": dep}
    assert c.job(dependant).dep_outcomes == {dep: True}
    c.run(gate)
    assert c.state(dependant) == "running"


def test_a_job_waiting_for_its_dependency_holds_up_nobody(make_core: MakeCore) -> None:
    c = make_core(2)
    first = c.submit("true")
    dependant = c.submit("true", after_ok=[first])
    other = c.submit("true")
    assert c.launched() == [first, other]
    assert c.queue() == [dependant]
    c.run(first)
    assert c.launched() == [first, other, dependant]


def test_a_dependency_must_exist(core: Core) -> None:
    with pytest.raises(RequestError, match="cannot depend on job 7"):
        core.submit("true", after=[7])
    assert core.sp.table.jobs == {}


# -- skip-if-exists ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at_submit", "at_start", "skipped"),
    [
        pytest.param(False, False, False, id="absent: runs"),
        pytest.param(True, True, True, id="present: skipped"),
        pytest.param(False, True, True, id="appears while queued: skipped"),
        pytest.param(True, False, False, id="removed while queued: runs"),
    ],
)
def test_skip_if_exists_is_checked_when_the_job_is_due(
    core: Core, at_submit: bool, at_start: bool, skipped: bool
) -> None:
    c = core
    marker = c.root / "runs" / "DONE"
    marker.parent.mkdir()
    if at_submit:
        marker.touch()
    gate = c.submit("true")
    job = c.submit("true", skip_if_exists="runs/DONE")  # relative to the job's directory
    after = c.submit("true")
    if at_start:
        marker.touch()
    else:
        marker.unlink(missing_ok=True)
    c.run(gate)
    if skipped:
        assert c.state(job) == "skipped" and "runs/DONE exists" in c.job(job).reason
        assert job not in c.launched()
        assert c.launched()[-1] == after  # the slot it did not take goes to the next job
    else:
        assert c.state(job) == "running" and c.launched()[-1] == job


# -- GPUs (TS_FAKE_GPUS) -----------------------------------------------------------------------


def test_gpu_jobs_get_distinct_gpus_and_wait_while_they_are_taken(
    make_core: MakeCore, tmp_path: Path
) -> None:
    c = gpu_core(make_core, tmp_path, [0, 0])
    first, second, third = (c.submit("train", gpus=1) for _ in range(3))
    cpu = c.submit("cpu-work")
    assert c.launched() == [first, second, cpu]  # the waiting GPU job holds up no CPU job
    held = {first: c.job(first).assigned_gpus, second: c.job(second).assigned_gpus}
    assert sorted(held.values()) == [[0], [1]]
    for job, gpus in held.items():
        assert c.launch_env(job)["CUDA_VISIBLE_DEVICES"] == str(gpus[0])
        assert c.launch_env(job)["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert c.launch_env(cpu)["CUDA_VISIBLE_DEVICES"] == ""
    assert c.state(third) == "allocating"
    reason = c.job(third).reason
    assert f"held by job {first}" in reason and f"held by job {second}" in reason
    c.run(second)
    assert c.state(third) == "running" and c.job(third).assigned_gpus == held[second]
    assert c.launch_env(third)["CUDA_VISIBLE_DEVICES"] == str(held[second][0])
    assert c.job(third).reason == ""


@pytest.mark.parametrize(
    ("fields", "env", "visible"),
    [
        pytest.param({"gpus": 2}, {}, "0,1", id="-G 2"),
        pytest.param({"gpu_indices": [2]}, {}, "2", id="-g 2"),
        pytest.param({"gpu_indices": [0, 2]}, {}, "0,2", id="-g 0,2"),
        pytest.param({}, {"CUDA_VISIBLE_DEVICES": "3"}, "", id="a CPU job sees no GPU"),
        pytest.param(
            {},
            {"CUDA_VISIBLE_DEVICES": "3", "TS_KEEP_CUDA_VISIBLE_DEVICES": "1"},
            "3",
            id="unless it keeps its own",
        ),
    ],
)
def test_cuda_visible_devices_in_the_launch(
    make_core: MakeCore, tmp_path: Path, fields: dict[str, Any], env: dict[str, str], visible: str
) -> None:
    c = gpu_core(make_core, tmp_path, [0, 0, 0])
    reply = c.request(Submit(command=["x"], cwd=str(c.root), env={"PATH": "/bin", **env}, **fields))
    assert reply is not None
    launched = c.launch_env(reply["id"])
    assert launched["CUDA_VISIBLE_DEVICES"] == visible
    assert ("CUDA_DEVICE_ORDER" in launched) is bool(fields)


def test_a_gpu_job_waits_for_memory_and_starts_when_it_frees(make_core: MakeCore, tmp_path: Path) -> None:
    c = gpu_core(make_core, tmp_path, [24000])
    job = c.submit("train", gpus=1)
    cpu = c.submit("true")
    assert c.state(job) == "allocating" and "below 90% free" in c.job(job).reason
    assert c.launched() == [cpu]
    c.loop.advance(5)  # polled, still full
    assert c.state(job) == "allocating"
    fake_gpus(tmp_path / "gpus.json", [0])  # someone else's process left the GPU
    c.loop.advance(1)  # TS_GPU_POLL
    assert c.state(job) == "running" and c.launch_env(job)["CUDA_VISIBLE_DEVICES"] == "0"
    assert c.loop.pending_timers() == 0  # nothing waits for GPUs: no more polling


def test_unreadable_gpus_make_gpu_jobs_wait_and_cpu_jobs_run(make_core: MakeCore, tmp_path: Path) -> None:
    c = gpu_core(make_core, tmp_path, [0])
    (tmp_path / "gpus.json").write_text("not json")
    job = c.submit("train", gpus=1)  # accepted: NVML may answer again
    cpu = c.submit("true")
    assert c.state(job) == "allocating" and "GPUs cannot be read" in c.job(job).reason
    assert c.launched() == [cpu]
    fake_gpus(tmp_path / "gpus.json", [0])
    c.loop.advance(1)
    assert c.state(job) == "running"


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"gpus": 3}, "only 2"), ({"gpu_indices": [5]}, "no GPU 5")],
    ids=["-G more than exist", "-g one that does not exist"],
)
def test_gpu_requests_that_could_never_run_are_refused(
    make_core: MakeCore, tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    c = gpu_core(make_core, tmp_path, [0, 0])
    with pytest.raises(RequestError, match=message):
        c.submit("train", **fields)
    assert c.sp.table.jobs == {}


def test_an_adopted_gpu_job_keeps_its_gpu_across_a_restart(make_core: MakeCore, tmp_path: Path) -> None:
    c = gpu_core(make_core, tmp_path, [0])
    holder = c.submit("train", gpus=1)
    c.adoption.alive.add(c.started(holder))
    c.restart()
    assert c.running() == [holder] and c.job(holder).assigned_gpus == [0]
    waiting = c.submit("train", gpus=1)
    assert c.state(waiting) == "allocating" and f"held by job {holder}" in c.job(waiting).reason
    c.adopted_exit(holder, 0)
    assert c.state(waiting) == "running" and c.job(waiting).assigned_gpus == [0]
