"""Where no SLURM cluster can run, its tests are skipped with the reason, never silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import slurm_cluster
from conftest import BIN


def test_without_slurm_the_tests_say_why_they_skip(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(BIN), "SLURM_CONF": str(tmp_path / "none.conf")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/test_slurm_backend.py", "-k", "exit_status"],
        env=env, cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "SLURM is not installed here: run tests/slurm/cluster.sh install (as root)" in done.stdout


def test_not_root_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name, path=None: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    assert "needs root" in slurm_cluster._why_not()
