"""The save-list's compaction: in place, in the background, and every crash point in between."""

from __future__ import annotations

import os
from pathlib import Path

from spooler.daemon.store import Snapshot, Store


def job(job_id: int, state: str) -> dict[str, object]:
    return {"id": job_id, "state": state}


def state_of(path: Path) -> dict[int, str]:
    return {i: str(r["state"]) for i, r in Store(str(path)).load().jobs.items()}


def snapshot(jobs: dict[int, str]) -> Snapshot:
    records = [job(i, s) for i, s in jobs.items()]
    return Snapshot(jobs=iter(records), job_count=len(records), envs={}, settings={}, next_id=len(records))


def test_background_compaction_keeps_every_change_at_every_step(tmp_path: Path) -> None:
    path = tmp_path / "list"
    store = Store(str(path), fsync=False)
    store.open()
    store.put_job(job(0, "queued"))
    store.put_job(job(1, "queued"))
    store.compact(snapshot({0: "queued", 1: "queued"}))
    store.put_job(job(0, "running"))
    store.delete_job(1)
    at_fork = {0: "running"}

    assert store.rotate()
    assert Path(store.prev_journal_path).exists()
    store.put_job(job(2, "queued"))  # changes made while the child writes the snapshot
    store.put_job(job(0, "finished"))
    now = {0: "finished", 2: "queued"}
    assert state_of(path) == now  # a crash before the child wrote anything

    store.write_snapshot(snapshot(at_fork))  # what the child does
    assert state_of(path) == now  # a crash before the previous journal was removed

    store.rotated(True)
    assert not Path(store.prev_journal_path).exists()
    assert state_of(path) == now
    store.close()


def test_a_failed_background_compaction_is_redone_in_place(tmp_path: Path) -> None:
    path = tmp_path / "list"
    store = Store(str(path), fsync=False)
    store.open()
    store.put_job(job(0, "queued"))
    assert store.rotate()
    store.put_job(job(1, "queued"))
    store.rotated(False)  # the child died: its journal stays until a compaction succeeds
    assert Path(store.prev_journal_path).exists()
    assert not store.rotate()  # no second rotation over an unfolded journal
    assert state_of(path) == {0: "queued", 1: "queued"}
    store.compact(snapshot({0: "queued", 1: "queued"}))
    assert not Path(store.prev_journal_path).exists()
    assert os.path.getsize(store.journal_path) == 0
    assert state_of(path) == {0: "queued", 1: "queued"}
    store.close()


def test_a_stale_previous_journal_replayed_over_a_newer_snapshot_changes_nothing(tmp_path: Path) -> None:
    # A crash after the snapshot landed but before the previous journal was deleted: the
    # journal's records are all older than the snapshot, and the last of each is what it holds.
    path = tmp_path / "list"
    store = Store(str(path), fsync=False)
    store.open()
    for state in ("queued", "running", "finished"):
        store.put_job(job(7, state))
    store.put_job(job(8, "queued"))
    store.delete_job(8)
    assert store.rotate()
    kept = Path(store.prev_journal_path).read_bytes()
    store.write_snapshot(snapshot({7: "finished"}))
    store.rotated(True)
    store.close()
    Path(store.prev_journal_path).write_bytes(kept)
    assert state_of(path) == {7: "finished"}
