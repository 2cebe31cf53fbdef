"""The Python API: ``from spooler import Client``.

The same requests as ``ts``, with Python values in and out::

    from spooler import Client

    with Client() as ts:
        ids = ts.sweep("python train.py --lr %(lr) --out runs/%(_name)",
                       [{"lr": lr} for lr in (0.1, 0.01)], name="lr", gpus=1)
        for job_id in ids:
            print(job_id, ts.wait(job_id))
        failed = ts.jobs(state="failed", sweep="lr")
        best = ts.results(sweep="lr", sort="-result.acc")[0]
"""

from __future__ import annotations

import json
import os
import select
from collections.abc import Mapping, Sequence
from typing import Any

from spooler import client, protocol
from spooler.errors import DaemonUnavailable, PartlyQueued, RemoteError, UsageError
from spooler.prepare import template
from spooler.protocol import requests as rq

Command = str | Sequence[str]


def _words(command: Command) -> list[str]:
    """A string is one shell command line (run by ``sh -c`` when it needs a shell)."""
    if isinstance(command, str):
        return [command]
    words = list(command)
    if not words or not all(isinstance(w, str) for w in words):
        raise UsageError("a command is a string or a non-empty list of strings")
    return words


def _filter(
    state: str | Sequence[str] | None = None,
    label: str | None = None,
    sweep: str | None = None,
    where: str | None = None,
    queue: str | None = None,
) -> rq.Filter | None:
    if state is None and label is None and sweep is None and where is None and queue is None:
        return None
    states = [] if state is None else [state] if isinstance(state, str) else list(state)
    return rq.Filter(states=states, label=label, sweep=sweep, where=where, queue=queue)


