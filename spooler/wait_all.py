"""``ts --wait-all`` and ``Client.wait_all``: wait until every job a filter selects has ended.

Runs in the client, over plain requests: the jobs selected when the call is made are listed,
each one that has not ended is waited for in turn (``Wait``, a reply the daemon defers until the
job ends, so nothing polls), and read back as soon as it has ended.  A job retried by
``--retry`` is waited for until its last attempt ends; a held one until it is released and ends.
"""

from __future__ import annotations

import json

from spooler.errors import RemoteError
from spooler.protocol.requests import Filter, List, Wait

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from spooler.client import Client

_ENDED = ("finished", "skipped", "lost", "timeout")


def failure(job: dict[str, Any]) -> str:
    """How a job (as ``-M json`` gives it) ended badly, or "" if it ended well."""
    state = job["state"]
    if state == "finished":
        if job.get("signal"):
            return f"killed by {job['signal']}"
        return f"exited {job['exit_code']}" if job.get("exit_code") else ""
    return {"skipped": "was skipped", "lost": "was lost", "timeout": "timed out"}.get(state, str(state))


def wait_all(client: Client, spec: Filter | None) -> tuple[list[dict[str, Any]], list[int]]:
    """(the selected jobs as they ended, the ids of those removed before they ended)."""
    jobs = json.loads(client.call(List(format="json", filter=spec))["text"])
    ended = [job for job in jobs if job["state"] in _ENDED]
    removed = []
    for job in jobs:
        if job["state"] in _ENDED:
            continue
        try:
            reply = client.call_again_if_lost(Wait(id=job["id"]))  # through a daemon's death too
        except RemoteError:  # removed between the list and the wait
            reply = {"removed": True}
        if reply.get("removed"):
            removed.append(int(job["id"]))
        else:
            ended.append(_as_ended(client, job, reply))
    return ended, removed


def _as_ended(client: Client, job: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    """The job as it ended, read at once; if it is forgotten already (TS_MAXFINISHED, ts -C),
    what its wait reply said, so its failure is never missed."""
    found = json.loads(client.call(List(format="json", filter=Filter(ids=[job["id"]])))["text"])
    if found and found[0]["state"] in _ENDED:
        return dict(found[0])
    status = int(reply["exit_status"])
    return {**job, "state": reply["state"], "exit_status": status, "exit_code": status, "signal": None}
