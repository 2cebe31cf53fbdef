"""The timer behind the slurm backend's polling: one ``squeue`` call for every job we have in
SLURM, every ``poll_interval`` seconds, stretching to eight times that while nothing changes,
and never two calls at once.  What a call says is the backend's business (``apply``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from spooler.daemon.slurm import commands
from spooler.daemon.slurm.tools import Result, Tools

MAX_BACKOFF = 8  # polls stretch to this many intervals while nothing changes

# apply(rows, the number of the squeue call they come from) -> whether anything changed
Apply = Callable[[list[commands.QueueRow], int], bool]


class Poller:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tools: Tools,
        interval: float,
        wanted: Callable[[], bool],
        apply: Apply,
        failed: Callable[[str], None],
    ) -> None:
        self.loop = loop
        self.tools = tools
        self.interval = interval
        self.wanted = wanted  # are there jobs in SLURM to watch?
        self.apply = apply
        self.failed = failed  # told why squeue failed (a controller that does not answer)
        self.seq = 0  # squeue calls started so far
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._quiet = 0  # calls in a row that changed nothing
        self.closed = False

    def soon(self, delay: float = 0.0) -> None:
        """Something changed (a submission, a cancel): poll again at the full rate."""
        if self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._quiet = 0
        self._timer = self.loop.call_later(delay, self.poll)

    def _next(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if self.wanted() and not self.closed:
            stretch = min(MAX_BACKOFF, 2**self._quiet)
            self._timer = self.loop.call_later(self.interval * stretch, self.poll)

    def poll(self) -> None:
        self._timer = None
        if self._running or self.closed or not self.wanted():
            return
        self._running = True
        self.seq += 1
        argv = ["squeue", "--me", "-h", "-r", "-t", "all", "-o", commands.SQUEUE_FORMAT]
        self.tools.run(argv, self._done, timeout=max(10.0, self.interval))

    def _done(self, result: Result) -> None:
        self._running = False
        if self.closed:
            return
        if result.returncode != 0:
            self.failed(commands.error_line(result.stderr))
            changed = False
        else:
            changed = self.apply(commands.parse_squeue(result.stdout), self.seq)
        self._quiet = 0 if changed else self._quiet + 1
        self._next()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
