"""Arguments and command templates: parsing, nesting, "no more, no less", quoting, run names."""

from __future__ import annotations

import hashlib
import re
import shlex
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spooler.errors import UsageError
from spooler.prepare.template import (
    TemplateError,
    assign,
    build_args,
    canonical,
    fill,
    flatten,
    parse_value,
    placeholders,
    run_name,
    split_key,
)

# --- parse_value ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1", 0.1),
        ("12", 12),
        ("-3", -3),
        ("1e-5", 1e-5),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[1,2]", [1, 2]),
        ('{"a":1}', {"a": 1}),
        ('"quoted"', "quoted"),
        ('"12"', "12"),
        ("vit", "vit"),
        ("runs/a b", "runs/a b"),
        ("", ""),
        ("True", "True"),  # Python spelling is not JSON
        ("NaN", "NaN"),  # not strict JSON: stays text
        ("Infinity", "Infinity"),
        ("[1,", "[1,"),
        ("[" * 100_000, "[" * 100_000),
    ],
)
def test_parse_value(text: str, expected: Any) -> None:
    value = parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


# --- build_args -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "blobs", "expected"),
    [
        ([], [], {}),
        (["lr=0.1", "model=vit"], [], {"lr": 0.1, "model": "vit"}),
        (["model.depth=12", "model.name=vit"], [], {"model": {"depth": 12, "name": "vit"}}),
        (["a.b.c=1"], [], {"a": {"b": {"c": 1}}}),
        (["url=http://x/?a=b"], [], {"url": "http://x/?a=b"}),  # split at the first =
        (["empty="], [], {"empty": ""}),
        (["lr=0.1", "lr=0.2"], [], {"lr": 0.2}),  # later wins
        (['m={"depth": 12}', "m.width=3"], [], {"m": {"depth": 12, "width": 3}}),  # tables merge
        (["my-key_2=x"], [], {"my-key_2": "x"}),
        ([], ['{"lr": 0.1, "model": {"depth": 12}}'], {"lr": 0.1, "model": {"depth": 12}}),
        ([], ['{"model.depth": 12}'], {"model": {"depth": 12}}),  # dotted keys nest in blobs too
        ([], ['{"a": 1}', '{"a": 2, "b": 3}'], {"a": 2, "b": 3}),
        ([], ['{"m": {"a": 1}}', '{"m": {"b": 2}}'], {"m": {"a": 1, "b": 2}}),
        (["lr=0.5"], ['{"lr": 0.1, "wd": 0}'], {"lr": 0.5, "wd": 0}),  # pairs apply after blobs
        (["list=[1, 2]"], [], {"list": [1, 2]}),
    ],
)
def test_build_args(pairs: list[str], blobs: list[str], expected: dict[str, Any]) -> None:
    assert build_args(pairs, blobs) == expected


@pytest.mark.parametrize(
    ("pairs", "blobs", "message"),
    [
        (["lr"], [], '--arg "lr": expected key=value'),
        (["=1"], [], '--arg "=1": the key before = is empty'),
        (["a..b=1"], [], 'invalid argument name "a..b"'),
        ([".a=1"], [], 'invalid argument name ".a"'),
        (["a.=1"], [], 'invalid argument name "a."'),
        (["a b=1"], [], 'invalid argument name "a b"'),
        (["é=1"], [], 'invalid argument name "é"'),
        (["a=1", "a.b=2"], [], "argument a is both a value and a table"),
        (["a.b=2", "a=1"], [], "argument a is both a value and a table"),
        (["a.b=2", "a.b.c=1"], [], "argument a.b is both a value and a table"),
        (["a=null", "a.b=1"], [], "argument a is both a value and a table"),
        (["_name=x"], [], "_name: names starting with _ are reserved"),
        ([], ["[1, 2]"], "must be a JSON object, not [1, 2]"),
        ([], ["{nope"], "not valid JSON"),
        ([], ['{"a b": 1}'], 'invalid argument name "a b"'),
        ([], ['{"m": {"x y": 1}}'], 'invalid argument name "x y"'),
        ([], ['{"a": 1, "a.b": 2}'], "argument a is both a value and a table"),
        (["a=1"], ['{"a": {"b": 1}}'], "argument a is both a value and a table"),
    ],
)
def test_build_args_errors(pairs: list[str], blobs: list[str], message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        build_args(pairs, blobs)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, UsageError)


def test_build_args_does_not_share_values_between_definitions() -> None:
    args = build_args(["a=[1]"], ['{"m": {"x": [2]}}'])
    again = build_args(["a=[1]"], ['{"m": {"x": [2]}}'])
    args["m"]["x"].append(3)
    assert again["m"]["x"] == [2]


