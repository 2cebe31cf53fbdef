"""Sweep files: loading and checking TOML and JSON, grid expansion, and filling every run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from spooler.errors import UsageError
from spooler.prepare.sweep import Sweep, SweepError, commands, expand, load_sweep
from spooler.prepare.template import run_name

FULL_TOML = """\
name = "lr-sweep"
command = ["python", "train.py", "--lr", "%(lr)", "--model", "%(model)", "--out", "runs/%(_name)"]

[base]
epochs = 10
model.depth = 12

[[grid]]
lr = [0.1, 0.01]
model.name = ["vit", "resnet"]

[options]
gpus = 1
label = "lr"
after = [3, 4]
snapshot = true
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def error(path: str) -> str:
    with pytest.raises(SweepError) as caught:
        load_sweep(path)
    message = str(caught.value)
    assert "\n" not in message
    assert isinstance(caught.value, UsageError)
    return message


# --- loading ----------------------------------------------------------------------------------


def test_load_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "s.toml", FULL_TOML)
    sweep = load_sweep(path)
    assert sweep == Sweep(
        name="lr-sweep",
        command=["python", "train.py", "--lr", "%(lr)", "--model", "%(model)", "--out", "runs/%(_name)"],
        base={"epochs": 10, "model": {"depth": 12}},
        grid=[{"lr": [0.1, 0.01], "model.name": ["vit", "resnet"]}],
        options={"gpus": 1, "label": "lr", "after": [3, 4], "snapshot": True},
        path=path,
    )


def test_load_json_with_dotted_keys(tmp_path: Path) -> None:
    doc = {
        "command": "python train.py --lr %(lr) --depth %(model.depth)",
        "base": {"model.depth": 12, "opt": {"name.first": "adam"}},
        "grid": [{"lr": [1, 2]}, {"model": {"depth": [24]}, "lr": [3]}],
    }
    sweep = load_sweep(write(tmp_path, "exp.json", json.dumps(doc)))
    assert sweep.name == "exp"
    assert sweep.command == doc["command"]
    assert sweep.base == {"model": {"depth": 12}, "opt": {"name": {"first": "adam"}}}
    assert sweep.grid == [{"lr": [1, 2]}, {"model.depth": [24], "lr": [3]}]
    assert sweep.options == {}


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("sweep.txt", '  {"command": "echo %(a)", "base": {"a": 1}}'),  # sniffed: JSON
        ("sweep", 'command = "echo %(a)"\nbase.a = 1\n'),  # sniffed: TOML
        ("sweep.cfg", 'command = "echo %(a)"\n[base]\na = 1\n'),
        ("sweep.TOML", 'command = "echo %(a)"\nbase = {a = 1}\n'),
    ],
)
def test_format_by_suffix_or_sniffing(tmp_path: Path, filename: str, text: str) -> None:
    sweep = load_sweep(write(tmp_path, filename, text))
    assert (sweep.name, sweep.command, sweep.base, sweep.grid) == ("sweep", "echo %(a)", {"a": 1}, [])


