"""SLURM's own records of how a job ended (``slurm/records.Records``), tested in-process: the
tools' answers are scripted (the texts are what SLURM 22.05's tools print), the clock is ours.
The same paths run against the real controller and accounting in ``test_slurm_backend.py``."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spooler.daemon.slurm import commands
from spooler.daemon.slurm.records import RUNAWAY_LOOKUPS, STATUS_GRACE, Records
from spooler.daemon.slurm.tools import Result
from spooler.jobs import Job, JobState

PURGED = Result(1, "", "slurm_load_jobs error: Invalid job id specified\n")
UNREACHABLE = Result(1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n")
TIMED_OUT = Result(-1, "", "", timed_out=True)
FAILED = commands.verdict("FAILED")  # what squeue says of a job that ended


def shown(exit_code: str) -> Result:
    line = f"JobId=42 JobName=ts-1 JobState=FAILED Reason=NonZeroExitCode ExitCode={exit_code}"
    return Result(0, line + "\n", "")


def accounted(state: str, exit_code: str = "0:0") -> Result:
    return Result(0, f"42|{state}|{exit_code}|None\n", "")


class Tools:
    """Stands in for ``slurm.tools.Tools``: each call waits for the answer the test gives it."""

    def __init__(self) -> None:
        self.asked: list[tuple[list[str], Callable[[Result], None]]] = []

    def run(self, argv: list[str], done: Callable[[Result], None], **_: Any) -> None:
        self.asked.append((argv, done))

    def answer(self, result: Result) -> str:
        """Answer the oldest open call; the tool it called."""
        argv, done = self.asked.pop(0)
        done(result)
        return argv[0]


class Setting:
    def __init__(self, tmp_path: Path) -> None:
        self.now = 1000.0
        self.tools = Tools()
        self.ended: list[tuple[commands.Verdict, Job]] = []
        self.missed: list[int] = []
        self.listed_again = False
        self.job = Job(id=1, command=["x"], cwd="/", state=JobState.RUNNING, slurm_id="42")
        self.status = tmp_path / "1.exit"
        self.records = Records(
            self.tools,  # type: ignore[arg-type]
            clock=lambda: self.now,
            status_path=lambda job: str(self.status),
            watched=lambda job: not self.ended,
            end=lambda job, seen, start, end: self.ended.append((seen, job)),
            absent=lambda job: not self.listed_again,
            missed=lambda job: self.missed.append(job.id),
        )

    def ask_scontrol(self) -> None:
        """The job ended in squeue without a status file, and the grace for one has passed."""
        self.records.put_off(self.job, FAILED, None, None)
        self.now += STATUS_GRACE
        self.records.put_off(self.job, FAILED, None, None)

    def ended_with(self) -> tuple[JobState, int | None, int | None]:
        ((seen, _),) = self.ended
        return seen.state, seen.code, seen.sig


@pytest.fixture
def setting(tmp_path: Path) -> Setting:
    return Setting(tmp_path)


def test_an_ended_job_waits_for_its_status_file_then_asks_scontrol(setting: Setting) -> None:
    assert setting.records.put_off(setting.job, FAILED, None, None)
    assert setting.tools.asked == []  # within the grace: the file may yet show
    setting.now += STATUS_GRACE
    assert setting.records.put_off(setting.job, FAILED, None, None)
    assert setting.records.put_off(setting.job, FAILED, None, None)  # one lookup at a time
    assert setting.tools.answer(shown("0:9")) == "scontrol" and setting.tools.asked == []
    assert setting.ended_with() == (JobState.FINISHED, None, signal.SIGKILL)


def test_a_status_file_ends_the_wait(setting: Setting) -> None:
    setting.status.write_text("3\n")
    assert not setting.records.put_off(setting.job, FAILED, None, None)


@pytest.mark.parametrize("answer", [UNREACHABLE, TIMED_OUT], ids=["unreachable", "timed out"])
def test_an_unanswered_scontrol_is_asked_again(setting: Setting, answer: Result) -> None:
    setting.ask_scontrol()
    setting.tools.answer(answer)
    assert setting.ended == []
    setting.records.put_off(setting.job, FAILED, None, None)
    setting.tools.answer(shown("2:0"))
    assert setting.ended_with() == (JobState.FINISHED, 2, None)


def test_a_job_purged_while_scontrol_was_asked_gets_its_exit_from_accounting(setting: Setting) -> None:
    setting.ask_scontrol()
    setting.tools.answer(PURGED)
    assert setting.ended == []  # not "its exit status was never written"
    # The next polls no longer list it: gone from squeue.
    assert not setting.records.missing(setting.job)
    assert setting.tools.answer(accounted("FAILED", "0:9")) == "sacct"
    assert setting.ended_with() == (JobState.FINISHED, None, signal.SIGKILL)


def test_a_job_accounting_still_runs_is_watched_then_lost(setting: Setting) -> None:
    for _ in range(RUNAWAY_LOOKUPS - 1):
        setting.records.missing(setting.job)
        setting.tools.answer(accounted("RUNNING"))
    assert setting.ended == [] and setting.missed == [1] * (RUNAWAY_LOOKUPS - 1)
    setting.records.missing(setting.job)
    setting.tools.answer(accounted("RUNNING"))
    state, _, _ = setting.ended_with()
    assert state is JobState.LOST


def test_without_accounting_a_job_gone_from_squeue_is_lost(setting: Setting) -> None:
    setting.records.missing(setting.job)
    setting.tools.answer(Result(1, "", "sacct: error: Accounting storage is disabled\n"))
    state, _, _ = setting.ended_with()
    assert state is JobState.LOST


def test_an_answer_for_an_earlier_attempt_ends_nothing(setting: Setting) -> None:
    setting.records.missing(setting.job)
    setting.job.attempt += 1  # retried meanwhile: a new SLURM job
    setting.job.slurm_id = "43"
    setting.tools.answer(accounted("FAILED", "1:0"))
    assert setting.ended == []


def test_a_job_squeue_lists_again_is_not_ended_by_accounting(setting: Setting) -> None:
    setting.records.missing(setting.job)
    setting.listed_again = True
    setting.tools.answer(accounted("COMPLETED"))
    assert setting.ended == []


def test_a_job_we_cancelled_ends_cancelled_without_a_lookup(setting: Setting) -> None:
    setting.job.killed = True
    assert setting.records.missing(setting.job)
    assert setting.tools.asked == [] and setting.ended[0][0].cancelled
