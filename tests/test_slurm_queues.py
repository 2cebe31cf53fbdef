"""A queue bound to SLURM beside local ones, in one daemon: the real ``ts``, the real daemon and
the real single-node cluster (``tests/slurm/cluster.sh``; skipped, saying why, where none runs).

The daemon's own backend is local, with two fake GPUs (``TS_FAKE_GPUS``); ``[queues.cluster]``
sends that queue's jobs to SLURM.  Jobs wait on gate files the test creates, so "both at once"
is a state reached, never a matter of timing.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, Spool, text_of, wait_for
from slurm_cluster import POLL, Cluster

pytestmark = pytest.mark.slurm


def write_config(root: Path, *, daemon: str = "local", cluster_slots: int = 2, extra: str = "") -> Path:
    path = root / "config.toml"
    path.write_text(
        f'backend = "{daemon}"\n[slurm]\npoll_interval = {POLL}\n'
        f'[queues.cluster]\nbackend = "slurm"\nslots = {cluster_slots}\n{extra}'
    )
    return path


@pytest.fixture
def mixed(tmp_path: Path, slurm_cluster: Cluster) -> Iterator[Spool]:
    """One daemon: the default queue local (two fake GPUs), the queue ``cluster`` in SLURM."""
    spool = Spool(tmp_path)
    gpus = tmp_path / "gpus.json"
    gpus.write_text(json.dumps([{"total_mib": 24000, "used_mib": 0, "uuid": f"GPU-{i}"} for i in range(2)]))
    spool.env.update(
        SLURM_CONF=slurm_cluster.conf,
        TS_CONFIG=str(write_config(tmp_path)),
        TS_FAKE_GPUS=str(gpus),
        TS_GPU_POLL="0.1",
    )
    yield spool
    spool.stop()
    slurm_cluster.cancel_under(tmp_path)
    print("--- daemon log (tail) ---", *text_of(Path(f"{spool.savelist}.log")).splitlines()[-40:], sep="\n")


def gated(spool: Spool, gate: str, then: str = "true") -> str:
    """A command that waits for the file ``gate`` under the test's directory, then runs ``then``."""
    return f"until [ -e {spool.root / gate} ]; do sleep 0.05; done; {then}"


def test_a_cluster_queue_runs_in_slurm_while_the_default_queue_runs_here(mixed: Spool) -> None:
    local = mixed.submit(
        "sh", "-c", gated(mixed, "go", 'echo "local on GPU $CUDA_VISIBLE_DEVICES"'), opts=("-G", "1")
    )
    remote = mixed.submit(
        "sh",
        "-c",
        gated(mixed, "go", 'echo "in SLURM as $SLURM_JOB_ID"; exit 3'),
        opts=("--queue", "cluster"),
    )
    ok = mixed.submit("sh", "-c", "echo done", opts=("--queue", "cluster", "-G", "1"))
    # Both at once: the local job holds a fake GPU, the cluster job runs in SLURM.
    assert mixed.wait_state(local, "running")["slurm_id"] is None
    in_slurm = mixed.wait_state(remote, "running", timeout=60)
    assert in_slurm["slurm_id"] and mixed.job(local)["state"] == "running"
    assert mixed.run("-w", str(ok), timeout=60).returncode == 0
    assert mixed.job(ok)["slurm_id"]
    listed = mixed.ts("-l")
    assert re.search(rf"^{remote}\s+running\s+cluster\b.*\s{in_slurm['slurm_id']}\s", listed, re.M), listed
    assert re.search(rf"^{local}\s+running\s+default\b", listed, re.M), listed
    info = mixed.ts("-i", str(remote))
    assert f"SLURM job: {in_slurm['slurm_id']}\n" in info and "Runs in: SLURM\n" in info
    assert "Queue: cluster\n" in info and "Partition: debug" in info
    local_info = mixed.ts("-i", str(local))
    assert "Runs in: this machine (local)\n" in local_info and "SLURM job" not in local_info
    assert "GPUs assigned: 0" in local_info or "GPUs assigned: 1" in local_info
    queues = mixed.ts("--queues").splitlines()
    assert queues[0].split() == ["Queue", "Slots", "Running", "Queued", "Pending", "Backend"]
    assert [row.split()[-1] for row in queues[1:]] == ["local", "slurm"]
    (mixed.root / "go").write_text("")
    assert mixed.run("-w", str(remote), timeout=60).returncode == 3
    assert mixed.run("-w", str(local)).returncode == 0
    cat = mixed.run("-c", str(remote))  # -c and -t exit with the job's status
    assert (cat.returncode, cat.stdout) == (3, f"in SLURM as {in_slurm['slurm_id']}\n")
    tail = mixed.run("-t", str(remote))
    assert (tail.returncode, tail.stdout) == (3, f"in SLURM as {in_slurm['slurm_id']}\n")
    assert re.fullmatch(r"local on GPU [01]\n", mixed.ts("-c", str(local)))
    assert mixed.job(remote)["exit_code"] == 3 and mixed.job(local)["slurm_id"] is None


