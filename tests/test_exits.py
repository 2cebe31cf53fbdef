"""Launcher logs: appended by launchers and shims, read by the next daemon."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from spooler.daemon.launcher import exits


def test_records_are_read_back_by_job(tmp_path: Path) -> None:
    log = exits.ExitLog(exits.log_path(str(tmp_path), 111))
    log.record(1, 500, 3 << 8, "", 10.0)
    log.record(2, 501, 9, "", 11.0)
    log.record(1, 502, 0, "", 12.0)  # a later attempt of job 1
    found = exits.read(str(tmp_path))
    assert [e.pid for e in found.exits[1]] == [500, 502]
    assert exits.find(found, 1, 500, None) == exits.Exit(1, 500, 3 << 8, "", 10.0)
    assert exits.find(found, 1, 502, None).wait_status == 0  # type: ignore[union-attr]
    assert exits.find(found, 1, None, 11.5).pid == 502  # type: ignore[union-attr]
    assert exits.find(found, 1, 999, None) is None
    assert exits.find(found, 3, None, None) is None


def test_a_torn_last_record_is_ignored_and_the_rest_kept(tmp_path: Path) -> None:
    path = exits.log_path(str(tmp_path), 222)
    log = exits.ExitLog(path)
    log.record(7, 700, 0, "", 1.0)
    log.record(8, 800, 0, "", 2.0)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:-3])
    found = exits.read(str(tmp_path))
    assert list(found.exits) == [7]


def test_logs_of_exited_launchers_are_removed(tmp_path: Path) -> None:
    dead = exits.log_path(str(tmp_path), 2**22 + 12345)  # no such process
    exits.ExitLog(dead).record(1, 1, 0, "", 1.0)
    (tmp_path / "unrelated").write_text("x")
    exits.remove_logs_of_dead_launchers(str(tmp_path), alive=set())
    assert sorted(os.listdir(tmp_path)) == ["unrelated"]


def test_start_records_name_the_run_and_its_launcher(tmp_path: Path) -> None:
    log = exits.ExitLog(exits.log_path(str(tmp_path), 333))
    log.started(4, 900, 900)  # an earlier attempt
    began = time.time()
    log.started(4, 910, 0)  # a -z job's shim, as the launcher forked it ...
    log.started(4, 910, 911)  # ... and as the shim started the job
    found = exits.read(str(tmp_path))
    start = exits.find_start(found, 4, None, began)
    assert start is not None and (start.pid, start.job_pid, start.launcher) == (910, 911, 333)
    assert exits.find_start(found, 4, 900, None).job_pid == 900  # type: ignore[union-attr]
    assert exits.find_start(found, 4, None, time.time() + 60) is None  # none after that start
    assert exits.find_start(found, 5, None, None) is None
    assert exits.find(found, 4, None, None) is None  # a start is no end


def test_settled_logs_wait_for_a_live_launcher_to_drain(tmp_path: Path) -> None:
    """A log whose launcher lives and has not drained is waited for; a dead one's is final."""
    exits.ExitLog(exits.log_path(str(tmp_path), 2**22 + 4321)).started(1, 5, 5)  # dead
    code = (
        "import os, sys; from spooler.daemon.launcher import exits;"
        "sys.stdin.readline();"
        "log = exits.ExitLog(exits.log_path(sys.argv[2], os.getpid()));"
        "log.started(2, 6, 6); log.drained(); sys.stdin.readline()"
    )
    # A launcher by its command line, from the moment it is spawned, whatever its name.
    argv = [sys.executable, "-c", code, "spooler.daemon.launcher", str(tmp_path)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None
        exits.create_log(str(tmp_path), proc.pid)  # as the daemon does, once it has spawned it
        assert exits.launcher_alive(proc.pid) and not exits.launcher_alive(os.getpid())
        unsettled = exits.read_settled(str(tmp_path), timeout=0.05)  # gave up waiting
        assert unsettled.starts.keys() == {1} and not unsettled.settled
        proc.stdin.write("\n")  # it starts what it was sent, and drains
        proc.stdin.flush()
        settled = exits.read_settled(str(tmp_path), timeout=30)
        assert settled.starts.keys() == {1, 2} and proc.pid in settled.drained and settled.settled
    finally:
        proc.kill()
        proc.wait()
