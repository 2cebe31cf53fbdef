"""Ends the batch script's exit status cannot tell: SLURM's own record of how the job ended.

The exit status file is the rule (``script``); this module covers what it misses:

- a job SLURM says ended with no status file to read: on a shared file system the file may
  show a moment later, so it is waited for (``STATUS_GRACE``); then ``scontrol -o show job``
  gives SLURM's ``ExitCode`` (a batch script killed by a signal before it could write: ``0:9``);
- a job gone from ``squeue`` (SLURM forgets ended jobs after ``MinJobAge``, or a daemon was
  down longer than that): its status file if there is one, else accounting (``sacct``) where
  it is on; a job accounting still has running was only missed by ``squeue``, and is watched
  again; one nobody knows any more is lost.

Each lookup runs off the daemon's loop and is asked once at a time per job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from spooler.daemon.slurm import commands
from spooler.daemon.slurm.script import read_status
from spooler.daemon.slurm.tools import Result, Tools
from spooler.jobs import Job, JobState

STATUS_GRACE = 10.0  # seconds an ended job's exit status may take to show on a shared file system

# end(job, how it ended, when SLURM started it, when it ended), as SlurmBackend._end
End = Callable[[Job, commands.Verdict, "float | None", "float | None"], None]


class Records:
    def __init__(
        self,
        tools: Tools,
        clock: Callable[[], float],
        status_path: Callable[[Job], str],
        watched: Callable[[Job], bool],
        end: End,
        missed: Callable[[Job], None],
    ) -> None:
        self.tools = tools
        self.clock = clock
        self.status_path = status_path
        self.watched = watched  # is the job still ours to end (not ended meanwhile)?
        self.end = end
        self.missed = missed  # squeue missed a job SLURM still has: count its absence anew
        self._asking: set[int] = set()  # jobs whose lookup is under way
        self._no_status_since: dict[int, float] = {}  # ended, exit status not visible yet

    def forget(self, job: Job) -> None:
        self._no_status_since.pop(job.id, None)

    # -- ended in squeue, no exit status ---------------------------------------------------------

    def put_off(self, job: Job, seen: commands.Verdict, start: float | None, end: float | None) -> bool:
        """True while the end of a job SLURM says finished waits for its exit status: the file
        (for ``STATUS_GRACE``), then SLURM's record of it."""
        if seen.state is not JobState.FINISHED or seen.cancelled:
            return False
        if read_status(self.status_path(job)) is not None:
            return False
        first = self._no_status_since.setdefault(job.id, self.clock())
        if self.clock() - first < STATUS_GRACE or job.id in self._asking:
            return True
        self._asking.add(job.id)
        argv = ["scontrol", "-o", "show", "job", job.slurm_id or ""]
        self.tools.run(argv, lambda result: self._shown(job, seen, start, end, result))
        return True

    def _shown(
        self, job: Job, seen: commands.Verdict, start: float | None, end: float | None, result: Result
    ) -> None:
        self._asking.discard(job.id)
        if not self.watched(job):
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
        if job.id not in self._asking:
            self._asking.add(job.id)
            fields = ",".join(commands.SACCT_FIELDS)
            argv = ["sacct", "-X", "-n", "-P", "-o", fields, "-j", job.slurm_id or ""]
            self.tools.run(argv, lambda result: self._accounted(job, result))
        return False

    def _accounted(self, job: Job, result: Result) -> None:
        self._asking.discard(job.id)
        if not self.watched(job):
            return
        rows = [r for r in commands.parse_sacct(result.stdout) if r.id == job.slurm_id]
        if result.returncode == 0 and rows:
            row = rows[-1]
            seen = commands.verdict(row.state, row.reason)
            if not seen.ended:
                self.missed(job)  # SLURM has it still: squeue only missed it
                return
            self.end(job, dataclasses.replace(seen, code=row.exit_code, sig=row.signal), None, None)
        elif result.returncode != 0 and commands.controller_unreachable(result.stderr):
            return  # asked again at the next poll
        else:
            gone = commands.Verdict(JobState.LOST, ended=True, reason="it is no longer in SLURM")
            self.end(job, gone, None, None)
