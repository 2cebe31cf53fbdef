"""The man page: it documents every option and variable, and renders without a warning."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from spooler.cli.options import LONG, OPTIONS, SHORT, Option
from spooler.cli.usage import ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man" / "ts.1"


def source() -> str:
    return MAN.read_text(encoding="utf-8")


def text_lines() -> list[str]:
    """The page's source without comment lines and with font escapes removed."""
    lines = [line for line in source().splitlines() if not line.startswith(('.\\"', "'\\\""))]
    return [re.sub(r"\\f(\[[A-Z]*\]|\(..|[A-Z])", "", line) for line in lines]


def names_of(option: Option) -> list[str]:
    """The option's names as ts understands them: a name two options share means the last one."""
    names = [f"-{option.short}"] if option.short and SHORT[option.short] is option else []
    return names + ([f"--{option.long}"] if option.long and LONG[option.long] is option else [])


def roff(name: str) -> str:
    """An option name as the man page's source writes it: every hyphen escaped."""
    return name.replace("-", "\\-")


def readme_variables() -> list[str]:
    """The variables of README.md's environment table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Environment\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z_][A-Z0-9_]*)` \|", section, re.MULTILINE)


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["groff", "-man", *args, str(MAN)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.names)
def test_every_option_is_documented_with_escaped_hyphens(option: Option) -> None:
    # roff needs \- for a hyphen that must render as one, so the source holds "\-k", "\-\-kill".
    body = "\n".join(text_lines())
    written = names_of(option)
    assert written, f"{option.dest}: another option took both its names"
    # Not followed by more of a name: "\-\-gpu" must not count as "\-\-gpu_mem".
    names = [re.escape(roff(name)) + r"(?![\w\\])" for name in written]
    for pattern in names:
        assert re.search(pattern, body), f"{pattern} is not in man/ts.1"
    # And each has a tagged paragraph of its own in OPTIONS, not just a mention in passing.
    lines = source().split(".SH OPTIONS", 1)[1].split("\n.SH ", 1)[0].splitlines()
    tags = [tag for line, tag in itertools.pairwise(lines) if line == ".TP"]
    assert any(re.search(names[0], tag) for tag in tags), f"no .TP entry for {option.names}"


def test_no_option_is_written_with_a_bare_hyphen() -> None:
    bare = [
        line
        for line in text_lines()
        if re.search(r"(?<![\\\w-])--?[A-Za-z]", line) and not line.startswith(".TH")
    ]
    assert not bare, "unescaped hyphens (write \\- in roff):\n" + "\n".join(bare)


@pytest.mark.parametrize(
    "variable", sorted({name for name, _ in ENVIRONMENT} | set(readme_variables()) | {"TMPDIR"})
)
def test_every_environment_variable_is_documented(variable: str) -> None:
    environment = source().split(".SH ENVIRONMENT", 1)[1].split("\n.SH ", 1)[0]
    assert re.search(rf"^\.BR? {variable}\b", environment, re.MULTILINE), f"{variable} missing"


def test_readme_table_is_found() -> None:
    # Guards the test above: a README reshuffle must not silently make it check nothing.
    assert {"TS_SOCKET", "TS_KILL_GRACE", "TMPDIR"} <= set(readme_variables())


def test_sections() -> None:
    page = source()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "FILES"):
        assert f"\n.SH {section}\n" in page
    for section in ("EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert f'\n.SH "{section}"\n' in page or f"\n.SH {section}\n" in page
    see_also = page.split("SEE ALSO", 1)[1]
    for ref in (r".BR tsp (1)", r".BR nvidia\-smi (1)", r".BR systemctl (1)"):
        assert ref in see_also


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_renders_without_warnings() -> None:
    done = render("-Tutf8", "-ww", "-z")
    assert done.returncode == 0
    assert done.stderr == ""


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_rendered_text_shows_every_option() -> None:
    # -Tascii renders \- as "-"; a long line length keeps option names on one line.
    done = render("-Tascii", "-rLL=200n", "-P-cbou")
    assert done.returncode == 0, done.stderr
    words = set(re.findall(r"-{1,2}[A-Za-z_][A-Za-z_-]*", done.stdout))
    for option in OPTIONS:
        for name in names_of(option):
            assert name in words, f"{name} is not in the rendered page"


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_man_shows_it() -> None:
    env = {**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80"}
    done = subprocess.run(
        ["man", "-l", str(MAN)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "TS(1)" in done.stdout and "EXIT STATUS" in done.stdout
    assert all(len(line) <= 80 for line in done.stdout.splitlines()), "a line is wider than 80"
