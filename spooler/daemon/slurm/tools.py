"""Running SLURM's tools from the daemon without blocking its event loop for long.

:meth:`Tools.run` spawns the tool and returns at once; its output is read as it comes and its
end arrives through the daemon's SIGCHLD handler (``hooks.Helpers.watch``), and a tool that
outlives its time limit (a controller that does not answer) is killed.  :meth:`Tools.run_now`
waits, with a short limit, for the few answers a request needs before its reply (the check of
a submission).  Every call is counted by tool, for ``bench/``'s polling figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Watch = Callable[[int, Callable[[int], None]], None]  # (pid, called with its wait status)


@dataclass
class Result:
    returncode: int  # -1: it could not run, or was killed at its time limit
    stdout: str
    stderr: str
    timed_out: bool = False


class Tools:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, env: Mapping[str, str], watch: Watch, timeout: float = 30.0
    ) -> None:
        self.loop = loop
        self.env = dict(env)  # the daemon's: PATH, SLURM_CONF
        self.watch = watch
        self.timeout = timeout
        self.calls: Counter[str] = Counter()
        # A sbatch whose daemon was killed must not submit after the next daemon has looked
        # for its job: it dies with us (the next daemon then finds the job, or submits it).
        self._setpriv = shutil.which("setpriv")

    def _argv(self, argv: list[str], die_with_daemon: bool) -> list[str]:
        self.calls[argv[0]] += 1
        if die_with_daemon and self._setpriv:
            return [self._setpriv, "--pdeathsig", "KILL", "--", *argv]
        return argv

    def run(
        self,
        argv: list[str],
        done: Callable[[Result], None],
        *,
        stdin: str = "",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        die_with_daemon: bool = False,
    ) -> None:
        """Start the tool; ``done`` is called with its result on a later turn of the loop."""
        full = self._argv(argv, die_with_daemon)
        program = shutil.which(full[0], path=(env or self.env).get("PATH", os.defpath))
        if program is None:
            self.loop.call_soon(done, Result(-1, "", f"{argv[0]}: command not found"))
            return
        source = os.memfd_create("ts-slurm-stdin", os.MFD_CLOEXEC)  # a script larger than a pipe
        # Only our ends do not block: a tool writing to a full pipe must wait, not fail.
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(out_r, False)
        os.set_blocking(err_r, False)
        try:
            os.write(source, stdin.encode())
            os.lseek(source, 0, os.SEEK_SET)
            pid = os.posix_spawn(
                program,
                full,
                dict(env or self.env),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, source, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
                setsid=True,
                setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD),
            )
        except OSError as exc:
            for fd in (out_r, err_r):
                os.close(fd)
            self.loop.call_soon(done, Result(-1, "", f"cannot run {argv[0]}: {exc.strerror or exc}"))
            return
        finally:
            for fd in (source, out_w, err_w):
                os.close(fd)
        _Call(self.loop, pid, out_r, err_r, done, self.watch, timeout or self.timeout)

    def run_now(
        self, argv: list[str], *, stdin: str = "", env: Mapping[str, str] | None = None, timeout: float = 5.0
    ) -> Result:
        """Run the tool and wait for it (at most ``timeout`` seconds)."""
        try:
            done = subprocess.run(
                self._argv(argv, False),
                input=stdin,
                env=dict(env or self.env),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Result(-1, "", f"{argv[0]} did not answer within {timeout:g} s", timed_out=True)
        except OSError as exc:
            return Result(-1, "", f"cannot run {argv[0]}: {exc.strerror or exc}")
        return Result(done.returncode, done.stdout, done.stderr)


class _Call:
    """One running tool: its two pipes read as they fill, its exit, its time limit."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pid: int,
        out: int,
        err: int,
        done: Callable[[Result], None],
        watch: Watch,
        timeout: float,
    ) -> None:
        self.loop, self.pid, self.done = loop, pid, done
        self.buffers: dict[int, bytearray] = {out: bytearray(), err: bytearray()}
        self.texts: dict[int, str] = {}
        self.out, self.err = out, err
        self.status: int | None = None
        self.timed_out = False
        for fd in (out, err):
            loop.add_reader(fd, self._read, fd)
        watch(pid, self._exited)
        self.timer = loop.call_later(timeout, self._expire)

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.buffers[fd] += data
            return
        self.loop.remove_reader(fd)
        os.close(fd)
        self.texts[fd] = self.buffers.pop(fd).decode(errors="replace")
        self._maybe_done()

    def _exited(self, status: int) -> None:
        self.status = status
        self._maybe_done()

    def _expire(self) -> None:
        self.timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def _maybe_done(self) -> None:
        if self.status is None or self.buffers:
            return
        self.timer.cancel()
        code = -1 if self.timed_out else os.waitstatus_to_exitcode(self.status)
        stderr = self.texts[self.err]
        if self.timed_out:
            stderr = (stderr + "\n" if stderr else "") + "did not answer in time: killed"
        self.done(Result(code, self.texts[self.out], stderr, self.timed_out))
