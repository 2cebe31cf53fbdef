"""The Python API: ``from spooler import Client``.

The same requests as ``ts``, with Python values in and out::

    from spooler import Client

    with Client() as ts:
        ids = ts.sweep("python train.py --lr %(lr) --out runs/%(_name)",
                       [{"lr": lr} for lr in (0.1, 0.01)], name="lr", gpus=1)
        for job_id in ids:
            print(job_id, ts.wait(job_id))
        failed = ts.jobs(state="failed", sweep="lr")
"""

from __future__ import annotations

import json
import os
import select
from collections.abc import Mapping, Sequence
from typing import Any

from spooler import client, protocol, template
from spooler.commands import needs_shell
from spooler.errors import DaemonUnavailable, PartlyQueued, RemoteError, UsageError

Command = str | Sequence[str]


def _words(command: Command) -> list[str]:
    """A string is one shell command line (run by ``sh -c`` when it needs a shell)."""
    if isinstance(command, str):
        return [command]
    words = list(command)
    if not words or not all(isinstance(w, str) for w in words):
        raise UsageError("a command is a string or a non-empty list of strings")
    return words


def _filters(
    state: str | Sequence[str] | None, label: str | None, sweep: str | None, where: str | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if state is not None:
        spec["states"] = [state] if isinstance(state, str) else list(state)
    for key, value in (("label", label), ("sweep", sweep), ("where", where)):
        if value is not None:
            spec[key] = value
    return {"filter": spec} if spec else {}


class Client(client.Client):
    """A connection to the daemon (started if none runs), with one method per action."""

    def __init__(self, socket: str | None = None, autostart: bool = True) -> None:
        self.socket_path = socket
        self.autostart = autostart
        super().__init__(socket, autostart)

    def request(self, op: str, *, fds: list[int] | None = None, **fields: Any) -> dict[str, Any]:
        self._reconnect_if_closed()
        return super().request(op, fds=fds, **fields)

    def _reconnect_if_closed(self) -> None:
        """The daemon closes connections left idle; reconnect before, never after, sending."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable:  # EOF, or the daemon's last words before it closed: either way, start afresh
            self.sock.close()
            self.sock = client.connect(self.socket_path, self.autostart)

    # -- queueing --------------------------------------------------------------------------

    def _fields(
        self, cwd: str | None, env: Mapping[str, str] | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        fields = {k: v for k, v in options.items() if v is not None}
        fields["cwd"] = os.path.abspath(cwd or os.getcwd())
        fields["env"] = dict(os.environ if env is None else env)
        return fields

    def submit(
        self,
        command: Command,
        *,
        args: Mapping[str, Any] | None = None,
        allow_extra: bool = False,
        label: str | None = None,
        slots: int | None = None,
        gpus: int | None = None,
        gpu_indices: Sequence[int] | None = None,
        gpu_mem_mib: int | None = None,
        after: Sequence[int] | None = None,
        after_ok: Sequence[int] | None = None,
        priority: int | None = None,
        retry: int | None = None,
        skip_if_exists: str | None = None,
        no_output: bool = False,
        stderr_apart: bool = False,
        gzip: bool = False,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Queue one job; returns its id.  ``args`` fill the command's ``%(name)`` placeholders."""
        words = _words(command)
        marker = skip_if_exists
        if args is not None:
            plain = _json_values(args)
            extra = {"_name": template.run_name(plain)}
            words = template.fill(
                words, plain, shell=needs_shell(words), allow_extra=allow_extra, extra=extra
            )
            if marker:
                marker = template.fill([marker], plain, shell=False, allow_extra=True, extra=extra)[0]
            args = plain
        options = dict(
            label=label, slots=slots, gpus=gpus, gpu_mem_mib=gpu_mem_mib, priority=priority, retry=retry,
            gpu_indices=list(gpu_indices) if gpu_indices else None, after=list(after) if after else None,
            after_ok=list(after_ok) if after_ok else None, skip_if_exists=marker, args=args,
            no_output=no_output, stderr_apart=stderr_apart, gzip=gzip,
        )  # fmt: skip
        reply = self.request("submit", command=words, **self._fields(cwd, env, options))
        return int(reply["id"])

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
            extra = {"_name": template.run_name(plain)}
            item: dict[str, Any] = {
                "command": template.fill(
                    words, plain, shell=needs_shell(words), allow_extra=allow_extra, extra=extra
                ),
                "args": plain,
            }
            if skip_if_exists:
                item["skip_if_exists"] = template.fill(
                    [skip_if_exists], plain, shell=False, allow_extra=True, extra=extra
                )[0]
            items.append(item)
        if not items:
            raise UsageError("a sweep needs at least one run")
        reply = self.request("submit", items=items, sweep=name, **self._fields(cwd, env, options))
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
    ) -> list[dict[str, Any]]:
        """Every job the filters select, as ``ts -M json`` describes it."""
        reply = self.request("list", format="json", **_filters(state, label, sweep, where))
        return list(json.loads(reply["text"]))

    def job(self, job_id: int) -> dict[str, Any]:
        found = self.jobs(where=f"id == {int(job_id)}")
        if not found:
            raise RemoteError(f"job {job_id} does not exist", protocol.E_NOT_FOUND)
        return found[0]

    def wait(self, job_id: int) -> int:
        """Block until the job ends; returns its exit status (255: killed by a signal or skipped)."""
        return int(self.request("wait", id=int(job_id))["exit_status"])

    # -- acting --------------------------------------------------------------------------------

    def _bulk(self, op: str, job_id: int | None, filters: dict[str, Any]) -> list[int]:
        if job_id is None and not filters:
            raise UsageError(f"{op}: give a job id or at least one filter")
        fields = {"id": int(job_id)} if job_id is not None else dict(filters)
        reply = self.request(op, **fields)
        return [int(i) for i in reply.get("ids", [reply.get("id")])]

    def kill(self, job_id: int | None = None, **filters: Any) -> list[int]:
        """SIGTERM to a running job (or to every running job the filters select)."""
        return self._bulk("kill", job_id, _filters(**_filter_args(filters)))

    def remove(self, job_id: int | None = None, **filters: Any) -> list[int]:
        return self._bulk("remove", job_id, _filters(**_filter_args(filters)))

    def requeue(self, job_id: int | None = None, **filters: Any) -> list[int]:
        """Put ended jobs back in the queue with fresh attempts, e.g. ``requeue(state="failed")``."""
        return self._bulk("requeue", job_id, _filters(**_filter_args(filters)))


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
    unknown = set(filters) - {"state", "label", "sweep", "where"}
    if unknown:
        raise UsageError(f"unknown filter {sorted(unknown)[0]!r} (state, label, sweep or where)")
    return {key: filters.get(key) for key in ("state", "label", "sweep", "where")}


__all__ = ["Client", "DaemonUnavailable"]
