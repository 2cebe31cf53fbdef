"""The launcher process: spawns the jobs the daemon sends, is their parent, reports their ends.

Started once by the daemon (``python -m spooler.daemon.launcher``, see ``handle``) and kept
small.  It reads launch requests (length-prefixed frames, with the descriptors of ``ts -nf``),
spawns each job in its own session, records each end in its exit log before reporting it, and
when the daemon goes away stays until its jobs have ended.  A ``-z`` job gets a shim of its own
(``shim``), which compresses its output as it comes.
"""

from __future__ import annotations

import array
import os
import select
import signal
import socket
import sys
import time

from spooler.daemon.launcher import exits
from spooler.daemon.launcher.credentials import CredentialError
from spooler.daemon.launcher.exits import ExitLog
from spooler.daemon.launcher.shim import run_shim
from spooler.daemon.launcher.spawn import open_outputs, prepare, spawn_job, tell
from spooler.daemon.launcher.spec import Launch
from spooler.daemon.process import name_process
from spooler.protocol import HEADER, received_fds

MAX_KEPT_FDS = 64  # two per GPU lease: enough for a job on 32 GPUs
_FD_SPACE = socket.CMSG_SPACE((2 + MAX_KEPT_FDS) * array.array("i").itemsize)


def _receive(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """One launch request and the descriptors sent with it; None when the daemon has gone."""
    # Close-on-exec: a job spawned later must not inherit another job's descriptors.
    header, ancdata, _, _ = sock.recvmsg(HEADER.size, _FD_SPACE, socket.MSG_CMSG_CLOEXEC)
    fds = received_fds(ancdata)
    while header and len(header) < HEADER.size:
        more = sock.recv(HEADER.size - len(header))
        if not more:
            return None
        header += more
    if not header:
        return None
    (length,) = HEADER.unpack(header)
    body = bytearray()
    while len(body) < length:
        chunk = sock.recv(min(length - len(body), 1 << 20))
        if not chunk:
            return None
        body += chunk
    return bytes(body), fds


def serve(requests: socket.socket, notes: socket.socket, exit_log: ExitLog) -> None:
    name_process(b"ts-launcher")
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the select below
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the daemon decides when we stop: by going away
    jobs: dict[int, Launch] = {}  # pid of a job we spawned -> its launch
    shims: dict[int, int] = {}  # pid of a shim we forked -> its job id
    kept: dict[int, list[int]] = {}  # pid of a job or shim -> descriptors held until it ends
    daemon_gone = False
    while not daemon_gone or jobs or shims:  # a -z job's shim records its end in our log
        watched = [wake_read] if daemon_gone else [requests.fileno(), wake_read]
        ready, _, _ = select.select(watched, [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
        _reap(jobs, shims, notes, exit_log, kept)
        if daemon_gone or requests.fileno() not in ready:
            continue
        received = _receive(requests)
        if received is None:
            # Everything the daemon sent is started: say so, for the next daemon (see exits).
            exit_log.drained()
            daemon_gone = True  # our jobs keep running; we record their ends, then exit
            continue
        body, fds = received
        try:
            spec = Launch.from_wire(body)
        except Exception:
            _close(fds)
            continue
        split = len(fds) - min(spec.kept_fds, len(fds))
        fds, keep = fds[:split], fds[split:]
        try:
            prepare(spec)
            out, err = open_outputs(spec, fds)
        except (OSError, CredentialError) as exc:
            _close(fds + keep)
            why = (
                str(exc)
                if isinstance(exc, CredentialError)
                else f"ts: cannot create the log file {exc.filename}: {exc.strerror}"
            )
            _report_failure(spec, why, notes, exit_log)
            continue
        try:
            if spec.compress:
                # The shim must not hold other jobs' leases (or our sockets) for its lifetime.
                others = [fd for held in kept.values() for fd in held]
                ours = (wake_read, wake_write, requests.fileno(), *others)
                pid = _fork_shim(spec, out, err, notes, exit_log, shims, ours)
            else:
                pid = _spawn(spec, out, err, notes, exit_log, jobs)
        finally:
            for fd in {out, err}:  # the job (or its shim) has its own copies now
                os.close(fd)
        if pid:
            kept[pid] = keep
        else:
            _close(keep)


def _spawn(
    spec: Launch,
    out: int,
    err: int,
    notes: socket.socket,
    exit_log: ExitLog,
    jobs: dict[int, Launch],
) -> int:
    """Start the job ourselves: no process of ours stands between us and it.  Its pid, or 0."""
    exit_log.started(spec.job_id)  # the intent: if we die before the pid is written, it may run
    pid, error, status = spawn_job(spec, out, err)
    os.chdir("/")  # hold no job's directory
    if pid:
        jobs[pid] = spec
        exit_log.started(spec.job_id, pid, pid)  # first: the daemon may die before it hears
        tell(notes, ["started", spec.job_id, pid, pid])
    else:
        _report_failure(spec, error, notes, exit_log, status)
    return pid


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _report_failure(
    spec: Launch, error: str, notes: socket.socket, exit_log: ExitLog, status: int = 127 << 8
) -> None:
    """The job could not start: it ends at once, with the reason."""
    end = time.time()
    exit_log.record(spec.job_id, 0, status, error, end)
    tell(notes, ["started", spec.job_id, 0, 0])
    tell(notes, ["ended", spec.job_id, 0, status, error, end])


def _fork_shim(
    spec: Launch,
    out: int,
    err: int,
    notes: socket.socket,
    exit_log: ExitLog,
    shims: dict[int, int],
    ours: tuple[int, ...],
) -> int:
    """-z: a shim of its own compresses the job's output while it runs.  The shim's pid."""
    exit_log.started(spec.job_id)  # the intent, as in _spawn
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            for fd in ours:
                os.close(fd)
            code = run_shim(spec, out, err, notes, exit_log)
        finally:
            os._exit(code)
    shims[pid] = spec.job_id
    exit_log.started(spec.job_id, pid, 0)  # the shim records the job's own pid once it has one
    return pid


def _reap(
    jobs: dict[int, Launch],
    shims: dict[int, int],
    notes: socket.socket,
    exit_log: ExitLog,
    kept: dict[int, list[int]],
) -> None:
    while jobs or shims:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _close(kept.pop(pid, []))  # the job's GPU leases end with it
        spec = jobs.pop(pid, None)
        if spec is not None:
            # The exit log first: it is what tells the next daemon, if this one is gone.
            end = time.time()
            exit_log.record(spec.job_id, pid, status, "", end)
            tell(notes, ["ended", spec.job_id, pid, status, "", end])
        else:
            tell(notes, ["reaped", shims.pop(pid, -1), pid, status])


def main() -> None:
    """``python -m spooler.daemon.launcher REQUESTS NOTES RUNS_DIR``, started by the daemon."""
    requests = socket.socket(fileno=int(sys.argv[1]))
    notes = socket.socket(fileno=int(sys.argv[2]))
    os.set_inheritable(requests.fileno(), False)
    os.set_inheritable(notes.fileno(), False)
    serve(requests, notes, ExitLog(exits.log_path(sys.argv[3], os.getpid())))
