"""The shim: the process that supervises a ``-z`` job, forked by the launcher.

A job whose output is gzipped needs a process to compress the output as it comes.  The shim
spawns the job, compresses, waits, records the end in the exit log and reports like the
launcher does.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
import zlib

from spooler.daemon.launcher.exits import ExitLog
from spooler.daemon.launcher.spawn import forget_inherited_fds, spawn_job, tell
from spooler.daemon.launcher.spec import Launch
from spooler.daemon.process import close_fds_except, name_process


def run_shim(spec: Launch, stdout_fd: int, stderr_fd: int, notify: socket.socket, exits: ExitLog) -> int:
    """Body of the supervising process.  Reports ``started`` and ``ended`` on ``notify``."""
    signal.set_wakeup_fd(-1)
    name_process(b"ts-shim")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    os.setsid()
    close_fds_except({stdout_fd, stderr_fd, notify.fileno(), exits.fd})
    forget_inherited_fds()
    out, err = stdout_fd, stderr_fd
    if spec.compress:
        pipe_read, out = os.pipe()
        err = out if stderr_fd == stdout_fd else stderr_fd
    job_pid, error, wait_status = spawn_job(spec, out, err)
    if job_pid:
        exits.started(spec.job_id, os.getpid(), job_pid)
    tell(notify, ["started", spec.job_id, os.getpid(), job_pid])
    if spec.compress:
        os.close(out)
        _compress(pipe_read, stdout_fd)
    if job_pid:
        os.close(stdout_fd)
        if stderr_fd != stdout_fd:
            os.close(stderr_fd)
        while True:
            try:
                _, wait_status = os.waitpid(job_pid, 0)
                break
            except ChildProcessError:
                wait_status = 255 << 8
                break
    end = time.time()
    exits.record(spec.job_id, os.getpid(), wait_status, error, end)
    tell(notify, ["ended", spec.job_id, os.getpid(), wait_status, error, end])
    return 0


def _compress(source: int, target: int) -> None:
    """Gzip everything read from ``source`` into ``target`` until every writer has closed it.

    A sync flush at most once a second (or when the job falls quiet) keeps the file readable up
    to that point while the job runs, so ``ts -t`` can follow a gzipped log.
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip header and trailer
    last_flush = time.monotonic()
    pending = False
    while True:
        ready, _, _ = select.select([source], [], [], 1.0)
        if ready:
            data = os.read(source, 65536)
            if not data:
                break
            _write_all(target, compressor.compress(data))
            pending = True
        if pending and (not ready or time.monotonic() - last_flush >= 1.0):
            _write_all(target, compressor.flush(zlib.Z_SYNC_FLUSH))
            last_flush, pending = time.monotonic(), False
    _write_all(target, compressor.flush(zlib.Z_FINISH))
    os.close(source)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:
            return  # a full disk loses output, never the job's exit status