@pytest.mark.parametrize(
    ("filename", "name"),
    [("my sweep.toml", "my_sweep"), ("a.b.toml", "a.b"), ("ü.toml", "_"), (".toml", ".toml")],
)
def test_default_name_is_made_safe(tmp_path: Path, filename: str, name: str) -> None:
    assert load_sweep(write(tmp_path, filename, 'command = "true"\n')).name == name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # syntax: the parser's line
        (
            'command = "x"\ngrid = [\n  {lr = [1,, 2]}\n]\n',
            "s.toml: line 3, column 12: invalid TOML: Invalid value",
        ),
        ('command = "x"\nname = \n', "s.toml: line 2, column 8: invalid TOML: Invalid value"),
        ('command = "x"\ncommand = "y"\n', "s.toml: line 2, column "),
        ('command = "x"\ngrid = [{lr = [1,\n', "s.toml: at the end of the file: invalid TOML"),
        # semantics: the key path, and the line when it can be found
        (
            'command = "x %(lr)"\n\n[[grid]]\nlr = [1]\n\n[[grid]]\nmodel = ["a"]\nlr = 0.1\n',
            "s.toml: line 8: grid[1].lr must be a list, not 0.1",
        ),
        (
            'command = "x"\ngrid = [{lr = [1]}, {lr = "0.1"}]\n',
            's.toml: line 2: grid[1].lr must be a list, not "0.1"',
        ),
        (
            'command = "x"\n[[grid]]\nmodel.depth = 12\n',
            "s.toml: line 3: grid[0].model.depth must be a list, not 12",
        ),
        ('command = "x"\n[[grid]]\nlr = []\n', "s.toml: line 3: grid[0].lr is an empty list"),
        (
            'command = "x"\n[grid]\nlr = [1]\n',
            "s.toml: line 2: grid must be a list of tables: write [[grid]]",
        ),
        ('command = "x"\ngrid = [1]\n', "s.toml: grid[0] must be a table, not 1"),
        ('command = "x"\ngrid = 3\n', "s.toml: line 2: grid must be a list of tables, not 3"),
        ('command = "x"\n[[grid]]\n_x = [1]\n', "grid[0]._x: names starting with _ are reserved"),
        ('command = "x"\n[[grid]]\n"a b" = [1]\n', 'grid[0]: invalid argument name "a b"'),
        ('command = "x"\n[[grid]]\nm = [1]\nm.d = [2]\n', "line 4, column 10: invalid TOML"),  # TOML refuses
        ('command = "x"\n[[grid]]\nm = [{"a b" = 1}]\n', 'grid[0].m: invalid argument name "a b"'),
        ('command = "x"\ncomand = "y"\n', 's.toml: line 2: unknown key "comand" (known: base, command, grid'),
        ('name = "x"\n', "s.toml: command is missing"),
        ("command = 5\n", "s.toml: line 1: command must be a string or a list of strings, not 5"),
        ("command = []\n", "command must be a string or a list of strings, not []"),
        ('command = ["a", 1]\n', 'command must be a string or a list of strings, not ["a", 1]'),
        ('command = "  "\n', "s.toml: line 1: command is empty"),
        ('command = "x %(lr"\n', 's.toml: line 1: command: "x %(lr": position 3: %( is not closed by )'),
        (
            'command = "x"\nname = "a/b"\n',
            's.toml: line 2: name must be letters, digits, ., _ and - only, not "a/b"',
        ),
        ('command = "x"\nname = ".."\n', "name must be letters, digits, ., _ and - only"),
        ('command = "x"\nbase = 3\n', "s.toml: line 2: base must be a table of arguments, not 3"),
        (
            'command = "x"\nbase = {_name = "x"}\n',
            "s.toml: base: argument _name: names starting with _ are reserved",
        ),
        (
            'command = "x"\n[base]\nwhen = 1979-05-27\n',
            "s.toml: line 3: base.when: dates and times are not supported",
        ),
        (
            'command = "x"\n[[grid]]\nd = [1979-05-27]\n',
            "line 3: grid[0].d: dates and times are not supported",
        ),
        ('command = "x"\noptions = []\n', "s.toml: line 2: options must be a table, not []"),
        (
            'command = "x"\n[options]\ngpu = 1\n',
            "s.toml: line 3: options.gpu is not an option here (known: after",
        ),
        (
            'command = "x"\n[options]\ngpus = "1"\n',
            's.toml: line 3: options.gpus must be an integer, not "1"',
        ),
        ('command = "x"\n[options]\ngpus = true\n', "options.gpus must be an integer, not true"),
        ('command = "x"\n[options]\nretry = 1.5\n', "options.retry must be an integer, not 1.5"),
        ('command = "x"\n[options]\nlabel = 1\n', "options.label must be a string, not 1"),
        ('command = "x"\n[options]\nsnapshot = 1\n', "options.snapshot must be true or false, not 1"),
        ('command = "x"\n[options]\nafter = 3\n', "options.after must be a list of job ids, not 3"),
        (
            'command = "x"\n[options]\nafter_ok = [true]\n',
            "options.after_ok must be a list of job ids, not [true]",
        ),
    ],
)
def test_toml_errors(tmp_path: Path, text: str, message: str) -> None:
    assert message in error(write(tmp_path, "s.toml", text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{\n  "command": "x",\n  "grid": [1 2]\n}',
            "s.json: line 3, column 14: invalid JSON: Expecting ',' delimiter",
        ),
        ('{"command": "x"', "s.json: line 1, column 16: invalid JSON"),
        ("", "s.json: line 1, column 1: invalid JSON: Expecting value"),
        ('{"command": "x", "command": "y"}', 's.json: key "command" appears twice'),
        ("[1, 2]", "s.json: a sweep file holds a table (a JSON object), not [1, 2]"),
        (
            '{\n  "command": "x %(lr)",\n  "grid": [\n    {"lr": [1]},\n    {"lr": 0.1}\n  ]\n}',
            "s.json: grid[1].lr must be a list, not 0.1",  # "lr" twice: no line guessed
        ),
        (
            '{\n  "command": "x",\n  "grid": [{"lr": 0.1}]\n}',
            "s.json: line 3: grid[0].lr must be a list, not 0.1",
        ),
        ('{\n  "command": "x",\n  "extra": 1\n}', 's.json: line 3: unknown key "extra"'),
        ('{"command": "x", "grid": [{"m": [1], "m.d": [2]}]}', "grid[0]: m and m.d conflict"),
        ('{"command": "x", "grid": [{"m.d": [1], "m": {"d": [2]}}]}', "grid[0].m.d is given twice"),
        ('{"command": "x", "grid": [{"m": {}}]}', "grid[0].m must be a list, not {}"),
        ('{"command": "x", "base": {"a": 1, "a.b": 2}}', "base: argument a is both a value and a table"),
        ('{"command": "x", "options": {"gpus": null}}', "options.gpus must be an integer, not null"),
    ],
)
def test_json_errors(tmp_path: Path, text: str, message: str) -> None:
    assert message in error(write(tmp_path, "s.json", text))


