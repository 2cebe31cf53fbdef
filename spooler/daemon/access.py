"""Who may do what on a multi-user daemon: the one table every request passes through.

The server knows who is asking from the socket itself (``SO_PEERCRED``: the uid and gid the
kernel saw connect), never from anything the request says.  Before a handler runs, the route
(``handlers.Route``) asks :func:`authorize` whether this caller may make this request, so a new
request type cannot forget the check: an op missing from ``RULES`` is refused to everyone but
admins, and a test holds the table to the list of handlers.

- ``PUBLIC``: anyone (looking at the queue, queueing a job as oneself);
- ``OWN_JOB``: the job's owner or an admin.  By id: the job named (or the id-less default) must
  be the caller's.  With a filter: the filter is narrowed to the caller's own jobs;
- ``ADMIN``: root or a member of the configured admin group;
- ``SETTING``: reading is public, changing (a ``set``/``unset``/``drop`` field) is for admins.

A personal daemon refuses every other uid at the door (``server``), so none of this applies.
"""

from __future__ import annotations

from typing import Any

from spooler.daemon.caller import Caller
from spooler.daemon.spooler import Spooler
from spooler.jobs import Job
from spooler.protocol import E_DENIED, RequestError
from spooler.protocol import requests as rq

PUBLIC, OWN_JOB, ADMIN, SETTING = "public", "own job", "admin", "setting"

RULES: dict[str, str] = {
    "submit": PUBLIC,  # always as the caller: the owner comes from the socket
    "list": PUBLIC,
    "results": PUBLIC,  # narrowed to the caller's own jobs by the handler (arguments, results)
    "info": PUBLIC,  # another's job without its environment, arguments or result
    "queues": PUBLIC,
    "count_running": PUBLIC,
    "last_id": PUBLIC,
    "gpu_status": PUBLIC,
    "ping": PUBLIC,
    "users": PUBLIC,
    "clear": PUBLIC,  # -C clears the caller's own ended jobs (an admin's: everyone's)
    "job_field": OWN_JOB,  # -p, -o (the log may hold secrets); -s, -a, -F: PUBLIC_FIELDS
    "wait": OWN_JOB,  # -w, -t, -c: the reply names the log
    "remove": OWN_JOB,
    "requeue": OWN_JOB,
    "priority": OWN_JOB,
    "edit": OWN_JOB,
    "hold": OWN_JOB,
    "release": OWN_JOB,
    "pause": OWN_JOB,
    "resume": OWN_JOB,
    "kill": OWN_JOB,
    "urgent": OWN_JOB,
    "swap": OWN_JOB,
    "slots": SETTING,
    "logdir": SETTING,
    "env": ADMIN,  # the root daemon's own environment may hold secrets: not even --getenv
    "gpu_free_perc": SETTING,
    "shutdown": ADMIN,
}

# The fields of one job that ts -l shows anyone (-s, -a, -F); -p, -o and -t/-c's status are not.
PUBLIC_FIELDS = frozenset({"state", "label", "command"})

# The job an id-less request acts on, as its handler looks it up.
_DEFAULT_RUN = frozenset({"kill", "pause", "resume", "info"})


def owner_name(job: Job) -> str:
    return job.user or (f"uid {job.uid}" if job.uid is not None else "the daemon's owner")


def authorize(sp: Spooler, request: rq.Request, caller: Caller) -> None:
    """Raise ``E_DENIED`` (one line naming the owner) unless ``caller`` may make ``request``;
    narrows the filter of a request on many jobs to the caller's own."""
    rule = RULES.get(request.OP, ADMIN)
    if rule == PUBLIC or caller.admin:
        return
    if request.OP == "job_field" and request.__dict__.get("field") in PUBLIC_FIELDS:
        return
    if rule == ADMIN:
        raise RequestError(E_DENIED, f"permission denied: {_what(request)} is for admins only")
    if rule == SETTING:
        if _changes_setting(request):
            raise RequestError(E_DENIED, f"permission denied: changing {_what(request)} is for admins only")
        return
    for job in _targets(sp, request, caller):
        if not caller.owns(job):
            raise RequestError(
                E_DENIED, f"permission denied: job {job.id} belongs to {owner_name(job)}, not {caller.name}"
            )


def _what(request: rq.Request) -> str:
    return {
        "shutdown": "stopping the daemon (-K, --reset)",
        "slots": "the slots (-S)",
        "logdir": "the log directory",
        "env": "the daemon's environment (--getenv, --setenv, --unsetenv)",
        "gpu_free_perc": "the GPU threshold",
    }.get(request.OP, request.OP)


def _changes_setting(request: rq.Request) -> bool:
    values: dict[str, Any] = request.__dict__
    return values.get("set") is not None or bool(values.get("unset")) or bool(values.get("drop"))


def _targets(sp: Spooler, request: rq.Request, caller: Caller) -> list[Job]:
    """The jobs a request names; a filter (or ``-T``) is narrowed to the caller's jobs instead."""
    values: dict[str, Any] = request.__dict__
    if request.OP == "swap":
        return [sp.get(values["a"]), sp.get(values["b"])]
    job_filter = values.get("filter")
    if values.get("id") is None and (job_filter is not None or values.get("all")):
        if job_filter is None:  # -T: every running job, of the caller's
            job_filter = rq.Filter(states=["running", "paused"])
            values["filter"] = job_filter
        job_filter.user = caller.name
        return []
    default = values.get("default") or ("run" if request.OP in _DEFAULT_RUN else "added")
    return [sp.get(values.get("id"), default)]
