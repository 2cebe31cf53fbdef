"""One handler per request type, grouped by family, and the table the server dispatches through.

Each entry is a :class:`Route`: the request's type (``spooler.protocol.requests``), which parses
and validates the map that came over the socket, and the function that carries it out.  A
handler returns the reply map, or ``None`` when it will reply later (``wait``).  It raises
``RequestError`` for anything the user must fix; the server turns that into an error reply.

- ``submit``: queueing (one command, a batch, a sweep);
- ``jobs``: looking at jobs (``-l``, ``-i``, one field, waiting for one);
- ``results``: the arguments and results of jobs, as a table (``ts results``);
- ``queue``: acting on jobs (remove, requeue, reorder, kill, clear);
- ``daemon``: the daemon's own settings and state (slots, log directory, environment, GPUs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from spooler.daemon.access import authorize
from spooler.daemon.handlers import daemon, jobs, queue, results, submit
from spooler.daemon.server import Connection
from spooler.daemon.spooler import Spooler
from spooler.protocol import requests as rq

R = TypeVar("R", bound=rq.Request)
Reply = dict[str, Any] | None


class Route(Generic[R]):
    def __init__(self, request: type[R], handle: Callable[[Spooler, R, Connection], Reply]) -> None:
        self.request = request
        self.handle = handle

    def __call__(self, sp: Spooler, message: dict[str, Any], conn: Connection) -> Reply:
        request = self.request.parse(message)
        if conn.caller is not None:  # a multi-user daemon: may this caller make this request?
            authorize(sp, request, conn.caller)
        return self.handle(sp, request, conn)


ROUTES: tuple[Route[Any], ...] = (
    Route(rq.Submit, submit.submit),
    Route(rq.List, jobs.list_jobs),
    Route(rq.Results, results.results),
    Route(rq.Info, jobs.info),
    Route(rq.JobField, jobs.job_field),
    Route(rq.Wait, jobs.wait),
    Route(rq.Remove, queue.remove),
    Route(rq.Requeue, queue.requeue),
    Route(rq.Priority, queue.priority),
    Route(rq.Edit, queue.edit),
    Route(rq.Hold, queue.hold),
    Route(rq.Release, queue.release),
    Route(rq.Pause, queue.pause),
    Route(rq.Resume, queue.resume),
    Route(rq.Kill, queue.kill),
    Route(rq.Clear, queue.clear),
    Route(rq.Urgent, queue.urgent),
    Route(rq.Swap, queue.swap),
    Route(rq.Slots, daemon.slots),
    Route(rq.Queues, daemon.queues),
    Route(rq.CountRunning, daemon.count_running),
    Route(rq.LastId, daemon.last_id),
    Route(rq.Logdir, daemon.logdir),
    Route(rq.Env, daemon.env),
    Route(rq.GpuFreePerc, daemon.gpu_free_perc),
    Route(rq.GpuStatus, daemon.gpu_status),
    Route(rq.Shutdown, daemon.shutdown),
    Route(rq.Ping, daemon.ping),
    Route(rq.Users, daemon.users),
)
HANDLERS: dict[str, Route[Any]] = {route.request.OP: route for route in ROUTES}
