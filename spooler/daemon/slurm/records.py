"""Ends the batch script's exit status cannot tell: SLURM's own record of how the job ended.

The exit status file is the rule (``script``); this module covers what it misses:

- a job SLURM says ended with no status file to read: on a shared file system the file may
  show a moment later, so it is waited for (``STATUS_GRACE``); then ``scontrol -o show job``
  gives SLURM's ``ExitCode`` (a batch script killed by a signal before it could write: ``0:9``),
  or, if the controller has purged the job meanwhile, the next case does;
- a job gone from ``squeue`` (SLURM forgets ended jobs after ``MinJobAge``, or a daemon was
  down longer than that): its status file if there is one, else accounting (``sacct``) where
  it is on; a job accounting still has running was only missed by ``squeue``, and is watched
  again (for a while: accounting keeps "runaway" jobs the controller has forgotten); one nobody
  knows any more is lost.

Each lookup runs off the daemon's loop, one at a time per job, and its answer is for the attempt
that asked: a job retried meanwhile (a new SLURM job) is not ended by its old attempt's record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from spooler.daemon.slurm import commands
from spooler.daemon.slurm.script import read_status
from spooler.daemon.slurm.tools import Result, Tools
from spooler.jobs import Job, JobState

STATUS_GRACE = 10.0  # seconds an ended job's exit status may take to show on a shared file system
RUNAWAY_LOOKUPS = 5  # sacct answers of "still running" for a job squeue no longer lists, at most

# end(job, how it ended, when SLURM started it, when it ended), as SlurmBackend._end
End = Callable[[Job, commands.Verdict, "float | None", "float | None"], None]
# A lookup's job and attempt: (our id, attempt, SLURM id)
Asked = tuple[int, int, "str | None"]


class Records:
    def __init__(
        self,
        tools: Tools,
        clock: Callable[[], float],
        status_path: Callable[[Job], str],
        watched: Callable[[Job], bool],
        end: End,
        absent: Callable[[Job], bool],
        missed: Callable[[Job], None],
    ) -> None:
        self.tools = tools
        self.clock = clock
        self.status_path = status_path
        self.watched = watched  # is the job still ours to end (not ended meanwhile)?
        self.end = end
        self.absent = absent  # do the last squeue calls still miss it?
        self.missed = missed  # squeue missed a job SLURM still has: count its absence anew
        self._asking: set[Asked] = set()  # lookups under way
        self._no_status_since: dict[int, float] = {}  # ended, exit status not visible yet
        self._still_running: dict[int, int] = {}  # not in squeue, running says accounting

    def forget(self, job: Job) -> None:
        self._no_status_since.pop(job.id, None)
        self._still_running.pop(job.id, None)

    def listed(self, job: Job) -> None:
        """squeue lists the job (again)."""
        self._still_running.pop(job.id, None)

    def _ask(self, job: Job) -> Asked | None:
        asked = (job.id, job.attempt, job.slurm_id)
        if asked in self._asking:
            return None
        self._asking.add(asked)
        return asked

    def _answered(self, job: Job, asked: Asked) -> bool:
        """The lookup is over; True if its answer is still for the job as it is now."""
        self._asking.discard(asked)
        return self.watched(job) and (job.id, job.attempt, job.slurm_id) == asked

    # -- ended in squeue, no exit status ---------------------------------------------------------

    def put_off(self, job: Job, seen: commands.Verdict, start: float | None, end: float | None) -> bool:
        """True while the end of a job SLURM says finished waits for its exit status: the file
        (for ``STATUS_GRACE``), then SLURM's record of it."""
        if seen.state is not JobState.FINISHED or seen.cancelled:
            return False
        if read_status(self.status_path(job)) is not None:
            return False
        first = self._no_status_since.setdefault(job.id, self.clock())
        if self.clock() - first < STATUS_GRACE:
            return True
        asked = self._ask(job)
        if asked is not None:
            argv = ["scontrol", "-o", "show", "job", job.slurm_id or ""]
            self.tools.run(argv, lambda result: self._shown(job, asked, seen, start, end, result))
        return True

    def _shown(
        self,
        job: Job,
        asked: Asked,
        seen: commands.Verdict,
        start: float | None,
        end: float | None,
        result: Result,
    ) -> None:
        if not self._answered(job, asked):
            return
        if commands.unanswered(result):
            return  # asked again at the next poll that sees the job ended
        if commands.job_unknown(result):
            # Purged since squeue listed it: squeue will miss it next, and accounting (where it
            # is on) has its record (see missing).
            return
        shown = commands.parse_scontrol(result.stdout) if result.returncode == 0 else []
        # One line for one job (a task of an array is asked for by its own id).
        code, sig = (None, None)
        if len(shown) == 1:
            code, sig = commands.parse_exit_code(shown[0].get("ExitCode", ""))
        self.end(job, dataclasses.replace(seen, code=code, sig=sig), start, end)

    # -- gone from squeue ------------------------------------------------------------------------

    def missing(self, job: Job) -> bool:
        """A job several squeue calls in a row did not list (True if it ended at once)."""
        if read_status(self.status_path(job)) is not None:
            self.end(job, commands.verdict("COMPLETED"), None, None)
            return True
        if job.killed or job.timed_out:
            # We cancelled it: a pending task of a job array leaves no record when cancelled.
            self.end(job, commands.verdict("CANCELLED"), None, None)
            return True
        asked = self._ask(job)
        if asked is not None:
            fields = ",".join(commands.SACCT_FIELDS)
            argv = ["sacct", "-X", "-n", "-P", "-o", fields, "-j", job.slurm_id or ""]
            self.tools.run(argv, lambda result: self._accounted(job, asked, result))
        return False

    def _accounted(self, job: Job, asked: Asked, result: Result) -> None:
        if not self._answered(job, asked) or not self.absent(job):
            return  # ended meanwhile, or listed by squeue again
        if commands.unanswered(result):
            return  # asked again at the next poll
        rows = [r for r in commands.parse_sacct(result.stdout) if r.id == job.slurm_id]
        if result.returncode == 0 and rows:
            row = rows[-1]
            seen = commands.verdict(row.state, row.reason)
            if seen.ended:
                self.end(job, dataclasses.replace(seen, code=row.exit_code, sig=row.signal), None, None)
                return
            times = self._still_running[job.id] = self._still_running.get(job.id, 0) + 1
            if times < RUNAWAY_LOOKUPS:
                self.missed(job)  # SLURM has it still, says accounting: squeue only missed it
                return
            why = f"accounting says {row.state.lower()}, but SLURM's controller no longer lists it"
        else:
            why = "it is no longer in SLURM"
        self.end(job, commands.Verdict(JobState.LOST, ended=True, reason=why), None, None)
