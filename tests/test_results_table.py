"""The pure parts of ``ts results``, table-tested in-process: flattening, field names, sorting,
the best row, folding, the four formats, and ``ts --watch``'s progress line."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import pytest

from spooler.cli.watch import progress
from spooler.daemon.outcome import NOT_JSON, TOO_LARGE, result_problem
from spooler.daemon.render_results import render
from spooler.errors import UsageError
from spooler.results import (
    ResultsError,
    build,
    columns_of,
    flatten,
    resolve,
    short_name,
    sort_by,
)


def row(job: int, **cells: Any) -> dict[str, Any]:
    """A row as the daemon makes it; ``args_x`` stands for ``args.x``, ``result_y`` for ``result.y``."""
    out: dict[str, Any] = {"id": job, "state": cells.pop("state", "finished"), "time": cells.pop("time", 1.5)}
    out.update({key.replace("_", ".", 1): value for key, value in cells.items()})
    return out


# -- flattening and names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"lr": 0.1}, {"args.lr": 0.1}),
        (
            {"opt": {"name": "adam", "beta": [0.9, 0.99]}},
            {"args.opt.name": "adam", "args.opt.beta": [0.9, 0.99]},
        ),
        ({"a": {}}, {"args.a": {}}),
        ({}, {"args": {}}),
        (0.75, {"args": 0.75}),
        ([1, 2], {"args": [1, 2]}),
        ({"x": None, "y": True}, {"args.x": None, "args.y": True}),
    ],
)
def test_flatten(value: Any, expected: dict[str, Any]) -> None:
    out: dict[str, Any] = {}
    flatten(value, "args", out)
    assert out == expected


def test_columns_come_fixed_then_args_then_results_then_notes() -> None:
    rows = [
        {"id": 0, "state": "x", "time": None, "result.acc": 1, "note": "n", "args.b": 1},
        {"id": 1, "state": "x", "time": None, "args.a": 2, "result": 3, "args.b": 2},
    ]
    assert columns_of(rows) == ["id", "state", "time", "args.b", "args.a", "result.acc", "result", "note"]
    assert columns_of([]) == ["id", "state", "time"]


@pytest.mark.parametrize(
    ("column", "columns", "shown"),
    [
        ("args.C", ["args.C", "result.acc"], "C"),
        ("args.lr", ["args.lr", "result.lr"], "args.lr"),
        ("result.lr", ["args.lr", "result.lr"], "result.lr"),
        ("result.m.f1", ["result.m.f1"], "m.f1"),
        ("result", ["result"], "result"),
        ("state", ["state"], "state"),
    ],
)
def test_short_names(column: str, columns: list[str], shown: str) -> None:
    assert short_name(column, columns) == shown


COLUMNS = ["id", "state", "time", "args.lr", "args.C", "result.lr", "result.acc"]


@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("result.acc", "result.acc"),
        ("acc", "result.acc"),
        ("C", "args.C"),
        ("id", "id"),
        ("run_time", "time"),
    ],
)
def test_field_names_full_or_short(name: str, column: str) -> None:
    assert resolve(name, COLUMNS, "--sort") == column


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("lr", "--sort: 'lr' is ambiguous: say args.lr or result.lr"),
        (
            "loss",
            "--sort: unknown field 'loss' (fields: id, state, time, args.lr, args.C, result.lr, result.acc)",
        ),
        ("c", "unknown field 'c'"),
    ],
)
def test_bad_field_names_name_the_fields(name: str, message: str) -> None:
    with pytest.raises(ResultsError) as caught:
        resolve(name, COLUMNS, "--sort")
    assert message in str(caught.value)
    assert isinstance(caught.value, UsageError)


# -- sorting and the best row ---------------------------------------------------------------


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in rows]


MIXED = [
    row(0, result_v=2.5),
    row(1, result_v=None),
    row(2, result_v="b"),
    row(3, result_v=1),
    row(4, result_v=True),
    row(5, result_v=math.nan),
    row(6, result_v=2.5),
    row(7, result_v=[1]),
    row(8, result_v="a"),
]


def test_sorting_groups_kinds_and_puts_blanks_last_both_ways() -> None:
    assert ids(sort_by(MIXED, "result.v", descending=False)) == [3, 0, 6, 4, 8, 2, 7, 1, 5]
    # Descending: within each kind; equal values keep their order; blanks (and NaN) still last.
    assert ids(sort_by(MIXED, "result.v", descending=True)) == [0, 6, 3, 4, 2, 8, 7, 1, 5]


def test_several_sort_keys_the_first_one_leading() -> None:
    rows = [row(0, args_s="b", result_a=1), row(1, args_s="a", result_a=1), row(2, args_s="a", result_a=3)]
    assert ids(build(rows, sort="s,-a").rows) == [2, 1, 0]
    assert ids(build(rows, sort="-a, s").rows) == [2, 1, 0]
    assert ids(build(rows).rows) == [0, 1, 2]  # as given (the daemon gives id order)


@pytest.mark.parametrize("text", ["-", ",", "a,,b", " - "])
def test_bad_sort_text(text: str) -> None:
    with pytest.raises(ResultsError, match="is not FIELD, -FIELD"):
        build([row(0, result_a=1)], sort=text)


@pytest.mark.parametrize(
    ("best", "how", "value", "winners"),
    [
        ("result.acc", "max", 0.9, [1, 3]),
        ("max:acc", "max", 0.9, [1, 3]),
        ("min:acc", "min", 0.1, [0]),
        ("min:args.C", "min", 1, [0, 1]),
    ],
)
def test_the_best_row_ties_included(best: str, how: str, value: float, winners: list[int]) -> None:
    rows = [
        row(0, args_C=1, result_acc=0.1),
        row(1, args_C=1, result_acc=0.9),
        row(2, args_C=2, result_acc=None),
        row(3, args_C=3, result_acc=0.9),
        row(4, args_C=4, result_acc="n/a"),
    ]
    found = build(rows, best=best).best
    assert found is not None
    assert (found.how, found.value, found.ids) == (how, value, winners)


def test_only_numbers_can_be_best() -> None:
    found = build([row(0, result_ok=True), row(1, result_ok=math.inf), row(2, result_ok="x")], best="ok").best
    assert found is not None and found.value is None and found.ids == []


@pytest.mark.parametrize("text", ["avg:acc", "max:", "min: ", ":acc"])
def test_bad_best_text(text: str) -> None:
    with pytest.raises(ResultsError, match="is not FIELD, max:FIELD or min:FIELD"):
        build([row(0, result_acc=1)], best=text)


@pytest.mark.parametrize(
    ("rows", "chosen"),
    [
        ([row(0, result_name="x", result_acc=0.5)], ("result.acc", "max")),
        ([row(0, result_val_loss=0.5, result_acc=0.5)], ("result.val_loss", "min")),
        ([row(0, result_top1_err=0.5)], ("result.top1_err", "min")),
        ([row(0, args_lr=0.1, result_note="x")], None),
        ([row(0, args_lr=0.1)], None),
    ],
)
def test_watch_guesses_the_best_field(rows: list[dict[str, Any]], chosen: tuple[str, str] | None) -> None:
    best = build(rows, pick_best=True).best
    assert (best.column, best.how) == chosen if best else chosen is None


def test_a_result_field_may_be_named_before_any_job_wrote_it() -> None:
    started = [row(0, state="finished", args_C=1), row(1, state="running", time=None, args_C=2)]
    table = build(started, sort="-result.acc", best="result.acc")
    assert ids(table.rows) == [0, 1] and table.best is not None and table.best.value is None
    assert "no run has a number there yet" in render(table, "table")
    with pytest.raises(ResultsError, match="unknown field 'acc'"):
        build(started, sort="acc")  # short names only for fields that exist
    with pytest.raises(ResultsError, match=r"unknown field 'result\.acc'"):
        build(started[:1], sort="result.acc")  # every job ended: a typo


@pytest.mark.parametrize("state", ["queued", "allocating", "held", "running", "paused"])
def test_a_job_that_may_still_write_its_result_allows_the_field(state: str) -> None:
    table = build([row(0, state="finished", args_C=1), row(1, state=state, time=None)], sort="-result.acc")
    assert ids(table.rows) == [0, 1]


def test_an_empty_selection_checks_no_field_names() -> None:
    empty = build([], sort="-result.acc", best="min:loss")
    assert empty.columns == ["id", "state", "time"] and empty.rows == [] and empty.best is None


# -- folding ------------------------------------------------------------------------------------


def test_columns_equal_in_every_row_are_folded() -> None:
    rows = [
        row(0, args_solver="lbfgs", args_C=1, args_flag=1, args_x=1, result_acc=0.5, result_e=None),
        row(1, args_solver="lbfgs", args_C=2, args_flag=True, args_x=1.0, result_acc=0.5, result_e=None),
    ]
    # 1 and true differ (JSON kinds), 1 and 1.0 do not; blank columns are not "equal".
    assert build(rows).constant() == {"args.solver": "lbfgs", "args.x": 1, "result.acc": 0.5}
    assert build(rows[:1]).constant() == {}  # one row: nothing varied, nothing to fold


# -- rendering ------------------------------------------------------------------------------------


SWEEP = [
    row(0, time=0.52, args_C=0.1, args_solver="gd", args_epochs=10, result_acc=0.4201, result_loss=1.5e-5),
    row(1, time=61.0, args_C=1.0, args_solver="sgd", args_epochs=10, result_acc=0.84, result_loss=0.00002),
    row(2, state="failed", time=3.0, args_C=10, args_solver="gd", args_epochs=10, result_acc=None),
]


def test_the_table() -> None:
    text = render(build(SWEEP, sort="-acc", best="acc"), "table")
    assert text.splitlines() == [
        "3 runs: 2 finished, 1 failed",
        "same in every run: epochs = 10",
        "  ID  State      Time    C  solver     acc       loss",
        "*  1  finished  1m01s  1.0  sgd     0.8400  2.000e-05",
        "   0  finished  0.52s  0.1  gd      0.4201  1.500e-05",
        "   2  failed    3.00s   10  gd",
        "* best (max acc): 0.8400, job 1",
    ]


def test_color_marks_the_best_row_in_bold() -> None:
    lines = render(build(SWEEP, best="acc"), "table", color=True).splitlines()
    assert lines[4].startswith("\033[1m*  1") and lines[4].endswith("\033[0m")
    assert "\033[" not in lines[3] + lines[5]


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ([0.96333, 0.95], ["0.9633", "0.9500"]),
        ([2.5, 0.052], ["2.50000", "0.05200"]),
        ([1234.5678, 12.0], ["1234.57", "12.00"]),
        ([123456.7, 100000.0], ["123457", "100000"]),
        ([3, 4], ["3", "4"]),
        ([3, 0.5], ["3.0000", "0.5000"]),
        ([0.0, 0.5], ["0.0000", "0.5000"]),
        ([1e-7, 0.5], ["1.000e-07", "5.000e-01"]),
        ([2e13, 1.0], ["2.000e+13", "1.000e+00"]),
        ([math.nan, 0.5, True], ["nan", "0.5000", "true"]),
    ],
)
def test_result_numbers_get_one_precision_per_column(values: list[Any], shown: list[str]) -> None:
    rows = [row(n, result_v=v) for n, v in enumerate(values)]
    lines = render(build(rows), "table").splitlines()[2:]
    assert [line.split()[-1] for line in lines] == shown


def test_arguments_show_as_written_and_long_or_odd_text_is_tamed() -> None:
    rows = [
        row(0, args_lr=0.001, args_name="a\tb\x1b[31m", args_layers=[64, 64], result_log="x" * 60),
        row(1, args_lr=1e-05, args_name="c", args_layers=[], result_log="short"),
    ]
    lines = render(build(rows), "table").splitlines()
    assert "\x1b" not in "".join(lines) and "\t" not in "".join(lines)
    assert "1e-05" in lines[3] and "[64,64]" in lines[2] and "[]" in lines[3]
    assert "x" * 39 + "…" in lines[2] and "x" * 40 not in lines[2]


def test_csv_keeps_every_column_and_every_digit() -> None:
    text = render(build(SWEEP, best="min:loss"), "csv")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == [
        "id", "state", "time", "args.C", "args.solver", "args.epochs", "result.acc", "result.loss", "best",
    ]  # fmt: skip
    assert table[1] == ["0", "finished", "0.52", "0.1", "gd", "10", "0.4201", "1.5e-05", "true"]
    assert table[3] == ["2", "failed", "3.0", "10", "gd", "10", "", "", "false"]


def test_json_rows_are_flat_and_complete() -> None:
    rows = json.loads(render(build(SWEEP, sort="-acc"), "json"))
    assert rows[0] == {
        "id": 1, "state": "finished", "time": 61.0, "args.C": 1.0, "args.solver": "sgd", "args.epochs": 10,
        "result.acc": 0.84, "result.loss": 0.00002,
    }  # fmt: skip
    assert "best" not in rows[0] and rows[2]["result.acc"] is None


def test_json_writes_a_diverged_run_as_null_not_nan() -> None:
    rows = [row(0, result_loss=float("nan")), row(1, result_loss=float("inf")), row(2, result_loss=0.5)]
    text = render(build(rows), "json")
    assert [r["result.loss"] for r in json.loads(text)] == [None, None, 0.5]
    assert "NaN" not in text and "Infinity" not in text


def test_markdown() -> None:
    rows = [*SWEEP, row(3, args_C=5, args_solver="a|b", args_epochs=10, result_acc=0.5)]
    lines = render(build(rows, best="acc"), "markdown").splitlines()
    assert lines[:4] == [
        "same in every run: epochs = 10.",
        "",
        "| ID | State | Time | C | solver | acc | loss |",
        "|---:|---|---:|---:|---|---:|---:|",
    ]
    assert lines[5] == "| **1** | **finished** | **1m01s** | **1.0** | **sgd** | **0.8400** | **2.000e-05** |"
    assert lines[6] == "| 2 | failed | 3.00s | 10 | gd |  |  |"
    assert lines[7] == "| 3 | finished | 1.50s | 5 | a\\|b | 0.5000 |  |"
    assert lines[-1] == "best (max acc): 0.8400, job 1 (in bold)."


def test_the_empty_table_in_each_format() -> None:
    empty = build([])
    assert render(empty, "table") == "ID  State  Time\n"
    assert render(empty, "csv") == "id,state,time\n"
    assert render(empty, "json") == "[]\n"
    assert render(empty, "markdown") == "| ID | State | Time |\n|---:|---|---:|\n"


# -- result files and the watch line ------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "problem"),
    [
        (NOT_JSON, "result file is not valid JSON"),
        (f"skipped for x; {TOO_LARGE.format(limit=10)}", "result file larger than 10 bytes"),
        ("CUDA ran out of GPU memory (its output says so)", None),
        ("", None),
    ],
)
def test_result_problems_are_found_in_the_reason(reason: str, problem: str | None) -> None:
    assert result_problem(reason) == problem


def job(state: str, exit_code: int | None = 0) -> dict[str, Any]:
    return {"state": state, "exit_code": exit_code, "signal": None}


@pytest.mark.parametrize(
    ("best", "line"),
    [
        (None, "sweep s: 2 of 4 runs done (1 failed), no result yet"),
        ({"field": "result.acc", "how": "max", "value": None, "ids": []},
         "sweep s: 2 of 4 runs done (1 failed), no acc yet"),
        ({"field": "result.acc", "how": "max", "value": 0.912345678, "ids": [3]},
         "sweep s: 2 of 4 runs done (1 failed), best acc 0.912346 (job 3, max result.acc)"),
        ({"field": "result.m.loss", "how": "min", "value": 2, "ids": [1, 4]},
         "sweep s: 2 of 4 runs done (1 failed), best m.loss 2 (job 1,4, min result.m.loss)"),
    ],
)  # fmt: skip
def test_the_watch_progress_line(best: dict[str, Any] | None, line: str) -> None:
    jobs = [job("finished"), job("finished", 1), job("running", None), job("queued", None)]
    assert progress(jobs, best, "sweep s") == line
