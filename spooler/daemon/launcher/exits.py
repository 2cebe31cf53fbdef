"""Exit logs: where a launcher records how each of its jobs ended, for the next daemon.

While the daemon runs, it learns of every end from the launcher's report.  The log is for the
daemon that comes after a crash, a ``kill -9`` or a ``ts -K`` while jobs ran: it reads how the
jobs that ended meanwhile ended.  One append-only file per launcher (``exits.<pid>`` in the
runs directory) costs one ``write`` per job, where a status file per job cost a file creation,
the slowest step of all on most file systems.  Each record is written before it is reported, in
one ``write`` on an ``O_APPEND`` descriptor, which the kernel never interleaves with another.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import msgpack

PREFIX = "exits."


@dataclass(frozen=True)
class Exit:
    job_id: int
    pid: int  # the process whose end it records: the job, or the shim of a -z job
    wait_status: int
    error: str
    end: float


def log_path(runs_dir: str, launcher_pid: int) -> str:
    return os.path.join(runs_dir, f"{PREFIX}{launcher_pid}")


class ExitLog:
    """The writing end, held by a launcher and inherited by its shims."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def record(self, job_id: int, pid: int, wait_status: int, error: str, end: float) -> None:
        with contextlib.suppress(OSError):  # a full disk: the daemon, if alive, still hears it
            os.write(self.fd, msgpack.packb([job_id, pid, wait_status, error, end]))


def read(runs_dir: str) -> dict[int, list[Exit]]:
    """Every exit recorded by any launcher, by job id, oldest first in each log."""
    found: dict[int, list[Exit]] = {}
    for name in _logs(runs_dir):
        try:
            with open(os.path.join(runs_dir, name), "rb") as f:
                data = f.read()
        except OSError:
            continue
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(data)
        try:
            for record in unpacker:  # stops quietly at a record torn by a crash
                job_id, pid, status, error, end = record
                found.setdefault(int(job_id), []).append(
                    Exit(int(job_id), int(pid), int(status), str(error), float(end))
                )
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            continue  # the rest of a damaged log is unreadable; what came before stands
    return found


def find(exits: dict[int, list[Exit]], job_id: int, pid: int | None, started: float | None) -> Exit | None:
    """The end of this run of the job: its watched pid if known, else the last end after its start."""
    candidates = exits.get(job_id, [])
    if pid:
        matching = [e for e in candidates if e.pid == pid]
        return matching[-1] if matching else None
    later = [e for e in candidates if started is None or e.end >= started]
    return later[-1] if later else None


def remove_logs_of_dead_launchers(runs_dir: str, alive: set[int]) -> None:
    """Once read at start-up, the logs of launchers that have exited hold nothing still needed."""
    for name in _logs(runs_dir):
        pid = int(name[len(PREFIX) :])
        if pid not in alive and not _is_launcher(pid):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(runs_dir, name))


def _logs(runs_dir: str) -> list[str]:
    try:
        names = os.listdir(runs_dir)
    except OSError:
        return []
    return [n for n in names if n.startswith(PREFIX) and n[len(PREFIX) :].isdigit()]


def _is_launcher(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip() == b"ts-launcher"
    except OSError:
        return False


def decode_wait_status(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) from a wait status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None
