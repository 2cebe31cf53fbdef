"""A full disk, for real: a small tmpfs under the log directory or under the save-list.

The daemon must survive, say what happened, keep the queue going and never lose (or invent) a
job that ``ts`` acknowledged.  Mounting needs root (or a user namespace that allows it); where
that is impossible the tests are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Spool, text_of, wait_for

from spooler.daemon.store import Store


def _mount_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# Requested before ``spool`` so that the daemon is stopped before the disk goes away.
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _mount_tmpfs(tmp_path / "small", "1m")


@pytest.fixture
def roomier_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _mount_tmpfs(tmp_path / "roomier", "9m")


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system with one file, then give back ``leave`` bytes."""
    filler = disk / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def gate_job(spool: Spool) -> int:
    """A job that runs until the test creates ``gate``; returns once its pid is recorded."""
    gate = spool.root / "gate"
    job = spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.05; done")
    spool.ts("-p", str(job))
    return job


def test_job_output_on_a_full_disk(small_disk: Path, spool: Spool) -> None:
    spool.ts("--set_logdir", str(small_disk))
    daemon = spool.daemon_pid()
    big = spool.submit("sh", "-c", "head -c 4000000 /dev/zero; exit 0")
    record = spool.wait_state(big, "finished")
    assert "disk holding its output is full" in record["reason"]
    after = spool.submit("sh", "-c", "echo hello; exit 4")
    assert spool.run("-w", str(after)).returncode == 4  # the queue goes on; the job ran
    assert spool.daemon_pid() == daemon
    Path(record["output"]).unlink()  # room again
    ok = spool.submit("echo", "ok")
    assert spool.run("-w", str(ok)).returncode == 0
    assert Path(spool.job(ok)["output"]).read_text() == "ok\n"


def test_a_full_disk_under_the_save_list_refuses_new_jobs_and_loses_none(
    small_disk: Path, spool: Spool
) -> None:
    spool.savelist = small_disk / "savelist"
    spool.env["TS_SAVELIST"] = str(spool.savelist)
    kept = [gate_job(spool), *(spool.submit("true") for _ in range(3))]
    daemon = spool.daemon_pid()
    filler = fill(small_disk)
    for _ in range(100):  # the journal's last page may still hold a few records
        refused = spool.run("true")
        if refused.returncode != 0:
            break
        kept.append(int(refused.stdout))
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.startswith("ts: ") and refused.stderr.count("\n") == 1
    assert "No space left on device" in refused.stderr
    batch = spool.run("--batch", "-", input="true\n" * 20)
    assert batch.returncode != 0 and batch.stdout == ""
    assert spool.daemon_pid() == daemon
    assert [j["id"] for j in spool.jobs()] == kept

    # Jobs start and end while nothing can be recorded ...
    (spool.root / "gate").touch()
    for job in kept:
        spool.wait_state(job, "finished")
    # ... and once there is room, the next request writes them down (a snapshot).
    filler.unlink()
    later = spool.submit("true")
    assert later == kept[-1] + 1  # refused submissions took no id
    spool.run("-w", str(later))
    spool.kill_daemon()
    listed = spool.jobs()
    assert [j["id"] for j in listed] == [*kept, later]
    assert [(j["state"], j["exit_code"]) for j in listed] == [("finished", 0)] * (len(kept) + 1)


def test_a_batch_cut_short_by_a_full_disk_says_which_jobs_were_queued(small_disk: Path, spool: Spool) -> None:
    spool.savelist = small_disk / "savelist"
    spool.env["TS_SAVELIST"] = str(spool.savelist)
    first = gate_job(spool)
    fill(small_disk, leave=32 * 1024)
    batch = spool.run("--batch", "-", input="".join(f"echo {i}\n" for i in range(500)))
    printed = [int(i) for i in batch.stdout.split()]
    assert batch.returncode == 1
    assert 0 < len(printed) < 500
    assert printed == list(range(first + 1, first + 1 + len(printed)))
    assert batch.stderr == (
        f"ts: only {len(printed)} of 500 jobs queued: could not record the job: No space left on device\n"
    )
    spool.kill_daemon()
    listed = spool.jobs()
    assert [j["id"] for j in listed] == [first, *printed]  # exactly those, after a restart
    (spool.root / "gate").touch()


def test_a_compaction_that_cannot_be_written_loses_nothing(roomier_disk: Path, spool: Spool) -> None:
    disk = roomier_disk
    spool.savelist = disk / "savelist"
    spool.env["TS_SAVELIST"] = str(spool.savelist)
    first = gate_job(spool)
    fill(disk, leave=8 * 1024 * 1024)  # room for the journal, not for a snapshot beside it
    lines = "".join(f"echo {i}\n" for i in range(12_000))  # about 5 MB of journal: compaction due
    ids = [int(i) for i in spool.ts("--batch", "-", input=lines).split()]
    log = Path(f"{spool.savelist}.log")
    wait_for(lambda: "compaction" in text_of(log) and "failed" in text_of(log), what="the failed compaction")
    assert spool.daemon_pid() is not None
    assert spool.submit("true") == ids[-1] + 1
    spool.kill_daemon()
    assert [j["id"] for j in spool.jobs()] == [first, *ids, ids[-1] + 1]
    (spool.root / "gate").touch()


@pytest.fixture
def few_inodes(tmp_path: Path) -> Iterator[Path]:
    yield from _mount_tmpfs(tmp_path / "inodes", "1m,nr_inodes=8")


def test_a_journal_rotation_that_cannot_create_the_new_journal_changes_nothing(few_inodes: Path) -> None:
    store = Store(str(few_inodes / "savelist"), fsync=False)
    store.open()
    store.put_job({"id": 0, "state": "queued"})
    for i in range(100):  # use up the inodes, so that no new journal can be created
        try:
            (few_inodes / f"x{i}").touch()
        except OSError:
            break
    with pytest.raises(OSError):
        store.rotate()
    assert not Path(store.prev_journal_path).exists()
    store.put_job({"id": 1, "state": "queued"})  # appends still go to the journal on disk
    store.close()
    assert sorted(Store(str(few_inodes / "savelist")).load().jobs) == [0, 1]
