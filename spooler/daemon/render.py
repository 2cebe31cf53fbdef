"""Text for the user: the job list in its three formats and the ``-i`` view.

This runs in the daemon, so the client prints a string and imports nothing to format it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from spooler.commands import display
from spooler.durations import format_duration
from spooler.jobs import Job, JobState, job_data, run_time, signal_name
from spooler.text import duration

HEADERS = ("ID", "State", "Output", "E-Level", "Time", "Command")
_COLORS = {
    JobState.RUNNING: "\033[1;34m",
    JobState.QUEUED: "\033[33m",
    JobState.ALLOCATING: "\033[35m",
    JobState.HELD: "\033[36m",
    JobState.PAUSED: "\033[1;36m",
    JobState.SKIPPED: "\033[2m",
    JobState.LOST: "\033[1;31m",
    JobState.TIMEOUT: "\033[1;31m",
}
_RESET = "\033[0m"


def exit_text(job: Job) -> str:
    if job.state not in (JobState.FINISHED, JobState.TIMEOUT):
        return ""
    if job.signal is not None:
        return signal_name(job.signal)
    return "" if job.exit_code is None else str(job.exit_code)


def output_text(job: Job) -> str:
    if job.log_path:
        return job.log_path
    if not job.store_output:
        return "(none)"
    return "(skipped)" if job.state is JobState.SKIPPED else "(file)"


_CONTROL = {c: " " for c in range(32)} | {127: " "}


def state_text(job: Job) -> str:
    """The state, with SLURM's reason for a job it keeps pending (``allocating (Resources)``)."""
    if job.slurm_id and job.state is JobState.ALLOCATING and job.reason.startswith("SLURM: "):
        return f"{job.state.value} ({job.reason[len('SLURM: ') :]})"
    return job.state.value


def command_cell(job: Job) -> str:
    """One line, whatever the command holds: newlines and escape codes would break the table."""
    command = job.command
    text = command[0] if len(command) == 1 else display(command)
    if job.label:
        text = f"[{job.label}]{text}"
    return text if text.isprintable() else text.translate(_CONTROL)


def gpus_text(job: Job) -> str:
    if job.assigned_gpus:
        return ",".join(map(str, job.assigned_gpus))
    if job.gpu_indices:
        return "[" + ",".join(map(str, job.gpu_indices)) + "]"
    return f"x{job.gpus}" if job.gpus else ""


def render_list(
    jobs: Iterable[Job],
    busy: int,
    slots: int,
    now: float,
    width: int = 0,
    color: bool = False,
    show_gpus: bool = False,
    show_queue: bool = False,
    show_user: bool = False,
    show_slurm: bool = False,
) -> str:
    """The ``ts -l`` table.  ``width`` 0 (piped output) never cuts the command.

    A User column (after the id) appears on a multi-user daemon.

    A Queue column (after State) appears once named queues exist (``--queue``), and a SLURM
    column (after Time: a job's SLURM id) where some queues run their jobs in SLURM and others here.

    The GPUs column (between Time and Command, as in GPU Task Spooler) shows the GPUs a job holds,
    ``xN`` for N GPUs still to be allocated and ``[i,j]`` for ``-g`` GPUs not yet taken.

    The table is built a column at a time and each line with one ``%`` format: a list of
    100,000 jobs costs a few list comprehensions rather than a list and a handful of calls per
    row (per-row lists also woke the garbage collector, which then walked every job record).
    """
    jobs = list(jobs)
    headers = ["ID", "State", "Output", "E-Level", "Time"]
    # Waiting jobs, the bulk of a long list, skip the calls for cells they leave empty.
    columns = [
        [str(j.id) for j in jobs],
        # .value is a Python-level property, _value_ a plain slot; a job in SLURM adds its reason
        [state_text(j) if j.slurm_id else j.state._value_ for j in jobs],
        [j.log_path or output_text(j) for j in jobs],
        ["" if j.exit_code is None and j.signal is None else exit_text(j) for j in jobs],
        ["" if j.start_time is None else duration((j.end_time or now) - j.start_time) for j in jobs],
    ]
    output = 2  # the column that gives way on a narrow terminal
    if show_queue:
        headers.insert(2, "Queue")
        columns.insert(2, [j.queue or "default" for j in jobs])
        output = 3
    if show_user:
        headers.insert(1, "User")
        columns.insert(1, [j.user or "-" for j in jobs])
        output += 1
    if show_slurm:
        headers.append("SLURM")
        columns.append([j.slurm_id or ("(sbatch)" if j.slurm_token else "") for j in jobs])
    if show_gpus:
        headers.append("GPUs")
        columns.append([gpus_text(j) for j in jobs])
    widths = [
        max(len(h), max(map(len, column), default=0)) for h, column in zip(headers, columns, strict=True)
    ]
    if width:
        # Too narrow a terminal: the Output column gives way first, then the command is cut.
        spare = width - sum(widths) - 2 * len(widths) - len(f"Command [run={busy}/{slots}]")
        if spare < 0 and widths[output] > 12:
            widths[output] = max(12, widths[output] + spare)
            columns[output] = [_fit(text, widths[output]) for text in columns[output]]
    row_format = "".join(f"%-{w}s  " for w in widths) + "%s"
    header = row_format % (*headers, f"Command [run={busy}/{slots}]")
    lines = [row_format % row for row in zip(*columns, map(command_cell, jobs), strict=True)]
    if width:
        lines = [line if len(line) <= width else line[: max(width - 1, 0)] + "…" for line in lines]
    if color:
        state = 2 if show_user else 1  # the State column's index
        start = sum(widths[:state]) + 2 * state
        for i, job in enumerate(jobs):
            if job.state in _COLORS:
                line, end = lines[i], start + len(job.state.value)
                lines[i] = line[:start] + _COLORS[job.state] + line[start:end] + _RESET + line[end:]
    # Each line ends with the command cell, never empty: no padding to strip.
    return header.rstrip() + "\n" + ("\n".join(lines) + "\n" if lines else "")


