"""Log files made ahead of the jobs that write them: the daemon's spares, the launcher's checks
before it uses one, and a real daemon that leaves none behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import Spool, wait_for

from spooler.daemon.launcher.spawn import open_outputs, spawn_job
from spooler.daemon.launcher.spec import Launch
from spooler.daemon.spare_logs import SpareLogs


def spec_for(path: Path) -> Launch:
    spec = Launch(1, ["true"], False, "/", {}, str(path.parent / "result"), stdout_path=str(path))
    spec.precreated = True
    return spec


def test_refill_creates_empty_private_files_and_take_hands_each_out_once(tmp_path: Path) -> None:
    spares = SpareLogs()
    spares.refill(str(tmp_path), 3)
    made = sorted(tmp_path.iterdir())
    assert len(made) == 3 and all(p.name.startswith("ts-out.") and len(p.name) == 15 for p in made)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 and p.stat().st_size == 0 for p in made)
    taken = {spares.take(str(tmp_path)) for _ in range(3)}
    assert taken == {str(p) for p in made}
    assert spares.take(str(tmp_path)) is None  # none left: the caller makes a name of its own
    spares.refill(str(tmp_path), 2)
    spares.drop()  # the unused ones go; the three handed out are the jobs' now
    assert sorted(tmp_path.iterdir()) == made and not spares


def test_a_refill_due_after_the_daemon_closed_its_spares_makes_none(tmp_path: Path) -> None:
    spares = SpareLogs()
    spares.refill(str(tmp_path), 1)
    spares.close()
    spares.refill(str(tmp_path), 1)  # queued on the loop before the daemon stopped
    assert list(tmp_path.iterdir()) == [] and not spares


def test_refill_in_a_directory_that_cannot_hold_files_makes_none(tmp_path: Path) -> None:
    spares = SpareLogs()
    spares.refill(str(tmp_path / "missing"), 2)
    assert spares.take(str(tmp_path / "missing")) is None


def test_a_spare_is_opened_not_created(tmp_path: Path) -> None:
    path = tmp_path / "ts-out.spare"
    path.touch(mode=0o600)
    before = path.stat().st_ino
    out, err = open_outputs(spec_for(path), [])
    try:
        assert out == err and os.fstat(out).st_ino == before
        os.write(out, b"written\n")
    finally:
        os.close(out)
    assert path.read_text() == "written\n"


def test_a_spare_removed_meanwhile_is_created_as_usual(tmp_path: Path) -> None:
    path = tmp_path / "ts-out.gone"
    out, _ = open_outputs(spec_for(path), [])
    os.close(out)
    assert path.exists()


@pytest.mark.parametrize("change", ["symlink", "written", "linked", "fifo"])
def test_a_spare_that_is_no_longer_ours_is_refused(tmp_path: Path, change: str) -> None:
    """At once: a FIFO put in its place must not hold the launcher until someone reads it."""
    path = tmp_path / "ts-out.spare"
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    if change == "symlink":
        path.symlink_to(victim)
    elif change == "fifo":
        os.mkfifo(path, 0o600)
    elif change == "written":
        path.write_text("someone's data\n")
    else:
        os.link(victim, path)  # a second name for another file
    with pytest.raises(OSError):
        open_outputs(spec_for(path), [])
    assert victim.read_text() == "keep me\n"


def _blocker(spool: Spool, flag: str) -> int:
    return spool.submit("sh", "-c", f"until [ -e {flag} ]; do sleep 0.02; done; echo {flag}")


def test_the_next_job_writes_to_the_spare_made_while_the_previous_one_ran(spool: Spool) -> None:
    first = _blocker(spool, "go1")
    spool.wait_state(first, "running")
    second = _blocker(spool, "go2")
    third = spool.submit("echo", "third")
    (spool.root / "go1").touch()
    spool.wait_state(second, "running")
    # While the second runs, the third's log is ready: one empty file that is no job's log yet.
    logs = {spool.job(j).get("output") for j in (first, second, third)}
    spare = wait_for(lambda: [p for p in spool.logdir.iterdir() if str(p) not in logs], what="a spare log")
    assert len(spare) == 1 and spare[0].stat().st_size == 0
    (spool.root / "go2").touch()
    spool.wait_state(third, "finished")
    assert spool.job(third)["output"] == str(spare[0])
    assert spool.ts("-c", str(third)) == "third\n"
    assert spool.ts("-c", str(second)) == "go2\n"
    # Nothing waits: no spare is kept.
    logs = {spool.job(j)["output"] for j in (first, second, third)}
    assert {str(p) for p in spool.logdir.iterdir()} == logs


def test_a_stopped_daemon_leaves_no_spare(spool: Spool) -> None:
    first = _blocker(spool, "go1")
    spool.wait_state(first, "running")
    second = _blocker(spool, "go2")
    spool.submit("true")
    (spool.root / "go1").touch()
    spool.wait_state(second, "running")
    wait_for(lambda: len(list(spool.logdir.iterdir())) == 3, what="a spare log")
    spool.ts("-K")
    wait_for(lambda: spool.daemon_pid() is None, what="the daemon to stop")
    logs = {spool.job(j)["output"] for j in (first, second)}  # a new daemon answers -M
    assert {str(p) for p in spool.logdir.iterdir()} == logs


def test_a_command_found_through_a_relative_path_entry_is_looked_up_in_each_job_directory(
    tmp_path: Path,
) -> None:
    """The launcher keeps where a command was found for a moment, but not when PATH holds ``.``:
    a job whose directory has its own ``./tool`` runs it, after one that ran the PATH's."""

    def tool(directory: Path, says: str) -> None:
        directory.mkdir()
        (directory / "tool").write_text(f"#!/bin/sh\necho {says}\n")
        (directory / "tool").chmod(0o755)

    tool(tmp_path / "bin", "global")
    tool(tmp_path / "own", "own")
    (tmp_path / "plain").mkdir()
    outputs = []
    for name in ("plain", "own"):
        log = tmp_path / f"{name}.log"
        env = {"PATH": f".:{tmp_path / 'bin'}"}
        spec = Launch(1, ["tool"], False, str(tmp_path / name), env, str(tmp_path / "r"))
        spec.stdout_path = str(log)
        out, err = open_outputs(spec, [])
        try:
            pid, why, _ = spawn_job(spec, out, err)
        finally:
            os.close(out)
        assert pid, why
        os.waitpid(pid, 0)
        outputs.append(log.read_text())
    os.chdir(tmp_path.parent)
    assert outputs == ["global\n", "own\n"]
