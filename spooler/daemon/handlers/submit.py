"""Queueing: one command, a ``--batch`` file or a sweep's items, and ``-f`` waiters.

The request is checked whole (``Submit.parse``, then the checks below) before the first job is
queued, so a batch or a sweep is queued whole or not at all.
"""

from __future__ import annotations

import os
from typing import Any

from spooler import protocol
from spooler.daemon.server import Connection
from spooler.daemon.spooler import Spooler
from spooler.daemon.terminals import close_pair
from spooler.protocol import E_INTERNAL, E_INVALID, E_NOT_FOUND, E_QUEUE_FULL, RequestError, bad
from spooler.protocol.requests import Submit

Reply = dict[str, Any] | None
# (command, arguments, skip-if-exists marker) of each job of a submission
Run = tuple[list[str], "dict[str, Any] | None", "str | None"]


def _runs(req: Submit) -> list[Run]:
    if req.items is not None:
        return [(item.command, item.args, item.skip_if_exists) for item in req.items]
    if req.batch is not None:
        return [(words, None, None) for words in req.batch]
    if req.command is None:
        raise bad("command must be a non-empty list of words")
    return [(req.command, req.args, req.skip_if_exists)]


def _check(sp: Spooler, req: Submit) -> None:
    """What the request's own fields cannot say alone; completes ``after`` and ``gpus``."""
    if req.after_last:
        if sp.table.last_added is None:
            raise RequestError(E_NOT_FOUND, "-d: there is no previous job to run after")
        req.after = [*req.after, sp.table.last_added]  # last: a chained batch replaces it
    if req.gpu_mem_mib is not None and not req.gpus and not req.gpu_indices:
        req.gpus = 1  # --gpu_mem alone: one shared GPU
    if req.gpu_indices and req.gpus:
        raise bad("-G and -g cannot be combined: -g names the GPUs itself")
    name = req.log_name
    if name is not None and (not name or "/" in name or name in (".", "..")):
        raise bad("-O takes a file name without a directory")


def _check_shared(sp: Spooler, conn: Connection, req: Submit, adding: int) -> None:
    """On a multi-user daemon: no ``-m`` (but root's), and ``max_queued_per_user``: a submission
    that would pass it is refused whole."""
    caller, limits = conn.caller, sp.config.user_limits
    if caller is not None and caller.uid != 0 and req.mail:
        raise bad("-m is not available on a shared daemon (its mail would be sent as root)")
    if caller is None or limits is None:
        return
    limit = limits.of(caller.name).max_queued
    if limit is None:
        return
    queued = sum(1 for job in sp.table.queue if job.uid == caller.uid)
    if queued + adding > limit:
        raise RequestError(
            E_INVALID,
            f"{caller.name} has {queued} job(s) queued: {adding} more would pass "
            f"max_queued_per_user = {limit}",
        )


def submit(sp: Spooler, req: Submit, conn: Connection) -> Reply:
    runs = _runs(req)
    single = req.items is None and req.batch is None
    # A repeat of a submission whose reply was lost (the client sends it again after the
    # daemon died): answer with the ids given, and queue only what a death cut short.
    given = list(sp.table.tokens.get(req.token, ())) if req.token else []
    if given and single:
        return {"ok": True, "id": given[0]}
    _check(sp, req)
    _check_shared(sp, conn, req, len(runs) - len(given))
    if req.foreground and not single:
        raise bad("-f waits for one job: it cannot go with a batch or a sweep")
    # ts -nf: the job writes to the client's terminal.  The descriptors are taken now, so that
    # they outlive a check that answers later, and closed on any refusal.
    fds = conn.take_fds()
    terminal: tuple[int, int] | None = None
    if single and req.foreground and req.no_output and len(fds) == 2:
        terminal = (fds[0], fds[1])
    else:
        for fd in fds:
            os.close(fd)

    def admitted(refusal: RequestError | None) -> None:
        """The backend's answer (SLURM: ``sbatch --test-only``), which came later."""
        conn.resume()
        if conn.closed or conn.failing:  # the submitter gave up waiting: nothing is queued
            close_pair(terminal)
            return

        def rest() -> Reply:
            why = refusal
            if why is None:  # the submitter's share of the queue may have filled up meanwhile
                try:
                    _check_shared(sp, conn, req, len(runs) - len(given))
                except RequestError as exc:
                    why = exc
            return _queue(sp, req, runs, given, terminal, conn, why)

        conn.server.answer(conn, "submit", rest)

    try:
        if sp.admit(req, runs[0][0], admitted):
            conn.defer()  # the daemon serves others while the backend answers
            return None
    except BaseException:
        close_pair(terminal)
        raise
    return _queue(sp, req, runs, given, terminal, conn, None)


