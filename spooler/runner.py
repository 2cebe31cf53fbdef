"""Start jobs as their own sessions under a small supervising process, and kill them.

The daemon forks a *shim* per job.  The shim starts its own session, spawns the job (its own
process group, stdin from /dev/null, output to the log), reports the job's pid to the daemon
through a pipe, waits for the job and writes its wait status to ``<runs>/<id>.status``.  The
daemon learns that the job ended when the shim, its child, exits.

Why a shim rather than spawning the job directly: the job must outlive the daemon (a crash or
``kill -9`` of the daemon leaves it running), and someone must still collect its exit status
then.  The shim is a fork of the daemon, so it costs no interpreter start-up, and it spawns the
job with ``posix_spawn`` (vfork-fast whatever the daemon's size).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import select
import shutil
import signal
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

_PID = struct.Struct(">i")
_PR_SET_NAME = 15
try:  # loaded once in the daemon, so naming a shim costs nothing
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None
_JOB_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGCHLD)


@dataclass
class Launch:
    job_id: int
    argv: list[str]
    shell: bool
    cwd: str
    env: dict[str, str]
    stdout_fd: int  # where the job's stdout goes (a log file, /dev/null, a client's terminal)
    stderr_fd: int
    status_path: str
    compress: bool = False  # -z: gzip what goes to stdout_fd (and stderr_fd when it is the same)


@dataclass
class Started:
    shim_pid: int
    job_pid: int  # 0 when the command could not be started (the status file says why)


def status_path(runs_dir: str, job_id: int) -> str:
    return os.path.join(runs_dir, f"{job_id}.status")


def job_argv(command: list[str], shell: bool) -> list[str]:
    if shell:
        return ["/bin/sh", "-c", command[0]]
    return list(command)


def launch(spec: Launch) -> Started:
    """Fork the shim for one job; returns once the job has been exec'd (or failed to be)."""
    read_end, write_end = os.pipe()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the child would touch (and copy) every page
    try:
        pid = os.fork()
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
    if pid == 0:  # the shim
        code = 70
        try:
            os.close(read_end)
            code = _shim(spec, write_end)
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        job_pid = _read_pid(read_end)
    finally:
        os.close(read_end)
    return Started(shim_pid=pid, job_pid=job_pid)


def _read_pid(fd: int) -> int:
    data = b""
    deadline = time.monotonic() + 30
    while len(data) < _PID.size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return 0
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return 0
        chunk = os.read(fd, _PID.size - len(data))
        if not chunk:
            return 0
        data += chunk
    return int(_PID.unpack(data)[0])


def _close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _shim(spec: Launch, pid_pipe: int) -> int:
    """Body of the supervising process.  Never returns into the daemon's code."""
    signal.set_wakeup_fd(-1)
    if _LIBC is not None:  # ps and top show "ts-shim", not a second daemon
        _LIBC.prctl(_PR_SET_NAME, b"ts-shim", 0, 0, 0)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    os.setsid()
    _close_fds_except({spec.stdout_fd, spec.stderr_fd, pid_pipe})
    job_pid = 0
    error = ""
    wait_status = 127 << 8
    out, err = spec.stdout_fd, spec.stderr_fd
    if spec.compress:
        pipe_read, out = os.pipe()
        err = out if spec.stderr_fd == spec.stdout_fd else spec.stderr_fd
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
        job_pid = os.posix_spawn(
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
        os.close(devnull)
    except OSError as exc:
        error = f"ts: cannot run {spec.argv[0]!r}: {exc.strerror or exc}"
        if exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR):
            wait_status = 126 << 8
        with contextlib.suppress(OSError):
            os.write(err, (error + "\n").encode())
    with contextlib.suppress(OSError):
        os.write(pid_pipe, _PID.pack(job_pid))
        os.close(pid_pipe)
    if spec.compress:
        os.close(out)
        _compress(pipe_read, spec.stdout_fd)
    if job_pid:
        os.close(spec.stdout_fd)
        if spec.stderr_fd != spec.stdout_fd:
            os.close(spec.stderr_fd)
        while True:
            try:
                _, wait_status = os.waitpid(job_pid, 0)
                break
            except ChildProcessError:
                wait_status = 255 << 8
                break
    write_status(spec.status_path, wait_status, error)
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


def write_status(path: str, wait_status: int, error: str = "") -> None:
    data: bytes = msgpack.packb({"status": wait_status, "error": error, "end": time.time()})
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_status(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            record = msgpack.unpackb(f.read(), raw=False)
    except (OSError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    return record if isinstance(record, dict) else None


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
