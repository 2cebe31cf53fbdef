"""Job arguments (``--arg``/``--args``) and command templates (``%(name)``).

A job's arguments are a JSON object; the command names them with ``%(name)`` or ``%(a.b)``.
Filling follows Labtasker's "no more, no less" rule: every placeholder must have a value, and
every argument must be used by some placeholder (unless extra arguments are allowed), because a
recorded argument that never reached the program is a lie about what ran.

Argument names are dotted paths of components made of letters, digits, ``_`` and ``-``; a dotted
key nests (``model.depth=12`` is ``{"model": {"depth": 12}}``).  Top-level names starting with
``_`` are reserved for values computed by the spooler, such as ``%(_name)``.

This module runs in the ``ts`` client, so it imports nothing heavy.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from spooler.errors import UsageError
from spooler.text import brief

_COMPONENT = re.compile(r"[A-Za-z0-9_-]+")
_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_KEY_RULE = "use letters, digits, _ and -, with . between levels"

# run_name: the characters a name may hold, and how long it may be.
_SAFE_NAME = re.compile(r"[A-Za-z0-9._,=+-]*")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._,=+-]")
_HASHED = re.compile(r"-[0-9a-f]{12}\Z")
MAX_NAME = 120
_HASH_CHARS = 12


class TemplateError(UsageError):
    """A malformed argument or template, or arguments that do not match their template."""


def parse_value(text: str) -> Any:
    """``--arg`` value: JSON where it parses (``0.1``, ``true``, ``[1, 2]``), else the text itself.

    Only strict JSON counts: ``NaN`` and ``Infinity`` stay strings, so a value typed on the
    command line never becomes a number the JSON recorded with the job cannot hold.
    """

    def reject_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(text, parse_constant=reject_constant)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested brackets
        return text


def split_key(key: str) -> list[str]:
    """The components of a dotted argument name; a TemplateError if it is not a valid name."""
    parts = key.split(".")
    if not all(_COMPONENT.fullmatch(part) for part in parts):
        raise TemplateError(f"invalid argument name {brief(key)}: {_KEY_RULE}")
    return parts


def nest(table: Mapping[str, Any], *, top: bool = True) -> dict[str, Any]:
    """A copy of ``table`` with dotted keys expanded into nested tables, all keys checked.

    ``top``: the table is a job's whole argument set, where names starting with ``_`` are
    reserved for computed values.
    """
    out: dict[str, Any] = {}
    for key, value in table.items():
        if not isinstance(key, str):
            raise TemplateError(f"invalid argument name {brief(key)}: names are strings")
        parts = split_key(key)
        if top and parts[0].startswith("_"):
            raise TemplateError(f"argument {key}: names starting with _ are reserved for computed values")
        if isinstance(value, Mapping):
            value = nest(value, top=False)
        assign(out, parts, value)
    return out


def assign(table: dict[str, Any], parts: Sequence[str], value: Any, prefix: Sequence[str] = ()) -> None:
    """Set ``table[a][b]... = value`` in place, creating tables on the way.

    A later value overrides an earlier one and tables merge, but a value where a table is (or
    the reverse) is an error: ``a=1`` then ``a.b=2`` is almost certainly a mistake, and letting
    either silently win would run something other than what was written.  ``prefix``: where
    ``table`` itself sits, for the error message.
    """
    here = table
    for depth, part in enumerate(parts[:-1]):
        existing = here.get(part)
        if existing is None and part not in here:
            here[part] = existing = {}
        if not isinstance(existing, dict):
            raise _conflict([*prefix, *parts[: depth + 1]], existing, {".".join(parts[depth + 1 :]): value})
        here = existing
    last = parts[-1]
    if last not in here:
        here[last] = _copy(value)
        return
    existing = here[last]
    if isinstance(existing, dict) and isinstance(value, dict):
        for key, item in value.items():
            assign(existing, [key], item, [*prefix, *parts])
    elif isinstance(existing, dict) or isinstance(value, dict):
        raise _conflict([*prefix, *parts], existing, value)
    else:
        here[last] = _copy(value)


def _conflict(parts: Sequence[str], old: Any, new: Any) -> TemplateError:
    key = ".".join(parts)
    return TemplateError(f"argument {key} is both a value and a table ({brief(old)}, then {brief(new)})")


def _copy(value: Any) -> Any:
    """A deep copy of a JSON-like value, so that merged argument sets never share lists."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A new argument set: ``base`` deep-merged with ``update``, whose values win.

    Both are nested already (see :func:`nest`); a value meeting a table is an error, as in :func:`assign`.
    """
    out = _copy(dict(base))
    for key, value in update.items():
        assign(out, [key], value)
    return out  # type: ignore[no-any-return]


def build_args(pairs: Sequence[str] = (), blobs: Sequence[str] = ()) -> dict[str, Any]:
    """A job's arguments from ``--args '{json}'`` blobs, then ``--arg key=value`` pairs.

    Blobs apply first, in order, and pairs after them, so a single ``--arg`` can adjust a shared
    blob (the command line loses the relative order of the two options).
    """
    args: dict[str, Any] = {}
    for blob in blobs:
        try:
            obj = json.loads(blob)
        except (ValueError, RecursionError) as err:
            raise TemplateError(f"--args {brief(blob)}: not valid JSON ({_one_line(err)})") from None
        if not isinstance(obj, dict):
            raise TemplateError(f"--args {brief(blob)}: must be a JSON object, not {brief(obj)}")
        try:
            args = merge(args, nest(obj))
        except TemplateError as err:
            raise TemplateError(f"--args {brief(blob)}: {err}") from None
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise TemplateError(f"--arg {brief(pair)}: expected key=value")
        if not key:
            raise TemplateError(f"--arg {brief(pair)}: the key before = is empty")
        value = parse_value(text)
        try:
            args = merge(args, nest({key: value}))
        except TemplateError as err:
            raise TemplateError(f"--arg {brief(pair)}: {err}") from None
    return args


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def flatten(args: Mapping[str, Any]) -> dict[str, Any]:
    """Leaves by dotted name: ``{"model": {"depth": 12}}`` -> ``{"model.depth": 12}``.

    An empty table is a leaf (``{}``) rather than nothing, so that it still counts as an
    argument and still tells two argument sets apart.
    """
    out: dict[str, Any] = {}

    def walk(table: Mapping[str, Any], prefix: str) -> None:
        for key, value in table.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping) and value:
                walk(value, name + ".")
            else:
                out[name] = value

    walk(args, "")
    return out


def _scan(text: str) -> list[tuple[str, int, int]]:
    """The pieces of a template word: ``("text", start, end)`` runs and ``("name", start, end)``.

    A "text" piece's span is the literal it stands for once ``%%(`` is unescaped; a "name"
    piece's span is the placeholder's whole ``%(...)``.
    """
    pieces: list[tuple[str, int, int]] = []
    i = 0
    start = 0
    while True:
        i = text.find("%", i)
        if i < 0:
            break
        if text.startswith("%%(", i):
            pieces.append(("text", start, i + 1))  # keep one "%", drop the escaping one
            start = i + 2
            i += 3
        elif text.startswith("%(", i):
            close = text.find(")", i + 2)
            if close < 0:
                raise TemplateError(
                    f"{brief(text)}: position {i + 1}: %( is not closed by ) (write %%( for a literal %()"
                )
            name = text[i + 2 : close]
            if not _NAME.fullmatch(name):
                raise TemplateError(
                    f"{brief(text)}: position {i + 1}: invalid placeholder %({name}): {_KEY_RULE}"
                    " (write %%( for a literal %()"
                )
            pieces.append(("text", start, i))
            pieces.append(("name", i, close + 1))
            start = i = close + 1
        else:
            i += 1
    pieces.append(("text", start, len(text)))
    return pieces


def placeholders(text: str) -> list[str]:
    """The names of the ``%(name)`` placeholders in ``text``, in order, repeats included."""
    return [text[start + 2 : end - 1] for kind, start, end in _scan(text) if kind == "name"]


_MISSING = object()


def _lookup(args: Mapping[str, Any], name: str) -> Any:
    here: Any = args
    for part in name.split("."):
        if not isinstance(here, Mapping) or part not in here:
            return _MISSING
        here = here[part]
    return here


def _text(value: Any) -> str:
    """How a value appears in a command: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def fill(
    command: list[str],
    args: Mapping[str, Any],
    *,
    shell: bool,
    allow_extra: bool = False,
    extra: Mapping[str, str] | None = None,
) -> list[str]:
    """The command with every ``%(name)`` replaced by its argument; ``%%(`` becomes ``%(``.

    ``shell``: the command is one string for ``sh -c``, so each value is shell-quoted and cannot
    change the command's structure whatever it holds.  Write placeholders outside shell quotes
    (``--msg=%(msg)``, not ``"%(msg)"``) since the quoting is added for you.  Without ``shell``
    each word is an argv entry and values are inserted as they are.

    ``extra``: computed values such as ``_name``; placeholders starting with ``_`` are looked up
    there only, and argument names starting with ``_`` are never counted as user arguments.
    """
    computed = extra or {}
    scanned = [_scan(word) for word in command]
    used: list[str] = []
    for pieces, word in zip(scanned, command, strict=True):
        used.extend(word[start + 2 : end - 1] for kind, start, end in pieces if kind == "name")

    values: dict[str, str] = {}
    for name in used:
        if name in values:
            continue
        if name.startswith("_"):
            if name not in computed:
                known = ", ".join(f"%({key})" for key in sorted(computed)) or "none"
                raise TemplateError(f"%({name}) is not a computed value (those are: {known})")
            value: Any = computed[name]
        else:
            value = _lookup(args, name)
            if value is _MISSING:
                raise TemplateError(f"%({name}) has no value: pass --arg {name}=...")
        text = _text(value)
        values[name] = shlex.quote(text) if shell else text

    if not allow_extra and "_name" not in used:  # %(_name) spells out every argument
        unused = [
            leaf
            for leaf in flatten(args)
            if not leaf.startswith("_")
            and not any(leaf == name or leaf.startswith(name + ".") for name in used)
        ]
        if unused:
            names = ", ".join(unused)
            places = " ".join(f"%({leaf})" for leaf in unused)
            noun = "argument {} is" if len(unused) == 1 else "arguments {} are"
            raise TemplateError(
                f"{noun.format(names)} not used by the command: add {places} to it, or allow extra arguments"
            )

    filled = []
    for pieces, word in zip(scanned, command, strict=True):
        parts = [
            values[word[start + 2 : end - 1]] if kind == "name" else word[start:end]
            for kind, start, end in pieces
        ]
        filled.append("".join(parts))
    return filled


