"""Queueing from the command line: one command, a ``--batch`` file, or a sweep file.

The client fills argument templates, reads batch and sweep files and takes code snapshots, so
the daemon receives finished commands and never runs anything but them.
"""

from __future__ import annotations

import os
import sys

from spooler.cli.parse import Invocation, id_list, positive
from spooler.client import Client, check
from spooler.commands import display, from_line
from spooler.errors import UsageError
from spooler.protocol.requests import Item, Submit

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any


def _integer(value: Any, option: str, minimum: int) -> int:
    text = str(value).strip()
    number = int(text) if text.lstrip("-").isdigit() else None
    if number is None or number < minimum:
        raise UsageError(f"{option}: {value!r} is not a whole number of at least {minimum}")
    return number


def _ids(value: Any, option: str) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list) else id_list(str(value), option)


def submission(opts: dict[str, Any]) -> Submit:
    """The submission of one ``ts`` call, with what every job of it shares (the command, batch
    or sweep items are added by the caller)."""
    try:
        cwd = os.getcwd()
    except OSError:
        raise UsageError("the current directory no longer exists") from None
    umask = os.umask(0o022)  # read it (only by setting it); a multi-user daemon's job runs with it
    os.umask(umask)
    req = Submit(
        cwd=cwd,
        env=dict(os.environ),
        umask=umask,
        label=opts.get("label"),
        no_output=bool(opts.get("no_output")),
        stderr_apart=bool(opts.get("stderr_apart")),
        gzip=bool(opts.get("gzip")),
        log_name=opts.get("log_name"),
        mail=bool(opts.get("mail")),
        after_last=bool(opts.get("after_last")),
        foreground=bool(opts.get("foreground")),
        no_block=bool(opts.get("no_block")),
        hold=bool(opts.get("hold")),
        queue=opts.get("queue"),
    )
    if "slots" in opts:
        req.slots = positive(str(opts["slots"]), "-N")
    if "gpus" in opts:
        req.gpus = positive(str(opts["gpus"]), "-G")
    if "gpu_indices" in opts:
        req.gpu_indices = _ids(opts["gpu_indices"], "-g")
    if "gpu_mem" in opts:
        from spooler.cli.sizes import parse_size

        try:
            req.gpu_mem_mib = parse_size(str(opts["gpu_mem"]))
        except ValueError as exc:
            raise UsageError(f"--gpu_mem: {exc}") from None
    if "after" in opts:
        req.after = _ids(opts["after"], "-D")
    if "after_ok" in opts:
        req.after_ok = _ids(opts["after_ok"], "-W")
    if "priority" in opts:
        req.priority = _integer(opts["priority"], "--priority", -1_000_000)
    if "retry" in opts:
        req.retry = _integer(opts["retry"], "--retry", 0)
    req.retry_timeout = bool(opts.get("retry_timeout"))
    if opts.get("time") is not None:
        from spooler.durations import parse_duration

        try:
            req.time_limit = parse_duration(str(opts["time"]))
        except ValueError as exc:
            raise UsageError(f"--time: {exc}") from None
    if opts.get("begin") is not None:
        import time

        from spooler.durations import parse_begin

        try:
            req.begin_at = parse_begin(str(opts["begin"]), time.time())
        except ValueError as exc:
            raise UsageError(f"--begin: {exc}") from None
    notify = opts.get("notify") or _notify_from_environment()
    if notify:
        req.notify_url = str(notify)
        on = os.environ.get("TS_NOTIFY_ON") or "fail"
        if on not in ("end", "fail"):
            print(f"ts: TS_NOTIFY_ON={on!r} is not end or fail: notifying on fail", file=sys.stderr)
            on = "fail"
        req.notify_on = on
    onfinish = os.environ.get("TS_ONFINISH")
    if onfinish:
        _check_program(onfinish, "TS_ONFINISH")
    if os.environ.get("TS_ENV"):
        req.env_info = _ts_env(os.environ["TS_ENV"])
    return req


