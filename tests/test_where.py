"""``--where`` expressions: the whitelist, the error positions, and forgiving evaluation."""

from __future__ import annotations

import ast
import builtins
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spooler.daemon.where import WhereError, compile_where
from spooler.errors import UsageError
from spooler.jobs import JobState

JOB: dict[str, Any] = {
    "id": 3,
    "state": "finished",
    "label": None,
    "exit_code": 0,
    "sweep": "lr-sweep",
    "command": ["python", "train.py"],
    "args": {"lr": 0.1, "model": {"depth": 12, "name": "vit"}, "flag": True, "tags": ["a", "b"]},
    "result": {"metrics": {"acc": 0.93, "loss": None}},
    "gpus": [0, 1],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # comparisons and literals
        ('state == "finished"', True),
        ("state == 'queued'", False),
        ("id == 3", True),
        ("id != 3", False),
        ("id >= 3", True),
        ("id > 3.5", False),
        ("args.lr == 0.1", True),
        ("args.lr < 1e-1", False),
        ("exit_code == 0.0", True),  # numbers compare as numbers
        ("exit_code == false", False),  # but booleans are not numbers
        ("args.flag == 1", False),
        ("args.flag == true", True),
        ("args.flag == True", True),
        ("args.flag", True),
        ("exit_code", False),  # a bare value: its truth
        ("exit_code == -1", False),
        ("args.lr > -0.5", True),
        ("command == ['python', 'train.py']", True),
        ("command == ('python', 'train.py')", True),  # a tuple is a list
        ("gpus == [0, 1]", True),
        ("gpus == [0, true]", False),
        # chained comparisons
        ("0 < id < 5", True),
        ("0 < id < 3", False),
        ("1 < id > 2", True),
        ("id == 3 == 3", True),
        ("3 <= id <= 3 < 4", True),
        ("0 < args.lr < 1 < id", True),
        ("0 < label < 5", False),
        # precedence: not > and > or
        ('not state == "queued"', True),
        ('not state == "finished" or id == 3', True),
        ('not (state == "finished" or id == 3)', False),
        ("id == 1 or id == 3 and exit_code == 0", True),
        ("id == 1 or id == 3 and exit_code == 1", False),
        ("(id == 1 or id == 3) and exit_code == 1", False),
        ("id == 3 or 1 and 0", True),
        ("(id == 3 or 1) and 0", False),
        ("not not id", True),
        ("id == 3 and not label", True),
        # nested access
        ("result.metrics.acc >= 0.9", True),
        ("result.metrics.loss == null", True),
        ("result.metrics.missing == null", True),
        ("result.nothing.deeper.still == null", True),
        ("args.model.depth in [12, 24]", True),
        ('args["lr"] == 0.1', True),
        ('args["model"]["name"] == "vit"', True),
        ('args.model["depth"] == 12', True),
        ("gpus[0] == 0", True),
        ("gpus[-1] == 1", True),
        ("gpus[2] == null", True),
        ("gpus[-3] == null", True),
        ('gpus["x"] == null', True),
        ("args[0] == null", True),
        ("args.tags[1] == 'b'", True),
        ("args.lr.deeper == null", True),  # into a number: None, no error
        ("command.upper == null", True),  # attributes are keys, never Python attributes
        ("state.upper == null", True),
        # None and incompatible types
        ("label == null", True),
        ("label == None", True),
        ("label != null", False),
        ("label != 'x'", True),
        ("label < 1", False),
        ("label > 1", False),
        ("label <= null", False),
        ('label < "a"', False),
        ("state < 1", False),
        ("state > 1", False),
        ("state != 1", True),
        ("args.model < 1", False),
        ("gpus < [0, 2]", True),  # lists order element by element
        ("gpus < ['a']", False),  # ... unless their elements do not compare
        ("missing == null", True),
        ("missing != 1", True),
        ("missing", False),
        # in and not in
        ('state in ["queued", "finished"]', True),
        ('state in ("finished",)', True),
        ('state not in ["queued"]', True),
        ('"fin" in state', True),
        ("1 in state", False),
        ("1 in 5", False),
        ("1 not in 5", True),
        ("1 in label", False),
        ("label in [null, 'x']", True),
        ('"lr" in args', True),
        ('"zz" in args', False),
        ("[1] in args", False),  # unhashable: not a key, no error
        ("0 in gpus", True),
        ("true in gpus", False),
        ("1.0 in gpus", True),
        ('"a" in args.tags and "c" not in args.tags', True),
        # whitespace
        ("   id == 3", True),
        ("(id ==\n 3)", True),
    ],
)
def test_matches(text: str, expected: bool) -> None:
    assert compile_where(text).matches(JOB) is expected


def test_names_are_top_level_fields_and_known_checks_them() -> None:
    where = compile_where("state == 'x' or args.lr > 0 and true", known={"state", "args"})
    assert where.fields == frozenset({"state", "args"})
    with pytest.raises(WhereError) as caught:
        compile_where("id == 1 or typo == 1", known={"id", "state"})
    assert str(caught.value) == "--where: position 12: unknown field 'typo' (fields: id, state)"
    assert not compile_where("typo == 1").matches(JOB)  # without known: a typo matches nothing


def test_enum_states_compare_as_strings() -> None:
    assert compile_where('state == "running"').matches({"state": JobState.RUNNING})
    assert compile_where('state in ["queued", "running"]').matches({"state": JobState.RUNNING})


