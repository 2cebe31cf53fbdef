"""Clients waiting on a job: ``ts -w``, ``-f``, ``-t``/``-c`` (until it starts) and ``-p``.

A waiter is a deferred reply on a connection: registered here, answered when the job starts or
ends (or is removed), forgotten if its connection closes first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from spooler.jobs import Job

Reply = Callable[[Job | None, int], dict[str, Any]]
Waiter = Callable[[Job | None], None]


class Deferring(Protocol):
    """What a waiter needs of a connection (``spooler.daemon.server.Connection``)."""

    on_close: list[Callable[[], None]]

    def defer(self) -> None: ...

    def reply_deferred(self, message: dict[str, Any]) -> None: ...


def wait_reply(job: Job | None, job_id: int) -> dict[str, Any]:
    if job is None:
        return {"ok": True, "id": job_id, "removed": True, "exit_status": 255, "state": "removed"}
    return {"ok": True, "id": job.id, "exit_status": job.exit_status, "state": job.state.value}


class Waiters:
    def __init__(self) -> None:
        self._ends: dict[int, list[Waiter]] = {}  # woken when the job ends or is removed
        self._starts: dict[int, list[Waiter]] = {}  # woken when it starts (or never will)

    def add(self, job_id: int, conn: Deferring, until_start: bool = False, reply: Reply = wait_reply) -> None:
        """Reply on ``conn`` when the job ends (or is removed), or with ``until_start`` as soon as
        its process is running (its log exists and its pid is known) or it can no longer start."""
        conn.defer()

        def done(ended: Job | None) -> None:
            conn.reply_deferred(reply(ended, job_id))

        table = self._starts if until_start else self._ends
        table.setdefault(job_id, []).append(done)

        def forget() -> None:
            waiters = table.get(job_id)
            if waiters and done in waiters:
                waiters.remove(done)

        conn.on_close.append(forget)

    def started(self, job_id: int, job: Job | None) -> None:
        for waiter in self._starts.pop(job_id, []):
            waiter(job)

    def ended(self, job_id: int, job: Job | None) -> None:
        """The job ended (``job``) or was removed (None): every waiter on it is answered."""
        self.started(job_id, job)
        for waiter in self._ends.pop(job_id, []):
            waiter(job)
