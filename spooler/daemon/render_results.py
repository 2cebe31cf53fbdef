"""Text of ``ts results`` in its four formats: an aligned table, CSV, JSON and Markdown.

This runs in the daemon, as the job list's rendering does, so the client prints a string.  The
table and Markdown are for people: columns equal in every row go to a line above them, results
get a precision that fits the column, the best row is marked.  CSV and JSON are for programs:
every column, full dotted names, values exactly as the jobs wrote them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from typing import Any

from spooler.results import Results, Row, short_name
from spooler.text import duration

_HEADERS = {"id": "ID", "state": "State", "time": "Time"}
_STATE_ORDER = (
    "finished",
    "failed",
    "timeout",
    "skipped",
    "lost",
    "running",
    "paused",
    "allocating",
    "queued",
    "held",
)
_MAX_CELL = 40  # characters of a text cell in the table; CSV and JSON are never cut
_BOLD, _RESET = "\033[1m", "\033[0m"
_CONTROL = {c: " " for c in range(32)} | {127: " "}


def render(results: Results, fmt: str, color: bool = False) -> str:
    if fmt == "csv":
        return _csv(results)
    if fmt == "json":
        # Strict JSON (jq, most parsers) has no NaN or Infinity: a diverged run's loss is null.
        rows = [{k: _finite(v) for k, v in row.items()} for row in _plain_rows(results)]
        return json.dumps(rows, allow_nan=False) + "\n"
    if fmt == "markdown":
        return _markdown(results)
    return _table(results, color)


def _plain_rows(results: Results) -> list[Row]:
    """The rows as ``--format json`` and ``Client.results`` give them."""
    if results.best is None:
        return results.rows
    best = set(results.best.ids)
    return [{**row, "best": row["id"] in best} for row in results.rows]


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


# -- cells for people -----------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _result_format(values: list[Any]) -> Callable[[Any], str]:
    """One precision for a whole result column, so its numbers line up and compare at a
    glance: four significant digits for the smallest, at most six decimals, else scientific."""
    numbers = [abs(v) for v in values if _is_number(v) and math.isfinite(v)]
    if not any(isinstance(v, float) for v in values) or not numbers:
        return _text
    nonzero = [v for v in numbers if v] or [1.0]
    low, high = min(nonzero), max(numbers)
    if low < 1e-4 or high >= 1e12:
        spec = ".3e"
    else:
        spec = f".{min(6, max(0, 3 - math.floor(math.log10(low))))}f"

    def number(value: Any) -> str:
        if _is_number(value) and math.isfinite(value):
            return format(value, spec)
        return _text(value)

    return number


def _text(value: Any) -> str:
    """A value as a person reads it: JSON spelling for true, false and lists; blank for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _formatter(results: Results, column: str) -> Callable[[Any], str]:
    values = [row.get(column) for row in results.rows]  # a --best field no job has written yet
    if column == "time":
        return duration
    return _result_format(values) if column.startswith("result") else _text


def _human(results: Results, columns: list[str]) -> tuple[list[list[str]], list[bool]]:
    """Each row's cells as text, and which columns are right-aligned (numbers and times)."""
    formats = [_formatter(results, column) for column in columns]
    right = []
    for column in columns:
        values = [row[column] for row in results.rows]
        numbers = any(v is not None for v in values) and all(v is None or _is_number(v) for v in values)
        right.append(column in ("id", "time") or numbers)
    cells = [[fmt(row[c]) for fmt, c in zip(formats, columns, strict=True)] for row in results.rows]
    return cells, right


def _headers(results: Results, columns: list[str]) -> list[str]:
    return [_HEADERS.get(c) or short_name(c, results.columns) for c in columns]


def _folded(results: Results) -> tuple[list[str], str]:
    """The columns left to show, and the line naming those equal in every row."""
    constant = results.constant()
    shown = [c for c in results.columns if c not in constant]
    if not constant:
        return shown, ""
    parts = [f"{short_name(c, results.columns)} = {_formatter(results, c)(v)}" for c, v in constant.items()]
    return shown, "same in every run: " + ", ".join(parts)


def _summary(results: Results) -> str:
    """``8 runs: 5 finished, 1 failed, 2 running``: the states in the order of a run's life."""
    states = dict.fromkeys(_STATE_ORDER, 0)
    for row in results.rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in states.items() if n)
    runs = len(results.rows)
    return f"{runs} run{'s' * (runs != 1)}" + (f": {counts}" if counts else "")


def _best_line(results: Results) -> str:
    best = results.best
    if best is None:
        return ""
    name = short_name(best.column, results.columns)
    if best.value is None:
        return f"best ({best.how} {name}): no run has a number there yet"
    jobs = ", ".join(map(str, best.ids))
    value = _formatter(results, best.column)(best.value)
    return f"best ({best.how} {name}): {value}, job{'s' * (len(best.ids) > 1)} {jobs}"


def _clean(text: str, limit: int) -> str:
    text = text.translate(_CONTROL)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the formats ----------------------------------------------------------------------------


def _table(results: Results, color: bool) -> str:
    columns, folded = _folded(results)
    cells, right = _human(results, columns)
    cells = [[_clean(c, _MAX_CELL) for c in row] for row in cells]
    headers = _headers(results, columns)
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    marks = results.best is not None
    best = set(results.best.ids) if results.best else set()

    def line(row: list[str], mark: str) -> str:
        text = "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        ).rstrip()
        return f"{mark} {text}" if marks else text

    lines = [_summary(results)] if results.rows else []
    lines += [folded] if folded else []
    lines.append(line(headers, " "))
    for job, row in zip(results.rows, cells, strict=True):
        text = line(row, "*" if job["id"] in best else " ")
        lines.append(f"{_BOLD}{text}{_RESET}" if color and job["id"] in best else text)
    if marks and results.rows:
        lines.append(f"* {_best_line(results)}" if results.best and results.best.ids else _best_line(results))
    return "\n".join(lines) + "\n"


def _markdown(results: Results) -> str:
    columns, folded = _folded(results)
    cells, right = _human(results, columns)
    best = set(results.best.ids) if results.best else set()

    def line(row: list[str]) -> str:
        return "| " + " | ".join(row) + " |"

    out = [f"{folded}.", ""] if folded else []
    out.append(line([h.replace("|", "\\|") for h in _headers(results, columns)]))
    out.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    for job, row in zip(results.rows, cells, strict=True):
        row = [_clean(c, 10_000).replace("|", "\\|") for c in row]
        if job["id"] in best:
            row = [f"**{c}**" if c else c for c in row]
        out.append(line(row))
    if results.best is not None and results.rows:
        out += ["", f"{_best_line(results)}" + (" (in bold)." if results.best.ids else ".")]
    return "\n".join(out) + "\n"


def _csv(results: Results) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rows = _plain_rows(results)
    columns = [*results.columns, *(["best"] if results.best is not None else [])]
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in columns])
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # every digit the job wrote: CSV is read by programs
    return _text(value)