# --- flatten ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, {}),
        ({"lr": 0.1}, {"lr": 0.1}),
        ({"m": {"d": 12, "w": {"x": [1]}}}, {"m.d": 12, "m.w.x": [1]}),
        ({"m": {}}, {"m": {}}),  # an empty table is a leaf
        ({"n": None, "l": []}, {"n": None, "l": []}),
    ],
)
def test_flatten(args: dict[str, Any], expected: dict[str, Any]) -> None:
    assert flatten(args) == expected


# --- placeholders -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("python train.py", []),
        ("%(lr)", ["lr"]),
        ("--lr=%(lr) --m %(model.depth)", ["lr", "model.depth"]),
        ("%(a)%(b)%(a)", ["a", "b", "a"]),
        ("%%(lr)", []),  # escaped
        ("%%(lr) %(wd)", ["wd"]),
        ("100% done, %d %s %%", []),  # a lone % is text
        ("%(my-key_2)", ["my-key_2"]),
        ("%(_name)", ["_name"]),
        ("", []),
    ],
)
def test_placeholders(text: str, names: list[str]) -> None:
    assert placeholders(text) == names


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("echo %(lr", "position 6: %( is not closed by )"),
        ("%(", "position 1: %( is not closed by )"),
        ("x %(a b)", "position 3: invalid placeholder %(a b)"),
        ("%()", "position 1: invalid placeholder %()"),
        ("%(a..b)", "invalid placeholder %(a..b)"),
        ("printf '%(%Y-%m-%d)T'", "position 9: invalid placeholder %(%Y-%m-%d)"),
    ],
)
def test_placeholder_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        placeholders(text)
    assert message in str(caught.value)
    assert "%%(" in str(caught.value)  # tells how to write a literal %(


# --- fill -------------------------------------------------------------------------------------

ARGS: dict[str, Any] = {"lr": 0.1, "model": {"depth": 12, "name": "vit"}, "flag": True, "tags": [1, 2]}


@pytest.mark.parametrize(
    ("command", "shell", "expected"),
    [
        (
            [
                "python",
                "t.py",
                "--lr",
                "%(lr)",
                "--depth=%(model.depth)",
                "%(model.name)",
                "%(flag)",
                "%(tags)",
            ],
            False,
            ["python", "t.py", "--lr", "0.1", "--depth=12", "vit", "true", "[1, 2]"],
        ),
        (
            ["echo", "%(model)", "%(lr)", "%(flag)", "%(tags)"],
            False,
            ["echo", '{"depth": 12, "name": "vit"}', "0.1", "true", "[1, 2]"],
        ),
        (
            ["python t.py --lr %(lr) --m %(model.name) %(flag) %(tags) %(model.depth)"],
            True,
            ["python t.py --lr 0.1 --m vit true '[1, 2]' 12"],
        ),
        (
            ["echo %(model) %(lr) %(flag) %(tags)"],
            True,
            ['echo \'{"depth": 12, "name": "vit"}\' 0.1 true \'[1, 2]\''],
        ),
        (
            ["echo", "%%(lit)", "%(model)%(lr)%(flag)%(tags)"],
            False,
            ["echo", "%(lit)", '{"depth": 12, "name": "vit"}0.1true[1, 2]'],
        ),
        (
            ["echo %%(lit) %(model) %(lr) %(flag) %(tags)"],
            True,
            ['echo %(lit) \'{"depth": 12, "name": "vit"}\' 0.1 true \'[1, 2]\''],
        ),
    ],
)
def test_fill(command: list[str], shell: bool, expected: list[str]) -> None:
    assert fill(command, ARGS, shell=shell) == expected


@pytest.mark.parametrize(
    ("value", "argv_text", "shell_text"),
    [
        ("runs/a b", "runs/a b", "'runs/a b'"),
        ("it's", "it's", "'it'\"'\"'s'"),
        ("$HOME", "$HOME", "'$HOME'"),
        ("`id`", "`id`", "'`id`'"),
        ("x; rm -rf /", "x; rm -rf /", "'x; rm -rf /'"),
        ("", "", "''"),
        ("1", "1", "1"),  # the string "1" and the number 1 fill alike
        (1, "1", "1"),
        (None, "null", "null"),
        (False, "false", "false"),
        ({}, "{}", "'{}'"),
    ],
)
def test_fill_value_text_and_quoting(value: Any, argv_text: str, shell_text: str) -> None:
    assert fill(["echo", "%(v)"], {"v": value}, shell=False) == ["echo", argv_text]
    assert fill(["echo %(v)"], {"v": value}, shell=True) == [f"echo {shell_text}"]


