"""The launcher: a small process that starts the jobs, so the daemon never forks itself.

Forking the daemon for every job cost about 2 ms and grew with the job list, and the daemon sat
blocked until the job's pid came back.  Instead the daemon sends each launch to this process,
started once and kept small, which spawns the job (``posix_spawn``: its own session, output to
the log) on the other core while the daemon goes on serving.  The launcher is the job's parent:
it collects the exit status, records it in its exit log (``spooler.exits``), and reports.  A ``-z`` job gets
a shim of its own (see ``spooler.runner``), which compresses its output as it comes.

Reports are datagrams on a socket that the launcher and the shims share:

- ``["started", job id, watched pid, job pid]`` once the job is exec'd (pids 0: it could not be);
- ``["ended", job id, watched pid, wait status, error, end time]`` when the job has ended;
- ``["reaped", job id, shim pid, shim wait status]`` when a shim has exited, which catches a shim
  that died without saying ``ended``.

The watched pid is the process whose end the daemon waits for: the job itself, or its shim.

When the daemon goes away the launcher stops taking requests but stays until its jobs have
ended, recording each end for the next daemon, which adopts the jobs meanwhile.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack

from spooler import exits, runner
from spooler.exits import ExitLog

log = logging.getLogger("spooler")

_HEADER = struct.Struct(">I")
_FD_SPACE = socket.CMSG_SPACE(2 * array.array("i").itemsize)
_NOTE_SIZE = 64 * 1024
_BUFFER = 4 * 1024 * 1024


class Launcher:
    """The daemon's handle on the launcher process."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        runs_dir: str,
        on_note: Callable[[list[Any]], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.runs_dir = runs_dir
        self.on_note = on_note
        self.on_lost = on_lost  # the launcher died: its jobs' ends will not be reported
        self.pid = 0
        self.requests: socket.socket | None = None
        self.notes: socket.socket | None = None
        self.closing = False

    def start(self) -> None:
        requests, requests_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        notes, notes_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in (notes, notes_child):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        argv = [sys.executable, "-m", "spooler.daemon.launcher", str(requests_child.fileno())]
        argv += [str(notes_child.fileno()), self.runs_dir]
        for sock in (requests_child, notes_child):
            os.set_inheritable(sock.fileno(), True)
        try:
            self.pid = os.posix_spawn(sys.executable, argv, dict(os.environ))
        finally:
            requests_child.close()
            notes_child.close()
        self.requests, self.notes = requests, notes
        notes.setblocking(False)
        self.loop.add_reader(notes.fileno(), self._read_notes)
        # The launcher never writes on the request socket: readable means it has gone.
        self.loop.add_reader(requests.fileno(), self._gone)

    def launch(self, spec: runner.Launch, terminal: tuple[int, int] | None = None) -> None:
        """Send one launch; ``terminal``: the client's stdout and stderr, for ``ts -nf``."""
        body = spec.to_wire()
        frame = _HEADER.pack(len(body)) + body
        ancillary = []
        if terminal is not None:
            # One descriptor when both streams share it: received apart, two copies would look
            # like two destinations.
            fds = [terminal[0]] if terminal[0] == terminal[1] else list(terminal)
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        for attempt in (1, 2):
            assert self.requests is not None
            try:
                sent = self.requests.sendmsg([frame], ancillary)
                self.requests.sendall(frame[sent:])
                return
            except OSError:
                if attempt == 2:
                    raise
                log.warning("the launcher is gone; starting a new one")
                self._restart()

    def _read_notes(self) -> None:
        assert self.notes is not None
        while True:
            try:
                data = self.notes.recv(_NOTE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            try:
                note = msgpack.unpackb(data, raw=False)
            except Exception:
                log.warning("ignored an unreadable report from a shim")
                continue
            if isinstance(note, list) and note:
                self.on_note(note)

    def _gone(self) -> None:
        if not self.closing:
            log.warning("the launcher (pid %d) exited; starting a new one", self.pid)
            self._restart()

    def _restart(self) -> None:
        self._read_notes_quietly()  # what it said before it went
        self._close_sockets()
        self._reap()
        self.start()
        self.on_lost()

    def _reap(self) -> None:
        if self.pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)

    def _close_sockets(self) -> None:
        for sock in (self.requests, self.notes):
            if sock is not None:
                self.loop.remove_reader(sock.fileno())
                sock.close()
        self.requests = self.notes = None

    def close(self) -> None:
        """Stop the launcher (closing its request socket); running shims are not touched."""
        self.closing = True
        if self.requests is not None:
            self._read_notes_quietly()
        self._close_sockets()

    def _read_notes_quietly(self) -> None:
        with contextlib.suppress(OSError):
            self._read_notes()


# -- the launcher process ---------------------------------------------------------------------


def _receive(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """One launch request and the descriptors sent with it; None when the daemon has gone."""
    header, ancdata, _, _ = sock.recvmsg(_HEADER.size, _FD_SPACE)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            fds.extend(got)
    while header and len(header) < _HEADER.size:
        more = sock.recv(_HEADER.size - len(header))
        if not more:
            return None
        header += more
    if not header:
        return None
    (length,) = _HEADER.unpack(header)
    body = bytearray()
    while len(body) < length:
        chunk = sock.recv(min(length - len(body), 1 << 20))
        if not chunk:
            return None
        body += chunk
    return bytes(body), fds


def serve(requests: socket.socket, notes: socket.socket, exit_log: ExitLog) -> None:
    runner.name_process(b"ts-launcher")
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the select below
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the daemon decides when we stop: by going away
    jobs: dict[int, runner.Launch] = {}  # pid of a job we spawned -> its launch
    shims: dict[int, int] = {}  # pid of a shim we forked -> its job id
    daemon_gone = False
    while not daemon_gone or jobs:
        watched = [wake_read] if daemon_gone else [requests.fileno(), wake_read]
        ready, _, _ = select.select(watched, [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
        _reap(jobs, shims, notes, exit_log)
        if daemon_gone or requests.fileno() not in ready:
            continue
        received = _receive(requests)
        if received is None:
            daemon_gone = True  # our jobs keep running; we record their ends, then exit
            continue
        body, fds = received
        try:
            spec = runner.Launch.from_wire(body)
        except Exception:
            for fd in fds:
                os.close(fd)
            continue
        try:
            runner.prepare(spec)
            out, err = runner.open_outputs(spec, fds)
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            why = f"ts: cannot create the log file {exc.filename}: {exc.strerror}"
            _report_failure(spec, why, notes, exit_log)
            continue
        try:
            if spec.compress:
                _fork_shim(spec, out, err, notes, exit_log, shims, (wake_read, wake_write, requests.fileno()))
            else:
                _spawn(spec, out, err, notes, exit_log, jobs)
        finally:
            for fd in {out, err}:  # the job (or its shim) has its own copies now
                os.close(fd)


def _spawn(
    spec: runner.Launch,
    out: int,
    err: int,
    notes: socket.socket,
    exit_log: ExitLog,
    jobs: dict[int, runner.Launch],
) -> None:
    """Start the job ourselves: no process of ours stands between us and it."""
    pid, error, status = runner.spawn_job(spec, out, err)
    os.chdir("/")  # hold no job's directory
    if pid:
        jobs[pid] = spec
        runner.tell(notes, ["started", spec.job_id, pid, pid])
    else:
        _report_failure(spec, error, notes, exit_log, status)


def _report_failure(
    spec: runner.Launch, error: str, notes: socket.socket, exit_log: ExitLog, status: int = 127 << 8
) -> None:
    """The job could not start: it ends at once, with the reason."""
    end = time.time()
    exit_log.record(spec.job_id, 0, status, error, end)
    runner.tell(notes, ["started", spec.job_id, 0, 0])
    runner.tell(notes, ["ended", spec.job_id, 0, status, error, end])


def _fork_shim(
    spec: runner.Launch,
    out: int,
    err: int,
    notes: socket.socket,
    exit_log: ExitLog,
    shims: dict[int, int],
    ours: tuple[int, ...],
) -> None:
    """-z: a shim of its own compresses the job's output while it runs."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            for fd in ours:
                os.close(fd)
            code = runner.run_shim(spec, out, err, notes, exit_log)
        finally:
            os._exit(code)
    shims[pid] = spec.job_id


def _reap(
    jobs: dict[int, runner.Launch], shims: dict[int, int], notes: socket.socket, exit_log: ExitLog
) -> None:
    while jobs or shims:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        spec = jobs.pop(pid, None)
        if spec is not None:
            # The exit log first: it is what tells the next daemon, if this one is gone.
            end = time.time()
            exit_log.record(spec.job_id, pid, status, "", end)
            runner.tell(notes, ["ended", spec.job_id, pid, status, "", end])
        else:
            runner.tell(notes, ["reaped", shims.pop(pid, -1), pid, status])


def main() -> None:
    requests = socket.socket(fileno=int(sys.argv[1]))
    notes = socket.socket(fileno=int(sys.argv[2]))
    os.set_inheritable(requests.fileno(), False)
    os.set_inheritable(notes.fileno(), False)
    serve(requests, notes, ExitLog(exits.log_path(sys.argv[3], os.getpid())))


if __name__ == "__main__":
    main()