def render_gpu_status(status: dict[str, Any]) -> str:
    """The GPU view: one line per GPU with its memory, whether it counts as free and its jobs."""
    if not status["gpus"]:
        return f"No GPUs ({status['kind']}): {status['reason']}\n"
    from tabulate import tabulate

    rows = [
        [
            g["index"],
            g["name"],
            f"{g['used_mib']}/{g['total_mib']} MiB",
            "yes" if g["free"] else "no",
            "yes" if g["visible"] else "no",
            _holders_cell(g),
        ]
        for g in status["gpus"]
    ]
    text = tabulate(rows, headers=["GPU", "Name", "Memory used", "Free", "Visible", "Jobs"]) + "\n"
    foreign = [(g["index"], p) for g in status["gpus"] for p in g.get("foreign_processes", ())]
    if foreign:
        lines = [
            [
                index,
                p["pid"],
                p["user"],
                "?" if p["used_mib"] is None else f"{p['used_mib']} MiB",
                p["command"],
            ]
            for index, p in foreign
        ]
        text += "\nProcesses outside this spooler:\n"
        text += tabulate(lines, headers=["GPU", "PID", "User", "Memory", "Command"]) + "\n"
    if status.get("leases"):
        text += f"\nGPU leases: {status['leases']}\n"
    return text


def render_queues(rows: list[dict[str, Any]]) -> str:
    """``ts --queues``: each queue with its slots, running and queued jobs (and, on a daemon
    that sends jobs to SLURM, how many of them SLURM keeps pending and where its jobs run)."""
    headers: tuple[str, ...] = ("Queue", "Slots", "Running", "Queued")
    table = [[str(row["name"]), str(row["slots"]), str(row["running"]), str(row["queued"])] for row in rows]
    if any("backend" in row for row in rows):
        headers += ("Pending", "Backend")  # Pending: in SLURM, not yet running
        for cells, row in zip(table, rows, strict=True):
            cells += [str(row.get("pending", 0)), str(row.get("backend", ""))]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in table]
    return "\n".join(lines) + "\n"


def _holders_cell(gpu: dict[str, Any]) -> str:
    """Who has the GPU: our jobs, other spoolers' leases, the job it is earmarked for."""
    parts = [",".join(map(str, gpu["held_by"]))] if gpu["held_by"] else []
    parts += gpu.get("held_elsewhere", [])
    if gpu.get("earmarked_for") is not None:
        parts.append(f"held for job {gpu['earmarked_for']}")
    return "; ".join(parts) or "-"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def render_json(jobs: Iterable[Job], now: float) -> str:
    return json.dumps([job_data(j, now) for j in jobs], indent=None) + "\n"


TAB_FIELDS = ("id", "state", "output", "exit_code", "signal", "run_time", "label", "gpus", "command")


def render_tab(jobs: Iterable[Job], now: float) -> str:
    lines = ["\t".join(TAB_FIELDS)]
    for job in jobs:
        data = job_data(job, now)
        cells = []
        for key in TAB_FIELDS:
            value = data[key]
            if value is None:
                cells.append("")
            elif isinstance(value, list):
                cells.append(",".join(map(str, value)))
            elif isinstance(value, float):
                cells.append(f"{value:.3f}")
            else:
                cells.append(str(value).replace("\t", " ").replace("\n", " "))
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def _when(stamp: float | None) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(stamp)) if stamp else "-"


