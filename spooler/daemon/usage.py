"""``ts --users``: what each user has on a shared daemon right now, and the GPU time used today."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from spooler.jobs import Job


def _midnight(now: float) -> float:
    day = time.localtime(now)
    return time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))


def gpu_hours_today(job: Job, now: float) -> float:
    """GPU-hours of the job's latest run that fall after local midnight."""
    if job.start_time is None or not job.assigned_gpus:
        return 0.0
    start = max(job.start_time, _midnight(now))
    end = job.end_time or now
    return max(0.0, end - start) * len(job.assigned_gpus) / 3600


def user_rows(jobs: Iterable[Job], now: float) -> list[dict[str, Any]]:
    """One row per user with jobs, sorted by name."""
    rows: dict[str, dict[str, Any]] = {}
    for job in jobs:
        name = job.user or "-"
        row = rows.setdefault(name, {"user": name, "running": 0, "queued": 0, "gpus": 0, "gpu_hours": 0.0})
        if job.state.is_active:
            row["running"] += 1
            row["gpus"] += len(job.assigned_gpus)
        elif job.state.is_waiting:
            row["queued"] += 1
        row["gpu_hours"] += gpu_hours_today(job, now)
    return [rows[name] for name in sorted(rows)]


def render_users(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'User':<16} {'Running':>7} {'Queued':>7} {'GPUs':>5} {'GPU-hours today':>16}"]
    for row in rows:
        counts = f"{row['running']:>7} {row['queued']:>7} {row['gpus']:>5}"
        lines.append(f"{row['user']:<16} {counts} {row['gpu_hours']:>16.2f}")
    return "\n".join(lines) + "\n"
