"""What a user sees of another user's job on a multi-user daemon: its command line, state, times,
slots and GPUs, but not what may hold secrets (its arguments, result, environment, log path)."""

from __future__ import annotations

import copy

from spooler.jobs import Job


def redacted(job: Job) -> Job:
    """A copy for display only: never recorded, never acted on."""
    seen = copy.copy(job)
    seen.args = None
    seen.result = None
    seen.env_info = None
    seen.env_key = ""
    seen.log_path = None
    seen.attempts = []
    seen.notify_url = None
    seen.skip_if_exists = None
    return seen
