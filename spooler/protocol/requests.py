"""Every request the daemon understands, declared once for both ends of the socket.

Each class is one request type (its ``op``); its annotated attributes are its fields, checked as
``spooler.protocol.schema`` describes.  The client (``ts``, the Python API) builds them; the
daemon parses what it receives with ``Request.parse`` and dispatches on the type.  Checks that
need the daemon's state (does a job exist?) are the handlers' business.  The wire names are the
protocol's: they never change without a new PROTOCOL_VERSION.
"""

from __future__ import annotations

from spooler.durations import MAX_DURATION
from spooler.protocol import bad
from spooler.protocol.schema import REQUESTS, field
from spooler.protocol.schema import Request as Request  # the base of every request, for both ends

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

MAX_WORDS = 100_000
MAX_WORD = 1024 * 1024
MAX_ENV = 10_000
MAX_ARGS_JSON = 64 * 1024


# -- custom checks -----------------------------------------------------------------------------


def command_words(value: Any, what: str = "command") -> list[str]:
    if not isinstance(value, list) or not value:
        raise bad(f"{what} must be a non-empty list of words")
    if len(value) > MAX_WORDS:
        raise bad(f"{what} has more than {MAX_WORDS} words")
    for word in value:
        if not isinstance(word, str) or len(word) > MAX_WORD or "\0" in word:
            raise bad(f"{what} words must be strings without NUL characters")
    if not value[0].strip():
        raise bad("empty command")
    return list(value)


def _command(value: Any, name: str) -> list[str] | None:
    return command_words(value)


def _environment(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_ENV:
        raise bad(f"{name} must be a map of at most {MAX_ENV} variables")
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str) or "\0" in key + val or "=" in key:
            raise bad(f"{name} must map variable names to string values")
    return dict(value)


def _arguments(value: Any, name: str) -> dict[str, Any]:
    import json

    if not isinstance(value, dict):
        raise bad(f"{name} must be a map")
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        raise bad(f"{name} must hold JSON values only") from None
    if len(text) > MAX_ARGS_JSON:
        raise bad(f"{name} are larger than {MAX_ARGS_JSON} bytes of JSON")
    return value


def _batch(value: Any, name: str) -> list[list[str]]:
    if not isinstance(value, list) or not value:
        raise bad("batch must be a non-empty list of commands")
    return [command_words(words, f"batch line {n}") for n, words in enumerate(value, 1)]


def _items(value: Any, name: str) -> list[Item]:
    if not isinstance(value, list) or not value:
        raise bad("items must be a non-empty list")
    out = []
    for n, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise bad(f"item {n} must be a map")
        out.append(Item.parse(item, f"item {n}"))
    return out


MAX_QUEUE_NAME = 64


