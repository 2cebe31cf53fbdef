"""What a user's script sees when the daemon dies under it: ``ts CMD`` exits 0 only with the id
printed, a submission whose connection dropped is sent again (and never queued twice), and a
short storm of daemon and launcher kills keeps every invariant (``bench/chaos.py`` is the long
storm)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import TS, Spool, wait_for

from spooler import protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import chaos


class HangingUpDaemon:
    """A stand-in daemon on the socket: it reads each request, then hangs up without a reply
    for the first ``hang_ups`` connections, and answers the ones after with job 7."""

    def __init__(self, path: Path, hang_ups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(64)
        self.hang_ups = hang_ups
        self.requests: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                header = conn.recv(protocol.HEADER.size, socket.MSG_WAITALL)
                if len(header) < protocol.HEADER.size:
                    continue
                body = conn.recv(protocol.frame_length(header), socket.MSG_WAITALL)
                self.requests.append(protocol.decode_body(body))
                if len(self.requests) > self.hang_ups:
                    conn.sendall(protocol.encode({"ok": True, "id": 7}))

    def close(self) -> None:
        self.server.close()


def test_a_submission_whose_connection_drops_is_sent_again_with_the_same_token(spool: Spool) -> None:
    fake = HangingUpDaemon(spool.socket, hang_ups=2)
    try:
        done = spool.run("true")
    finally:
        fake.close()
    assert (done.returncode, done.stdout, done.stderr) == (0, "7\n", "")
    tokens = {r.get("token") for r in fake.requests}
    assert len(fake.requests) == 3 and len(tokens) == 1 and None not in tokens


def test_a_daemon_that_always_hangs_up_is_one_line_and_a_failure(spool: Spool) -> None:
    fake = HangingUpDaemon(spool.socket, hang_ups=10**6)
    try:
        done = spool.run("true")
    finally:
        fake.close()
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr == "ts: the daemon closed the connection\n"


def test_a_request_cut_off_by_the_daemon_is_never_a_silent_success(spool: Spool) -> None:
    """``ts -l`` (not a submission: not sent again) to a daemon that hangs up fails with one
    line; a closed stdout (``ts -l | head``) is still a quiet exit 0."""
    fake = HangingUpDaemon(spool.socket, hang_ups=10**6)
    try:
        done = spool.run("-l")
    finally:
        fake.close()
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "ts: the daemon closed the connection\n")


def test_a_daemon_killed_while_a_submission_waits_for_its_reply(spool: Spool) -> None:
    """The daemon is stopped (so the request sits unread), then killed: ``ts`` starts a new
    daemon, sends the submission again, and prints the id of the one job it queued."""
    spool.ts("-l")
    pid = spool.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    client = subprocess.Popen(
        [*TS, "echo", "once"], env=spool.env, cwd=spool.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: _sockets_on(spool.socket) > 1, what="the client to connect")
    finally:
        os.kill(pid, signal.SIGKILL)
    out, err = client.communicate(timeout=60)
    assert (client.returncode, err) == (0, b"")
    job = int(out)
    assert spool.wait_state(job, "finished")["output"]
    assert [j["id"] for j in spool.jobs()] == [job]


def _sockets_on(path: Path) -> int:
    """Sockets bearing the path: the listening one, and one per connection made to it (the
    kernel names a connection's server end after the listener, accepted or still waiting)."""
    with open("/proc/net/unix") as f:
        return sum(1 for line in f if line.rstrip().endswith(" " + str(path)))


@pytest.mark.parametrize("launcher_kills", [0, 3], ids=["daemon kills", "daemon and launcher kills"])
def test_a_short_storm_of_kills_keeps_every_invariant(tmp_path: Path, launcher_kills: int) -> None:
    storm = chaos.Storm(tmp_path, TS, seconds=5, clients=3, daemon_kills=8, launcher_kills=launcher_kills)
    try:
        storm.run()
        jobs = storm.settle()
        figures = storm.check(jobs)
    finally:
        storm.stop_daemon()
    print(chaos.table(figures, storm.seconds))
    print("\n".join(storm.details(jobs)))
    assert figures["daemon kills"] > 0 and figures["acknowledged"] > 0
    assert {name: figures[name] for name in chaos.INVARIANTS} == dict.fromkeys(chaos.INVARIANTS, 0)
