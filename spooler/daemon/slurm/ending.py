"""How a job SLURM ran ends here: its exit status (written by its batch script) and SLURM's
state, made into one of our ends through ``events.Events.end``.

Who cancelled a job decides how it ends: ``ts -k`` (``killed``: no retry), its ``--time`` (we
cancel it at the limit: ``timeout``) or someone else (``scancel`` by hand: the reason says so).
A job cancelled while SLURM still kept it pending never ran: it is skipped.  A job lost with its
node (or preempted) is ``lost``, with SLURM's reason, or runs again if ``--retry`` allows.
"""

from __future__ import annotations

import contextlib
import os
import signal

from spooler.daemon.events import Events
from spooler.daemon.slurm.commands import Verdict
from spooler.daemon.slurm.script import STATUS_SUFFIX, read_status
from spooler.jobs import Job, JobState


def status_path(job: Job, runs_dir: str) -> str:
    """Where the batch script writes the exit status: beside the log (or in the runs directory)."""
    if job.log_path:
        return job.log_path + STATUS_SUFFIX
    return os.path.join(runs_dir, f"slurm-{job.id}.{job.attempt}{STATUS_SUFFIX}")


def end_job(events: Events, job: Job, seen: Verdict, path: str, start: float, end: float | None) -> None:
    """``start``: when SLURM started it, if it ended between two polls (never seen running)."""
    code = read_status(path)
    killed_by: int = signal.SIGTERM
    stopped = seen.cancelled or seen.state in (JobState.TIMEOUT, JobState.LOST)
    # The script wrote nothing: SLURM's record of its exit says how it ended, but only for a job
    # that ran to its end (a cancelled or lost one is "0:0" there, which is no success), and
    # otherwise only the signal that stopped it.
    from_slurm = code is None and not stopped and (seen.code is not None or seen.sig is not None)
    if from_slurm:
        code = seen.code
    if code is None and seen.sig is not None:
        killed_by = seen.sig
    if stopped and code is not None and code > 128:
        # The script's shell saw its command die of SLURM's signal (128 + the signal): as a
        # local job killed by -k, it ended by that signal, not with an exit code.
        killed_by = code - 128
        code = None
    if seen.cancelled and code is None and job.state is JobState.ALLOCATING:
        why = "killed (ts -k) before it started" if job.killed else "cancelled in SLURM before it started"
        job.log_path = None  # SLURM never created it
        events.end(job, JobState.SKIPPED, why)
        return
    if job.state is JobState.ALLOCATING:
        job.transition(JobState.RUNNING, start)
    at = max(end, job.start_time or 0.0) if end else None
    if seen.state is JobState.LOST and job.attempt <= job.max_retries and not job.killed:
        # --retry: a run lost with its node (or preempted) goes back to the queue, as SLURM's
        # requeue would, but as a new attempt that ts -i lists with the reason.
        events.end(
            job, JobState.FINISHED, seen.reason, code=code, sig=None if code is not None else killed_by, at=at
        )
    elif seen.state is JobState.LOST:
        events.end(job, JobState.LOST, seen.reason, at=at)
    elif seen.state is JobState.TIMEOUT or (seen.cancelled and job.timed_out):
        job.timed_out = True  # ends as TIMEOUT, whatever its status
        events.end(job, JobState.FINISHED, code=code, sig=None if code is not None else killed_by, at=at)
    elif seen.cancelled and code is None:
        why = "" if job.killed else "cancelled in SLURM"
        events.end(job, JobState.FINISHED, why, sig=killed_by, at=at)
    elif code is None and from_slurm:
        why = f"killed by signal {killed_by} in SLURM before its exit status was written"
        events.end(job, JobState.FINISHED, why, sig=killed_by, at=at)
    elif code is None:
        events.end(job, JobState.FINISHED, "SLURM ran it but its exit status was never written", at=at)
    else:
        why = "its exit status is SLURM's record" if from_slurm else ""
        events.end(job, JobState.FINISHED, why, code=code, at=at)
    with contextlib.suppress(OSError):
        os.unlink(path)
