"""Slow, idle and racing clients of one daemon, and a daemon that has to be replaced."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from conftest import TS, Spool, wait_for
from raw_socket import (
    assert_closed,
    assert_same_daemon_answers,
    assert_serves,
    connect,
    daemon_pid,
    daemons_for,
    gone,
    job_summary,
    recv_frame,
    start,
)

from spooler import protocol
from spooler.daemon.server import REQUEST_TIMEOUT


def test_slow_clients_do_not_hold_up_others(spool: Spool) -> None:
    pid = start(spool)
    silent = connect(spool, timeout=REQUEST_TIMEOUT + 10)
    opened = time.monotonic()
    drip = connect(spool)
    frame = protocol.encode(protocol.request("ping", padding="x" * 100))
    stop = threading.Event()
    cut_at: list[float] = []  # when the daemon closed the trickling connection, if it did

    def trickle() -> None:
        for byte in frame:
            if stop.wait(1.0):
                return
            try:
                drip.sendall(bytes([byte]))
            except OSError:
                cut_at.append(time.monotonic())
                return

    dripper = threading.Thread(target=trickle, daemon=True)
    dripper.start()
    try:
        for _ in range(3):
            done = spool.run("-l", timeout=30)
            assert done.returncode == 0, done.stderr
        with connect(spool) as other:
            assert_serves(other)
        # The silent connection gets an error and a close at its deadline (waited on by the
        # blocking read, whose own timeout is the bound).
        reply = recv_frame(silent)
        closed_after = time.monotonic() - opened
        assert reply is not None and reply["ok"] is False and reply["code"] == protocol.E_BAD_REQUEST, reply
        assert "no complete request" in reply["error"]
        assert_closed(silent)
        assert closed_after >= REQUEST_TIMEOUT - 1, f"closed after {closed_after:.1f} s: too early"
        # The trickling one has the same deadline (a request must arrive whole within it):
        # it may be cut by now, but not before it.
        if cut_at:
            cut_after = cut_at[0] - opened
            assert cut_after >= REQUEST_TIMEOUT - 1, f"trickling client cut after {cut_after:.1f} s"
        assert_same_daemon_answers(spool, pid)
    finally:
        stop.set()
        dripper.join(5)
        drip.close()
        silent.close()


def test_many_idle_connections(spool: Spool) -> None:
    pid = start(spool)
    idle: list[socket.socket] = []
    try:
        for _ in range(100):
            idle.append(connect(spool))
        done = spool.run("-l", timeout=30)
        assert done.returncode == 0, done.stderr
        for sock in idle:  # every one of them was accepted and is served
            assert_serves(sock)
        assert_same_daemon_answers(spool, pid)
    finally:
        for sock in idle:
            sock.close()


def test_twenty_clients_start_one_daemon(spool: Spool) -> None:
    assert not spool.socket.exists()
    procs = [
        subprocess.Popen(
            [*TS, "true"],
            env=spool.env,
            cwd=spool.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(20)
    ]
    try:
        results = [(proc, *proc.communicate(timeout=90)) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, _, err in results:
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
    ids = [int(out.strip()) for _, out, _ in results]
    assert len(set(ids)) == 20, ids
    assert len(daemons_for(spool)) == 1, daemons_for(spool)
    assert {job["id"] for job in spool.jobs()} == set(ids)
    assert len(daemons_for(spool)) == 1


def test_stale_socket_is_replaced(spool: Spool) -> None:
    spool.ts("-S", "1")
    blocker = spool.submit("sh", "-c", "sleep 120")
    spool.wait_state(blocker, "running")
    spool.submit("echo", "one")
    spool.submit("echo", "two")
    before = job_summary(spool)
    old = daemon_pid(spool)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: gone(old), what="the killed daemon to exit")
    assert stat.S_ISSOCK(os.lstat(spool.socket).st_mode), "the killed daemon's socket file disappeared"
    with pytest.raises(ConnectionRefusedError):
        connect(spool)
    done = spool.run("-l", timeout=60)
    assert done.returncode == 0, done.stderr
    new = daemon_pid(spool)
    assert new is not None and new != old
    assert job_summary(spool) == before  # the running job was adopted, the queue kept
    assert daemons_for(spool) == [new]


# -- a daemon of another version ------------------------------------------------------------

OLD_DAEMON = """
import fcntl, os, signal, socket, struct, sys
import msgpack
sock_path, lock_path = sys.argv[1], sys.argv[2]
lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(lock, fcntl.LOCK_EX)
server = socket.socket(socket.AF_UNIX)
server.bind(sock_path)
server.listen(4)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    length = struct.unpack(">I", conn.recv(4))[0]
    conn.recv(length)
    body = msgpack.packb({"ok": False, "code": "version", "error": "the running daemon speaks protocol 1"})
    conn.sendall(struct.pack(">I", len(body)) + body)
"""


def test_ts_K_stops_a_daemon_of_another_version(spool: Spool) -> None:
    # After an upgrade the old daemon refuses the new protocol, shutdown included: ts -K
    # still stops it (SIGTERM to the pid the socket names), and the next ts starts a new one.
    spool.socket.parent.mkdir(parents=True, exist_ok=True)
    old = subprocess.Popen(
        [sys.executable, "-c", OLD_DAEMON, str(spool.socket), f"{spool.socket}.lock"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert old.stdout is not None and old.stdout.readline() == "ready\n"
    listed = spool.run("-l")
    assert listed.returncode != 0 and "speaks protocol 1" in listed.stderr
    assert spool.run("-K").returncode == 0
    assert old.wait(timeout=30) == -signal.SIGTERM
    assert spool.run("-l").returncode == 0  # its stale socket is replaced by a new daemon
