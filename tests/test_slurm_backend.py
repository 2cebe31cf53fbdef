"""The slurm backend end to end: the real ``ts``, the real daemon and a real slurmctld + slurmd
(``tests/slurm/cluster.sh``; skipped, saying why, where none can run).

Jobs are tiny and the daemon polls every 0.2 s, so each test takes a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, TS, Spool, text_of, wait_for
from slurm_cluster import Cluster, slurm_config

pytestmark = pytest.mark.slurm


def cluster_of(spool: Spool) -> Cluster:
    cluster: Cluster = spool.cluster  # type: ignore[attr-defined]
    return cluster


def squeue(spool: Spool, *args: str) -> list[str]:
    """Our test's jobs in SLURM: ``id|state|reason|comment`` lines."""
    done = cluster_of(spool).tool("squeue", "--me", "-h", "-r", "-t", "all", "-o", "%i|%T|%r|%k|%Z", *args)
    return [line.rsplit("|", 1)[0] for line in done.stdout.splitlines() if line.endswith(str(spool.root))]


def test_jobs_run_in_slurm_with_exit_status_output_and_info(slurm_spool: Spool) -> None:
    ok = slurm_spool.submit("sh", "-c", "echo hello from $SLURM_JOB_ID; echo err >&2")
    failed = slurm_spool.submit("sh", "-c", "exit 3", opts=("-L", "three"))
    assert slurm_spool.run("-w", str(ok)).returncode == 0
    assert slurm_spool.run("-w", str(failed)).returncode == 3
    job = slurm_spool.job(ok)
    assert job["state"] == "finished" and job["exit_code"] == 0 and job["slurm_id"]
    assert slurm_spool.ts("-c", str(ok)) == f"hello from {job['slurm_id']}\nerr\n"
    tail = slurm_spool.run("-t", str(failed))
    assert (tail.returncode, tail.stdout) == (3, "")
    info = slurm_spool.ts("-i", str(failed))
    assert (
        re.search(r"^SLURM job: \d+$", info, re.M)
        and "Partition: debug" in info
        and "Node: localhost" in info
    )
    assert "Exit status: died with exit code 3" in info


def test_gpus_are_slurms_and_a_third_job_waits_with_its_reason(slurm_spool: Spool, tmp_path: Path) -> None:
    slurm_spool.ts("-S", "3")
    ids = [
        slurm_spool.submit(
            "sh", "-c", f'echo "$CUDA_VISIBLE_DEVICES" > {tmp_path}/gpus{i}; sleep 30', opts=("-G", "2")
        )
        for i in range(3)
    ]
    for i in ids[:2]:
        slurm_spool.wait_state(i, "running")
    got = [
        wait_for(lambda i=i: text_of(tmp_path / f"gpus{i}").strip(), what=f"job {i}'s GPUs") for i in (0, 1)
    ]
    assert sorted(",".join(got).split(",")) == ["0", "1", "2", "3"]
    waiting = slurm_spool.wait_state(ids[2], "allocating")
    refused = slurm_spool.run("-u", str(ids[2]))
    assert refused.stderr == f"ts: job {ids[2]} is in SLURM already (it is allocating)\n"
    wait_for(lambda: "Resources" in (slurm_spool.job(ids[2])["reason"] or ""), what="SLURM's reason")
    listed = slurm_spool.ts("-l")
    assert "allocating (Resources)" in listed and "[run=2/3]" in listed
    assert slurm_spool.ts("-R") == "2\n"
    # the one SLURM keeps pending is counted apart from those it runs
    assert slurm_spool.ts("--queues").splitlines()[1].split() == ["default", "3", "2", "0", "1", "slurm"]
    assert waiting["slurm_id"]
    info = slurm_spool.ts("-i", str(ids[0]))
    assert "SLURM GPUs: gres:gpu:2 (GPUs " in info
    # what needs the job's process here is refused, saying why
    paused = slurm_spool.run("--pause", str(ids[0]))
    assert (paused.returncode, paused.stderr) == (
        1,
        f"ts: job {ids[0]} runs in SLURM: --pause is not available there\n",
    )
    pid = slurm_spool.run("-p", str(ids[0]))
    assert (pid.returncode, pid.stderr) == (1, f"ts: job {ids[0]} runs in SLURM: it has no process here\n")
    # -k: scancel, of a running job and of one SLURM keeps pending
    for i in (ids[2], ids[0]):  # the pending one first: it would start on the GPUs freed
        slurm_spool.ts("-k", str(i))
    assert slurm_spool.run("-w", str(ids[0])).returncode == 255
    assert slurm_spool.job(ids[0])["signal"] == "SIGTERM"
    assert slurm_spool.wait_state(ids[2], "skipped")["reason"] == "killed (ts -k) before it started"
    slurm_spool.ts("-k", str(ids[1]))
    slurm_spool.wait_state(ids[1], "finished")


