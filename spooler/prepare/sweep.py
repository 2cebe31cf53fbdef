"""Sweep files: one command template, shared arguments, and a grid of values to try.

The grid follows GPU Task Scheduler: each grid table is the cross product of its lists, and the
runs are the union over the tables, with duplicates dropped.  A sweep file is TOML or JSON::

    name = "lr-sweep"
    command = ["python", "train.py", "--lr", "%(lr)", "--model", "%(model)"]
    base = { epochs = 10 }          # or dotted keys, or a [base] table
    [[grid]]
    lr = [0.1, 0.01]
    model = ["vit", "resnet"]
    [options]
    gpus = 1

Everything is checked when the file is loaded, and every run's command is filled before any is
returned, so a mistake in run 37 is reported before run 1 is queued.  Errors name the file, the
key and, where it can be found cheaply, the line.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from spooler.errors import UsageError
from spooler.prepare.template import (
    TemplateError,
    assign,
    canonical,
    fill,
    nest,
    placeholders,
    run_name,
    split_key,
)
from spooler.text import brief

_TOP_KEYS = ("base", "command", "grid", "name", "options")
# More runs than this is a typo in the grid, not an experiment: refuse it before expanding
# it, rather than let the client hang building millions of commands.
MAX_RUNS = 100_000
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)")
_INT, _STR, _BOOL, _INTS = "an integer", "a string", "true or false", "a list of job ids"
_OPTIONS: dict[str, str] = {
    "gpus": _INT,
    "gpu_mem": _STR,
    "slots": _INT,
    "label": _STR,
    "priority": _INT,
    "retry": _INT,
    "retry_timeout": _BOOL,
    "time": _STR,
    "skip_if_exists": _STR,
    "snapshot": _BOOL,
    "allow_extra": _BOOL,
    "after": _INTS,
    "after_ok": _INTS,
}


class SweepError(UsageError):
    """A sweep file that cannot be read, parsed, or turned into commands."""


@dataclass
class Sweep:
    name: str
    command: str | list[str]  # a string runs through ``sh -c``; a list is an argv
    base: dict[str, Any]  # arguments every run shares, nested
    grid: list[dict[str, list[Any]]]  # per table: dotted argument name -> candidate values
    options: dict[str, Any]  # queueing options (gpus, label, ...), checked for type only
    path: str = ""  # the file it came from, named in errors found after loading


def load_sweep(path: str) -> Sweep:
    """Read and check a sweep file: ``.toml``, ``.json``, or sniffed (``{`` first means JSON)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise SweepError(f"{path}: cannot read it: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SweepError(f"{path}: not UTF-8 text (byte {err.start + 1})") from None
    suffix = os.path.splitext(path)[1].lower()
    as_json = suffix == ".json" or (suffix != ".toml" and text.lstrip().startswith("{"))
    doc = _parse_json(path, text) if as_json else _parse_toml(path, text)
    return _Checker(path, text, as_json).sweep(doc)


def _parse_toml(path: str, text: str) -> Any:
    # Imported here: only sweeps need a TOML parser, and the client's start-up time is latency.
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = " ".join(str(err).split())
        at = _TOML_AT.search(message)
        if at:
            where = f"line {at[1]}, column {at[2]}"
            message = message[: at.start()] + message[at.end() :]
        else:
            where = "at the end of the file"
            message = message.replace(" (at end of document)", "")
        raise SweepError(f"{path}: {where}: invalid TOML: {message}") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects keep their last duplicate silently; a sweep file with two of a key is a mistake."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _parse_json(path: str, text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise SweepError(f"{path}: line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}") from None
    except _DuplicateKey as err:
        raise SweepError(f"{path}: key {json.dumps(err.args[0])} appears twice in one object") from None
    except RecursionError:
        raise SweepError(f"{path}: invalid JSON: nested too deeply") from None


def _dotted(path: Sequence[str | int]) -> str:
    """``["grid", 1, "lr"]`` -> ``grid[1].lr``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Checker:
    """Checks a parsed sweep file, turning each problem into one line that names file and key."""

    def __init__(self, path: str, text: str, as_json: bool) -> None:
        self.path = path
        self.text = text
        self.as_json = as_json

    def fail(self, key: Sequence[str | int] | None, message: str) -> NoReturn:
        line = _line_of(self.text, key, self.as_json) if key else None
        where = f"{self.path}: line {line}" if line else self.path
        raise SweepError(f"{where}: {message}")

    def sweep(self, doc: Any) -> Sweep:
        if not isinstance(doc, dict):
            self.fail(None, f"a sweep file holds a table (a JSON object), not {brief(doc)}")
        for key in doc:
            if key not in _TOP_KEYS:
                self.fail([key], f"unknown key {brief(key)} (known: {', '.join(_TOP_KEYS)})")
        return Sweep(
            name=self.name(doc.get("name")),
            command=self.command(doc.get("command")),
            base=self.base(doc.get("base", {})),
            grid=self.grid(doc.get("grid", [])),
            options=self.options(doc.get("options", {})),
            path=self.path,
        )

    def name(self, value: Any) -> str:
        if value is None:
            # The file's name may hold anything; the sweep's name becomes part of paths.
            stem = os.path.splitext(os.path.basename(self.path))[0]
            stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)
            return stem if stem not in ("", ".", "..") else "sweep"
        if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or value in (".", ".."):
            self.fail(["name"], f"name must be letters, digits, ., _ and - only, not {brief(value)}")
        return value

    def command(self, value: Any) -> str | list[str]:
        if value is None:
            self.fail(None, "command is missing: give a string (run by sh -c) or a list of strings (an argv)")
        if isinstance(value, str):
            if not value.strip():
                self.fail(["command"], "command is empty")
            words: list[str] = [value]
        elif isinstance(value, list) and value and all(isinstance(word, str) for word in value):
            words = value
        else:
            self.fail(["command"], f"command must be a string or a list of strings, not {brief(value)}")
        for word in words:
            try:
                placeholders(word)
            except TemplateError as err:
                self.fail(["command"], f"command: {err}")
        return value if isinstance(value, str) else words

    def base(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(["base"], f"base must be a table of arguments, not {brief(value)}")
        self.plain(value, ["base"])
        try:
            return nest(value)
        except TemplateError as err:
            self.fail(None, f"base: {err}")

    def grid(self, value: Any) -> list[dict[str, list[Any]]]:
        if isinstance(value, dict):
            self.fail(["grid"], "grid must be a list of tables: write [[grid]], not [grid] (TOML)")
        if not isinstance(value, list):
            self.fail(["grid"], f"grid must be a list of tables, not {brief(value)}")
        return [self.grid_table(index, table) for index, table in enumerate(value)]

    def grid_table(self, index: int, table: Any) -> dict[str, list[Any]]:
        if not isinstance(table, dict):
            self.fail(["grid", index], f"grid[{index}] must be a table, not {brief(table)}")
        out: dict[str, list[Any]] = {}

        def walk(here: dict[str, Any], prefix: list[str]) -> None:
            for key, value in here.items():
                try:
                    parts = prefix + split_key(key)
                except TemplateError as err:
                    self.fail(["grid", index, key], f"grid[{index}]: {err}")
                name = ".".join(parts)
                where: list[str | int] = ["grid", index, *parts]
                label = f"grid[{index}].{name}"
                if isinstance(value, dict) and value:
                    walk(value, parts)  # a nested table (TOML dotted keys): its lists are the values
                    continue
                if parts[0].startswith("_"):
                    self.fail(where, f"{label}: names starting with _ are reserved for computed values")
                if not isinstance(value, list):
                    self.fail(where, f"{label} must be a list, not {brief(value)}")
                if not value:
                    self.fail(where, f"{label} is an empty list: give at least one value")
                if name in out:
                    self.fail(where, f"{label} is given twice")
                self.plain(value, where)
                try:
                    out[name] = [nest(item, top=False) if isinstance(item, dict) else item for item in value]
                except TemplateError as err:
                    self.fail(where, f"{label}: {err}")

        walk(table, [])
        for name in out:
            for other in out:
                if other.startswith(name + "."):
                    self.fail(
                        ["grid", index, *other.split(".")],
                        f"grid[{index}]: {name} and {other} conflict ({name} would be a value and a table)",
                    )
        return out

    def options(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(["options"], f"options must be a table, not {brief(value)}")
        for key, item in value.items():
            kind = _OPTIONS.get(key)
            if kind is None:
                known = ", ".join(sorted(_OPTIONS))
                self.fail(["options", key], f"options.{key} is not an option here (known: {known})")
            if kind is _INT:
                ok = isinstance(item, int) and not isinstance(item, bool)
            elif kind is _STR:
                ok = isinstance(item, str)
            elif kind is _BOOL:
                ok = isinstance(item, bool)
            else:
                ok = isinstance(item, list) and all(
                    isinstance(job, int) and not isinstance(job, bool) for job in item
                )
            if not ok:
                self.fail(["options", key], f"options.{key} must be {kind}, not {brief(item)}")
        return dict(value)

    def plain(self, value: Any, where: list[str | int]) -> None:
        """Arguments travel as JSON: TOML dates and times cannot, so they must be quoted."""
        if isinstance(value, dict):
            for key, item in value.items():
                self.plain(item, [*where, key])
        elif isinstance(value, list):
            for item in value:
                self.plain(item, where)
        elif not isinstance(value, (str, int, float, bool)) and value is not None:
            self.fail(where, f"{_dotted(where)}: dates and times are not supported: write it as a string")


def _line_of(text: str, key: Sequence[str | int], as_json: bool) -> int | None:
    """The 1-based line where ``key`` is written, when a cheap text search finds exactly one.

    A guess that might be wrong is worse than none, so any ambiguity gives None.  In TOML the
    search is narrowed to the n-th ``[[grid]]`` block for a grid index.
    """
    lines = text.splitlines()
    low, high = 0, len(lines)
    narrowed = False
    if not as_json and len(key) >= 2 and key[0] == "grid" and isinstance(key[1], int):
        headers = [n for n, line in enumerate(lines) if re.match(r"\s*\[\[\s*grid\s*\]\]", line)]
        if headers:
            if key[1] >= len(headers):
                return None
            low = headers[key[1]]
            narrowed = True
            later = [n for n in range(low + 1, len(lines)) if re.match(r"\s*\[", lines[n])]
            high = later[0] if later else len(lines)
    names = [part for part in key if isinstance(part, str)]
    if isinstance(key[-1], int) or not names:
        return low + 1 if narrowed else None
    name = re.escape(names[-1])
    if as_json:
        pattern = re.compile(rf'"{name}"\s*:')
    else:
        pattern = re.compile(rf"""(?:^|[\s{{,.])["']?{name}["']?\s*=|^\s*\[+[^\]]*?["']?\b{name}["']?\s*\]""")
    found = [n for n in range(low, high) if pattern.search(lines[n])]
    return found[0] + 1 if len(found) == 1 else None


def expand(sweep: Sweep) -> list[dict[str, Any]]:
    """Every run's arguments: base merged with each combination of each grid table, in order.

    Each table is a cross product (its keys in file order, the last varying fastest); the runs
    are the union over the tables, an argument set seen before (same canonical JSON) dropped.
    No grid at all gives the single run of the base arguments.
    """
    prefix = f"{sweep.path}: " if sweep.path else ""
    try:
        base = nest(sweep.base)
    except TemplateError as err:
        raise SweepError(f"{prefix}base: {err}") from None
    total = sum(math.prod(len(values) for values in table.values()) for table in sweep.grid)
    if total > MAX_RUNS:
        raise SweepError(f"{prefix}the grid makes {total} runs: at most {MAX_RUNS} are allowed in one sweep")
    runs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, table in enumerate(sweep.grid or [{}]):
        keys = list(table)
        try:
            paths = [split_key(key) for key in keys]
        except TemplateError as err:
            raise SweepError(f"{prefix}grid[{index}]: {err}") from None
        for combo in itertools.product(*(table[key] for key in keys)):
            args = nest(base)  # a fresh copy
            try:
                for parts, value in zip(paths, combo, strict=True):
                    assign(args, parts, value)
            except TemplateError as err:
                raise SweepError(f"{prefix}grid[{index}]: {err}") from None
            text = canonical(args)
            if text not in seen:
                seen.add(text)
                runs.append(args)
    return runs


def commands(sweep: Sweep, *, allow_extra: bool = False) -> list[tuple[list[str], dict[str, Any]]]:
    """Each run's filled command and its arguments; every run is checked before any is returned.

    A string command stays one string (``[filled]``), shell-quoted values inside; a list is an
    argv.  ``allow_extra`` or the file's ``options.allow_extra`` lets runs carry arguments the
    command does not use.
    """
    shell = isinstance(sweep.command, str)
    words = [sweep.command] if isinstance(sweep.command, str) else list(sweep.command)
    allow = allow_extra or sweep.options.get("allow_extra") is True
    prefix = f"{sweep.path}: " if sweep.path else ""
    out: list[tuple[list[str], dict[str, Any]]] = []
    for number, args in enumerate(expand(sweep), 1):
        name = run_name(args)
        try:
            filled = fill(words, args, shell=shell, allow_extra=allow, extra={"_name": name})
        except TemplateError as err:
            raise SweepError(f"{prefix}run {number} ({name}): {err}") from None
        out.append((filled, args))
    return out
