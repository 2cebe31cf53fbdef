"""The threat model of a multi-user daemon (README, "Shared server"), one test per line of it:
what another local user may try, through ``ts`` and through raw requests, and what stops it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import alive, wait_for
from multi_user import GARBAGE_CLIENT, Shared, User, Users, send_as

from spooler import protocol
from spooler.daemon.access import RULES
from spooler.daemon.handlers import HANDLERS


def refused(done: subprocess.CompletedProcess[str], owner: str = "") -> None:
    """One line, a non-zero exit, no traceback, naming the owner when one is given."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "permission denied" in lines[0], done.stderr
    assert owner in lines[0], lines[0]


def test_every_request_type_has_an_access_rule() -> None:
    # A new request type must be placed in the table: one missing would be admin-only.
    assert set(RULES) == set(HANDLERS)


def test_another_user_cannot_act_on_or_read_a_job(shared: Shared, alice: User, bob: User) -> None:
    job = shared.submit_as(alice, "sh", "-c", "echo the-secret-output; sleep 60")
    waiting = shared.submit_as(alice, "true", opts=("--hold",))
    running = shared.wait_state(job, "running")
    log = Path(running["output"])
    wait_for(lambda: "the-secret-output" in log.read_text(), what="the job's output")
    for args in (
        ("-k", str(job)),
        ("--pause", str(job)),
        ("-t", str(job)),
        ("-c", str(job)),
        ("-o", str(job)),
        ("-p", str(job)),
        ("-w", str(job)),
        ("-r", str(waiting)),
        ("-u", str(waiting)),
        ("-U", f"{waiting}-{job}"),
        ("--priority", "5", str(waiting)),
        ("--release", str(waiting)),
        ("--edit", str(waiting), "--label", "mine-now"),
    ):
        refused(shared.run_as(bob, *args), alice.name)
    # Actions on many jobs only ever reach the caller's own.
    shared.ts_as(bob, "-T")
    shared.ts_as(bob, "-k", "--state", "running")
    shared.ts_as(bob, "--release", "--state", "held")
    assert shared.job(job)["state"] == "running" and shared.job(job)["pid"] == running["pid"]
    assert alive(running["pid"])
    assert shared.job(waiting)["state"] == "held" and shared.job(waiting)["label"] is None
    # ts -i: the command line, but no arguments, environment or log.
    info = shared.ts_as(bob, "-i", str(job))
    assert "sleep 60" in info and "secret-of" not in info and str(shared.logdir) not in info
    # -M json: nothing of what may hold secrets.
    listed = next(j for j in json.loads(shared.ts_as(bob, "-M", "json")) if j["id"] == job)
    assert listed["output"] is None and listed["args"] is None
    # The log file itself: the user's own, in a directory only they may enter.
    done = shared.run_as(bob, python=["-c", f"open({str(log)!r}).read()"])
    assert done.returncode != 0 and "PermissionError" in done.stderr
    # And requeue of an ended job of someone else's.
    shared.ts_as(alice, "-k", str(job))
    shared.wait_state(job, "finished")
    refused(shared.run_as(bob, "--requeue", str(job)), alice.name)
    assert shared.job(job)["state"] == "finished"


def test_a_forged_uid_or_user_field_is_ignored(shared: Shared, alice: User, bob: User) -> None:
    """B cannot make a job run as A or as root by any request field: the owner is the socket's."""
    base = {"command": ["sh", "-c", "id -u; id -un"], "cwd": str(bob.home), "env": {"PATH": "/usr/bin:/bin"}}
    replies = send_as(
        shared,
        bob,
        protocol.request("submit", **base, uid=0, gid=0, user="root"),
        protocol.request("submit", **base, uid=alice.uid, user=alice.name, owner=alice.uid),
    )
    ids = [reply["id"] for reply in replies]
    for job in ids:
        shared.wait_state(job, "finished")
        assert shared.job(job)["exit_code"] == 0
        assert shared.ts_as(bob, "-c", str(job)).split() == [str(bob.uid), bob.name]
    listing = shared.ts_as(alice, "-l", "--user", bob.name, "--ids").split()
    assert listing == [str(i) for i in ids]


def test_a_job_whose_user_cannot_enter_its_directory_fails_with_that_reason(
    shared: Shared, bob: User
) -> None:
    [reply] = send_as(
        shared, bob, protocol.request("submit", command=["true"], cwd="/root", env={"PATH": "/usr/bin:/bin"})
    )
    job = shared.wait_state(reply["id"], "finished")
    assert job["exit_code"] == 127
    info = shared.ts_as(bob, "-i", str(reply["id"]))
    assert f"{bob.name} cannot enter /root: Permission denied" in info, info