def test_unreadable_files(tmp_path: Path) -> None:
    assert error(str(tmp_path / "missing.toml")).endswith(
        "missing.toml: cannot read it: No such file or directory"
    )
    binary = tmp_path / "b.toml"
    binary.write_bytes(b'command = "\xff"\n')
    assert "b.toml: not UTF-8 text" in error(str(binary))
    assert "cannot read it" in error(str(tmp_path))  # a directory


def test_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b'\xef\xbb\xbf{"command": "true"}')
    assert load_sweep(str(path)).command == "true"


# --- expand -----------------------------------------------------------------------------------


def sweep(grid: list[dict[str, list[Any]]], base: dict[str, Any] | None = None, command: Any = "x") -> Sweep:
    return Sweep(name="t", command=command, base=base or {}, grid=grid, options={})


def test_expand_gpu_task_scheduler_example() -> None:
    runs = expand(
        sweep(
            base={"num_run": 5, "num_epoch": 200},
            grid=[
                {"method": ["GAN", "ALI"], "num_packing": [1], "num_zmode": [1]},
                {"method": ["WGAN"], "num_packing": [3], "num_zmode": [1, 2]},
            ],
        )
    )
    common = {"num_run": 5, "num_epoch": 200}
    assert runs == [
        {**common, "method": "GAN", "num_packing": 1, "num_zmode": 1},
        {**common, "method": "ALI", "num_packing": 1, "num_zmode": 1},
        {**common, "method": "WGAN", "num_packing": 3, "num_zmode": 1},
        {**common, "method": "WGAN", "num_packing": 3, "num_zmode": 2},
    ]