def test_what_each_backend_refuses_is_refused_by_queue(mixed: Spool) -> None:
    refused = mixed.run("--queue", "cluster", "-g", "0", "true")
    assert refused.returncode != 0 and refused.stderr == (
        "ts: -g is not available with the slurm backend (queue cluster runs its jobs in SLURM)\n"
    )
    refused = mixed.run("--queue", "cluster", "-G", "9", "true")  # sbatch --test-only says no
    assert refused.stderr == "ts: sbatch: allocation failure: Requested node configuration is not available\n"
    refused = mixed.run("-G", "3", "true")  # here: two fake GPUs
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1 and "only 2" in refused.stderr
    job = mixed.submit("true", opts=("-g", "1"))  # -g is fine in a local queue
    assert mixed.run("-w", str(job)).returncode == 0
    assert mixed.job(job)["slurm_id"] is None
    assert [j["id"] for j in mixed.jobs()] == [job]


def test_each_cluster_queue_has_its_own_share_and_S_per_queue(mixed: Spool) -> None:
    write_config(mixed.root, extra='[queues.batch]\nbackend = "slurm"\n')  # one slot: the default
    ids = [mixed.submit("sh", "-c", gated(mixed, "go"), opts=("--queue", "cluster")) for _ in range(3)]
    other = mixed.submit("sh", "-c", gated(mixed, "go"), opts=("--queue", "batch"))
    local = mixed.submit("sh", "-c", gated(mixed, "go"))
    wait_for(lambda: sum(1 for i in ids if mixed.job(i)["slurm_id"]) == 2, timeout=60, what="two in SLURM")
    wait_for(lambda: mixed.job(other)["slurm_id"], timeout=60, what="the batch queue's job in SLURM")
    assert mixed.wait_state(local, "running")["slurm_id"] is None
    assert mixed.job(ids[2])["state"] == "queued" and mixed.job(ids[2])["slurm_id"] is None
    mixed.ts("--queue", "cluster", "-S", "3")
    wait_for(lambda: mixed.job(ids[2])["slurm_id"], timeout=60, what="the third job in SLURM")
    assert mixed.ts("--queue", "cluster", "-S") == "3\n" and mixed.ts("-S") == "1\n"
    (mixed.root / "go").write_text("")
    for job in [*ids, other, local]:
        assert mixed.run("-w", str(job), timeout=60).returncode == 0
    # -S set by ts outlives the daemon: the config's slots are only a queue's first.
    mixed.ts("-K")
    rows = {row.split()[0]: row.split() for row in mixed.ts("--queues").splitlines()[1:]}
    assert rows["cluster"][1] == "3" and rows["batch"][1:2] == ["1"] and rows["cluster"][-1] == "slurm"


def test_kill_9_with_jobs_here_and_in_slurm_every_job_ends_once(mixed: Spool) -> None:
    marks = mixed.root / "marks"
    marks.mkdir()
    mixed.ts("-S", "2")
    ids = []
    for n in range(6):  # four to the cluster (two of them still here, over its -S), two local
        queue = ("--queue", "cluster") if n < 4 else ()
        ids.append(mixed.submit("sh", "-c", gated(mixed, "go", f"echo x >> {marks}/{n}"), opts=queue))
    wait_for(
        lambda: sum(1 for i in ids[:4] if mixed.job(i)["state"] == "running") == 2,
        timeout=60,
        what="two in SLURM",
    )
    for job in ids[4:]:
        mixed.wait_state(job, "running")
    mixed.kill_daemon()
    listed = mixed.ts("-l")  # a new daemon: adopts the local jobs and finds the SLURM ones
    assert "Traceback" not in listed
    (mixed.root / "go").write_text("")
    wait_for(lambda: all(j["state"] == "finished" for j in mixed.jobs()), timeout=90, what="every job")
    for n in range(6):
        assert text_of(marks / str(n)) == "x\n", f"job {n} ran {text_of(marks / str(n)).count('x')} times"
    jobs = {j["id"]: j for j in mixed.jobs()}
    assert {jobs[i]["exit_code"] for i in ids} == {0}
    assert all(jobs[i]["slurm_id"] for i in ids[:4]) and not any(jobs[i]["slurm_id"] for i in ids[4:])


