"""A real daemon on a socket in a temporary directory, driven through the real ``ts`` command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The fixtures of the multi-user tests (throwaway users, a root daemon shared by them).
pytest_plugins = ("multi_user",)

BIN = Path(sys.executable).parent
TS = [str(BIN / "ts")] if (BIN / "ts").exists() else [sys.executable, "-m", "spooler"]
DEADLINE = 20.0


def text_of(path: Path) -> str:
    """The file's text, or "" while it does not exist yet (a job's log appears just after it starts)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def wait_pid_file(path: Path) -> int:
    """The pid a job writes to ``path`` (``echo $! > path``), once it is there."""
    return int(wait_for(lambda: text_of(path).strip(), what=f"a pid in {path.name}"))


def wait_for(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``predicate`` every 20 ms until it returns something truthy; fail after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Is the process running (not gone, not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Spool:
    """One private spooler: its environment, its ``ts``, and helpers that read its state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logdir = root / "logs"
        self.logdir.mkdir()
        self.socket = root / "run" / "sock"
        self.savelist = root / "state" / "savelist"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TS_") and k not in ("NO_COLOR",)}
        self.env.update(
            TS_SOCKET=str(self.socket),
            TS_SAVELIST=str(self.savelist),
            TMPDIR=str(self.logdir),
            XDG_STATE_HOME=str(root / "xdg"),
            # Fake GPUs have the same UUIDs in every test: their leases stay in the test's own directory.
            TS_GPU_LEASE_DIR=str(root / "gpu-leases"),
        )

    def run(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TS, *args],
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or self.root,
        )

    def ts(self, *args: str, **kwargs: Any) -> str:
        """Run ``ts`` and expect success; returns stdout."""
        done = self.run(*args, **kwargs)
        assert done.returncode == 0, f"ts {' '.join(args)} exited {done.returncode}: {done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def submit(self, *command: str, opts: tuple[str, ...] = (), **kwargs: Any) -> int:
        return int(self.ts(*opts, *command, **kwargs).strip())

    def jobs(self) -> list[dict[str, Any]]:
        return list(json.loads(self.ts("-M", "json")))

    def job(self, job_id: int) -> dict[str, Any]:
        for job in self.jobs():
            if job["id"] == job_id:
                return job
        raise KeyError(job_id)

    def wait_state(self, job_id: int, *states: str, timeout: float = DEADLINE) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["state"] in states else None

        return wait_for(reached, timeout, f"job {job_id} to be {'/'.join(states)}")

    def daemon_pid(self) -> int | None:
        try:
            import psutil
        except ImportError:  # pragma: no cover
            return None
        for proc in psutil.process_iter(["pid", "cmdline", "name"]):
            cmd = proc.info["cmdline"] or []
            # Job shims and compaction children are forks of the daemon with its command line.
            forked = proc.info["name"] in ("ts-shim", "ts-compact")
            if "spooler.daemon" in cmd and str(self.socket) in cmd and not forked:
                return int(proc.info["pid"])
        return None

    def kill_daemon(self) -> None:
        """kill -9 the daemon (its jobs and launcher go on) and wait until it is gone."""
        pid = self.daemon_pid()
        assert pid is not None, "the daemon is not running"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), what="the daemon to die")

    def daemon_sockets(self) -> int:
        """How many Unix stream sockets the daemon has open: goes up by one per connected client."""
        import psutil

        pid = self.daemon_pid()
        assert pid is not None, "the daemon is not running"
        conns = psutil.Process(pid).net_connections(kind="unix")
        return sum(1 for c in conns if c.type == socket.SOCK_STREAM)

    def stop(self) -> None:
        """Kill running jobs, stop the daemon, and make sure no job process is left behind."""
        if self.socket.exists():
            self.run("-T")
            self.run("-K")
        kill_processes_with(f"TS_SOCKET={self.root}")  # its jobs and shims


def kill_processes_with(marker: str) -> None:
    """SIGKILL every process (but this one) whose environment holds ``marker``, such as
    ``TS_SOCKET=<path>``: a spooler's daemon, launcher, shims and jobs."""
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read():
                    os.kill(int(entry), signal.SIGKILL)
        except OSError:
            continue


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path)
    yield s
    s.stop()
    # Shown by pytest only when the test failed: what the daemon saw.
    print("--- daemon log (tail) ---", *text_of(Path(f"{s.savelist}.log")).splitlines()[-40:], sep="\n")


@pytest.fixture
def running_spool(spool: Spool) -> Spool:
    """A spool whose daemon was started in the foreground mode (as systemd would)."""
    proc = subprocess.Popen(
        [*TS, "--daemon"], env=spool.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_for(lambda: spool.socket.exists() and spool.run("-l").returncode == 0, what="the daemon to serve")
    spool.foreground = proc  # type: ignore[attr-defined]
    return spool


def have(program: str) -> bool:
    return shutil.which(program) is not None


@pytest.fixture
def make_core(tmp_path: Path) -> Iterator[Any]:
    """Cores of the in-process harness (``core_harness.Core``), closed at the end of the test."""
    from core_harness import Core

    cores: list[Core] = []

    def make(slots: int = 1, **env: str) -> Core:
        core = Core(tmp_path, env=env, slots=slots)
        cores.append(core)
        return core

    yield make
    for core in reversed(cores):
        core.close()


@pytest.fixture
def core(make_core: Any) -> Any:
    return make_core()


# The slurm backend's fixtures (a real cluster; skipped with the reason where none can run).
from slurm_cluster import slurm_cluster, slurm_spool  # noqa: E402, F401


@pytest.fixture
def api(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Python API client of the spool's daemon, started as ts would start it."""
    from spooler import Client

    for key, value in spool.env.items():
        if key.startswith("TS_") or key in ("TMPDIR", "XDG_STATE_HOME"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(spool.root)
    spool.ts("-l")
    return Client()
