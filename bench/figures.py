"""The measurements.  Each function sets up its own private spoolers, measures, stops them, and
returns plain numbers; ``run.py`` turns them into the table.  No asserts on timings anywhere."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from harness import (
    BenchError,
    ExitTimes,
    Gate,
    OurSpool,
    TspSpool,
    alternate,
    base_env,
    log,
    median,
    percentile,
)

# The C task spooler 1.0.1 serves at most 1000 connections (a compile-time constant; TS_MAXCONN
# cannot raise it) and every queued job keeps its client connected, so a client beyond ~994
# blocks until an earlier job ends.  Its dispatch run queues at most this many jobs, leaving room
# for the gate and the ``tsp -w`` waiters.
TSP_MAX_QUEUED = 975


@dataclass
class Context:
    root: Path
    python: str  # the interpreter the ts console script runs: the latency baseline
    tsp: str | None
    quick: bool
    cleanups: list[Any] = field(default_factory=list)

    def our(self, name: str, **kwargs: Any) -> OurSpool:
        spool = OurSpool(self.root, name, **kwargs)
        self.cleanups.append(spool)
        return spool

    def theirs(self, name: str) -> TspSpool:
        assert self.tsp is not None
        spool = TspSpool(self.tsp, self.root, name)
        self.cleanups.append(spool)
        return spool

    def gate(self, spool: OurSpool | TspSpool) -> Gate:
        gate = Gate(spool.dir)
        self.cleanups.append(gate)  # closed after the spoolers are stopped (closing releases it)
        return gate

    def pass_cmd(self) -> tuple[list[str], dict[str, str]]:
        return [self.python, "-c", "pass"], base_env()


def _gated(ctx: Context, spool: OurSpool | TspSpool, slots: int = 1) -> tuple[Gate, int]:
    """A running gate job holding every slot, so that what is queued next stays queued."""
    gate = ctx.gate(spool)
    gate_id = spool.submit("-N", str(slots), *gate.command())
    gate.wait_running()
    return gate, gate_id


def _wait_all_ended(spool: OurSpool, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        jobs = spool.jobs()
        if all(j["state"] in ("finished", "skipped", "lost") for j in jobs):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"jobs on {spool.socket} did not end within {timeout:g} s")
        time.sleep(0.05)


# -- 1 and 5: client latency, idle CPU ----------------------------------------------------


def client_latency_and_idle(ctx: Context, rounds: int, idle_seconds: float) -> dict[str, Any]:
    log(f"client latency: {rounds} alternating rounds")
    enq = ctx.our("lat-enqueue")
    enq.start(1)
    _gated(ctx, enq)  # enqueued jobs stay queued: the figure is the enqueue, not running `true`
    lst = ctx.our("lat-list")
    lst.start(1)
    lst.batch(["true"] * 10)
    _wait_all_ended(lst)
    if len(lst.jobs()) != 10:
        raise BenchError("the list daemon should hold exactly 10 jobs")
    commands = {
        "pass": ctx.pass_cmd(),
        "ts true": (enq.argv("true"), enq.env),
        "ts -l": (lst.argv("-l"), lst.env),
    }
    tsp_server = None
    if ctx.tsp:
        tenq = ctx.theirs("lat-tsp-enqueue")
        tenq.start(1)
        _gated(ctx, tenq)
        tlst = ctx.theirs("lat-tsp-list")
        tlst.start(1)
        ids = [tlst.submit("true") for _ in range(10)]
        tlst.run("-w", str(ids[-1]))
        commands["tsp true"] = (tenq.argv("true"), tenq.env)
        commands["tsp -l"] = (tlst.argv("-l"), tlst.env)
    times = alternate(commands, rounds)
    result: dict[str, Any] = {name: median(values) for name, values in times.items()}
    result["rounds"] = rounds
    result["p90"] = {name: percentile(values, 90) for name, values in times.items()}

    # 5: the list daemon is now idle (no job runs, no client is connected).
    if ctx.tsp:
        tsp_procs = _tsp_processes(tlst)
        tsp_server = tsp_procs[0] if len(tsp_procs) == 1 else None
    log(f"idle CPU: {idle_seconds:g} s")
    daemon = lst.daemon()
    time.sleep(1.0)
    before = daemon.cpu_times()
    run_before = _on_cpu_ns(daemon.pid)
    switches_before = sum(daemon.num_ctx_switches())
    tsp_before = tsp_server.cpu_times() if tsp_server else None
    time.sleep(idle_seconds)
    after = daemon.cpu_times()
    result["idle_cpu"] = (after.user + after.system) - (before.user + before.system)
    result["idle_run_ns"] = _on_cpu_ns(daemon.pid) - run_before
    result["idle_switches"] = sum(daemon.num_ctx_switches()) - switches_before
    result["idle_seconds"] = idle_seconds
    if tsp_server and tsp_before:
        tsp_after = tsp_server.cpu_times()
        result["tsp_idle_cpu"] = (tsp_after.user + tsp_after.system) - (tsp_before.user + tsp_before.system)
    for spool in (enq, lst):
        spool.stop()
    return result


def _on_cpu_ns(pid: int) -> int:
    """Time on CPU (ns) from /proc/PID/schedstat: exact, unlike cpu_times' clock ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _tsp_processes(spool: TspSpool) -> list[Any]:
    import psutil

    marker = f"TS_SOCKET={spool.socket}"
    found = []
    for proc in psutil.process_iter(["pid", "exe"]):
        if proc.info["exe"] != spool.tsp:
            continue
        try:
            if marker in [f"{k}={v}" for k, v in proc.environ().items()]:
                found.append(proc)
        except psutil.Error:
            continue
    return found


