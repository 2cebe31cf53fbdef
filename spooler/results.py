"""The rows of ``ts results`` and ``Client.results``: one per job, with its arguments and its
result flattened into dotted columns (``args.opt.name``, ``result.acc``), sorted, the best row
found, and the columns equal in every row set apart so a table can show only what varied.

Pure functions over plain values, shared by both sides of the socket.  The daemon builds the
rows (``daemon/handlers/results.py`` says why there) and shell completion reads field names
with :func:`flatten`.  Values stay as the job wrote them: formatting is the renderer's business.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from spooler.errors import UsageError

Row = dict[str, Any]
FIXED = ("id", "state", "time")  # every row has these, in this order, before args.* and result.*
NOTE = "note"  # why a job's result is missing (its file was not valid JSON, say)
FORMATS = ("table", "csv", "json", "markdown")
_WAITING = ("queued", "allocating", "held", "running", "paused")  # jobs whose result may still come
_GROUPS = ("args", "result")
# A result field whose last part says it is an error or a loss is best low (``ts --watch``).
_LOWER_IS_BETTER = re.compile(r"loss|err|mse|mae|perplexity|ppl|regret", re.IGNORECASE)


class ResultsError(UsageError):
    """A ``--sort`` or ``--best`` that names no column, or is written wrongly."""


def flatten(value: Any, prefix: str, out: Row) -> None:
    """Nested tables become dotted columns; lists and scalars are one cell each.

    ``{"opt": {"name": "adam"}}`` under ``args`` gives ``args.opt.name``; a result that is not
    a table (a bare number) is the column ``result`` itself.
    """
    if isinstance(value, dict) and value:
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}", out)
    else:
        out[prefix] = value


def columns_of(rows: list[Row]) -> list[str]:
    """The fixed columns, then args.* and result.* in the order they first appear, then notes."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    found = [name for name in seen if name not in FIXED and name != NOTE]
    ordered = [name for group in _GROUPS for name in found if name.split(".", 1)[0] == group]
    rest = [name for name in found if name not in ordered]
    return [*FIXED, *ordered, *rest, *([NOTE] if NOTE in seen else [])]


def short_name(column: str, columns: list[str]) -> str:
    """``args.C`` is shown as ``C`` unless ``result.C`` exists too."""
    group, dot, rest = column.partition(".")
    if not dot or group not in _GROUPS:
        return column
    others = [f"{g}.{rest}" for g in _GROUPS if g != group]
    return column if any(o in columns for o in others) else rest


def resolve(name: str, columns: list[str], option: str, waiting: bool = False) -> str:
    """The column a user's field name means: its full name, or its short name when unique.

    ``waiting``: some jobs have not ended, so a ``result.*`` field no job has written yet may
    still come (``ts results --sort -result.acc`` on a sweep that has just started).
    """
    if name in columns or (waiting and name.startswith("result.")):
        return name
    if name == "run_time":
        return "time"
    matches = [f"{g}.{name}" for g in _GROUPS if f"{g}.{name}" in columns]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ResultsError(f"{option}: {name!r} is ambiguous: say {' or '.join(matches)}")
    raise ResultsError(f"{option}: unknown field {name!r} (fields: {', '.join(columns)})")


# -- sorting --------------------------------------------------------------------------------