def slurm_lines(job: Job) -> list[str]:
    info = job.slurm_info
    lines = [f"SLURM job: {job.slurm_id or '(being submitted)'}"]
    for key, title in (("state", "SLURM state"), ("partition", "Partition"), ("node", "Node")):
        if info.get(key):
            lines.append(f"{title}: {info[key]}")
    if info.get("gres"):
        lines.append(f"SLURM GPUs: {info['gres']}" + (f" (GPUs {info['gpus']})" if info.get("gpus") else ""))
    return lines


def render_info(job: Job, now: float, backend: str = "") -> str:
    """``ts -i``; ``backend``: where the job runs, said where some queues run in SLURM and
    others here."""
    if job.state in (JobState.FINISHED, JobState.TIMEOUT):
        if job.signal is not None:
            status = f"killed by signal {job.signal} ({signal_name(job.signal)})"
        else:
            status = f"died with exit code {job.exit_code}"
        if job.state is JobState.TIMEOUT:
            status = f"timed out ({status})"
    else:
        status = job.state.value
    lines = [
        f"Job: {job.id}",
        f"State: {job.state.value}",
        f"Exit status: {status}",
        f"Command: {job.command_text}",
        f"Working directory: {job.cwd}",
    ]
    if job.label:
        lines.append(f"Label: {job.label}")
    if job.queue:
        lines.append(f"Queue: {job.queue}")
    if backend:
        lines.append("Runs in: SLURM" if backend == "slurm" else "Runs in: this machine (local)")
    lines.append(f"Slots required: {job.slots}")
    if job.after:
        lines.append(f"Depends on (any result): {', '.join(map(str, job.after))}")
    if job.after_ok:
        lines.append(f"Depends on (exit code 0): {', '.join(map(str, job.after_ok))}")
    lines.append(f"Output: {output_text(job)}")
    if job.gpus or job.gpu_indices:
        if job.gpu_indices:
            wanted = f"GPUs {', '.join(map(str, job.gpu_indices))} (-g)"
        else:
            wanted = f"{job.gpus} GPU(s)"
        if job.gpu_mem_mib:
            wanted += f", sharing, {job.gpu_mem_mib} MiB each"
        lines.append(f"GPUs required: {wanted}")
        lines.append(f"GPUs assigned: {', '.join(map(str, job.assigned_gpus)) or '-'}")
    if job.time_limit:
        limit = f"Time limit: {format_duration(job.time_limit)}"
        left = job.time_left(now)
        if job.state.is_active and left is not None:
            limit += f" ({format_duration(left)} left)" if left > 0 else " (reached)"
            if job.state is JobState.PAUSED:
                limit += ", not counting while paused"
        lines.append(limit)
    if job.pid:
        lines.append(f"PID: {job.pid}")
    if job.paused_at is not None:
        lines.append(f"Paused since: {_when(job.paused_at)} (ts --resume {job.id})")
    if job.slurm_token:
        lines += slurm_lines(job)
    reason = job.why_waiting(now)
    if reason:
        lines.append(f"Reason: {reason}")
    lines += [
        f"Enqueue time: {_when(job.enqueue_time)}",
        f"Start time: {_when(job.start_time)}",
        f"End time: {_when(job.end_time)}",
        f"Time run: {duration(run_time(job, now)) or '-'}",
    ]
    if job.priority:
        lines.append(f"Priority: {job.priority}")
    if job.sweep:
        lines.append(f"Sweep: {job.sweep}")
    if job.args is not None:
        lines.append(f"Arguments: {json.dumps(job.args, sort_keys=True)}")
    if job.skip_if_exists:
        lines.append(f"Skip if exists: {job.skip_if_exists}")
    if job.snapshot:
        lines.append(f"Code snapshot: {job.snapshot} ({job.snapshot_info or 'directory copy'})")
    if job.max_retries or job.attempts:
        lines.append(f"Attempt: {job.attempt} (retries allowed: {job.max_retries})")
        for old in job.attempts:
            outcome = signal_name(old["signal"]) if old.get("signal") else f"exit {old.get('exit_code')}"
            why = f" ({old['reason']})" if old.get("reason") else ""
            lines.append(f"  attempt {old.get('attempt')}: {outcome}{why}, output {old.get('output') or '-'}")
    if job.notify_url:
        on = "every end" if job.notify_on == "end" else "failure"
        status = f": {job.notify_status}" if job.notify_status else ""
        lines.append(f"Notify: {job.notify_url} (on {on}){status}")
    if job.result is not None:
        lines.append(f"Result: {json.dumps(job.result, sort_keys=True)}")
    if job.env_info:
        lines += ["Environment (TS_ENV):", job.env_info.rstrip("\n")]
    return "\n".join(lines) + "\n"