def test_a_job_whose_user_no_longer_exists_fails_with_that_reason(
    shared: Shared, users: Users, alice: User
) -> None:
    gone = users.add("c")
    job = shared.submit_as(gone, "true", opts=("--hold",))
    users.remove(gone.name)
    shared.root_ts("--release", str(job))
    shared.wait_state(job, "finished")
    assert f"uid {gone.uid}) no longer exists" in shared.root_ts("-i", str(job))


def test_server_settings_are_for_admins_only(shared: Shared, alice: User, bob: User) -> None:
    for args in (
        ("-S", "4"),
        ("--setenv", "X=1"),
        ("--unsetenv", "PATH"),
        ("--getenv", "PATH"),
        ("--set_logdir", "/tmp"),
        ("--set_gpu_free_perc", "50"),
        ("-K",),
        ("--reset",),
    ):
        refused(shared.run_as(bob, *args))
    assert shared.ts_as(bob, "-S").strip() == "1"
    assert shared.root_ts("--get_logdir").strip() == str(shared.logdir)
    # -C clears the caller's own ended jobs only; root's clears everyone's.
    a = shared.submit_as(alice, "true")
    b = shared.submit_as(bob, "true")
    for job in (a, b):
        shared.wait_state(job, "finished")
    shared.ts_as(bob, "-C")
    assert [j["id"] for j in shared.jobs()] == [a]
    shared.root_ts("-S", "2")
    assert shared.ts_as(alice, "-S").strip() == "2"


def test_malformed_frames_from_a_user_leave_every_job_intact(shared: Shared, alice: User, bob: User) -> None:
    job = shared.submit_as(alice, "sleep", "60")
    queued = shared.submit_as(alice, "true", opts=("--hold",))
    pid = shared.wait_state(job, "running")["pid"]
    done = shared.run_as(bob, python=["-c", GARBAGE_CLIENT, str(shared.socket), "1000"])
    assert done.returncode == 0 and "sent 1000" in done.stdout, done.stderr
    assert shared.daemon is not None and shared.daemon.poll() is None
    assert shared.job(job)["state"] == "running" and alive(pid)
    assert shared.job(queued)["state"] == "held"
    assert os.path.exists(shared.socket)


def test_a_users_hooks_never_run_as_root(shared: Shared, bob: User) -> None:
    """TS_ONFINISH runs as the daemon: only for root's own jobs; -m is refused to users."""
    trace = shared.root / "hook-trace"
    trace.touch()
    os.chmod(trace, 0o666)
    hook = shared.root / "hook.sh"
    hook.write_text(f"#!/bin/sh\nid -u >> {trace}\n")
    hook.chmod(0o755)
    mailed = shared.run_as(bob, "-m", "true")
    assert mailed.returncode != 0 and "-m is not available on a shared daemon" in mailed.stderr
    theirs = int(shared.ts_as(bob, "true", env={"TS_ONFINISH": str(hook)}))
    shared.wait_state(theirs, "finished")
    ours = shared.root_ts("true", env={"TS_ONFINISH": str(hook)})
    shared.wait_state(int(ours), "finished")
    # Root's hook ran after the user's job ended: had the user's run, its line would be first.
    wait_for(lambda: trace.read_text(), what="root's hook")
    assert trace.read_text().split() == ["0"]


def test_a_filter_is_no_oracle_on_anothers_arguments(shared: Shared, alice: User, bob: User) -> None:
    job = shared.submit_as(alice, "true", opts=("--args", '{"secret": "s3"}', "--allow-extra"))
    where = ("-l", "--where", 'args.secret == "s3"', "--ids")
    assert shared.ts_as(alice, *where).split() == [str(job)]
    assert shared.ts_as(bob, *where).split() == []
    assert shared.ts_as(bob, "results", "--format", "json").strip() in ("[]", "")


def test_a_result_file_is_read_only_if_it_is_the_users_own(shared: Shared, alice: User) -> None:
    secret = shared.root / "root-only.json"
    secret.write_text('{"secret": 1}')
    secret.chmod(0o600)
    good = shared.submit_as(alice, "sh", "-c", 'echo \'{"loss": 0.5}\' > "$TS_RESULT_FILE"')
    linked = shared.submit_as(alice, "sh", "-c", f'ln -s {secret} "$TS_RESULT_FILE"')
    for job in (good, linked):
        shared.wait_state(job, "finished")
    assert shared.job(good)["result"] == {"loss": 0.5}
    assert shared.job(linked)["result"] is None
    assert secret.read_text() == '{"secret": 1}'