def _rank(value: Any) -> int | None:
    """Which values sort together: numbers, then true/false, then text, then lists and tables.
    None (a blank cell) and NaN have no rank: they go last whichever the direction."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 0
    return 2 if isinstance(value, str) else 3


def _key(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value, sort_keys=True)
    return value


def sort_by(rows: list[Row], column: str, descending: bool) -> list[Row]:
    """Stable: rows equal in ``column`` keep their order, so earlier keys refine later ones."""
    groups: dict[int, list[Row]] = {}
    blank: list[Row] = []
    for row in rows:
        rank = _rank(row.get(column))
        (blank if rank is None else groups.setdefault(rank, [])).append(row)
    out: list[Row] = []
    for rank in sorted(groups):
        out += sorted(groups[rank], key=lambda r: _key(r[column]), reverse=descending)
    return out + blank


def sort_keys(text: str, columns: list[str], waiting: bool = False) -> list[tuple[str, bool]]:
    """``--sort args.C,-result.acc``: (column, descending) pairs, the first the main key."""
    keys = []
    for part in text.split(","):
        word = part.strip()
        descending = word.startswith("-")
        name = word[1:].strip() if descending else word
        if not name:
            raise ResultsError(f"--sort: {text!r} is not FIELD, -FIELD or a comma-separated list of them")
        keys.append((resolve(name, columns, "--sort", waiting), descending))
    return keys


# -- the best row -------------------------------------------------------------------------------


@dataclass
class Best:
    column: str
    highest: bool  # max (the default) or min
    value: float | None = None  # None: no row has a number there yet
    ids: list[int] = field(default_factory=list)  # every row that reaches it (ties)

    @property
    def how(self) -> str:
        return "max" if self.highest else "min"

    def wire(self) -> dict[str, Any]:
        return {"field": self.column, "how": self.how, "value": self.value, "ids": self.ids}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if isinstance(value, float) and not math.isfinite(value) else value


def best_of(text: str, columns: list[str], waiting: bool = False) -> Best:
    """``--best [max:|min:]FIELD`` (max by default)."""
    how, colon, name = text.partition(":")
    if not colon:
        how, name = "max", text
    if how not in ("max", "min") or not name.strip():
        raise ResultsError(f"--best: {text!r} is not FIELD, max:FIELD or min:FIELD")
    return Best(resolve(name.strip(), columns, "--best", waiting), highest=how == "max")


def guess_best(rows: list[Row], columns: list[str]) -> Best | None:
    """Without ``--best`` (``ts --watch``): the first result field holding a number, lowest
    first when its name says it is a loss or an error."""
    for column in columns:
        if column.split(".", 1)[0] == "result" and any(_number(r.get(column)) is not None for r in rows):
            last = column.rsplit(".", 1)[-1]
            return Best(column, highest=not _LOWER_IS_BETTER.search(last))
    return None


def find_best(best: Best, rows: list[Row]) -> Best:
    numbers = [(n, row["id"]) for row in rows if (n := _number(row.get(best.column))) is not None]
    if numbers:
        best.value = (max if best.highest else min)(n for n, _ in numbers)
        best.ids = [job for n, job in numbers if n == best.value]
    return best


# -- the whole table ----------------------------------------------------------------------------


@dataclass
class Results:
    columns: list[str]
    rows: list[Row]  # every column present in every row (None where blank)
    best: Best | None = None

    def constant(self) -> dict[str, Any]:
        """Argument and result columns equal in every row (of two or more): a table shows them
        once, above it, so that its columns are what varied."""
        if len(self.rows) < 2:
            return {}
        out = {}
        for column in self.columns:
            if column in FIXED:
                continue
            first = self.rows[0][column]
            if first is not None and all(_same(row[column], first) for row in self.rows[1:]):
                out[column] = first
        return out


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1 and true differ, 1 and 1.0 do not."""
    if a != b:
        return False
    return type(a) is type(b) or _rank(a) == _rank(b) == 0


def build(
    rows: list[Row], sort: str | None = None, best: str | None = None, pick_best: bool = False
) -> Results:
    """Rows (in id order) sorted by ``sort`` and with ``best`` found.  With no rows at all the
    field names cannot be checked, and are not: an empty sweep is not an error."""
    columns = columns_of(rows)
    full = [{column: row.get(column) for column in columns} for row in rows]
    chosen = None
    if rows:
        waiting = any(row["state"] in _WAITING for row in full)
        for column, descending in reversed(sort_keys(sort, columns, waiting) if sort else []):
            full = sort_by(full, column, descending)
        chosen = best_of(best, columns, waiting) if best else guess_best(full, columns) if pick_best else None
    if chosen is not None:
        find_best(chosen, full)
    return Results(columns, full, chosen)
