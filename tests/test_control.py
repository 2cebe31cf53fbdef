"""Control over the queue and each job's life through the real ``ts`` and the Python API: hold
and release, pause and resume, start later, named queues, waiting for all, editing, requeueing
with dependants and notifications (to a webhook on 127.0.0.1)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TS, Spool, wait_for

from spooler import Client
from spooler.errors import UsageError


def _gate(spool: Spool) -> int:
    """A job that holds the one slot until the test touches ``gate``."""
    gate = spool.root / "gate"
    return spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done")


def test_hold_and_release_through_ts(spool: Spool) -> None:
    gate = _gate(spool)
    held = spool.submit("echo", "held", opts=("--hold",))
    queued = spool.submit("echo", "queued")
    assert spool.ts("-s", str(held)).strip() == "held"
    assert spool.ts("--hold", str(queued)) == ""  # silent, as -r ID and -k ID
    listing = spool.ts("-l").splitlines()
    assert [line.split()[1] for line in listing[1:]] == ["running", "held", "held"]
    assert spool.ts("-l", "--state", "held", "--ids").split() == [str(held), str(queued)]
    spool.ts("--release", str(held))
    (spool.root / "gate").touch()
    assert spool.run("-w", str(held)).returncode == 0
    assert spool.job(queued)["state"] == "held"
    assert spool.ts("--release", "--state", "held").split() == [str(queued)]
    assert spool.run("-w", str(queued)).returncode == 0
    assert spool.job(gate)["state"] == "finished"


def test_hold_with_filters_and_the_last_added_job(spool: Spool) -> None:
    _gate(spool)
    a = spool.submit("true", opts=("-L", "sweep-a"))
    b = spool.submit("true", opts=("-L", "sweep-b"))
    done = spool.run("--hold", "--label", "sweep-a")
    assert done.returncode == 0 and done.stdout.split() == [str(a)]
    spool.ts("--hold")  # no id: the last added job
    assert spool.job(b)["state"] == "held"
    (spool.root / "gate").touch()


def test_holding_a_command_that_is_a_number_needs_the_double_dash(spool: Spool) -> None:
    held = spool.submit("--hold", "--", "5")
    assert spool.job(held)["state"] == "held" and spool.job(held)["command"] == "5"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--hold", "0"), "job 0 is not queued (it is running)"),
        (("--release", "0"), "job 0 is not held (it is running)"),
        (("--hold", "99"), "job 99 does not exist"),
        (("--release", "x"), "--release: 'x' is not a job id"),
    ],
)
def test_bad_hold_and_release(spool: Spool, args: tuple[str, ...], message: str) -> None:
    _gate(spool)
    done = spool.run(*args)
    assert done.returncode != 0
    assert done.stderr.strip() == f"ts: {message}"
    assert spool.job(0)["state"] == "running"
    (spool.root / "gate").touch()


def test_hold_and_release_from_python(api: Client, spool: Spool) -> None:
    with api:
        job = api.submit("true", hold=True, label="p")
        assert api.job(job)["state"] == "held"
        assert api.release(job) == [job]
        assert api.wait(job) == 0
        gate = api.submit(["sh", "-c", f"until [ -e {spool.root / 'gate'} ]; do sleep 0.02; done"])
        later = api.submit("true", label="p")
        assert api.hold(label="p") == [later]
        assert api.job(later)["state"] == "held"
        (spool.root / "gate").touch()
        assert api.wait(gate) == 0


# -- pause and resume --------------------------------------------------------------------------


def _process_state(pid: int) -> str:
    """The kernel's one-letter state of a process: T when stopped."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_pause_and_resume_through_ts(spool: Spool) -> None:
    spool.ts("-S", "2")
    job = spool.submit("sh", "-c", "sleep 30 & wait")
    spool.wait_state(job, "running")
    pid = int(spool.ts("-p", str(job)))
    spool.ts("--pause", str(job))
    assert spool.job(job)["state"] == "paused"
    wait_for(lambda: _process_state(pid) == "T", what="the job to stop")
    assert "Paused since:" in spool.ts("-i", str(job))
    assert spool.ts("-l", "--state", "paused", "--ids").split() == [str(job)]
    spool.ts("--resume", str(job))
    assert spool.job(job)["state"] == "running"
    wait_for(lambda: _process_state(pid) != "T", what="the job to continue")
    spool.ts("--pause")  # no id: the last run job
    spool.ts("-k", str(job))  # ends a paused job: SIGCONT follows the SIGTERM
    assert spool.run("-w", str(job)).returncode == 255
    assert spool.job(job)["signal"] == "SIGTERM"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--pause", "1"), "job 1 is not running (it is queued)"),
        (("--resume", "0"), "job 0 is not paused (it is running)"),
        (("--pause", "7"), "job 7 does not exist"),
    ],
)
def test_bad_pause_and_resume(spool: Spool, args: tuple[str, ...], message: str) -> None:
    gate = _gate(spool)
    spool.submit("true")
    spool.wait_state(gate, "running")
    done = spool.run(*args)
    assert done.returncode != 0 and done.stderr.strip() == f"ts: {message}"
    assert spool.job(0)["state"] == "running"
    (spool.root / "gate").touch()


