"""Raw-socket clients of a real daemon, and finding that daemon's process.

Shared by the tests that speak to a daemon on its Unix socket byte by byte.  Every such test
checks the daemon survived by its pid (``assert_same_daemon_answers``): ``ts -l`` alone would
also pass after a crash, because it starts a new daemon.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil
from conftest import Spool

from spooler import protocol
from spooler.protocol import HEADER

IO_TIMEOUT = 5.0  # no single read or write on a test socket may take longer
NO_SUCH_JOB = 10**9  # far above any id a test creates


def connect(spool: Spool, timeout: float = IO_TIMEOUT) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(spool.socket))
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only when the daemon closed the connection."""
    data = bytearray()
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next reply, or None when the connection closed cleanly before one began."""
    header = recv_exact(sock, HEADER.size)
    if not header:
        return None
    assert len(header) == HEADER.size, f"connection closed inside a reply header: {header!r}"
    length = protocol.frame_length(header)
    body = recv_exact(sock, length)
    assert len(body) == length, f"connection closed inside a reply body ({len(body)} of {length} bytes)"
    return protocol.decode_body(body)


def assert_closed(sock: socket.socket) -> None:
    """The daemon has closed (or is closing) this connection: EOF within IO_TIMEOUT."""
    try:
        data = sock.recv(1)
    except ConnectionResetError:
        return
    assert data == b"", f"expected the daemon to close the connection, got {data!r}"


def exchange(sock: socket.socket, message: dict[str, Any]) -> dict[str, Any]:
    sock.sendall(protocol.encode(message))
    reply = recv_frame(sock)
    assert reply is not None, f"no reply to {message!r}: the connection closed"
    return reply


def assert_serves(sock: socket.socket) -> None:
    reply = exchange(sock, protocol.request("ping"))
    assert reply["ok"] is True and isinstance(reply["pid"], int)


def daemons_for(spool: Spool) -> list[int]:
    """Daemon processes for this spool's socket.

    A job's supervising shim is a fork of the daemon, so it shows the same command line (and
    after a kill -9 of the daemon it outlives it); it is told apart by leading its own session
    (runner._shim calls setsid), which the daemon never does.
    """
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if (
            proc.info["status"] == psutil.STATUS_ZOMBIE
            or "spooler.daemon" not in cmd
            or str(spool.socket) not in cmd
        ):
            continue
        try:
            if os.getsid(proc.info["pid"]) != proc.info["pid"]:
                found.append(int(proc.info["pid"]))
        except ProcessLookupError:
            continue
    return found


def daemon_pid(spool: Spool) -> int | None:
    pids = daemons_for(spool)
    assert len(pids) <= 1, f"more than one daemon for {spool.socket}: {pids}"
    return pids[0] if pids else None


def start(spool: Spool) -> int:
    """Autostart the daemon with ``ts -l``; its pid."""
    spool.ts("-l")
    pid = daemon_pid(spool)
    assert pid is not None, "no daemon process found for the socket"
    return pid


def assert_same_daemon_answers(spool: Spool, pid: int) -> None:
    done = spool.run("-l", timeout=30)
    assert done.returncode == 0, done.stderr
    assert daemon_pid(spool) == pid, "the daemon was replaced: it died"


def submit_request(spool: Spool, **fields: Any) -> dict[str, Any]:
    """A valid submit of ``true`` in the spool's directory, with ``fields`` changed."""
    message = protocol.request("submit", command=["true"], cwd=str(spool.root), env={})
    message.update(fields)
    return message


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def job_summary(spool: Spool) -> dict[int, tuple[str, str]]:
    return {job["id"]: (job["command"], job["state"]) for job in spool.jobs()}