def test_a_sweep_is_one_job_array_throttled_by_S(slurm_spool: Spool, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'name = "s"\ncommand = "echo run %(i) attempt $TS_ATTEMPT $TS_ARGS"\n[[grid]]\ni = '
        + str(list(range(20)))
        + "\n"
    )
    slurm_spool.ts("-S", "4")
    ids = [int(i) for i in slurm_spool.ts("sweep", str(sweep)).split()]
    assert len(ids) == 20
    wait_for(lambda: all(j["state"] == "finished" for j in slurm_spool.jobs()), timeout=60, what="the sweep")
    jobs = {j["id"]: j for j in slurm_spool.jobs()}
    arrays = {jobs[i]["slurm_id"].split("_")[0] for i in ids}
    assert len(arrays) == 1, f"one job array, not {arrays}"
    (array,) = arrays
    shown = cluster_of(slurm_spool).tool("scontrol", "-o", "show", "job", f"{array}_0").stdout
    assert "ArrayTaskThrottle=4" in shown
    for n, i in enumerate(ids):
        assert jobs[i]["slurm_id"] == f"{array}_{n}"
        assert text_of(Path(jobs[i]["output"])) == f'run {n} attempt 1 {{"i": {n}}}\n'
        assert jobs[i]["exit_code"] == 0


def test_S_changed_while_a_sweep_is_in_slurm_changes_its_array_throttle(
    slurm_spool: Spool, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'name = "t"\ncommand = "until [ -e {gate} ]; do sleep 0.05; done; echo %(i)"\n'
        "[[grid]]\ni = [0, 1, 2, 3, 4, 5]\n"
    )
    slurm_spool.ts("-S", "2")
    ids = [int(i) for i in slurm_spool.ts("sweep", str(sweep)).split()]

    def running() -> int:
        return sum(1 for j in slurm_spool.jobs() if j["state"] == "running")

    def throttle() -> str:
        array = slurm_spool.job(ids[0])["slurm_id"].split("_")[0]
        shown = cluster_of(slurm_spool).tool("scontrol", "-o", "show", "job", array).stdout
        found = re.search(r"ArrayTaskThrottle=(\d+)", shown)
        return found.group(1) if found else shown

    wait_for(lambda: running() == 2, timeout=60, what="two tasks running at -S 2")
    assert throttle() == "2"
    slurm_spool.ts("-S", "4")  # the same array, more tasks at once
    wait_for(lambda: running() == 4, timeout=60, what="four tasks running at -S 4")
    assert throttle() == "4"
    slurm_spool.ts("-S", "1")  # SLURM lets the four end, and starts one at a time after
    wait_for(lambda: throttle() == "1", timeout=30, what="the throttle lowered to 1")
    assert running() == 4
    gate.write_text("")
    wait_for(lambda: all(j["state"] == "finished" for j in slurm_spool.jobs()), timeout=60, what="the sweep")
    assert len({slurm_spool.job(i)["slurm_id"].split("_")[0] for i in ids}) == 1


def test_time_limit_ends_in_timeout(slurm_spool: Spool) -> None:
    job = slurm_spool.submit("sleep", "60", opts=("--time", "2s"))
    assert slurm_spool.run("-w", str(job)).returncode == 124
    assert slurm_spool.job(job)["state"] == "timeout"


