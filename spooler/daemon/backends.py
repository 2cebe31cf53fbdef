"""Which backend runs a job: this machine (the launcher, with the GPUs of its inventory) or SLURM.

The daemon's ``backend`` (the config file's, or ``TS_BACKEND``) is that of every queue; a queue
bound in the config file (``[queues.NAME] backend = ...``; ``default`` names the queue without
a name) runs its jobs on its own backend instead.  So one daemon has a local GPU queue and a
cluster queue side by side: each backend has its scheduling pass (``dispatch.Dispatcher`` here,
``slurm.dispatch.SlurmDispatcher`` for SLURM), and each pass takes only its queues' jobs.

A job sent to SLURM is SLURM's until it ends (its token says so), whatever its queue is bound
to after a restart; a waiting job goes where its queue is bound now.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from spooler.daemon.config_file import QueueConfig, SlurmConfig
from spooler.daemon.queues import DEFAULT
from spooler.daemon.slurm.backend import SlurmBackend
from spooler.daemon.slurm.dispatch import SlurmDispatcher
from spooler.daemon.slurm.tools import Tools
from spooler.jobs import Job, JobState

if TYPE_CHECKING:
    from spooler.daemon.spooler import Spooler

LOCAL, SLURM = "local", "slurm"


class Binding:
    """Each queue's backend (None is the default queue), and the ``[slurm]`` keys of its jobs."""

    def __init__(
        self,
        default: str = LOCAL,
        queues: Mapping[str, QueueConfig] | None = None,
        slurm: SlurmConfig | None = None,
    ) -> None:
        configured = {None if name == DEFAULT else name: q for name, q in (queues or {}).items()}
        self.default = default
        self.bound: dict[str | None, str] = {n: q.backend for n, q in configured.items() if q.backend}
        self.slurm = slurm or SlurmConfig()
        self._slurm_of = {n: replace(self.slurm, **q.slurm) for n, q in configured.items() if q.slurm}

    def of(self, queue: str | None) -> str:
        return self.bound.get(queue, self.default)

    def in_slurm(self, queue: str | None) -> bool:
        return self.bound.get(queue, self.default) == SLURM

    def local(self, queue: str | None) -> bool:
        return self.bound.get(queue, self.default) == LOCAL

    def uses(self, backend: str) -> bool:
        """Whether any queue runs its jobs there (a queue not named in the file has the daemon's)."""
        return self.default == backend or backend in self.bound.values()

    def slurm_of(self, queue: str | None) -> SlurmConfig:
        """How the queue's jobs are asked of SLURM: its ``[queues.NAME.slurm]`` over ``[slurm]``."""
        return self._slurm_of.get(queue, self.slurm)


def slurm_side(
    sp: Spooler, env: Mapping[str, str], started: Callable[[Job], None]
) -> tuple[SlurmBackend, SlurmDispatcher]:
    """The SLURM backend and its scheduling pass, which takes the jobs of the queues bound to it
    (every queue, on a daemon whose backend is SLURM) and throttles each with its queue's -S."""
    loop: asyncio.AbstractEventLoop = sp.loop
    tools = Tools(loop, env, sp.helpers.watch)
    backend = SlurmBackend(
        loop,
        sp.table,
        sp.running,
        sp.events,
        tools,
        sp.binding.slurm,
        sp.runs_dir,
        sp.kick,
        started,
        sp.clock,
    )
    dispatcher = SlurmDispatcher(
        loop, sp.table, sp.running, sp.gpu, events=sp.events, terminals=sp.terminals, runs_dir=sp.runs_dir,
        clock=sp.clock,
    )  # fmt: skip
    dispatcher.slurm, dispatcher.binding = backend, sp.binding
    dispatcher.backend = backend
    dispatcher.space_waiters = sp.dispatcher.space_waiters  # one line of blocked submitters
    if sp.binding.uses(LOCAL):
        dispatcher.takes = sp.binding.in_slurm
    return backend, dispatcher


def settle_sent_to_slurm(sp: Spooler, was_running: list[Job]) -> list[Job]:
    """At start: the jobs an earlier daemon sent to SLURM (or was about to) are found again and
    never resent, or skipped where no queue runs in SLURM any more.  The jobs of ``was_running``
    left to recover here are returned."""
    in_slurm = [j for j in sp.table.jobs.values() if j.slurm_token and not j.state.is_done]
    if sp.slurm is None and in_slurm and shutil.which("squeue", path=sp.env.get("PATH")):
        # No queue is bound to SLURM any more, but jobs went there: followed to their end all the
        # same (a running one must never be taken for a local job and started here again).
        sp.follow_slurm()
    if sp.slurm is None:
        for job in in_slurm:
            # SLURM's tools are gone: never run here a second time, nor reported as running.
            why = "it was sent to SLURM, and this daemon cannot reach SLURM (no squeue on PATH)"
            if job.state.is_waiting:
                sp.events.end(job, JobState.SKIPPED, why)
            else:
                sp.events.end(job, JobState.LOST, f"{why}: it may still run there", retry=False)
        return [j for j in was_running if not j.slurm_token]
    for job in in_slurm:
        if job.state.is_waiting:
            sp.table.queue.remove(job)
            job.state = JobState.ALLOCATING
    sp.slurm.adopt(in_slurm)
    return [j for j in was_running if not j.slurm_token]


def taken(jobs: Iterable[Job]) -> tuple[int, int]:
    """(jobs running, slots they take) of running jobs, some of them in SLURM: one it keeps
    pending holds its share of -S but does not run; one it runs takes one slot."""
    count = slots = 0
    for job in jobs:
        if job.state is not JobState.ALLOCATING:
            count += 1
            slots += 1 if job.slurm_token else job.slots
    return count, slots
