"""The daemon's launchers: one, and more while launches come faster than one can spawn them.

A launcher spends most of a start blocked in ``posix_spawn``, which returns only once the new
process has exec'd (the kernel's work for it), so one launcher starts at most a couple of
thousand jobs a second however many CPUs are idle.  When a launch is sent while every launcher
started so far still has ``GROW_AT`` launches it has not reported started, another launcher is
started (up to one per CPU, at most ``MAX_LAUNCHERS``) and the launch goes to it.  A daemon that
starts its jobs one or two at a time keeps a single launcher; one pass that starts many (a gate
ending at ``-S 8``) starts more.  They stay until the daemon stops: idle, a launcher takes no
CPU (and about 10 MB of memory).

Each job belongs to the launcher it was sent to: when a launcher dies, only its jobs are
recovered (``Reaper.launcher_lost``); the others' launchers still report theirs.  Each launcher
has its own exit log, so a new daemon settles every one of them as it always has.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from spooler.daemon.launcher.handle import Launcher
from spooler.daemon.launcher.spec import Launch

MAX_LAUNCHERS = 4
GROW_AT = 2  # launches a launcher has not reported started when another one is started

log = logging.getLogger("spooler")


class LauncherPool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        runs_dir: str,
        on_note: Callable[[list[Any]], None],
        on_lost: Callable[[frozenset[int] | None], None],
        size: int | None = None,
    ) -> None:
        self.loop = loop
        self.runs_dir = runs_dir
        self.on_note = on_note
        self.on_lost = on_lost
        self.size = size or max(1, min(os.cpu_count() or 1, MAX_LAUNCHERS))
        self.launchers: list[Launcher] = []
        self.owner: dict[int, int] = {}  # job id -> the launcher it was sent to, until it ends
        self.unreported: list[set[int]] = []  # per launcher: launches not yet reported started

    def start(self) -> None:
        self._add()

    def _add(self) -> int:
        """Start one more launcher; its index.  Raises OSError if it cannot be started."""
        index = len(self.launchers)
        launcher = Launcher(
            self.loop, self.runs_dir, lambda note: self._noted(index, note), lambda: self._lost(index)
        )
        launcher.start()
        self.launchers.append(launcher)
        self.unreported.append(set())
        return index

    def launch(self, spec: Launch, terminal: tuple[int, int] | None = None, keep: Sequence[int] = ()) -> None:
        index = min(range(len(self.launchers)), key=lambda i: len(self.unreported[i]))
        if len(self.unreported[index]) >= GROW_AT and len(self.launchers) < self.size:
            try:
                index = self._add()  # every launcher is still spawning what it was sent: one more
            except OSError as exc:  # (out of processes or descriptors): the ones there will do
                log.warning("could not start another launcher: %s", exc)
        self.launchers[index].launch(spec, terminal, keep)
        self.owner[spec.job_id] = index  # a retry sent elsewhere belongs there only
        self.unreported[index].add(spec.job_id)

    def _noted(self, index: int, note: list[Any]) -> None:
        kind, job_id = note[0], note[1]
        if kind in ("started", "ended"):
            self.unreported[index].discard(job_id)
        if kind == "ended" and self.owner.get(job_id) == index:
            # (Not at a shim's "reaped": it may come after a retry was sent here again.  A job
            # whose shim died without "ended" stays listed until it is launched again.)
            del self.owner[job_id]
        self.on_note(note)

    def _lost(self, index: int) -> None:
        """Launcher ``index`` died (its handle has started another in its place, or tried to):
        its jobs' ends will not be reported, the others' will."""
        jobs = frozenset(j for j, i in self.owner.items() if i == index)
        for job_id in jobs:
            del self.owner[job_id]
        self.unreported[index].clear()
        self.on_lost(jobs if len(self.launchers) > 1 else None)

    def close(self) -> None:
        for launcher in self.launchers:
            launcher.close()
