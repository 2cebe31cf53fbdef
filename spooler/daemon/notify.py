"""Notifications (``--notify URL``, ``TS_NOTIFY_URL``): a JSON POST when a job ends.

``TS_NOTIFY_ON=fail`` (the default) notifies only of jobs that ended badly, ``end`` of every
job.  The body carries the job's id, state, exit status, label, sweep, command, host, run time
and output file, and a ``text`` line, which is what Slack's and Mattermost's incoming webhooks
show.

Delivery never blocks the daemon: each attempt runs in a worker thread (``urllib``, with a
timeout) and reports back on the event loop.  A failed attempt is retried with back-off for a
few minutes (``RETRY_DELAYS``), then given up.  Every failure is in the daemon's log and in the
job's ``ts -i``; the job itself is never held up by its notification.  Retries still pending
when the daemon stops are not carried over to the next one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

from spooler.daemon.filters import is_failed
from spooler.daemon.table import JobTable
from spooler.jobs import Job, JobState, run_time, signal_name

log = logging.getLogger("spooler")

RETRY_DELAYS = (5.0, 15.0, 30.0, 60.0, 120.0)  # between attempts: about four minutes in all
TIMEOUT = 10.0  # seconds one attempt may take
# deliver(url, body, done): POST body to url, then done(None) on success, done(why) on failure,
# called on the event loop.
Deliver = Callable[[str, bytes, Callable[["str | None"], None]], None]


def outcome(job: Job) -> str:
    if job.state is JobState.FINISHED:
        if job.signal is not None:
            return f"was killed by {signal_name(job.signal)}"
        return f"failed (exit {job.exit_code})" if job.exit_code else "finished (exit 0)"
    others = {JobState.SKIPPED: "was skipped", JobState.LOST: "was lost", JobState.TIMEOUT: "timed out"}
    return others.get(job.state, str(job.state.value))


def payload(job: Job, host: str, now: float) -> dict[str, Any]:
    label = f" [{job.label}]" if job.label else ""
    return {
        "id": job.id,
        "state": job.state.value,
        "exit_status": job.exit_status,
        "exit_code": job.exit_code,
        "signal": signal_name(job.signal) if job.signal is not None else None,
        "label": job.label,
        "sweep": job.sweep,
        "command": job.command_text,
        "host": host,
        "run_time": run_time(job, now),
        "output": job.log_path,
        "reason": job.reason or None,
        "text": f"ts job {job.id}{label} {outcome(job)} on {host}: {job.command_text[:300]}",
    }


def post(url: str, body: bytes) -> None:
    """One attempt; raises on anything but a 2xx answer."""
    import urllib.request

    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "spooler"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # (http(s) only: checked at enqueue)
        answer.read(65536)


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc) or type(exc).__name__


class Notifier:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: JobTable,
        clock: Callable[[], float],
        deliver: Deliver | None = None,
    ) -> None:
        self.loop = loop
        self.table = table
        self.clock = clock
        self.deliver = deliver or self._in_thread
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._retries: dict[int, asyncio.TimerHandle] = {}  # by a number of their own
        self._next_retry = 0
        self._host = socket.gethostname()

    def job_ended(self, job: Job) -> None:
        if not job.notify_url or (job.notify_on != "end" and not is_failed(job)):
            return
        body = json.dumps(payload(job, self._host, self.clock())).encode()
        job.notify_status = None
        self._attempt(job.id, job.notify_url, body, 0)

    def _attempt(self, job_id: int, url: str, body: bytes, tries: int) -> None:
        self.deliver(url, body, lambda error: self._done(job_id, url, body, tries, error))

    def _done(self, job_id: int, url: str, body: bytes, tries: int, error: str | None) -> None:
        job = self.table.jobs.get(job_id)
        if error is None:
            log.info("job %d: notified %s", job_id, url)
            status = "delivered"
        elif tries < len(RETRY_DELAYS):
            delay = RETRY_DELAYS[tries]
            log.warning("job %d: notifying %s failed (%s); retrying in %g s", job_id, url, error, delay)
            status = f"failed ({error}); retrying in {delay:g} s"
            self._next_retry += 1
            key = self._next_retry
            self._retries[key] = self.loop.call_later(delay, self._retry, key, job_id, url, body, tries + 1)
        else:
            log.error(
                "job %d: notifying %s failed (%s); gave up after %d attempts", job_id, url, error, tries + 1
            )
            status = f"failed ({error}); gave up after {tries + 1} attempts"
        if job is not None:
            job.notify_status = status
            self.table.record(job)

    def _retry(self, key: int, job_id: int, url: str, body: bytes, tries: int) -> None:
        self._retries.pop(key, None)
        self._attempt(job_id, url, body, tries)

    def _in_thread(self, url: str, body: bytes, done: Callable[[str | None], None]) -> None:
        if self._threads is None:
            self._threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="ts-notify")
        future = self.loop.run_in_executor(self._threads, post, url, body)

        def finished(f: asyncio.Future[None]) -> None:
            error = f.exception() if not f.cancelled() else None
            done(_why(error) if error is not None else None)

        future.add_done_callback(finished)

    def close(self) -> None:
        for timer in self._retries.values():
            timer.cancel()
        self._retries.clear()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