def test_expand_cross_product_in_key_order_last_fastest() -> None:
    runs = expand(sweep([{"a": [1, 2], "b": ["x", "y", "z"]}]))
    assert [(r["a"], r["b"]) for r in runs] == [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]


def test_expand_union_removes_duplicates_keeping_the_first() -> None:
    runs = expand(sweep([{"a": [1, 2], "b": [0]}, {"b": [0, 9], "a": [2, 3]}, {"a": [1], "b": [0]}]))
    assert runs == [
        {"a": 1, "b": 0},
        {"a": 2, "b": 0},
        {"b": 0, "a": 3},
        {"b": 9, "a": 2},
        {"b": 9, "a": 3},
    ]


def test_expand_duplicates_inside_one_list_and_against_base() -> None:
    assert expand(sweep([{"a": [1, 1, 2]}])) == [{"a": 1}, {"a": 2}]
    assert expand(sweep([{"a": [1]}, {}], base={"a": 1})) == [{"a": 1}]


def test_expand_compares_by_canonical_json() -> None:
    """1, 1.0 and true are equal in Python but are different arguments."""
    runs = expand(sweep([{"a": [1, 1.0, True, "1", 1]}]))
    assert [json.dumps(r["a"]) for r in runs] == ["1", "1.0", "true", '"1"']


@pytest.mark.parametrize("grid", [[], [{}], [{}, {}]])
def test_expand_without_grid_is_one_run_of_base(grid: list[dict[str, list[Any]]]) -> None:
    base = {"lr": 0.1, "m": {"d": 1}}
    assert expand(sweep(grid, base=base)) == [base]
    assert expand(sweep(grid)) == [{}]


def test_expand_merges_dotted_combo_keys_into_base() -> None:
    runs = expand(
        sweep(
            [{"model.depth": [12, 24], "lr": [0.5]}], base={"lr": 0.1, "model": {"name": "vit", "depth": 6}}
        )
    )
    assert runs == [
        {"lr": 0.5, "model": {"name": "vit", "depth": 12}},
        {"lr": 0.5, "model": {"name": "vit", "depth": 24}},
    ]


def test_expand_table_candidates_merge() -> None:
    runs = expand(sweep([{"opt": [{"name": "sgd"}, {"name": "adam", "beta": 0.9}]}], base={"opt": {"lr": 1}}))
    assert runs == [{"opt": {"lr": 1, "name": "sgd"}}, {"opt": {"lr": 1, "name": "adam", "beta": 0.9}}]


@pytest.mark.parametrize(
    ("base", "grid", "message"),
    [
        (
            {"model": {"depth": 12}},
            [{"model": ["vit"]}],
            "grid[0]: argument model is both a value and a table",
        ),
        ({"model": "vit"}, [{}, {"model.depth": [1]}], "grid[1]: argument model is both a value and a table"),
        ({}, [{"a b": [1]}], 'grid[0]: invalid argument name "a b"'),
    ],
)
def test_expand_conflicts(base: dict[str, Any], grid: list[dict[str, list[Any]]], message: str) -> None:
    with pytest.raises(SweepError, match=message.replace("[", r"\[").replace("]", r"\]")):
        expand(sweep(grid, base=base))


def test_expand_refuses_huge_grids_before_expanding() -> None:
    huge = sweep([{key: list(range(10)) for key in "abcdef"}])  # 10**6 runs
    with pytest.raises(SweepError, match="the grid makes 1000000 runs: at most 100000"):
        expand(huge)
    assert len(expand(sweep([{"a": list(range(100)), "b": list(range(1000))}]))) == 100_000