def test_pause_and_resume_from_python(api: Client, spool: Spool) -> None:
    with api:
        job = api.submit(["sh", "-c", "sleep 30 & wait"], label="p")
        wait_for(lambda: api.job(job)["pid"], what="the job to start")
        assert api.pause(label="p") == [job]
        assert api.job(job)["state"] == "paused"
        assert api.resume(job) == [job]
        assert api.kill(job) == [job]
        assert api.wait(job) == 255


# -- start later (--begin) ---------------------------------------------------------------------


def test_begin_later_through_ts(spool: Spool) -> None:
    job = spool.submit("true", opts=("--begin", "+1s"))
    info = spool.ts("-i", str(job))
    record = spool.job(job)
    # (It may have begun already on a slow machine; if not, it says when it will.)
    if record["state"] == "queued":
        assert "Reason: begins at " in info
    assert spool.run("-w", str(job)).returncode == 0
    assert spool.job(job)["start_time"] >= record["begin_at"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("25:61", "'25:61' is not a time of day"),
        ("yesterday", "'yesterday' is not a time"),
        ("2001-01-01T00:00", "'2001-01-01T00:00' is in the past"),
    ],
)
def test_bad_begin_times_through_ts(spool: Spool, value: str, message: str) -> None:
    done = spool.run("--begin", value, "true")
    assert done.returncode != 0 and done.stderr.startswith(f"ts: --begin: {message}")
    assert len(done.stderr.splitlines()) == 1
    assert spool.jobs() == []


def test_begin_from_python(api: Client, spool: Spool) -> None:
    with api:
        job = api.submit("true", begin="+1h")
        assert api.job(job)["reason"].startswith("begins at ")
        with pytest.raises(UsageError, match="is in the past"):
            api.submit("true", begin="2001-01-01T00:00")


# -- named queues ------------------------------------------------------------------------------


def test_named_queues_through_ts(spool: Spool) -> None:
    gate = _gate(spool)  # the default queue's one slot is taken
    waiting = spool.submit("true")
    cpu = spool.submit("true", opts=("--queue", "cpu"))
    assert spool.run("-w", str(cpu)).returncode == 0  # ran while the default queue was full
    assert spool.ts("--queue", "cpu", "-S").strip() == "1"
    spool.ts("--queue", "cpu", "-S", "3")
    assert spool.ts("--queue", "cpu", "-S").strip() == "3"
    assert spool.ts("-S").strip() == "1"
    assert spool.ts("--queues").splitlines() == [
        "Queue    Slots  Running  Queued",
        "default  1      1        1",
        "cpu      3      0        0",
    ]
    listing = spool.ts("-l").splitlines()
    assert listing[0].split()[:3] == ["ID", "State", "Queue"]
    assert spool.ts("-l", "--queue", "cpu", "--ids").split() == [str(cpu)]
    assert spool.ts("-l", "--queue", "default", "--ids").split() == [str(gate), str(waiting)]
    (spool.root / "gate").touch()
    assert spool.run("-w", str(waiting)).returncode == 0


def test_reading_a_queue_s_slots_does_not_make_it_and_results_filter_by_queue(spool: Spool) -> None:
    assert spool.ts("--queue", "typo", "-S").strip() == "1"  # what it would have
    assert [line.split()[0] for line in spool.ts("--queues").splitlines()[1:]] == ["default"]
    cpu = spool.submit("sh", "-c", 'echo \'{"acc": 1}\' > "$TS_RESULT_FILE"', opts=("--queue", "cpu"))
    other = spool.submit("true")
    for job in (cpu, other):
        assert spool.run("-w", str(job)).returncode == 0
    assert spool.ts("results", "--queue", "cpu", "--ids").split() == [str(cpu)]
    assert spool.ts("--queue", "cpu", "results", "--ids").split() == [str(cpu)]