def test_dependencies_retry_and_skip_if_exists(slurm_spool: Spool, tmp_path: Path) -> None:
    slurm_spool.ts("-S", "3")
    first = slurm_spool.submit("sh", "-c", "sleep 1; exit 1")
    after_any = slurm_spool.submit("echo", "ran after", opts=("-D", str(first)))
    after_ok = slurm_spool.submit("echo", "never", opts=("-W", str(first)))
    # The dependants went to SLURM with --dependency at once: it holds them.
    wait_for(lambda: slurm_spool.job(after_any)["slurm_id"], what="the dependant in SLURM")
    assert slurm_spool.run("-w", str(after_any)).returncode == 0
    assert slurm_spool.wait_state(after_ok, "skipped")["reason"] == "a dependency did not end well"
    flaky = slurm_spool.submit("sh", "-c", '[ "$TS_ATTEMPT" = 2 ]', opts=("--retry", "1"))
    assert slurm_spool.run("-w", str(flaky)).returncode == 0
    job = slurm_spool.job(flaky)
    assert job["attempt"] == 2 and job["attempts"][0]["exit_code"] == 1
    (tmp_path / "DONE").write_text("")
    skipped = slurm_spool.submit("echo", "x", opts=("--skip-if-exists", str(tmp_path / "DONE")))
    assert slurm_spool.wait_state(skipped, "skipped")["slurm_id"] is None


def test_what_sbatch_refuses_queues_nothing(slurm_spool: Spool) -> None:
    slurm_spool.submit("true")
    refused = slurm_spool.run("-G", "9", "true")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr == "ts: sbatch: allocation failure: Requested node configuration is not available\n"
    refused = slurm_spool.run("-g", "0", "true")
    assert refused.stderr == "ts: -g is not available with the slurm backend\n"
    refused = slurm_spool.run("-n", "-f", "echo", "x")  # its output would be thrown away
    assert (refused.returncode, refused.stderr) == (
        1,
        "ts: -n with -f is not available with the slurm backend\n",
    )
    slurm_spool.ts("-K")
    bad = slurm_config(slurm_spool.root, partition="nope")
    refused = slurm_spool.run("echo", "x")  # a new daemon, with the bad partition in its config
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1, refused.stderr
    assert "Invalid partition name specified" in refused.stderr, bad
    assert [j["id"] for j in slurm_spool.jobs()] == [0]


def test_a_bad_config_key_is_one_line(slurm_spool: Spool) -> None:
    path = slurm_spool.root / "bad.toml"
    path.write_text('backend = "slurm"\n[slurm]\npartiton = "gpu"\n')
    done = slurm_spool.run("-l", env={"TS_CONFIG": str(path)})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{path}:3: unknown [slurm] key 'partiton'" in done.stderr


def test_kill_9_mid_sweep_every_run_ends_once(slurm_spool: Spool, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'name = "k"\ncommand = "sleep 1; echo x >> {marks}/%(i)"\n[[grid]]\ni = {list(range(12))}\n'
    )
    slurm_spool.ts("-S", "3")
    ids = [int(i) for i in slurm_spool.ts("sweep", str(sweep)).split()]
    wait_for(lambda: any(j["state"] == "running" for j in slurm_spool.jobs()), what="a run to start")
    slurm_spool.kill_daemon()
    more = slurm_spool.submit("echo", "after the restart")  # a new daemon, which adopts the sweep
    wait_for(lambda: all(j["state"] == "finished" for j in slurm_spool.jobs()), timeout=90, what="every run")
    for n in range(12):
        assert text_of(marks / str(n)) == "x\n", f"run {n} ran {text_of(marks / str(n)).count('x')} times"
    assert {j["exit_code"] for j in slurm_spool.jobs()} == {0}
    assert len(ids) == 12 and more == 12


