"""Looking at jobs: the list (``-l``, ``-M``), one job (``-i``), one field of it, waiting for it."""

from __future__ import annotations

import time
from typing import Any

from spooler.daemon import render
from spooler.daemon.filters import select
from spooler.daemon.redact import redacted
from spooler.daemon.server import Connection
from spooler.daemon.spooler import Spooler
from spooler.daemon.waiters import wait_reply
from spooler.jobs import Job, JobState
from spooler.protocol import bad
from spooler.protocol import requests as rq

Reply = dict[str, Any] | None


def _as_seen_by(conn: Connection, jobs: list[Job]) -> list[Job]:
    """On a multi-user daemon, others' jobs without what only their owner may see."""
    caller = conn.caller
    if caller is None or caller.admin:
        return jobs
    return [job if caller.owns(job) else redacted(job) for job in jobs]


def list_jobs(sp: Spooler, req: rq.List, conn: Connection) -> Reply:
    fmt = req.format or "default"
    now = time.time()
    # Redacted before filtering: a --where on another's arguments must not be an oracle.
    jobs = select(_as_seen_by(conn, list(sp.ordered())), req.filter)
    if req.last is not None:
        jobs = jobs[-req.last :]
    if req.ids_only:
        return {"ok": True, "text": "".join(f"{j.id}\n" for j in jobs)}
    if req.gpu_jobs:  # -g: the running jobs that hold GPUs
        jobs = [j for j in jobs if j.state.is_active and j.assigned_gpus]
    if fmt == "json":
        text = render.render_json(jobs, now)
    elif fmt == "tab":
        text = render.render_tab(jobs, now)
    elif fmt == "default":
        text = render.render_list(
            jobs,
            busy=sp.busy_in(None),
            slots=sp.settings.slots,
            now=now,
            width=req.width,
            color=req.color,
            show_gpus=sp.gpu.present or any(j.gpus or j.gpu_indices for j in jobs),
            show_queue=bool(sp.settings.queues),
            show_user=conn.caller is not None,
            show_slurm=sp.mixed,
        )
    else:
        raise bad(f"unknown list format {fmt!r} (choose default, json or tab)")
    return {"ok": True, "text": text}


def info(sp: Spooler, req: rq.Info, conn: Connection) -> Reply:
    job = sp.get(req.id, "run")
    in_slurm = sp.in_slurm(job)
    if sp.slurm is not None and in_slurm:
        sp.slurm.details(job)
    backend = ("slurm" if in_slurm else "local") if sp.mixed else ""
    job = _as_seen_by(conn, [job])[0]
    return {"ok": True, "text": render.render_info(job, time.time(), backend)}


def _field(job: Job, name: str) -> Any:
    if name == "state":
        return job.state.value
    if name == "pid":
        return job.pid
    if name == "output":
        return job.log_path
    if name == "label":
        return job.label or ""
    if name == "command":
        return job.command_text
    if name == "status":
        return {
            "state": job.state.value,
            "output": job.log_path,
            "gzip": job.gzip,
            "exit_status": job.exit_status,
            "id": job.id,
        }
    raise bad(f"unknown job field {name!r}")


def job_field(sp: Spooler, req: rq.JobField, conn: Connection) -> Reply:
    """One field of a job; the pid of a job handed to the launcher a moment ago once it is known."""
    job = sp.get(req.id, req.default or "added")
    if req.field == "pid" and job.slurm_id:
        raise bad(f"job {job.id} runs in SLURM: it has no process here")
    if req.field == "pid" and job.state is JobState.RUNNING and not sp.has_started(job):

        def reply(now: Job | None, job_id: int) -> dict[str, Any]:
            return {"ok": True, "id": job_id, "value": now.pid if now else None}

        sp.waiters.add(job.id, conn, until_start=True, reply=reply)
        return None
    value = _field(job, req.field)
    if req.field == "status":
        value["started"] = sp.has_started(job)
    return {"ok": True, "id": job.id, "value": value}


def wait(sp: Spooler, req: rq.Wait, conn: Connection) -> Reply:
    """Reply when the job ends; with ``until: "start"``, once its process runs or it cannot start."""
    job = sp.get(req.id, req.default or "added")
    until = req.until or "end"
    if until not in ("start", "end"):
        raise bad('until must be "start" or "end"')
    until_start = until == "start"
    if job.state.is_done or (until_start and sp.has_started(job)):
        return wait_reply(job, job.id)
    sp.waiters.add(job.id, conn, until_start)
    return None