def test_record_values_are_never_attributes() -> None:
    class Secret:
        password = "hunter2"

    record = {"obj": Secret(), "d": {"x": 1}}
    assert compile_where("obj.password == null").matches(record)
    assert compile_where("d.keys == null").matches(record)
    assert not compile_where("obj").matches({"obj": 0})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", "position 1: function calls are not allowed"),
        ("().__class__", "position 4: names starting with _ are not allowed"),
        ("args.__dict__", "position 6: names starting with _ are not allowed"),
        ("args._private == 1", "position 6: names starting with _ are not allowed"),
        ("_x == 1", "position 1: names starting with _ are not allowed"),
        ("open('x')", "position 1: function calls are not allowed"),
        ("state == f(x)", "position 10: function calls are not allowed"),
        ("state.upper()", "position 1: function calls are not allowed"),
        ('"é" == f(1)', "position 8: function calls are not allowed"),  # characters, not bytes
        ("[x for x in y]", "position 1: comprehensions are not allowed"),
        ("any(x for x in y)", "position 1: function calls are not allowed"),
        ("{x for x in y}", "position 1: comprehensions are not allowed"),
        ("{k: 1 for k in y}", "position 1: comprehensions are not allowed"),
        ("1 + 1", "position 3: arithmetic ('+') is not allowed"),
        ("id * 2 > 3", "position 4: arithmetic ('*') is not allowed"),
        ("(id) - 1 == 0", "position 6: arithmetic ('-') is not allowed"),
        ("id ** 2", "position 4: '**' is not allowed"),
        ("(y := 1)", "position 2: ':=' is not allowed"),
        ("(lambda: 1)", "position 2: lambda is not allowed"),
        ('f"{id}" == "3"', "position 1: f-strings are not allowed"),
        ("1 if id else 2", "position 1: conditional expressions are not allowed"),
        ("{1: 2}", "position 1: dict literals are not allowed"),
        ("id in {1, 2}", "position 7: set literals are not allowed: use a list, [a, b]"),
        ("[*gpus]", "position 2: '*' unpacking is not allowed"),
        ("gpus[0:1]", "position 6: slices are not allowed"),
        ("gpus[id]", "position 6: a subscript must be a string or integer constant"),
        ("gpus[True]", "position 6: a subscript must be a string or integer constant"),
        ("gpus[0.5]", "position 6: a subscript must be a string or integer constant"),
        ("-id < 0", "position 1: '-' is allowed only before a number"),
        ("-True", "position 1: '-' is allowed only before a number"),
        ("+1 == 1", "position 1: '+' is not allowed"),
        ("~1 == 1", "position 1: '~' is not allowed"),
        ("label is None", "position 7: 'is' is not allowed: use == or !="),
        ("id == 1 == label is not None", "position 18: 'is not' is not allowed"),
        ("b'x' == 1", "position 1: bytes literals are not allowed"),
        ("1j == 1", "position 1: complex literals are not allowed"),
        ("... == 1", "position 1: ellipsis literals are not allowed"),
        ("await x", "position 1: await is not allowed"),
        # syntax errors: the parser's position
        ("id ==", "position 6: the expression is incomplete"),
        ("id == = 1", "position 7: invalid syntax"),
        ("  id == (", "position 9: '(' was never closed"),
        ("id = 1", "position 4: invalid syntax"),
        ("import os", "position 1: invalid syntax"),
        ("", "the expression is empty"),
        ("   ", "the expression is empty"),
        ("id == 1\x00", "--where: "),
        ("(" * 300 + ")" * 300, "--where: "),
    ],
)
def test_rejected(text: str, message: str) -> None:
    with pytest.raises(WhereError) as caught:
        compile_where(text)
    assert message in str(caught.value)
    assert str(caught.value).startswith("--where: ")
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, UsageError)


def test_never_evaluates_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """ast.parse may compile to an AST; nothing may compile to code, eval or exec."""
    real_compile = builtins.compile

    def ast_only(source: Any, filename: Any, mode: str, flags: int = 0, *args: Any, **kwargs: Any) -> Any:
        assert flags & ast.PyCF_ONLY_AST, "compiled to code"
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "compile", ast_only)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    where = compile_where('state == "finished" and args.model.depth in [12] and not label')
    assert where.matches(JOB)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["lr", "a", "b"]), inner, max_size=3)
    ),
    max_leaves=10,
)
_records = st.dictionaries(st.sampled_from(["id", "state", "label", "args", "result", "gpus"]), _json)
_EXPRESSIONS = [
    "id > 3",
    "0 <= id < 10",
    "state in ['a', 'b']",
    "'x' in label",
    "args.lr >= 0.1 and not result.a.b",
    "args['lr'] != null or gpus[0] == 1",
    "gpus[-1] in args",
    "label < state",
    "result == [1, 'a', null]",
    "args",
]


@settings(max_examples=300)
@given(record=_records)
def test_evaluation_never_raises(record: dict[str, Any]) -> None:
    for text in _EXPRESSIONS:
        assert compile_where(text).matches(record) in (True, False)


@settings(max_examples=200)
@given(a=st.none() | st.booleans() | st.integers() | st.text(max_size=3), b=st.integers())
def test_not_equal_is_the_negation_of_equal(a: Any, b: int) -> None:
    record = {"a": a, "b": b}
    assert compile_where("a != b").matches(record) is not compile_where("a == b").matches(record)
