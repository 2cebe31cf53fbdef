"""A multi-user daemon: every job runs as its submitter, and a user acts on their own jobs only.

Each test drives a real ``ts --daemon --multi-user`` (root) through the real ``ts`` of two
throwaway users (see ``multi_user``); skipped, with the reason, where not root.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import TS, wait_for
from multi_user import Shared, User


def test_a_job_runs_as_its_submitter_with_their_home_and_umask(shared: Shared, alice: User) -> None:
    job = shared.submit_as(
        alice, "sh", "-c", 'id -un; id -u; id -g; echo "$HOME $USER $LOGNAME $SECRET"; umask; pwd'
    )
    assert shared.wait_state(job, "finished")["exit_code"] == 0
    out = shared.ts_as(alice, "-c", str(job)).split()
    assert out[:3] == [alice.name, str(alice.uid), str(alice.gid)]
    assert out[3:7] == [str(alice.home), alice.name, alice.name, f"secret-of-{alice.name}"]
    assert out[7:] == ["0022", str(alice.home)]
    # The log: the user's own file (0600) in the user's own directory (0700), both theirs.
    log = Path(shared.job(job)["output"])
    assert log.parent == shared.logdir / alice.name
    for path, mode in ((log, 0o600), (log.parent, 0o700)):
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.uid, mode), path


def test_a_gzipped_log_and_the_public_fields_of_a_job(shared: Shared, alice: User, bob: User) -> None:
    job = shared.submit_as(alice, "id", "-un", opts=("-z", "-L", "lab"))
    shared.wait_state(job, "finished")
    log = Path(shared.job(job)["output"])
    assert log.name.endswith(".gz") and os.stat(log).st_uid == alice.uid
    assert shared.ts_as(alice, "-c", str(job)).strip() == alice.name
    # What ts -l shows anyone: state, label and command (-s, -a, -F); not the log (-o).
    assert [shared.ts_as(bob, flag, str(job)).strip() for flag in ("-s", "-a", "-F")] == [
        "finished",
        "lab",
        "id -un",
    ]
    assert shared.run_as(bob, "-o", str(job)).returncode != 0


def test_ts_l_shows_every_users_jobs_with_their_owner(shared: Shared, alice: User, bob: User) -> None:
    a = shared.submit_as(alice, "true")
    b = shared.submit_as(bob, "true")
    listing = shared.ts_as(bob, "-l")
    assert listing.splitlines()[0].split()[:2] == ["ID", "User"]
    rows = {line.split()[0]: line.split()[1] for line in listing.splitlines()[1:]}
    assert rows == {str(a): alice.name, str(b): bob.name}
    mine = shared.ts_as(bob, "-l", "--mine", "--ids")
    assert mine.split() == [str(b)]
    theirs = shared.ts_as(bob, "-l", "--user", alice.name, "--ids")
    assert theirs.split() == [str(a)]
    assert shared.job(a)["user"] == alice.name  # -M json names the owner too
    # Completion offers the users with jobs for --user.
    done = shared.run_as(
        bob, env={"_TS_COMPLETE": "bash_complete", "COMP_WORDS": "ts -l --user ", "COMP_CWORD": "3"}
    )
    assert sorted(done.stdout.split()) == sorted(f"plain,{u.name}" for u in (alice, bob)), done.stderr


def test_max_running_per_user_makes_a_users_second_job_wait_while_anothers_runs(
    shared: Shared, alice: User, bob: User
) -> None:
    shared.restart("[limits]\nmax_running_per_user = 1\n")
    shared.root_ts("-S", "4")
    first = shared.submit_as(alice, "sleep", "60")
    second = shared.submit_as(alice, "true")
    theirs = shared.submit_as(bob, "sleep", "60")
    shared.wait_state(first, "running")
    shared.wait_state(theirs, "running")
    waiting = shared.job(second)
    assert waiting["state"] == "queued"
    assert waiting["reason"] == f"{alice.name} already runs 1 job(s) (max_running_per_user = 1)"
    users = shared.ts_as(bob, "--users").splitlines()
    assert users[0].split() == ["User", "Running", "Queued", "GPUs", "GPU-hours", "today"]
    rows = {line.split()[0]: line.split()[1:4] for line in users[1:]}
    assert rows == {alice.name: ["1", "1", "0"], bob.name: ["1", "0", "0"]}
    shared.ts_as(alice, "-k", str(first))
    shared.wait_state(second, "finished")


def test_a_restarted_daemon_keeps_every_users_jobs_and_owners(shared: Shared, alice: User, bob: User) -> None:
    job = shared.submit_as(alice, "sleep", "60")
    held = shared.submit_as(bob, "sh", "-c", "id -un", opts=("--hold",))
    pid = shared.wait_state(job, "running")["pid"]
    shared.kill_daemon()
    # Its socket, left behind, is never taken over by a personal daemon (not even root's).
    down = shared.run_root("-l")
    assert (down.returncode, down.stderr.strip()) == (
        1,
        f"ts: the shared daemon on {shared.socket} is not running",
    )
    shared.start()
    adopted = shared.job(job)
    assert (adopted["state"], adopted["pid"]) == ("running", pid)
    refused = shared.run_as(bob, "-k", str(job))
    assert refused.returncode != 0 and alice.name in refused.stderr
    shared.ts_as(alice, "-k", str(job))
    shared.wait_state(job, "finished")
    shared.ts_as(bob, "--release", str(held))
    shared.wait_state(held, "finished")
    assert shared.ts_as(bob, "-c", str(held)).strip() == bob.name


def test_a_member_of_the_admin_group_may_act_on_every_job(shared: Shared, alice: User, bob: User) -> None:
    group = f"tsmuadm{os.getpid() % 100000}"
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    try:
        subprocess.run(["usermod", "-aG", group, bob.name], check=True, capture_output=True)
        shared.restart(f'admin_group = "{group}"\n')
        job = shared.submit_as(alice, "sleep", "60")
        shared.wait_state(job, "running")
        shared.ts_as(bob, "-k", str(job))
        shared.wait_state(job, "finished")
        shared.ts_as(bob, "-S", "3")
        assert shared.root_ts("-S").strip() == "3"
        shared.ts_as(bob, "-K")  # an admin stops the daemon too
        assert shared.daemon is not None and shared.daemon.wait(timeout=30) == 0
    finally:
        subprocess.run(["gpasswd", "-d", bob.name, group], capture_output=True, check=False)
        subprocess.run(["groupdel", group], capture_output=True, check=False)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('admin_group = "no-such-group-here"\n', "admin_group 'no-such-group-here': no such group"),
        ("[limits]\nmax_running_per_user = 0\n", ":2: limits.max_running_per_user must be a whole number"),
        ("[limits]\nmax_runing_per_user = 1\n", ":2: unknown [limits] key 'max_runing_per_user'"),
        ("[limits\n", "config.toml: "),
    ],
)
def test_a_multi_user_daemon_refuses_to_start_with_a_bad_config(
    shared: Shared, alice: User, config: str, message: str
) -> None:
    shared.root_ts("-K")
    path = shared.root / "config.toml"
    path.write_text(config)
    done = subprocess.run(
        [*TS, "--daemon", "--multi-user", "--socket", str(shared.socket)],
        env={**shared.env, "TS_CONFIG": str(path)}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("ts: bad-config: ") and message in line, line


def test_multi_user_needs_root(shared: Shared, alice: User) -> None:
    done = shared.run_as(alice, "--daemon", "--multi-user", "--socket", str(alice.home / "sock"))
    assert done.returncode == 2
    assert (
        done.stderr.strip() == "ts: --multi-user: run the daemon as root (it runs each job as its submitter)"
    )


def test_a_snapshot_is_the_users_own_copy(shared: Shared, alice: User) -> None:
    work = alice.home / "work"
    subprocess.run(["setpriv", f"--reuid={alice.uid}", f"--regid={alice.gid}", "--init-groups",
                    "sh", "-c", f"mkdir {work} && echo v1 > {work}/data.txt"], check=True)  # fmt: skip
    job = shared.submit_as(alice, "--snapshot", "cat", "data.txt", cwd=work)
    shared.wait_state(job, "finished")
    assert shared.ts_as(alice, "-c", str(job)).strip() == "v1"
    copy = Path(shared.job(job)["snapshot"])
    assert copy.parent == shared.logdir / alice.name / "snapshots"
    assert os.stat(copy).st_uid == alice.uid and os.stat(copy / "data.txt").st_uid == alice.uid


def test_fair_share_starts_the_other_users_job_before_a_sweeps_second(
    shared: Shared, alice: User, bob: User
) -> None:
    shared.root_ts("-S", "0")  # drained: everything queues first
    sweep = [shared.submit_as(alice, "sleep", "60") for _ in range(3)]
    single = shared.submit_as(bob, "sleep", "60")
    shared.root_ts("-S", "2")
    shared.wait_state(sweep[0], "running")
    shared.wait_state(single, "running")
    assert [shared.job(j)["state"] for j in sweep[1:]] == ["queued", "queued"]


def test_max_gpus_per_user_with_gpus_run_as_each_user(shared: Shared, alice: User, bob: User) -> None:
    gpus = shared.root / "gpus.json"
    gpus.write_text(
        json.dumps(
            [{"total_mib": 24000, "used_mib": 0, "name": "Fake", "uuid": f"GPU-{i}"} for i in range(4)]
        )
    )
    shared.env.update(TS_FAKE_GPUS=str(gpus), TS_GPU_POLL="0.1")
    shared.restart("[limits]\nmax_gpus_per_user = 2\n")
    shared.root_ts("-S", "4")
    pair = shared.submit_as(alice, "sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"; sleep 60', opts=("-G", "2"))
    more = shared.submit_as(alice, "true", opts=("-G", "1"))
    theirs = shared.submit_as(bob, "sh", "-c", 'id -un; echo "$CUDA_VISIBLE_DEVICES"', opts=("-G", "1"))
    held = shared.wait_state(pair, "running")["gpus"]
    assert len(held) == 2
    shared.wait_state(theirs, "finished")
    name, visible = shared.ts_as(bob, "-c", str(theirs)).split()
    assert name == bob.name and int(visible) not in held
    waiting = shared.job(more)
    assert waiting["state"] in ("queued", "allocating")
    assert waiting["reason"] == f"{alice.name} holds 2 GPU(s) and this job needs 1 (max_gpus_per_user = 2)"
    shared.ts_as(alice, "-k", str(pair))
    shared.wait_state(more, "finished")


def test_max_queued_per_user_refuses_a_submission_that_would_pass_it(
    shared: Shared, alice: User, bob: User
) -> None:
    shared.restart("[limits]\nmax_queued_per_user = 2\n")
    for _ in range(2):
        shared.submit_as(alice, "true", opts=("--hold",))
    refused = shared.run_as(alice, "--hold", "true")
    assert refused.returncode != 0
    assert refused.stderr.strip() == (
        f"ts: {alice.name} has 2 job(s) queued: 1 more would pass max_queued_per_user = 2"
    )
    shared.submit_as(bob, "true", opts=("--hold",))  # another user's queue is their own
    assert len(shared.jobs()) == 3


def test_the_limit_reason_goes_once_the_job_is_no_longer_over_it(
    shared: Shared, alice: User, bob: User
) -> None:
    shared.restart("[limits]\nmax_running_per_user = 1\n")
    shared.root_ts("-S", "2")
    first = shared.submit_as(alice, "sleep", "60")
    theirs = shared.submit_as(bob, "sleep", "60")
    second = shared.submit_as(alice, "true")
    shared.wait_state(theirs, "running")
    wait_for(lambda: "max_running_per_user" in (shared.job(second)["reason"] or ""), what="the limit reason")
    shared.root_ts("-S", "1")
    shared.ts_as(alice, "-k", str(first))
    shared.wait_state(first, "finished")
    # Now it waits for a slot only (bob's job holds the one left): the limit is no longer why.
    wait_for(lambda: shared.job(second)["reason"] is None, what="the reason to go")
    assert shared.job(second)["state"] == "queued"