def queue_name(value: Any, name: str = "queue") -> str | None:
    """A queue's name: a word of at most 64 characters, without ``/``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"{name} must be a queue name")
    if (
        not value
        or len(value) > MAX_QUEUE_NAME
        or "/" in value
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise bad(f"{value[:80]!r} is not a queue name (1 to {MAX_QUEUE_NAME} characters, no '/', no spaces)")
    return value


def _named_queue(value: Any, name: str) -> str | None:
    """The queue a job goes to or whose slots are set: ``default`` (the queue without a name)
    is None."""
    checked = queue_name(value, name)
    return None if checked == "default" else checked


def url_problem(value: Any, name: str = "--notify") -> str:
    """What is wrong with a notification URL (an http(s) URL), or "" when nothing is."""
    if not isinstance(value, str) or len(value) > 2048:
        return f"{name} must be a URL of at most 2048 characters"
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.split("/")[0]:
        return f"{value[:80]!r} is not an http:// or https:// URL"
    if any(c.isspace() or not c.isprintable() for c in value):
        return f"{value[:80]!r} is not a URL (it has spaces or control characters)"
    return ""


def _url(value: Any, name: str) -> str | None:
    """Where a notification is POSTed: an http(s) URL."""
    if value is None:
        return None
    problem = url_problem(value, name)
    if problem:
        raise bad(problem)
    return str(value)


def _notify_on(value: Any, name: str) -> str:
    if value not in ("end", "fail"):
        raise bad(f"{name} must be end or fail, not {str(value)[:40]!r}")
    return str(value)


def _filter(value: Any, name: str) -> Filter | None:
    if not value:
        return None  # an empty filter selects nothing in particular: no filter
    if not isinstance(value, dict):
        raise bad("filter must be a map")
    return Filter.parse(value)


STATES = frozenset(
    {"queued", "allocating", "held", "running", "paused", "finished", "skipped", "lost", "timeout", "failed"}
)


def _states(value: Any, name: str) -> list[str]:
    if not value:
        return []
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise bad("filter states must be a list of state names")
    unknown = [s for s in value if s not in STATES]
    if unknown:
        raise bad(f"unknown state {unknown[0]!r} (choose from {', '.join(sorted(STATES))})")
    return list(value)


# -- the requests ------------------------------------------------------------------------------
# Limits shared by several requests.
_PRIORITY = 1_000_000
_PATH = 4096


class Item(Request):
    """One run of a sweep (or of ``Client.sweep``): its command, arguments and marker."""

    command: list[str] = field(check=_command)
    args: dict[str, Any] | None = field(default=None, check=_arguments)
    skip_if_exists: str | None = field(default=None, max_len=_PATH)


class Filter(Request):
    """Which jobs ``-l``, ``-r``, ``-k`` and ``--requeue`` act on; every part must hold."""

    states: list[str] = field(default_factory=list, check=_states)  # "failed" too
    label: str | None = field(default=None, max_len=1024)
    sweep: str | None = field(default=None, max_len=255)
    ids: list[int] = field(default_factory=list)
    where: str | None = field(default=None, max_len=4096)
    queue: str | None = field(default=None, check=queue_name)
    user: str | None = field(default=None, max_len=256)  # --user NAME, --mine: one owner's jobs


class Submit(Request, op="submit"):
    """Queue one job (``command``), one per line of a ``--batch`` file, or one per sweep item.

    The names are the user's (``ts`` flags, API keywords, sweep-file keys); the daemon makes
    the job's fields from them in one place (``no_output`` is ``Job.store_output`` negated,
    ``retry`` is ``Job.max_retries``).
    """

    command: list[str] | None = field(default=None, check=_command)
    batch: list[list[str]] | None = field(default=None, check=_batch)
    items: list[Item] | None = field(default=None, check=_items)
    cwd: str = field(max_len=_PATH)
    env: dict[str, str] = field(check=_environment)
    label: str | None = field(default=None, max_len=1024)
    slots: int = field(default=1, lo=1, hi=1_000_000)
    no_output: bool = field(default=False)  # -n
    stderr_apart: bool = field(default=False)  # -E
    gzip: bool = field(default=False)  # -z
    log_name: str | None = field(default=None, max_len=255)  # -O
    mail: bool = field(default=False)  # -m
    after: list[int] = field(default_factory=list)  # -D
    after_ok: list[int] = field(default_factory=list)  # -W
    after_last: bool = field(default=False)  # -d
    env_info: str | None = field(default=None, max_len=1024 * 1024)  # TS_ENV's output
    foreground: bool = field(default=False)  # -f: a second reply when the job ends
    no_block: bool = field(default=False)  # -B
    gpus: int = field(default=0, lo=0, hi=1024)  # -G
    gpu_indices: list[int] = field(default_factory=list)  # -g
    gpu_mem_mib: int | None = field(default=None, lo=1, hi=2**40)  # --gpu_mem
    priority: int = field(default=0, lo=-_PRIORITY, hi=_PRIORITY)
    retry: int = field(default=0, lo=0, hi=1000)
    retry_timeout: bool = field(default=False)  # --retry-timeout: retry an attempt that timed out
    time_limit: int | None = field(default=None, lo=1, hi=MAX_DURATION)  # --time, in seconds
    sweep: str | None = field(default=None, max_len=255)
    args: dict[str, Any] | None = field(default=None, check=_arguments)
    skip_if_exists: str | None = field(default=None, max_len=_PATH)
    snapshot: str | None = field(default=None, max_len=_PATH)
    snapshot_info: str | None = field(default=None, max_len=_PATH)
    hold: bool = field(default=False)  # --hold: queued held, started only once released
    begin_at: int | None = field(default=None, lo=0, hi=2**40)  # --begin, in seconds since the epoch
    queue: str | None = field(default=None, check=_named_queue)  # --queue NAME
    notify_url: str | None = field(default=None, check=_url)  # --notify, TS_NOTIFY_URL
    notify_on: str = field(default="fail", check=_notify_on)  # TS_NOTIFY_ON
    # Unique per submission: the daemon answers a repeat (sent again after the connection
    # dropped) with the ids it gave, instead of queueing the jobs twice.
    token: str | None = field(default=None, max_len=64)
    # The submitter's umask, which a multi-user daemon's job runs with (a personal daemon's
    # jobs inherit the daemon's, as always).
    umask: int | None = field(default=None, lo=0, hi=0o777)


class List(Request, op="list"):
    format: str | None = field(default=None, max_len=16)  # default, json or tab
    width: int = field(default=0, lo=0, hi=100_000)
    color: bool = field(default=False)
    gpu_jobs: bool = field(default=False)  # -g: only running jobs that hold GPUs
    ids_only: bool = field(default=False)
    filter: Filter | None = field(default=None, check=_filter)
    last: int | None = field(default=None, lo=1)  # --last N: only the end of the list


class Results(Request, op="results"):
    """``ts results``: the jobs the filter selects as rows of their arguments and results.

    Without ``format`` the reply carries no text, only the count and the best row (``ts
    --watch``); ``pick_best`` chooses the best field when ``best`` names none.
    """

    filter: Filter | None = field(default=None, check=_filter)
    sort: str | None = field(default=None, max_len=4096)  # FIELD, -FIELD, comma-separated
    best: str | None = field(default=None, max_len=1024)  # [max:|min:]FIELD
    pick_best: bool = field(default=False)
    format: str | None = field(default=None, max_len=16)  # table, csv, json or markdown
    ids_only: bool = field(default=False)
    color: bool = field(default=False)


class Info(Request, op="info"):
    id: int | None = field(default=None)


class JobField(Request, op="job_field"):
    """One attribute of one job (-s, -p, -o, -a, -F)."""

    id: int | None = field(default=None)
    default: str | None = field(default=None, max_len=8)  # without an id: "added" or "run"
    field: str = field(max_len=32)


class Wait(Request, op="wait"):
    """Reply when the job ends (-w, -f, -c, -t); with ``until="start"``, once it runs."""

    id: int | None = field(default=None)
    default: str | None = field(default=None, max_len=8)
    until: str | None = field(default=None, max_len=8)


class Remove(Request, op="remove"):
    id: int | None = field(default=None)
    filter: Filter | None = field(default=None, check=_filter)


class Requeue(Request, op="requeue"):
    id: int | None = field(default=None)
    filter: Filter | None = field(default=None, check=_filter)
    cascade: bool = field(default=False)  # also the jobs skipped because it failed, transitively


class Hold(Request, op="hold"):
    """--hold ID: a queued job (or every queued job the filter selects) stays queued but never
    starts until released."""

    id: int | None = field(default=None)
    filter: Filter | None = field(default=None, check=_filter)


class Release(Request, op="release"):
    """--release ID: a held job (or every held job the filter selects) may start again."""

    id: int | None = field(default=None)
    filter: Filter | None = field(default=None, check=_filter)


class Pause(Request, op="pause"):
    """--pause ID: SIGSTOP to a running job's process group (or every one the filter selects)."""

    id: int | None = field(default=None)
    filter: Filter | None = field(default=None, check=_filter)


