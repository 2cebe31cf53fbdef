"""``ts -t`` and ``ts -c``: show a job's output, following it until the job ends.

The client reads the log file itself (it belongs to the same user) while a ``wait`` request is
pending on its connection: the daemon's reply is the signal that the job ended.
"""

from __future__ import annotations

import fcntl
import os
import select
import sys
import time
from typing import Any

from spooler import paths
from spooler.cli.parse import Invocation, job_id
from spooler.client import Client, check
from spooler.errors import SpoolerError
from spooler.protocol.requests import JobField, Wait

TAIL_LINES = 10
_POLL = 0.2  # how often a growing log is read while the job runs
_TAIL_WINDOW = 64 * 1024


class LogReader:
    """Reads what a log file gained since the last call; decompresses a ``-z`` log as it grows."""

    def __init__(self, path: str, gzipped: bool) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.inflater = None
        if gzipped:
            import zlib

            self.inflater = zlib.decompressobj(31)

    def read_new(self) -> bytes:
        data = self.file.read()
        if self.inflater is None or not data:
            return data
        return self.inflater.decompress(data)

    def close(self) -> None:
        self.file.close()


def _last_lines(data: bytes, count: int) -> bytes:
    return b"".join(data.splitlines(keepends=True)[-count:])


def _status(client: Client, job: int | None) -> dict[str, Any]:
    reply = client.call(JobField(id=job, field="status", default="run"))
    status: dict[str, Any] = reply["value"]
    return status


def show(inv: Invocation, whole: bool) -> int:
    """Print the job's output (the last lines, or all of it) and follow it until the job ends.

    A job that has not started yet is waited for, and then shown from its first line, as
    ``tail -f`` shows all of a file it was watching before anything was written to it.
    """
    with Client() as client:
        status = _status(client, job_id(inv.value, inv.action_option))
        if status["state"] in ("queued", "allocating", "held", "running") and not status.get("started"):
            # Not started, or handed to the launcher a moment ago: once the launcher reports
            # the process, its log exists.
            whole = whole or status["state"] != "running"
            client.call(Wait(id=status["id"], until="start"))
            status = _status(client, status["id"])
        path = status["output"]
        if not path:
            if status["state"] == "skipped":
                raise SpoolerError(f"job {status['id']} was skipped and has no output")
            raise SpoolerError(f"job {status['id']} has no output file")
        try:
            reader = LogReader(path, bool(status["gzip"]))
        except OSError as exc:
            raise SpoolerError(f"cannot read {path}: {exc.strerror}") from None
        out = sys.stdout.buffer
        try:
            if not whole and not status["gzip"]:
                reader.file.seek(max(0, os.fstat(reader.file.fileno()).st_size - _TAIL_WINDOW))
            start = reader.read_new()
            out.write(start if whole else _last_lines(start, TAIL_LINES))
            out.flush()
            if status["state"] not in ("running", "paused"):
                return int(status["exit_status"])
            client.send(Wait(id=status["id"]).wire())
            while True:
                ready, _, _ = select.select([client.fileno()], [], [], _POLL)
                chunk = reader.read_new()
                if chunk:
                    out.write(chunk)
                    out.flush()
                if ready:
                    done = check(client.receive())
                    out.write(reader.read_new())
                    out.flush()
                    return int(done["exit_status"])
        finally:
            reader.close()


def _wait_until_gone(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        if time.monotonic() > deadline:
            raise SpoolerError("the daemon did not stop within 15 s")
        time.sleep(0.01)


def wait_for_daemon_exit(timeout: float = 15.0) -> None:
    """After ``ts -K``: return once the daemon has released its lock (it has exited)."""
    sock = paths.socket_path()
    try:
        fd = os.open(paths.lock_path(sock), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except PermissionError:
        # A shared daemon's lock is root's: an admin who is not root waits for its socket to go
        # (it is removed before the lock is released).
        _wait_until_gone(sock, timeout)
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SpoolerError("the daemon did not stop within 15 s") from None
                time.sleep(0.01)
    finally:
        os.close(fd)
