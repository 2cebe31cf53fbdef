"""Spawning one job: its own session and process group, stdin from /dev/null, output to the
log.  Used by the launcher, which is the job's parent, and by the shim of a ``-z`` job.

Either way the job's wait status is written to the launcher's exit log (``exits``) before it
is reported, so a daemon that died meanwhile leaves nothing unknown.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import stat
import time
from typing import Any

import msgpack

from spooler.daemon.launcher.credentials import (
    CredentialError,
    account_of,
    acting_as,
    ensure_user_dir,
    needs_switch,
    spawn_as,
    user_environment,
)
from spooler.daemon.launcher.spec import Launch

_JOB_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGCHLD)

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC

# Where a command was found on a PATH, kept a second at most: a batch of the same command looks
# it up once instead of once per job (a tenth of a start), and a program installed meanwhile is
# seen a second later at worst.  Only the launcher's own lookups (its user's) are kept.
_FOUND_FOR = 1.0
_found: dict[tuple[str, str], tuple[str, float]] = {}
_devnull: int | None = None  # the jobs' stdin, opened once


def open_outputs(spec: Launch, passed: list[int]) -> tuple[int, int]:
    """(stdout, stderr) for the job: the descriptors passed, the log files, or /dev/null.

    Done by the launcher rather than the daemon: creating files is the slowest step of a start.
    """
    if passed:
        return (passed[0], passed[-1])
    if spec.stdout_path is not None and needs_switch(spec.uid):
        assert spec.uid is not None
        account = account_of(spec.uid)
        ensure_user_dir(os.path.dirname(spec.stdout_path), account)
        with acting_as(account):
            return _open_logs(spec)
    return _open_logs(spec)


def _open_logs(spec: Launch) -> tuple[int, int]:
    if spec.stdout_path is None:
        devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        return devnull, devnull
    if spec.precreated:
        out = _open_precreated(spec.stdout_path)
    else:
        out = os.open(spec.stdout_path, _LOG_FLAGS | (os.O_EXCL if spec.exclusive else os.O_TRUNC), 0o600)
    if spec.stderr_path is None:
        return out, out
    try:
        return out, os.open(spec.stderr_path, _LOG_FLAGS | os.O_TRUNC, 0o600)
    except OSError:
        os.close(out)
        raise


def _open_precreated(path: str) -> int:
    """A log file the daemon created (exclusively, empty) ahead of the launch: opening it is
    cheap where creating is the slowest step of a start.  It must still be that file: ours,
    empty, a regular file with one name; anything else is refused, as a taken name is."""
    try:
        # Non-blocking: a FIFO put in its place must not hold the launcher until someone reads.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:  # removed meanwhile: create it as usual
        return os.open(path, _LOG_FLAGS | os.O_EXCL, 0o600)
    except OSError as exc:  # ENXIO: a FIFO with no reader; ELOOP: a symbolic link
        raise FileExistsError(errno.EEXIST, "the file was replaced", path) from exc
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_nlink == 1 and not info.st_size:
        os.set_blocking(fd, True)
        return fd
    os.close(fd)
    raise FileExistsError(errno.EEXIST, "the file was replaced", path)


def _which(program: str, path: str) -> str | None:
    """``shutil.which``, kept a moment for a PATH of absolute directories only: with ``.`` (or
    an empty or relative entry) the answer depends on the job's directory."""
    now = time.monotonic()
    key = (path, program)
    found = _found.get(key)
    if found is not None and now - found[1] < _FOUND_FOR and os.access(found[0], os.X_OK):
        return found[0]
    where = shutil.which(program, path=path)
    if where is not None and all(d.startswith("/") for d in path.split(os.pathsep)):
        if len(_found) > 256:
            _found.clear()
        _found[key] = (where, now)
    return where


def forget_inherited_fds() -> None:
    """In a forked shim that closed what it inherited: the launcher's cached stdin is gone."""
    global _devnull
    _devnull = None


def _stdin() -> int:
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull


def prepare(spec: Launch) -> None:
    """Remove a result file an earlier run of the same job may have left."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spec.result_path)


def job_argv(command: list[str], shell: bool) -> list[str]:
    if shell:
        return ["/bin/sh", "-c", command[0]]
    return list(command)


def spawn_job(spec: Launch, out: int, err: int) -> tuple[int, str, int]:
    """Start the job in its own session; (pid, "", 0), or (0, why, wait status) if it cannot.

    Changes the working directory of the calling process to the job's (not for a job of
    another user, started by ``credentials.spawn_as``).
    """
    if needs_switch(spec.uid):
        return _spawn_as_owner(spec, out, err)
    try:
        os.chdir(spec.cwd)
        argv = job_argv(spec.argv, spec.shell)
        program = argv[0]
        if "/" not in program:
            found = _which(program, spec.env.get("PATH", os.defpath))
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "command not found", program)
            program = found
        pid = os.posix_spawn(
            program,
            argv,
            spec.env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, _stdin(), 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, err, 2),
            ],
            setsid=True,
            setsigdef=_JOB_SIGNALS,
        )
        return pid, "", 0
    except OSError as exc:
        error = f"ts: cannot run {spec.argv[0]!r}: {exc.strerror or exc}"
        status = (126 if exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR) else 127) << 8
        with contextlib.suppress(OSError):
            os.write(err, (error + "\n").encode())
        return 0, error, status


def _spawn_as_owner(spec: Launch, out: int, err: int) -> tuple[int, str, int]:
    assert spec.uid is not None
    try:
        account = account_of(spec.uid)
    except CredentialError as exc:
        return _failed(str(exc), 127 << 8, err)
    argv = job_argv(spec.argv, spec.shell)
    env = user_environment(spec.env, account)
    program = argv[0]
    if "/" not in program:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            return _failed(f"ts: cannot run {program!r}: command not found", 127 << 8, err)
        program = found
    pid, why, status = spawn_as(account, program, argv, env, spec.cwd, spec.umask, out, err)
    if pid:
        return pid, "", 0
    return _failed(why, status, err)


def _failed(why: str, status: int, err: int) -> tuple[int, str, int]:
    with contextlib.suppress(OSError):
        os.write(err, (why + "\n").encode())
    return 0, why, status


def tell(notify: socket.socket, message: list[Any]) -> None:
    """One datagram to the daemon; it may be gone, and then the exit log speaks for us."""
    with contextlib.suppress(OSError):
        notify.send(msgpack.packb(message))
