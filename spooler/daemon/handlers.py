"""One function per request type, and the table the server dispatches through.

A handler returns the reply map, or ``None`` when it will reply later (``wait``).  It raises
:class:`RequestError` for anything the user must fix; the server turns that into an error reply.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from spooler import protocol, render
from spooler.daemon import validate as v
from spooler.daemon.errors import RequestError
from spooler.daemon.select import has_filter, select
from spooler.daemon.server import Connection, Handler
from spooler.daemon.spooler import Spooler
from spooler.daemon.submit import add_waiter, submit, wait_reply
from spooler.jobs import Job, JobState

Reply = dict[str, Any] | None
OK: dict[str, Any] = {"ok": True}


def list_jobs(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    fmt = v.optional_str(msg, "format", 16) or "default"
    now = time.time()
    jobs = select(sp, msg) if has_filter(msg) else list(sp.ordered())
    if v.flag(msg, "ids_only"):
        return {"ok": True, "text": "".join(f"{j.id}\n" for j in jobs)}
    if v.flag(msg, "gpu_jobs"):  # -g: the running jobs that hold GPUs
        jobs = [j for j in jobs if j.state.is_active and j.assigned_gpus]
    if fmt == "json":
        text = render.render_json(jobs, now)
    elif fmt == "tab":
        text = render.render_tab(jobs, now)
    elif fmt == "default":
        text = render.render_list(
            jobs,
            busy=sp.busy_slots,
            slots=sp.settings.slots,
            now=now,
            width=v.integer(msg, "width", 0, 100_000, 0),
            color=v.flag(msg, "color"),
            show_gpus=sp.gpu.present or any(j.gpus or j.gpu_indices for j in jobs),
        )
    else:
        raise v.bad(f"unknown list format {fmt!r} (choose default, json or tab)")
    return {"ok": True, "text": text}


def info(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    job = sp.get(v.job_id(msg), "run")
    return {"ok": True, "text": render.render_info(job, time.time())}


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
    raise v.bad(f"unknown job field {name!r}")


def job_field(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    """One field of a job; the pid of a job handed to the launcher a moment ago once it is known."""
    default = v.optional_str(msg, "default", 8) or "added"
    job = sp.get(v.job_id(msg), default)
    name = v.string(msg, "field", 32)
    if name == "pid" and job.state is JobState.RUNNING and not sp.has_started(job):

        def reply(now: Job | None, job_id: int) -> dict[str, Any]:
            return {"ok": True, "id": job_id, "value": now.pid if now else None}

        add_waiter(sp, job.id, conn, until_start=True, reply=reply)
        return None
    value = _field(job, name)
    if name == "status":
        value["started"] = sp.has_started(job)
    return {"ok": True, "id": job.id, "value": value}


def wait(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    """Reply when the job ends; with ``until: "start"``, once its process runs or it cannot start."""
    job = sp.get(v.job_id(msg), v.optional_str(msg, "default", 8) or "added")
    until = v.optional_str(msg, "until", 8) or "end"
    if until not in ("start", "end"):
        raise v.bad('until must be "start" or "end"')
    until_start = until == "start"
    if job.state.is_done or (until_start and sp.has_started(job)):
        return wait_reply(job, job.id)
    add_waiter(sp, job.id, conn, until_start)
    return None


def _bulk(sp: Spooler, msg: dict[str, Any], eligible: Any, act: Any) -> Reply:
    """Apply ``act`` to every job the filter selects that is ``eligible``; report what was left."""
    chosen = select(sp, msg)
    done = [j.id for j in chosen if eligible(j)]
    for job_id in done:
        act(sp.jobs[job_id])
    left = [j.id for j in chosen if j.id not in set(done)]
    return {"ok": True, "ids": done, "left": left}


def remove(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    if has_filter(msg) and v.job_id(msg) is None:
        return _bulk(sp, msg, lambda j: not j.state.is_active, sp.remove)
    job = sp.get(v.job_id(msg))
    sp.remove(job)
    return {"ok": True, "id": job.id}


def requeue(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    if has_filter(msg) and v.job_id(msg) is None:
        return _bulk(sp, msg, lambda j: j.state.is_done, sp.requeue)
    job = sp.get(v.job_id(msg))
    sp.requeue(job)
    return {"ok": True, "id": job.id}


def priority(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    job = sp.get(v.job_id(msg))
    sp.set_priority(job, v.integer(msg, "set", -1_000_000, 1_000_000, 0))
    return {"ok": True, "id": job.id}


def kill(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    if v.flag(msg, "all") or (has_filter(msg) and v.job_id(msg) is None):
        if not has_filter(msg):
            msg = {"filter": {"states": ["running"]}}
        return _bulk(sp, msg, lambda j: j.state.is_active and bool(j.pid), sp.kill)
    job = sp.get(v.job_id(msg), "run")
    sp.kill(job, v.integer(msg, "signal", 1, 64, int(signal.SIGTERM)), escalate=not v.flag(msg, "only"))
    return {"ok": True, "id": job.id}


def clear(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    return {"ok": True, "cleared": sp.clear_finished()}


def slots(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    value = v.optional_int(msg, "set", 1, 1_000_000)
    if value is not None:
        sp.set_slots(value)
    return {"ok": True, "slots": sp.settings.slots}


def urgent(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    job = sp.get(v.job_id(msg))
    sp.make_urgent(job)
    return {"ok": True, "id": job.id}


def swap(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    a, b = sp.get(v.job_id(msg, "a")), sp.get(v.job_id(msg, "b"))
    sp.swap(a, b)
    return OK


def count_running(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    return {"ok": True, "value": sp.running_count}


def last_id(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    if sp.last_added is None:
        raise RequestError("not_found", "no job has been added yet")
    return {"ok": True, "value": sp.last_added}


def logdir(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    path = v.optional_str(msg, "set", 4096)
    if path is not None:
        sp.set_logdir(path)
    return {"ok": True, "value": sp.settings.logdir}


def env(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    name = v.string(msg, "name", 1024)
    if not name or "=" in name:
        raise v.bad(f"invalid variable name {name!r}")
    overrides = sp.settings.env_overrides
    if "set" in msg:
        overrides[name] = v.string(msg, "set", 1024 * 1024)
        sp.save_settings()
    elif v.flag(msg, "unset"):
        overrides[name] = None
        sp.save_settings()
    value = overrides[name] if name in overrides else os.environ.get(name)
    return {"ok": True, "value": value}


def gpu_free_perc(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    value = v.optional_int(msg, "set", 1, 100)
    if value is not None:
        sp.settings.gpu_free_perc = value
        sp.save_settings()
        sp.kick()
    return {"ok": True, "value": sp.settings.gpu_free_perc}


def gpu_status(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    status = sp.gpu.status(sp.running.values())
    if v.flag(msg, "data"):
        return {"ok": True, **status}
    return {"ok": True, "text": render.render_gpu_status(status)}


def shutdown(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    """-K keeps every job for the next daemon; --reset first drops all but the running ones."""
    if v.flag(msg, "drop"):
        for job in [j for j in sp.jobs.values() if not j.state.is_active]:
            sp.delete(job)
    sp.loop.call_soon(sp.loop.stop)
    return {"ok": True, "running": len(sp.running)}


def ping(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    return {
        "ok": True,
        "pid": os.getpid(),
        "version": protocol.PROTOCOL_VERSION,
        "snapshots": sp.snapshots_dir,
    }


HANDLERS: dict[str, Handler] = {
    "submit": submit,
    "list": list_jobs,
    "info": info,
    "job_field": job_field,
    "wait": wait,
    "remove": remove,
    "requeue": requeue,
    "priority": priority,
    "kill": kill,
    "clear": clear,
    "slots": slots,
    "urgent": urgent,
    "swap": swap,
    "count_running": count_running,
    "last_id": last_id,
    "logdir": logdir,
    "env": env,
    "gpu_free_perc": gpu_free_perc,
    "gpu_status": gpu_status,
    "shutdown": shutdown,
    "ping": ping,
}
