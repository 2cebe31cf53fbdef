"""``ts --edit ID``: change a job that has not started.

With ``--label``/``-L`` or ``--priority``, those are sent as they are.  Otherwise the job's
command line is written to a temporary file, opened in ``$VISUAL`` or ``$EDITOR`` (``vi`` when
neither is set), and what the editor saved is checked as a command being queued is: split into
words unless it uses shell syntax (as a ``--batch`` line), and its ``%(name)`` placeholders
filled from the job's arguments.  An editor that exits non-zero, or an empty command, changes
nothing.  The daemon refuses the change if the job started meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from spooler.cli.parse import Invocation, job_id
from spooler.client import Client
from spooler.commands import from_line
from spooler.errors import SpoolerError, UsageError
from spooler.protocol.requests import Edit, Filter, JobField, List

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WAITING = ("queued", "allocating", "held")


def edit(inv: Invocation) -> int:
    target = job_id(inv.value, "--edit")
    request = Edit(id=target)
    if "label" in inv.job:
        request.label = str(inv.job["label"])
    if "priority" in inv.job:
        from spooler.cli.submit import _integer

        request.priority = _integer(inv.job["priority"], "--priority", -1_000_000)
    with Client() as client:
        if request.label is None and request.priority is None:
            job = _job(client, target)
            command = edited_command(job)
            if command is None:
                print(f"ts: job {job['id']} not changed", file=sys.stderr)
                return 0
            request.id, request.command = int(job["id"]), command
        client.call(request)
    return 0


def _job(client: Client, target: int | None) -> dict[str, Any]:
    """The job as ``-M json`` gives it (without an id: the job at the tail of the queue)."""
    if target is None:
        target = int(client.call(JobField(field="state"))["id"])
    found = json.loads(client.call(List(format="json", filter=Filter(ids=[target])))["text"])
    if not found:
        raise SpoolerError(f"job {target} does not exist")
    job: dict[str, Any] = found[0]
    if job["state"] not in _WAITING:
        raise SpoolerError(f"job {target} has started (it is {job['state']}): there is nothing to edit")
    return job


def edited_command(job: dict[str, Any]) -> list[str] | None:
    """The job's command as the user saved it in the editor; None if they left it as it was."""
    before = str(job["command"])
    with tempfile.NamedTemporaryFile("w", prefix=f"ts-edit-{job['id']}-", suffix=".sh", delete=False) as f:
        f.write(before + "\n")
        path = f.name
    try:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        # Through sh, as git runs editors: $EDITOR may carry options ("code --wait").
        done = subprocess.run(["sh", "-c", f'{editor} "$1"', editor, path], check=False)
        if done.returncode != 0:
            raise SpoolerError(f"the editor ({editor}) exited {done.returncode}: job {job['id']} not changed")
        with open(path, encoding="utf-8") as f:
            text = "\n".join(line for line in f.read().splitlines() if line.strip()).strip()
    finally:
        os.unlink(path)
    if not text:
        raise UsageError(f"the command is empty: job {job['id']} not changed")
    if text == before:
        return None
    try:
        words = from_line(text)
    except ValueError as exc:
        raise UsageError(f"{exc}: job {job['id']} not changed") from None
    if job.get("args") is not None and "%(" in text:
        from spooler.prepare import template

        words, _ = template.fill_run(words, job["args"], allow_extra=True)
    return words
