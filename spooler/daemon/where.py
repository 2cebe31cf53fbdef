"""The ``--where EXPR`` filter over job records: a small, safe subset of Python expressions.

``state == "finished" and args.lr < 0.1``, ``label in ["a", "b"]``, ``result.metrics.acc >= 0.9``.
The text is parsed with :func:`ast.parse` and every node is checked against a whitelist, then
turned into plain Python closures over the record.  Nothing is ever evaluated as code (no eval,
exec or compile-to-bytecode), and attributes are dictionary keys, never Python attributes, so
``().__class__`` and friends have nothing to reach.

Filters are forgiving about data, strict about syntax: a missing field or key is None, and a
comparison between values of different kinds (None < 1, "a" < 1) is simply false, because job
records differ (not every job has ``args.lr`` or a result) and one odd record must not make
``ts --where`` fail for all the others.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn

from spooler.errors import UsageError

Evaluator = Callable[[Mapping[str, Any]], Any]

_NAMED_CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None}

_NOT_ALLOWED: dict[type[ast.AST], str] = {
    ast.Call: "function calls are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "':=' is not allowed",
    ast.IfExp: "conditional expressions are not allowed",
    ast.Set: "set literals are not allowed: use a list, [a, b]",
    ast.Dict: "dict literals are not allowed",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Slice: "slices are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}

_OPERATORS: dict[type[ast.AST], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.MatMult: "@",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
}


class WhereError(UsageError):
    """A ``--where`` expression that does not parse or uses something not allowed."""


# --- Evaluation: total functions, never raising on odd data -------------------------------------


def _kind(value: Any) -> str:
    """Which values compare with which: bools are not numbers here, as in JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "table"
    return "other"


def _equal(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "list":
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "table":
        return a.keys() == b.keys() and all(_equal(a[key], b[key]) for key in a)
    try:
        return bool(a == b)
    except Exception:
        return False


def _ordered(a: Any, b: Any, test: Callable[[Any, Any], Any]) -> bool:
    kind = _kind(a)
    if kind != _kind(b) or kind not in ("number", "string", "bool", "list"):
        return False
    try:
        return bool(test(a, b))
    except TypeError:  # lists holding values of different kinds
        return False


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, (list, tuple)):
        return any(_equal(item, x) for x in container)
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, Mapping):
        try:
            return item in container
        except TypeError:  # an unhashable item
            return False
    return False


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: _equal,
    ast.NotEq: lambda a, b: not _equal(a, b),
    ast.Lt: lambda a, b: _ordered(a, b, lambda x, y: x < y),
    ast.LtE: lambda a, b: _ordered(a, b, lambda x, y: x <= y),
    ast.Gt: lambda a, b: _ordered(a, b, lambda x, y: x > y),
    ast.GtE: lambda a, b: _ordered(a, b, lambda x, y: x >= y),
    ast.In: lambda a, b: _contains(b, a),
    ast.NotIn: lambda a, b: not _contains(b, a),
}


def _field(value: Any, key: Any) -> Any:
    if isinstance(value, Mapping):
        try:
            return value.get(key)
        except TypeError:
            return None
    if isinstance(value, (list, tuple)) and isinstance(key, int) and -len(value) <= key < len(value):
        return value[key]
    return None


def _truthy(value: Any) -> bool:
    try:
        return bool(value)
    except Exception:
        return False


class Where:
    """A checked ``--where`` expression; :meth:`matches` applies it to one job record."""

    __slots__ = ("_evaluate", "fields", "text")

    def __init__(self, text: str, fields: frozenset[str], evaluate: Evaluator) -> None:
        self.text = text
        self.fields = fields  # the record's top-level fields it reads
        self._evaluate = evaluate

    def matches(self, record: Mapping[str, Any]) -> bool:
        return _truthy(self._evaluate(record))

    def __repr__(self) -> str:
        return f"Where({self.text!r})"


# --- Compilation: the whitelist ---------------------------------------------------------------


