"""Jobs and their states, shared by both sides of the socket.

Every change of state goes through :meth:`Job.transition`, which checks that the move is allowed
and records its time, so no code path can, say, finish a job that never ran.  :func:`job_data`
is the field model users see: the keys of ``ts -M json`` and the names ``--where`` knows.
"""

from __future__ import annotations

import dataclasses
import enum
import signal as signals
import time
from dataclasses import dataclass, field
from typing import Any

from spooler.commands import display


class JobState(str, enum.Enum):
    QUEUED = "queued"  # waiting for its turn, its dependencies or a slot
    ALLOCATING = "allocating"  # its turn has come; waiting for free GPUs
    RUNNING = "running"
    FINISHED = "finished"  # ran and ended; exit_code or signal says how
    SKIPPED = "skipped"  # never ran: a -W dependency failed, or it was skipped on purpose
    LOST = "lost"  # was running when the daemon died and its outcome cannot be known
    TIMEOUT = "timeout"  # was still running at its time limit (--time), so it was killed
    HELD = "held"  # queued, keeping its place, but never started until released (--hold)
    PAUSED = "paused"  # running but stopped (SIGSTOP, --pause): keeps its slots and GPUs

    @property
    def is_waiting(self) -> bool:
        """In the queue (a held job keeps its place there, so it is waiting too)."""
        return self in (JobState.QUEUED, JobState.ALLOCATING, JobState.HELD)

    @property
    def is_active(self) -> bool:
        """Its process exists: running, or paused."""
        return self in (JobState.RUNNING, JobState.PAUSED)

    @property
    def is_done(self) -> bool:
        return self in (JobState.FINISHED, JobState.SKIPPED, JobState.LOST, JobState.TIMEOUT)


_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.ALLOCATING, JobState.RUNNING, JobState.SKIPPED, JobState.HELD}),
    JobState.ALLOCATING: frozenset({JobState.QUEUED, JobState.RUNNING, JobState.SKIPPED, JobState.HELD}),
    JobState.HELD: frozenset({JobState.QUEUED}),
    # RUNNING -> QUEUED: a launch that never reached a launcher (the daemon died sending it)
    JobState.RUNNING: frozenset(
        {JobState.FINISHED, JobState.LOST, JobState.TIMEOUT, JobState.PAUSED, JobState.QUEUED}
    ),
    JobState.PAUSED: frozenset({JobState.RUNNING, JobState.FINISHED, JobState.LOST, JobState.TIMEOUT}),
    JobState.FINISHED: frozenset({JobState.QUEUED}),
    JobState.SKIPPED: frozenset({JobState.QUEUED}),
    JobState.LOST: frozenset({JobState.QUEUED}),
    JobState.TIMEOUT: frozenset({JobState.QUEUED}),
}


class TransitionError(Exception):
    """An attempt to move a job between states that are not connected."""


