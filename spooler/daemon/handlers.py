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
from spooler.daemon.server import Connection, Handler
from spooler.daemon.spooler import Spooler, Submission
from spooler.jobs import Job

Reply = dict[str, Any] | None
OK: dict[str, Any] = {"ok": True}


def _submission(sp: Spooler, msg: dict[str, Any], words: list[str], conn: Connection) -> Submission:
    after = v.id_list(msg, "after")
    if v.flag(msg, "after_last"):
        if sp.last_added is None:
            raise RequestError("not_found", "-d: there is no previous job to run after")
        after.append(sp.last_added)
    gpus = v.integer(msg, "gpus", 0, 1024, 0)
    gpu_indices = v.id_list(msg, "gpu_indices") or None
    gpu_mem = v.optional_int(msg, "gpu_mem_mib", 1, 2**40)
    if gpu_mem is not None and not gpus and not gpu_indices:
        gpus = 1  # --gpu_mem alone: one shared GPU
    if gpu_indices and gpus:
        raise v.bad("-G and -g cannot be combined: -g names the GPUs itself")
    log_name = v.optional_str(msg, "log_name", 255)
    if log_name is not None and (not log_name or "/" in log_name or log_name in (".", "..")):
        raise v.bad("-O takes a file name without a directory")
    sub = Submission(
        command=words,
        cwd=v.string(msg, "cwd", 4096),
        env=v.environment(msg),
        label=v.optional_str(msg, "label", 1024),
        slots=v.integer(msg, "slots", 1, 1_000_000, 1),
        store_output=not v.flag(msg, "no_output"),
        stderr_apart=v.flag(msg, "stderr_apart"),
        gzip=v.flag(msg, "gzip"),
        log_name=log_name,
        mail=v.flag(msg, "mail"),
        after=after,
        after_ok=v.id_list(msg, "after_ok"),
        env_info=v.optional_str(msg, "env_info", 1024 * 1024),
        gpus=gpus,
        gpu_indices=gpu_indices,
        gpu_mem_mib=gpu_mem,
    )
    fds = conn.take_fds()
    if v.flag(msg, "foreground") and not sub.store_output and len(fds) == 2:
        sub.terminal_fds = (fds[0], fds[1])
    else:
        for fd in fds:
            os.close(fd)
    return sub


def submit(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    now = time.time()
    batch = msg.get("batch")
    if batch is None:
        sub = _submission(sp, msg, v.command(msg.get("command")), conn)
        try:
            job = sp.submit(sub, now)
        except RequestError as exc:
            if exc.code != "queue_full" or v.flag(msg, "no_block"):
                raise
            return _submit_when_there_is_room(sp, sub, conn)
        if v.flag(msg, "foreground"):
            # -f: a second reply follows when the job ends; registered now, so it cannot be missed.
            _add_waiter(sp, job.id, conn)
        return {"ok": True, "id": job.id}
    if not isinstance(batch, list) or not batch:
        raise v.bad("batch must be a non-empty list of commands")
    commands = [v.command(words, f"batch line {n}") for n, words in enumerate(batch, 1)]
    limit = sp.config.queue_limit
    if limit is not None and len(sp.queue) + len(commands) > limit:
        raise RequestError(
            "queue_full", f"a batch of {len(commands)} does not fit the queue limit of {limit} (TS_MAXCONN)"
        )
    template = _submission(sp, msg, commands[0], conn)
    chain = v.flag(msg, "after_last")  # -d in a batch: each line runs after the one before
    ids = []
    for words in commands:
        template.command = words
        ids.append(sp.submit(template, now).id)
        if chain:
            template.after = [*template.after[:-1], ids[-1]]
    return {"ok": True, "ids": ids}


def _submit_when_there_is_room(sp: Spooler, sub: Submission, conn: Connection) -> Reply:
    """Without -B a full queue makes the submitter wait, as in the original, not fail."""

    def admit() -> bool:
        if conn.closed:
            return True  # the submitter gave up: nothing to queue
        try:
            job = sp.submit(sub, time.time())
        except RequestError as exc:
            if exc.code == "queue_full":
                return False
            conn.reply_deferred(protocol.error_reply(exc.code, str(exc)))
            return True
        conn.reply_deferred({"ok": True, "id": job.id})
        return True

    conn.defer()
    sp.space_waiters.append(admit)
    return None


def list_jobs(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    fmt = v.optional_str(msg, "format", 16) or "default"
    now = time.time()
    jobs = list(sp.ordered())
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
    default = v.optional_str(msg, "default", 8) or "added"
    job = sp.get(v.job_id(msg), default)
    return {"ok": True, "id": job.id, "value": _field(job, v.string(msg, "field", 32))}


def _wait_reply(job: Job | None, job_id: int) -> dict[str, Any]:
    if job is None:
        return {"ok": True, "id": job_id, "removed": True, "exit_status": 255, "state": "removed"}
    return {"ok": True, "id": job.id, "exit_status": job.exit_status, "state": job.state.value}


def wait(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    job = sp.get(v.job_id(msg), v.optional_str(msg, "default", 8) or "added")
    if job.state.is_done:
        return _wait_reply(job, job.id)
    _add_waiter(sp, job.id, conn)
    return None


def _add_waiter(sp: Spooler, job_id: int, conn: Connection) -> None:
    conn.defer()

    def done(ended: Job | None) -> None:
        conn.reply_deferred(_wait_reply(ended, job_id))

    sp.waiters.setdefault(job_id, []).append(done)

    def forget() -> None:
        waiters = sp.waiters.get(job_id)
        if waiters and done in waiters:
            waiters.remove(done)

    conn.on_close.append(forget)


def remove(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    job = sp.get(v.job_id(msg))
    sp.remove(job)
    return {"ok": True, "id": job.id}


def kill(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    if v.flag(msg, "all"):
        killed = [j.id for j in list(sp.running.values()) if j.pid]
        for job_id in killed:
            sp.kill(sp.jobs[job_id], signal.SIGTERM)
        return {"ok": True, "ids": killed}
    job = sp.get(v.job_id(msg), "run")
    sp.kill(job, v.integer(msg, "signal", 1, 64, int(signal.SIGTERM)))
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
    sp.loop.call_soon(sp.loop.stop)
    return OK


def ping(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    return {"ok": True, "pid": os.getpid(), "version": protocol.PROTOCOL_VERSION}


HANDLERS: dict[str, Handler] = {
    "submit": submit,
    "list": list_jobs,
    "info": info,
    "job_field": job_field,
    "wait": wait,
    "remove": remove,
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
