"""Performance benchmark of the spooler against its targets (and against the C ``tsp``).

    python bench/run.py            # full run (about 10 minutes at most on 2 cores)
    python bench/run.py --quick    # smaller N, fewer repetitions, same table
    python bench/run.py --only dispatch --dispatch-reps 3   # one phase alone

Every daemon runs on a private socket in a temporary directory; all of them are stopped, their
leftover job processes killed and the directory removed at the end.  Progress goes to stderr; the
table (Markdown) goes to stdout.  This is not part of the test suite and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV_PYTHON = HERE.parent / ".venv" / "bin" / "python"

if os.path.realpath(sys.prefix) != os.path.realpath(HERE.parent / ".venv") and VENV_PYTHON.exists():
    # psutil and msgpack live in the project's virtualenv: run there.
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])

sys.path.insert(0, str(HERE))

import figures  # noqa: E402
from harness import TS, BenchError, Gate, interpreter_of, kill_marked, log, remove_tree  # noqa: E402
from harness import find_c_tsp as _find_c_tsp  # noqa: E402

PHASES = ("latency", "bulk", "dispatch", "scale")  # 5 (idle) comes with latency, 6 with scale
PASS, SHORT, INFO, NA, ERROR = "PASS", "FALL SHORT", "info", "n/a", "ERROR"

FULL = {
    "rounds": 50,
    "bulk_lines": 10_000,
    "bulk_reps": 3,
    "dispatch_n": 1000,
    "dispatch_reps": 5,
    "levels": (100, 10_000, 100_000),
    "enqueue_rounds": 40,
    "list_rounds": 20,
    "idle": 10.0,
}
QUICK = {
    "rounds": 15,
    "bulk_lines": 10_000,
    "bulk_reps": 1,
    "dispatch_n": 300,
    "dispatch_reps": 1,
    "levels": (100, 10_000, 100_000),
    "enqueue_rounds": 12,
    "list_rounds": 8,
    "idle": 10.0,
}


def machine() -> dict[str, str]:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "load": loadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def tsp_version(tsp: str) -> str:
    try:
        out = subprocess.run([tsp, "-V"], capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown version"


def verdict(ok: bool) -> str:
    return PASS if ok else SHORT


def fmt_n(n: int) -> str:
    return f"{n:,}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.notes: list[str] = []

    def add(self, figure: str, measured: str, target: str, result: str) -> None:
        self.rows.append((figure, measured, target, result))

    def error(self, figure: str, exc: BaseException) -> None:
        self.add(figure, f"could not be measured: {exc}", "-", ERROR)

    def render(self) -> str:
        header = ("figure", "measured", "target", "result")
        cells = [header, *self.rows]
        widths = [max(len(r[i].replace("|", "\\|")) for r in cells) for i in range(4)]

        def line(row: tuple[str, ...]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|").ljust(widths[i]) for i, c in enumerate(row)) + " |"

        out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(r) for r in self.rows]
        return "\n".join(out)


def latency_rows(table: Table, lat: dict[str, Any], have_tsp: bool) -> None:
    base = lat["pass"]
    rounds = lat["rounds"]
    for key, label in (("ts true", "`ts true` (enqueue)"), ("ts -l", "`ts -l`, 10 jobs in the list")):
        ratio = lat[key] / base
        table.add(
            f"1. Client latency: {label}, median of {rounds}",
            f"{ms(lat[key])} = {ratio:.2f}x `python -c pass` ({ms(base)})",
            f"<= 1.6x `python -c pass` (<= {ms(1.6 * base)})",
            verdict(ratio <= 1.6),
        )
    if have_tsp:
        table.add(
            f"1. C tsp latency (reference), median of {rounds}",
            f"`tsp true` {ms(lat['tsp true'])}, `tsp -l` {ms(lat['tsp -l'])}; "
            f"ours is {lat['ts true'] / lat['tsp true']:.1f}x / {lat['ts -l'] / lat['tsp -l']:.1f}x",
            "- (reference)",
            INFO,
        )
    else:
        table.add("1. C tsp latency (reference)", "tsp not on PATH", "- (reference)", NA)
    table.notes.append(
        "1: p90 " + ", ".join(f"{k} {ms(v)}" for k, v in lat["p90"].items()) + ". `ts true` goes to a daemon "
        "whose slot is held by a gate job, so the figure is the enqueue alone (fsync on, the default); "
        "tsp likewise."
    )


def bulk_rows(table: Table, bulk: dict[str, Any], enqueue: float | None) -> None:
    if enqueue is None:
        table.add(
            f"2. Bulk: `ts --batch` {fmt_n(bulk['lines'])} lines",
            f"{bulk['median']:.2f} s",
            "< 2 x enqueue + 1 s (enqueue not measured)",
            ERROR,
        )
        return
    limit = 2 * enqueue + 1
    table.add(
        f"2. Bulk: `ts --batch`, {fmt_n(bulk['lines'])} lines, median of {len(bulk['all'])}",
        f"{bulk['median']:.2f} s (all: {', '.join(f'{t:.2f}' for t in bulk['all'])} s)",
        f"< 2 x {ms(enqueue)} + 1 s = {limit:.2f} s",
        verdict(bulk["median"] < limit),
    )


def dispatch_rows(table: Table, disp: dict[Any, Any], have_tsp: bool) -> None:
    from harness import median

    for slots in (1, 8):
        ours = disp[slots]["ours"]
        theirs = disp[slots]["tsp"]
        # The -w clock (release to the return of the last ts -w), the one a user sees and the
        # one tsp is timed with; the -M json clock (end times) goes to the notes.
        rate = median([r["wall_rate"] for r in ours])
        n = ours[0]["n"]
        reps = f"median of {len(ours)}" if len(ours) > 1 else "1 run"
        label = (
            f"3. Dispatch at -S {slots}: {fmt_n(n)} `true` jobs released by a gate, release to the last"
            f" `-w` return, {reps}"
        )
        if have_tsp and theirs:
            trate = median([r["rate"] for r in theirs])
            table.add(
                label,
                f"ours {rate:.0f} jobs/s; tsp {trate:.0f} jobs/s ({fmt_n(theirs[0]['n'])} jobs); "
                f"ours/tsp = {rate / trate:.2f}",
                "ours/tsp >= 1.3",
                verdict(rate >= 1.3 * trate),
            )
        else:
            table.add(label, f"ours {rate:.0f} jobs/s; tsp not on PATH", "ours/tsp >= 1.3", NA)
        from_json = median([r["rate"] for r in ours])
        lag = median([r["gate_lag"] for r in ours])
        table.notes.append(
            f"3 (-S {slots}): ours timed like tsp (gate release to the last `ts -w` exiting): "
            + ", ".join(f"{r['wall_rate']:.0f}" for r in ours)
            + " jobs/s; the same runs from `ts -M json` (gate end_time to the last end_time): "
            f"{from_json:.0f} jobs/s; gate end_time - release = {ms(lag)}."
            + (
                " tsp (gate release to the last `tsp -w` exiting): "
                + ", ".join(f"{r['rate']:.0f}" for r in theirs)
                + " jobs/s."
                if theirs
                else ""
            )
        )
    for slots in (1, 8):
        ours, theirs = disp[slots]["ours"], disp[slots]["tsp"]
        mine = {k: median([r[k] for r in ours]) for k in ("daemon_ms", "launcher_ms", "busy_ms", "use")}
        text = (
            f"ours {mine['busy_ms']:.2f} ms (daemon {mine['daemon_ms']:.2f}, "
            f"{max(r['launchers'] for r in ours)} launcher(s) {mine['launcher_ms']:.2f}, the rest: "
            "the jobs, waiters, kernel), CPUs busy "
            f"{100 * mine['use']:.0f}%"
        )
        if theirs:
            busy, use = median([r["busy_ms"] for r in theirs]), median([r["use"] for r in theirs])
            text += f"; tsp {busy:.2f} ms, CPUs busy {100 * use:.0f}%"
        label = f"3. CPU per job at -S {slots}, all processes of the machine, median"
        table.add(label, text, "- (reported)", INFO)
    floor = disp["floor"]
    table.add(
        "3. Floor: `true` spawned and waited for, no spooler",
        f"{floor['rate']:.0f} jobs/s; CPU per job {floor['child_ms']:.2f} ms in `true` itself, "
        f"{floor['parent_ms']:.2f} ms in the spawner",
        "- (reference)",
        INFO,
    )
    s1 = disp[1]["ours"]
    gap = median([r["gap_median"] for r in s1])
    p99 = median([r["gap_p99"] for r in s1])
    worst = max(r["gap_max"] for r in s1)
    run = median([r["run_median"] for r in s1])
    table.add(
        "3. Exit of one job to start of the next, ours at -S 1",
        f"median {ms(gap)}, p99 {ms(p99)} (worst {ms(worst)}; start to end of a `true` job: {ms(run)})",
        "- (reported)",
        INFO,
    )
    if have_tsp and disp[1]["tsp"]:
        t = disp[1]["tsp"][0]
        table.add(
            "3. tsp: memory of its queued jobs (one client process each)",
            f"{fmt_n(t['procs'])} tsp processes (server and gate included): RSS {t['rss_mb']:.0f} MiB, "
            f"PSS {t['pss_mb']:.0f} MiB in all; queueing {fmt_n(t['n'])} took {t['queue_time']:.2f} s",
            "- (reference)",
            INFO,
        )
        table.notes.append(
            "3: tsp 1.0.1 serves at most 1000 connections (compile-time) and each queued job holds one, "
            f"so its runs queue {fmt_n(disp[1]['tsp'][0]['n'])} jobs; rates are per job. Our dispatch "
            "daemons run with TS_MAXFINISHED raised so that the gate job's record stays in the list."
        )
    else:
        table.add("3. tsp: memory of its queued jobs", "tsp not on PATH", "- (reference)", NA)


def scale_rows(table: Table, sc: dict[str, Any]) -> None:
    levels = sc["levels"]
    keys = sorted(levels)
    lo, hi = keys[0], keys[-1]
    mid = 10_000 if 10_000 in levels else keys[len(keys) // 2]
    for level, bound in ((mid, 3), (100_000, 15)):
        e = levels.get(level, {})
        if "list" in e:
            ratio = e["list"] / e["list_pass"]
            table.add(
                f"4. Scale: `ts -l` with {fmt_n(level)} jobs, median",
                f"{ms(e['list'])} = {ratio:.2f}x `python -c pass` ({ms(e['list_pass'])})",
                f"<= {bound}x `python -c pass` (<= {ms(bound * e['list_pass'])})",
                verdict(ratio <= bound),
            )
    for level, limit in ((10_000, 80), (100_000, 400)):
        if level in levels:
            e = levels[level]
            table.add(
                f"4. Scale: daemon RSS with {fmt_n(level)} queued jobs",
                f"{e['rss_on']:.0f} MiB (peak {e['hwm_on']:.0f} MiB)",
                f"<= {limit} MB",
                verdict(e["rss_on"] * 2**20 <= limit * 10**6),
            )
    enq = " / ".join(ms(levels[k]["enq_on"]) for k in keys)
    ratio = levels[hi]["enq_on"] / levels[lo]["enq_on"]
    where = " / ".join(fmt_n(k) for k in keys)
    table.add(
        f"4. Scale: enqueue latency (`ts true`) at {where} jobs, median of {sc['enqueue_rounds']}, fsync on",
        f"{enq}; {fmt_n(hi)}/{fmt_n(lo)} = {ratio:.2f}x",
        "flat: <= 1.5x",
        verdict(ratio <= 1.5),
    )
    comp = sc.get("compactions") or {}
    if comp.get("pause_ms"):
        longest, pause = max(comp["background_s"]), max(comp["pause_ms"])
        table.add(
            f"4. Scale: save-list compaction up to {fmt_n(hi)} jobs ({len(comp['pause_ms'])} compactions)",
            f"longest {longest:.2f} s in its child process; the daemon paused at most {pause:.1f} ms "
            f"to start one (done in place, requests would wait the whole {longest:.2f} s)",
            "pause <= 100 ms",
            verdict(pause <= 100),
        )
    notes = [f"4: empty daemon RSS {sc['empty_rss']:.0f} MiB"]
    for k in keys:
        e = levels[k]
        part = f"{fmt_n(k)} jobs: RSS {e['rss_on']:.0f} MiB (TS_FSYNC=0 twin {e['rss_off']:.0f} MiB), "
        part += (
            f"slowest enqueue {ms(e['enq_on_max'])}, `python -c pass` {ms(e['enq_pass'])} in the same rounds"
        )
        if "list" in e and k not in (mid, 100_000):
            part += f", `ts -l` {ms(e['list'])}"
        for name, (lines, secs) in e.get("topup", {}).items():
            part += f", top-up `ts --batch` of {fmt_n(lines)} lines on {name} {secs:.2f} s"
        notes.append(part)
    table.notes.append("; ".join(notes) + ".")


def durability_row(table: Table, sc: dict[str, Any]) -> None:
    levels = sc["levels"]
    keys = sorted(levels)
    lo, hi = keys[0], keys[-1]
    enq = " / ".join(ms(levels[k]["enq_on"]) for k in keys)
    ratio = levels[hi]["enq_on"] / levels[lo]["enq_on"]
    where = " / ".join(fmt_n(k) for k in keys)
    off = " / ".join(ms(levels[k]["enq_off"]) for k in keys)
    cost = " / ".join(ms(levels[k]["enq_on"] - levels[k]["enq_off"]) for k in keys)
    table.add(
        f"6. Durability: enqueue with fsync on at {where} jobs (same measurements as 4)",
        f"fsync on {enq} ({fmt_n(hi)}/{fmt_n(lo)} = {ratio:.2f}x); twin daemon with TS_FSYNC=0: {off}; "
        f"fsync costs {cost}",
        "flat: <= 1.5x",
        verdict(ratio <= 1.5),
    )


def idle_row(table: Table, lat: dict[str, Any]) -> None:
    secs = lat["idle_seconds"]
    cpu = lat["idle_cpu"]
    extra = f"; tsp server {ms(lat['tsp_idle_cpu'])}" if "tsp_idle_cpu" in lat else ""
    table.add(
        f"5. Idle daemon CPU (user+system) over {secs:g} s",
        f"{ms(cpu)} (on CPU per schedstat: {lat['idle_run_ns'] / 1e6:.2f} ms, "
        f"{lat['idle_switches']} context switches){extra}",
        f"< {ms(0.010 * secs / 10)}",
        verdict(cpu < 0.010 * secs / 10),
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller N and fewer repetitions (about 2 minutes)"
    )
    parser.add_argument(
        "--only",
        choices=PHASES,
        action="append",
        help="run only this phase (may be repeated); the table then holds only its rows",
    )
    parser.add_argument("--dispatch-reps", type=int, help="repetitions of each dispatch run")
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    if args.dispatch_reps:
        cfg["dispatch_reps"] = args.dispatch_reps
    only = set(args.only or PHASES)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    info = machine()
    tsp = _find_c_tsp()
    python = interpreter_of(TS)
    root = Path(tempfile.mkdtemp(prefix="spooler-bench-"))
    ctx = figures.Context(root=root, python=python, tsp=tsp, quick=args.quick)
    log(f"working in {root}; ts = {TS}; interpreter = {python}; tsp = {tsp or 'not on PATH'}")
    table = Table()
    results: dict[str, Any] = {}
    try:
        if "latency" in only:
            try:
                results["lat"] = figures.client_latency_and_idle(ctx, cfg["rounds"], cfg["idle"])
                latency_rows(table, results["lat"], bool(tsp))
            except BenchError as exc:
                table.error("1. Client latency", exc)
        if "bulk" in only:
            try:
                bulk = figures.bulk(ctx, cfg["bulk_lines"], cfg["bulk_reps"])
                bulk_rows(table, bulk, results.get("lat", {}).get("ts true"))
            except BenchError as exc:
                table.error("2. Bulk submission", exc)
        if "dispatch" in only:
            try:
                disp = figures.dispatch(ctx, cfg["dispatch_n"], cfg["dispatch_reps"])
                dispatch_rows(table, disp, bool(tsp))
            except BenchError as exc:
                table.error("3. Dispatch", exc)
        if "scale" in only:
            try:
                results["scale"] = figures.scale(
                    ctx, cfg["levels"], cfg["enqueue_rounds"], cfg["list_rounds"]
                )
                scale_rows(table, results["scale"])
            except BenchError as exc:
                table.error("4. Scale", exc)
        if "latency" in only:
            if "lat" in results:
                idle_row(table, results["lat"])
            else:
                table.add("5. Idle daemon CPU", "not measured (the latency phase failed)", "< 10 ms", ERROR)
        if "scale" in only:
            if "scale" in results:
                durability_row(table, results["scale"])
            else:
                table.add("6. Durability", "not measured (the scale phase failed)", "flat: <= 1.5x", ERROR)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        cleanup(ctx, keep=args.keep)
    mode = "--quick" if args.quick else "full"
    print(f"Spooler benchmark ({mode} run), {info['date']}")
    print(
        f"Machine: {info['nproc']} CPUs (nproc), {info['cpu']}, Linux {info['kernel']}; "
        f"Python {info['python']} ({python}); C task spooler: "
        + (f"{tsp} ({tsp_version(tsp)})" if tsp else "not on PATH")
    )
    print()
    print(table.render())
    print()
    for note in table.notes:
        print(f"- {note}")
    print(
        f"- Whole run: {time.monotonic() - started:.0f} s; load average {info['load']} at the start, "
        f"{loadavg()} at the end (other work on the machine inflates every wall time)."
    )
    return 0


def cleanup(ctx: figures.Context, keep: bool = False) -> None:
    """Stop every daemon and server first (closing a gate would let queued jobs run), then kill
    leftovers, then release the gates and remove the directory."""
    for item in reversed(ctx.cleanups):
        if not isinstance(item, Gate):
            try:
                item.stop()
            except Exception as exc:
                log(f"clean-up of {getattr(item, 'dir', item)}: {exc}")
    killed = kill_marked(f"TS_SOCKET={ctx.root}")
    if killed:
        log(f"killed {killed} leftover processes")
    for item in ctx.cleanups:
        if isinstance(item, Gate):
            item.close()
    if keep:
        log(f"kept {ctx.root}")
    else:
        remove_tree(ctx.root)


if __name__ == "__main__":
    sys.exit(main())