def test_fill_table_placeholder_covers_its_leaves() -> None:
    args = {"model": {"depth": 12, "opt": {"name": "adam"}}}
    assert fill(["x", "%(model)"], args, shell=False) == ["x", '{"depth": 12, "opt": {"name": "adam"}}']
    assert fill(["x", "%(model.opt)", "%(model.depth)"], args, shell=False) == ["x", '{"name": "adam"}', "12"]


def test_fill_extra_values_and_reserved_names() -> None:
    extra = {"_name": "lr=0.1"}
    assert fill(["out/%(_name)", "%(lr)"], {"lr": 0.1}, shell=False, extra=extra) == ["out/lr=0.1", "0.1"]
    assert fill(["out/%(_name) %(lr)"], {"lr": 0.1}, shell=True, extra=extra) == ["out/lr=0.1 0.1"]
    # _-names in args are never user arguments: never "unused", and never what %(_name) reads
    assert fill(["%(lr)"], {"lr": 1, "_internal": 2}, shell=False) == ["1"]
    with pytest.raises(TemplateError, match=r"%\(_name\) is not a computed value"):
        fill(["%(_name)"], {"_name": "x"}, shell=False)


@pytest.mark.parametrize(
    ("command", "args", "allow_extra", "message"),
    [
        (["%(lr)"], {}, False, "%(lr) has no value: pass --arg lr=..."),
        (["%(model.depth)"], {"model": {"name": "vit"}}, True, "%(model.depth) has no value"),
        (["%(model.depth)"], {"model": "vit"}, True, "%(model.depth) has no value"),
        (["%(lr)"], {"lr": 1, "wd": 2}, False, "argument wd is not used by the command: add %(wd)"),
        (
            ["x"],
            {"a": 1, "m": {"d": 2}},
            False,
            "arguments a, m.d are not used by the command: add %(a) %(m.d)",
        ),
        (["%(m.d)"], {"m": {"d": 1, "w": 2}}, False, "argument m.w is not used"),
        (["%(m)"], {"m": {}}, True, ""),  # an empty table has a value: {}
        (["x"], {"m": {}}, False, "argument m is not used"),
        (["%(_other)"], {}, False, "%(_other) is not a computed value (those are: %(_name))"),
        (["ok", "%(a"], {}, False, "%( is not closed"),
    ],
)
def test_no_more_no_less(command: list[str], args: dict[str, Any], allow_extra: bool, message: str) -> None:
    extra = {"_name": "n"}
    if not message:
        fill(command, args, shell=False, allow_extra=allow_extra, extra=extra)
        return
    for shell in (False, True):
        with pytest.raises(TemplateError) as caught:
            fill(command, args, shell=shell, allow_extra=allow_extra, extra=extra)
        assert message in str(caught.value)


def test_allow_extra_lets_unused_arguments_through() -> None:
    assert fill(["%(lr)"], {"lr": 1, "wd": 2}, shell=False, allow_extra=True) == ["1"]
    assert fill(["true"], {"lr": 1}, shell=True, allow_extra=True) == ["true"]


def test_fill_does_not_reinterpret_filled_values() -> None:
    """A value holding %(...) is data: it is not filled again."""
    assert fill(["%(a)", "%(b)"], {"a": "%(b)", "b": "x"}, shell=False) == ["%(b)", "x"]


_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30) | st.sampled_from(
    ["a b", "it's", '"q"', "$HOME", "`id`", "a;b", "x\ny", "\\", "*", "~", "#c", "&", "|", "-n", "''"]
)


@settings(max_examples=300)
@given(a=_text, b=_text)
def test_shell_fill_round_trips_through_shlex(a: str, b: str) -> None:
    (line,) = fill(["printf %s %(a) --b=%(b)"], {"a": a, "b": b}, shell=True)
    assert shlex.split(line) == ["printf", "%s", a, f"--b={b}"]


@settings(max_examples=200)
@given(a=_text)
def test_argv_fill_inserts_values_verbatim(a: str) -> None:
    assert fill(["x", "%(a)", "pre%(a)post"], {"a": a}, shell=False) == ["x", a, f"pre{a}post"]


# --- run_name ---------------------------------------------------------------------------------

_SAFE = re.compile(r"[A-Za-z0-9._,=+-]+")


def _digest(args: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(args).encode()).hexdigest()[:12]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, "default"),
        ({"lr": 0.1, "model": "vit"}, "lr=0.1,model=vit"),
        ({"model": "vit", "lr": 0.1}, "lr=0.1,model=vit"),  # sorted by key
        ({"model": {"depth": 12}, "a": 1}, "a=1,model.depth=12"),
        ({"flag": True, "n": None, "neg": -1, "e": 1e-05}, "e=1e-05,flag=true,n=null,neg=-1"),
        ({"a": 1}, "a=1"),
        ({"a": "a-b"}, "a=a-b"),
        ({"s": ""}, "s="),
        ({"x": 1.0}, "x=1.0"),
    ],
)
def test_run_name_readable(args: dict[str, Any], expected: str) -> None:
    assert run_name(args) == expected


