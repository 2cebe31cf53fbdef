"""Descriptors passed with requests (``ts -nf``): the daemon lets go of them, refused or not."""

from __future__ import annotations

import array
import os
import socket
import subprocess
from typing import Any

import pytest
from conftest import TS, Spool, wait_for
from raw_socket import NO_SUCH_JOB, assert_same_daemon_answers, connect, recv_frame, start, submit_request

from spooler import protocol


def send_with_fds(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    frame = protocol.encode(message)
    rights = array.array("i", fds).tobytes()
    done = sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    if done < len(frame):
        sock.sendall(frame[done:])


def holders(pid: int, fd: int) -> int:
    """How many of the daemon's descriptors refer to the pipe behind our ``fd``."""
    target = f"pipe:[{os.fstat(fd).st_ino}]"
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}") == target
        except OSError:
            continue
    return count


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"op": "list"}, None, id="list"),
        pytest.param({"op": "submit", "command": 5}, "bad_request", id="submit-bad-command"),
        pytest.param({"op": "ping", "v": 99}, "version", id="bad-version"),
        pytest.param({"op": "submit", "foreground": "yes"}, "bad_request", id="submit-bad-flag"),
        pytest.param(
            {"op": "submit", "after_ok": [NO_SUCH_JOB]},
            "not_found",
            id="submit-no-such-dep",
        ),
    ],
)
def test_descriptors_passed_with_a_refused_request_are_closed(
    spool: Spool, fields: dict[str, Any], code: str | None
) -> None:
    pid = start(spool)
    message = submit_request(spool, foreground=True, no_output=True)
    message.update(fields)
    if message["op"] != "submit":
        message = {key: message[key] for key in ("v", "op")}
    read_end, write_end = os.pipe()
    try:
        with connect(spool) as sock:
            send_with_fds(sock, message, [write_end, write_end])
            reply = recv_frame(sock)
            assert reply is not None
            assert reply.get("code") == code, reply
        os.close(write_end)
        write_end = -1
        wait_for(
            lambda: holders(pid, read_end) == 0,
            timeout=1,  # they are closed before the reply goes out
            what="the daemon to close the passed descriptors",
        )
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert_same_daemon_answers(spool, pid)


def test_refused_nf_submit_lets_go_of_the_terminal(spool: Spool) -> None:
    """``ts -n -f -D 999 true | cat``: ts fails, and cat must see the end of its input."""
    pid = start(spool)
    errors = spool.root / "stderr"
    with open(errors, "wb") as stderr:  # a file: reading it back never waits on the daemon
        proc = subprocess.Popen(
            [*TS, "-n", "-f", "-D", str(NO_SUCH_JOB), "true"],
            env=spool.env,
            cwd=spool.root,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    try:
        assert proc.wait(timeout=30) != 0
        err = errors.read_text()
        assert "Traceback" not in err and str(NO_SUCH_JOB) in err, err
        stdout = proc.stdout.fileno()
        wait_for(lambda: holders(pid, stdout) == 0, timeout=1, what="the daemon to let go of ts's stdout")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # never read: with the bug, the daemon holds its other end
    assert_same_daemon_answers(spool, pid)


def test_nf_batch_runs_every_job(spool: Spool) -> None:
    pid = start(spool)
    batch = spool.root / "batch"
    batch.write_text("echo one\necho two\n")
    out, err = spool.root / "stdout", spool.root / "stderr"
    # Files, not pipes: the jobs write to ts's stdout and stderr, which the daemon holds meanwhile.
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [*TS, "-n", "-f", "--batch", str(batch)],
            env=spool.env,
            cwd=spool.root,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        returncode = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err.read_text(), err.read_text()
    if returncode != 0:  # refusing -f with --batch is a fix too
        assert spool.jobs() == []
        return
    ids = [int(word) for word in out.read_text().split() if word.isdigit()]
    assert len(ids) == 2, out.read_text()

    def settled() -> dict[int, str] | None:
        states = {job["id"]: job["state"] for job in spool.jobs()}
        if any(job_id not in states for job_id in ids):
            return states  # a job vanished: no use waiting
        return states if all(states[job_id] == "finished" for job_id in ids) else None

    states = wait_for(settled, timeout=20, what=f"jobs {ids} to end")
    assert all(states.get(job_id) == "finished" for job_id in ids), f"jobs {ids}, listed: {states}"
    assert all(spool.job(job_id)["exit_code"] == 0 for job_id in ids)
    assert_same_daemon_answers(spool, pid)
