"""``ts --watch``: a live view of the queue (placeholder replaced by the live view module)."""

from __future__ import annotations

from spooler.cli.parse import Invocation
from spooler.errors import SpoolerError


def watch(inv: Invocation) -> int:
    raise SpoolerError("--watch is not available yet")
