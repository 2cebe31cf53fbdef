"""Exit logs: appended by launchers and shims, read by the next daemon."""

from __future__ import annotations

import os
from pathlib import Path

from spooler.daemon.launcher import exits


def test_records_are_read_back_by_job(tmp_path: Path) -> None:
    log = exits.ExitLog(exits.log_path(str(tmp_path), 111))
    log.record(1, 500, 3 << 8, "", 10.0)
    log.record(2, 501, 9, "", 11.0)
    log.record(1, 502, 0, "", 12.0)  # a later attempt of job 1
    found = exits.read(str(tmp_path))
    assert [e.pid for e in found[1]] == [500, 502]
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
    assert list(found) == [7]


def test_logs_of_exited_launchers_are_removed(tmp_path: Path) -> None:
    dead = exits.log_path(str(tmp_path), 2**22 + 12345)  # no such process
    exits.ExitLog(dead).record(1, 1, 0, "", 1.0)
    (tmp_path / "unrelated").write_text("x")
    exits.remove_logs_of_dead_launchers(str(tmp_path), alive=set())
    assert sorted(os.listdir(tmp_path)) == ["unrelated"]