def test_daemon_killed_between_sbatch_and_the_journal_never_submits_twice(
    slurm_spool: Spool, tmp_path: Path
) -> None:
    # A sbatch that submits, then hangs: the daemon is killed before it hears the id.
    bindir = tmp_path / "slowbin"
    bindir.mkdir()
    real = os.popen("command -v sbatch").read().strip()
    (bindir / "sbatch").write_text(f'#!/bin/sh\n{real} "$@"\nsleep 60\n')
    (bindir / "sbatch").chmod(0o755)
    path = f"{bindir}:{os.environ['PATH']}"
    job = slurm_spool.submit("sh", "-c", f"echo once >> {tmp_path}/ran", env={"PATH": path})
    wait_for(lambda: squeue(slurm_spool), what="the job in SLURM")
    assert slurm_spool.job(job)["slurm_id"] is None  # submitted, but the daemon does not know it
    slurm_spool.kill_daemon()
    assert slurm_spool.run("-w", str(job)).returncode == 0  # a new daemon, with the real sbatch
    assert text_of(tmp_path / "ran") == "once\n"
    assert len(squeue(slurm_spool)) == 1


def test_a_controller_that_does_not_answer_makes_jobs_wait(slurm_spool: Spool, tmp_path: Path) -> None:
    # The daemon's sbatch notes each call, so that we know which submissions asked SLURM.
    bindir, calls = tmp_path / "bin", tmp_path / "sbatch-calls"
    bindir.mkdir()
    real = os.popen("command -v sbatch").read().strip()
    (bindir / "sbatch").write_text(f'#!/bin/sh\necho "$1" >> {calls}\nexec {real} "$@"\n')
    (bindir / "sbatch").chmod(0o755)
    cluster = cluster_of(slurm_spool)
    first = slurm_spool.submit("true", env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert slurm_spool.run("-w", str(first)).returncode == 0
    assert text_of(calls).split() == ["--test-only", "--parsable"]
    cluster.script("stop-controller")
    submitter = subprocess.Popen(
        [*TS, "echo", "queued while the controller was down"],
        env=slurm_spool.env,
        cwd=slurm_spool.root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: text_of(calls).count("--test-only") == 2, what="the check of the submission")
        # While SLURM is asked (sbatch --test-only waits for a silent controller), the daemon
        # serves everyone else: the submission is not queued yet.
        assert "controller was down" not in slurm_spool.ts("-l")
        job = int(submitter.communicate(timeout=60)[0])
        later = slurm_spool.submit("echo", "queued after the daemon found the controller silent")
        # The first check found the controller silent; the second submission did not ask again.
        assert text_of(calls).count("--test-only") == 2, text_of(calls)
        reason = wait_for(
            lambda: (
                "not answering" in (slurm_spool.job(job)["reason"] or "") and slurm_spool.job(job)["reason"]
            ),
            timeout=60,
            what="the reason",
        )
        assert slurm_spool.job(job)["state"] == "allocating", reason
    finally:
        submitter.kill()
        submitter.wait()
        cluster.script("start-controller")
    assert slurm_spool.run("-w", str(job), timeout=120).returncode == 0
    assert slurm_spool.run("-w", str(later), timeout=120).returncode == 0
    assert [j["exit_code"] for j in json.loads(slurm_spool.ts("-M", "json"))] == [0, 0, 0]


def test_a_job_killed_before_its_script_could_write_ends_as_slurm_recorded(slurm_spool: Spool) -> None:
    # The command kills its batch script's shell, so no exit status file is ever written; after
    # the grace for a shared file system the daemon asks SLURM (scontrol: ExitCode=0:9).
    killed = slurm_spool.submit("sh", "-c", "kill -9 $PPID")
    exit3 = slurm_spool.submit("sh", "-c", "exit 3")
    for job in (killed, exit3):
        slurm_spool.wait_state(job, "finished", timeout=60)
    ended = {j["id"]: j for j in json.loads(slurm_spool.ts("-M", "json"))}
    assert (ended[killed]["signal"], ended[killed]["exit_code"]) == ("SIGKILL", None), ended[killed]
    assert "signal 9 in SLURM" in ended[killed]["reason"]
    assert (ended[exit3]["exit_code"], ended[exit3]["reason"]) == (3, None)  # its status file


def hiding_squeue(tmp_path: Path, sacct_says: str | None = None) -> tuple[str, Path]:
    """A PATH for the daemon whose squeue lists none of our jobs while the returned file exists
    (as if SLURM had forgotten them: MinJobAge), and whose sacct notes its calls in
    ``sacct-calls`` or, given ``sacct_says``, fails with that message (accounting off)."""
    bindir, hide = tmp_path / "bin", tmp_path / "hide"
    bindir.mkdir()
    real = os.popen("command -v squeue").read().strip()
    (bindir / "squeue").write_text(
        f'#!/bin/sh\nout=$({real} "$@") || exit $?\n[ -e {hide} ] || printf "%s\\n" "$out"\n'
    )
    if sacct_says is not None:
        (bindir / "sacct").write_text(f"#!/bin/sh\necho 'sacct: error: {sacct_says}' >&2\nexit 1\n")
    else:
        real = os.popen("command -v sacct").read().strip()
        (bindir / "sacct").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/sacct-calls\nexec {real} "$@"\n')
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}", hide