# -- 2: bulk submission -------------------------------------------------------------------


def bulk(ctx: Context, lines: int, reps: int) -> dict[str, Any]:
    times = []
    for rep in range(reps):
        log(f"bulk: ts --batch with {lines} lines ({rep + 1}/{reps})")
        spool = ctx.our(f"bulk-{rep}")
        spool.start(1)
        _gated(ctx, spool)
        elapsed, _ = spool.batch([f"true job-{i}" for i in range(lines)])
        times.append(elapsed)
        spool.stop()
    return {"median": median(times), "all": times, "lines": lines}


# -- 3: dispatch --------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU time spent by every CPU of the machine, not idle (``/proc/stat``), in seconds."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def children(times: os.times_result) -> float:
    return times.children_user + times.children_system


def _launchers(daemon: psutil.Process) -> list[psutil.Process]:
    return [c for c in daemon.children() if "spooler.daemon.launcher" in " ".join(c.cmdline())]


def spawn_floor(n: int = 2000) -> dict[str, float]:
    """What one `true` costs with no spooler at all: this process spawns it (posix_spawn, as our
    launcher does) and waits for it, n times.  CPU per job of the child, of the parent, and the
    rate: the floor under any dispatcher on this machine."""
    env = base_env()
    true = shutil.which("true", path=env.get("PATH")) or "/bin/true"
    busy, started = busy_cpu_seconds(), time.monotonic()
    before = os.times()
    for _ in range(n):
        os.waitpid(os.posix_spawn(true, ["true"], env), 0)
    after = os.times()
    wall = time.monotonic() - started
    return {
        "rate": n / wall,
        "child_ms": (children(after) - children(before)) / n * 1e3,
        "parent_ms": (after.user + after.system - before.user - before.system) / n * 1e3,
        "busy_ms": (busy_cpu_seconds() - busy) / n * 1e3,
    }