@pytest.mark.parametrize("name", ["a/b", "two words", "q" * 65])
def test_bad_queue_names_through_ts(spool: Spool, name: str) -> None:
    for args in (("--queue", name, "true"), ("--queue", name, "-S", "2"), ("-l", "--queue", name)):
        done = spool.run(*args)
        assert done.returncode != 0 and "is not a queue name" in done.stderr
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert spool.jobs() == []
    assert spool.ts("--queues").splitlines()[1:] == ["default  1      0        0"]


def test_queues_from_python(api: Client, spool: Spool) -> None:
    with api:
        assert api.slots(2, queue="cpu") == 2
        job = api.submit("true", queue="cpu")
        assert api.wait(job) == 0
        assert [j["id"] for j in api.jobs(queue="cpu")] == [job]
        assert api.queues()[1] == {"name": "cpu", "slots": 2, "running": 0, "queued": 0}


# -- waiting for all ---------------------------------------------------------------------------


def test_wait_all_through_ts(spool: Spool) -> None:
    spool.ts("-S", "3")
    gate = spool.root / "gate"
    wait = f"until [ -e {gate} ]; do sleep 0.02; done"
    ok = spool.submit("sh", "-c", wait, opts=("-L", "good"))
    bad = spool.submit("sh", "-c", f"{wait}; exit 3", opts=("-L", "bad"))
    waiter = subprocess.Popen([*TS, "--wait-all"], env=spool.env, stdout=subprocess.PIPE, text=True)
    good_only = subprocess.Popen([*TS, "--wait-all", "--label", "good"], env=spool.env)
    spool.wait_state(bad, "running")
    assert waiter.poll() is None and good_only.poll() is None
    gate.touch()
    out, _ = waiter.communicate(timeout=60)
    assert waiter.returncode == 1
    assert out.splitlines() == [f"job {bad} exited 3: sh -c '{wait}; exit 3'"]
    assert good_only.wait(timeout=60) == 0
    assert spool.job(ok)["state"] == "finished"
    assert spool.run("--wait-all", "--state", "finished", "--label", "good").returncode == 0


def test_wait_all_sees_a_failure_even_when_the_job_is_forgotten_at_once(spool: Spool) -> None:
    """TS_MAXFINISHED=1: the failed job is dropped from the list as soon as the next one ends;
    --wait-all still reports it (from its wait's reply)."""
    spool.env["TS_MAXFINISHED"] = "1"
    gate = spool.root / "gate"
    wait = f"until [ -e {gate} ]; do sleep 0.02; done"
    spool.ts("-S", "2")
    bad = spool.submit("sh", "-c", f"{wait}; exit 3")
    spool.submit("sh", "-c", f"{wait}; sleep 0.3")
    waiter = subprocess.Popen([*TS, "--wait-all"], env=spool.env, stdout=subprocess.PIPE, text=True)
    spool.wait_state(bad, "running")
    gate.touch()
    out, _ = waiter.communicate(timeout=60)
    assert waiter.returncode == 1 and out.startswith(f"job {bad} exited 3")


def test_wait_all_with_nothing_to_wait_for(spool: Spool) -> None:
    assert spool.run("--wait-all").returncode == 0
    done = spool.run("--wait-all", "7")
    assert done.returncode != 0 and done.stderr.startswith("ts: --wait-all does not take a command")


def test_wait_all_from_python(api: Client, spool: Spool) -> None:
    with api:
        a = api.submit("true", label="w")
        b = api.submit(["sh", "-c", "exit 4"], label="w")
        assert api.wait_all(label="w") == {a: 0, b: 4}


# -- editing a job that has not started --------------------------------------------------------


def _editor(spool: Spool, script: str) -> dict[str, str]:
    """An $EDITOR that runs ``script`` on the file it is given (as "$1")."""
    path = spool.root / f"editor-{len(list(spool.root.glob('editor-*')))}"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return {"EDITOR": str(path), "VISUAL": ""}