def test_a_job_gone_from_squeue_ends_as_accounting_recorded(slurm_spool: Spool, tmp_path: Path) -> None:
    if cluster_of(slurm_spool).tool("sacct", "-n", "-X", "-j", "1").returncode != 0:
        pytest.skip("accounting is off in this cluster: tests/slurm/cluster.sh turns it on with slurmdbd")
    path, hide = hiding_squeue(tmp_path)
    # No exit status file (its batch script is killed), and squeue stops listing it once it
    # runs: sacct says RUNNING at first (the job stays), then FAILED with ExitCode 0:9.
    killed = slurm_spool.submit("sh", "-c", "sleep 2; kill -9 $PPID", env={"PATH": path})
    slurm_spool.wait_state(killed, "running", timeout=60)
    hide.touch()
    ended = slurm_spool.wait_state(killed, "finished", timeout=60)
    assert (ended["signal"], ended["exit_code"]) == ("SIGKILL", None), ended
    assert "signal 9 in SLURM" in ended["reason"]
    assert text_of(tmp_path / "sacct-calls"), "the end came from somewhere else than accounting"


def test_a_job_gone_from_squeue_without_accounting_is_lost(slurm_spool: Spool, tmp_path: Path) -> None:
    path, hide = hiding_squeue(tmp_path, sacct_says="Slurm accounting storage is disabled")
    job = slurm_spool.submit("sh", "-c", "sleep 2; kill -9 $PPID", env={"PATH": path})
    wait_for(lambda: slurm_spool.job(job)["slurm_id"], what="its SLURM id")
    hide.touch()
    assert slurm_spool.wait_state(job, "lost", timeout=60)["reason"] == "it is no longer in SLURM"


