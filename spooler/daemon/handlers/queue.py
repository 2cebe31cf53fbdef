"""Acting on jobs: remove, requeue, reorder (``-u``, ``-U``, ``--priority``), edit, hold,
release, pause, resume, kill, clear.

``-r``, ``-k``, ``--requeue``, ``--hold``, ``--release``, ``--pause`` and ``--resume`` take one
job by id, or every job a filter selects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spooler.daemon.filters import select
from spooler.daemon.server import Connection
from spooler.daemon.spooler import Spooler
from spooler.jobs import Job, JobState
from spooler.protocol import requests as rq

Reply = dict[str, Any] | None
OK: dict[str, Any] = {"ok": True}


def _bulk(sp: Spooler, spec: rq.Filter, eligible: Callable[[Job], bool], act: Callable[[Job], None]) -> Reply:
    """Apply ``act`` to every job the filter selects that is ``eligible``; report what was left."""
    chosen = select(sp.ordered(), spec)
    done = [j.id for j in chosen if eligible(j)]
    for job_id in done:
        act(sp.table.jobs[job_id])
    left = [j.id for j in chosen if j.id not in set(done)]
    return {"ok": True, "ids": done, "left": left}


def remove(sp: Spooler, req: rq.Remove, conn: Connection) -> Reply:
    if req.filter is not None and req.id is None:
        return _bulk(sp, req.filter, lambda j: not j.state.is_active, sp.remove)
    job = sp.get(req.id)
    sp.remove(job)
    return {"ok": True, "id": job.id}


def requeue(sp: Spooler, req: rq.Requeue, conn: Connection) -> Reply:
    if req.cascade:
        return _requeue_cascade(sp, req)
    if req.filter is not None and req.id is None:
        return _bulk(sp, req.filter, lambda j: j.state.is_done, sp.requeue)
    job = sp.get(req.id)
    sp.requeue(job)
    return {"ok": True, "id": job.id}


def _requeue_cascade(sp: Spooler, req: rq.Requeue) -> Reply:
    """Every job requeued, dependants included, in the order they were put back."""
    if req.filter is None or req.id is not None:
        job = sp.get(req.id)
        return {"ok": True, "id": job.id, "ids": requeue_cascade(sp, job)}
    requeued: list[int] = []

    def cascade(job: Job) -> None:
        if job.state.is_done:  # not already put back as a dependant of an earlier one
            requeued.extend(requeue_cascade(sp, job))

    reply = _bulk(sp, req.filter, lambda j: j.state.is_done, cascade)
    assert reply is not None
    return {**reply, "ids": requeued}


def requeue_cascade(sp: Spooler, job: Job) -> list[int]:
    """--requeue --cascade: the job, and the jobs skipped because it failed (their -W
    dependency), and theirs, transitively; their dependencies are kept, so they wait again."""
    sp.requeue(job)
    requeued = [job.id]
    chosen = {job.id}
    grew = True
    while grew:
        grew = False
        for other in sorted(sp.table.jobs.values(), key=lambda j: j.id):
            if other.state is JobState.SKIPPED and other.id not in chosen and chosen & set(other.after_ok):
                sp.requeue(other)
                requeued.append(other.id)
                chosen.add(other.id)
                grew = True
    return requeued


def hold(sp: Spooler, req: rq.Hold, conn: Connection) -> Reply:
    if req.filter is not None and req.id is None:
        return _bulk(sp, req.filter, lambda j: j.state.is_waiting, sp.control.hold)
    job = sp.get(req.id)
    sp.control.hold(job)
    return {"ok": True, "id": job.id}


def release(sp: Spooler, req: rq.Release, conn: Connection) -> Reply:
    if req.filter is not None and req.id is None:
        return _bulk(sp, req.filter, lambda j: j.state is JobState.HELD, sp.control.release)
    job = sp.get(req.id)
    sp.control.release(job)
    return {"ok": True, "id": job.id}


def pause(sp: Spooler, req: rq.Pause, conn: Connection) -> Reply:
    if req.filter is not None and req.id is None:
        return _bulk(sp, req.filter, lambda j: j.state is JobState.RUNNING and bool(j.pid), sp.control.pause)
    job = sp.get(req.id, "run")
    sp.control.pause(job)
    return {"ok": True, "id": job.id}


def resume(sp: Spooler, req: rq.Resume, conn: Connection) -> Reply:
    if req.filter is not None and req.id is None:
        return _bulk(sp, req.filter, lambda j: j.state is JobState.PAUSED, sp.control.resume)
    job = sp.get(req.id, "run")
    sp.control.resume(job)
    return {"ok": True, "id": job.id}


def edit(sp: Spooler, req: rq.Edit, conn: Connection) -> Reply:
    job = sp.get(req.id)
    sp.control.edit(job, req.command, req.label, req.priority)
    return {"ok": True, "id": job.id, "command": job.command_text}


def priority(sp: Spooler, req: rq.Priority, conn: Connection) -> Reply:
    job = sp.get(req.id)
    sp.set_priority(job, req.set)
    return {"ok": True, "id": job.id}


def kill(sp: Spooler, req: rq.Kill, conn: Connection) -> Reply:
    if req.all or (req.filter is not None and req.id is None):
        spec = req.filter or rq.Filter(states=["running", "paused"])
        return _bulk(sp, spec, lambda j: j.state.is_active and bool(j.pid or j.slurm_id), sp.kill)
    job = sp.get(req.id, "run")
    sp.kill(job, req.signal, escalate=not req.only)
    return {"ok": True, "id": job.id}


def clear(sp: Spooler, req: rq.Clear, conn: Connection) -> Reply:
    return {"ok": True, "cleared": sp.clear_finished(conn.caller)}


def urgent(sp: Spooler, req: rq.Urgent, conn: Connection) -> Reply:
    job = sp.get(req.id)
    sp.make_urgent(job)
    return {"ok": True, "id": job.id}


def swap(sp: Spooler, req: rq.Swap, conn: Connection) -> Reply:
    a, b = sp.get(req.a), sp.get(req.b)
    sp.swap(a, b)
    return OK
