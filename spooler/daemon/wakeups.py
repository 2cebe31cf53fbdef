"""Waking the scheduler at a given time (``--begin``): one timer on the event loop, armed for the
earliest time anyone asked for, so an idle daemon sleeps until then instead of polling.

Times stay in a heap; a time whose job has gone since costs one scheduling pass that finds
nothing to start, which is cheaper than tracking removals.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

# The loop's timers run on the monotonic clock and jobs' times are wall-clock times: a timer that
# fires a little early is armed again for what is left, at least this long.
_MIN_DELAY = 0.005


class Wakeups:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float], kick: Callable[[], None]
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.kick = kick
        self._times: list[float] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None

    def at(self, when: float) -> None:
        """Kick the scheduler at ``when`` (seconds since the epoch)."""
        heapq.heappush(self._times, when)
        if self._armed_for is None or when < self._armed_for:
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = None
        if self._times:
            when = self._times[0]
            self._armed_for = when
            self._timer = self.loop.call_later(max(_MIN_DELAY, when - self.clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.clock()
        due = False
        while self._times and self._times[0] <= now:
            heapq.heappop(self._times)
            due = True
        if due:
            self.kick()
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._armed_for = None
