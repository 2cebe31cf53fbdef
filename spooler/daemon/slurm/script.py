"""The batch script that wraps a job for ``sbatch``, and where it writes the job's exit status.

The script runs the command, then writes its exit status to a file beside the log, through a
temporary file and a rename, so a reader never sees half of it.  The daemon reads that file
when SLURM says the job ended: the result never depends on ``sacct`` (accounting may be off)
or on how long the controller remembers ended jobs (``MinJobAge``).

A job array carries every task in one script: a ``case`` on ``SLURM_ARRAY_TASK_ID`` picks the
task's command and its own variables (``TS_ARGS``, ``TS_RESULT_FILE``...).  SLURM stores the
script with the job, so nothing else needs to be on a shared file system but the logs.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

STATUS_SUFFIX = ".exit"


@dataclass(frozen=True)
class Task:
    """One run: its command (``sh -c`` already applied), where its exit status goes, and the
    variables it does not share with the other tasks of its array."""

    argv: Sequence[str]
    status_path: str
    env: Mapping[str, str]
    job_id: int


def _task_lines(task: Task) -> list[str]:
    lines = []
    if task.env:
        assigned = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(task.env.items()))
        lines.append(f"export {assigned}")
    status = shlex.quote(task.status_path)
    lines += [
        f"{shlex.join(task.argv)} </dev/null",
        "s=$?",
        f'printf "%s\\n" "$s" >{status}.tmp.$$ && mv -f {status}.tmp.$$ {status}',
        'exit "$s"',
    ]
    return lines


def batch_script(tasks: Sequence[Task]) -> str:
    """The script for one job (one task) or a job array (several)."""
    head = ["#!/bin/sh", f"# spooler job{'s' if len(tasks) > 1 else ''} {_ids(tasks)}"]
    if len(tasks) == 1:
        return "\n".join([*head, *_task_lines(tasks[0])]) + "\n"
    body = ['case "$SLURM_ARRAY_TASK_ID" in']
    for index, task in enumerate(tasks):
        body.append(f"{index})")
        body += ["  " + line for line in _task_lines(task)]
        body.append("  ;;")
    body += ["esac", 'echo "spooler: no task $SLURM_ARRAY_TASK_ID in this array" >&2', "exit 127"]
    return "\n".join([*head, *body]) + "\n"


def _ids(tasks: Sequence[Task]) -> str:
    ids = [t.job_id for t in tasks]
    if len(ids) > 2 and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(map(str, ids))


def read_status(path: str) -> int | None:
    """The exit status the script wrote, or None if it has not (yet, or ever: a cancelled job)."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