def test_edit_a_queued_command_in_the_editor(spool: Spool) -> None:
    _gate(spool)
    job = spool.submit("echo", "hello")
    spool.ts("--edit", str(job), env=_editor(spool, "sed -i 's/hello/bye/' \"$1\""))
    assert spool.ts("-F", str(job)).strip() == "echo bye"
    shell = spool.submit("echo", "x")
    spool.ts("--edit", str(shell), env=_editor(spool, "echo 'echo a && echo b' > \"$1\""))
    assert spool.job(shell)["argv"] == ["echo a && echo b"]  # one word of shell syntax: sh -c
    (spool.root / "gate").touch()
    assert spool.run("-w", str(shell)).returncode == 0
    assert Path(spool.job(job)["output"]).read_text() == "bye\n"
    assert Path(spool.job(shell)["output"]).read_text() == "a\nb\n"


def test_edit_fills_the_jobs_arguments(spool: Spool) -> None:
    _gate(spool)
    job = spool.submit("--arg", "n=3", "--", "echo", "%(n)")
    assert spool.job(job)["command"] == "echo 3"
    spool.ts("--edit", str(job), env=_editor(spool, "echo 'echo %(n) again' > \"$1\""))
    assert spool.job(job)["command"] == "echo 3 again"
    (spool.root / "gate").touch()


def test_edit_label_and_priority_without_an_editor(spool: Spool) -> None:
    _gate(spool)
    job = spool.submit("true", opts=("-L", "old"))
    spool.ts("--edit", str(job), "--label", "new", "--priority", "4", env={"EDITOR": "false", "VISUAL": ""})
    record = spool.job(job)
    assert (record["label"], record["priority"], record["command"]) == ("new", 4, "true")
    spool.ts("--edit", str(job), "-L", "newer", env={"EDITOR": "false", "VISUAL": ""})
    assert spool.job(job)["label"] == "newer"
    (spool.root / "gate").touch()


def test_bad_edits_change_nothing(spool: Spool) -> None:
    gate = _gate(spool)
    job = spool.submit("echo", "hello")
    cases = [
        (("--edit", str(job)), {"EDITOR": "false", "VISUAL": ""}, "the editor (false) exited 1"),
        (("--edit", str(job)), _editor(spool, ': > "$1"'), "the command is empty"),
        (("--edit", str(gate)), _editor(spool, "exit 0"), f"job {gate} has started (it is running)"),
        (("--edit", "99"), _editor(spool, "exit 0"), "job 99 does not exist"),
        (("--edit", str(job), "--state", "queued"), {}, "--edit does not take --state"),
    ]
    for args, env, message in cases:
        done = spool.run(*args, env=env)
        assert done.returncode != 0 and done.stderr.startswith(f"ts: {message}"), done.stderr
        assert len(done.stderr.splitlines()) == 1
    assert spool.job(job)["command"] == "echo hello"
    (spool.root / "gate").touch()


def test_edit_from_python(api: Client, spool: Spool) -> None:
    with api:
        gate = api.submit(["sh", "-c", f"until [ -e {spool.root / 'gate'} ]; do sleep 0.02; done"])
        job = api.submit(["echo", "%(word)"], args={"word": "hi"})
        api.edit(job, ["echo", "%(word)", "there"], label="l", priority=2)
        record = api.job(job)
        assert (record["command"], record["label"], record["priority"]) == ("echo hi there", "l", 2)
        (spool.root / "gate").touch()
        assert api.wait(gate) == 0


# -- requeue with dependants -------------------------------------------------------------------


def test_requeue_cascade_through_ts(spool: Spool) -> None:
    flag = spool.root / "ok"
    first = spool.submit("sh", "-c", f"test -e {flag}")
    child = spool.submit("true", opts=("-W", str(first)))
    grandchild = spool.submit("true", opts=("-W", str(child)))
    assert spool.run("-w", str(grandchild)).returncode == 255
    assert spool.job(child)["state"] == "skipped"
    flag.touch()
    assert spool.ts("--requeue", str(first), "--cascade").split() == [str(first), str(child), str(grandchild)]
    assert spool.run("-w", str(grandchild)).returncode == 0
    assert [spool.job(j)["state"] for j in (first, child)] == ["finished", "finished"]


def test_cascade_goes_with_requeue_only(spool: Spool) -> None:
    done = spool.run("--cascade", "-r", "0")
    assert done.returncode != 0 and done.stderr == "ts: --cascade goes with --requeue\n"


def test_requeue_cascade_from_python(api: Client, spool: Spool) -> None:
    with api:
        first = api.submit(["sh", "-c", "exit 1"])
        child = api.submit("true", after_ok=[first])
        assert api.wait(child) == 255
        assert api.requeue(first, cascade=True) == [first, child]
        assert api.wait(child) == 255  # first failed again: skipped again


