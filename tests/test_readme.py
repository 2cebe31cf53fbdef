"""The README's examples work: every ts command line in it parses, and the walk-throughs run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, Spool

from spooler.cli.parse import parse

README = (Path(__file__).parent.parent / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def ts_command_lines() -> list[str]:
    found = []
    for block in blocks("sh"):
        for line in block.splitlines():
            code = line.split("  #")[0].strip()
            for part in re.split(r"\s*(?:;|&&|\|)\s*", code):
                words = shlex.split(part) if part else []
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]  # VAR=value ts ...
                if words[:1] == ["ts"]:
                    found.append(part)
    return found


@pytest.mark.parametrize("line", ts_command_lines())
def test_every_ts_command_in_the_readme_parses(line: str) -> None:
    words = shlex.split(line)
    while words[0] != "ts":
        words = words[1:]
    parse(words[1:])  # raises UsageError on anything ts would refuse


@pytest.fixture
def fake_python(spool: Spool, tmp_path: Path) -> Spool:
    """README examples run ``python train.py ...``: a stand-in that succeeds and marks its run."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "python"
    script.write_text(
        '#!/bin/sh\nfor a; do case "$prev" in --out) mkdir -p "$a";; esac; prev=$a; done\nexit 0\n'
    )
    script.chmod(0o755)
    spool.env["PATH"] = f"{bindir}:{BIN}:{os.environ['PATH']}"
    return spool


def sh(spool: Spool, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script], env=spool.env, cwd=spool.root, capture_output=True, text=True, timeout=120
    )


def test_the_quick_start(fake_python: Spool) -> None:
    line = next(b for b in blocks("sh") if "pip install ." in b).strip()
    first_job = line.split("&&", 1)[1].strip()  # the install itself is what CI does
    done = sh(fake_python, first_job)
    assert done.returncode == 0 and done.stdout.strip() == "0"
    assert fake_python.run("-w", "0").returncode == 0
    assert sh(fake_python, "ts -c 0").stdout == "hello from the spooler\n"


def test_the_for_loop_replacement(fake_python: Spool) -> None:
    line = next(line for b in blocks("sh") for line in b.splitlines() if "ts --batch -" in line)
    done = sh(fake_python, line)
    assert done.returncode == 0 and done.stdout.split() == ["0", "1", "2"]
    assert fake_python.run("-w", "2").returncode == 0
    assert next(j["command"] for j in fake_python.jobs()) == "python train.py --lr 0.1"


def test_the_sweep_example(fake_python: Spool) -> None:
    toml = next(b for b in blocks("toml") if "[[grid]]" in b)
    (fake_python.root / "sweep.toml").write_text(toml)
    dry = fake_python.ts("sweep", "sweep.toml", "--dry-run").splitlines()
    assert len(dry) == 5 and all(line.startswith("python train.py --model ") for line in dry)
    assert fake_python.jobs() == []


def test_the_python_api_example(fake_python: Spool) -> None:
    gpus = fake_python.root / "gpus.json"  # the example asks for a GPU each
    gpus.write_text('[{"total_mib": 24000, "used_mib": 0}]')
    fake_python.env["TS_FAKE_GPUS"] = str(gpus)
    code = next(b for b in blocks("python") if "from spooler import Client" in b)
    done = subprocess.run(
        [sys.executable, "-c", code + "\nprint(sorted(statuses.values()), len(failed))\n"],
        env=fake_python.env, cwd=fake_python.root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 0, 0] 0"
    assert {j["sweep"] for j in fake_python.jobs()} == {"lr-sweep"}


def test_the_results_example(spool: Spool, tmp_path: Path) -> None:
    """The digits sweep, with a stand-in ``python`` that writes the accuracy the README shows
    for its C and solver: ``ts results`` must print the README's table, run times aside."""
    toml = next(b for b in blocks("toml") if 'name = "digits"' in b)
    command = next(line for b in blocks("sh") for line in b.splitlines() if line.startswith("ts results"))
    shown = next(b for b in blocks("text") if b.startswith("8 runs"))
    accs = {}
    for line in shown.splitlines()[2:-1]:
        _, c, solver, acc = line.lstrip("* ").split()[2:]
        accs[f"{c} {solver}"] = float(acc)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "accs.json").write_text(json.dumps(accs))
    script = bindir / "python"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"accs = json.load(open({str(bindir / 'accs.json')!r}))\n"
        "acc = accs[sys.argv[3] + ' ' + sys.argv[5]]  # digits.py --C C --solver S\n"
        "json.dump({'acc': acc}, open(os.environ['TS_RESULT_FILE'], 'w'))\n"
    )
    script.chmod(0o755)
    spool.env["PATH"] = f"{bindir}:{BIN}:{os.environ['PATH']}"
    (spool.root / "digits.toml").write_text(toml)
    assert sh(spool, "ts sweep digits.toml").stdout.split() == [str(n) for n in range(8)]
    assert spool.run("-w", "7").returncode == 0
    for n in range(7):
        spool.run("-w", str(n))
    done = sh(spool, command)
    assert done.returncode == 0, done.stderr

    def without_times(text: str) -> list[str]:
        return [" ".join(re.sub(r"\b[0-9.]+s\b", "T", line).split()) for line in text.splitlines()]

    assert without_times(done.stdout) == without_times(shown)
