"""Experiment workflows through the real ``ts``: templates, sweeps, retries, priorities, filters."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import Spool, wait_for


def hold(spool: Spool) -> Path:
    """Occupy the only slot until the returned file exists, so later jobs stay queued."""
    gate = spool.root / "gate"
    job = spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done")
    spool.wait_state(job, "running")
    return gate


def output(spool: Spool, job: int) -> str:
    spool.run("-w", str(job))
    return Path(spool.job(job)["output"]).read_text()


# -- arguments and templates -----------------------------------------------------------------


def test_arguments_fill_an_argv_command_without_quoting(spool: Spool) -> None:
    job = spool.submit(
        "printf", "%s|", "--lr", "%(lr)", "--model", "%(model.name)", "%%(literal)",
        opts=("--arg", "lr=0.1", "--arg", "model.name=vit b", "--"),
    )  # fmt: skip
    assert output(spool, job) == "--lr|0.1|--model|vit b|%(literal)|"
    record = spool.job(job)
    assert record["args"] == {"lr": 0.1, "model": {"name": "vit b"}}
    assert '"lr": 0.1' in spool.ts("-i", str(job))


@pytest.mark.parametrize("value", ["a b", "it's", 'say "hi"', "$HOME", "x; touch pwned", "`id`", "tab\there"])
def test_a_shell_string_command_gets_each_value_quoted(spool: Spool, value: str) -> None:
    job = spool.submit("printf '%s' %(v) > out.txt", opts=("--args", json.dumps({"v": value}), "--"))
    spool.run("-w", str(job))
    assert (spool.root / "out.txt").read_text() == value
    assert not (spool.root / "pwned").exists()


def test_the_job_sees_its_arguments_and_attempt(spool: Spool) -> None:
    job = spool.submit("sh", "-c", 'echo "$TS_ARGS|$TS_ATTEMPT" # %(seed)', opts=("--arg", "seed=3", "--"))
    assert output(spool, job) == '{"seed": 3}|1\n'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--arg", "lr=1", "--", "echo", "%(lr)", "%(missing)"), "missing"),
        (("--arg", "lr=1", "--arg", "unused=2", "--", "echo", "%(lr)"), "unused"),
        (("--arg", "novalue", "--", "echo", "%(novalue)"), "novalue"),
        (("--args", "[1, 2]", "--", "echo", "x"), "JSON"),
    ],
)
def test_no_more_no_less(spool: Spool, args: tuple[str, ...], message: str) -> None:
    done = spool.run(*args)
    assert done.returncode != 0 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert spool.run("-l").returncode == 0 and spool.jobs() == []


def test_allow_extra_and_the_run_name(spool: Spool) -> None:
    job = spool.submit("echo", "%(_name)", opts=("--arg", "lr=0.1", "--arg", "bs=32", "--allow-extra", "--"))
    assert output(spool, job) == "bs=32,lr=0.1\n"


def test_commands_without_arguments_are_never_templated(spool: Spool) -> None:
    job = spool.submit("echo", "%(x)s|%%(")
    assert output(spool, job) == "%(x)s|%%(\n"


# -- sweeps ----------------------------------------------------------------------------------


SWEEP = textwrap.dedent(
    """
    name = "lrs"
    command = "echo %(model) %(lr) %(epochs) > %(_name).txt"

    [base]
    epochs = 3

    [[grid]]
    model = ["vit", "resnet"]
    lr = [0.1, 0.01]

    [[grid]]
    model = ["vit"]
    lr = [0.1, 0.5]
    """
)


def test_a_sweep_of_two_grids_expands_to_the_exact_jobs(spool: Spool) -> None:
    sweep = spool.root / "sweep.toml"
    sweep.write_text(SWEEP)
    dry = spool.ts("sweep", str(sweep), "--dry-run").splitlines()
    assert spool.jobs() == []  # --dry-run queues nothing
    expected = {
        ("vit", 0.1), ("vit", 0.01), ("resnet", 0.1), ("resnet", 0.01), ("vit", 0.5),
    }  # fmt: skip
    assert len(dry) == len(expected)
    ids = [int(i) for i in spool.ts("sweep", str(sweep), "-L", "exp").split()]
    jobs = [spool.job(i) for i in ids]
    assert {(j["args"]["model"], j["args"]["lr"]) for j in jobs} == expected
    assert all(j["sweep"] == "lrs" and j["label"] == "exp" and j["args"]["epochs"] == 3 for j in jobs)
    assert [j["command"] for j in jobs] == dry
    spool.run("-w", str(ids[-1]))
    assert (spool.root / "epochs=3,lr=0.1,model=vit.txt").read_text() == "vit 0.1 3\n"


def test_a_bad_sweep_queues_nothing(spool: Spool) -> None:
    sweep = spool.root / "bad.toml"
    sweep.write_text('command = "echo %(lr)"\n[[grid]]\nlr = 0.1\n')
    done = spool.run("sweep", str(sweep))
    assert done.returncode != 0 and "lr" in done.stderr and "list" in done.stderr
    sweep.write_text('command = "echo %(lr) %(typo)"\n[[grid]]\nlr = [0.1, 0.2]\n')
    done = spool.run("sweep", str(sweep))
    assert done.returncode != 0 and "typo" in done.stderr
    sweep.write_text('command = "echo"\n[[grid]\n')
    done = spool.run("sweep", str(sweep))
    assert done.returncode != 0 and "line" in done.stderr
    assert spool.run("-l").returncode == 0 and spool.jobs() == []


def test_skip_if_exists_skips_finished_runs(spool: Spool) -> None:
    sweep = spool.root / "s.json"
    sweep.write_text(
        json.dumps(
            {
                "command": "mkdir -p runs/%(_name) && touch runs/%(_name)/DONE",
                "grid": [{"seed": [1, 2]}],
            }
        )
    )
    first = [int(i) for i in spool.ts("sweep", str(sweep), "--skip-if-exists", "runs/%(_name)/DONE").split()]
    spool.run("-w", str(first[-1]))
    assert all(spool.job(i)["state"] == "finished" for i in first)
    (spool.root / "runs" / "seed=2" / "DONE").unlink()
    again = [int(i) for i in spool.ts("sweep", str(sweep), "--skip-if-exists", "runs/%(_name)/DONE").split()]
    spool.run("-w", str(again[-1]))
    states = {spool.job(i)["args"]["seed"]: spool.job(i) for i in again}
    assert states[1]["state"] == "skipped" and "DONE exists" in states[1]["reason"]
    assert states[2]["state"] == "finished"


# -- retries and requeue ---------------------------------------------------------------------


def test_retries_stop_after_n_extra_attempts(spool: Spool) -> None:
    job = spool.submit("sh", "-c", 'echo "attempt $TS_ATTEMPT"; exit 3', opts=("--retry", "2"))
    assert spool.run("-w", str(job)).returncode == 3
    record = spool.job(job)
    assert record["attempt"] == 3 and len(record["attempts"]) == 2
    assert [a["exit_code"] for a in record["attempts"]] == [3, 3]
    assert Path(record["output"]).read_text() == "attempt 3\n"
    assert Path(record["attempts"][0]["output"]).read_text() == "attempt 1\n"
    info = spool.ts("-i", str(job))
    assert "attempt 1: exit 3" in info and "attempt 2: exit 3" in info


def test_a_retry_that_succeeds_stops_retrying(spool: Spool) -> None:
    marker = spool.root / "seen"
    job = spool.submit("sh", "-c", f"[ -e {marker} ] || {{ touch {marker}; exit 1; }}", opts=("--retry", "5"))
    assert spool.run("-w", str(job)).returncode == 0
    assert spool.job(job)["attempt"] == 2


def test_a_killed_job_is_not_retried(spool: Spool) -> None:
    job = spool.submit("sleep", "300", opts=("--retry", "3"))
    spool.wait_state(job, "running")
    spool.ts("-k", str(job))
    assert spool.run("-w", str(job)).returncode == 255
    assert spool.job(job)["attempt"] == 1


def test_requeue_failed_jobs_of_a_sweep(spool: Spool) -> None:
    sweep = spool.root / "s.json"
    sweep.write_text(
        json.dumps({"name": "flaky", "command": ["sh", "-c", "exit %(code)"], "grid": [{"code": [0, 1, 2]}]})
    )
    ids = [int(i) for i in spool.ts("sweep", str(sweep)).split()]
    spool.run("-w", str(ids[-1]))
    failed = spool.ts("-l", "--sweep", "flaky", "--state", "failed", "--ids").split()
    assert sorted(failed) == [str(ids[1]), str(ids[2])]
    requeued = spool.ts("--requeue", "--sweep", "flaky", "--state", "failed").split()
    assert sorted(requeued) == sorted(failed)
    spool.run("-w", str(ids[2]))
    record = spool.job(ids[2])
    assert record["attempt"] == 1 and len(record["attempts"]) == 1
    assert spool.job(ids[0])["attempts"] == []


# -- priorities and filters ------------------------------------------------------------------


def test_priorities_order_the_queue(spool: Spool) -> None:
    gate = hold(spool)
    low = spool.submit("true", opts=("--priority", "-1"))
    normal = spool.submit("true")
    high = spool.submit("true", opts=("--priority", "5"))
    high2 = spool.submit("true", opts=("--priority", "5"))
    order = [j["id"] for j in spool.jobs() if j["state"] == "queued"]
    assert order == [high, high2, normal, low]
    spool.ts("--priority", "10", str(low))
    spool.ts("-u", str(normal))
    order = [j["id"] for j in spool.jobs() if j["state"] == "queued"]
    assert order == [normal, low, high, high2]
    gate.touch()
    spool.run("-w", str(high2))
    starts = {j["id"]: j["start_time"] for j in spool.jobs()}
    assert starts[normal] < starts[low] < starts[high] < starts[high2]


def test_filters_list_and_bulk_actions(spool: Spool) -> None:
    spool.ts("-S", "3")
    ran = [
        spool.submit("true", opts=("-L", "a", "--arg", f"lr={lr}", "--allow-extra", "--"))
        for lr in (0.1, 0.0001)
    ]
    spool.run("-w", str(ran[-1]))
    where = spool.ts("-l", "--where", 'args.lr > 1e-3 and state == "finished"', "--ids").split()
    assert where == [str(ran[0])]
    assert spool.ts("-l", "--label", "a", "--ids").split() == [str(i) for i in ran]
    bad = spool.run("-l", "--where", "args.lr >")
    assert bad.returncode != 0 and "position" in bad.stderr
    spool.ts("-S", "1")
    gate = hold(spool)
    queued = [spool.submit("true", opts=("-L", "b")) for _ in range(3)]
    removed = spool.ts("-r", "--label", "b").split()
    assert removed == [str(i) for i in queued]
    assert spool.ts("-l", "--label", "b", "--ids") == ""
    sleepers = [spool.submit("sleep", "300", opts=("-L", "c")) for _ in range(2)]
    spool.ts("-S", "4")
    for job in sleepers:
        spool.wait_state(job, "running")
    assert sorted(spool.ts("-k", "--label", "c").split()) == [str(i) for i in sleepers]
    for job in sleepers:
        assert spool.run("-w", str(job)).returncode == 255
    gate.touch()


# -- results and snapshots -------------------------------------------------------------------


def test_results_are_stored_and_filterable(spool: Spool) -> None:
    for acc in (0.5, 0.95):
        spool.submit("sh", "-c", f'echo \'{{"acc": {acc}}}\' > "$TS_RESULT_FILE"')
    spool.run("-w")
    good = spool.ts("-l", "--where", "result.acc > 0.9", "--ids").split()
    assert good == ["1"]
    assert spool.job(1)["result"] == {"acc": 0.95}
    assert '"acc": 0.95' in spool.ts("-i", "1")


def test_a_result_with_an_integer_beyond_64_bits_is_kept_and_the_daemon_goes_on(spool: Spool) -> None:
    """JSON's integers have no bound, the save-list's do: such a value is kept as a float (or its
    digits) instead of breaking the job's end and, later, every reply."""
    big, huge = 2**64, 10**400
    job = spool.submit("sh", "-c", f'echo \'{{"seed": {big}, "n": [{huge}], "ok": 1}}\' > "$TS_RESULT_FILE"')
    after = spool.submit("true", opts=("-d",))
    assert spool.run("-w", str(job)).returncode == 0
    assert spool.run("-w", str(after)).returncode == 0  # its dependant started: the end went through
    assert spool.job(job)["result"] == {"seed": float(big), "n": [str(huge)], "ok": 1}
    spool.kill_daemon()
    assert spool.job(job)["result"]["ok"] == 1  # and it was recorded


def test_a_snapshot_runs_the_code_as_it_was_when_queued(spool: Spool, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    script = repo / "src" / "train.py"
    script.write_text("print('version 1')\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "v1"], check=True)
    script.write_text("print('version 2, uncommitted')\n")
    gate = hold(spool)
    job = spool.submit("python3", "train.py", opts=("--snapshot",), cwd=repo / "src")
    script.write_text("print('version 3, edited after queueing')\n")
    gate.touch()
    assert output(spool, job) == "version 2, uncommitted\n"
    record = spool.job(job)
    assert record["snapshot"] and "with uncommitted changes" in record["snapshot_info"]
    assert "Code snapshot:" in spool.ts("-i", str(job))
    snapshot = Path(record["snapshot"])
    assert snapshot.exists()
    spool.ts("-r", str(job))
    wait_for(lambda: not snapshot.exists(), what="the snapshot to be removed with its job")
