"""The daemon's own settings and state: slots, the log directory, the jobs' environment, GPUs,
counts, shutdown and ping."""

from __future__ import annotations

import os
import time
from typing import Any

from spooler import protocol
from spooler.daemon import render
from spooler.daemon.launcher.credentials import CredentialError, account_of, ensure_user_dir
from spooler.daemon.queues import DEFAULT, Queue
from spooler.daemon.server import Connection
from spooler.daemon.spooler import Spooler
from spooler.daemon.usage import render_users, user_rows
from spooler.jobs import JobState
from spooler.protocol import E_INVALID, E_NOT_FOUND, RequestError, bad
from spooler.protocol import requests as rq

Reply = dict[str, Any] | None


def slots(sp: Spooler, req: rq.Slots, conn: Connection) -> Reply:
    if req.set is not None:
        sp.set_slots(req.set, req.queue)
    if req.queue is not None:  # a read does not make the queue: a typo would stay for good
        queue = sp.settings.queues.get(req.queue) or Queue(req.queue)
        return {"ok": True, "slots": queue.slots}
    return {"ok": True, "slots": sp.settings.slots}


def queues(sp: Spooler, req: rq.Queues, conn: Connection) -> Reply:
    """Each queue with its slots and how many of its jobs run and wait."""
    slots = {DEFAULT: sp.settings.slots} | {q.name: q.slots for q in sp.settings.queues.values()}
    running = dict.fromkeys(slots, 0)
    queued = dict.fromkeys(slots, 0)
    pending = dict.fromkeys(slots, 0)  # sent to SLURM, which keeps them pending: not running
    for job in sp.running:
        count = pending if job.state is JobState.ALLOCATING else running
        count[job.queue or DEFAULT] = count.get(job.queue or DEFAULT, 0) + 1
    for job in sp.table.queue:
        queued[job.queue or DEFAULT] = queued.get(job.queue or DEFAULT, 0) + 1
    rows = [{"name": n, "slots": slots[n], "running": running[n], "queued": queued[n]} for n in slots]
    if sp.slurm is not None:  # where each queue's jobs run, and how many SLURM keeps pending
        for row in rows:
            row["backend"] = sp.binding.of(None if row["name"] == DEFAULT else str(row["name"]))
            row["pending"] = pending.get(str(row["name"]), 0)
    if req.data:
        return {"ok": True, "queues": rows}
    return {"ok": True, "text": render.render_queues(rows)}


def count_running(sp: Spooler, req: rq.CountRunning, conn: Connection) -> Reply:
    return {"ok": True, "value": sp.running_now()[0]}


def last_id(sp: Spooler, req: rq.LastId, conn: Connection) -> Reply:
    if sp.table.last_added is None:
        raise RequestError(E_NOT_FOUND, "no job has been added yet")
    return {"ok": True, "value": sp.table.last_added}


def logdir(sp: Spooler, req: rq.Logdir, conn: Connection) -> Reply:
    if req.set is not None:
        sp.set_logdir(req.set)
    return {"ok": True, "value": sp.settings.logdir}


def env(sp: Spooler, req: rq.Env, conn: Connection) -> Reply:
    name = req.name
    if not name or "=" in name:
        raise bad(f"invalid variable name {name!r}")
    overrides = sp.settings.env_overrides
    if req.set is not None:
        overrides[name] = req.set
        sp.table.save_settings()
    elif req.unset:
        overrides[name] = None
        sp.table.save_settings()
    value = overrides[name] if name in overrides else os.environ.get(name)
    return {"ok": True, "value": value}


def gpu_free_perc(sp: Spooler, req: rq.GpuFreePerc, conn: Connection) -> Reply:
    if req.set is not None:
        sp.settings.gpu_free_perc = req.set
        sp.table.save_settings()
        sp.kick()
    return {"ok": True, "value": sp.settings.gpu_free_perc}


def gpu_status(sp: Spooler, req: rq.GpuStatus, conn: Connection) -> Reply:
    status = sp.gpu.status(sp.running, sp.dispatcher.earmarked)
    if req.data:
        return {"ok": True, **status}
    return {"ok": True, "text": render.render_gpu_status(status)}


def shutdown(sp: Spooler, req: rq.Shutdown, conn: Connection) -> Reply:
    """-K keeps every job for the next daemon; --reset first drops all but the running ones."""
    if req.drop:
        for job in [j for j in sp.table.jobs.values() if not j.state.is_active and j not in sp.running]:
            sp.events.removed(job)
    sp.loop.call_soon(sp.loop.stop)
    return {"ok": True, "running": len(sp.running)}


def _snapshots_of(sp: Spooler, conn: Connection) -> str:
    """Where the client puts a --snapshot copy: on a multi-user daemon, in the caller's own log
    directory (made here, theirs, 0700), so the copy is theirs and no one else's to read."""
    if conn.caller is None:
        return sp.snapshots_dir
    user_dir = os.path.join(sp.settings.logdir, conn.caller.name)
    try:
        ensure_user_dir(user_dir, account_of(conn.caller.uid))
    except (CredentialError, OSError) as exc:
        raise RequestError(E_INVALID, f"no directory for your snapshots: {exc}") from None
    return os.path.join(user_dir, "snapshots")


def ping(sp: Spooler, req: rq.Ping, conn: Connection) -> Reply:
    return {
        "ok": True,
        "pid": os.getpid(),
        "version": protocol.PROTOCOL_VERSION,
        "snapshots": _snapshots_of(sp, conn),
    }


def users(sp: Spooler, req: rq.Users, conn: Connection) -> Reply:
    rows = user_rows(sp.ordered(), time.time())
    if req.data:
        return {"ok": True, "users": rows}
    return {"ok": True, "text": render_users(rows)}