class Resume(Request, op="resume"):
    """--resume ID: SIGCONT to a paused job's process group (or every one the filter selects)."""

    id: int | None = field(default=None)
    filter: Filter | None = field(default=None, check=_filter)


class Edit(Request, op="edit"):
    """--edit ID: change a job that has not started (queued, allocating or held).  The client
    fills templates and applies the shell rules, as when it queues a command."""

    id: int | None = field(default=None)
    command: list[str] | None = field(default=None, check=_command)
    label: str | None = field(default=None, max_len=1024)  # "" removes the label
    priority: int | None = field(default=None, lo=-_PRIORITY, hi=_PRIORITY)


class Priority(Request, op="priority"):
    id: int | None = field(default=None)
    set: int = field(default=0, lo=-_PRIORITY, hi=_PRIORITY)


class Kill(Request, op="kill"):
    """-k (one job, or every running job the filter selects) and -T (``all``)."""

    id: int | None = field(default=None)
    all: bool = field(default=False)
    signal: int = field(default=15, lo=1, hi=64)  # SIGTERM
    only: bool = field(default=False)  # no SIGKILL after the grace period (ts -f forwarding)
    filter: Filter | None = field(default=None, check=_filter)


class Clear(Request, op="clear"):
    pass


class Slots(Request, op="slots"):
    set: int | None = field(default=None, lo=0, hi=1_000_000)  # 0 drains: nothing new starts
    queue: str | None = field(default=None, check=_named_queue)  # a named queue's (None: default)


class Queues(Request, op="queues"):
    """--queues: each queue with its slots and its running and queued jobs."""

    data: bool = field(default=False)  # the rows as data (the Python API) instead of text


class Urgent(Request, op="urgent"):
    id: int | None = field(default=None)


class Swap(Request, op="swap"):
    a: int | None = field(default=None)
    b: int | None = field(default=None)


class CountRunning(Request, op="count_running"):
    pass


class LastId(Request, op="last_id"):
    pass


class Logdir(Request, op="logdir"):
    set: str | None = field(default=None, max_len=_PATH)


class Env(Request, op="env"):
    """--getenv, --setenv (``set``) and --unsetenv (``unset``)."""

    name: str = field(max_len=1024)
    set: str | None = field(default=None, max_len=1024 * 1024, nullable=False)
    unset: bool = field(default=False)


class GpuFreePerc(Request, op="gpu_free_perc"):
    set: int | None = field(default=None, lo=1, hi=100)


class GpuStatus(Request, op="gpu_status"):
    data: bool = field(default=False)  # the rows as data (ts --watch) instead of text


class Shutdown(Request, op="shutdown"):
    """-K keeps every job for the next daemon; ``drop`` (--reset) first drops all but the running."""

    drop: bool = field(default=False)


class Ping(Request, op="ping"):
    pass


class Users(Request, op="users"):
    """--users: per user, running and queued jobs, GPUs held and GPU-hours used today."""

    data: bool = field(default=False)  # the rows as data instead of text


OPS = frozenset(REQUESTS)
