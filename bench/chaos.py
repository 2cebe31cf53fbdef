"""Crash consistency under a storm of kills: clients keep queueing jobs while the daemon (and
its launcher) are killed with SIGKILL again and again; then every call's answer is compared
with what ran.

    python bench/chaos.py                      # the long run: minutes, 500+ daemon kills
    python bench/chaos.py --seconds 20 --daemon-kills 30 --launcher-kills 5

Each job appends its own tag to one file (``echo TAG >> runs.txt``), so the file says which
jobs ran and how often.  The invariants, each counted (all must be 0):

- a call exited 0 without printing exactly one job id;
- a call failed (non-zero exit) although its job was queued (it is in the list, or ran);
- an acknowledged job did not run exactly once, or the id printed is not the job's (one whose
  launcher was killed while starting it ends ``lost`` and may not have run: at most once);
- a job ran more than once;
- a job ended ``lost`` although no launcher was killed while it ran.

``tests/test_crash_consistency.py`` runs short storms of the same kind in the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Call:
    tag: str
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Storm:
    """One storm's settings and what happened in it."""

    root: Path
    ts: list[str]
    seconds: float = 20.0
    clients: int = 6
    slots: int = 4
    daemon_kills: int = 30  # spread over the storm
    launcher_kills: int = 0  # among them, or besides: the launcher, alone or with the daemon
    calls: list[Call] = field(default_factory=list)
    killed_daemons: int = 0
    killed_launchers: int = 0
    killed_one_of_several: int = 0  # launcher kills that left another launcher serving
    launcher_kill_times: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def runs_file(self) -> Path:
        return self.root / "runs.txt"

    @property
    def socket(self) -> str:
        return str(self.root / "run" / "sock")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
        env.update(
            TS_SOCKET=self.socket,
            TS_SAVELIST=str(self.root / "state" / "savelist"),
            TS_MAXFINISHED="1000000",  # every job stays in the list, to be checked
            TS_SLOTS=str(self.slots),
            TMPDIR=str(self.root / "logs"),
            XDG_STATE_HOME=str(self.root / "xdg"),
            TS_GPU_LEASE_DIR=str(self.root / "gpu-leases"),
        )
        return env

    # -- the storm -------------------------------------------------------------------------

    def run(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.runs_file.touch()
        stop = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self._client, args=(n, stop)) for n in range(self.clients)]
        threads.append(threading.Thread(target=self._killer, args=(stop,)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _client(self, number: int, stop: float) -> None:
        rng = random.Random(number)
        sequence = 0
        while time.monotonic() < stop:
            tag = f"c{number}-{sequence}"
            sequence += 1
            pause = rng.choice(("0", "0.02", "0.1", "0.3"))
            command = f"sleep {pause}; echo {tag} >> {self.runs_file}"
            try:
                done = subprocess.run(
                    [*self.ts, command], env=self.env(), capture_output=True, text=True, timeout=120
                )
                call = Call(tag, done.returncode, done.stdout, done.stderr)
            except subprocess.TimeoutExpired:
                call = Call(tag, -1, "", "timed out")
            with self._lock:
                self.calls.append(call)

    def _killer(self, stop: float) -> None:
        """Kills spread evenly over the storm, with jitter; launcher kills among them."""
        total = self.daemon_kills + self.launcher_kills
        if total == 0:
            return
        kinds = ["daemon"] * self.daemon_kills + ["launcher"] * self.launcher_kills
        rng = random.Random(1234)
        rng.shuffle(kinds)
        interval = self.seconds / total
        start = time.monotonic()
        for i, kind in enumerate(kinds):
            when = start + interval * (i + rng.uniform(0.3, 1.0))
            time.sleep(max(0.0, min(when, stop) - time.monotonic()))
            # Between a death and the next start there is nothing to kill: wait for it, up to
            # the next kill's time.
            while not self._kill(kind, rng) and time.monotonic() < min(stop, start + interval * (i + 1.3)):
                time.sleep(0.01)
            if time.monotonic() >= stop:
                return

    def _kill(self, kind: str, rng: random.Random) -> bool:
        daemon = find_daemon(self.socket)
        if daemon is None:
            return False
        if kind == "launcher":
            launchers = launchers_of(daemon)
            if not launchers:
                return False
            both = rng.random() < 0.3  # sometimes the daemon goes too
            if len(launchers) > 1 and rng.random() < 0.5:
                launchers = [rng.choice(launchers)]  # one of several: the others' jobs go on
                self.killed_one_of_several += 1
            for pid in launchers:
                _kill9(pid)
            self.killed_launchers += 1
            self.launcher_kill_times.append(time.time())
            if both and _kill9(daemon):
                self.killed_daemons += 1
            return True
        if _kill9(daemon):
            self.killed_daemons += 1
            return True
        return False

    # -- after the storm ---------------------------------------------------------------------

    def settle(self, timeout: float = 300.0) -> list[dict[str, Any]]:
        """Let every job end (the next ``ts`` starts a daemon again); the final list."""
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                [*self.ts, "-M", "json"], env=self.env(), capture_output=True, text=True, timeout=120
            )
            if done.returncode == 0:
                jobs: list[dict[str, Any]] = json.loads(done.stdout)
                # A lost job's process may still run (the daemon could not watch it, so it did
                # not wait for it): it appends its tag when it ends, so wait for those too.
                if (
                    all(j["state"] not in ("queued", "allocating", "running") for j in jobs)
                    and not self._jobs_alive()
                ):
                    return jobs
            if time.monotonic() > deadline:
                raise RuntimeError("the jobs did not all end after the storm")
            time.sleep(0.2)

    def _jobs_alive(self) -> bool:
        """Is a job's process still running (its command line names the runs file)?"""
        import psutil

        mark = str(self.runs_file)
        for proc in psutil.process_iter(["cmdline"]):
            if any(mark in word for word in proc.info["cmdline"] or []):
                return True
        return False

    def stop_daemon(self) -> None:
        subprocess.run([*self.ts, "-K"], env=self.env(), capture_output=True, timeout=60)

    def check(self, jobs: list[dict[str, Any]]) -> dict[str, int]:
        """Each invariant's count of violations, and the storm's figures."""
        ran = Counter(self.runs_file.read_text().split())
        by_tag = {_tag_of(j["command"]): j for j in jobs}
        acked = [c for c in self.calls if c.returncode == 0]
        failed = [c for c in self.calls if c.returncode != 0]
        bad_ack = [c for c in acked if not c.stdout.strip().isdigit()]
        wrong_id = [c for c in acked if c not in bad_ack and by_tag.get(c.tag, {}).get("id") != int(c.stdout)]
        lost = [j for j in jobs if j["state"] == "lost"]
        lost_unexplained = [j for j in lost if not self._launcher_killed_during(j)]
        # A launcher killed between recording a start and spawning the job leaves a job that
        # may or may not have run: it ends lost, saying so (never run again), and ran 0 or 1
        # times.  Every other lost job had a process, so it ran.
        lost_tags = {
            _tag_of(j["command"]) for j in lost if j not in lost_unexplained and MAY_HAVE_RUN in j["reason"]
        }
        return {
            "calls": len(self.calls),
            "acknowledged": len(acked),
            "failed calls": len(failed),
            "daemon kills": self.killed_daemons,
            "launcher kills": self.killed_launchers,
            "of which one launcher of several": self.killed_one_of_several,
            "jobs lost (a launcher died)": len(lost) - len(lost_unexplained),
            "of which never ran (lost while starting)": sum(not ran[t] for t in lost_tags),
            "success without an id": len(bad_ack),
            "failure, but queued": sum(1 for c in failed if c.tag in by_tag or ran[c.tag]),
            "acknowledged, not run once": sum(1 for c in acked if ran[c.tag] != 1 and c.tag not in lost_tags),
            "id printed is not the job's": len(wrong_id),
            "ran more than once": sum(1 for n in ran.values() if n > 1),
            "lost, no launcher died": len(lost_unexplained),
        }

    def details(self, jobs: list[dict[str, Any]]) -> list[str]:
        """One line per violation, with what the call said and what became of its job."""
        ran = Counter(self.runs_file.read_text().split())
        by_tag = {_tag_of(j["command"]): j for j in jobs}
        lines = []
        for call in self.calls:
            job = by_tag.get(call.tag)
            acked = call.returncode == 0
            if (acked and ran[call.tag] != 1) or (not acked and (job or ran[call.tag])) or ran[call.tag] > 1:
                what = {k: job.get(k) for k in ("id", "state", "reason", "attempt")} if job else None
                said = f"exit {call.returncode} {call.stderr.strip()!r}"
                lines.append(f"{call.tag}: {said}, ran {ran[call.tag]}x, job {what}")
        lines += [
            f"lost: {j['id']} {j['reason']}"
            for j in jobs
            if j["state"] == "lost" and not self._launcher_killed_during(j)
        ]
        return lines

    def _launcher_killed_during(self, job: dict[str, Any]) -> bool:
        started = job.get("start_time") or 0.0
        return any(t >= started for t in self.launcher_kill_times)


MAY_HAVE_RUN = ": it may"  # in the reason of a job lost while its launcher was starting it

INVARIANTS = (
    "success without an id",
    "failure, but queued",
    "acknowledged, not run once",
    "id printed is not the job's",
    "ran more than once",
    "lost, no launcher died",
)


def _tag_of(command: str) -> str:
    words = command.split()
    return words[words.index("echo") + 1] if "echo" in words else ""


def find_daemon(socket_path: str) -> int | None:
    import psutil

    for proc in psutil.process_iter(["cmdline", "name"]):
        cmdline = proc.info["cmdline"] or []
        forked = proc.info["name"] in ("ts-shim", "ts-compact")  # forks with the daemon's cmdline
        if "spooler.daemon" in cmdline and socket_path in cmdline and not forked:
            return int(proc.pid)
    return None


def launchers_of(daemon: int) -> list[int]:
    import psutil

    try:
        children = psutil.Process(daemon).children()
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            if "spooler.daemon.launcher" in child.cmdline():
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def _kill9(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def table(figures: dict[str, int], seconds: float) -> str:
    lines = ["| figure | target | result |", "|---|---|---|"]
    for name, value in figures.items():
        if name in INVARIANTS:
            lines.append(f"| {name} | 0 | {value} {'PASS' if value == 0 else 'FAIL'} |")
        else:
            lines.append(f"| {name} | | {value} |")
    lines.append(f"| storm length | | {seconds:.0f} s |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--daemon-kills", type=int, default=540)
    parser.add_argument("--launcher-kills", type=int, default=60)
    args = parser.parse_args()
    venv_ts = ROOT / ".venv" / "bin" / "ts"
    ts = [str(venv_ts)] if venv_ts.exists() else [sys.executable, "-m", "spooler"]
    with tempfile.TemporaryDirectory(prefix="spooler-chaos-") as tmp:
        storm = Storm(
            Path(tmp), ts, seconds=args.seconds, clients=args.clients,
            daemon_kills=args.daemon_kills, launcher_kills=args.launcher_kills,
        )  # fmt: skip
        began = time.monotonic()
        try:
            storm.run()
            jobs = storm.settle()
            figures = storm.check(jobs)
            for line in storm.details(jobs):
                print(line, file=sys.stderr)
            why = Counter(c.stderr.strip() for c in storm.calls if c.returncode != 0)
            for line, count in why.most_common():
                print(f"failed calls ({count}): {line}", file=sys.stderr)
        finally:
            storm.stop_daemon()
        print(table(figures, time.monotonic() - began))
    return 0 if all(figures[name] == 0 for name in INVARIANTS) else 1


if __name__ == "__main__":
    sys.exit(main())
