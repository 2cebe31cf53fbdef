"""The job filters of ``ts -l``, ``-r``, ``-k`` and ``--requeue``: state, label, sweep, ids and
``--where``, so a sweep can be listed, cancelled or have its failures rerun in one command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from spooler.jobs import Job, JobState, job_data
from spooler.protocol.requests import Filter


def is_failed(job: Job) -> bool:
    """Ended badly: a non-zero exit, a signal, a skip, a lost outcome or a time limit reached."""
    if job.state is JobState.FINISHED:
        return job.exit_code != 0 or job.signal is not None
    return job.state in (JobState.SKIPPED, JobState.LOST, JobState.TIMEOUT)


def predicate(spec: Filter) -> Callable[[Job], bool]:
    """Whether a job passes the filter; a ``--where`` that does not parse raises here, once."""
    states = set(spec.states) or None
    ids = set(spec.ids) or None
    where = None
    if spec.where is not None:
        from spooler.daemon.where import compile_where

        where = compile_where(spec.where, known=KNOWN_FIELDS)
    now = time.time()

    def matches(job: Job) -> bool:
        if ids is not None and job.id not in ids:
            return False
        if (
            states is not None
            and job.state.value not in states
            and not ("failed" in states and is_failed(job))
        ):
            return False
        if spec.label is not None and job.label != spec.label:
            return False
        if spec.sweep is not None and job.sweep != spec.sweep:
            return False
        if spec.queue is not None and (job.queue or "default") != spec.queue:
            return False
        if spec.user is not None and job.user != spec.user:
            return False
        return where is None or where.matches(job_data(job, now))

    return matches


def select(jobs: Iterable[Job], spec: Filter | None) -> list[Job]:
    """The jobs (in ``ts -l`` order) that pass the filter; all of them without one."""
    if spec is None:
        return list(jobs)
    matches = predicate(spec)
    return [job for job in jobs if matches(job)]


KNOWN_FIELDS = frozenset(job_data(Job(id=0, command=["x"], cwd="/", user="-"), 0.0))
