"""How a job SLURM ran ends here (``slurm/ending.end_job``), table-tested in-process: its exit
status file first, SLURM's record of its exit only for a job that ran to its end."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from spooler.daemon.slurm import commands
from spooler.daemon.slurm.ending import end_job
from spooler.jobs import Job, JobState


class Ends:
    """Stands in for ``events.Events``: what ``end_job`` asked for."""

    def __init__(self) -> None:
        self.ended: list[dict[str, Any]] = []

    def end(self, job: Job, state: JobState, reason: str = "", **how: Any) -> None:
        self.ended.append({"state": state, "reason": reason, "code": how.get("code"), "sig": how.get("sig")})


def verdict(state: str, exit_code: str = "") -> commands.Verdict:
    """What sacct or scontrol would say: the state and ``ExitCode``."""
    code, sig = commands.parse_exit_code(exit_code)
    seen = commands.verdict(state)
    return commands.Verdict(seen.state, seen.ended, seen.reason, seen.cancelled, code, sig)


@pytest.mark.parametrize(
    ("seen", "status", "was", "ends"),
    [
        # The status file wins over SLURM's record.
        (verdict("FAILED", "1:0"), "5", JobState.RUNNING, (JobState.FINISHED, 5, None)),
        # No status file: SLURM's record, for a job that ran to its end.
        (verdict("FAILED", "3:0"), None, JobState.RUNNING, (JobState.FINISHED, 3, None)),
        (verdict("COMPLETED", "0:0"), None, JobState.RUNNING, (JobState.FINISHED, 0, None)),
        (verdict("FAILED", "0:9"), None, JobState.RUNNING, (JobState.FINISHED, None, signal.SIGKILL)),
        (verdict("FAILED"), None, JobState.RUNNING, (JobState.FINISHED, None, None)),
        # Cancelled or lost is no success, whatever "0:0" says.
        (verdict("CANCELLED", "0:0"), None, JobState.ALLOCATING, (JobState.SKIPPED, None, None)),
        (verdict("CANCELLED", "0:0"), None, JobState.RUNNING, (JobState.FINISHED, None, signal.SIGTERM)),
        (verdict("CANCELLED", "0:15"), None, JobState.RUNNING, (JobState.FINISHED, None, signal.SIGTERM)),
        (verdict("NODE_FAIL", "0:0"), None, JobState.RUNNING, (JobState.LOST, None, None)),
        (verdict("OUT_OF_MEMORY", "0:125"), None, JobState.RUNNING, (JobState.LOST, None, None)),
        (verdict("TIMEOUT", "0:0"), None, JobState.RUNNING, (JobState.FINISHED, None, signal.SIGTERM)),
    ],
)
def test_how_a_job_ends(
    tmp_path: Path, seen: commands.Verdict, status: str | None, was: JobState, ends: tuple[Any, ...]
) -> None:
    job = Job(id=1, command=["x"], cwd="/", state=was)
    path = tmp_path / "log.exit"
    if status is not None:
        path.write_text(status + "\n")
    events = Ends()
    end_job(events, job, seen, str(path), start=1.0, end=2.0)  # type: ignore[arg-type]
    (ended,) = events.ended
    assert (ended["state"], ended["code"], ended["sig"]) == ends, ended


def test_a_lost_job_with_a_retry_left_is_retried_not_a_success(tmp_path: Path) -> None:
    job = Job(id=1, command=["x"], cwd="/", state=JobState.RUNNING, max_retries=1)
    events = Ends()
    end_job(events, job, verdict("NODE_FAIL", "0:0"), str(tmp_path / "none"), start=1.0, end=2.0)  # type: ignore[arg-type]
    (ended,) = events.ended
    # Ended with a signal, not exit 0, so that the retry takes it.
    assert (ended["state"], ended["code"], ended["sig"]) == (JobState.FINISHED, None, signal.SIGTERM)
    assert "NODE_FAIL" in ended["reason"]


def test_a_signal_that_is_none_is_no_exit() -> None:
    assert commands.parse_exit_code("0:125") == (None, None)
    assert commands.parse_exit_code("0:9") == (None, 9)
    assert commands.parse_exit_code("3:0") == (3, None)
