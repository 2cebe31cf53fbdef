"""The daemon core in-process: a fake event loop and clock, a fake launcher, no processes.

``Core`` builds the real :class:`spooler.daemon.spooler.Spooler` on a save-list in a temporary
directory and drives it through the real request handlers (parsing included), with a backend
that records launches instead of spawning jobs.  A test says what the launcher would report
(``started``, ``ended``, ``launcher_died``) and moves the clock; timers run when it passes them.
So retries, adoption, launcher loss and scheduling rules are tested in milliseconds.

No signal reaches a real process: while a ``Core`` is open, the core's ``kill_group`` is replaced
by one that records the signals (``Core.signals``); ``Core.close`` puts the real one back.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import spooler.daemon.spooler as spooler_module
from spooler.daemon.config import StartupConfig
from spooler.daemon.handlers import HANDLERS
from spooler.daemon.launcher.exits import ExitLog, log_path
from spooler.daemon.launcher.spec import Launch
from spooler.daemon.spooler import Spooler
from spooler.jobs import Job
from spooler.protocol.requests import Kill, Request, Submit, Wait


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Handle:
    def __init__(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.callback, self.args, self.cancelled = callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The few event-loop calls the core makes, on a clock the test moves."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ready: deque[Handle] = deque()
        self.timers: list[tuple[float, int, Handle]] = []
        self.readers: dict[int, Handle] = {}
        self.stopped = False
        self._seq = itertools.count()

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Handle:
        handle = Handle(callback, args)
        self.ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Handle:
        handle = Handle(callback, args)
        heapq.heappush(self.timers, (self.clock.now + delay, next(self._seq), handle))
        return handle

    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        self.readers[fd] = Handle(callback, args)

    def remove_reader(self, fd: int) -> None:
        self.readers.pop(fd, None)

    def stop(self) -> None:
        self.stopped = True

    def run(self) -> None:
        """Run what is ready, and what that makes ready, until nothing is."""
        while self.ready:
            handle = self.ready.popleft()
            if not handle.cancelled:
                handle.callback(*handle.args)

    def advance(self, seconds: float) -> None:
        """Move the clock, running each timer at its time."""
        end = self.clock.now + seconds
        self.run()
        while self.timers and self.timers[0][0] <= end:
            when, _, handle = heapq.heappop(self.timers)
            self.clock.now = max(self.clock.now, when)
            if not handle.cancelled:
                handle.callback(*handle.args)
            self.run()
        self.clock.now = end

    def pending_timers(self) -> int:
        return sum(1 for _, _, h in self.timers if not h.cancelled)


class FakeBackend:
    """Records launches; the test reports starts and ends as the launcher would."""

    def __init__(self, on_note: Callable[[list[Any]], None], on_lost: Callable[[], None]) -> None:
        self.on_note, self.on_lost = on_note, on_lost
        self.launches: list[Launch] = []
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def launch(self, spec: Launch, terminal: tuple[int, int] | None = None, keep: Sequence[int] = ()) -> None:
        self.launches.append(spec)

    def close(self) -> None:
        self.closed = True

    def spec(self, job_id: int) -> Launch:
        """The last launch of this job."""
        return [s for s in self.launches if s.job_id == job_id][-1]


class FakeAdoption:
    """Adopts the jobs whose shim pid the test says is alive."""

    def __init__(self) -> None:
        self.alive: set[int] = set()
        self.adopted: list[int] = []

    def adopt(self, job: Job) -> bool:
        if job.shim_pid in self.alive:
            self.adopted.append(job.id)
            return True
        return False

    def gone(self, pid: int | None) -> bool:
        return pid not in self.alive

    def close(self) -> None:
        pass


class Connection:
    """What a handler needs of a client's connection; deferred replies are collected."""

    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.on_close: list[Callable[[], None]] = []
        self.closed = False
        self.deferred = 0
        self.caller = None  # a personal daemon's connection: its owner, unchecked

    def take_fds(self) -> list[int]:
        return []

    def defer(self) -> None:
        self.deferred += 1

    def reply_deferred(self, message: dict[str, Any]) -> None:
        self.deferred -= 1
        self.replies.append(message)

    def reply(self, message: dict[str, Any]) -> None:
        self.replies.append(message)

    def close(self) -> None:
        """The client goes away: what it waited for is forgotten."""
        self.closed = True
        for forget in self.on_close:
            forget()