def dispatch_ours(ctx: Context, name: str, slots: int, n: int) -> dict[str, Any]:
    log(f"dispatch (ours): {n} jobs at -S {slots}")
    # Keep every ended job in the list (the gate's end time is the start of the window).
    spool = ctx.our(name, max_finished=10 * n + 10)
    spool.start(slots)
    gate, gate_id = _gated(ctx, spool, slots)
    _, ids = spool.batch(["true"] * n)
    waiters = ExitTimes([spool.argv("-w", str(i)) for i in ids[-slots:]], spool.env)
    time.sleep(1.0)  # let the waiters connect
    daemon = spool.daemon()
    daemon_cpu = _cpu_seconds(daemon)
    launchers_cpu = {p.pid: _cpu_seconds(p) for p in _launchers(daemon)}
    busy = busy_cpu_seconds()
    released = gate.release()
    wall_end = waiters.last_exit(timeout=300)
    busy = busy_cpu_seconds() - busy
    daemon_cpu = _cpu_seconds(daemon) - daemon_cpu
    pool = _launchers(daemon)  # with those started during the run
    launchers_cpu = {p.pid: _cpu_seconds(p) - launchers_cpu.get(p.pid, 0.0) for p in pool}
    jobs = {j["id"]: j for j in spool.jobs()}
    spool.stop()
    gate_job = jobs.get(gate_id)
    if gate_job is None or gate_job.get("end_time") is None:
        raise BenchError(f"the gate job {gate_id} is missing from ts -M json after the run")
    run = [jobs[i] for i in ids if i in jobs]
    bad = [j["id"] for j in run if j["state"] != "finished" or j["exit_code"] != 0]
    if len(run) != n or bad:
        raise BenchError(
            f"dispatch: {n - len(run)} jobs missing, {len(bad)} did not finish with 0 ({bad[:5]})"
        )
    window = max(j["end_time"] for j in run) - gate_job["end_time"]
    result: dict[str, Any] = {
        "n": n,
        "rate": n / window,
        "window": window,
        "wall_rate": n / (wall_end - released),
        "gate_lag": gate_job["end_time"] - released,
        # CPU per job: the daemon, its launcher, and every process of the machine (jobs included).
        "daemon_ms": daemon_cpu / n * 1e3,
        "launcher_ms": sum(launchers_cpu.values()) / n * 1e3,
        "launchers": len(pool),
        "busy_ms": busy / n * 1e3,
        "use": busy / (wall_end - released) / (os.cpu_count() or 1),
    }
    if slots == 1:
        chain = [gate_job, *sorted(run, key=lambda j: j["start_time"])]
        gaps = [b["start_time"] - a["end_time"] for a, b in itertools.pairwise(chain)]
        runs = [j["end_time"] - j["start_time"] for j in run]
        result.update(
            gap_median=median(gaps), gap_p99=percentile(gaps, 99), gap_max=max(gaps), run_median=median(runs)
        )
    return result


def dispatch_tsp(ctx: Context, name: str, slots: int, n: int) -> dict[str, Any]:
    n = min(n, TSP_MAX_QUEUED)
    log(f"dispatch (tsp): {n} jobs at -S {slots}")
    spool = ctx.theirs(name)
    spool.start(slots)
    gate, _ = _gated(ctx, spool, slots)
    queue_time, ids = spool.enqueue_many(n)
    procs, rss, pss = spool.client_memory()
    waiters = ExitTimes([spool.argv("-w", str(i)) for i in ids[-slots:]], spool.env)
    time.sleep(1.0)
    busy = busy_cpu_seconds()
    released = gate.release()
    wall_end = waiters.last_exit(timeout=300)
    busy = busy_cpu_seconds() - busy
    listing = spool.run("-l")
    finished = sum(1 for line in listing.splitlines()[1:] if " finished " in line)
    spool.stop()
    if finished != n + 1:
        raise BenchError(f"tsp dispatch: {finished} finished jobs listed, expected {n + 1}")
    return {
        "n": n,
        "rate": n / (wall_end - released),
        "window": wall_end - released,
        "busy_ms": busy / n * 1e3,
        "use": busy / (wall_end - released) / (os.cpu_count() or 1),
        "queue_time": queue_time,
        "procs": procs,
        "rss_mb": rss,
        "pss_mb": pss,
    }