@dataclass(slots=True, eq=False)
class Job:
    id: int
    command: list[str]
    cwd: str
    env_key: str = ""  # key into the daemon's table of distinct captured environments
    shell: bool = False  # run through ``sh -c`` (a single word with spaces or operators)
    state: JobState = JobState.QUEUED
    label: str | None = None
    slots: int = 1
    seq: float = 0.0  # queue position: lower runs first (``-u`` and ``-U`` edit it)
    queue: str | None = None  # --queue: the named queue whose slots it takes (None: default)
    # Output
    store_output: bool = True  # False for -n
    stderr_apart: bool = False  # -E
    gzip: bool = False  # -z
    log_name: str | None = None  # -O
    log_path: str | None = None
    mail: bool = False  # -m
    # Dependencies: -D (after these end) and -W (after these end with exit 0)
    after: list[int] = field(default_factory=list)
    after_ok: list[int] = field(default_factory=list)
    dep_outcomes: dict[int, bool] = field(default_factory=dict)  # of dependencies since removed
    # GPUs
    gpus: int = 0
    gpu_indices: list[int] | None = None
    gpu_mem_mib: int | None = None
    assigned_gpus: list[int] = field(default_factory=list)
    # Time limit (--time): killed when still running this many seconds after its start
    time_limit: int | None = None
    begin_at: float | None = None  # --begin: not started before this time (seconds since the epoch)
    paused_at: float | None = None  # when its current pause began (--pause)
    paused_for: float = 0.0  # seconds spent paused in earlier pauses: the time limit skips them
    timed_out: bool = False  # the limit was reached: it ends as TIMEOUT, however it exits
    retry_timeout: bool = False  # --retry-timeout: a timed-out attempt is retried too
    gpu_free_at_start: int | None = None  # MiB free on the least free of its GPUs when placed
    oom_free_mib: int | None = None  # ran out of GPU memory: a retry waits for this much free
    # Times (seconds since the epoch) and outcome
    enqueue_time: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    pid: int | None = None  # the job's process (and process group) id
    shim_pid: int | None = None  # the supervising process that records its exit status
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""  # why it is skipped, lost, or still waiting
    env_info: str | None = None  # output of TS_ENV at enqueue time
    # Experiment workflows
    priority: int = 0  # higher runs first; first in, first out within a level
    max_retries: int = 0  # --retry: extra attempts after a non-zero exit
    attempt: int = 1  # the current (or last) attempt, 1-based; the job sees it as TS_ATTEMPT
    attempts: list[dict[str, Any]] = field(default_factory=list)  # earlier attempts' outcomes
    killed: bool = False  # ended by ts -k/-T: no retry
    args: dict[str, Any] | None = None  # --arg/--args/sweep arguments, exported as TS_ARGS
    sweep: str | None = None  # name of the sweep it belongs to
    skip_if_exists: str | None = None  # a marker path: skip the job if it exists when due to start
    snapshot: str | None = None  # directory holding the code snapshot the job runs in
    snapshot_info: str | None = None  # what the snapshot is of (git commit, dirty or not)
    result: Any = None  # JSON the job wrote to $TS_RESULT_FILE
    token: str | None = None  # its submission's token, kept while a repeat may come (table)
    # Notification when it ends (--notify, TS_NOTIFY_URL; TS_NOTIFY_ON: "fail" or "end")
    notify_url: str | None = None
    notify_on: str = "fail"
    notify_status: str | None = None  # delivered, or why not
    # The slurm backend: the token in --comment (recorded before sbatch runs), the SLURM id
    # once known ("123", or "123_4" for task 4 of a job array) and what squeue last said
    slurm_token: str | None = None
    slurm_task: int | None = None  # its index in a job array
    slurm_id: str | None = None
    slurm_info: dict[str, str] = field(default_factory=dict)
    # Its owner, on a multi-user daemon (None on a personal one): the uid taken from the
    # submitter's socket (SO_PEERCRED), the name for display, and the umask it runs with.
    uid: int | None = None
    user: str | None = None
    umask: int | None = None

    def transition(self, new: JobState, now: float) -> None:
        if new not in _ALLOWED[self.state]:
            raise TransitionError(f"job {self.id}: {self.state.value} -> {new.value} is not allowed")
        if self.state is JobState.PAUSED and self.paused_at is not None:
            self.paused_for += max(0.0, now - self.paused_at)
            self.paused_at = None
        if new is JobState.PAUSED:
            self.paused_at = now
        elif new is JobState.RUNNING and self.state is not JobState.PAUSED:
            self.start_time = now
            self.reason = ""
        elif new.is_done:
            self.end_time = now
        elif new is JobState.QUEUED and self.state is not JobState.ALLOCATING:
            self.start_time = self.end_time = None
            self.exit_code = self.signal = self.pid = self.shim_pid = None
            self.assigned_gpus = []
            self.killed = self.timed_out = False
            self.result = None
            self.paused_for = 0.0
            self.slurm_token = self.slurm_id = None
            self.slurm_task = None
            self.slurm_info = {}
        self.state = new

    def archive_attempt(self) -> None:
        """Keep the outcome of the attempt that just ended before the job runs again."""
        self.attempts.append(
            {
                "attempt": self.attempt,
                "exit_code": self.exit_code,
                "signal": self.signal,
                "output": self.log_path,
                "start_time": self.start_time,
                "end_time": self.end_time,
                "reason": self.reason,
            }
        )

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.FINISHED and self.exit_code == 0

    @property
    def exit_status(self) -> int:
        """What ``ts -w`` exits with: the job's exit code, 255 for a signal or a skip, 124 (as
        timeout(1)) for a job killed at its time limit."""
        if self.state is JobState.FINISHED and self.exit_code is not None:
            return self.exit_code
        return 124 if self.state is JobState.TIMEOUT else 255

    def deadline(self) -> float | None:
        """When a running job reaches its time limit (counted from its real start, without the
        time it spent paused); None while it is paused."""
        if self.time_limit is None or self.start_time is None or self.paused_at is not None:
            return None
        return self.start_time + self.time_limit + self.paused_for

    def time_left(self, now: float) -> float | None:
        """What is left of its time limit (frozen while it is paused)."""
        if self.time_limit is None or self.start_time is None:
            return None
        used = (self.paused_at or now) - self.start_time - self.paused_for
        return self.time_limit - used

    def why_waiting(self, now: float) -> str:
        """Why a job has not started (or the reason it ended as it did): for ``-i`` and ``-M``."""
        if self.state is JobState.HELD:
            return f"held (ts --release {self.id})"
        if self.state.is_waiting and self.begin_at is not None and self.begin_at > now:
            return f"begins at {time.strftime('%a %b %d %H:%M:%S %Y', time.localtime(self.begin_at))}"
        return self.reason

    @property
    def command_text(self) -> str:
        return display(self.command)

    def to_record(self) -> dict[str, Any]:
        record = {f.name: getattr(self, f.name) for f in _FIELDS}
        for name, default in _SPARSE.items():
            if record[name] == default:
                del record[name]  # from_record gives it back; every record is smaller
        record["state"] = self.state.value
        # msgpack map keys must be str for strict decoding
        record["dep_outcomes"] = {str(k): v for k, v in self.dep_outcomes.items()}
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """Rebuild a job; unknown keys (from a newer version) are ignored, missing ones default."""
        known = {f.name for f in _FIELDS}
        values = {k: v for k, v in record.items() if k in known}
        values["state"] = JobState(values.get("state", "queued"))
        values["dep_outcomes"] = {int(k): bool(v) for k, v in (values.get("dep_outcomes") or {}).items()}
        return cls(**values)


