"""Log files created ahead of the jobs that will write them (daemon side).

Creating a file is the slowest step of a start (tens of microseconds on ext4, more when the
CPUs are busy), and it sits on the path from one job's end to the next one's start.  So the
daemon keeps one empty log file, with a generated name, ready in the log directory while jobs
wait, created after a launch has gone out (while that job runs, not while the next one waits);
the next launch names it and the launcher opens it instead of creating it (``spawn``).

A spare is created exclusively (``O_EXCL``, mode 0600) like any generated log, so it never
overwrites anything; the launcher checks it is still that file before using it.  Only generated
names of the daemon's own user are made ahead (not ``-L``/``-O`` names, not ``-z`` ones, not the
logs of a shared daemon's users, which the launcher creates as them).  A spare left when the
queue empties, when the log directory changes, or when the daemon stops, is removed; a daemon
killed with ``kill -9`` leaves its spares (one per slot at most) as empty ``ts-out.*`` files.
"""

from __future__ import annotations

import contextlib
import os

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_MAX_DIRS = 8  # log directories with spares at once (one is the rule: the daemon's logdir)
MAX_SPARES = 8  # per directory: enough for the starts of one pass at -S 8


def generated_name(logdir: str, gzip: bool = False) -> str:
    """A new log's name: ``ts-out.`` and 8 random hex digits (``.gz`` for ``-z``)."""
    return os.path.join(logdir, f"ts-out.{os.urandom(4).hex()}{'.gz' if gzip else ''}")


class SpareLogs:
    def __init__(self) -> None:
        self._ready: dict[str, list[str]] = {}  # log directory -> empty log files created there
        self.closed = False  # the daemon stops: a refill still due makes nothing

    def take(self, logdir: str) -> str | None:
        """A spare of ``logdir`` (the caller's now), or None if there is none."""
        ready = self._ready.get(logdir)
        return ready.pop() if ready else None

    def refill(self, logdir: str, count: int) -> None:
        """Have ``count`` spares in ``logdir``; a failure (no such directory, a full disk) is
        left for the launch to meet and report, as without spares."""
        if self.closed or (logdir not in self._ready and len(self._ready) >= _MAX_DIRS):
            return
        ready = self._ready.setdefault(logdir, [])
        while len(ready) < count:
            path = generated_name(logdir)
            try:
                os.close(os.open(path, _FLAGS, 0o600))
            except OSError:
                return
            ready.append(path)

    def drop(self) -> None:
        """Remove every spare: the queue is empty, or the daemon stops."""
        for ready in self._ready.values():
            for path in ready:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self._ready.clear()

    def close(self) -> None:
        self.closed = True
        self.drop()

    def __bool__(self) -> bool:
        return bool(self._ready)