def compile_where(text: str, known: Collection[str] | None = None) -> Where:
    """Parse and check ``text``.  ``known``: the record's field names; any other name is an error."""
    body = text.lstrip()
    shift = len(text) - len(body)  # the parser rejects leading indentation
    if not body.strip():
        raise WhereError("--where: the expression is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences in string literals
            tree = ast.parse(body, mode="eval")
    except SyntaxError as err:
        if not err.offset or err.offset < 1 or not err.lineno:
            raise WhereError(f"--where: position {len(text) + 1}: the expression is incomplete") from None
        lines = body.split("\n")
        position = shift + sum(len(line) + 1 for line in lines[: err.lineno - 1]) + err.offset
        message = " ".join((err.msg or "invalid syntax").split())
        raise WhereError(f"--where: position {position}: {message}") from None
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes, absurd nesting
        message = " ".join(str(err).split()) or "the expression is too deeply nested"
        raise WhereError(f"--where: {message}") from None
    compiler = _Compiler(body, shift, known)
    try:
        evaluate = compiler.build(tree.body)
    except RecursionError:
        raise WhereError("--where: the expression is too deeply nested") from None
    return Where(text, frozenset(compiler.fields), evaluate)


class _Compiler:
    def __init__(self, source: str, shift: int, known: Collection[str] | None) -> None:
        self.lines = source.split("\n")
        self.shift = shift
        self.known = None if known is None else frozenset(known)
        self.fields: set[str] = set()

    def position(self, lineno: int, col_offset: int) -> int:
        """1-based position in the original text; ``col_offset`` counts UTF-8 bytes."""
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        column = len(line.encode()[:col_offset].decode(errors="ignore"))
        return self.shift + sum(len(text) + 1 for text in self.lines[: lineno - 1]) + column + 1

    def after(self, node: ast.expr) -> int:
        """The position of the first operator character after ``node`` (skipping spaces and ``)``)."""
        lineno = node.end_lineno or node.lineno
        position = self.position(lineno, node.end_col_offset or 0)
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        column = position - 1 - self.shift - sum(len(text) + 1 for text in self.lines[: lineno - 1])
        while column < len(line) and line[column] in " \t)":
            column += 1
            position += 1
        return position

    def fail(self, position: int, message: str) -> NoReturn:
        raise WhereError(f"--where: position {position}: {message}")

    def fail_at(self, node: ast.expr, message: str) -> NoReturn:
        self.fail(self.position(node.lineno, node.col_offset), message)

    def build(self, node: ast.expr) -> Evaluator:
        if isinstance(node, ast.Constant):
            value = self.constant(node)
            return lambda record: value
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                end = self.position(node.end_lineno or node.lineno, node.end_col_offset or 0)
                self.fail(end - len(node.attr), "names starting with _ are not allowed")
            inner = self.build(node.value)
            attr = node.attr
            return lambda record: _field(inner(record), attr)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BoolOp):
            return self.boolean(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.build(item) for item in node.elts]
            # A tuple is a list here: records hold JSON, whose arrays are lists.
            return lambda record: [item(record) for item in items]
        if isinstance(node, ast.BinOp):
            symbol = _OPERATORS.get(type(node.op), "?")
            what = "'**' is" if symbol == "**" else f"arithmetic ('{symbol}') is"
            self.fail(self.after(node.left), f"{what} not allowed")
        self.fail_at(node, _NOT_ALLOWED.get(type(node), f"{type(node).__name__} is not allowed"))

    def constant(self, node: ast.Constant) -> Any:
        value = node.value
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        self.fail_at(node, f"{type(value).__name__} literals are not allowed")

    def name(self, node: ast.Name) -> Evaluator:
        name = node.id
        if name in _NAMED_CONSTANTS:
            value = _NAMED_CONSTANTS[name]
            return lambda record: value
        if name.startswith("_"):
            self.fail_at(node, "names starting with _ are not allowed")
        if self.known is not None and name not in self.known:
            fields = ", ".join(sorted(self.known))
            self.fail_at(node, f"unknown field {name!r} (fields: {fields})")
        self.fields.add(name)
        return lambda record: _field(record, name)

    def subscript(self, node: ast.Subscript) -> Evaluator:
        key: Any
        index = node.slice
        if (
            isinstance(index, ast.UnaryOp)
            and isinstance(index.op, ast.USub)
            and isinstance(index.operand, ast.Constant)
            and type(index.operand.value) is int
        ):
            key = -index.operand.value
        elif isinstance(index, ast.Constant) and type(index.value) in (int, str):
            key = index.value
        elif isinstance(index, ast.Slice):
            self.fail_at(index, "slices are not allowed")
        else:
            self.fail_at(index, 'a subscript must be a string or integer constant, as in args["lr"]')
        inner = self.build(node.value)
        return lambda record: _field(inner(record), key)

    def unary(self, node: ast.UnaryOp) -> Evaluator:
        if isinstance(node.op, ast.Not):
            inner = self.build(node.operand)
            return lambda record: not _truthy(inner(record))
        if isinstance(node.op, ast.USub):
            operand = node.operand
            if (
                isinstance(operand, ast.Constant)
                and isinstance(operand.value, (int, float))
                and not isinstance(operand.value, bool)
            ):
                value = -operand.value
                return lambda record: value
            self.fail_at(node, "'-' is allowed only before a number")
        symbol = "+" if isinstance(node.op, ast.UAdd) else "~"
        self.fail_at(node, f"'{symbol}' is not allowed")

    def boolean(self, node: ast.BoolOp) -> Evaluator:
        parts = [self.build(value) for value in node.values]
        if isinstance(node.op, ast.And):

            def all_of(record: Mapping[str, Any]) -> Any:
                value: Any = True
                for part in parts:
                    value = part(record)
                    if not _truthy(value):
                        return value
                return value

            return all_of

        def any_of(record: Mapping[str, Any]) -> Any:
            value: Any = False
            for part in parts:
                value = part(record)
                if _truthy(value):
                    return value
            return value

        return any_of

    def compare(self, node: ast.Compare) -> Evaluator:
        left = self.build(node.left)
        tests: list[tuple[Callable[[Any, Any], bool], Evaluator]] = []
        previous: ast.expr = node.left
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            test = _COMPARE.get(type(op))
            if test is None:
                word = "'is not'" if isinstance(op, ast.IsNot) else "'is'"
                self.fail(self.after(previous), f"{word} is not allowed: use == or !=")
            tests.append((test, self.build(comparator)))
            previous = comparator

        def chain(record: Mapping[str, Any]) -> bool:
            a = left(record)
            for test, right in tests:
                b = right(record)
                if not test(a, b):
                    return False
                a = b
            return True

        return chain
