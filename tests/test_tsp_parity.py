"""The same session typed into ``ts`` and into Debian's original (``tsp``): the same answers.

Only behaviour both document the same way is compared: ids, slots, states, queue order after
``-u`` and ``-U``, ``-w``/``-c`` exit statuses and output, ``-r``, ``-C``, ``-k``.  Where ours
deliberately differs (E-Level names the signal, times are human, commands are shown quoted, the
GPU version's ``-d``) the transcript leaves it out.  Skipped where ``tsp`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TS, Spool, kill_processes_with, wait_for


def _original_tsp() -> str | None:
    path = shutil.which("tsp")
    if path is None:
        return None
    version = subprocess.run([path, "-V"], capture_output=True, text=True, env={"PATH": os.defpath})
    return path if "Task Spooler" in version.stdout + version.stderr else None


TSP = _original_tsp()
pytestmark = pytest.mark.skipif(TSP is None, reason="Debian's task-spooler (tsp) is not installed")

Run = Callable[..., subprocess.CompletedProcess[str]]


def _runner(argv: list[str], env: dict[str, str], cwd: Path) -> Run:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*argv, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)

    return run


def _states(listing: str) -> list[tuple[int, str]]:
    """(id, state) of each line of ``-l``, in the order listed."""
    return [(int(line.split()[0]), line.split()[1]) for line in listing.splitlines()[1:] if line.strip()]


def _session(run: Run, gate: Path) -> list[object]:
    """Type the session; return what a user would compare (output and exit status)."""
    said: list[object] = []

    def say(*args: str) -> subprocess.CompletedProcess[str]:
        done = run(*args)
        said.append((args, done.stdout.strip(), done.returncode))
        return done

    def state_is(job: str, state: str) -> bool:
        return run("-s", job).stdout.strip() == state

    say("-S", "1")
    say("-S")
    say("sh", "-c", "until [ -e gate ]; do sleep 0.02; done")  # jobs run in the caller's directory
    say("sh", "-c", "exit 3")
    say("echo", "hi")
    say("-L", "lab", "true")
    say("sh", "-c", "sleep 30")
    wait_for(lambda: state_is("0", "running"), what="the gate job to run")
    say("-s", "1")
    say("-u", "3")
    say("-U", "1-2")
    said.append(_states(run("-l").stdout))
    say("-r", "4")
    said.append(_states(run("-l").stdout))
    gate.touch()
    say("-w", "1")
    say("-w", "2")
    say("-c", "2")
    say("-c", "1")
    say("-s", "3")
    said.append(_states(run("-l").stdout))  # ended jobs in the order they ended
    say("sh", "-c", "sleep 30")
    wait_for(lambda: state_is("5", "running"), what="job 5 to run")
    # The original's -k fails (255) while its server has not yet heard the job's pid.
    wait_for(lambda: run("-p", "5").returncode == 0, what="job 5's pid")
    say("-k", "5")
    say("-w", "5")
    say("-C")
    said.append(_states(run("-l").stdout))
    return said


def _both(
    spool: Spool, tmp_path: Path, session: Callable[[Run, Path], list[object]]
) -> tuple[object, object]:
    """(ours, theirs): the session typed into our ts and into the original, each in its own
    directory on its own socket."""
    assert TSP is not None
    theirs_dir = tmp_path / "tsp"
    theirs_dir.mkdir()
    theirs_env = {**spool.env, "TS_SOCKET": str(theirs_dir / "sock"), "TMPDIR": str(theirs_dir)}
    theirs_env.pop("TS_SAVELIST", None)
    try:
        theirs = session(_runner([TSP], theirs_env, theirs_dir), theirs_dir / "gate")
    finally:
        _stop_tsp(theirs_env)
    ours = session(_runner(list(TS), spool.env, spool.root), spool.root / "gate")
    return ours, theirs


def test_the_same_session_gives_the_same_answers_as_the_original(spool: Spool, tmp_path: Path) -> None:
    ours, theirs = _both(spool, tmp_path, _session)
    assert ours == theirs


def _default_job_session(run: Run, gate: Path) -> list[object]:
    """The two sequences of the original's own tests in which an id-less action takes the job at
    the tail of the queue: after ``-u`` moved the last job to the front, and after ``-r``
    removed it.  (A gate job instead of ``sleep 1``, so no step races the clock.)"""
    said: list[object] = []
    hold = "until [ -e gate ]; do sleep 0.02; done"

    def say(*args: str) -> None:
        done = run(*args)
        said.append((args, done.stdout.strip(), done.returncode))

    say("sh", "-c", hold)
    say("ls")
    say("patata")
    say("-u")
    said.append(_states(run("-l").stdout))
    gate.touch()
    say("-w")
    run("-C")  # every job has ended: start from an empty list (ids go on)
    gate.unlink()
    ids = [run("sh", "-c", hold).stdout.strip()]
    # -n: the original prints no id (its output goes nowhere); compare what follows only
    said.append(run("-n", "ls").returncode)
    said.append(run("-n", "ls", "2").returncode)
    say("-r")
    said.append([state for _, state in _states(run("-l").stdout)])
    gate.touch()
    say("-w")
    said.append(bool(ids[0]))
    return said


def test_id_less_actions_take_the_job_at_the_tail_of_the_queue(spool: Spool, tmp_path: Path) -> None:
    ours, theirs = _both(spool, tmp_path, _default_job_session)
    assert ours == theirs
    assert isinstance(ours, list) and ours[-2] == (
        ("-w",),
        "",
        0,
    )  # it waited for `ls`, not for the removed `ls 2`


def _stop_tsp(env: dict[str, str]) -> None:
    assert TSP is not None
    subprocess.run([TSP, "-K"], env=env, capture_output=True, timeout=30)
    kill_processes_with(f"TS_SOCKET={env['TS_SOCKET']}")