# -- notifications -----------------------------------------------------------------------------


class Hook:
    """A webhook on 127.0.0.1: the JSON bodies POSTed to it, in the order they came."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def test_a_failed_job_is_notified(spool: Spool, hook: Hook) -> None:
    good = spool.submit("true", opts=("--notify", hook.url))
    bad = spool.submit("sh", "-c", "exit 3", opts=("--notify", hook.url, "-L", "lab"))
    assert spool.run("-w", str(bad)).returncode == 3
    body = wait_for(lambda: hook.bodies and hook.bodies[0], what="the notification")
    assert body["id"] == bad and body["exit_status"] == 3 and body["label"] == "lab"
    assert body["command"] == "sh -c 'exit 3'" and body["output"] == spool.job(bad)["output"]
    assert body["text"].startswith(f"ts job {bad} [lab] failed (exit 3) on ")
    wait_for(lambda: "delivered" in spool.ts("-i", str(bad)), what="the delivery in ts -i")
    assert spool.job(good)["state"] == "finished" and len(hook.bodies) == 1


def test_notify_url_and_on_from_the_environment(spool: Spool, hook: Hook) -> None:
    env = {"TS_NOTIFY_URL": hook.url, "TS_NOTIFY_ON": "end"}
    job = spool.submit("true", env=env)
    body = wait_for(lambda: hook.bodies and hook.bodies[0], what="the notification")
    assert body["id"] == job and body["state"] == "finished" and body["exit_status"] == 0
    # Bad values left in the environment are warned about, and the job is queued all the same.
    done = spool.run("true", env={**env, "TS_NOTIFY_ON": "sometimes"})
    assert (
        done.returncode == 0
        and done.stderr == "ts: TS_NOTIFY_ON='sometimes' is not end or fail: notifying on fail\n"
    )
    done = spool.run("true", env={"TS_NOTIFY_URL": "ftp://x"})
    assert done.returncode == 0 and done.stdout.strip().isdigit()
    assert done.stderr == "ts: TS_NOTIFY_URL ignored: 'ftp://x' is not an http:// or https:// URL\n"
    assert spool.job(int(done.stdout))["state"] in ("queued", "running", "finished")
    assert spool.run("--notify", "ftp://x", "true").returncode != 0  # typed now: refused


def test_a_notification_that_cannot_be_delivered_is_recorded_and_the_job_still_runs(spool: Spool) -> None:
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{unused.getsockname()[1]}/"
    job = spool.submit("false", opts=("--notify", nowhere))
    assert spool.run("-w", str(job)).returncode == 1
    wait_for(lambda: "retrying in" in spool.ts("-i", str(job)), what="the failure in ts -i")
    log = Path(f"{spool.savelist}.log")
    assert f"job {job}: notifying {nowhere} failed" in log.read_text()


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "http://"])
def test_a_notify_url_that_is_not_http_is_refused(spool: Spool, url: str) -> None:
    done = spool.run("--notify", url, "true")
    assert done.returncode != 0 and "is not an http:// or https:// URL" in done.stderr
    assert len(done.stderr.splitlines()) == 1 and spool.jobs() == []


def test_notify_from_python(api: Client, spool: Spool, hook: Hook) -> None:
    with api:
        job = api.submit(["sh", "-c", "exit 2"], notify=hook.url)
        assert api.wait(job) == 2
        body = wait_for(lambda: hook.bodies and hook.bodies[0], what="the notification")
        assert body["id"] == job


def test_a_job_that_starts_while_it_is_edited_is_not_changed(spool: Spool) -> None:
    _gate(spool)
    job = spool.submit("sh", "-c", "exit 0")
    gate = spool.root / "gate"
    ts = " ".join(TS)
    # The editor changes the file, lets the job start, and returns only once it has.
    script = f"""sed -i 's/exit 0/exit 9/' "$1"; touch {gate}
until [ "$({ts} -s {job})" != queued ]; do sleep 0.02; done"""
    done = spool.run("--edit", str(job), env=_editor(spool, script))
    assert done.returncode != 0
    assert done.stderr.startswith(f"ts: job {job} has started (it is ") and "not changed" in done.stderr
    assert spool.run("-w", str(job)).returncode == 0
    assert spool.job(job)["command"] == "sh -c 'exit 0'"
