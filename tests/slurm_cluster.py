"""Fixtures for the slurm backend's tests: the real single-node cluster of ``tests/slurm/cluster.sh``
and a spooler whose daemon sends its jobs there.

The cluster is found through ``SLURM_CONF`` when it is set, else at the script's own place
(``/tmp/spooler-slurm/etc/slurm.conf``).  Where none answers, it is started for the session if
this is root and SLURM is installed (and stopped again at the end); otherwise every test that
needs it is skipped with the reason, which ``pytest -ra`` prints.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Spool, text_of

SCRIPT = Path(__file__).parent / "slurm" / "cluster.sh"
BASE = Path(os.environ.get("SPOOLER_SLURM_BASE", "/tmp/spooler-slurm"))
POLL = 0.2  # seconds between squeue calls in tests (5 by default)


class Cluster:
    def __init__(self, conf: str) -> None:
        self.conf = conf
        self.env = {**os.environ, "SLURM_CONF": conf}

    def tool(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def answers(self) -> bool:
        try:
            return self.tool("scontrol", "ping", timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def script(self, action: str) -> None:
        done = subprocess.run(
            [str(SCRIPT), action], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"cluster.sh {action}: {done.stderr}"

    def cancel_under(self, root: Path) -> None:
        """scancel every job whose working directory is under ``root`` (a test's own)."""
        listed = self.tool("squeue", "--me", "-h", "-o", "%F|%Z")  # an array once, by its own id
        ids = [
            line.split("|")[0]
            for line in listed.stdout.splitlines()
            if line.partition("|")[2].startswith(str(root))
        ]
        if ids:
            self.tool("scancel", *ids)


def _why_not() -> str:
    if shutil.which("sbatch") is None or shutil.which("slurmctld", path="/usr/sbin:/sbin") is None:
        return "SLURM is not installed here: run tests/slurm/cluster.sh install (as root)"
    if os.geteuid() != 0:
        return "a SLURM cluster needs root to start (tests/slurm/cluster.sh up), and none is running"
    return ""


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    conf = os.environ.get("SLURM_CONF") or str(BASE / "etc" / "slurm.conf")
    cluster = Cluster(conf)
    started = False
    if not (Path(conf).exists() and cluster.answers()):
        why = _why_not()
        if why:
            pytest.skip(why)
        cluster = Cluster(str(BASE / "etc" / "slurm.conf"))
        cluster.script("up")
        started = True
    yield cluster
    if started:
        cluster.script("down")


def slurm_config(root: Path, **slurm: object) -> Path:
    lines = ['backend = "slurm"', "[slurm]", f"poll_interval = {POLL}"]
    for key, value in slurm.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    path = root / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def slurm_spool(tmp_path: Path, slurm_cluster: Cluster) -> Iterator[Spool]:
    """A spooler whose daemon sends its jobs to the test cluster."""
    spool = Spool(tmp_path)
    spool.env.update(SLURM_CONF=slurm_cluster.conf, TS_CONFIG=str(slurm_config(tmp_path)))
    spool.cluster = slurm_cluster  # type: ignore[attr-defined]
    yield spool
    spool.stop()
    slurm_cluster.cancel_under(tmp_path)
    print("--- daemon log (tail) ---", *text_of(Path(f"{spool.savelist}.log")).splitlines()[-40:], sep="\n")
