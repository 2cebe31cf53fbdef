"""Private spoolers for the benchmark: ours (``ts``) and the C original (``tsp``), each on its own
socket in a temporary directory, plus timing and process helpers.

Nothing here touches the user's default socket: every command gets ``TS_SOCKET`` (and, for ours,
``TS_SAVELIST``, ``TMPDIR`` and ``XDG_STATE_HOME``) pointing into the benchmark's directory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
TS = str(VENV_BIN / "ts")


class BenchError(Exception):
    """Something in a spooler failed so that a figure cannot be measured."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def interpreter_of(script: str) -> str:
    """The interpreter a console script runs (its ``#!`` line): the baseline for client latency."""
    with open(script, "rb") as f:
        first = f.readline().decode().strip()
    if first.startswith("#!"):
        words = first[2:].split()
        if words and os.path.isabs(words[0]) and "env" not in os.path.basename(words[0]):
            return words[0]
    return sys.executable


def find_c_tsp() -> str | None:
    """The C task spooler on PATH.  Our package also installs a ``tsp`` console script (a Python
    file); skip anything that is not an ELF binary."""
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory or ".", "tsp")
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            continue
        try:
            with open(candidate, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    return os.path.realpath(candidate)
        except OSError:
            continue
    return None


# -- statistics ---------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- running commands ---------------------------------------------------------------------


def _describe(argv: Sequence[str], env: dict[str, str]) -> str:
    sock = env.get("TS_SOCKET", "")
    return f"TS_SOCKET={sock} {' '.join(argv)}"


def run_checked(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    stdin: Any = None,
    input: str | None = None,
    timeout: float = 600,
) -> str:
    """Run a command, expect exit status 0, return its stdout."""
    try:
        done = subprocess.run(
            list(argv),
            env=env,
            input=input,
            stdin=stdin if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{_describe(argv, env)}` did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-800:]
        raise BenchError(f"`{_describe(argv, env)}` exited {done.returncode}: {said}")
    return done.stdout


def time_command(argv: Sequence[str], env: dict[str, str]) -> float:
    """Wall time of one run, output to /dev/null (what the user waits for at the prompt).

    Output goes to /dev/null rather than a pipe: ``tsp CMD`` leaves a forked client behind that
    would hold a pipe open.  A failure is re-run with its output captured, to say why.
    """
    start = time.perf_counter()
    code = subprocess.call(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - start
    if code != 0:
        run_checked(argv, env, stdin=subprocess.DEVNULL, timeout=60)
        raise BenchError(f"`{_describe(argv, env)}` exited {code}")
    return elapsed


def alternate(
    commands: dict[str, tuple[Sequence[str], dict[str, str]]], rounds: int
) -> dict[str, list[float]]:
    """Time each command ``rounds`` times, one of each per round, the order rotating each round so
    that no command always runs first (or right after a given other one)."""
    names = list(commands)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm the page cache and any lazily created state once, untimed
        argv, env = commands[name]
        time_command(argv, env)
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        if (r // len(names)) % 2:
            order.reverse()
        for name in order:
            argv, env = commands[name]
            times[name].append(time_command(argv, env))
    return times


class ExitTimes:
    """Start processes now and record when each exits (threads doing ``wait``)."""

    def __init__(self, argvs: Iterable[Sequence[str]], env: dict[str, str]) -> None:
        self.procs = [
            subprocess.Popen(
                list(a),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for a in argvs
        ]
        self.ended: list[float] = [0.0] * len(self.procs)
        self.threads = [
            threading.Thread(target=self._wait, args=(i,), daemon=True) for i in range(len(self.procs))
        ]
        for t in self.threads:
            t.start()

    def _wait(self, i: int) -> None:
        self.procs[i].wait()
        self.ended[i] = time.time()

    def last_exit(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self.threads):
            self.kill()
            raise BenchError(f"waiting processes did not end within {timeout:g} s")
        return max(self.ended)

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.kill()
                p.wait()


# -- a gate: a job that holds its slots until we release it ------------------------------


class Gate:
    """A FIFO that a gate job (``cat FIFO``) blocks on.  Releasing closes our write end, so the gate
    job reads EOF and exits at once: the moment is known to the microsecond, with no polling."""

    def __init__(self, directory: Path, name: str = "gate") -> None:
        self.path = directory / f"{name}.fifo"
        os.mkfifo(self.path, 0o600)
        self.fd = -1

    def command(self) -> list[str]:
        return ["cat", str(self.path)]

    def wait_running(self, timeout: float = 30) -> None:
        """Return once the gate job has the FIFO open (it runs and holds its slots).  We keep our
        write end open from then on: closing it is what lets the gate job end."""
        if self.fd >= 0:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
                return
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
            if time.monotonic() > deadline:
                raise BenchError(f"the gate job (cat {self.path}) did not start within {timeout:g} s")
            time.sleep(0.005)

    def release(self) -> float:
        """Let the gate job end now; returns the time (epoch seconds) of the release."""
        self.wait_running()
        released = time.time()
        os.close(self.fd)
        self.fd = -1
        return released

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- ours ---------------------------------------------------------------------------------


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_") and k not in ("NO_COLOR",)}
    env.pop("PYTHONPATH", None)
    # ts as installed runs from compiled modules (pip compiles them at install time); with
    # PYTHONDONTWRITEBYTECODE an editable install would compile spooler's modules from source
    # on every call (about 15 ms), a cost no user's ts pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class OurSpool:
    """One private daemon of ours: its directory, environment and helpers."""

    def __init__(self, root: Path, name: str, *, fsync: bool = True, max_finished: int | None = None) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.socket = self.dir / "sock"
        self.env = base_env()
        self.env.update(
            TS_SOCKET=str(self.socket),
            TS_SAVELIST=str(self.dir / "state" / "savelist"),
            TMPDIR=str(self.logs),
            XDG_STATE_HOME=str(self.dir / "xdg"),
        )
        if not fsync:
            self.env["TS_FSYNC"] = "0"
        if max_finished is not None:
            self.env["TS_MAXFINISHED"] = str(max_finished)
        self._pid: int | None = None

    def argv(self, *args: str) -> list[str]:
        return [TS, *args]

    def ts(self, *args: str, input: str | None = None, timeout: float = 600) -> str:
        return run_checked(self.argv(*args), self.env, input=input, timeout=timeout)

    def start(self, slots: int) -> None:
        """Start the daemon (the first request autostarts it) and set the slots."""
        self.ts("-S", str(slots))
        self.daemon()

    def daemon(self) -> psutil.Process:
        """The daemon process: cmdline holds ``spooler.daemon`` and our socket.  Job shims are forks
        of the daemon with the same cmdline, so the daemon is the match whose parent is no match."""
        if self._pid is not None and psutil.pid_exists(self._pid):
            return psutil.Process(self._pid)
        found: dict[int, int] = {}
        for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
            cmd = proc.info["cmdline"] or []
            if any("spooler.daemon" in w for w in cmd) and str(self.socket) in cmd:
                found[proc.info["pid"]] = proc.info["ppid"]
        roots = [pid for pid, ppid in found.items() if ppid not in found]
        if len(roots) != 1:
            raise BenchError(f"cannot find the daemon for {self.socket} (candidates: {sorted(found)})")
        self._pid = roots[0]
        return psutil.Process(self._pid)

    def rss_mb(self) -> float:
        return self.daemon().memory_info().rss / 2**20

    def submit(self, *command: str) -> int:
        return int(self.ts(*command).strip())

    def batch(self, lines: Sequence[str]) -> tuple[float, list[int]]:
        """``ts --batch FILE``: wall time and the ids it printed."""
        path = self.dir / f"batch-{len(lines)}-{time.monotonic_ns()}.txt"
        path.write_text("".join(line + "\n" for line in lines))
        start = time.perf_counter()
        out = self.ts("--batch", str(path))
        elapsed = time.perf_counter() - start
        path.unlink()
        ids = [int(w) for w in out.split()]
        if len(ids) != len(lines):
            raise BenchError(f"ts --batch with {len(lines)} lines printed {len(ids)} ids")
        return elapsed, ids

    def jobs(self) -> list[dict[str, Any]]:
        return list(json.loads(self.ts("-M", "json")))

    def stop(self) -> None:
        """``ts -K``; wait for the daemon to exit (SIGKILL after 30 s); kill what is left of its jobs."""
        pid = self._pid
        if pid is None:
            with contextlib.suppress(BenchError):
                pid = self.daemon().pid
        if self.socket.exists():
            with contextlib.suppress(BenchError):
                self.ts("-K", timeout=60)
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                try:
                    proc.wait(30)
                except psutil.TimeoutExpired:
                    log(f"daemon {pid} did not exit 30 s after ts -K; killing it")
                    proc.kill()
        kill_marked(f"TS_SOCKET={self.dir}")
        self._pid = None


# -- the C original -----------------------------------------------------------------------


class TspSpool:
    """A private server of the C task spooler."""

    def __init__(self, tsp: str, root: Path, name: str) -> None:
        self.tsp = tsp
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.socket = self.dir / "tsock"
        self.env = base_env()
        self.env.update(
            TS_SOCKET=str(self.socket), TMPDIR=str(self.logs), TS_SAVELIST=str(self.dir / "saved")
        )

    def argv(self, *args: str) -> list[str]:
        return [self.tsp, *args]

    def run(self, *args: str, timeout: float = 120) -> str:
        # ``tsp CMD`` forks a client that stays until its job ends; it inherits stdout, so read
        # the id through a file, never a pipe.
        out = self.dir / "out.txt"
        with open(out, "w") as f:
            try:
                code = subprocess.call(
                    self.argv(*args),
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise BenchError(
                    f"`{_describe(self.argv(*args), self.env)}` hung for {timeout:g} s"
                ) from None
        text = out.read_text()
        if code != 0:
            raise BenchError(
                f"`{_describe(self.argv(*args), self.env)}` exited {code}: {text.strip()[-500:]}"
            )
        return text

    def start(self, slots: int) -> None:
        self.run("-S", str(slots))

    def submit(self, *command: str) -> int:
        return int(self.run(*command).strip())

    def enqueue_many(
        self, count: int, command: str = "true", timeout: float = 300
    ) -> tuple[float, list[int]]:
        """Queue ``count`` jobs from one shell loop (one tsp process per job: its design)."""
        out = self.dir / "ids.txt"
        script = f'i=0; while [ $i -lt {count} ]; do "$0" {command} || exit 1; i=$((i+1)); done'
        start = time.perf_counter()
        with open(out, "w") as f:
            try:
                code = subprocess.call(
                    ["sh", "-c", script, self.tsp],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=f,
                    stderr=subprocess.DEVNULL,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise BenchError(f"queueing {count} jobs in tsp hung for {timeout:g} s") from None
        elapsed = time.perf_counter() - start
        ids = [int(w) for w in out.read_text().split()]
        if code != 0 or len(ids) != count:
            raise BenchError(f"queueing {count} jobs in tsp: exit {code}, {len(ids)} ids")
        return elapsed, ids

    def client_memory(self) -> tuple[int, float, float]:
        """(processes, total RSS MiB, total PSS MiB) of this server's tsp processes (server included)."""
        n, rss, pss = 0, 0, 0
        marker = f"TS_SOCKET={self.socket}"
        for proc in psutil.process_iter(["pid", "exe"]):
            if proc.info["exe"] != self.tsp:
                continue
            try:
                if marker not in "\0".join(f"{k}={v}" for k, v in proc.environ().items()).split("\0"):
                    continue
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            n += 1
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        return n, rss / 2**20, pss / 2**20

    def stop(self) -> None:
        if self.socket.exists():
            with contextlib.suppress(BenchError):
                self.run("-K", timeout=30)
        kill_marked(f"TS_SOCKET={self.dir}")


# -- clean-up -----------------------------------------------------------------------------


def kill_marked(marker: str) -> int:
    """SIGKILL every process (not ours) whose environment holds ``marker``: the spooler's daemon,
    shims and jobs, or the C spooler's server and clients started for the benchmark."""
    needle = marker.encode()
    killed = 0
    me = os.getpid()
    for _ in range(3):  # a dying process may have started another meanwhile
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry))
            except OSError:
                continue
        if not found:
            break
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.1)
    return killed


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
