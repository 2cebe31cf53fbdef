"""The daemon's handle on the launcher process: start it, send it launches, read its reports.

Forking the daemon for every job cost about 2 ms and grew with the job list, and the daemon sat
blocked until the job's pid came back.  Instead the daemon sends each launch to the launcher
(``spooler.daemon.launcher.process``), started once and kept small, which spawns the job on the
other core while the daemon goes on serving.

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
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from spooler.daemon.launcher import exits
from spooler.daemon.launcher.spec import Launch
from spooler.protocol import HEADER

log = logging.getLogger("spooler")

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
        exits.create_log(self.runs_dir, self.pid)
        self.requests, self.notes = requests, notes
        notes.setblocking(False)
        self.loop.add_reader(notes.fileno(), self._read_notes)
        # The launcher never writes on the request socket: readable means it has gone.
        self.loop.add_reader(requests.fileno(), self._gone)

    def launch(self, spec: Launch, terminal: tuple[int, int] | None = None, keep: Sequence[int] = ()) -> None:
        """Send one launch; ``terminal``: the client's stdout and stderr, for ``ts -nf``;
        ``keep``: descriptors the launcher holds open until the job ends (its GPU leases)."""
        spec.kept_fds = len(keep)
        body = spec.to_wire()
        frame = HEADER.pack(len(body)) + body
        fds: list[int] = []
        if terminal is not None:
            # One descriptor when both streams share it: received apart, two copies would look
            # like two destinations.
            fds = [terminal[0]] if terminal[0] == terminal[1] else list(terminal)
        fds += keep
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        for attempt in (1, 2):
            try:
                if self.requests is None:  # an earlier restart could not start it
                    self.start()
                assert self.requests is not None
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
        try:
            self.start()
        finally:
            self.on_lost()  # its jobs are recovered even if no new launcher could be started

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
