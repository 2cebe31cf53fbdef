"""The running jobs: the one registry of what runs and how many slots it takes.

A job enters through :meth:`RunningJobs.add` (started here, or adopted from an earlier daemon)
and leaves through :meth:`RunningJobs.remove`, whatever ended it; slot use is counted here and
nowhere else.  Only what lives while the daemon runs is kept: a job's persisted fields are in
the job table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from spooler.jobs import Job

Observer = Callable[[Job], None]


class RunningJobs:
    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._adopted: set[int] = set()  # started by an earlier daemon: watched, not launched here
        self._busy = 0
        self._busy_in: dict[str | None, int] = {}  # slots in use per named queue (None: default)
        # job id -> (signal, escalate) for jobs killed before their pid was known
        self._pending_kills: dict[int, tuple[int, bool]] = {}
        # What must follow a job in or out (its time limit is armed and cancelled here).
        self.on_enter: list[Observer] = []
        self.on_leave: list[Observer] = []

    def add(self, job: Job, *, adopted: bool = False) -> None:
        if job.id in self._jobs:
            raise ValueError(f"job {job.id} is already running")
        self._jobs[job.id] = job
        self._busy += job.slots
        self._busy_in[job.queue] = self._busy_in.get(job.queue, 0) + job.slots
        if adopted:
            self._adopted.add(job.id)
        for observer in self.on_enter:
            observer(job)

    def remove(self, job: Job) -> None:
        if self._jobs.pop(job.id, None) is None:
            return
        self._busy -= job.slots
        self._busy_in[job.queue] -= job.slots
        self._adopted.discard(job.id)
        self._pending_kills.pop(job.id, None)
        for observer in self.on_leave:
            observer(job)

    @property
    def busy_slots(self) -> int:
        """Slots in use, all queues together."""
        return self._busy

    def busy_in(self, queue: str | None) -> int:
        """Slots in use by the jobs of one queue (None: the default queue)."""
        return self._busy_in.get(queue, 0)

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def __contains__(self, job: Job) -> bool:
        return self._jobs.get(job.id) is job

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def by_id(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.id)

    def is_adopted(self, job_id: int) -> bool:
        return job_id in self._adopted

    def launched_here(self) -> list[Job]:
        """The jobs this daemon's launcher started (not those adopted from an earlier daemon,
        nor those it sent to SLURM)."""
        return [j for j in self._jobs.values() if j.id not in self._adopted and not j.slurm_token]

    def kill_when_started(self, job: Job, sig: int, escalate: bool) -> None:
        self._pending_kills[job.id] = (sig, escalate)

    def pending_kill(self, job: Job) -> tuple[int, bool] | None:
        return self._pending_kills.pop(job.id, None)