@pytest.mark.parametrize(
    ("args", "readable"),
    [
        ({"a": "1"}, "a=1"),  # would collide with the number 1
        ({"a": "true"}, "a=true"),
        ({"a": "null"}, "a=null"),
        ({"a": "0.1"}, "a=0.1"),
        ({"a": "a/b"}, "a=a_b"),  # / replaced
        ({"a": "a b"}, "a=a_b"),
        ({"a": "x,y=z"}, "a=x,y=z"),  # , and = inside a value
        ({"a": [1, 2]}, "a=_1,_2_"),
        ({"m": {}}, "m=__"),
        ({"m.d": 12}, "m.d=12"),  # a dotted key would collide with {"m": {"d": 12}}
        ({"a": "v-0123456789ab"}, "a=v-0123456789ab"),  # looks like a hashed name
        ({"a": float("nan")}, "a=NaN"),
    ],
)
def test_run_name_hashes_what_is_not_exact(args: dict[str, Any], readable: str) -> None:
    assert run_name(args) == f"{readable}-{_digest(args)}"


@pytest.mark.parametrize(
    "pair",
    [
        ({"a": "1"}, {"a": 1}),
        ({"a": "true"}, {"a": True}),
        ({"a": "a/b"}, {"a": "a-b"}),
        ({"a": "a/b"}, {"a": "a_b"}),
        ({"a": "x" * 200}, {"a": "x" * 200 + "y"}),
        ({"a": "x" * 200 + "1"}, {"a": "x" * 200 + "2"}),
        ({"m.d": 12}, {"m": {"d": 12}}),
        ({"a": 1, "b": "2"}, {"a": "1", "b": 2}),
        ({"m": {}}, {}),
        ({"a": 1}, {"a": 1.0}),
        ({"a": 1}, {"a": True}),
        ({"a": "v-" + _digest({"b": "x/"})}, {"b": "x/"}),
    ],
)
def test_run_name_collisions(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    first, second = pair
    assert run_name(first) != run_name(second)


def test_run_name_long_values_are_cut_and_hashed() -> None:
    name = run_name({"a": "x" * 500})
    assert len(name) == 120
    assert name.startswith("a=xxx")
    assert name.endswith("-" + _digest({"a": "x" * 500}))
    assert len(run_name({"a": "x" * 118})) == 120  # "a=" + 118 = 120: fits exactly, no hash
    assert run_name({"a": "x" * 118}) == "a=" + "x" * 118
    assert run_name({"a": "x" * 119}).endswith(_digest({"a": "x" * 119}))


_keys = st.text("abcAB09_-", min_size=1, max_size=6)
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.text("1a/_-,=. e", max_size=4)  # small alphabet: near-collisions after replacement
    | st.sampled_from(["1", "true", "null", "0.1", "a/b", "a-b", "a_b", "x,y", "k=v", "", ".", ".."])
    | st.lists(st.integers(0, 3), max_size=2)
)
_args = st.recursive(
    st.dictionaries(_keys, _leaves, max_size=4),
    lambda inner: st.dictionaries(_keys, inner | _leaves, max_size=3),
    max_leaves=8,
)


@settings(max_examples=500)
@given(args=_args)
def test_run_name_is_filesystem_safe(args: dict[str, Any]) -> None:
    name = run_name(args)
    assert _SAFE.fullmatch(name)
    assert name not in ("", ".", "..")
    assert len(name) <= 120


@settings(max_examples=300)
@given(many=st.lists(_args, min_size=2, max_size=30))
def test_run_name_is_injective(many: list[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for args in many:
        key = canonical(args)
        name = run_name(args)
        assert seen.setdefault(name, key) == key, f"{name} names both {seen[name]} and {key}"


@settings(max_examples=300)
@given(args=_args)
def test_unhashed_names_read_back(args: dict[str, Any]) -> None:
    """A name without the hash suffix is an exact encoding: parse it back and get the args."""
    name = run_name(args)
    if name == "default":
        assert flatten(args) == {}
        return
    if re.search(r"-[0-9a-f]{12}$", name):
        return
    back: dict[str, Any] = {}
    for item in name.split(","):
        key, _, text = item.partition("=")
        assign(back, split_key(key), parse_value(text))
    assert canonical(back) == canonical(args)


def test_the_run_name_counts_as_using_every_argument() -> None:
    args = {"seed": 1, "lr": 0.1}
    filled = fill(["run", "--out", "%(_name)"], args, shell=False, extra={"_name": run_name(args)})
    assert filled == ["run", "--out", "lr=0.1,seed=1"]