def test_a_slurm_daemon_with_a_local_queue(mixed: Spool) -> None:
    """``backend = "slurm"`` for the daemon, one queue bound back here."""
    write_config(mixed.root, daemon="slurm", extra='[queues.here]\nbackend = "local"\n')
    remote = mixed.submit("sh", "-c", "echo $SLURM_JOB_ID")
    local = mixed.submit("sh", "-c", 'echo "${SLURM_JOB_ID:-none}"', opts=("--queue", "here"))
    assert mixed.run("-w", str(remote), timeout=60).returncode == 0
    assert mixed.run("-w", str(local)).returncode == 0
    assert mixed.ts("-c", str(remote)) == f"{mixed.job(remote)['slurm_id']}\n"
    assert mixed.ts("-c", str(local)) == "none\n" and mixed.job(local)["slurm_id"] is None


def test_the_readme_section(mixed: Spool, tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### A cluster queue beside local ones\n", 1)[1].split("\n## ", 1)[0]
    config = re.findall(r"```toml\n(.*?)```", section, re.S)[0]
    commands = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    (tmp_path / "config.toml").write_text(re.sub(r"poll_interval = \d+", f"poll_interval = {POLL}", config))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").write_text('#!/bin/sh\necho "${SLURM_JOB_ID:-here}"\n')  # stands in for train.py
    (bindir / "python").chmod(0o755)
    env = {**mixed.env, "PATH": f"{bindir}:{BIN}:{mixed.env['PATH']}"}
    outputs = []
    for line in commands.splitlines():
        code = line.split("  #")[0].strip()
        done = subprocess.run(
            ["sh", "-c", code], env=env, cwd=mixed.root, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, f"{code}: {done.stderr}"
        outputs.append(done.stdout)
    assert outputs[:3] == ["0\n", "1\n", "0\n"]
    assert mixed.run("-w", "0").returncode == 0
    jobs = {j["id"]: j for j in mixed.jobs()}
    assert jobs[0]["slurm_id"] is None and jobs[1]["slurm_id"]
    assert mixed.ts("-c", "0") == "here\n" and mixed.ts("-c", "1") == f"{jobs[1]['slurm_id']}\n"
    assert jobs[1]["slurm_id"] in outputs[3] and "Runs in: SLURM\n" in outputs[4]
    assert outputs[-1].splitlines()[-1].split() == ["cluster", "40", "0", "0", "0", "slurm"]


def test_a_held_job_of_a_cluster_queue_waits_here_until_released(mixed: Spool) -> None:
    held = mixed.submit("echo", "released", opts=("--queue", "cluster", "--hold"))
    later = mixed.submit("echo", "after", opts=("--queue", "cluster"))
    assert mixed.run("-w", str(later), timeout=60).returncode == 0  # a pass went by it
    assert mixed.job(held)["state"] == "held" and mixed.job(held)["slurm_id"] is None
    mixed.ts("--release", str(held))
    assert mixed.run("-w", str(held), timeout=60).returncode == 0
    assert mixed.job(held)["slurm_id"] and mixed.ts("-c", str(held)) == "released\n"


def test_a_job_in_slurm_is_followed_after_its_queue_is_unbound(mixed: Spool, tmp_path: Path) -> None:
    """The config loses its cluster queue while a job runs in SLURM: the next daemon follows
    that job to its end there, and never starts it here as well."""
    remote = mixed.submit("sh", "-c", gated(mixed, "go", "exit 4"), opts=("--queue", "cluster"))
    slurm_id = mixed.wait_state(remote, "running", timeout=60)["slurm_id"]
    mixed.ts("-K")
    wait_for(lambda: mixed.daemon_pid() is None, what="the daemon to stop")
    local_only = tmp_path / "local.toml"
    local_only.write_text('backend = "local"\n')
    mixed.env["TS_CONFIG"] = str(local_only)
    record = mixed.job(remote)  # a new daemon, with no queue in SLURM
    assert (record["state"], record["slurm_id"], record["pid"]) == ("running", slurm_id, None)
    (mixed.root / "go").touch()
    record = mixed.wait_state(remote, "finished", timeout=60)
    assert (record["exit_code"], record["slurm_id"], record["pid"]) == (4, slurm_id, None)


def test_a_job_queued_with_z_before_its_queue_went_to_slurm_is_skipped_with_the_reason(
    mixed: Spool, tmp_path: Path
) -> None:
    """``-z`` is refused for a queue in SLURM at submission; a job queued with it while its queue
    still ran jobs here is skipped when SLURM's pass reaches it, not sent without it."""
    job = mixed.submit("echo", "zipped", opts=("--queue", "later", "-z", "--hold"))
    mixed.ts("-K")
    wait_for(lambda: mixed.daemon_pid() is None, what="the daemon to stop")
    mixed.env["TS_CONFIG"] = str(write_config(tmp_path, extra='[queues.later]\nbackend = "slurm"\n'))
    mixed.ts("--release", str(job))
    record = mixed.wait_state(job, "skipped")
    assert "-z cannot be honoured in SLURM" in record["reason"] and record["slurm_id"] is None
