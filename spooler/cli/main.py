"""``ts``: parse the command line, send one request, print the reply.

Errors end here as one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import os
import sys

from spooler.cli.parse import Invocation, filter_of, job_id, parse, positive
from spooler.cli.selection import bulk, wait_all
from spooler.client import Client
from spooler.errors import SpoolerError, UsageError, VersionMismatch
from spooler.protocol import requests as rq

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def _list(inv: Invocation) -> int:
    width, color = 0, False
    if inv.list_format == "default" and sys.stdout.isatty():
        width = os.get_terminal_size(sys.stdout.fileno()).columns
        color = not os.environ.get("NO_COLOR")
    request = rq.List(
        format=inv.list_format,
        width=width,
        color=color,
        ids_only=bool(inv.filters.get("ids_only")),
        filter=filter_of(inv),
        last=positive(inv.filters["last"], "--last") if "last" in inv.filters else None,
    )
    with Client() as client:
        reply = client.call(request)
    sys.stdout.write(reply["text"])
    return 0


def _results(inv: Invocation) -> int:
    """``ts results``: the daemon builds and renders the rows; a filter that matches nothing is
    not an error, but is said (on stderr, so the header alone stays valid CSV or JSON)."""
    fmt = inv.results.get("format", "table")
    request = rq.Results(
        filter=filter_of(inv),
        sort=inv.results.get("sort"),
        best=inv.results.get("best"),
        format=fmt,
        ids_only=bool(inv.filters.get("ids_only")),
        color=fmt == "table" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"),
    )
    with Client() as client:
        reply = client.call(request)
    sys.stdout.write(reply["text"])
    if not reply["count"]:
        print("ts: no job matches" + (" these filters" if request.filter else ""), file=sys.stderr)
    return 0


def _set_priority(inv: Invocation) -> int:
    from spooler.cli.submit import _integer

    request = rq.Priority(
        id=job_id(inv.value, "--priority"), set=_integer(inv.job["priority"], "--priority", -1_000_000)
    )
    with Client() as client:
        client.call(request)
    return 0


def _enqueue(inv: Invocation) -> int:
    from spooler.cli.submit import enqueue

    return enqueue(inv)


def _sweep(inv: Invocation) -> int:
    from spooler.cli.submit import sweep

    return sweep(inv)


def _gpu_list(inv: Invocation) -> int:
    with Client() as client:
        reply = client.call(rq.List(gpu_jobs=True))
    sys.stdout.write(reply["text"])
    return 0


def _gpu_free_perc(inv: Invocation) -> int:
    request = rq.GpuFreePerc()
    if inv.action == "set_gpu_free_perc":
        value = inv.value or ""
        if not value.isdigit() or not 1 <= int(value) <= 100:
            raise UsageError(f"--set_gpu_free_perc: {value!r} is not a percentage from 1 to 100")
        request.set = int(value)
    with Client() as client:
        reply = client.call(request)
    if inv.action == "get_gpu_free_perc":
        _print(str(reply["value"]))
    return 0


def _field(field: str, default: str) -> Callable[[Invocation], int]:
    def action(inv: Invocation) -> int:
        request = rq.JobField(id=job_id(inv.value, inv.action_option), field=field, default=default)
        with Client() as client:
            reply = client.call(request)
        value = reply["value"]
        if value is None:
            raise SpoolerError(f"job {reply['id']} has no {field} yet")
        _print(str(value))
        return 0

    return action


def _simple(kind: type[rq.Request], with_id: bool = False, **fixed: Any) -> Callable[[Invocation], int]:
    def action(inv: Invocation) -> int:
        fields = dict(fixed)
        if with_id:
            fields["id"] = job_id(inv.value, inv.action_option)
        with Client() as client:
            reply = client.call(kind(**fields))
        if "value" in reply:
            _print(str(reply["value"]))
        return 0

    return action


def _wait(inv: Invocation) -> int:
    request = rq.Wait(id=job_id(inv.value, inv.action_option))
    with Client() as client:
        # A daemon that dies meanwhile is waited through (its successor knows the job), as
        # long as the job is named: "the last job" may be another one by then.
        reply = client.call(request) if request.id is None else client.call_again_if_lost(request)
    if reply.get("removed"):
        print(f"ts: job {reply['id']} was removed before it ended", file=sys.stderr)
    return int(reply["exit_status"])


def _slots(inv: Invocation) -> int:
    if inv.value is not None and not (inv.value.isdigit() and inv.value.isascii()):
        raise UsageError(f"-S: {inv.value!r} is not a whole number (0 drains: no new job starts)")
    request = rq.Slots(set=None if inv.value is None else int(inv.value), queue=inv.job.get("queue"))
    with Client() as client:
        reply = client.call(request)
    if inv.value is None:
        _print(str(reply["slots"]))
    return 0


def _edit(inv: Invocation) -> int:
    from spooler.cli.edit import edit

    return edit(inv)


def _queues(inv: Invocation) -> int:
    with Client() as client:
        sys.stdout.write(client.call(rq.Queues())["text"])
    return 0


def _swap(inv: Invocation) -> int:
    a, sep, b = (inv.value or "").partition("-")
    if not sep or not a.isdigit() or not b.isdigit():
        raise UsageError(f"-U: {inv.value!r} is not two job ids like 3-5")
    with Client() as client:
        client.call(rq.Swap(a=int(a), b=int(b)))
    return 0


def _env(inv: Invocation) -> int:
    value = inv.value or ""
    request = rq.Env(name=value, unset=inv.action == "unsetenv")
    if inv.action == "setenv":
        name, eq, val = value.partition("=")
        if not eq or not name:
            raise UsageError(f"--setenv: {value!r} is not VAR=value")
        request = rq.Env(name=name, set=val)
    with Client() as client:
        reply = client.call(request)
    if inv.action == "getenv":
        if reply["value"] is None:
            raise SpoolerError(f"{value} is not set in the daemon's environment")
        _print(reply["value"])
    return 0


def _logdir(inv: Invocation) -> int:
    request = rq.Logdir(set=os.path.abspath(inv.value) if inv.action == "set_logdir" and inv.value else None)
    with Client() as client:
        reply = client.call(request)
    if inv.action == "get_logdir":
        _print(reply["value"])
    return 0


def _terminate_peer(client: Client) -> None:
    import signal
    import socket
    import struct

    creds = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    if uid != os.getuid() or pid <= 1:
        raise SpoolerError("the daemon on this socket is not yours")
    os.kill(pid, signal.SIGTERM)


def _shutdown(inv: Invocation) -> int:
    """-K: stop the daemon (the list is kept); --reset: drop the list first."""
    drop = inv.action == "reset"
    try:
        client = Client(autostart=drop)
    except SpoolerError:
        print("ts: no daemon is running", file=sys.stderr)
        return 0
    from spooler.cli.follow import wait_for_daemon_exit

    with client:
        try:
            reply = client.call(rq.Shutdown(drop=drop))
        except VersionMismatch:
            if drop:
                raise
            # A daemon of another version (left running by an upgrade): SIGTERM stops it just
            # as cleanly, and its pid comes from the socket itself.
            _terminate_peer(client)
            reply = {}
        wait_for_daemon_exit()
    if drop and reply.get("running"):
        print(f"ts: {reply['running']} running job(s) were left running", file=sys.stderr)
    return 0


MULTI_USER_SOCKET = "/run/spooler/socket"


def _daemon(inv: Invocation) -> int:
    from spooler import paths
    from spooler.daemon.main import run

    multi_user = bool(inv.daemon.get("multi_user"))
    if multi_user and os.geteuid() != 0:
        raise UsageError("--multi-user: run the daemon as root (it runs each job as its submitter)")
    sock = inv.daemon.get("socket") or (MULTI_USER_SOCKET if multi_user else paths.socket_path())
    return run(os.path.abspath(sock), multi_user=multi_user)


def _users(inv: Invocation) -> int:
    with Client() as client:
        reply = client.call(rq.Users())
    sys.stdout.write(reply["text"])
    return 0


def _help(inv: Invocation) -> int:
    from spooler.cli.usage import usage

    sys.stdout.write(usage())
    return 0


def _version(inv: Invocation) -> int:
    from spooler import __version__

    _print(f"ts (spooler) {__version__}")
    return 0


def _follow(inv: Invocation, whole: bool) -> int:
    from spooler.cli.follow import show

    return show(inv, whole)


def _watch(inv: Invocation) -> int:
    from spooler.cli.watch import watch

    return watch(inv)


def _print_text(kind: type[rq.Info] | type[rq.GpuStatus], inv: Invocation) -> int:
    request = rq.Info(id=job_id(inv.value, inv.action_option)) if kind is rq.Info else rq.GpuStatus()
    with Client() as client:
        reply = client.call(request)
    sys.stdout.write(reply["text"])
    return 0


ACTIONS: dict[str, Callable[[Invocation], int]] = {
    "enqueue": _enqueue,
    "list": _list,
    "tail": lambda inv: _follow(inv, whole=False),
    "cat": lambda inv: _follow(inv, whole=True),
    "pid": _field("pid", "run"),
    "output": _field("output", "run"),
    "state": _field("state", "added"),
    "label": _field("label", "added"),
    "full_cmd": _field("command", "added"),
    "info": lambda inv: _print_text(rq.Info, inv),
    "remove": bulk("remove"),
    "requeue": bulk("requeue"),
    "set_priority": _set_priority,
    "results": _results,
    "hold": bulk("hold"),
    "release": bulk("release"),
    "pause": bulk("pause"),
    "resume": bulk("resume"),
    "sweep": _sweep,
    "wait": _wait,
    "wait_all": wait_all,
    "edit": _edit,
    "kill": bulk("kill"),
    "kill_all": _simple(rq.Kill, all=True),
    "urgent": _simple(rq.Urgent, with_id=True),
    "swap": _swap,
    "slots": _slots,
    "queues": _queues,
    "clear": _simple(rq.Clear),
    "shutdown": _shutdown,
    "reset": _shutdown,
    "count_running": _simple(rq.CountRunning),
    "last_id": _simple(rq.LastId),
    "getenv": _env,
    "setenv": _env,
    "unsetenv": _env,
    "get_logdir": _logdir,
    "set_logdir": _logdir,
    "gpu_list": _gpu_list,
    "get_gpu_free_perc": _gpu_free_perc,
    "set_gpu_free_perc": _gpu_free_perc,
    "gpu_status": lambda inv: _print_text(rq.GpuStatus, inv),
    "watch": _watch,
    "daemon": _daemon,
    "users": _users,
    "help": _help,
    "version": _version,
}


def main(argv: list[str] | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    if os.environ.get("_TS_COMPLETE") or os.environ.get("_TSP_COMPLETE"):
        from spooler.cli.completion import complete  # shell completion, through click

        complete()
    try:
        inv = parse(args)
        status = ACTIONS[inv.action](inv)
        sys.stdout.flush()
    except SpoolerError as exc:
        print(f"ts: {exc}", file=sys.stderr)
        status = exc.exit_status
    except BrokenPipeError:
        # ``ts -l | head``: the reader went away; say nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 0
    except KeyboardInterrupt:
        status = 130
    except OSError as exc:
        print(f"ts: {exc.strerror or exc}", file=sys.stderr)
        status = 1
    sys.exit(status)