def fake_gpus(path: Path, used_mib: list[int], total_mib: int = 24000) -> str:
    """Write a TS_FAKE_GPUS file (one GPU per entry of ``used_mib``); returns its path."""
    path.write_text(json.dumps([{"total_mib": total_mib, "used_mib": used} for used in used_mib]))
    return str(path)


class Core:
    def __init__(self, root: Path, env: dict[str, str] | None = None, slots: int = 1) -> None:
        self.root = root
        self.env = {
            "TS_SAVELIST": str(root / "state" / "savelist"),
            "TS_FSYNC": "0",
            # Machine-wide GPU leases (gpus/leases.py) stay in the test's directory, never shared
            # with the daemons of other tests or users (fake GPUs have the same uuids everywhere).
            "TS_GPU_LEASE_DIR": str(root / "gpu-leases"),
            **(env or {}),
        }
        self.env.setdefault("TS_SLOTS", str(slots))
        self.clock = Clock()
        self.adoption = FakeAdoption()
        self.signals: list[tuple[int, int]] = []  # (process group, signal) the core sent
        self.gone: set[int] = set()  # process groups with nothing left in them
        self._real_kill_group = spooler_module.kill_group  # type: ignore[attr-defined]
        spooler_module.kill_group = self._kill_group  # type: ignore[attr-defined]
        try:
            self._boot()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Put the real ``kill_group`` back (the save-list is left as it is)."""
        spooler_module.kill_group = self._real_kill_group  # type: ignore[attr-defined]

    def _kill_group(self, pgid: int, sig: int = 15) -> bool:
        if pgid <= 0 or pgid in self.gone:
            return False
        self.signals.append((pgid, sig))
        return True

    def _boot(self) -> None:
        self.loop = FakeLoop(self.clock)
        config = StartupConfig.from_env(str(self.root / "sock"), self.env)
        self.backends: list[FakeBackend] = getattr(self, "backends", [])
        self.sp = Spooler(
            config,
            self.loop,  # type: ignore[arg-type]
            clock=self.clock,
            backend=self._backend,
            adoption=self.adoption,  # type: ignore[arg-type]
            env=self.env,
        )
        self.sp.load()
        self.loop.run()

    def _backend(self, on_note: Callable[[list[Any]], None], on_lost: Callable[[], None]) -> FakeBackend:
        backend = FakeBackend(on_note, on_lost)
        self.backends.append(backend)
        return backend

    @property
    def backend(self) -> FakeBackend:
        return self.backends[-1]

    def stop(self) -> None:
        """The daemon stops (as after ts -K or a crash that lost nothing); its jobs run on."""
        self.sp.shutdown_jobs()
        self.sp.close()

    def start(self) -> None:
        """A new daemon loads the save-list (after :meth:`stop`)."""
        self._boot()

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- requests --------------------------------------------------------------------------

    def request(self, request: Request, conn: Connection | None = None) -> dict[str, Any] | None:
        """Through the real handler (the request is parsed as the daemon parses it)."""
        reply = HANDLERS[request.OP](self.sp, request.wire(), conn or Connection())  # type: ignore[arg-type]
        self.sp.commit()
        self.loop.run()
        return reply

    def submit(self, *command: str, **fields: Any) -> int:
        words = list(command) or ["true"]
        reply = self.request(Submit(command=words, cwd=str(self.root), env={"PATH": "/bin"}, **fields))
        assert reply is not None and reply.get("ok"), reply
        return int(reply["id"])

    def job(self, job_id: int) -> Job:
        return self.sp.table.jobs[job_id]

    def state(self, job_id: int) -> str:
        return self.job(job_id).state.value

    def launched(self) -> list[int]:
        """Ids of every launch of this daemon so far, in order (a retried job appears once per
        attempt)."""
        return [spec.job_id for spec in self.backend.launches]

    def launch_env(self, job_id: int) -> dict[str, str]:
        """The environment of the job's last launch."""
        return self.backend.spec(job_id).env

    def queue(self) -> list[int]:
        """Ids of the waiting jobs in the order they may start."""
        return [job.id for job in self.sp.table.queue]

    def running(self) -> list[int]:
        return [job.id for job in self.sp.running.by_id()]

    def kill(self, job_id: int, sig: int = 15) -> dict[str, Any] | None:
        """``ts -k`` (the signal is recorded in ``signals``, never sent)."""
        return self.request(Kill(id=job_id, signal=sig))

    def wait(self, job_id: int, until: str | None = None) -> Connection:
        """``ts -w`` (``until="start"``: ``-t``/``-c``): the connection collects the reply."""
        conn = Connection()
        reply = self.request(Wait(id=job_id, until=until), conn)
        if reply is not None:
            conn.replies.append(reply)
        return conn

    # -- what the launcher would report ------------------------------------------------------

    def started(self, job_id: int, pid: int | None = None) -> int:
        pid = pid or 10_000 + job_id
        self.backend.on_note(["started", job_id, pid, pid])
        self.loop.run()
        return pid

    def ended(self, job_id: int, code: int = 0, signal: int | None = None) -> None:
        """The job ended with this exit code (or was killed by ``signal``)."""
        job = self.job(job_id)
        status = signal if signal is not None else code << 8
        self.backend.on_note(["ended", job_id, job.shim_pid, status, "", self.clock()])
        self.sp.commit()
        self.loop.run()

    def reaped(self, job_id: int, wait_status: int = 0, shim_pid: int | None = None) -> None:
        """The launcher reaped a shim of the job (a ``-z`` job runs under one): sent for every
        shim that exits, after its ``ended`` if it got to say it.  ``shim_pid``: the job's by
        default."""
        if shim_pid is None:
            shim_pid = self.job(job_id).shim_pid
        self.backend.on_note(["reaped", job_id, shim_pid, wait_status])
        self.sp.commit()
        self.loop.run()

    def run(self, job_id: int, code: int = 0) -> None:
        """The job starts and ends with this exit code."""
        self.started(job_id)
        self.ended(job_id, code)

    def record_exit(
        self,
        job_id: int,
        code: int = 0,
        signal: int | None = None,
        pid: int | None = None,
        launcher_pid: int = 4242,
    ) -> None:
        """A launcher (or a shim) records the job's end in its exit log, as it does before it
        reports it, and as when no daemon listens.  ``pid``: the job's shim pid by default."""
        if pid is None:
            pid = self.job(job_id).shim_pid or 0
        status = signal if signal is not None else code << 8
        exit_log = ExitLog(log_path(self.sp.runs_dir, launcher_pid))
        try:
            exit_log.record(job_id, pid, status, "", self.clock())
        finally:
            os.close(exit_log.fd)

    def record_start(self, job_id: int, pid: int, launcher_pid: int = 4242) -> None:
        """A launcher records that it started the job (as it does before it reports it); pid 0:
        only that it was about to."""
        exit_log = ExitLog(log_path(self.sp.runs_dir, launcher_pid))
        try:
            exit_log.started(job_id, pid, pid)
        finally:
            os.close(exit_log.fd)

    def adopted_exit(self, job_id: int, code: int | None = 0) -> None:
        """An adopted job's shim exits (its pidfd became readable), having recorded ``code`` in
        its launcher's exit log, or nothing when ``code`` is None."""
        if code is not None:
            self.record_exit(job_id, code)
        self.sp.reaper.adopted_exited(job_id)
        self.sp.commit()
        self.loop.run()

    def launcher_died(self) -> None:
        self.backend.on_lost()
        self.loop.run()

    def write_result(self, job_id: int, value: Any) -> None:
        Path(self.backend.spec(job_id).result_path).write_text(json.dumps(value))


MakeCore = Callable[..., Core]


def gpu_core(make_core: MakeCore, tmp_path: Path, used: list[int], slots: int = 8, **env: str) -> Core:
    """A core with fake GPUs, ``used`` MiB taken on each."""
    return make_core(slots, TS_FAKE_GPUS=fake_gpus(tmp_path / "gpus.json", used), TS_GPU_POLL="1", **env)
