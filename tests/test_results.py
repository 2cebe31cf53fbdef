"""``ts results`` through the real ``ts``: a real (small) sweep compared at a glance, in every
format, the Python API's rows, ``ts --watch`` on a sweep, odd results and bad input; and how
its command line is parsed."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Spool, wait_for

from spooler.cli.parse import parse
from spooler.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import logistic  # noqa: E402  (the experiment itself, to know the accuracies to expect)

CS = [0.001, 0.01, 0.1, 1.0]
SOLVERS = ["gd", "sgd"]


def all_ended(spool: Spool) -> list[dict[str, Any]]:
    def ended() -> list[dict[str, Any]] | None:
        jobs = spool.jobs()
        return jobs if all(j["state"] not in ("queued", "allocating", "running") for j in jobs) else None

    return list(wait_for(ended, timeout=60, what="every job to end"))


@pytest.fixture
def digits(spool: Spool) -> dict[tuple[float, str], float]:
    """The sweep of the issue, re-created: 4 values of C x 2 solvers, each run writing its
    accuracy to $TS_RESULT_FILE.  Returns the accuracy each (C, solver) must show."""
    sweep = {
        "name": "digits",
        "command": [sys.executable, str(FIXTURES / "logistic.py"), "--C", "%(C)", "--solver", "%(solver)"],
        "grid": [{"C": CS, "solver": SOLVERS}],
    }
    (spool.root / "digits.json").write_text(json.dumps(sweep))
    assert len(spool.ts("sweep", "digits.json").split()) == 8
    assert all(j["state"] == "finished" and j["exit_code"] == 0 for j in all_ended(spool))
    return {(c, s): logistic.accuracy(c, s) for c in CS for s in SOLVERS}


def test_the_sweep_as_a_table_sorted_with_the_best_marked(spool: Spool, digits: dict[Any, float]) -> None:
    lines = spool.ts(
        "results", "--sweep", "digits", "--sort", "-result.acc", "--best", "result.acc"
    ).splitlines()
    assert lines[0] == "8 runs: 8 finished"
    header = lines[1].split()
    assert header == ["ID", "State", "Time", "C", "solver", "acc"]
    rows = [line for line in lines[2:-1]]
    assert len(rows) == 8
    seen = []
    for line in rows:
        mark, cells = line[0], line[1:].split()
        job, state, _time, c, solver, acc = cells
        assert state == "finished"
        assert float(acc) == pytest.approx(digits[(float(c), solver)], abs=5e-5)
        seen.append((mark, float(acc), int(job)))
    accs = [acc for _, acc, _ in seen]
    assert accs == sorted(accs, reverse=True)
    best = max(digits.values())
    assert [mark for mark, acc, _ in seen if acc == best] == ["*"] * sum(v == best for v in digits.values())
    assert all(mark == " " for mark, acc, _ in seen if acc != best)
    assert lines[-1].startswith("* best (max acc): ") and str(best) in lines[-1]
    # Numbers are right-aligned: every acc cell ends in the same column.
    ends = {len(line.rstrip()) for line in rows}
    assert len(ends) == 1


def test_the_sweep_as_csv_json_and_markdown(spool: Spool, digits: dict[Any, float]) -> None:
    args = ("results", "--sweep", "digits", "--sort", "-acc", "--best", "acc")
    table = list(csv.DictReader(io.StringIO(spool.ts(*args, "--format", "csv"))))
    assert list(table[0]) == ["id", "state", "time", "args.C", "args.solver", "result.acc", "best"]
    assert [float(r["result.acc"]) for r in table] == sorted(digits.values(), reverse=True)
    assert all(float(r["result.acc"]) == digits[(float(r["args.C"]), r["args.solver"])] for r in table)
    best = max(digits.values())
    assert {r["best"] for r in table if float(r["result.acc"]) == best} == {"true"}
    assert {r["best"] for r in table if float(r["result.acc"]) != best} == {"false"}

    rows = json.loads(spool.ts(*args, "--format", "json"))
    assert [(r["args.C"], r["args.solver"], r["result.acc"]) for r in rows] == [
        (float(r["args.C"]), r["args.solver"], float(r["result.acc"])) for r in table
    ]
    assert [r["best"] for r in rows] == [r["best"] == "true" for r in table]
    assert all(isinstance(r["time"], float) and r["state"] == "finished" for r in rows)

    markdown = spool.ts(*args, "--format", "markdown").splitlines()
    assert markdown[0] == "| ID | State | Time | C | solver | acc |"
    assert markdown[1] == "|---:|---|---:|---:|---|---:|"
    body = markdown[2:10]
    cells = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in body]
    assert [float(c[5]) for c in cells] == pytest.approx(sorted(digits.values(), reverse=True), abs=5e-5)
    assert body[0].startswith("| **") and not body[-1].startswith("| **")
    assert markdown[-1].startswith("best (max acc): ") and markdown[-1].endswith("(in bold).")


def test_the_python_api_gives_the_rows_of_json(spool: Spool, digits: dict[Any, float]) -> None:
    code = (
        "import json; from spooler import Client\n"
        "with Client() as ts:\n"
        "    print(json.dumps(ts.results(sweep='digits', sort=['args.solver', '-result.acc'], best='acc')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=spool.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows == json.loads(
        spool.ts("results", "--sweep", "digits", "--sort", "solver,-acc", "--best", "acc", "--format", "json")
    )
    assert [r["args.solver"] for r in rows] == ["gd"] * 4 + ["sgd"] * 4
    assert [r["result.acc"] for r in rows[:4]] == sorted((digits[(c, "gd")] for c in CS), reverse=True)


def test_filters_ids_and_where(spool: Spool, digits: dict[Any, float]) -> None:
    ids = spool.ts("results", "--sweep", "digits", "--sort", "-acc", "--ids").split()
    by_acc = sorted(spool.jobs(), key=lambda j: (-j["result"]["acc"], j["id"]))
    assert ids == [str(j["id"]) for j in by_acc]
    good = json.loads(spool.ts("results", "--where", "result.acc >= 0.83", "--format", "json"))
    assert sorted(r["result.acc"] for r in good) == sorted(v for v in digits.values() if v >= 0.83)
    # One solver only: its column is folded into the line above the table.
    lines = spool.ts("--sweep", "digits", "results", "--where", 'args.solver == "gd"').splitlines()
    assert lines[1] == "same in every run: solver = gd"
    assert lines[2].split() == ["ID", "State", "Time", "C", "acc"]


def test_watch_on_a_sweep_shows_runs_done_and_the_best(spool: Spool, digits: dict[Any, float]) -> None:
    frame = spool.ts("--watch", "--sweep", "digits")
    best = max(digits.values())
    best_ids = [str(j["id"]) for j in spool.jobs() if j["result"]["acc"] == best]
    assert f"sweep digits: 8 of 8 runs done, best acc {best:.6g} (job {','.join(best_ids)}" in frame
    assert "max result.acc" in frame
    low = spool.ts("--watch", "--sweep", "digits", "--best", "min:acc")
    assert f"best acc {min(digits.values()):.6g}" in low and "min result.acc" in low
    everything = spool.ts("--watch", "--best", "acc")  # no filter: over every job
    assert f"all jobs: 8 of 8 runs done, best acc {best:.6g}" in everything


def test_watch_while_the_sweep_runs(spool: Spool) -> None:
    gate = spool.root / "gate"
    running = spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done")
    spool.wait_state(running, "running")
    spool.submit("true", "%(n)", opts=("--arg", "n=0", "--"))
    frame = spool.ts("--watch", "--where", "args.n == 0").splitlines()
    assert "slots 1/1" in frame[0]  # the daemon's slots in use, not only those of the jobs shown
    assert frame[2] == "selected jobs: 0 of 1 run done, no result yet"
    gate.touch()
    all_ended(spool)


def test_odd_results_still_show(spool: Spool) -> None:
    writes = [
        '{"acc": 0.9, "metrics": {"f1": 0.8, "per_class": [0.7, 0.9]}}',
        "not json at all",
        "0.75",
        "",
    ]
    for n, text in enumerate(writes):
        write = f"printf '%s' '{text}' > \"$TS_RESULT_FILE\"" if text else "true"
        spool.submit(f"{write} # %(n)", opts=("--arg", f"n={n}", "--"))
    all_ended(spool)
    rows = json.loads(spool.ts("results", "--format", "json"))
    assert rows[0]["result.acc"] == 0.9 and rows[0]["result.metrics.f1"] == 0.8
    assert rows[0]["result.metrics.per_class"] == [0.7, 0.9]
    assert rows[1]["note"] == "result file is not valid JSON"
    assert rows[1]["result.acc"] is None
    assert rows[2]["result"] == 0.75
    assert all(value is None for key, value in rows[3].items() if key.startswith("result"))
    table = spool.ts("results").splitlines()
    headers = ["ID", "State", "Time", "n", "acc", "metrics.f1", "metrics.per_class", "result", "note"]
    assert table[1].split() == headers
    assert "[0.7,0.9]" in table[2] and "result file is not valid JSON" in table[3]


def test_an_empty_selection_prints_the_header_and_says_so(spool: Spool) -> None:
    for fmt, header in (("table", "ID  State  Time\n"), ("csv", "id,state,time\n"), ("json", "[]\n")):
        done = spool.run("results", "--sweep", "nothing", "--sort", "-result.acc", "--format", fmt)
        assert done.returncode == 0 and done.stdout == header
        assert done.stderr == "ts: no job matches these filters\n"
    done = spool.run("results", "--format", "markdown")
    assert done.returncode == 0 and done.stdout.startswith("| ID | State | Time |")
    assert done.stderr == "ts: no job matches\n"


@pytest.fixture
def tiny(spool: Spool) -> Spool:
    """Two runs of a sweep named digits whose results are written by the shell: quick to make."""
    command = 'printf \'{"acc": 0.5}\' > "$TS_RESULT_FILE" # %(C) %(solver)'
    grid = [{"C": [1], "solver": ["gd"]}, {"C": [2], "solver": ["sgd"]}]
    (spool.root / "tiny.json").write_text(json.dumps({"name": "digits", "command": command, "grid": grid}))
    spool.ts("sweep", "tiny.json")
    assert len(all_ended(spool)) == 2
    return spool


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--sort", "result.loss"), "--sort: unknown field 'result.loss' (fields: id, state, time, args.C, "
                                    "args.solver, result.acc)"),
        (("--best", "min:nope"), "--best: unknown field 'nope'"),
        (("--best", "avg:acc"), "--best: 'avg:acc' is not FIELD, max:FIELD or min:FIELD"),
        (("--sort", "-"), "--sort: '-' is not FIELD"),
        (("--format", "xml"), "--format: unknown format 'xml': choose table, csv, json or markdown"),
        (("--sort",), "--sort needs a value"),
        (("-M", "json"), "ts results takes filters, --sort, --best, --format and --ids only"),
        (("python", "x.py"), "ts results takes filters, --sort, --best, --format and --ids, not 'python'"),
        (("--state", "done"), "unknown state 'done'"),
        (("--where", "result.acc >"), "--where: position"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_a_failure(tiny: Spool, args: tuple[str, ...], message: str) -> None:
    done = tiny.run("results", "--sweep", "digits", *args)
    assert done.returncode != 0
    assert message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_results_options_belong_to_results(spool: Spool) -> None:
    for args in (("-l", "--sort", "id"), ("--best", "acc", "true"), ("--watch", "--format", "csv")):
        done = spool.run(*args)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    # "ts -- results" queues a command named results, as "ts -- sweep" does.
    assert spool.run("--", "results").stdout.strip() == "0"


def test_the_client_stays_a_printer(tiny: Spool) -> None:
    # The daemon builds and renders the rows: ts results imports none of that, nor the daemon.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "spooler", "results", "--sort", "-acc", "--best", "acc"],
        env=tiny.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "spooler.cli.main" in imported
    assert not {name for name in imported if name.startswith(("spooler.daemon", "spooler.results", "json"))}
    assert "same in every run: acc = 0.5000" in done.stdout
    assert "* best (max acc): 0.5000, jobs 0, 1" in done.stdout


# -- the command line, parsed in-process ---------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "filters", "results"),
    [
        (["results"], {}, {}),
        (["results", "--sweep", "d", "--sort", "-result.acc"], {"sweep": "d"}, {"sort": "-result.acc"}),
        (["--sweep", "d", "results", "--best", "min:loss", "--ids"], {"sweep": "d", "ids_only": True},
         {"best": "min:loss"}),
        (["results", "--format=csv", "--state", "failed"], {"states": "failed"}, {"format": "csv"}),
    ],
)  # fmt: skip
def test_parsing_results(argv: list[str], filters: dict[str, Any], results: dict[str, str]) -> None:
    inv = parse(argv)
    assert (inv.action, inv.filters, inv.results, inv.command) == ("results", filters, results, [])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["results", "--format", "xml"], "--format: unknown format 'xml'"),
        (["results", "train.py"], "not 'train.py'"),
        (["results", "-L", "x"], "takes filters, --sort, --best, --format and --ids only"),
        (["-n", "results"], "takes filters, --sort, --best, --format and --ids only"),
        (["-l", "--sort", "id"], "go with ts results"),
        (["--best", "acc", "python", "x.py"], "go with ts results"),
        (["--watch", "--sort", "id"], "--watch takes filters and --best"),
        (["-i", "--sweep", "x"], "does not take --state"),
    ],
)
def test_parsing_bad_results(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(argv)


def test_results_help_is_the_usage() -> None:
    assert parse(["results", "--sweep", "x", "-h"]).action == "help"


def test_results_after_double_dash_is_a_command() -> None:
    assert parse(["--", "results"]).command == ["results"]
    assert parse(["--watch", "--sweep", "s", "--best", "acc"]).results == {"best": "acc"}
