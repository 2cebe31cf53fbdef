"""Options of the original ts beyond the core: queue control, dependencies, output, hooks, lists."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import TS, Spool, have, wait_for

from spooler import protocol
from spooler.client import Client


def hold(spool: Spool, name: str = "gate") -> tuple[int, Path]:
    """Queue a job that holds the only slot until the returned file is created."""
    path = spool.root / name
    job = spool.submit("sh", "-c", f"until [ -e {path} ]; do sleep 0.02; done")
    spool.wait_state(job, "running")
    return job, path


def queued_order(spool: Spool) -> list[int]:
    return [j["id"] for j in spool.jobs() if j["state"] == "queued"]


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_urgent_moves_any_queued_job_first(spool: Spool, position: int) -> None:
    _, gate = hold(spool)
    ids = [spool.submit("true") for _ in range(4)]
    spool.ts("-u", str(ids[position]))
    assert queued_order(spool) == [ids[position]] + [i for i in ids if i != ids[position]]
    gate.touch()


def test_urgent_without_id_takes_the_last_added(spool: Spool) -> None:
    _, gate = hold(spool)
    ids = [spool.submit("true") for _ in range(3)]
    spool.ts("-u")
    assert queued_order(spool) == [ids[2], ids[0], ids[1]]
    gate.touch()


@pytest.mark.parametrize(("a", "b"), [(0, 1), (0, 3), (1, 2), (3, 0), (2, 2)])
def test_swap_any_two_queued_jobs(spool: Spool, a: int, b: int) -> None:
    _, gate = hold(spool)
    ids = [spool.submit("true") for _ in range(4)]
    spool.ts("-U", f"{ids[a]}-{ids[b]}")
    expected = list(ids)
    expected[a], expected[b] = expected[b], expected[a]
    assert queued_order(spool) == expected
    gate.touch()


def test_urgent_and_swap_refuse_a_running_job(spool: Spool) -> None:
    running, gate = hold(spool)
    queued = spool.submit("true")
    for args in (("-u", str(running)), ("-U", f"{running}-{queued}")):
        done = spool.run(*args)
        assert done.returncode != 0 and "not queued" in done.stderr
    gate.touch()


def test_after_last_and_after_any_result(spool: Spool) -> None:
    spool.ts("-S", "4")
    fail = spool.submit("sh", "-c", "sleep 0.3; exit 1")
    after_d = spool.submit("true", opts=("-d",))
    after_D = spool.submit("true", opts=("-D", str(fail)))
    assert spool.run("-w", str(after_D)).returncode == 0
    jobs = {j["id"]: j for j in spool.jobs()}
    assert jobs[after_d]["depends_on"] == [fail]
    for dependent in (after_d, after_D):
        assert jobs[dependent]["start_time"] >= jobs[fail]["end_time"]


def test_after_success_chain_runs_and_skip_propagates(spool: Spool) -> None:
    spool.ts("-S", "4")
    ok = spool.submit("true")
    runs = spool.submit("true", opts=("-W", str(ok)))
    bad = spool.submit("false")
    skipped = spool.submit("true", opts=("-W", f"{ok},{bad}"))
    skipped_too = spool.submit("true", opts=("-W", str(skipped)))
    any_result = spool.submit("true", opts=("-D", str(skipped)))
    assert spool.run("-w", str(runs)).returncode == 0
    assert spool.run("-w", str(skipped_too)).returncode == 255
    assert spool.run("-w", str(any_result)).returncode == 0
    jobs = {j["id"]: j for j in spool.jobs()}
    assert jobs[skipped]["state"] == "skipped" and str(bad) in jobs[skipped]["reason"]
    assert jobs[skipped_too]["state"] == "skipped"


def test_removed_dependency_counts_as_failed(spool: Spool) -> None:
    _, gate = hold(spool)
    dep = spool.submit("true")
    strict = spool.submit("true", opts=("-W", str(dep)))
    lenient = spool.submit("true", opts=("-D", str(dep)))
    spool.ts("-r", str(dep))
    gate.touch()
    assert spool.run("-w", str(strict)).returncode == 255
    assert spool.job(strict)["state"] == "skipped"
    assert spool.run("-w", str(lenient)).returncode == 0


def test_dependency_on_a_missing_job_is_an_error_at_enqueue(spool: Spool) -> None:
    for flag in ("-D", "-W"):
        done = spool.run(flag, "42", "true")
        assert done.returncode != 0 and "42" in done.stderr
    assert spool.jobs() == []


def test_remove_wakes_a_waiter_on_the_head_of_the_queue(spool: Spool) -> None:
    _, gate = hold(spool)
    head = spool.submit("true")
    with Client(str(spool.socket), autostart=False) as waiter:
        waiter.send(protocol.request("wait", id=head))
        spool.ts("-l")  # a later connection served: the wait above has been registered
        spool.ts("-r", str(head))
        reply = waiter.receive()
    assert reply["removed"] and reply["exit_status"] == 255
    gate.touch()


def test_queue_limit_blocks_or_exits_2_with_B(spool: Spool) -> None:
    env = {"TS_MAXCONN": "2"}
    spool.ts("-l", env=env)  # the daemon reads TS_MAXCONN when it starts
    _, gate = hold(spool)
    spool.submit("true")
    spool.submit("true")
    full = spool.run("-B", "true")
    assert full.returncode == 2 and "full" in full.stderr
    waiting = subprocess.Popen([*TS, "echo", "later"], env=spool.env, stdout=subprocess.PIPE, text=True)
    wait_for(lambda: waiting.poll() is None, what="the blocked submitter")
    gate.touch()
    out, _ = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and out.strip().isdigit()
    assert spool.run("-w", out.strip()).returncode == 0


def test_kill_all_running_count_last_id_and_full_command(spool: Spool) -> None:
    spool.ts("-S", "2")
    a, gate = hold(spool)
    b, _ = hold(spool)
    assert spool.ts("-R").strip() == "2"
    assert spool.ts("-q").strip() == str(b)
    assert spool.ts("-F", str(a)).strip() == f"sh -c 'until [ -e {gate} ]; do sleep 0.02; done'"
    spool.ts("-T")
    assert spool.run("-w", str(a)).returncode == 255
    assert spool.run("-w", str(b)).returncode == 255
    assert spool.ts("-R").strip() == "0"


def test_stderr_apart_and_named_log(spool: Spool) -> None:
    job = spool.submit("sh", "-c", "echo out; echo err >&2", opts=("-E", "-O", "mylog.txt"))
    spool.run("-w", str(job))
    log = spool.logdir / "mylog.txt"
    assert spool.job(job)["output"] == str(log)
    assert log.read_text() == "out\n"
    assert Path(f"{log}.e").read_text() == "err\n"


def test_gzip_output_is_valid_and_shown_decompressed(spool: Spool) -> None:
    job = spool.submit("sh", "-c", "seq 1 2000; echo done >&2", opts=("-z",))
    assert spool.run("-w", str(job)).returncode == 0
    path = spool.job(job)["output"]
    expected = "".join(f"{i}\n" for i in range(1, 2001)) + "done\n"
    assert gzip.decompress(Path(path).read_bytes()).decode() == expected
    if have("zcat"):
        assert subprocess.run(["zcat", path], capture_output=True, text=True).stdout == expected
    assert spool.run("-c", str(job)).stdout == expected
    assert spool.run("-t", str(job)).stdout.split()[-2:] == ["2000", "done"]


def test_a_gzipped_job_after_a_plain_one_runs(spool: Spool) -> None:
    """The launcher keeps the jobs' stdin open once a plain job has run; a -z job's shim closes
    what it inherits, so it must not use that descriptor after."""
    plain = spool.submit("true")
    assert spool.run("-w", str(plain)).returncode == 0
    gzipped = spool.submit("echo", "after", opts=("-z",))
    assert spool.run("-w", str(gzipped)).returncode == 0
    assert spool.run("-c", str(gzipped)).stdout == "after\n"


def test_logdir_get_and_set(spool: Spool, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert spool.ts("--get_logdir").strip() == str(spool.logdir)
    spool.ts("--set_logdir", str(other))
    job = spool.submit("true")
    spool.run("-w", str(job))
    assert Path(spool.job(job)["output"]).parent == other
    other.chmod(0o500)
    try:
        if os.geteuid() != 0:
            assert spool.run("--set_logdir", str(other)).returncode != 0
    finally:
        other.chmod(0o700)


def test_mail_without_sendmail_is_a_clear_error(spool: Spool, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    (empty / "sh").symlink_to("/bin/sh")
    done = spool.run("-m", "true", env={"PATH": str(empty)})
    if have("sendmail") or Path("/usr/sbin/sendmail").exists():
        pytest.skip("a sendmail is installed here")
    assert done.returncode != 0 and "sendmail" in done.stderr
    assert spool.jobs() == []


def test_mail_goes_through_sendmail(spool: Spool, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    mailbox = tmp_path / "mailbox"
    fake = bindir / "sendmail"
    fake.write_text(f'#!/bin/sh\necho "$@" > {mailbox}.args\ncat > {mailbox}\n')
    fake.chmod(0o755)
    path = f"{bindir}:{os.environ['PATH']}"
    job = spool.submit("echo", "the-output", opts=("-m",), env={"PATH": path, "TS_MAILTO": "me@example.org"})
    spool.run("-w", str(job))
    wait_for(lambda: mailbox.exists() and "the-output" in mailbox.read_text(), what="the mail")
    assert "me@example.org" in Path(f"{mailbox}.args").read_text()
    assert "Subject: ts job" in mailbox.read_text()


def test_onfinish_hook_gets_id_status_output_and_command(spool: Spool, tmp_path: Path) -> None:
    record = tmp_path / "hook.txt"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\nprintf "%s|" "$@" > {record}.tmp && mv {record}.tmp {record}\n')
    hook.chmod(0o755)
    job = spool.submit("sh", "-c", "exit 3", env={"TS_ONFINISH": str(hook)})
    spool.run("-w", str(job))
    wait_for(record.exists, what="the hook")
    fields = record.read_text().split("|")
    assert fields[:4] == [str(job), "3", spool.job(job)["output"], "sh -c 'exit 3'"]


def test_a_hanging_or_failing_hook_does_not_stall_the_queue(spool: Spool, tmp_path: Path) -> None:
    hook = tmp_path / "hang.sh"
    hook.write_text("#!/bin/sh\nsleep 300\n")
    hook.chmod(0o755)
    first = spool.submit("true", env={"TS_ONFINISH": str(hook)})
    second = spool.submit("false", env={"TS_ONFINISH": "false"})
    third = spool.submit("true")
    assert spool.run("-w", str(third)).returncode == 0
    assert spool.job(first)["exit_code"] == 0 and spool.job(second)["exit_code"] == 1


def test_missing_onfinish_program_is_refused_at_enqueue(spool: Spool) -> None:
    done = spool.run("true", env={"TS_ONFINISH": "/no/such/hook"})
    assert done.returncode != 0 and "TS_ONFINISH" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_ts_env_output_is_shown_by_info(spool: Spool) -> None:
    job = spool.submit("true", env={"TS_ENV": "echo gpu-driver-535"})
    assert "gpu-driver-535" in spool.ts("-i", str(job))


@pytest.mark.parametrize("keep", ["0", "2"])
def test_max_finished(spool: Spool, keep: str) -> None:
    spool.ts("-l", env={"TS_MAXFINISHED": keep})
    ids = [spool.submit("true") for _ in range(3)]
    assert spool.run("-f", "true").returncode == 0
    ids.append(ids[-1] + 1)
    wait_for(lambda: len(spool.jobs()) == int(keep), what=f"{keep} finished jobs kept")
    assert [j["id"] for j in spool.jobs()] == ids[len(ids) - int(keep) :]


def test_daemon_environment(spool: Spool) -> None:
    spool.ts("--setenv", "EXTRA=x=1")
    assert spool.ts("--getenv", "EXTRA").strip() == "x=1"
    job = spool.submit("sh", "-c", "echo ${EXTRA:-unset} ${HOME:-nohome}", env={"HOME": "/home/me"})
    spool.run("-w", str(job))
    assert Path(spool.job(job)["output"]).read_text() == "x=1 /home/me\n"
    spool.ts("--unsetenv", "HOME")
    job = spool.submit("sh", "-c", "echo ${HOME:-nohome}", env={"HOME": "/home/me"})
    spool.run("-w", str(job))
    assert Path(spool.job(job)["output"]).read_text() == "nohome\n"
    missing = spool.run("--getenv", "NOT_SET_ANYWHERE_X")
    assert missing.returncode != 0


def test_machine_readable_lists(spool: Spool) -> None:
    dep = spool.submit("true", opts=("-L", "base"))
    job = spool.submit("sh", "-c", "exit 2", opts=("-W", str(dep), "-N", "1"))
    spool.run("-w", str(job))
    data = json.loads(spool.ts("-M", "json"))
    record = next(j for j in data if j["id"] == job)
    for key in (
        "id",
        "state",
        "output",
        "exit_code",
        "enqueue_time",
        "start_time",
        "end_time",
        "label",
        "depends_on",
        "depends_on_success",
        "slots",
        "gpus",
        "command",
    ):
        assert key in record
    assert record["depends_on_success"] == [dep] and record["exit_code"] == 2
    tab = spool.ts("-M", "tab").splitlines()
    header = tab[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in tab[1:]]
    assert {r["id"] for r in rows} == {str(dep), str(job)}
    assert next(r for r in rows if r["id"] == str(dep))["label"] == "base"
    bad = spool.run("-M", "xml")
    assert bad.returncode != 0 and "xml" in bad.stderr


def test_a_running_hook_does_not_keep_the_daemon_lock(spool: Spool, tmp_path: Path) -> None:
    hook = tmp_path / "hang.sh"
    started = tmp_path / "hook-started"
    hook.write_text(f"#!/bin/sh\ntouch {started}\nsleep 300\n")
    hook.chmod(0o755)
    done = spool.run("-f", "true", env={"TS_ONFINISH": str(hook)})
    assert done.returncode == 0, done.stderr
    wait_for(started.exists, what="the hook to start")
    assert spool.run("-K", timeout=10).returncode == 0  # returns once the lock is free
    assert spool.run("-l").returncode == 0  # and a new daemon can take it