class Client(client.Client):
    """A connection to the daemon (started if none runs), with one method per action."""

    def __init__(self, socket: str | None = None, autostart: bool = True) -> None:
        super().__init__(socket, autostart)

    def call(self, request: rq.Request, fds: list[int] | None = None) -> dict[str, Any]:
        self._reconnect_if_closed()
        return super().call(request, fds)

    def request(self, op: str, *, fds: list[int] | None = None, **fields: Any) -> dict[str, Any]:
        self._reconnect_if_closed()
        return super().request(op, fds=fds, **fields)

    def _reconnect_if_closed(self) -> None:
        """The daemon closes connections left idle; reconnect before, never after, sending."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable:  # EOF, or the daemon's last words before it closed: either way, start afresh
            self.reconnect()

    # -- queueing --------------------------------------------------------------------------

    def _submission(
        self,
        cwd: str | None,
        env: Mapping[str, str] | None,
        *,
        label: str | None = None,
        slots: int | None = None,
        gpus: int | None = None,
        gpu_indices: Sequence[int] | None = None,
        gpu_mem_mib: int | None = None,
        after: Sequence[int] | None = None,
        after_ok: Sequence[int] | None = None,
        priority: int | None = None,
        retry: int | None = None,
        retry_timeout: bool = False,
        time: str | float | None = None,
        no_output: bool = False,
        stderr_apart: bool = False,
        gzip: bool = False,
        hold: bool = False,
        begin: str | float | None = None,
        queue: str | None = None,
        notify: str | None = None,
        notify_on: str | None = None,
    ) -> rq.Submit:
        """What every job of one call shares; the keywords are :meth:`submit`'s."""
        env = dict(os.environ if env is None else env)
        return rq.Submit(
            cwd=os.path.abspath(cwd or os.getcwd()),
            env=env,
            label=label,
            slots=1 if slots is None else slots,
            gpus=gpus or 0,
            gpu_indices=list(gpu_indices or ()),
            gpu_mem_mib=gpu_mem_mib,
            after=list(after or ()),
            after_ok=list(after_ok or ()),
            priority=priority or 0,
            retry=retry or 0,
            retry_timeout=retry_timeout,
            time_limit=_time_limit(time),
            no_output=no_output,
            stderr_apart=stderr_apart,
            gzip=gzip,
            hold=hold,
            begin_at=_begin(begin),
            queue=queue,
            notify_url=notify or _notify_from(env),
            notify_on=notify_on or ("end" if env.get("TS_NOTIFY_ON") == "end" else "fail"),
        )

    def submit(
        self,
        command: Command,
        *,
        args: Mapping[str, Any] | None = None,
        allow_extra: bool = False,
        skip_if_exists: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> int:
        """Queue one job; returns its id.  ``args`` fill the command's ``%(name)`` placeholders.

        ``options``: label, slots, gpus, gpu_indices, gpu_mem_mib, after, after_ok, priority,
        retry, retry_timeout, no_output, stderr_apart, gzip, hold (as the ``ts`` options of the
        same names), ``time``: the time limit, as ``--time`` takes it ("2h") or in seconds, and
        ``queue``: the named queue whose slots it takes, ``notify``/``notify_on``: the URL to POST
        to when it ends (``TS_NOTIFY_URL`` by default) and on what ("fail" or "end"), and ``begin``:
        not before this time, as ``--begin`` takes it ("22:00", "+2h") or in seconds
        since the epoch.
        """
        request = self._submission(cwd, env, **options)
        request.command, request.skip_if_exists = _words(command), skip_if_exists
        if args is not None:
            plain = _json_values(args)
            request.command, request.skip_if_exists = template.fill_run(
                request.command, plain, skip_if_exists, allow_extra=allow_extra
            )
            request.args = plain
        return int(self.submit_request(request)["id"])

    def sweep(
        self,
        command: Command,
        runs: Sequence[Mapping[str, Any]],
        *,
        name: str | None = None,
        allow_extra: bool = False,
        skip_if_exists: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> list[int]:
        """Queue one job per argument set, all or none; returns their ids in order.

        ``options`` are those of :meth:`submit` (label, gpus, priority, retry, ...).
        """
        words = _words(command)
        items = []
        for args in runs:
            plain = _json_values(args)
            filled, marker = template.fill_run(words, plain, skip_if_exists, allow_extra=allow_extra)
            items.append(rq.Item(command=filled, args=plain, skip_if_exists=marker))
        if not items:
            raise UsageError("a sweep needs at least one run")
        request = self._submission(cwd, env, **options)
        request.items, request.sweep = items, name
        reply = self.submit_request(request)
        ids = [int(i) for i in reply["ids"]]
        if reply.get("partial"):
            raise PartlyQueued(str(reply["partial"]), ids)
        return ids

    # -- looking -----------------------------------------------------------------------------

    def jobs(
        self,
        *,
        state: str | Sequence[str] | None = None,
        label: str | None = None,
        sweep: str | None = None,
        where: str | None = None,
        queue: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every job the filters select, as ``ts -M json`` describes it."""
        reply = self.call(rq.List(format="json", filter=_filter(state, label, sweep, where, queue)))
        return list(json.loads(reply["text"]))

    def results(
        self,
        *,
        state: str | Sequence[str] | None = None,
        label: str | None = None,
        sweep: str | None = None,
        where: str | None = None,
        queue: str | None = None,
        sort: str | Sequence[str] | None = None,
        best: str | None = None,
    ) -> list[dict[str, Any]]:
        """One dict per job the filters select, as ``ts results --format json`` gives them:
        ``id``, ``state``, ``time`` (run time in seconds), ``args.*`` and ``result.*``, flattened
        with dots (None where a job has no such value).

        ``sort``: field names, ``-`` before one for descending (``"-result.acc"``, or a list of
        them); ``best``: ``"result.acc"`` (highest) or ``"min:result.loss"``, which adds
        ``best: True`` to the best rows.
        """
        keys = sort if sort is None or isinstance(sort, str) else ",".join(sort)
        spec = _filter(state, label, sweep, where, queue)
        request = rq.Results(filter=spec, sort=keys, best=best, format="json")
        return list(json.loads(self.call(request)["text"]))

    def job(self, job_id: int) -> dict[str, Any]:
        found = self.jobs(where=f"id == {int(job_id)}")
        if not found:
            raise RemoteError(f"job {job_id} does not exist", protocol.E_NOT_FOUND)
        return found[0]

    def wait(self, job_id: int) -> int:
        """Block until the job ends; returns its exit status (255: killed by a signal or skipped)."""
        return int(self.call_again_if_lost(rq.Wait(id=int(job_id)))["exit_status"])

    def slots(self, slots: int | None = None, queue: str | None = None) -> int:
        """The number of jobs that run at once (in a named queue), after setting it to ``slots``."""
        return int(self.call(rq.Slots(set=slots, queue=queue))["slots"])

    def queues(self) -> list[dict[str, Any]]:
        """Each queue: its name, slots, and running and queued job counts."""
        return list(self.call(rq.Queues(data=True))["queues"])

    def edit(
        self,
        job_id: int,
        command: Command | None = None,
        *,
        label: str | None = None,
        priority: int | None = None,
    ) -> None:
        """Change a job that has not started: its command (filled from the job's arguments where it
        has ``%(name)`` placeholders), its label ("" removes it) or its priority."""
        request = rq.Edit(id=int(job_id), label=label, priority=priority)
        if command is not None:
            words = _words(command)
            args = self.job(job_id).get("args")
            if args is not None and any("%(" in word for word in words):
                words, _ = template.fill_run(words, args, allow_extra=True)
            request.command = words
        self.call(request)

    def wait_all(self, **filters: Any) -> dict[int, int]:
        """Block until every job (or every job the filters select) has ended; returns each one's
        exit status (255 for a job removed before it ended), by id."""
        from spooler.wait_all import wait_all

        ended, removed = wait_all(self, _filter(**_filter_args(filters)))
        statuses = {int(job["id"]): int(job["exit_status"]) for job in ended}
        statuses.update(dict.fromkeys(removed, 255))
        return statuses

    # -- acting --------------------------------------------------------------------------------

    def _bulk(
        self,
        kind: type[rq.Kill | rq.Remove | rq.Requeue | rq.Hold | rq.Release | rq.Pause | rq.Resume],
        job_id: int | None,
        filters: dict[str, Any],
    ) -> list[int]:
        spec = _filter(**_filter_args(filters))
        if job_id is None and spec is None:
            raise UsageError(f"{kind.OP}: give a job id or at least one filter")
        request = kind(id=int(job_id)) if job_id is not None else kind(filter=spec)
        reply = self.call(request)
        return [int(i) for i in reply.get("ids", [reply.get("id")])]

    def kill(self, job_id: int | None = None, **filters: Any) -> list[int]:
        """SIGTERM to a running job (or to every running job the filters select)."""
        return self._bulk(rq.Kill, job_id, filters)

    def remove(self, job_id: int | None = None, **filters: Any) -> list[int]:
        return self._bulk(rq.Remove, job_id, filters)

    def requeue(self, job_id: int | None = None, *, cascade: bool = False, **filters: Any) -> list[int]:
        """Put ended jobs back in the queue with fresh attempts, e.g. ``requeue(state="failed")``;
        with ``cascade``, also the jobs skipped because they failed (transitively)."""
        if not cascade:
            return self._bulk(rq.Requeue, job_id, filters)
        spec = _filter(**_filter_args(filters))
        if job_id is None and spec is None:
            raise UsageError("requeue: give a job id or at least one filter")
        request = rq.Requeue(id=None if job_id is None else int(job_id), filter=spec, cascade=True)
        return [int(i) for i in self.call(request)["ids"]]

    def hold(self, job_id: int | None = None, **filters: Any) -> list[int]:
        """Keep a queued job (or every queued job the filters select) from starting."""
        return self._bulk(rq.Hold, job_id, filters)

    def release(self, job_id: int | None = None, **filters: Any) -> list[int]:
        """Let held jobs start again."""
        return self._bulk(rq.Release, job_id, filters)

    def pause(self, job_id: int | None = None, **filters: Any) -> list[int]:
        """SIGSTOP a running job's process group; it keeps its slots, GPUs and time left."""
        return self._bulk(rq.Pause, job_id, filters)

    def resume(self, job_id: int | None = None, **filters: Any) -> list[int]:
        """SIGCONT a paused job's process group."""
        return self._bulk(rq.Resume, job_id, filters)


def _json_values(args: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments travel as JSON, as on the command line: anything else is refused here."""
    try:
        plain = json.loads(json.dumps(args, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"arguments must be JSON values (str, int, float, bool, None, lists, dicts): {exc}"
        ) from None
    if not isinstance(plain, dict):
        raise UsageError("arguments must be a mapping of names to values")
    return plain


def _filter_args(filters: dict[str, Any]) -> dict[str, Any]:
    keys = ("state", "label", "sweep", "where", "queue")
    unknown = set(filters) - set(keys)
    if unknown:
        raise UsageError(f"unknown filter {sorted(unknown)[0]!r} (state, label, sweep, where or queue)")
    return {key: filters.get(key) for key in keys}


__all__ = ["Client", "DaemonUnavailable"]


def _notify_from(env: Mapping[str, str]) -> str | None:
    """TS_NOTIFY_URL of the job's environment, unless it is no URL (then, as with ``ts``, the
    job is queued without it, and a warning says why)."""
    url = env.get("TS_NOTIFY_URL")
    if not url:
        return None
    problem = rq.url_problem(url, "TS_NOTIFY_URL")
    if problem:
        import warnings

        warnings.warn(f"TS_NOTIFY_URL ignored: {problem}", stacklevel=4)
        return None
    return url


def _time_limit(value: str | float | None) -> int | None:
    """``time=``: "90s", "2h", "1:30:00" as ``--time`` takes them, or a number of seconds."""
    if value is None:
        return None
    from spooler.durations import MAX_DURATION, parse_duration

    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise UsageError(f"time: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_DURATION:
        raise UsageError(f"time: {value!r} is not a duration of 1 s to a year")
    return round(value)


def _begin(value: str | float | None) -> int | None:
    """``begin=``: "22:00", "2026-05-01T22:00", "+2h" as ``--begin`` takes them, or a time in
    seconds since the epoch."""
    if value is None:
        return None
    import time as clock

    from spooler.durations import parse_begin

    now = clock.time()
    if isinstance(value, str):
        try:
            return parse_begin(value, now)
        except ValueError as exc:
            raise UsageError(f"begin: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= now:
        raise UsageError(f"begin: {value!r} is not a time to come (seconds since the epoch)")
    return int(-(-value // 1))