def _notify_from_environment() -> str | None:
    """TS_NOTIFY_URL, unless it is no URL: a variable left over in the environment must not
    stop every job from being queued (a bad --notify, typed now, is refused instead)."""
    url = os.environ.get("TS_NOTIFY_URL")
    if not url:
        return None
    from spooler.protocol.requests import url_problem

    problem = url_problem(url, "TS_NOTIFY_URL")
    if problem:
        print(f"ts: TS_NOTIFY_URL ignored: {problem}", file=sys.stderr)
        return None
    return url


def _check_program(program: str, variable: str) -> None:
    import shutil

    if shutil.which(program) is None:
        raise UsageError(f"{variable} program {program!r} is not an executable file (or not on PATH)")


def _ts_env(command: str) -> str:
    import subprocess

    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"(TS_ENV command timed out: {command})"
    return done.stdout


def _snapshot(client: Client, req: Submit) -> None:
    from spooler.prepare import snapshot
    from spooler.protocol.requests import Ping

    where = client.call(Ping())["snapshots"]
    taken = snapshot.take(req.cwd, where)
    req.cwd, req.snapshot, req.snapshot_info = taken.cwd, taken.path, taken.info


def _templated(
    command: list[str], opts: dict[str, Any]
) -> tuple[list[str], dict[str, Any] | None, str | None]:
    """Fill ``%(name)`` placeholders when arguments are given (commands without them are untouched)."""
    marker = opts.get("skip_if_exists")
    if "arg" not in opts and "args" not in opts:
        return command, None, marker
    from spooler.prepare import template

    args = template.build_args(opts.get("arg", []), opts.get("args", []))
    filled, marker = template.fill_run(command, args, marker, allow_extra=bool(opts.get("allow_extra")))
    return filled, args, marker


def _send(req: Submit, snapshot: bool) -> dict[str, Any]:
    fds = [1, 2] if req.foreground and req.no_output else None
    with Client() as client:
        if snapshot:
            _snapshot(client, req)
        if not req.foreground:
            return client.submit_request(req, fds)
        # -f: like running the command itself: no id, its exit status; signals reach the job
        with ForwardedSignals() as forwarded:
            reply = forwarded.submit(client, fds, req)
            if "id" in reply:
                reply["exit_status"] = forwarded.wait(client, int(reply["id"]))
        return reply


class ForwardedSignals:
    """While ``ts -f`` waits, Ctrl-C (and SIGTERM, SIGHUP, SIGQUIT) reach the job, as they would
    reach a command run in the terminal: a running job gets the signal, a queued one is removed.

    Installed before the job is submitted, so a signal that arrives at any moment is passed on.
    """

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")

    def __enter__(self) -> ForwardedSignals:
        import signal

        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.early = b""  # signals that came before the job had an id
        self.old_wakeup = signal.set_wakeup_fd(self.wake_w)
        sigs = [getattr(signal, name) for name in self.NAMES]
        self.old_handlers = {sig: signal.signal(sig, lambda *_: None) for sig in sigs}
        return self

    # After a signal, how long the reply to the submission may still take before we conclude
    # that the daemon holds it back (a full queue) and give up instead of queueing the job.
    REPLY_GRACE = 0.5

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self.old_handlers.items():  # first: a signal now is not swallowed
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self.old_wakeup)
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _signals(self) -> bytes:
        try:
            return os.read(self.wake_r, 64)
        except BlockingIOError:
            return b""

    def submit(self, client: Client, fds: list[int] | None, req: Submit) -> dict[str, Any]:
        """Send the submission.  A signal while the daemon holds it back (the queue is full)
        abandons it: the daemon drops a submission whose client went away."""
        import select
        import time

        client.send(req.wire(), fds)
        deadline = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([client.fileno(), self.wake_r], [], [], timeout)
            if client.fileno() in ready:
                return check(client.receive())  # signals that came meanwhile go to the job
            if self.wake_r in ready:
                self.early += self._signals()
                deadline = deadline or time.monotonic() + self.REPLY_GRACE
            elif deadline is not None:
                client.close()
                return {"exit_status": 128 + self.early[0]}

    def wait(self, client: Client, job: int) -> int:
        """The job's exit status (128 + the signal when a signal removed it before it started)."""
        import select

        removed_by = 0
        pending = self.early
        while True:
            for signum in pending:
                if _forward(job, signum):
                    removed_by = signum
            ready, _, _ = select.select([client.fileno(), self.wake_r], [], [])
            if client.fileno() in ready:
                done = check(client.receive())
                if done.get("removed") and removed_by:
                    return 128 + removed_by
                return int(done["exit_status"])
            pending = self._signals()


