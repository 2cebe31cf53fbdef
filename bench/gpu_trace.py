"""Replay a fixed trace of GPU jobs against each scheduling policy and compare them.

    python bench/gpu_trace.py                      # 200 jobs, about a minute per policy
    python bench/gpu_trace.py --jobs 400 --scale 0.5 --policies fcfs,backfill

The trace (fixed seed): 70% 1-GPU, 20% 2-GPU, 7% 4-GPU and 3% 8-GPU jobs in random order, each a
``sleep D`` with D lognormal (median 0.75 s x scale for 1-GPU jobs, 1.5x that for 2-GPU jobs, 2x
for 4- and 8-GPU jobs; clipped to 0.2-8 s x scale).  Every job gets ``--time`` = D rounded up to
whole seconds + 1 s, under every policy, so the trace is the same; only ``backfill`` uses it.

For each policy (``TS_SCHED_POLICY``: greedy, fcfs, backfill) a fresh private daemon with 8 fake
GPUs (``TS_FAKE_GPUS``) gets the whole trace queued at ``-S 0`` (nothing starts), then ``-S 8``
releases it at once (at most 8 jobs can hold GPUs, so slots never hold a job back).  From
``ts -M json`` once all have ended: makespan (release to the last end) against the lower bound
max(GPU-seconds / 8, longest job), GPU utilisation, and the waits (start - release).

Every daemon runs on a private socket in a temporary directory; all are stopped, their jobs
killed and the directory removed at the end, on Ctrl-C too.  Progress goes to stderr, the table
(Markdown) to stdout.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV_PYTHON = HERE.parent / ".venv" / "bin" / "python"

if os.path.realpath(sys.prefix) != os.path.realpath(HERE.parent / ".venv") and VENV_PYTHON.exists():
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])

sys.path.insert(0, str(HERE))

from harness import BenchError, OurSpool, kill_marked, log, remove_tree  # noqa: E402
from run import loadavg, machine  # noqa: E402

GPUS = 8
SEED = 20261121
POLICIES = ("greedy", "fcfs", "backfill")
PASS, SHORT, INFO, NA = "PASS", "FALL SHORT", "info", "n/a"


def make_trace(n: int, scale: float, seed: int = SEED) -> list[tuple[int, float]]:
    """(GPUs, seconds) per job, in queue order."""
    rng = random.Random(seed)
    n8 = round(0.03 * n)
    n4 = round(0.10 * n) - n8
    n2 = round(0.20 * n)
    widths = [1] * (n - n2 - n4 - n8) + [2] * n2 + [4] * n4 + [8] * n8
    rng.shuffle(widths)
    factor = {1: 1.0, 2: 1.5, 4: 2.0, 8: 2.0}
    trace = []
    for k in widths:
        units = min(8.0, max(0.2, factor[k] * rng.lognormvariate(math.log(0.75), 0.8)))
        trace.append((k, round(units * scale, 2)))
    return trace


def time_limit(seconds: float) -> str:
    return f"{math.ceil(seconds) + 1}s"


def replay(root: Path, policy: str, trace: list[tuple[int, float]]) -> tuple[float, list[dict[str, Any]]]:
    """Queue the trace on a fresh daemon, release it, wait for the end: (release time, jobs)."""
    spool = OurSpool(root, policy, max_finished=len(trace) + 100)
    gpus = spool.dir / "gpus.json"
    fake = [{"total_mib": 24000, "used_mib": 0, "uuid": f"GPU-{i}"} for i in range(GPUS)]
    gpus.write_text(json.dumps(fake))
    (spool.dir / "leases").mkdir()
    spool.env.update(
        TS_FAKE_GPUS=str(gpus),
        TS_GPU_POLL="0.5",
        TS_SCHED_POLICY=policy,
        TS_GPU_LEASE_DIR=str(spool.dir / "leases"),
    )
    try:
        spool.start(0)  # drains: nothing starts
        for k, seconds in trace:
            spool.submit("-G", str(k), "--time", time_limit(seconds), "sleep", f"{seconds:.2f}")
        log(f"{policy}: {len(trace)} jobs queued; releasing")
        released = time.time()
        spool.ts("-S", str(GPUS))
        lower = max(sum(k * s for k, s in trace) / GPUS, max(s for _, s in trace))
        patience = 6 * lower + 120
        deadline = time.monotonic() + patience
        while True:
            jobs = spool.jobs()
            waiting = [j for j in jobs if j["state"] in ("queued", "allocating", "running")]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{policy}: {len(waiting)} jobs not ended {patience:.0f} s after release")
            time.sleep(1.0)
        log(f"{policy}: all ended {max(j['end_time'] or 0 for j in jobs) - released:.1f} s after release")
        return released, jobs
    finally:
        spool.stop()


def overlaps(jobs: list[dict[str, Any]]) -> int:
    """Pairs of jobs that held the same GPU at the same time (there must be none)."""
    spans: dict[int, list[tuple[float, float]]] = {}
    for j in jobs:
        if j["start_time"] is not None and j["end_time"] is not None:
            for g in j["gpus"] or []:
                spans.setdefault(g, []).append((j["start_time"], j["end_time"]))
    count = 0
    for intervals in spans.values():
        intervals.sort()
        count += sum(1 for a, b in itertools.pairwise(intervals) if b[0] < a[1] - 1e-6)
    return count


def measure(released: float, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    ran = [j for j in jobs if j["start_time"] is not None and j["end_time"] is not None]
    bad = [
        f"{j['id']} ({j['state']}, exit {j['exit_code']}, signal {j['signal']})"
        for j in jobs
        if j["state"] != "finished" or j["exit_code"] != 0
    ]
    used = sum(j["gpus_requested"] * (j["end_time"] - j["start_time"]) for j in ran)
    longest = max(j["end_time"] - j["start_time"] for j in ran)
    makespan = max(j["end_time"] for j in ran) - released
    lower = max(used / GPUS, longest)

    def waits(width: int) -> list[float]:
        return [j["start_time"] - released for j in ran if j["gpus_requested"] >= width]

    return {
        "makespan": makespan,
        "lower": lower,
        "util": used / (GPUS * makespan),
        "wait": waits(1),
        "multi": waits(2),
        "wide": waits(4),
        "bad": bad,
        "overlaps": overlaps(jobs),
        "jobs": len(jobs),
        "wrong_gpus": sum(1 for j in ran if len(j["gpus"] or []) != j["gpus_requested"]),
    }


def verdict(ok: bool | None) -> str:
    return NA if ok is None else PASS if ok else SHORT


def render(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def build_table(res: dict[str, dict[str, Any]], n: int) -> str:
    cols = [p for p in POLICIES if p in res]
    rows = [["figure", *cols, "target", "result"]]

    def row(figure: str, cell: Any, target: str = "-", ok: bool | None = None) -> None:
        rows.append([figure, *(cell(res[p]) for p in cols), target, INFO if target == "-" else verdict(ok)])

    bf, fc = res.get("backfill"), res.get("fcfs")
    both = bf is not None and fc is not None
    mean = statistics.fmean
    some = next(iter(res.values()))
    row(
        "Makespan (release to last end) / lower bound",
        lambda r: f"{r['makespan']:.1f} s / {r['lower']:.1f} s = {r['makespan'] / r['lower']:.3f}x",
        "backfill <= 1/0.9 = 1.111x",
        None if bf is None else bf["makespan"] <= bf["lower"] / 0.9,
    )
    row("GPU utilisation: GPU-s used / (8 x makespan)", lambda r: f"{r['util']:.1%}")
    row(
        f"Mean wait (start - release), all {n} jobs",
        lambda r: f"{mean(r['wait']):.1f} s",
        "backfill < fcfs",
        mean(bf["wait"]) < mean(fc["wait"]) if both else None,
    )
    row("Worst wait, all jobs", lambda r: f"{max(r['wait']):.1f} s")
    row(
        f"Mean wait, {len(some['multi'])} multi-GPU jobs (2, 4, 8 GPUs)",
        lambda r: f"{mean(r['multi']):.1f} s",
        "backfill <= 1.1 x fcfs",
        mean(bf["multi"]) <= 1.1 * mean(fc["multi"]) if both else None,
    )
    row("Worst wait, multi-GPU jobs", lambda r: f"{max(r['multi']):.1f} s")
    row(
        f"Mean / worst wait, {len(some['wide'])} 4- and 8-GPU jobs",
        lambda r: f"{mean(r['wide']):.1f} / {max(r['wide']):.1f} s",
    )
    row(
        "Jobs finished with exit 0; GPU double bookings",
        lambda r: f"{r['jobs'] - len(r['bad'])}/{n}; {r['overlaps'] + r['wrong_gpus']}",
        f"{n}/{n}; 0 (every policy)",
        all(not (r["bad"] or r["overlaps"] or r["wrong_gpus"]) and r["jobs"] == n for r in res.values()),
    )
    return render(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the trace (default 200)")
    parser.add_argument("--scale", type=float, default=0.9, help="seconds per duration unit (default 0.9)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated (default all three)")
    args = parser.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies or any(p not in POLICIES for p in policies) or args.jobs < 10 or args.scale <= 0:
        parser.error(f"--policies takes some of {', '.join(POLICIES)}; --jobs >= 10; --scale > 0")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    info = machine()
    trace = make_trace(args.jobs, args.scale)
    gpu_s = sum(k * s for k, s in trace)
    counts = {k: sum(1 for g, _ in trace if g == k) for k in (1, 2, 4, 8)}
    root = Path(tempfile.mkdtemp(prefix="spooler-gputrace-"))
    log(f"working in {root}; trace: {counts}, {gpu_s:.0f} GPU-s, longest {max(s for _, s in trace):.2f} s")
    results: dict[str, dict[str, Any]] = {}
    try:
        for policy in policies:
            try:
                results[policy] = measure(*replay(root, policy, trace))
            except BenchError as exc:
                log(f"{policy}: not measured: {exc}")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        killed = kill_marked(f"TS_SOCKET={root}")
        if killed:
            log(f"killed {killed} leftover processes")
        remove_tree(root)
    if not results:
        return 1
    print(f"GPU scheduling on a trace, {info['date']}")
    print(
        f"Machine: {info['nproc']} CPUs (nproc), {info['cpu']}, Linux {info['kernel']}; "
        f"Python {info['python']}; {GPUS} fake GPUs (TS_FAKE_GPUS)"
    )
    print(
        f"Trace: {args.jobs} jobs (seed {SEED}, scale {args.scale:g}): "
        + ", ".join(f"{c} x {k}-GPU" for k, c in counts.items())
        + f"; {gpu_s:.0f} GPU-s of `sleep`, longest {max(s for _, s in trace):.2f} s\n"
    )
    print(build_table(results, args.jobs))
    print()
    for policy, r in results.items():
        if r["bad"]:
            print(f"- {policy}: jobs that did not finish with exit 0: {', '.join(r['bad'][:20])}")
    print(
        f"- Whole run: {time.monotonic() - started:.0f} s; load average {info['load']} at the start, "
        f"{loadavg()} at the end."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
