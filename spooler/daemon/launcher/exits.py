"""Launcher logs: where a launcher records each job it started and how each ended, for the
next daemon.

While the daemon runs, it learns of every start and end from the launcher's reports.  The log
is for the daemon that comes after a crash, a ``kill -9`` or a ``ts -K`` while jobs ran:

- an end record says how a job that ended meanwhile ended, so it is never marked lost;
- a start record says which process a job runs as, when the daemon died before it heard (and
  recorded) the ``started`` report, so the job is adopted, not lost; one without a pid (the
  intent, written just before the spawn) means the launcher died while starting it: it may
  have run, so it is never run again;
- a drained record says the launcher has seen its daemon go and will start nothing more: a job
  the daemon recorded as started, with no start record in any drained (or dead) launcher's log,
  never reached a launcher, and goes back to the queue instead of being lost or run twice.

One append-only file per launcher (``exits.<pid>`` in the runs directory) costs one ``write``
per record, where a status file per job cost a file creation, the slowest step of all on most
file systems.  Each record is written before it is reported, in one ``write`` on an
``O_APPEND`` descriptor, which the kernel never interleaves with another.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import msgpack

PREFIX = "exits."


@dataclass(frozen=True)
class Exit:
    job_id: int
    pid: int  # the process whose end it records: the job, or the shim of a -z job
    wait_status: int
    error: str
    end: float


@dataclass(frozen=True)
class Start:
    job_id: int
    pid: int  # the process to watch: the job, or the shim of a -z job
    job_pid: int  # the job's own process (group); 0 while a shim has not started it yet
    time: float
    launcher: int  # pid of the launcher whose log holds the record


@dataclass
class Logs:
    """Everything the launchers' logs hold, by job id, oldest first in each log."""

    exits: dict[int, list[Exit]] = field(default_factory=dict)
    starts: dict[int, list[Start]] = field(default_factory=dict)
    drained: set[int] = field(default_factory=set)  # launchers that will start nothing more
    launchers: set[int] = field(default_factory=set)  # every launcher with a log
    # False when a live launcher had still not drained when we stopped waiting: a job without
    # a start record may yet be started by it.
    settled: bool = True


# Record layouts.  An end is a bare 5-item list (the original format, still read as such).
_START = "s"  # [_START, job id, watched pid, job pid, time]
_DRAINED = "d"  # [_DRAINED, time]


def log_path(runs_dir: str, launcher_pid: int) -> str:
    return os.path.join(runs_dir, f"{PREFIX}{launcher_pid}")


class ExitLog:
    """The writing end, held by a launcher and inherited by its shims."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _write(self, record: list[object]) -> None:
        with contextlib.suppress(OSError):  # a full disk: the daemon, if alive, still hears it
            os.write(self.fd, msgpack.packb(record))

    def record(self, job_id: int, pid: int, wait_status: int, error: str, end: float) -> None:
        self._write([job_id, pid, wait_status, error, end])

    def started(self, job_id: int, pid: int = 0, job_pid: int = 0) -> None:
        """A job started as ``pid`` (its own process, or its shim's with ``job_pid`` 0 until the
        shim has started it); without pids: about to be started."""
        self._write([_START, job_id, pid, job_pid, time.time()])

    def drained(self) -> None:
        self._write([_DRAINED, time.time()])


def read(runs_dir: str) -> Logs:
    """Every record of every launcher's log."""
    logs = Logs()
    for name in _logs(runs_dir):
        launcher = int(name[len(PREFIX) :])
        logs.launchers.add(launcher)
        try:
            with open(os.path.join(runs_dir, name), "rb") as f:
                data = f.read()
        except OSError:
            continue
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(data)
        try:
            for record in unpacker:  # stops quietly at a record torn by a crash
                _add(logs, record, launcher)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            continue  # the rest of a damaged log is unreadable; what came before stands
    return logs


def _add(logs: Logs, record: list[object], launcher: int) -> None:
    kind = record[0]
    if kind == _START:
        _, job_id, pid, job_pid, at = record
        start = Start(int(job_id), int(pid), int(job_pid), float(at), launcher)  # type: ignore[call-overload, arg-type]
        logs.starts.setdefault(start.job_id, []).append(start)
    elif kind == _DRAINED:
        logs.drained.add(launcher)
    else:
        job_id, pid, status, error, end = record
        found = Exit(int(job_id), int(pid), int(status), str(error), float(end))  # type: ignore[call-overload, arg-type]
        logs.exits.setdefault(found.job_id, []).append(found)


def read_settled(runs_dir: str, timeout: float = 5.0) -> Logs:
    """The logs once every launcher still alive has drained (seen its daemon go, and started
    what it had been sent), so that a job without a start record is known never to have
    reached one.  Called by a new daemon before it settles the jobs an earlier one ran."""
    deadline = time.monotonic() + timeout
    while True:
        logs = read(runs_dir)
        busy = [pid for pid in logs.launchers - logs.drained if launcher_alive(pid)]
        if not busy or time.monotonic() > deadline:
            logs.settled = not busy
            return logs
        time.sleep(0.005)  # a launcher drains within milliseconds of its daemon's end


def find(logs: Logs, job_id: int, pid: int | None, started: float | None) -> Exit | None:
    """The end of this run of the job: its watched pid if known, else the last end after its start."""
    candidates = logs.exits.get(job_id, [])
    if pid:
        matching = [e for e in candidates if e.pid == pid]
        return matching[-1] if matching else None
    later = [e for e in candidates if started is None or e.end >= started]
    return later[-1] if later else None


def find_start(logs: Logs, job_id: int, pid: int | None, started: float | None) -> Start | None:
    """The start record of this run of the job: by its watched pid if known, else the last one
    after the daemon recorded it as started (a retry's earlier attempts came before)."""
    candidates = logs.starts.get(job_id, [])
    if pid:
        candidates = [s for s in candidates if s.pid == pid]
    elif started is not None:
        # The daemon stamps a run's start before it sends the launch, the launcher after it
        # spawned the job, on the same clock: an earlier attempt's record is older.
        candidates = [s for s in candidates if s.time >= started]
    # A run's records: the intent (no pid yet), then the pid, then (a -z shim's) the job's pid.
    return max(candidates, key=lambda s: (s.pid != 0, s.job_pid != 0, s.time)) if candidates else None


def remove_logs_of_dead_launchers(runs_dir: str, alive: set[int]) -> None:
    """Once read at start-up, the logs of launchers that have exited hold nothing still needed."""
    for name in _logs(runs_dir):
        pid = int(name[len(PREFIX) :])
        if pid not in alive and not launcher_alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(runs_dir, name))


def _logs(runs_dir: str) -> list[str]:
    try:
        names = os.listdir(runs_dir)
    except OSError:
        return []
    return [n for n in names if n.startswith(PREFIX) and n[len(PREFIX) :].isdigit()]


def launcher_alive(pid: int) -> bool:
    """Is ``pid`` a launcher?  By its command line (its process name is set only once Python
    has started), or an empty one: the spawner goes on while the kernel is still setting up
    the new program, before its command line shows."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, IndexError):
        return False
    return not cmdline or b"\0spooler.daemon.launcher\0" in cmdline


def create_log(runs_dir: str, launcher_pid: int) -> None:
    """Made by the daemon as soon as it has spawned a launcher, before it sends a launch: a
    daemon that dies meanwhile leaves a launcher the next daemon knows to wait for, even if
    that launcher has not yet started far enough to open its log."""
    with contextlib.suppress(OSError):
        os.close(os.open(log_path(runs_dir, launcher_pid), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def decode_wait_status(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) from a wait status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None