def test_expand_runs_share_nothing() -> None:
    shared = {"m": {"tags": [1]}}
    s = sweep([{"a": [[1], [2]]}], base=shared)
    runs = expand(s)
    runs[0]["m"]["tags"].append(2)
    runs[0]["a"].append(9)
    assert runs[1] == {"m": {"tags": [1]}, "a": [2]}
    assert s.base == {"m": {"tags": [1]}}
    assert s.grid == [{"a": [[1], [2]]}]


def test_expand_loaded_file(tmp_path: Path) -> None:
    runs = expand(load_sweep(write(tmp_path, "s.toml", FULL_TOML)))
    assert runs == [
        {"epochs": 10, "model": {"depth": 12, "name": name}, "lr": lr}
        for lr in (0.1, 0.01)
        for name in ("vit", "resnet")
    ]


# --- commands ---------------------------------------------------------------------------------


def test_commands_argv_form(tmp_path: Path) -> None:
    text = FULL_TOML.replace('"--out"', '"--epochs", "%(epochs)", "--out"')
    out = commands(load_sweep(write(tmp_path, "s.toml", text)))
    assert len(out) == 4
    first_command, first_args = out[0]
    assert first_args == {"epochs": 10, "model": {"depth": 12, "name": "vit"}, "lr": 0.1}
    name = run_name(first_args)
    assert name == "epochs=10,lr=0.1,model.depth=12,model.name=vit"
    assert first_command == [
        "python",
        "train.py",
        "--lr",
        "0.1",
        "--model",
        '{"depth": 12, "name": "vit"}',
        "--epochs",
        "10",
        "--out",
        f"runs/{name}",
    ]
    assert len({tuple(command) for command, _ in out}) == 4


def test_commands_shell_form_quotes_values() -> None:
    s = sweep([{"msg": ["a b", "x; rm -rf ~", "$(id)"]}], command="echo %(msg) > out/%(_name).txt")
    out = commands(s)
    assert [command for command, _ in out] == [
        ["echo 'a b' > out/msg=a_b-" + run_name({"msg": "a b"})[-12:] + ".txt"],
        ["echo 'x; rm -rf ~' > out/" + run_name({"msg": "x; rm -rf ~"}) + ".txt"],
        ["echo '$(id)' > out/" + run_name({"msg": "$(id)"}) + ".txt"],
    ]
    assert [args for _, args in out] == [{"msg": "a b"}, {"msg": "x; rm -rf ~"}, {"msg": "$(id)"}]


def test_commands_checks_every_run_before_returning() -> None:
    """Only the last run lacks wd: nothing is returned, and the error names that run."""
    s = sweep([{"wd": [0, 1]}, {"lr": [5]}], command=["train", "--wd", "%(wd)"])
    s.path = "s.toml"
    with pytest.raises(SweepError) as caught:
        commands(s)
    assert str(caught.value) == "s.toml: run 3 (lr=5): %(wd) has no value: pass --arg wd=..."


def test_commands_no_more() -> None:
    s = sweep([{"lr": [1], "wd": [2]}], command=["train", "%(lr)"])
    with pytest.raises(SweepError, match=r"run 1 \(lr=1,wd=2\): argument wd is not used by the command"):
        commands(s)
    assert commands(s, allow_extra=True) == [(["train", "1"], {"lr": 1, "wd": 2})]
    s.options["allow_extra"] = True
    assert commands(s) == [(["train", "1"], {"lr": 1, "wd": 2})]


def test_commands_without_grid(tmp_path: Path) -> None:
    path = write(tmp_path, "one.toml", 'command = "echo %(a) %%(lit)"\nbase.a = "hi there"\n')
    assert commands(load_sweep(path)) == [(["echo 'hi there' %(lit)"], {"a": "hi there"})]


def test_sweep_errors_are_one_line_usage_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "s.toml", 'command = "x %(lr)"\n[[grid]]\nlr = 0.1\n')
    message = error(path)
    assert message == f"{path}: line 3: grid[0].lr must be a list, not 0.1"
    assert os.path.basename(path) in message