def fill_marker(marker: str, args: Mapping[str, Any]) -> str:
    """A run's ``--skip-if-exists`` path with its placeholders filled (it need not use them all)."""
    return fill([marker], args, shell=False, allow_extra=True, extra={"_name": run_name(args)})[0]


def fill_run(
    command: list[str], args: Mapping[str, Any], marker: str | None = None, *, allow_extra: bool = False
) -> tuple[list[str], str | None]:
    """One run: its command with the arguments filled in (shell-quoted when it runs through
    ``sh -c``), and its ``--skip-if-exists`` marker filled the same way."""
    from spooler.commands import needs_shell

    extra = {"_name": run_name(args)}
    filled = fill(command, args, shell=needs_shell(command), allow_extra=allow_extra, extra=extra)
    return filled, fill_marker(marker, args) if marker else marker


def canonical(args: Mapping[str, Any]) -> str:
    """The one JSON text of an argument set: how runs are compared and what ``_name`` hashes."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"))


def _reversible(value: Any) -> bool:
    """Whether the value's text in a run name reads back (by :func:`parse_value`) as the value."""
    text = _text(value)
    back = parse_value(text)
    return type(back) is type(value) and back == value


def run_name(args: Mapping[str, Any]) -> str:
    """A readable, filesystem-safe name for a run's arguments: ``lr=0.1,model=vit``.

    Distinct argument sets get distinct names.  The readable form is used alone only when it
    spells the arguments exactly and reads back unambiguously; otherwise (a character had to be
    replaced, a string that looks like a number, a ``,`` or ``=`` inside a key or value, a
    dotted key, too long) it is cut to fit and followed by ``-`` and 12 hex digits of the SHA-256
    of the canonical JSON.  A readable form that itself ends like such a suffix is hashed too, so
    a hashed name can never equal an unhashed one.
    """
    leaves = flatten(args)
    if not leaves:
        return "default"
    exact = not _has_dotted_key(args)
    items = []
    for key in sorted(leaves):
        value = leaves[key]
        text = _text(value)
        if "," in key or "=" in key or "," in text or "=" in text or not _reversible(value):
            exact = False
        items.append(f"{key}={text}")
    readable = ",".join(items)
    if not _SAFE_NAME.fullmatch(readable):
        exact = False
        readable = _UNSAFE_CHAR.sub("_", readable)
    if exact and len(readable) <= MAX_NAME and not _HASHED.search(readable):
        return readable
    import hashlib  # here: only hashed names need it, and it costs the client's start-up a few ms

    digest = hashlib.sha256(canonical(args).encode()).hexdigest()[:_HASH_CHARS]
    return f"{readable[: MAX_NAME - _HASH_CHARS - 1]}-{digest}"


def _has_dotted_key(table: Mapping[str, Any]) -> bool:
    """A key with a "." in it flattens exactly like a nested table, so it is not exact."""
    for key, value in table.items():
        if not isinstance(key, str) or "." in key:
            return True
        if isinstance(value, Mapping) and _has_dotted_key(value):
            return True
    return False