def _queue(
    sp: Spooler,
    req: Submit,
    runs: list[Run],
    given: list[int],
    terminal: tuple[int, int] | None,
    conn: Connection,
    refusal: RequestError | None,
) -> Reply:
    if refusal is not None:
        close_pair(terminal)
        raise refusal
    if req.items is None and req.batch is None:
        return _submit_one(sp, req, runs[0], terminal, conn)
    total = len(runs)
    runs = runs[len(given) :]
    limit = sp.config.queue_limit
    if limit is not None and len(sp.table.queue) + len(runs) > limit:
        raise RequestError(
            E_QUEUE_FULL, f"{len(runs)} jobs do not fit the queue limit of {limit} (TS_MAXCONN)"
        )
    chain = req.after_last  # -d in a batch: each line runs after the one before
    ids = given
    if chain and ids:
        req.after = [*req.after[:-1], ids[-1]]
    for command, args, marker in runs:
        req.args, req.skip_if_exists = args, marker
        try:
            ids.append(sp.submit(req, command, owner=conn.caller).id)
        except RequestError as exc:
            if not ids or exc.code != E_INTERNAL:
                raise
            # The save-list cannot be written (a full disk): the jobs recorded so far stay
            # queued, and the client is told which they are.
            return {"ok": True, "ids": ids, "partial": f"only {len(ids)} of {total} jobs queued: {exc}"}
        if chain:
            req.after = [*req.after[:-1], ids[-1]]
    return {"ok": True, "ids": ids}


def _submit_one(
    sp: Spooler, req: Submit, run: Run, terminal: tuple[int, int] | None, conn: Connection
) -> Reply:
    command, req.args, req.skip_if_exists = run
    try:
        job = sp.submit(req, command, terminal, conn.caller)
    except RequestError as exc:
        if exc.code != E_QUEUE_FULL or req.no_block:
            close_pair(terminal)
            raise
        return _submit_when_there_is_room(sp, req, command, terminal, conn)
    except BaseException:
        close_pair(terminal)
        raise
    if req.foreground:
        # -f: a second reply follows when the job ends; registered now, so it cannot be missed.
        sp.waiters.add(job.id, conn)
    return {"ok": True, "id": job.id}


def _submit_when_there_is_room(
    sp: Spooler, req: Submit, command: list[str], terminal: tuple[int, int] | None, conn: Connection
) -> Reply:
    """Without -B a full queue makes the submitter wait, as in the original, not fail."""

    def admit() -> bool:
        if conn.closed:
            close_pair(terminal)
            return True  # the submitter gave up: nothing to queue
        try:
            job = sp.submit(req, command, terminal, conn.caller)
        except RequestError as exc:
            if exc.code == E_QUEUE_FULL:
                return False
            close_pair(terminal)
            conn.reply_deferred(protocol.error_reply(exc.code, str(exc)))
            return True
        if req.foreground:  # -f: the end follows, as for a submission that found room
            sp.waiters.add(job.id, conn)
        conn.reply_deferred({"ok": True, "id": job.id})
        return True

    conn.defer()
    sp.dispatcher.space_waiters.append(admit)
    return None
