"""``ts`` actions on the jobs a filter selects (or on one job by id): ``-r``, ``-k``,
``--requeue``, ``--hold``, ``--release``, ``--pause``, ``--resume``, and ``--wait-all``."""

from __future__ import annotations

import sys

from spooler.cli.parse import Invocation, filter_of, job_id
from spooler.client import Client
from spooler.protocol import requests as rq

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable

    Bulk = rq.Remove | rq.Kill | rq.Requeue | rq.Hold | rq.Release | rq.Pause | rq.Resume

# The request of each action, and why a job the filters selected was left alone.
_REQUESTS: dict[str, tuple[type[Bulk], str]] = {
    "remove": (rq.Remove, "running"),
    "kill": (rq.Kill, "not running"),
    "requeue": (rq.Requeue, "not ended"),
    "hold": (rq.Hold, "not queued"),
    "release": (rq.Release, "not held"),
    "pause": (rq.Pause, "not running"),
    "resume": (rq.Resume, "not paused"),
}


def bulk(op: str) -> Callable[[Invocation], int]:
    """One job by id, or every job the filters select; prints the ids acted on (with filters)."""
    kind, why = _REQUESTS[op]

    def action(inv: Invocation) -> int:
        request = kind(id=job_id(inv.value, inv.action_option), filter=filter_of(inv))
        if isinstance(request, rq.Requeue):
            request.cascade = bool(inv.job.get("cascade"))
        with Client() as client:
            reply = client.call(request)
        if "ids" in reply:
            if reply["ids"]:
                print("\n".join(map(str, reply["ids"])))
            if reply.get("left"):
                print(f"ts: left {len(reply['left'])} {why} job(s) alone: {reply['left']}", file=sys.stderr)
        return 0

    return action


def wait_all(inv: Invocation) -> int:
    """--wait-all: one line per job that ended badly (or was removed first); 1 if there is any."""
    from spooler.wait_all import failure, wait_all

    with Client() as client:
        ended, removed = wait_all(client, filter_of(inv))
    lines = [f"job {job['id']} {why}: {job['command']}" for job in ended if (why := failure(job))]
    lines += [f"job {job_id} was removed before it ended" for job_id in removed]
    if lines:
        print("\n".join(lines))
    return 1 if lines else 0
