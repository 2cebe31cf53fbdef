"""Parse a ``ts`` command line the way the original's getopt does.

Options come first and may be clustered (``-nf``, ``-L lab``, ``-Llab``); the first word that is
not an option starts the command, so ``ts python train.py -l 3`` passes ``-l 3`` to python.

A hand-written parser instead of click: this runs on every ``ts`` call, and importing click
alone costs about three times an interpreter's start-up, more than our whole latency budget.
"""

from __future__ import annotations

import os

from spooler.cli.options import LONG, SHORT, Option
from spooler.errors import UsageError

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from spooler.protocol import requests as rq

GPU_LIST = Option("g", None, "action", "gpu_list", "none", "list jobs running on GPUs")


class Invocation:
    """What one ``ts`` call asks for: an action with its argument, job options, a command."""

    def __init__(self) -> None:
        self.action = ""
        self.action_option = ""
        self.value: str | None = None
        self.job: dict[str, Any] = {}
        self.filters: dict[str, Any] = {}
        self.results: dict[str, str] = {}  # --sort, --best, --format
        self.daemon: dict[str, Any] = {}  # --multi-user, --socket
        self.list_format = "default"
        self.command: list[str] = []

    def set_action(self, option: Option, value: str | None) -> None:
        name = option.dest
        if option.short == "M":
            self.list_format = value or "default"
        if self.action and self.action != name:
            raise UsageError(f"{self.action_option} and {option.names} cannot be used together")
        self.action, self.action_option, self.value = name, option.names, value


def _takes_value(option: Option, following: str | None) -> bool:
    if following is None:
        return False
    if option.arg in ("str", "multi"):
        return True
    if option.arg in ("id", "int?"):
        return not following.startswith("-") or following[1:].isdigit()
    if option.arg == "count?":
        return following.isdigit()
    if option.arg == "ids?":
        return all(part.isdigit() for part in following.split(","))
    return False


def _apply(inv: Invocation, option: Option, value: str | None) -> None:
    if option.arg == "ids?" and value is None:
        inv.set_action(GPU_LIST, None)
    elif option.arg == "count?" and value is None:
        inv.job[option.dest] = "1"
    elif option.kind == "action":
        inv.set_action(option, value)
    else:
        target = {"filter": inv.filters, "results": inv.results, "daemon": inv.daemon}.get(
            option.kind, inv.job
        )
        if option.arg == "none":
            target[option.dest] = True
        elif option.arg == "multi":
            target.setdefault(option.dest, []).append(value)
        else:
            target[option.dest] = value


def parse(argv: list[str], nested: bool = False) -> Invocation:
    """``nested``: only read the words (those after ``results``); the caller checks them."""
    inv = Invocation()
    i = 0
    while i < len(argv):
        word = argv[i]
        following = argv[i + 1] if i + 1 < len(argv) else None
        if word == "--":
            i += 1
            break
        if word.startswith("--"):
            name, eq, attached = word[2:].partition("=")
            option = LONG.get(name)
            if option is None:
                raise UsageError(f"unknown option --{name} (ts -h lists them)")
            value: str | None = attached if eq else None
            if not eq and _takes_value(option, following):
                value = following
                i += 1
            if option.arg in ("str", "multi") and value is None:
                raise UsageError(f"--{name} needs a value ({option.metavar})")
            if option.arg == "none" and eq:
                raise UsageError(f"--{name} takes no value")
            _apply(inv, option, value)
            i += 1
            continue
        if not word.startswith("-") or word == "-":
            break
        j = 1
        while j < len(word):
            letter = word[j]
            option = SHORT.get(letter)
            if option is None:
                raise UsageError(f"unknown option -{letter} (ts -h lists them)")
            rest = word[j + 1 :]
            if option.arg == "none":
                _apply(inv, option, None)
                j += 1
                continue
            if rest:
                value = rest
            elif _takes_value(option, following):
                value = following
                i += 1
            elif option.arg in ("str", "multi"):
                raise UsageError(f"-{letter} needs a value ({option.metavar})")
            else:
                value = None
            _apply(inv, option, value)
            break
        i += 1
    inv.command = argv[i:]
    if nested:
        return inv
    ended_options = i > 0 and argv[i - 1] == "--"
    if not inv.action and inv.command[:1] == ["sweep"] and not ended_options:
        _sweep(inv)
    elif not inv.action and inv.command[:1] == ["results"] and not ended_options:
        _results(inv)
    elif not inv.action and "priority" in inv.job and len(inv.command) == 1 and inv.command[0].isdigit():
        # ts --priority N ID: change a queued job's priority (queue the command ``5`` with ts -- 5)
        inv.action, inv.action_option, inv.value = "set_priority", "--priority", inv.command[0]
        inv.command = []
    elif not inv.action and inv.job.get("hold") and not ended_options:
        _hold_action(inv)
    if inv.job.get("cascade") and inv.action != "requeue":
        raise UsageError("--cascade goes with --requeue")
    if inv.action == "edit" and set(inv.filters) <= {"label"} and "label" in inv.filters:
        inv.job["label"] = inv.filters.pop("label")  # ts --edit ID --label L: the new label
    if "queue" in inv.job and inv.action in FILTERED and not inv.command and "batch" not in inv.job:
        inv.filters["queue"] = inv.job.pop("queue")  # -l --queue NAME: a filter, not a job's queue
    if "last" in inv.filters and inv.action not in ("", "list"):
        raise UsageError("--last goes with -l (ts -l --last 20)")
    if inv.daemon and inv.action != "daemon":
        raise UsageError("--multi-user and --socket go with --daemon")
    if inv.filters and inv.action not in FILTERED:
        raise UsageError(f"{inv.action_option} does not take --state, --label, --sweep or --where")
    if inv.action == "watch" and set(inv.results) - {"best"}:
        raise UsageError("--watch takes filters and --best, not --sort or --format")
    if inv.results and inv.action not in ("results", "watch"):
        raise UsageError(
            "--sort, --best and --format go with ts results (ts results --sweep NAME --sort FIELD)"
        )
    if inv.filters and not inv.action and not inv.command:
        inv.action = "list"
    if inv.filters and not inv.action:
        raise UsageError(
            "filters (--state, --label, --sweep, --where, --queue) go with -l, -r, -k, --requeue, --hold,"
            " --release, --pause, --resume, --wait-all, --watch or ts results"
        )
    if inv.action == "list" and inv.list_format not in ("default", "json", "tab"):
        raise UsageError(f"unknown list format {inv.list_format!r}: choose default, json or tab")
    if inv.action and inv.command:
        raise UsageError(f"{inv.action_option} does not take a command ({' '.join(inv.command)[:40]!r})")
    if not inv.action:
        inv.action = "enqueue" if inv.command or "batch" in inv.job else "list"
    return inv


