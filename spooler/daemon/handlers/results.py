"""``ts results``, ``Client.results`` and the best result of ``ts --watch``: the jobs a filter
selects as rows of arguments and results.

The rows are built, sorted and rendered here, in the daemon, rather than in the client: the
daemon holds every job's arguments and results in memory already, so a 1,000-run sweep costs
one reply of a few kilobytes of text instead of every job's full record (commands, attempts,
paths) sent over the socket, decoded and reshaped in a client that pays its start-up on every
call.  The client stays a printer, as for ``ts -l``.
"""

from __future__ import annotations

import time
from typing import Any

from spooler.daemon.filters import is_failed, select
from spooler.daemon.outcome import result_problem
from spooler.daemon.render_results import render
from spooler.daemon.server import Connection
from spooler.daemon.spooler import Spooler
from spooler.jobs import Job, JobState, run_time
from spooler.protocol import bad
from spooler.protocol import requests as rq
from spooler.results import FORMATS, NOTE, ResultsError, Row, build, flatten

Reply = dict[str, Any] | None


def row_of(job: Job, now: float) -> Row:
    """One job as a row; a run that exited non-zero reads ``failed``, as ``--state failed``
    selects it, so a crashed run is not taken for a finished one at a glance."""
    state = "failed" if job.state is JobState.FINISHED and is_failed(job) else job.state.value
    row: Row = {"id": job.id, "state": state, "time": run_time(job, now)}
    if job.args:
        flatten(job.args, "args", row)
    if job.result is not None:
        flatten(job.result, "result", row)
    problem = result_problem(job.reason) if job.state.is_done else None
    if problem:
        row[NOTE] = problem
    return row


def results(sp: Spooler, req: rq.Results, conn: Connection) -> Reply:
    if req.format is not None and req.format not in FORMATS:
        raise bad(f"unknown format {req.format!r} (choose {', '.join(FORMATS)})")
    now = time.time()
    jobs = sorted(select(sp.ordered(), req.filter), key=lambda job: job.id)
    if conn.caller is not None:  # multi-user: arguments and results are their owner's to see
        jobs = [job for job in jobs if conn.caller.owns(job)]
    try:
        table = build([row_of(job, now) for job in jobs], req.sort, req.best, req.pick_best)
    except ResultsError as exc:
        raise bad(str(exc)) from None
    # busy: the slots every running job holds, for the title of a filtered ts --watch.
    reply: dict[str, Any] = {"ok": True, "count": len(table.rows), "busy": sp.running.busy_slots}
    if table.best is not None:
        reply["best"] = table.best.wire()
    if req.ids_only:
        reply["text"] = "".join(f"{row['id']}\n" for row in table.rows)
    elif req.format is not None:
        reply["text"] = render(table, req.format, req.color)
    return reply
