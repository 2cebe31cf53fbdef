"""What the daemon runs when a job ends besides the queue itself: TS_ONFINISH and ``-m`` mail.

Helpers are spawned without a shell, never waited for in line, and killed when they outlive
their time limit, so a hook that fails or hangs never stalls the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable

from spooler.jobs import Job

log = logging.getLogger("spooler")

HOOK_TIMEOUT = 60.0
MAIL_BODY_LIMIT = 1024 * 1024
_SENDMAIL_DIRS = ("/usr/sbin", "/usr/lib", "/sbin")


def find_program(name: str, env: dict[str, str]) -> str | None:
    return shutil.which(name, path=env.get("PATH", os.defpath))


def find_sendmail(env: dict[str, str]) -> str | None:
    path = os.pathsep.join([env.get("PATH", os.defpath), *_SENDMAIL_DIRS])
    return shutil.which("sendmail", path=path)


class Helpers:
    """Processes started for jobs that ended, and others the daemon runs (a backend's tools);
    reaped by the daemon's SIGCHLD handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.watchers: dict[int, Callable[[int], None]] = {}  # pid -> told its wait status

    def watch(self, pid: int, exited: Callable[[int], None]) -> None:
        """Call ``exited`` with the wait status of this child of the daemon once it has exited."""
        self.watchers[pid] = exited

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, stdin_fd: int | None = None) -> None:
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            pid = os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull if stdin_fd is None else stdin_fd, 0),
                    (os.POSIX_SPAWN_DUP2, devnull, 1),
                    (os.POSIX_SPAWN_DUP2, devnull, 2),
                ],
                setsid=True,
                setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD),
            )
        except OSError as exc:
            log.warning("could not run %s: %s", argv[0], exc)
            return
        finally:
            os.close(devnull)
        self.timers[pid] = self.loop.call_later(HOOK_TIMEOUT, self._expire, pid)

    def _expire(self, pid: int) -> None:
        if self.timers.pop(pid, None) is not None:
            log.warning("helper %d ran for more than %g s; killing it", pid, HOOK_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def reaped(self, pid: int, wait_status: int = 0) -> None:
        timer = self.timers.pop(pid, None)
        if timer is not None:
            timer.cancel()
        exited = self.watchers.pop(pid, None)
        if exited is not None:
            exited(wait_status)

    def on_finish(self, job: Job, env: dict[str, str]) -> None:
        program = env.get("TS_ONFINISH")
        if not program:
            return
        path = program if "/" in program else find_program(program, env)
        if path is None:
            log.warning("TS_ONFINISH program %s not found (job %d)", program, job.id)
            return
        args = [path, str(job.id), str(job.exit_status), job.log_path or "", job.command_text]
        self.spawn(args, env, job.cwd if os.path.isdir(job.cwd) else "/")

    def mail(self, job: Job, env: dict[str, str]) -> None:
        sendmail = find_sendmail(env)
        if sendmail is None:
            log.warning("job %d asked for mail but no sendmail is installed", job.id)
            return
        recipient = env.get("TS_MAILTO") or env.get("USER") or env.get("LOGNAME") or "root"
        with tempfile.TemporaryFile() as message:
            message.write(
                f"To: {recipient}\nSubject: ts job {job.id} ended ({job.exit_status}): "
                f"{job.command_text[:200]}\n\n".encode()
            )
            message.write(_output_excerpt(job))
            message.flush()
            message.seek(0)
            self.spawn([sendmail, "-i", "--", recipient], env, "/", stdin_fd=message.fileno())


def _output_excerpt(job: Job) -> bytes:
    if not job.log_path:
        return b"(the output was not stored)\n"
    try:
        if job.gzip:
            import gzip

            with gzip.open(job.log_path, "rb") as f:
                return f.read(MAIL_BODY_LIMIT)
        with open(job.log_path, "rb") as f:
            return f.read(MAIL_BODY_LIMIT)
    except (OSError, EOFError) as exc:
        return f"(could not read {job.log_path}: {exc})\n".encode()
