"""How long ``ts results`` takes on a sweep of 1,000 runs that have all written results.

    python bench/results.py            # 1,000 runs, 15 rounds; --runs N --rounds N to change

One private daemon, in a temporary directory removed at the end, runs a sweep of small shell
jobs, each writing a result with nested fields; then every format of ``ts results --sort
--best`` is timed from the prompt (the whole ``ts`` call: start-up, the daemon's rows and
rendering, the printing), and ``Client.results`` from inside Python.  Progress goes to stderr,
the table to stdout.  Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_PYTHON = HERE.parent / ".venv" / "bin" / "python"

if os.path.realpath(sys.prefix) != os.path.realpath(HERE.parent / ".venv") and VENV_PYTHON.exists():
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])

sys.path.insert(0, str(HERE))

from harness import TS as TS_PROGRAM  # noqa: E402
from harness import BenchError, OurSpool, alternate, interpreter_of, log, median, ms, remove_tree  # noqa: E402

TARGET = 0.5  # seconds: "well under a second" for the whole call, start-up included
# Each run writes a result from its arguments: an accuracy that differs from run to run, a loss,
# and a nested table, so the rows have flattened columns to sort, mark and fold.
WRITE = (
    'printf \'{"acc": 0.%s%02d, "loss": %d.5, "metrics": {"f1": 0.%02d}}\' "$1" "$2" "$2" "$2"'
    ' > "$TS_RESULT_FILE"'
)


def sweep_file(directory: Path, runs: int) -> Path:
    seeds = max(1, runs // 50)
    grid = {"k": list(range(runs // seeds)), "seed": list(range(10, 10 + seeds))}
    doc = {
        "name": "bench",
        "command": ["sh", "-c", WRITE, "sh", "%(seed)", "%(k)"],
        "base": {"solver": "lbfgs", "model": {"depth": 12}},
        "grid": [grid],
        "options": {"allow_extra": True},
    }
    path = directory / "sweep.json"
    path.write_text(json.dumps(doc))
    return path


def wait_all_ended(spool: OurSpool, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        jobs = spool.jobs()
        ended = sum(j["state"] in ("finished", "skipped", "lost", "timeout") for j in jobs)
        if ended == count == len(jobs):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{ended} of {count} jobs ended within {timeout:g} s")
        time.sleep(0.2)


def api_seconds(spool: OurSpool, rounds: int) -> float:
    """``Client.results`` timed inside one Python process: the daemon's share and the transfer."""
    code = (
        "import json, sys, time\n"
        "from spooler import Client\n"
        "times = []\n"
        "with Client() as ts:\n"
        f"    for _ in range({rounds}):\n"
        "        start = time.perf_counter()\n"
        "        rows = ts.results(sweep='bench', sort='-result.acc', best='result.acc')\n"
        "        times.append(time.perf_counter() - start)\n"
        "print(json.dumps({'rows': len(rows), 'times': times}))\n"
    )
    done = subprocess.run(
        [str(VENV_PYTHON), "-c", code],
        env=spool.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"Client.results failed: {done.stderr.strip()[-400:]}")
    return median(json.loads(done.stdout)["times"])


def render(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("figure", "measured", "target", "result")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(row)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs in the sweep (default 1000)")
    parser.add_argument("--rounds", type=int, default=15, help="timed calls of each format (default 15)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spooler-bench-results-"))
    spool = OurSpool(root, "results", max_finished=args.runs + 10)
    rows: list[tuple[str, str, str, str]] = []
    try:
        spool.start(slots=8)
        log(f"queueing a sweep of {args.runs} runs")
        ids = spool.ts("sweep", str(sweep_file(spool.dir, args.runs))).split()
        wait_all_ended(spool, len(ids))
        lines = spool.ts("results", "--sweep", "bench", "--sort", "-result.acc", "--best", "result.acc")
        log(f"{len(ids)} runs ended; the table has {len(lines.splitlines())} lines; timing")
        common = ("results", "--sweep", "bench", "--sort", "-result.acc", "--best", "result.acc")
        commands = {
            fmt: ([TS_PROGRAM, *common, "--format", fmt], spool.env)
            for fmt in ("table", "csv", "json", "markdown")
        }
        commands["pass"] = ([interpreter_of(TS_PROGRAM), "-c", "pass"], spool.env)
        commands["ts -l"] = ([TS_PROGRAM, "-l", "--sweep", "bench"], spool.env)
        times = alternate(commands, args.rounds)
        for fmt in ("table", "csv", "json", "markdown"):
            took = median(times[fmt])
            rows.append(
                (
                    f"`ts results --format {fmt}`, {len(ids):,} runs, sorted, best marked, "
                    f"median of {args.rounds}",
                    ms(took),
                    f"< {ms(TARGET)}",
                    "PASS" if took < TARGET else "FALL SHORT",
                )
            )
        rows.append(
            (
                f"`Client.results(...)` in one process, {len(ids):,} rows, median of {args.rounds}",
                ms(api_seconds(spool, args.rounds)),
                "- (reported)",
                "info",
            )
        )
        rows.append(
            (
                "for scale, on the same machine: `python -c pass`; `ts -l --sweep bench`",
                f"{ms(median(times['pass']))}; {ms(median(times['ts -l']))}",
                "- (reference)",
                "info",
            )
        )
    except BenchError as exc:
        log(f"could not measure: {exc}")
        return 1
    finally:
        spool.stop()
        remove_tree(root)
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
