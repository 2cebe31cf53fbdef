"""Acting on jobs: remove, requeue, reorder (``-u``, ``-U``, ``--priority``), kill, clear.

``-r``, ``-k`` and ``--requeue`` take one job by id, or every job a filter selects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spooler.daemon.filters import select
from spooler.daemon.server import Connection
from spooler.daemon.spooler import Spooler
from spooler.jobs import Job
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
    if req.filter is not None and req.id is None:
        return _bulk(sp, req.filter, lambda j: j.state.is_done, sp.requeue)
    job = sp.get(req.id)
    sp.requeue(job)
    return {"ok": True, "id": job.id}


def priority(sp: Spooler, req: rq.Priority, conn: Connection) -> Reply:
    job = sp.get(req.id)
    sp.set_priority(job, req.set)
    return {"ok": True, "id": job.id}


def kill(sp: Spooler, req: rq.Kill, conn: Connection) -> Reply:
    if req.all or (req.filter is not None and req.id is None):
        spec = req.filter or rq.Filter(states=["running"])
        return _bulk(sp, spec, lambda j: j.state.is_active and bool(j.pid or j.slurm_id), sp.kill)
    job = sp.get(req.id, "run")
    sp.kill(job, req.signal, escalate=not req.only)
    return {"ok": True, "id": job.id}


def clear(sp: Spooler, req: rq.Clear, conn: Connection) -> Reply:
    return {"ok": True, "cleared": sp.clear_finished()}


def urgent(sp: Spooler, req: rq.Urgent, conn: Connection) -> Reply:
    job = sp.get(req.id)
    sp.make_urgent(job)
    return {"ok": True, "id": job.id}


def swap(sp: Spooler, req: rq.Swap, conn: Connection) -> Reply:
    a, b = sp.get(req.a), sp.get(req.b)
    sp.swap(a, b)
    return OK
