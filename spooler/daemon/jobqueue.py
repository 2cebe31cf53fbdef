"""The waiting jobs in the order they may start: higher priority first, then queue position.

A job's position is its ``seq`` (a float, saved with the job), so reordering one job rewrites
that job's record only: ``-u`` gives it a ``seq`` below the head's, ``-U`` exchanges two jobs'
places (priority and seq), ``--priority`` moves a job to the end of its new level.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from spooler.jobs import Job


def order_key(job: Job) -> tuple[int, float, int]:
    # The id breaks ties (-u may give a job the seq of one now running that comes back for a
    # retry), so the order after a restart is the order before it.
    return (-job.priority, job.seq, job.id)


class JobQueue:
    def __init__(self) -> None:
        self._jobs: list[Job] = []
        self.next_seq = 0.0
        # Waiting jobs per named queue (None: the default one): lets a scheduling pass stop as
        # soon as every job left belongs to a queue with no free slot.
        self.per_queue: dict[str | None, int] = {}

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def last(self) -> Job | None:
        return self._jobs[-1] if self._jobs else None

    def restore(self, jobs: list[Job]) -> None:
        """Load saved waiting jobs (their seq and priority say where they go)."""
        self._jobs = sorted(jobs, key=order_key)
        self.per_queue = {}
        for job in self._jobs:
            self.per_queue[job.queue] = self.per_queue.get(job.queue, 0) + 1

    def note_seq(self, seq: float) -> None:
        self.next_seq = max(self.next_seq, seq + 1)

    def add(self, job: Job, *, new_seq: bool = True) -> None:
        """Queue a job at the end of its priority level (or at its saved place)."""
        if new_seq:
            job.seq = self.next_seq
            self.next_seq += 1
        bisect.insort(self._jobs, job, key=order_key)
        self.per_queue[job.queue] = self.per_queue.get(job.queue, 0) + 1

    def remove(self, job: Job) -> None:
        self._jobs.remove(job)
        self.per_queue[job.queue] -= 1

    def move_first(self, job: Job) -> None:
        """``-u``: ahead of every other waiting job, whatever their priorities."""
        self._jobs.remove(job)
        if self._jobs and order_key(job) > order_key(self._jobs[0]):
            head = self._jobs[0]
            job.priority = max(job.priority, head.priority)
            job.seq = head.seq - 1
        self._jobs.insert(0, job)

    def swap(self, a: Job, b: Job) -> None:
        """``-U``: the two jobs exchange their places."""
        ia, ib = self._jobs.index(a), self._jobs.index(b)
        self._jobs[ia], self._jobs[ib] = b, a
        a.seq, b.seq = b.seq, a.seq
        a.priority, b.priority = b.priority, a.priority

    def set_priority(self, job: Job, priority: int) -> None:
        self.remove(job)
        job.priority = priority
        self.add(job)
