"""Starting one job, and the shim that supervises a ``-z`` job.

A job runs in its own session and process group, with stdin from /dev/null and its output in the
log.  The launcher (``spooler.daemon.launcher``) spawns it and is its parent.  A job whose output
is gzipped needs a process to compress the output as it comes: its *shim*, forked by the
launcher, which spawns the job, compresses, waits, and reports like the launcher does.

Either way the job's wait status is written to the launcher's exit log (``spooler.exits``)
before it is reported, so a daemon that died meanwhile leaves nothing unknown.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import shutil
import signal
import socket
import time
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

from spooler.exits import ExitLog

_PR_SET_NAME = 15
try:  # loaded once in the daemon, so naming a shim costs nothing
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None
_JOB_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGCHLD)


@dataclass
class Launch:
    """What it takes to start one job (descriptors passed by ``ts -nf`` travel beside it)."""

    job_id: int
    argv: list[str]
    shell: bool
    cwd: str
    env: dict[str, str]
    result_path: str  # $TS_RESULT_FILE: removed before the job starts, so none is stale
    stdout_path: str | None = None  # the log; None: /dev/null (or the descriptors passed)
    stderr_path: str | None = None  # -E: stderr apart; None: with stdout
    exclusive: bool = True  # a generated log name must be new; a -O name is truncated
    compress: bool = False  # -z: gzip stdout (and stderr when it goes to the same place)

    def to_wire(self) -> bytes:
        data: bytes = msgpack.packb(
            [
                self.job_id, self.argv, self.shell, self.cwd, self.env, self.result_path,
                self.stdout_path, self.stderr_path, self.exclusive, self.compress,
            ]
        )  # fmt: skip
        return data

    @classmethod
    def from_wire(cls, data: bytes) -> Launch:
        fields = msgpack.unpackb(data, raw=False)
        return cls(*fields)


_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC


def open_outputs(spec: Launch, passed: list[int]) -> tuple[int, int]:
    """(stdout, stderr) for the job: the descriptors passed, the log files, or /dev/null.

    Done by the launcher rather than the daemon: creating files is the slowest step of a start.
    """
    if passed:
        return (passed[0], passed[-1])
    if spec.stdout_path is None:
        devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        return devnull, devnull
    out = os.open(spec.stdout_path, _LOG_FLAGS | (os.O_EXCL if spec.exclusive else os.O_TRUNC), 0o600)
    if spec.stderr_path is None:
        return out, out
    try:
        return out, os.open(spec.stderr_path, _LOG_FLAGS | os.O_TRUNC, 0o600)
    except OSError:
        os.close(out)
        raise


def prepare(spec: Launch) -> None:
    """Remove a result file an earlier run of the same job may have left."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spec.result_path)


def job_argv(command: list[str], shell: bool) -> list[str]:
    if shell:
        return ["/bin/sh", "-c", command[0]]
    return list(command)


def name_process(name: bytes) -> None:
    """What ps and top show for this process (its comm), instead of the parent's name."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_NAME, name, 0, 0, 0)


def close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


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
    out, err = stdout_fd, stderr_fd
    if spec.compress:
        pipe_read, out = os.pipe()
        err = out if stderr_fd == stdout_fd else stderr_fd
    job_pid, error, wait_status = spawn_job(spec, out, err)
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


def spawn_job(spec: Launch, out: int, err: int) -> tuple[int, str, int]:
    """Start the job in its own session; (pid, "", 0), or (0, why, wait status) if it cannot.

    Changes the working directory of the calling process to the job's.
    """
    try:
        os.chdir(spec.cwd)
        argv = job_argv(spec.argv, spec.shell)
        program = argv[0]
        if "/" not in program:
            found = shutil.which(program, path=spec.env.get("PATH", os.defpath))
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "command not found", program)
            program = found
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            pid = os.posix_spawn(
                program,
                argv,
                spec.env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, out, 1),
                    (os.POSIX_SPAWN_DUP2, err, 2),
                ],
                setsid=True,
                setsigdef=_JOB_SIGNALS,
            )
        finally:
            os.close(devnull)
        return pid, "", 0
    except OSError as exc:
        error = f"ts: cannot run {spec.argv[0]!r}: {exc.strerror or exc}"
        status = (126 if exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR) else 127) << 8
        with contextlib.suppress(OSError):
            os.write(err, (error + "\n").encode())
        return 0, error, status


def tell(notify: socket.socket, message: list[Any]) -> None:
    """One datagram to the daemon; it may be gone, and then the exit log speaks for us."""
    with contextlib.suppress(OSError):
        notify.send(msgpack.packb(message))


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


def decode_wait_status(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) from a wait status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None


def kill_group(pgid: int, sig: int = signal.SIGTERM) -> bool:
    """Signal a job's whole process group; False when nothing of it is left."""
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True