_FIELDS = dataclasses.fields(Job)
# Fields most jobs never use (hold, pause, --begin, queues, notifications, SLURM): left out of a
# record while they hold their default, so a job's record (and the save-list) does not grow.
_SPARSE = {
    name: getattr(Job(id=0, command=["x"], cwd="/"), name)
    for name in (
        "paused_at",
        "paused_for",
        "begin_at",
        "queue",
        "notify_url",
        "notify_on",
        "notify_status",
        "token",
        "slurm_token",
        "slurm_task",
        "slurm_id",
        "slurm_info",
        "uid",
        "user",
        "umask",
    )
}


def signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def run_time(job: Job, now: float) -> float | None:
    if job.start_time is None:
        return None
    return (job.end_time or now) - job.start_time


def job_data(job: Job, now: float) -> dict[str, Any]:
    """Every field of a job, with stable keys, for ``-M json`` and ``-M tab`` (and ``user``, its
    owner, for a multi-user daemon's jobs only)."""
    data = {
        "id": job.id,
        "state": job.state.value,
        "command": job.command_text,
        "argv": job.command,
        "label": job.label,
        "output": job.log_path,
        "stderr_output": (job.log_path + ".e") if job.log_path and job.stderr_apart else None,
        "exit_code": job.exit_code,
        "signal": signal_name(job.signal) if job.signal is not None else None,
        "exit_status": job.exit_status if job.state.is_done else None,
        "enqueue_time": job.enqueue_time,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "run_time": run_time(job, now),
        "slots": job.slots,
        "queue": job.queue or "default",
        "depends_on": job.after,
        "depends_on_success": job.after_ok,
        "gpus_requested": job.gpus,
        "gpu_indices_requested": job.gpu_indices,
        "gpus": job.assigned_gpus,
        "gpu_mem_mib": job.gpu_mem_mib,
        "time_limit": job.time_limit,
        "paused_at": job.paused_at,
        "pid": job.pid,
        "cwd": job.cwd,
        "reason": job.why_waiting(now) or None,
        "begin_at": job.begin_at,
        "priority": job.priority,
        "retries": job.max_retries,
        "attempt": job.attempt,
        "attempts": job.attempts,
        "args": job.args,
        "sweep": job.sweep,
        "skip_if_exists": job.skip_if_exists,
        "snapshot": job.snapshot,
        "snapshot_info": job.snapshot_info,
        "result": job.result,
        "slurm_id": job.slurm_id,
    }
    if job.user is not None:
        data["user"] = job.user
    return data