def dispatch(ctx: Context, n: int, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for slots in (1, 8):
        ours, theirs = [], []
        for rep in range(reps):
            ours.append(dispatch_ours(ctx, f"disp-ours-S{slots}-{rep}", slots, n))
            if ctx.tsp:
                theirs.append(dispatch_tsp(ctx, f"disp-tsp-S{slots}-{rep}", slots, n))
        out[slots] = {"ours": ours, "tsp": theirs}
    log("dispatch: the floor (posix_spawn and wait for `true`, no spooler)")
    out["floor"] = spawn_floor()
    return out


# -- 4 and durability: scale --------------------------------------------------------------


def scale(ctx: Context, levels: tuple[int, ...], enqueue_rounds: int, list_rounds: int) -> dict[str, Any]:
    """Two daemons grown in step behind gates: fsync on (the default; items 4 and durability) and
    TS_FSYNC=0 (to show what the fsync costs).  Enqueue latency and RSS at each level."""
    on = ctx.our("scale-fsync-on", fsync=True)
    off = ctx.our("scale-fsync-off", fsync=False)
    count = {}
    for spool in (on, off):
        spool.start(1)
        _gated(ctx, spool)
        count[spool.socket] = 1
    empty_rss = on.rss_mb()
    levels_out: dict[int, dict[str, Any]] = {}
    for level in levels:
        entry: dict[str, Any] = {}
        for spool in (on, off):
            missing = level - count[spool.socket]
            if missing > 0:
                log(f"scale: topping up {spool.dir.name} to {level} jobs ({missing} lines)")
                elapsed, _ = spool.batch([f"true job-{i}" for i in range(missing)])
                entry.setdefault("topup", {})[spool.dir.name] = (missing, elapsed)
                count[spool.socket] = level
        entry["jobs"] = level
        entry["rss_on"] = on.rss_mb()
        entry["hwm_on"] = _hwm_mb(on.daemon().pid)
        entry["rss_off"] = off.rss_mb()
        if level >= 10_000:
            rounds = list_rounds if level == 10_000 else max(3, list_rounds // 4)
            log(f"scale: ts -l with {level} jobs, {rounds} rounds")
            lt = alternate({"pass": ctx.pass_cmd(), "ts -l": (on.argv("-l"), on.env)}, rounds)
            entry["list"] = median(lt["ts -l"])
            entry["list_pass"] = median(lt["pass"])
        log(f"scale: enqueue with {level} jobs, {enqueue_rounds} rounds")
        et = alternate(
            {
                "pass": ctx.pass_cmd(),
                "on": (on.argv("true"), on.env),
                "off": (off.argv("true"), off.env),
            },
            enqueue_rounds,
        )
        entry["enq_on"] = median(et["on"])
        entry["enq_off"] = median(et["off"])
        entry["enq_on_max"] = max(et["on"])
        entry["enq_pass"] = median(et["pass"])
        for spool in (on, off):
            count[spool.socket] += enqueue_rounds + 1  # the rounds plus one untimed warm-up
        levels_out[level] = entry
    on.stop()
    off.stop()
    return {
        "levels": levels_out,
        "empty_rss": empty_rss,
        "enqueue_rounds": enqueue_rounds,
        "compactions": compactions(Path(on.env["TS_SAVELIST"] + ".log")),
    }


_BACKGROUND = re.compile(
    r"compacted in the background by process \d+ in ([\d.]+) s \(the daemon paused ([\d.]+) ms\)"
)
_IN_PLACE = re.compile(r"compacted in place in ([\d.]+) s")


def compactions(daemon_log: Path) -> dict[str, list[float]]:
    """What the daemon's log says its save-list compactions cost: seconds each took in the
    background, milliseconds the daemon paused to start each, seconds of those done in place."""
    text = daemon_log.read_text() if daemon_log.exists() else ""
    background = _BACKGROUND.findall(text)
    return {
        "background_s": [float(took) for took, _ in background],
        "pause_ms": [float(paused) for _, paused in background],
        "in_place_s": [float(took) for took in _IN_PLACE.findall(text)],
    }


def _hwm_mb(pid: int) -> float:
    """Peak resident size (VmHWM) of a process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