# The actions that take filters instead of one job id.
FILTERED = (
    "",
    "list",
    "results",
    "watch",
    "remove",
    "kill",
    "requeue",
    "hold",
    "release",
    "pause",
    "resume",
    "wait_all",
)


def _hold_action(inv: Invocation) -> None:
    """``ts --hold ID`` (or with filters, or alone: the last added job) holds a queued job;
    ``ts --hold CMD...`` queues a command held.  (Queue the command ``5`` held with ts --hold -- 5.)"""
    words = inv.command
    if words and not (len(words) == 1 and words[0].isdigit()):
        return
    inv.action, inv.action_option = "hold", "--hold"
    inv.value = words[0] if words else None
    inv.command = []
    del inv.job["hold"]


def _sweep(inv: Invocation) -> None:
    """``ts [options] sweep [options] FILE [options]``: options may come anywhere around the file."""
    words = inv.command[1:]
    before = parse(words) if words else Invocation()
    after = parse(before.command[1:]) if len(before.command) > 1 else Invocation()
    for part in (before, after):
        if part.action not in ("", "enqueue", "list") or part.filters:
            raise UsageError("ts sweep takes queueing options, --dry-run and one sweep file")
    if not before.command or after.command:
        raise UsageError("usage: ts sweep [options] FILE [options] (a TOML or JSON sweep file)")
    inv.job.update(before.job)
    inv.job.update(after.job)
    inv.action, inv.action_option, inv.value, inv.command = "sweep", "sweep", before.command[0], []


def _results(inv: Invocation) -> None:
    """``ts [filters] results [filters] [--sort F] [--best F] [--format F]``."""
    after = parse(inv.command[1:], nested=True) if len(inv.command) > 1 else Invocation()
    if after.action == "help":  # ts results -h: the usage, which has a section on ts results
        inv.action, inv.action_option, inv.command = "help", after.action_option, []
        return
    if after.command:
        raise UsageError(
            f"ts results takes filters, --sort, --best, --format and --ids, not {after.command[0]!r}"
        )
    for given in (inv, after):  # --queue NAME is a filter here, as with -l
        if set(given.job) == {"queue"}:
            given.filters["queue"] = given.job.pop("queue")
    if after.action not in ("", "list") or inv.job or after.job or after.list_format != "default":
        raise UsageError("ts results takes filters, --sort, --best, --format and --ids only")
    inv.filters.update(after.filters)
    inv.results.update(after.results)
    fmt = inv.results.get("format", "table")
    if fmt not in ("table", "csv", "json", "markdown"):
        raise UsageError(f"--format: unknown format {fmt!r}: choose table, csv, json or markdown")
    inv.action, inv.action_option, inv.value, inv.command = "results", "results", None, []


def filter_of(inv: Invocation) -> rq.Filter | None:
    """The filter of a request (-l, ts results, --watch and the actions on many jobs), if the
    command line has one."""
    from spooler.protocol import requests as rq

    given = inv.filters
    if not any(key not in ("ids_only", "last") for key in given):
        return None
    states = [s.strip() for s in given.get("states", "").split(",") if s.strip()]
    user = given.get("user")
    if given.get("mine"):
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
    return rq.Filter(
        states=states,
        label=given.get("label"),
        sweep=given.get("sweep"),
        where=given.get("where"),
        queue=given.get("queue"),
        user=user,
    )


def job_id(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise UsageError(f"{option}: {value!r} is not a job id")
    return int(value)


def id_list(value: str, option: str) -> list[int]:
    """``1,2,3`` for -D and -W."""
    words = value.split(",")
    if not value or any(not w.strip().isdigit() for w in words):
        raise UsageError(f"{option}: {value!r} is not a comma-separated list of job ids")
    return [int(w) for w in words]


def positive(value: str | None, option: str) -> int:
    if value is None or not value.isdigit() or int(value) < 1:
        raise UsageError(f"{option}: {value!r} is not a positive whole number")
    return int(value)