def test_the_readme_section(slurm_spool: Spool, tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## On a SLURM cluster\n", 1)[1].split("\n## ", 1)[0]
    config, commands = (re.findall(rf"```{kind}\n(.*?)```", section, re.S)[0] for kind in ("toml", "sh"))
    sweep = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[[grid]]" in b)
    (slurm_spool.root / "sweep.toml").write_text(sweep)
    (tmp_path / "config.toml").write_text(re.sub(r"poll_interval = \d+", "poll_interval = 0.2", config))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").write_text(  # stands in for train.py: makes its --out directory, takes 2 s
        '#!/bin/sh\nfor a; do case "$prev" in --out) mkdir -p "$a";; esac; prev=$a; done\nsleep 2\n'
    )
    (bindir / "python").chmod(0o755)
    env = {"PATH": f"{bindir}:{BIN}:{slurm_spool.env['PATH']}"}
    outputs = []
    for line in commands.splitlines():
        code = line.split("  #")[0].strip()
        done = subprocess.run(
            ["sh", "-c", code], env={**slurm_spool.env, **env}, cwd=slurm_spool.root,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0 and "Traceback" not in done.stderr, f"{code}: {done.stderr}"
        outputs.append(done.stdout)
    assert outputs[1] == "0\n" and outputs[2].split() == ["1", "2", "3", "4", "5"]
    assert re.search(r"^SLURM job: \d+$", outputs[5], re.M) and "GPUs required: 1 GPU(s)" in outputs[5]
    assert outputs[-1] == "0\n"
    jobs = {j["id"]: j for j in slurm_spool.jobs()}
    assert len({jobs[i]["slurm_id"].split("_")[0] for i in range(1, 6) if jobs[i]["slurm_id"]}) == 1
    assert jobs[5]["state"] in ("skipped", "finished") and jobs[5]["exit_code"] != 0, (
        jobs[5]["reason"],
        jobs[5]["slurm_id"],
    )


def test_the_python_api_sweeps_in_slurm(slurm_spool: Spool) -> None:
    code = (
        "from spooler import Client\n"
        "with Client() as ts:\n"
        "    ids = ts.sweep('echo lr=%(lr)', [{'lr': lr} for lr in (0.1, 0.01, 0.001)], name='api')\n"
        "    print([ts.wait(i) for i in ids], sorted({ts.job(i)['slurm_id'].split('_')[0] for i in ids}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=slurm_spool.env, cwd=slurm_spool.root,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    statuses, arrays = done.stdout.rsplit("] [", 1)
    assert statuses == "[0, 0, 0" and arrays.count("'") == 2  # one job array


def test_a_node_failure_is_lost_with_the_reason_or_retried(slurm_spool: Spool) -> None:
    cluster = cluster_of(slurm_spool)
    slurm_spool.ts("-S", "2")
    lost = slurm_spool.submit("sleep", "60")
    retried = slurm_spool.submit("sh", "-c", '[ "$TS_ATTEMPT" = 2 ] || sleep 60', opts=("--retry", "1"))
    for job in (lost, retried):
        slurm_spool.wait_state(job, "running")
    cluster.tool("scontrol", "update", "nodename=localhost", "state=down", "reason=test")
    try:
        assert slurm_spool.wait_state(lost, "lost")["reason"] == "SLURM: its node failed (NODE_FAIL)"
        wait_for(lambda: slurm_spool.job(retried)["attempt"] == 2, what="the second attempt")
    finally:
        cluster.tool("scontrol", "update", "nodename=localhost", "state=resume")
        wait_for(
            lambda: cluster.tool("sinfo", "-h", "-N", "-o", "%T").stdout.strip() == "idle", what="the node"
        )
    assert slurm_spool.run("-w", str(retried), timeout=60).returncode == 0
    first = slurm_spool.job(retried)["attempts"][0]
    assert first["reason"] == "SLURM: its node failed (NODE_FAIL)" and first["signal"] == 15


def test_max_in_flight_caps_our_jobs_in_slurm_and_E_keeps_stderr_apart(slurm_spool: Spool) -> None:
    slurm_config(slurm_spool.root, max_in_flight=2)
    slurm_spool.ts("-S", "10")
    ids = [slurm_spool.submit("sleep", "30", opts=("-L", f"j{i}")) for i in range(3)]
    wait_for(lambda: sum(1 for j in slurm_spool.jobs() if j["slurm_id"]) == 2, what="two jobs in SLURM")
    assert slurm_spool.job(ids[2])["state"] == "queued" and len(squeue(slurm_spool)) == 2
    slurm_spool.ts("-k", str(ids[0]))
    wait_for(lambda: slurm_spool.job(ids[2])["slurm_id"], what="the third job in SLURM")
    for job in ids[1:]:
        slurm_spool.ts("-k", str(job))
    apart = slurm_spool.submit("sh", "-c", "echo out; echo err >&2", opts=("-E",))
    assert slurm_spool.run("-w", str(apart)).returncode == 0
    output = slurm_spool.job(apart)["output"]
    assert text_of(Path(output)) == "out\n" and text_of(Path(output + ".e")) == "err\n"


def test_a_snapshot_runs_in_slurm(slurm_spool: Spool) -> None:
    code = slurm_spool.root / "work"
    code.mkdir()
    (code / "run.sh").write_text("echo v1\n")
    job = slurm_spool.submit("sh", "run.sh", opts=("--snapshot",), cwd=code)
    (code / "run.sh").write_text("echo v2\n")  # the job runs the copy taken when it was queued
    assert slurm_spool.run("-w", str(job)).returncode == 0
    assert text_of(Path(slurm_spool.job(job)["output"])) == "v1\n"
