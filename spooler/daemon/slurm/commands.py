"""SLURM's command-line tools, as data: the arguments we give them and what we read back.

Pure: nothing here runs a process, so every rule is table-tested in-process against output
captured from a real cluster (``tests/test_slurm_commands.py``).  The forms parsed are the ones
SLURM keeps stable across releases (20.11 to 25.x): ``sbatch --parsable``, ``squeue -h -o`` with
an explicit format, ``sacct -X -n -P`` and ``scontrol -o show job``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from spooler.daemon.config_file import SlurmConfig
from spooler.daemon.slurm.tools import Result
from spooler.jobs import Job, JobState

TOKEN_PREFIX = "ts:"  # our jobs carry "ts:<token>" in --comment: how a new daemon finds them

# squeue: one line per job, one per array task (-r), the comment last since others' may hold "|".
SQUEUE_FIELDS = (
    "id",
    "array_job",
    "state",
    "reason",
    "partition",
    "nodes",
    "gres",
    "start",
    "end",
    "comment",
)
SQUEUE_FORMAT = "%i|%F|%T|%r|%P|%N|%b|%S|%e|%k"
SACCT_FIELDS = ("JobID", "State", "ExitCode", "Reason")


@dataclass(frozen=True)
class Request:
    """What one ``sbatch`` call asks for: a job, or a job array of ``tasks`` runs."""

    name: str
    cwd: str
    output: str  # may hold %a (the array task index)
    error: str | None = None
    gpus: int = 0
    cpus: int = 1
    time_limit: int | None = None  # seconds
    after_any: tuple[str, ...] = ()  # SLURM ids
    after_ok: tuple[str, ...] = ()
    token: str = ""
    tasks: int | None = None  # a job array of this many tasks
    throttle: int | None = None  # at most this many tasks at once
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra_args: tuple[str, ...] = ()


def sbatch_args(req: Request, *, test_only: bool = False) -> list[str]:
    """The ``sbatch`` command line; the batch script goes to its standard input."""
    args = ["sbatch", "--test-only" if test_only else "--parsable"]
    # --no-requeue: SLURM never reruns a job on its own (after a node failure, say): a rerun is
    # our --retry's, so every run ends here once.
    args += [f"--job-name={req.name}", f"--chdir={req.cwd}", "--export=ALL", "--no-requeue"]
    args += [f"--output={req.output}", f"--error={req.error or req.output}"]
    if req.gpus:
        args.append(f"--gres=gpu:{req.gpus}")
    if req.cpus > 1:
        args.append(f"--cpus-per-task={req.cpus}")
    if req.time_limit:
        args.append(f"--time={format_time(req.time_limit)}")
    dependency = dependency_arg(req.after_any, req.after_ok)
    if dependency:
        args.append(f"--dependency={dependency}")
    if req.token:
        args.append(f"--comment={TOKEN_PREFIX}{req.token}")
    if req.tasks is not None:
        throttle = f"%{req.throttle}" if req.throttle else ""
        args.append(f"--array=0-{req.tasks - 1}{throttle}")
    for flag, value in (("partition", req.partition), ("account", req.account), ("qos", req.qos)):
        if value:
            args.append(f"--{flag}={value}")
    args += req.extra_args
    return args


def request_of(
    job: Job,
    config: SlurmConfig,
    output: str,
    token: str = "",
    deps: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
) -> Request:
    """What ``sbatch`` is asked for a job (the output given: a path, ``%a`` for an array's)."""
    return Request(
        name=job.label or job.sweep or "ts",
        cwd=job.cwd,
        output=output,
        error=output + ".e" if job.stderr_apart and job.store_output else None,
        gpus=job.gpus,
        cpus=job.slots,
        time_limit=job.time_limit,
        after_any=deps[0],
        after_ok=deps[1],
        token=token,
        partition=config.partition,
        account=config.account,
        qos=config.qos,
        extra_args=tuple(config.extra_args),
    )


def format_time(seconds: int) -> str:
    """SLURM's ``days-hours:minutes:seconds`` (it rounds up to whole minutes itself)."""
    days, rest = divmod(max(1, int(seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def dependency_arg(after_any: tuple[str, ...], after_ok: tuple[str, ...]) -> str:
    parts = []
    if after_any:
        parts.append("afterany:" + ":".join(after_any))
    if after_ok:
        parts.append("afterok:" + ":".join(after_ok))
    return ",".join(parts)


def parse_sbatch(stdout: str) -> str:
    """The job id ``sbatch --parsable`` printed (``id`` or ``id;cluster``)."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id ({stdout.strip()[:200]!r})")
    return job_id


def error_line(stderr: str, default: str = "failed") -> str:
    """The one line worth showing of a SLURM tool's complaint."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error:" in line or "failure:" in line:
            text = line.split("error:", 1)[-1] if "error:" in line else line
            return text.strip()
    return lines[-1] if lines else default


_UNREACHABLE = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "communication connection failure",
    "slurm_load_jobs error: unable to contact",
    "could not establish a configuration source",
)


def controller_unreachable(stderr: str) -> bool:
    text = stderr.lower()
    return any(marker in text for marker in _UNREACHABLE)


def unanswered(result: Result) -> bool:
    """The tool got no answer from the controller (it timed out, or could not reach it): the
    question is still open, nothing is to be concluded from it."""
    return result.timed_out or (result.returncode != 0 and controller_unreachable(result.stderr))


def job_unknown(result: Result) -> bool:
    """The controller does not know the job (any more): it purged it (``MinJobAge``)."""
    return result.returncode != 0 and "invalid job id" in result.stderr.lower()


@dataclass(frozen=True)
class QueueRow:
    """One line of ``squeue -h -r -o SQUEUE_FORMAT``."""

    id: str  # "123", or "123_4" for a task of a job array
    array_job: str  # the id of the array's own job for a task, else the job id
    state: str
    reason: str
    partition: str
    nodes: str
    gres: str
    start: str  # when it started (or, while it is pending, is expected to)
    end: str
    comment: str

    @property
    def token(self) -> str | None:
        return self.comment[len(TOKEN_PREFIX) :] if self.comment.startswith(TOKEN_PREFIX) else None


def parse_squeue(stdout: str) -> list[QueueRow]:
    rows = []
    for line in stdout.splitlines():
        parts = line.split("|", len(SQUEUE_FIELDS) - 1)
        if len(parts) != len(SQUEUE_FIELDS):
            continue  # a warning line, not a job
        values = ["" if p in ("(null)", "N/A") else p.strip() for p in parts]
        rows.append(QueueRow(*values))
    return rows


def timestamp(text: str) -> float | None:
    """SLURM's local time ``2026-12-02T14:25:18`` as seconds since the epoch."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None  # "N/A", "Unknown", ""


@dataclass(frozen=True)
class AccountRow:
    """One line of ``sacct -X -n -P -o JobID,State,ExitCode,Reason``."""

    id: str
    state: str  # the first word: "CANCELLED by 0" is CANCELLED
    exit_code: int | None
    signal: int | None
    reason: str


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """SLURM's ``code:signal``."""
    match = re.fullmatch(r"\s*(\d+):(\d+)\s*", text)
    if not match:
        return None, None
    code, sig = int(match.group(1)), int(match.group(2))
    if sig > 64:  # not a signal (SLURM writes 0:125 for a job killed out of memory)
        return None, None
    return (None, sig) if sig else (code, None)


def parse_sacct(stdout: str) -> list[AccountRow]:
    rows = []
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        code, sig = parse_exit_code(parts[2])
        reason = parts[3] if len(parts) > 3 else ""
        state = parts[1].split()[0] if parts[1].split() else ""
        rows.append(AccountRow(parts[0].strip(), state, code, sig, "" if reason == "None" else reason))
    return rows


_SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")


def parse_scontrol(stdout: str) -> list[dict[str, str]]:
    """``scontrol -o show job``: one job per line, ``Key=value`` pairs (a value may hold spaces)."""
    jobs = []
    for line in stdout.splitlines():
        keys = list(_SCONTROL_KEY.finditer(line))
        if not keys:
            continue
        fields = {}
        for match, after in zip(keys, [*keys[1:], None], strict=True):
            end = after.start() if after is not None else len(line)
            fields[match.group(1)] = line[match.end() : end].strip()
        jobs.append(fields)
    return jobs


def allocated_gpus(scontrol_detail: dict[str, str]) -> str:
    """The GPU indices of ``scontrol -d``'s ``GRES=gpu:2(IDX:0-1)``: "0-1"; "" if none."""
    match = re.search(r"\(IDX:([^)]*)\)", scontrol_detail.get("GRES", ""))
    return match.group(1) if match else ""


# -- states ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What a SLURM state means for our job."""

    state: JobState  # ALLOCATING (waiting in SLURM), RUNNING, or the done state it ends in
    ended: bool = False
    reason: str = ""
    cancelled: bool = False  # scancel'ed: how it ends depends on who cancelled it
    # SLURM's record of its exit (sacct, scontrol ExitCode): for a job whose batch script wrote
    # no exit status (it was killed first)
    code: int | None = None
    sig: int | None = None


_WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
_LOST = {
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "it was preempted",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "it reached its deadline",
    "OUT_OF_MEMORY": "it ran out of memory",
    "REVOKED": "it was revoked by a sibling cluster",
}


def verdict(slurm_state: str, reason: str = "") -> Verdict:
    """Our state for SLURM's: waiting, running, or ended (and how)."""
    state = slurm_state.split()[0].rstrip("+") if slurm_state.split() else ""
    if state in _WAITING:
        return Verdict(JobState.ALLOCATING, reason=reason)
    if state in _RUNNING:
        return Verdict(JobState.RUNNING, reason="" if state == "RUNNING" else state.lower())
    if state in ("COMPLETED", "FAILED", "SPECIAL_EXIT"):
        return Verdict(JobState.FINISHED, ended=True)
    if state == "TIMEOUT":
        return Verdict(JobState.TIMEOUT, ended=True, reason="reached its time limit in SLURM")
    if state == "CANCELLED":
        return Verdict(JobState.FINISHED, ended=True, cancelled=True)
    if state in _LOST:
        return Verdict(JobState.LOST, ended=True, reason=f"SLURM: {_LOST[state]} ({state})")
    return Verdict(JobState.LOST, ended=True, reason=f"SLURM state {state or 'unknown'}")
