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
