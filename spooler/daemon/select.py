"""Filters shared by ``ts -l``, ``-r``, ``-k`` and ``--requeue``: state, label, sweep, ``--where``.

So a sweep can be listed, cancelled or have its failures rerun in one command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from spooler import render
from spooler.daemon import validate as v
from spooler.daemon.spooler import Spooler
from spooler.jobs import Job, JobState

STATES = {s.value for s in JobState} | {"failed"}


def is_failed(job: Job) -> bool:
    """Ended badly: a non-zero exit, a signal, a skip or a lost outcome."""
    if job.state is JobState.FINISHED:
        return job.exit_code != 0 or job.signal is not None
    return job.state in (JobState.SKIPPED, JobState.LOST)


def has_filter(msg: dict[str, Any]) -> bool:
    return bool(msg.get("filter"))


def _states(value: Any) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise v.bad("filter states must be a list of state names")
    unknown = [s for s in value if s not in STATES]
    if unknown:
        raise v.bad(f"unknown state {unknown[0]!r} (choose from {', '.join(sorted(STATES))})")
    return set(value)


def predicate(msg: dict[str, Any]) -> Callable[[Job], bool]:
    spec = msg.get("filter") or {}
    if not isinstance(spec, dict):
        raise v.bad("filter must be a map")
    states = _states(spec["states"]) if spec.get("states") else None
    label = v.optional_str(spec, "label", 1024)
    sweep = v.optional_str(spec, "sweep", 255)
    ids = set(v.id_list(spec, "ids")) or None
    where_text = v.optional_str(spec, "where", 4096)
    where = None
    if where_text is not None:
        from spooler.where import compile_where

        where = compile_where(where_text, known=KNOWN_FIELDS)
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
        if label is not None and job.label != label:
            return False
        if sweep is not None and job.sweep != sweep:
            return False
        return where is None or where.matches(render.job_data(job, now))

    return matches


def select(sp: Spooler, msg: dict[str, Any]) -> list[Job]:
    matches = predicate(msg)
    return [job for job in sp.ordered() if matches(job)]


KNOWN_FIELDS = frozenset(render.job_data(Job(id=0, command=["x"], cwd="/"), 0.0))
