"""The slurm backend's cost to the controller: a 1,000-run sweep, and polling 1,000 jobs.

    python bench/slurm.py                       # against tests/slurm/cluster.sh's cluster
    python bench/slurm.py --runs 1000 --window 60 --single 200

Needs a running SLURM cluster (``tests/slurm/cluster.sh up``; ``SLURM_CONF`` or its default
place).  Every SLURM client call the daemon makes is counted by wrappers put first on its
``PATH`` (``sbatch``, ``squeue``, ``scancel``, ``sacct``, ``scontrol``), which log their name
and run the real tool.  Three figures:

1. ``ts sweep`` of ``--runs`` runs (``sleep 600``, ``-S 4``): the time until ``ts`` has printed
   every id, the time until every run has its SLURM id, and the ``sbatch`` calls made;
2. polling with all those runs in SLURM (4 running, the rest pending) at the default
   ``poll_interval`` (5 s): SLURM client calls per minute, over ``--window`` seconds;
3. what one ``sbatch`` per run would cost instead: ``--single`` held jobs submitted one by one,
   timed, scaled to ``--runs``.

Every job is cancelled and the daemon stopped at the end, on Ctrl-C too.  The table (Markdown)
goes to stdout; progress to stderr.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TS = HERE.parent / ".venv" / "bin" / "ts"
TOOLS = ("sbatch", "squeue", "scancel", "sacct", "scontrol")


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def wrappers(root: Path, log: Path) -> Path:
    """A directory of stand-ins that log each call, then exec the real tool."""
    bindir = root / "counting-bin"
    bindir.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        if real is None:
            raise SystemExit(f"{tool} is not installed: is SLURM?")
        script = bindir / tool
        script.write_text(f'#!/bin/sh\necho {tool} >> "{log}"\nexec {real} "$@"\n')
        script.chmod(0o755)
    return bindir


def counts(log: Path) -> dict[str, int]:
    found = {tool: 0 for tool in TOOLS}
    if log.exists():
        for line in log.read_text().split():
            found[line] = found.get(line, 0) + 1
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of polling to count")
    parser.add_argument("--single", type=int, default=200, help="single sbatch calls to time")
    args = parser.parse_args()
    conf = os.environ.get("SLURM_CONF") or "/tmp/spooler-slurm/etc/slurm.conf"
    root = Path(tempfile.mkdtemp(prefix="ts-bench-slurm-"))
    log = root / "calls"
    bindir = wrappers(root, log)
    (root / "logs").mkdir()
    (root / "config.toml").write_text('backend = "slurm"\n[slurm]\nmax_in_flight = 100000\n')
    env = {
        **os.environ,
        "SLURM_CONF": conf,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "TS_SOCKET": str(root / "sock"),
        "TS_SAVELIST": str(root / "state" / "savelist"),
        "TS_CONFIG": str(root / "config.toml"),
        "TMPDIR": str(root / "logs"),
        "TS_FSYNC": "0",
    }

    def ts(*argv: str) -> str:
        done = subprocess.run([str(TS), *argv], env=env, capture_output=True, text=True, check=True, cwd=root)
        return done.stdout

    sweep = root / "sweep.toml"
    sweep.write_text(
        f'name = "bench"\ncommand = "sleep 600 # %(i)"\n[[grid]]\ni = {list(range(args.runs))}\n'
    )
    rows: list[tuple[str, str, str]] = []
    try:
        ts("-S", "4")
        before = counts(log)
        say(f"ts sweep of {args.runs} runs")
        began = time.monotonic()
        ids = ts("sweep", str(sweep)).split()
        printed = time.monotonic() - began
        assert len(ids) == args.runs, f"{len(ids)} ids printed"
        while True:
            jobs = json.loads(ts("-M", "json"))
            if all(j["slurm_id"] for j in jobs):
                break
            time.sleep(0.05)
        in_slurm = time.monotonic() - began
        made = counts(log)
        sbatch_calls = made["sbatch"] - before["sbatch"]
        rows += [
            (f"{args.runs}-run sweep: time to all ids printed", "< 2 s", f"{printed:.2f} s"),
            (f"{args.runs}-run sweep: time until every run has its SLURM id", "< 5 s", f"{in_slurm:.2f} s"),
            (f"{args.runs}-run sweep: sbatch calls", "1", f"{sbatch_calls} (incl. 1 --test-only check)"),
        ]
        say(f"polling for {args.window:g} s with {args.runs} jobs in SLURM")
        start = counts(log)
        time.sleep(args.window)
        end = counts(log)
        per_minute = {t: (end[t] - start[t]) * 60.0 / args.window for t in TOOLS}
        total = sum(per_minute.values())
        detail = ", ".join(f"{t} {v:.1f}" for t, v in per_minute.items() if v)
        rows.append((f"SLURM client calls per minute, {args.runs} jobs in flight", "a handful (<= 12)",
                     f"{total:.1f} ({detail or 'none'})"))  # fmt: skip
        say(f"{args.single} single sbatch calls, held")
        script = "#!/bin/sh\ntrue\n"
        began = time.monotonic()
        held = []
        for _ in range(args.single):
            done = subprocess.run(
                ["sbatch", "--parsable", "--hold", "-o", "/dev/null", f"--chdir={root}"],
                input=script,
                env={**os.environ, "SLURM_CONF": conf},
                capture_output=True,
                text=True,
                check=True,
            )
            held.append(done.stdout.strip())
        each = (time.monotonic() - began) / args.single
        subprocess.run(["scancel", *held], env={**os.environ, "SLURM_CONF": conf}, check=False)
        rows += [
            ("one sbatch per run instead: time per call", "-", f"{each * 1000:.1f} ms"),
            (f"one sbatch per run instead: {args.runs} calls", f"{args.runs} calls",
             f"{each * args.runs:.1f} s (scaled from {args.single})"),
        ]  # fmt: skip
    finally:
        subprocess.run([str(TS), "-T"], env=env, capture_output=True, check=False)
        subprocess.run([str(TS), "-K"], env=env, capture_output=True, check=False)
        listed = subprocess.run(  # %F: a job array once, by its own id
            ["squeue", "--me", "-h", "-o", "%F|%Z"], env=env, capture_output=True, text=True
        )
        ours = sorted({line.split("|")[0] for line in listed.stdout.splitlines() if line.endswith(str(root))})
        if ours:
            subprocess.run(
                [shutil.which("scancel", path=os.environ["PATH"]) or "scancel", *ours], env=env, check=False
            )
        shutil.rmtree(root, ignore_errors=True)
    print("| figure | target | result |\n| --- | --- | --- |")
    for figure, target, result in rows:
        print(f"| {figure} | {target} | {result} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
