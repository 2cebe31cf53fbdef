"""The save-list: nothing whose id was printed is ever lost; running jobs outlive the daemon."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import TS, Spool, alive, text_of, wait_for

FIXTURES = Path(__file__).parent / "fixtures"

CLIENT = textwrap.dedent(
    """
    import sys
    from spooler.client import Client
    from spooler.errors import SpoolerError
    import os
    name, count = sys.argv[1], int(sys.argv[2])
    for i in range(count):
        try:
            with Client() as c:
                reply = c.request("submit", command=["true"], cwd="/", env={"K": "v"}, label=f"{name}-{i}")
            print(reply["id"], f"{name}-{i}", flush=True)
        except (SpoolerError, OSError) as exc:
            print("failed", f"{name}-{i}", type(exc).__name__, flush=True)
    """
)


def test_kill_9_during_concurrent_enqueues_loses_no_printed_job(spool: Spool) -> None:
    gate = spool.root / "gate"
    spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.05; done")  # holds the slot
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, f"c{n}", "125"], env=spool.env, stdout=subprocess.PIPE, text=True
        )
        for n in range(8)
    ]
    wait_for(lambda: len(spool.jobs()) > 200, what="some jobs to be queued")
    spool.kill_daemon()
    printed: dict[int, str] = {}
    failed = 0
    for proc in clients:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        for line in out.splitlines():
            first, label = line.split()[:2]
            if first == "failed":
                failed += 1
            else:
                printed[int(first)] = label
    jobs = spool.jobs()
    by_id = {j["id"]: j for j in jobs}
    for job_id, label in printed.items():
        assert job_id in by_id, f"job {job_id} ({label}) was printed but is gone"
        assert by_id[job_id]["label"] == label
    labels = [j["label"] for j in jobs if j["label"]]
    assert len(labels) == len(set(labels)), "a job was recorded twice"
    assert len(printed) + failed == 1000
    assert len(printed) >= 900
    gate.touch()


def test_running_jobs_survive_kill_9_and_their_exit_codes_are_recorded(spool: Spool) -> None:
    spool.ts("-S", "4")
    gate = spool.root / "gate"
    wait = f"until [ -e {gate} ]; do sleep 0.02; done"
    ok = spool.submit("sh", "-c", f"{wait}; exit 0")
    three = spool.submit("sh", "-c", f"{wait}; exit 3")
    killed = spool.submit("sh", "-c", f"{wait}; kill -9 $$")
    adopted = spool.submit("sh", "-c", f"{wait}; until [ -e {gate}2 ]; do sleep 0.02; done; exit 4")
    for job in (ok, three, killed, adopted):
        spool.wait_state(job, "running")
    pids = {job: int(spool.ts("-p", str(job))) for job in (ok, three, killed, adopted)}
    spool.kill_daemon()
    for pid in pids.values():
        os.kill(pid, 0)  # still running without the daemon
    gate.touch()
    for job in (ok, three, killed):
        wait_for(lambda job=job: not alive(pids[job]), what=f"job {job} to end")
    # The next ts call starts a daemon that records what ended and adopts what still runs.
    assert spool.job(ok)["exit_code"] == 0
    assert spool.job(three)["exit_code"] == 3
    assert spool.job(killed)["signal"] == "SIGKILL"
    assert spool.job(adopted)["state"] == "running"
    Path(f"{gate}2").touch()
    assert spool.run("-w", str(adopted)).returncode == 4


def test_a_gzipped_job_adopted_after_ts_K_ends_with_its_exit_code(spool: Spool) -> None:
    """A -z job runs under a shim that records its end in its launcher's log: the launcher
    stays (and keeps its log) until the shim has ended, though its daemon is gone."""
    gate = spool.root / "gate"
    job = spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done; exit 5", opts=("-z",))
    spool.wait_state(job, "running")
    spool.ts("-K")
    assert spool.ts("-l")  # a new daemon adopts the job
    gate.touch()
    assert spool.run("-w", str(job)).returncode == 5
    assert spool.job(job)["state"] == "finished"


def test_ts_K_keeps_queued_jobs_and_ids_continue(spool: Spool) -> None:
    gate = spool.root / "gate"
    spool.ts("-S", "1")
    first = spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done")
    queued = [spool.submit("echo", str(i), opts=("-L", f"q{i}")) for i in range(3)]
    spool.ts("-u", str(queued[2]))
    spool.ts("-K")
    jobs = spool.jobs()
    assert [j["id"] for j in jobs] == [first, queued[2], queued[0], queued[1]]
    assert [j["label"] for j in jobs[1:]] == ["q2", "q0", "q1"]
    assert spool.submit("true") == queued[-1] + 1
    gate.touch()
    assert spool.run("-w", str(queued[1])).returncode == 0


def test_settings_survive_a_restart(spool: Spool, tmp_path: Path) -> None:
    logs = tmp_path / "other-logs"
    logs.mkdir()
    spool.ts("-S", "3")
    spool.ts("--set_logdir", str(logs))
    spool.ts("--setenv", "EXPERIMENT=a=b")
    spool.ts("-K")
    assert spool.ts("-S").strip() == "3"
    assert spool.ts("--get_logdir").strip() == str(logs)
    assert spool.ts("--getenv", "EXPERIMENT").strip() == "a=b"


def test_garbage_save_list_is_moved_aside_and_the_daemon_starts(spool: Spool) -> None:
    spool.savelist.parent.mkdir(parents=True)
    spool.savelist.write_bytes(b"\x00garbage\xff" * 100)
    done = spool.run("true")
    assert done.returncode == 0
    assert "moved it to" in done.stderr and str(spool.savelist) in done.stderr
    aside = list(spool.savelist.parent.glob("savelist.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"\x00garbage")
    assert len(spool.jobs()) == 1


def test_truncated_journal_keeps_every_whole_record(spool: Spool) -> None:
    ids = [spool.submit("true", opts=("-L", f"j{i}")) for i in range(5)]
    spool.run("-w", str(ids[-1]))
    spool.kill_daemon()
    journal = Path(f"{spool.savelist}.journal")
    data = journal.read_bytes()
    journal.write_bytes(data[:-7])  # tear the last record
    labels = [j["label"] for j in spool.jobs()]
    assert labels[:4] == ["j0", "j1", "j2", "j3"]


def test_a_save_list_from_version_1_still_loads(spool: Spool) -> None:
    spool.savelist.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "savelist-v1", spool.savelist)
    shutil.copy(FIXTURES / "savelist-v1.journal", f"{spool.savelist}.journal")
    jobs = {j["id"]: j for j in spool.jobs()}
    assert jobs[0]["state"] == "finished" and jobs[0]["exit_code"] == 0
    assert jobs[1]["state"] == "finished" and jobs[1]["exit_code"] == 3
    assert jobs[2]["label"] == "queued-one" and jobs[2]["command"] == "echo 'hello world'"
    assert jobs[3]["depends_on_success"] == [2]
    assert spool.ts("-S").strip() == "2"
    assert spool.submit("true") == 4


def test_reset_drops_the_list_and_stops_the_daemon(spool: Spool) -> None:
    gate = spool.root / "gate"
    spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done")
    done = spool.submit("true", opts=("-d",))
    queued = spool.submit("true")
    spool.ts("--reset")
    wait_for(lambda: spool.daemon_pid() is None, what="the daemon to stop")
    remaining = spool.jobs()
    assert [j["state"] for j in remaining] == ["running"]  # only the running job is kept
    assert spool.submit("true") == queued + 1 and done < queued
    gate.touch()


def launcher_pid(spool: Spool) -> int:
    import psutil

    daemon = spool.daemon_pid()
    assert daemon is not None
    # By its command line: its name is set only once Python has started in it (a job counts as
    # running as soon as its launch is sent, which may be before).
    children = [p for p in psutil.Process(daemon).children() if "spooler.daemon.launcher" in p.cmdline()]
    assert len(children) == 1
    return int(children[0].pid)


def test_a_dead_launcher_is_replaced_and_its_jobs_are_not_forgotten(spool: Spool) -> None:
    spool.ts("-S", "2")
    gate = spool.root / "gate"
    orphan = spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done")
    spool.wait_state(orphan, "running")
    assert spool.ts("-p", str(orphan)).strip().isdigit()  # started (not only sent to the launcher)
    waiter = subprocess.Popen([*TS, "-w", str(orphan)], env=spool.env, stderr=subprocess.PIPE, text=True)
    old = launcher_pid(spool)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), what="the launcher to die")
    # A new launcher runs new jobs ...
    assert spool.run("-f", "sh", "-c", "exit 5").returncode == 5
    assert launcher_pid(spool) != old
    # ... and the orphan, whose exit status nobody can collect now, ends as lost, not running.
    assert spool.job(orphan)["state"] == "running"
    gate.touch()
    record = spool.wait_state(orphan, "lost")
    assert "exit status" in record["reason"]
    _, err = waiter.communicate(timeout=30)  # whoever waited on it is told
    assert waiter.returncode != 0 and "Traceback" not in err


def _queue_behind_a_gate(spool: Spool, count: int) -> list[int]:
    gate = spool.root / "gate"
    spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.05; done")
    lines = "".join(f"echo {i}\n" for i in range(count))
    return [int(i) for i in spool.ts("--batch", "-", input=lines).split()]


def test_compaction_runs_beside_the_daemon(spool: Spool) -> None:
    # 12,000 job records (about 5 MB) outgrow the 4 MiB the journal may reach before compaction.
    ids = _queue_behind_a_gate(spool, 12_000)
    daemon = spool.daemon_pid()
    prev = Path(f"{spool.savelist}.journal.prev")
    log = Path(f"{spool.savelist}.log")
    wait_for(lambda: "compacted in the background" in text_of(log), what="a background compaction")
    wait_for(lambda: not prev.exists(), what="the previous journal to be folded in")
    assert os.path.getsize(f"{spool.savelist}.journal") < os.path.getsize(spool.savelist)
    assert spool.daemon_pid() == daemon
    assert [j["id"] for j in spool.jobs()][1:] == ids
    spool.kill_daemon()
    assert [j["id"] for j in spool.jobs()][1:] == ids  # read back by the next daemon
    (spool.root / "gate").touch()


def test_kill_9_while_compacting_loses_nothing(spool: Spool) -> None:
    ids = _queue_behind_a_gate(spool, 12_000)
    spool.kill_daemon()  # most likely while its compaction child still writes the snapshot
    listed = spool.jobs()  # the next daemon starts once that child has let go of the lock
    assert [j["id"] for j in listed][1:] == ids
    assert spool.submit("true") == ids[-1] + 1
    (spool.root / "gate").touch()


def test_held_paused_begin_times_and_queue_slots_survive_kill_9(spool: Spool) -> None:
    spool.ts("-S", "2")
    spool.ts("--queue", "cpu", "-S", "3")
    paused = spool.submit("sh", "-c", "sleep 60 & wait", opts=("--time", "1h"))
    spool.wait_state(paused, "running")
    pid = int(spool.ts("-p", str(paused)))
    spool.ts("--pause", str(paused))
    held = spool.submit("true", opts=("--hold", "-L", "held"))
    later = spool.submit("true", opts=("--begin", "+1h", "--queue", "cpu"))
    begin = spool.job(later)["begin_at"]
    spool.kill_daemon()
    jobs = {j["id"]: j for j in spool.jobs()}  # read back by the next daemon
    assert jobs[paused]["state"] == "paused"
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] == "T"  # still stopped
    assert jobs[held]["state"] == "held" and jobs[held]["label"] == "held"
    assert jobs[later]["state"] == "queued" and jobs[later]["begin_at"] == begin
    assert jobs[later]["queue"] == "cpu" and jobs[later]["reason"].startswith("begins at ")
    assert spool.ts("--queue", "cpu", "-S").strip() == "3" and spool.ts("-S").strip() == "2"
    assert "not counting while paused" in spool.ts("-i", str(paused))
    spool.ts("--resume", str(paused))
    spool.ts("-k", str(paused))
    assert spool.run("-w", str(paused)).returncode == 255
