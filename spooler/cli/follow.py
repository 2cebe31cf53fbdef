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

from spooler import paths, protocol
from spooler.cli.parse import Invocation, job_id
from spooler.client import Client, check
from spooler.errors import SpoolerError

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
    reply = client.request("job_field", id=job, field="status", default="run")
    status: dict[str, Any] = reply["value"]
    return status


def _open(path: str, gzipped: bool, running: bool) -> LogReader | None:
    """The job's log; None while a running job's log is still being created by the launcher."""
    try:
        return LogReader(path, gzipped)
    except FileNotFoundError:
        if running:
            return None
        raise SpoolerError(f"cannot read {path}: it no longer exists") from None
    except OSError as exc:
        raise SpoolerError(f"cannot read {path}: {exc.strerror}") from None


def show(inv: Invocation, whole: bool) -> int:
    """Print the job's output (the last lines, or all of it) and follow it until the job ends.

    A job that has not started yet is waited for, and then shown from its first line, as
    ``tail -f`` shows all of a file it was watching before anything was written to it.
    """
    with Client() as client:
        status = _status(client, job_id(inv.value, inv.action_option))
        if status["state"] in ("queued", "allocating"):
            client.request("wait", id=status["id"], until="start")
            status = _status(client, status["id"])
            whole = True
        elif status["state"] == "running" and not status.get("started"):
            # Handed to the launcher a moment ago: its log exists once the launcher reports in.
            client.request("wait", id=status["id"], until="start")
            status = _status(client, status["id"])
        path = status["output"]
        if not path:
            if status["state"] == "skipped":
                raise SpoolerError(f"job {status['id']} was skipped and has no output")
            raise SpoolerError(f"job {status['id']} has no output file")
        running = status["state"] == "running"
        reader = _open(path, bool(status["gzip"]), running)
        out = sys.stdout.buffer
        first = True

        def copy_new() -> None:
            nonlocal reader, first
            if reader is None:
                reader = _open(path, bool(status["gzip"]), True)
                if reader is None:
                    return
            if first and not whole and not status["gzip"]:
                reader.file.seek(max(0, os.fstat(reader.file.fileno()).st_size - _TAIL_WINDOW))
            data = reader.read_new()
            if first and not whole:
                data = _last_lines(data, TAIL_LINES)
            first = False
            if data:
                out.write(data)
                out.flush()

        try:
            copy_new()
            if not running:
                return int(status["exit_status"])
            client.send(protocol.request("wait", id=status["id"]))
            while True:
                ready, _, _ = select.select([client.fileno()], [], [], _POLL)
                copy_new()
                if ready:
                    done = check(client.receive())
                    copy_new()
                    if reader is None:
                        raise SpoolerError(f"cannot read {path}: it was never created")
                    return int(done["exit_status"])
        finally:
            if reader is not None:
                reader.close()


def wait_for_daemon_exit(timeout: float = 15.0) -> None:
    """After ``ts -K``: return once the daemon has released its lock (it has exited)."""
    fd = os.open(paths.lock_path(paths.socket_path()), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
