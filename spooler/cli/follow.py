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
from typing import IO, Any

from spooler import paths, protocol
from spooler.cli.parse import Invocation, job_id
from spooler.client import Client, check
from spooler.errors import SpoolerError

TAIL_LINES = 10
_POLL = 0.2  # how often a growing log is read while the job runs
_TAIL_WINDOW = 64 * 1024


def _open(path: str, gzipped: bool) -> IO[bytes]:
    if gzipped:
        import gzip

        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _last_lines(f: IO[bytes], count: int) -> bytes:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - _TAIL_WINDOW))
    data = f.read()
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:])


def _show(inv: Invocation, whole: bool) -> int:
    with Client() as client:
        reply = client.request(
            "job_field", id=job_id(inv.value, inv.action_option), field="status", default="run"
        )
        status: dict[str, Any] = reply["value"]
        if status["state"] in ("queued", "allocating"):
            raise SpoolerError(f"job {status['id']} has not started yet")
        path = status["output"]
        if not path:
            raise SpoolerError(f"job {status['id']} has no output file")
        out = sys.stdout.buffer
        try:
            f = _open(path, bool(status["gzip"]) and status["state"] != "running")
        except OSError as exc:
            raise SpoolerError(f"cannot read {path}: {exc.strerror}") from None
        with f:
            if whole or status["gzip"]:
                out.write(f.read())
            else:
                out.write(_last_lines(f, TAIL_LINES))
            out.flush()
            if status["state"] != "running":
                return int(status["exit_status"])
            client.send(protocol.request("wait", id=status["id"]))
            while True:
                ready, _, _ = select.select([client.fileno()], [], [], _POLL)
                chunk = f.read()
                if chunk:
                    out.write(chunk)
                    out.flush()
                if ready:
                    done = check(client.receive())
                    out.write(f.read())
                    out.flush()
                    return int(done["exit_status"])


def tail(inv: Invocation) -> int:
    return _show(inv, whole=False)


def cat(inv: Invocation) -> int:
    return _show(inv, whole=True)


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
