"""Submitting jobs: one command, a ``--batch`` file or a sweep's items, and ``-f`` waiters.

Everything in a request is validated before the first job is queued, so a batch or a sweep is
queued whole or not at all.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from spooler import protocol
from spooler.daemon import validate as v
from spooler.daemon.errors import RequestError
from spooler.daemon.server import Connection
from spooler.daemon.spooler import Spooler, Submission
from spooler.jobs import Job

Reply = dict[str, Any] | None
MAX_ARGS_JSON = 64 * 1024


def _submission(sp: Spooler, msg: dict[str, Any], words: list[str]) -> Submission:
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
        priority=v.integer(msg, "priority", -1_000_000, 1_000_000, 0),
        max_retries=v.integer(msg, "retry", 0, 1000, 0),
        sweep=v.optional_str(msg, "sweep", 255),
        snapshot=v.optional_str(msg, "snapshot", 4096),
        snapshot_info=v.optional_str(msg, "snapshot_info", 4096),
    )
    return sub


def _close(fds: tuple[int, int] | None) -> None:
    for fd in set(fds or ()):
        os.close(fd)


def _items(msg: dict[str, Any]) -> list[tuple[list[str], dict[str, Any] | None, str | None]]:
    """(command, arguments, skip-if-exists marker) for each job of the request."""
    if "items" in msg:
        items = msg["items"]
        if not isinstance(items, list) or not items:
            raise v.bad("items must be a non-empty list")
        out = []
        for n, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise v.bad(f"item {n} must be a map")
            out.append(
                (
                    v.command(item.get("command"), f"item {n}"),
                    _args(item),
                    v.optional_str(item, "skip_if_exists"),
                )
            )
        return out
    batch = msg.get("batch")
    if batch is not None:
        if not isinstance(batch, list) or not batch:
            raise v.bad("batch must be a non-empty list of commands")
        return [(v.command(words, f"batch line {n}"), None, None) for n, words in enumerate(batch, 1)]
    return [(v.command(msg.get("command")), _args(msg), v.optional_str(msg, "skip_if_exists"))]


def _args(msg: dict[str, Any]) -> dict[str, Any] | None:
    args = msg.get("args")
    if args is None:
        return None
    if not isinstance(args, dict):
        raise v.bad("args must be a map")
    try:
        text = json.dumps(args)
    except (TypeError, ValueError):
        raise v.bad("args must hold JSON values only") from None
    if len(text) > MAX_ARGS_JSON:
        raise v.bad(f"args are larger than {MAX_ARGS_JSON} bytes of JSON")
    return args


def submit(sp: Spooler, msg: dict[str, Any], conn: Connection) -> Reply:
    now = time.time()
    items = _items(msg)
    single = "items" not in msg and "batch" not in msg
    first_command, first_args, first_marker = items[0]
    template = _submission(sp, msg, first_command)
    template.args, template.skip_if_exists = first_args, first_marker
    foreground = v.flag(msg, "foreground")
    if foreground and not single:
        raise v.bad("-f waits for one job: it cannot go with a batch or a sweep")
    if single:
        # ts -nf: the job writes to the client's terminal.  The descriptors are taken only
        # now, and closed on any refusal, so a refused request never holds the terminal open.
        fds = conn.take_fds()
        if foreground and not template.store_output and len(fds) == 2:
            template.terminal_fds = (fds[0], fds[1])
        else:
            for fd in fds:
                os.close(fd)
        try:
            job = sp.submit(template, now)
        except RequestError as exc:
            if exc.code != "queue_full" or v.flag(msg, "no_block"):
                _close(template.terminal_fds)
                raise
            return _submit_when_there_is_room(sp, template, conn)
        except BaseException:
            _close(template.terminal_fds)
            raise
        if v.flag(msg, "foreground"):
            # -f: a second reply follows when the job ends; registered now, so it cannot be missed.
            add_waiter(sp, job.id, conn)
        return {"ok": True, "id": job.id}
    limit = sp.config.queue_limit
    if limit is not None and len(sp.queue) + len(items) > limit:
        raise RequestError(
            "queue_full", f"{len(items)} jobs do not fit the queue limit of {limit} (TS_MAXCONN)"
        )
    chain = v.flag(msg, "after_last")  # -d in a batch: each line runs after the one before
    ids: list[int] = []
    for command, args, marker in items:
        template.command, template.args, template.skip_if_exists = command, args, marker
        try:
            ids.append(sp.submit(template, now).id)
        except RequestError as exc:
            if not ids or exc.code != "internal":
                raise
            # The save-list cannot be written (a full disk): the jobs recorded so far stay
            # queued, and the client is told which they are.
            return {"ok": True, "ids": ids, "partial": f"only {len(ids)} of {len(items)} jobs queued: {exc}"}
        if chain:
            template.after = [*template.after[:-1], ids[-1]]
    return {"ok": True, "ids": ids}


def _submit_when_there_is_room(sp: Spooler, sub: Submission, conn: Connection) -> Reply:
    """Without -B a full queue makes the submitter wait, as in the original, not fail."""

    def admit() -> bool:
        if conn.closed:
            _close(sub.terminal_fds)
            return True  # the submitter gave up: nothing to queue
        try:
            job = sp.submit(sub, time.time())
        except RequestError as exc:
            if exc.code == "queue_full":
                return False
            _close(sub.terminal_fds)
            conn.reply_deferred(protocol.error_reply(exc.code, str(exc)))
            return True
        conn.reply_deferred({"ok": True, "id": job.id})
        return True

    conn.defer()
    sp.space_waiters.append(admit)
    return None


def wait_reply(job: Job | None, job_id: int) -> dict[str, Any]:
    if job is None:
        return {"ok": True, "id": job_id, "removed": True, "exit_status": 255, "state": "removed"}
    return {"ok": True, "id": job.id, "exit_status": job.exit_status, "state": job.state.value}


def add_waiter(
    sp: Spooler,
    job_id: int,
    conn: Connection,
    until_start: bool = False,
    reply: Callable[[Job | None, int], dict[str, Any]] = wait_reply,
) -> None:
    """Reply on ``conn`` when the job ends (or is removed), or with ``until_start`` as soon as its
    process is running (its log exists and its pid is known) or it can no longer start."""
    conn.defer()

    def done(ended: Job | None) -> None:
        conn.reply_deferred(reply(ended, job_id))

    table = sp.start_waiters if until_start else sp.waiters
    table.setdefault(job_id, []).append(done)

    def forget() -> None:
        waiters = table.get(job_id)
        if waiters and done in waiters:
            waiters.remove(done)

    conn.on_close.append(forget)