def _forward(job: int, signum: int) -> bool:
    """Pass a signal the client received on to its job, over a second connection (the first
    one is waiting).  True if the job had not started and was removed instead."""
    from spooler.errors import SpoolerError
    from spooler.protocol.requests import JobField, Kill, Remove

    with Client() as client:
        for _ in range(3):  # the job may start (or end) between the two requests
            try:
                state = client.call(JobField(id=job, field="state"))["value"]
                if state in ("queued", "allocating", "held"):
                    client.call(Remove(id=job))
                    return True
                if state == "running":
                    client.call(Kill(id=job, signal=signum, only=True))
                return False
            except SpoolerError:
                continue
    return False


def enqueue(inv: Invocation) -> int:
    opts = inv.job
    req = submission(opts)
    if "batch" in opts:
        if inv.command:
            raise UsageError("--batch takes its commands from the file, not the command line")
        req.batch = _read_batch(opts["batch"])
    else:
        if not inv.command or not inv.command[0].strip():
            raise UsageError("empty command")
        req.command, req.args, req.skip_if_exists = _templated(inv.command, opts)
    reply = _send(req, bool(opts.get("snapshot")))
    if "exit_status" in reply:
        return int(reply["exit_status"])
    _print_ids(reply)
    return _partial(reply)


def _print_ids(reply: dict[str, Any]) -> None:
    """A submission succeeds only with the ids printed: a script that checks ``$?`` may rely
    on them."""
    ids = reply.get("ids") if "ids" in reply else [reply.get("id")]
    if not ids or not all(isinstance(i, int) for i in ids):
        from spooler.errors import RemoteError

        raise RemoteError("the daemon's reply carried no job id")
    print("\n".join(map(str, ids)))


def _partial(reply: dict[str, Any]) -> int:
    """A batch the daemon could record only in part: the ids printed are queued; say so."""
    if reply.get("partial"):
        sys.stdout.flush()
        print(f"ts: {reply['partial']}", file=sys.stderr)
        return 1
    return 0


def _read_batch(source: str) -> list[list[str]]:
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise UsageError(f"--batch: cannot read {source}: {exc.strerror}") from None
    commands = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            commands.append(from_line(stripped))
        except ValueError as exc:
            raise UsageError(f"--batch: line {number}: {exc}") from None
    if not commands:
        raise UsageError(f"--batch: {source} holds no commands")
    return commands


def sweep(inv: Invocation) -> int:
    """``ts sweep FILE``: every run of the grid, queued at once (or printed with --dry-run)."""
    from spooler.prepare import sweep as sweeps
    from spooler.prepare.template import fill_marker

    loaded = sweeps.load_sweep(inv.value or "")
    opts = {**loaded.options, **inv.job}  # the command line wins over the file
    runs = sweeps.commands(loaded, allow_extra=bool(opts.get("allow_extra")))
    marker = opts.get("skip_if_exists")
    items = [
        Item(command=command, args=args, skip_if_exists=fill_marker(str(marker), args) if marker else None)
        for command, args in runs
    ]
    if opts.get("dry_run"):
        for item in items:
            print(display(item.command))
        return 0
    req = submission(opts)
    req.items, req.sweep = items, loaded.name
    reply = _send(req, bool(opts.get("snapshot")))
    _print_ids(reply)
    return _partial(reply)
