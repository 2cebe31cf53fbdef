"""A real daemon against hostile, broken and slow clients on its Unix socket.

Every test checks the daemon survived by its pid: ``ts -l`` alone would also pass after a crash,
because it starts a new daemon.
"""

from __future__ import annotations

import array
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
from conftest import TS, Spool, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spooler import protocol
from spooler.daemon.server import REQUEST_TIMEOUT
from spooler.protocol import HEADER, MAX_FRAME, OPS, PROTOCOL_VERSION

IO_TIMEOUT = 5.0  # no single read or write on a test socket may take longer
NO_SUCH_JOB = 10**9  # far above any id a test creates

# -- raw socket helpers ---------------------------------------------------------------------


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


# -- broken frames, one at a time -----------------------------------------------------------


@pytest.mark.parametrize("length", [MAX_FRAME + 1, 0xFFFFFFFF], ids=["max+1", "4G-1"])
def test_oversized_length_prefix_gets_an_error_and_a_close(spool: Spool, length: int) -> None:
    pid = start(spool)
    with connect(spool) as bystander, connect(spool) as sock:
        sock.sendall(HEADER.pack(length))
        reply = recv_frame(sock)
        assert reply is not None
        assert reply["ok"] is False and reply["code"] == protocol.E_BAD_REQUEST
        assert "exceeds" in reply["error"]
        assert_closed(sock)
        assert_serves(bystander)
    assert_same_daemon_answers(spool, pid)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00",
        b"\x00\x00\x00",
        HEADER.pack(100) + b"x" * 10,
        protocol.encode(protocol.request("list"))[:-1],
    ],
    ids=["one-byte", "three-bytes", "short-body", "list-minus-one"],
)
def test_truncated_frame_then_close(spool: Spool, data: bytes) -> None:
    pid = start(spool)
    with connect(spool) as bystander:
        with connect(spool) as sock:
            sock.sendall(data)
        assert_serves(bystander)
    assert_same_daemon_answers(spool, pid)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\xff" * 16, "exceeds"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "exceeds"),
        (HEADER.pack(3) + b"\xc1\xc1\xc1", "invalid msgpack"),
        (HEADER.pack(2) + b"\x92\x01", "invalid msgpack"),
        (HEADER.pack(0), "invalid msgpack"),
        (HEADER.pack(2) + b"\x80\x80", "invalid msgpack"),
        (HEADER.pack(3) + b"\xa2\xff\xfe", "invalid msgpack"),
        (HEADER.pack(5) + b"\xdd\xff\xff\xff\xff", "invalid msgpack"),
    ],
    ids=["ff", "http", "c1", "short-array", "empty-body", "two-maps", "bad-utf8", "huge-array"],
)
def test_garbage_bytes(spool: Spool, data: bytes, needle: str) -> None:
    pid = start(spool)
    with connect(spool) as bystander, connect(spool) as sock:
        sock.sendall(data)
        reply = recv_frame(sock)
        assert reply is not None
        assert reply["ok"] is False and reply["code"] == protocol.E_BAD_REQUEST
        assert needle in reply["error"]
        assert_closed(sock)
        assert_serves(bystander)
    assert_same_daemon_answers(spool, pid)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ([PROTOCOL_VERSION, "list"], "bad_request"),
        (7, "bad_request"),
        ("list", "bad_request"),
        (None, "bad_request"),
        ({1: "x"}, "bad_request"),
        ({"v": PROTOCOL_VERSION}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "op": None}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "op": 5}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "op": ["list"]}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "op": b"list"}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "op": "frobnicate"}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "op": "LIST"}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "op": ""}, "bad_request"),
        ({"v": PROTOCOL_VERSION, "op": "__init__"}, "bad_request"),
        ({"op": "list"}, "version"),
    ],
    ids=[
        "list",
        "int",
        "str",
        "nil",
        "int-key",
        "no-op",
        "op-nil",
        "op-int",
        "op-list",
        "op-bin",
        "unknown-op",
        "op-case",
        "op-empty",
        "op-dunder",
        "no-version",
    ],
)
def test_wrong_shape_is_refused_and_only_that_connection_closes(spool: Spool, value: Any, code: str) -> None:
    pid = start(spool)
    body = msgpack.packb(value, use_bin_type=True)
    with connect(spool) as bystander, connect(spool) as sock:
        sock.sendall(HEADER.pack(len(body)) + body)
        reply = recv_frame(sock)
        assert reply is not None
        assert reply["ok"] is False and reply["code"] == code, reply
        assert isinstance(reply["error"], str) and reply["error"]
        assert_closed(sock)
        assert_serves(bystander)
    assert_same_daemon_answers(spool, pid)


@pytest.mark.parametrize(
    "version",
    [
        0,
        PROTOCOL_VERSION - 1,
        PROTOCOL_VERSION + 1,
        str(PROTOCOL_VERSION),
        None,
        [1],
        True,
        float(PROTOCOL_VERSION),
    ],
)
def test_wrong_protocol_version(spool: Spool, version: Any) -> None:
    pid = start(spool)
    with connect(spool) as bystander, connect(spool) as sock:
        reply = exchange(sock, {"v": version, "op": "list"})
        assert reply["ok"] is False and reply["code"] == protocol.E_VERSION
        assert "ts -K" in reply["error"]
        assert_closed(sock)
        assert_serves(bystander)
    assert_same_daemon_answers(spool, pid)


# Field errors are the user's to fix: the reply says which, and the connection stays usable.
BAD_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("submit", {"command": 5}),
    ("submit", {"command": "true"}),
    ("submit", {"command": []}),
    ("submit", {"command": [5]}),
    ("submit", {"command": ["tr\0ue"]}),
    ("submit", {"command": ["   "]}),
    ("submit", {"command": None}),
    ("submit", {"id": "x", "command": 5}),
    ("submit", {"slots": -1}),
    ("submit", {"slots": 0}),
    ("submit", {"slots": "1"}),
    ("submit", {"slots": True}),
    ("submit", {"slots": 1.0}),
    ("submit", {"slots": 2**63}),
    ("submit", {"slots": -(2**63)}),
    ("submit", {"env": []}),
    ("submit", {"env": "A=1"}),
    ("submit", {"env": None}),
    ("submit", {"env": {"A": 1}}),
    ("submit", {"env": {"A=B": "x"}}),
    ("submit", {"env": {"A": "x\0y"}}),
    ("submit", {"env": {b"A": "x"}}),
    ("submit", {"cwd": None}),
    ("submit", {"cwd": 5}),
    ("submit", {"cwd": "/tmp\0x"}),
    ("submit", {"cwd": "x" * 5000}),
    ("submit", {"label": 5}),
    ("submit", {"label": "x" * 2000}),
    ("submit", {"after": "x"}),
    ("submit", {"after": [-1]}),
    ("submit", {"after": [True]}),
    ("submit", {"after": [1.5]}),
    ("submit", {"after_ok": {"a": 1}}),
    ("submit", {"after_last": "yes"}),
    ("submit", {"no_output": 1}),
    ("submit", {"gzip": None}),
    ("submit", {"log_name": "a/b"}),
    ("submit", {"log_name": ".."}),
    ("submit", {"log_name": ""}),
    ("submit", {"log_name": 5}),
    ("submit", {"batch": []}),
    ("submit", {"batch": "true"}),
    ("submit", {"batch": [[]]}),
    ("submit", {"batch": [["true"], 5]}),
    ("submit", {"env_info": 5}),
    ("list", {"format": "xml"}),
    ("list", {"format": 5}),
    ("list", {"width": -1}),
    ("list", {"width": "80"}),
    ("list", {"color": "yes"}),
    ("info", {"id": "x"}),
    ("info", {"id": -1}),
    ("info", {"id": 2**62 + 1}),
    ("job_field", {"id": [0], "field": "state"}),
    ("wait", {"id": 1.0}),
    ("remove", {"id": True}),
    ("kill", {"id": "0"}),
    ("kill", {"all": "yes"}),
    ("slots", {"set": 0}),
    ("slots", {"set": -3}),
    ("slots", {"set": "2"}),
    ("slots", {"set": 10**7}),
    ("urgent", {"id": {}}),
    ("swap", {"a": "x", "b": 1}),
    ("logdir", {"set": 5}),
    ("logdir", {"set": "/tmp\0"}),
    ("env", {}),
    ("env", {"name": ""}),
    ("env", {"name": "A=B"}),
    ("env", {"name": 5}),
    ("env", {"name": "X", "set": 5}),
    ("env", {"name": "X", "set": None}),
    ("env", {"name": "X", "unset": "yes"}),
]


def test_wrong_field_types_get_bad_request_and_keep_the_connection(spool: Spool) -> None:
    pid = start(spool)
    with connect(spool) as sock:
        for op, fields in BAD_FIELDS:
            message = submit_request(spool, **fields) if op == "submit" else protocol.request(op, **fields)
            reply = exchange(sock, message)
            assert reply["ok"] is False, (op, fields, reply)
            assert reply["code"] == protocol.E_BAD_REQUEST, (op, fields, reply)
            assert isinstance(reply["error"], str) and reply["error"], (op, fields, reply)
        assert_serves(sock)
    assert spool.jobs() == [], "a refused submit queued a job"
    assert_same_daemon_answers(spool, pid)


def test_missing_required_fields(spool: Spool) -> None:
    pid = start(spool)
    with connect(spool) as sock:
        for missing in ("command", "cwd", "env"):
            message = submit_request(spool)
            del message[missing]
            reply = exchange(sock, message)
            assert reply["ok"] is False and reply["code"] == protocol.E_BAD_REQUEST, (missing, reply)
            assert missing in reply["error"], (missing, reply)
        reply = exchange(sock, submit_request(spool))  # the same connection, now a valid one
        assert reply["ok"] is True and isinstance(reply["id"], int)
    spool.ts("-w", str(reply["id"]))
    assert [job["id"] for job in spool.jobs()] == [reply["id"]]
    assert_same_daemon_answers(spool, pid)


def test_pipelined_request_is_answered_before_a_bad_frame_closes(spool: Spool) -> None:
    pid = start(spool)
    with connect(spool) as sock:
        sock.sendall(protocol.encode(submit_request(spool)) + HEADER.pack(1) + b"\xc1")
        first = recv_frame(sock)
        second = recv_frame(sock)
        assert [job["id"] for job in spool.jobs()] == [0]  # the submit was carried out
        # ...but its reply never comes: the error for the bad frame comes first
        assert first is not None and first.get("ok") is True and first.get("id") == 0, first
        assert second is not None and second["code"] == protocol.E_BAD_REQUEST
        assert_closed(sock)
    assert_same_daemon_answers(spool, pid)


@pytest.mark.parametrize(("field", "code"), [("op", protocol.E_BAD_REQUEST), ("v", protocol.E_VERSION)])
def test_a_huge_bad_value_gets_a_prompt_error(spool: Spool, field: str, code: str) -> None:
    pid = start(spool)
    message: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": "ping"}
    message[field] = b"\xff" * (MAX_FRAME // 4 + 1024)  # 16 MiB; its repr is four times longer
    with connect(spool, timeout=4) as sock:  # well inside the 10 s deadline
        sock.sendall(protocol.encode(message))
        # the daemon stays silent: TimeoutError
        reply = recv_frame(sock)
        assert reply is not None and reply["ok"] is False and reply["code"] == code, reply
        assert_closed(sock)
    assert_same_daemon_answers(spool, pid)


def test_a_request_trickled_byte_by_byte_is_cut_off_at_the_deadline(spool: Spool) -> None:
    pid = start(spool)
    frame = protocol.encode(protocol.request("ping", padding="x" * 200))  # 400 half-seconds to send
    with connect(spool) as sock:
        started = time.monotonic()
        cut_off = False
        for byte in frame:
            if time.monotonic() - started > REQUEST_TIMEOUT + 3:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the daemon closed it
                cut_off = True
                break
            sock.settimeout(0.5)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            cut_off = True  # an error reply, or EOF: the daemon gave up on this request
            assert not data or b"no complete request" in data, data
            break
        assert cut_off, f"a request trickled for {time.monotonic() - started:.0f} s was never cut off"
    assert_same_daemon_answers(spool, pid)


@pytest.mark.parametrize("where", ["nope == 1", "state ==", "len(argv) > 1"])
def test_a_bad_where_filter_is_a_bad_request(spool: Spool, where: str) -> None:
    pid = start(spool)
    with connect(spool) as sock:
        reply = exchange(sock, protocol.request("list", filter={"where": where}))
        assert reply["ok"] is False and "--where" in reply["error"], reply
        assert reply["code"] == protocol.E_BAD_REQUEST, reply
        assert_serves(sock)
    done = spool.run("-l", "--where", where)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "internal error" not in done.stderr, done.stderr
    assert_same_daemon_answers(spool, pid)


# -- descriptors passed with requests (ts -nf) ---------------------------------------------


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


# -- fuzzing one daemon ---------------------------------------------------------------------

FUZZ_FRAMES = int(os.environ.get("SPOOLER_FUZZ_FRAMES", "10000"))
FUZZ_SEED = int(os.environ.get("SPOOLER_FUZZ_SEED", "1730"))
SAFE_DIR = "/nonexistent-spooler-fuzz/"  # a logdir under it can never be set
SAFE_ENV = "SPOOLER_FUZZ_"  # the only variables fuzzing may set or unset for jobs

FIELDS = {
    "submit": [
        "command",
        "batch",
        "cwd",
        "env",
        "label",
        "slots",
        "no_output",
        "stderr_apart",
        "gzip",
        "log_name",
        "mail",
        "after",
        "after_ok",
        "after_last",
        "env_info",
        "foreground",
        "no_block",
        "gpus",
        "gpu_indices",
        "gpu_mem_mib",
        "priority",
        "retry",
        "sweep",
        "skip_if_exists",
        "args",
        "items",
        "snapshot",
        "snapshot_info",
    ],
    "list": ["format", "width", "color", "gpu_jobs", "ids_only", "filter"],
    "info": ["id"],
    "job_field": ["id", "default", "field"],
    "wait": ["id", "default"],
    "remove": ["id", "filter"],
    "requeue": ["id", "filter"],
    "priority": ["id", "set"],
    "kill": ["id", "all", "signal", "filter"],
    "slots": ["set"],
    "urgent": ["id"],
    "swap": ["a", "b"],
    "count_running": [],
    "last_id": [],
    "logdir": ["set"],
    "env": ["name", "set", "unset"],
    "gpu_free_perc": ["set"],
    "gpu_status": ["data"],
    "ping": [],
}
# Ops the fuzzer sends.  "shutdown" and "clear" are valid whatever their fields; an op added to
# the protocol later is left out until dangerous() knows it.
FUZZ_OPS = sorted(set(FIELDS) & OPS)
FLAGS = {"no_output", "stderr_apart", "gzip", "mail", "after_last", "foreground", "color", "all", "unset",
         "gpu_jobs", "data", "no_block", "ids_only"}  # fmt: skip
INTS = {"slots", "width", "signal", "id", "a", "b", "gpus", "gpu_mem_mib", "priority", "retry"}
STATES = ["queued", "allocating", "running", "finished", "skipped", "lost", "failed"]
WORDS = ["default", "json", "tab", "xml", "run", "added", "state", "status", "pid", "output", "label",
         "command", "true", ".", "..", "/", "/tmp", "PATH", "A=B", "HOME"]  # fmt: skip
CHARS = [*"aZ0 /.=-_'\"$;*~\t\n", "\0", "\x1b", "é", "€", "\u202e", "\ufeff", "💥", "\U0010ffff"]
EDGE_INTS = [0, 1, 2, -1, 63, 64, 65, 2**31, 2**32, 2**62, 2**62 + 1, 2**63 - 1, -(2**63), 2**64 - 1,
             10**6, 10**6 + 1, NO_SUCH_JOB]  # fmt: skip


def rand_text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return ""
    if roll < 0.25:
        return rng.choice(WORDS)
    size = rng.choice([1, 2, 3, 5, 8, 13, 40]) if roll < 0.98 else rng.choice([300, 1025, 5000])
    return "".join(rng.choices(CHARS, k=size))


def rand_int(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(EDGE_INTS)
    if roll < 0.8:
        return rng.randint(-5, 100)
    return rng.randint(-(2**63), 2**64 - 1)


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rand_int(rng)
    if kind == 3:
        return rng.choice([0.0, -0.0, 1.0, 1.5, -2.5, 1e300, float("nan"), float("inf"), float("-inf")])
    if kind == 4:
        return rand_text(rng)
    if kind == 5:
        return rng.randbytes(rng.randrange(0, 17))
    if kind == 6:
        if rng.random() < 0.2:
            return msgpack.Timestamp(rng.randint(-(2**33), 2**34), rng.randrange(10**9))
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.choice([0, 1, 4, 8, 12])))
    if kind == 7:
        return [rand_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 8:
        return {rand_text(rng): rand_value(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [rand_text(rng) for _ in range(rng.randrange(1, 4))]


def field_value(rng: random.Random, key: str) -> Any:
    """Mostly a value of the right type (so later checks are reached), sometimes anything."""
    if rng.random() < 0.3:
        return rand_value(rng)
    if key in FLAGS:
        return rng.random() < 0.5
    if key in INTS:
        return rand_int(rng)
    if key == "command":
        return [rand_text(rng) for _ in range(rng.randrange(1, 4))]
    if key == "batch":
        return [
            [rand_text(rng)] if rng.random() < 0.9 else rand_value(rng) for _ in range(rng.randrange(1, 4))
        ]
    if key == "env":
        return {rand_text(rng): rand_text(rng) for _ in range(rng.randrange(4))}
    if key in ("after", "after_ok", "gpu_indices"):
        return [rand_int(rng) for _ in range(rng.randrange(3))]
    if key == "set":
        return rand_text(rng) if rng.random() < 0.7 else rand_int(rng)
    if key == "filter":  # no "where": test_a_bad_where_filter_is_a_bad_request covers it
        spec: dict[str, Any] = {}
        if rng.random() < 0.5:
            spec["states"] = [rng.choice([*STATES, rand_text(rng)]) for _ in range(rng.randrange(3))]
        for name in ("label", "sweep"):
            if rng.random() < 0.3:
                spec[name] = rand_text(rng)
        if rng.random() < 0.3:
            spec["ids"] = [rand_int(rng) for _ in range(rng.randrange(3))]
        return spec
    if key == "args":
        return {rand_text(rng): rand_value(rng) for _ in range(rng.randrange(3))}
    if key == "items":
        return [
            {"command": field_value(rng, "command"), "args": field_value(rng, "args")}
            if rng.random() < 0.8
            else rand_value(rng)
            for _ in range(rng.randrange(1, 3))
        ]
    return rand_text(rng)


def plausible(rng: random.Random, message: dict[Any, Any], key: Any) -> None:
    """Make one submit field valid, or drop it."""
    text = rand_text(rng).replace("\0", "")
    if key == "foreground":
        message[key] = False  # -f: the connection would wait for the job's end
    elif key in FLAGS:
        message[key] = rng.random() < 0.3
    elif key in ("cwd", "label", "env_info"):
        message[key] = text if key != "cwd" or rng.random() < 0.5 else "/"
    elif key == "env":
        message[key] = {text.replace("=", "") or "X": text}
    elif key == "slots":
        message[key] = rng.randint(1, 4)
    elif key in ("priority", "retry"):
        message[key] = rng.randint(0, 3)
    elif key in ("after", "gpu_indices", "gpus", "gpu_mem_mib", "log_name", "after_ok", "items", "snapshot"):
        del message[key]


def harmless_id(value: Any) -> bool:
    """Does a request naming this job id fail, or name no job of ours?"""
    if value is None:
        return False  # "the last job"
    if isinstance(value, bool) or not isinstance(value, int):
        return True
    return value < 0 or value >= NO_SUCH_JOB


def dangerous(message: Any) -> bool:
    """Could this (decoded) request change the jobs queued before fuzzing, start a random
    command, block the connection, or stop the daemon?  Such frames are never sent."""
    if not isinstance(message, dict) or not is_current_version(message.get("v")):
        return False
    op = message.get("op")
    if not isinstance(op, str) or op not in OPS:
        return False  # refused at the frame level
    if op not in FUZZ_OPS:
        return True  # "shutdown", "clear", or an op this test does not know yet
    if op in ("wait", "remove", "requeue", "priority"):
        return not harmless_id(message.get("id"))
    if op == "kill":
        everything = message.get("all", False)
        if everything is True:
            return True
        return isinstance(everything, bool) and not harmless_id(message.get("id"))
    if op == "slots":
        value = message.get("set")
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1_000_000
    if op == "logdir":
        value = message.get("set")
        return isinstance(value, str) and not value.startswith(SAFE_DIR)
    if op == "env":
        writes = "set" in message or message.get("unset") is True
        name = message.get("name")
        return writes and isinstance(name, str) and not name.startswith(SAFE_ENV)
    if op == "submit":
        after_ok = message.get("after_ok")
        if isinstance(after_ok, list) and any(
            isinstance(dep, int) and not isinstance(dep, bool) and dep >= NO_SUCH_JOB for dep in after_ok
        ):
            return False  # refused: a dependency that does not exist (or a malformed list)
        if message.get("foreground") is True:
            return True  # -f: a second reply when the job ends, and no new request meanwhile
        if "items" in message or "snapshot" in message:
            return True  # commands of their own; a snapshot directory that -r would delete
        batch = message.get("batch")
        if batch is None:
            return message.get("command") != ["true"]
        return isinstance(batch, list) and any(words != ["true"] for words in batch)
    return False


def fuzz_request(rng: random.Random) -> dict[Any, Any]:
    """A request map that is malformed somewhere, or harmless where it is valid."""
    op: Any = rng.choice(FUZZ_OPS) if rng.random() < 0.9 else rand_value(rng)
    message: dict[Any, Any] = {"v": PROTOCOL_VERSION if rng.random() < 0.95 else rand_value(rng), "op": op}
    for key in FIELDS.get(op, []) if isinstance(op, str) else []:
        if rng.random() < (0.9 if key in ("command", "cwd", "env") else 0.6):
            message[key] = field_value(rng, key)
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        message[rand_text(rng)] = rand_value(rng)
    # Steer the dangerous cases to harmless ones (dangerous() has the last word).
    if op == "submit":
        if rng.random() < 0.9:
            message["after_ok"] = [NO_SUCH_JOB]
        else:  # may well be valid: then it queues ``true`` behind the blocking job
            message["command"] = ["true"]
            if isinstance(message.get("batch"), list):
                message["batch"] = [["true"]] * len(message["batch"])
            for key in list(message):
                if rng.random() < 0.9:
                    plausible(rng, message, key)
    elif op in ("wait", "remove", "requeue", "priority", "kill") and not harmless_id(message.get("id")):
        message["id"] = rng.choice([NO_SUCH_JOB + rng.randrange(1000), -1, "0", 1.0, [0], 2**62 + 1])
    if op == "kill" and message.get("all") is True:
        message["all"] = rng.choice([False, "yes", 1, None])
    elif op == "slots" and dangerous(message):
        message["set"] = rng.choice([0, -1, 1_000_001, "2", 2.0, True])
    elif op == "logdir" and isinstance(message.get("set"), str):
        message["set"] = SAFE_DIR + message["set"]
    elif op == "env" and isinstance(message.get("name"), str) and dangerous(message):
        message["name"] = SAFE_ENV + message["name"]
    return message


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def fuzz_bytes(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.10:  # raw random bytes
        return rng.randbytes(rng.randrange(0, 65))
    if roll < 0.25:  # a random length prefix over a random body
        length = rng.choice(
            [0, 1, 2, 7, 100, 65535, MAX_FRAME, MAX_FRAME + 1, 0xFFFFFFFF, rng.getrandbits(32)]
        )
        body = rng.randbytes(min(length, rng.choice([0, 1, 5, 30, length, length]), 4096))
        return HEADER.pack(length) + body
    if roll < 0.45:  # a well-framed msgpack value of any kind
        body = pack(rand_value(rng))
        return HEADER.pack(len(body)) + body
    body = pack(fuzz_request(rng))
    if roll < 0.55:  # a request with a few bytes changed
        mutated = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        body = bytes(mutated)
    frame = HEADER.pack(len(body)) + body
    if roll < 0.60:  # a request cut short
        return frame[: rng.randrange(len(frame))]
    return frame


def is_current_version(value: Any) -> bool:
    """The daemon takes exactly the int PROTOCOL_VERSION (not True, not 1.0)."""
    return type(value) is int and value == PROTOCOL_VERSION


def expected(data: bytes) -> tuple[bytes, str, str | None, Any]:
    """What the daemon must do with ``data`` sent on a fresh or idle connection.

    Returns the bytes to send (at most one complete frame), the outcome ("pending": it waits
    for more; "close": an error reply, then it closes; "reply": it answers and keeps the
    connection), the error code for "close", and the decoded request for "reply".
    """
    if len(data) < HEADER.size:
        return data, "pending", None, None
    (length,) = HEADER.unpack(data[: HEADER.size])
    if length > MAX_FRAME:
        return data[: HEADER.size], "close", protocol.E_BAD_REQUEST, None
    if len(data) < HEADER.size + length:
        return data, "pending", None, None
    data = data[: HEADER.size + length]
    try:
        message = protocol.decode_body(data[HEADER.size :])
    except protocol.FrameError:
        return data, "close", protocol.E_BAD_REQUEST, None
    if not is_current_version(message.get("v")):
        return data, "close", protocol.E_VERSION, None
    op = message.get("op")
    if not isinstance(op, str) or op not in OPS:
        return data, "close", protocol.E_BAD_REQUEST, None
    return data, "reply", None, message


HANDLER_CODES = {protocol.E_BAD_REQUEST, protocol.E_NOT_FOUND, protocol.E_INVALID, protocol.E_QUEUE_FULL}


def test_fuzz_one_daemon_with_malformed_frames(spool: Spool) -> None:
    # Jobs that must come through intact: one finished, one running that holds the only slot
    # (so that any valid random submit, always of ``true``, stays queued), two queued.
    spool.ts("-S", "1")
    finished = spool.submit("echo", "finished")
    spool.ts("-w", str(finished))
    blocker = spool.submit("sh", "-c", "sleep 120")
    spool.wait_state(blocker, "running")
    queued = [spool.submit("echo", "queued one"), spool.submit("-L", "lbl", "echo", "queued two")]
    before = job_summary(spool)
    assert set(before) == {finished, blocker, *queued}
    pid = daemon_pid(spool)
    assert pid is not None

    fds_before = open_fds(pid)

    rng = random.Random(FUZZ_SEED)
    outcomes: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    answered: Counter[str] = Counter()  # ok replies by op
    sock: socket.socket | None = None
    devnull = os.open(os.devnull, os.O_WRONLY)
    started = time.monotonic()
    try:
        sent = 0
        while sent < FUZZ_FRAMES:
            data, outcome, code, message = expected(fuzz_bytes(rng))
            if outcome == "reply" and dangerous(message):
                outcomes["filtered"] += 1
                continue
            sent += 1
            where = f"frame {sent} (seed {FUZZ_SEED}): {data[:200]!r}"
            if sock is None:
                sock = connect(spool)
            try:
                # With descriptors, as ts -nf sends its terminal; not with a submit, whose leaks
                # test_descriptors_passed_with_a_refused_request_are_closed covers.
                if data and rng.random() < 0.05 and (message is None or message.get("op") != "submit"):
                    outcomes["with_fds"] += 1
                    rights = array.array("i", [devnull] * rng.randint(1, 3)).tobytes()
                    done = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
                    if done < len(data):
                        sock.sendall(data[done:])
                else:
                    sock.sendall(data)
            except OSError as exc:
                raise AssertionError(f"{where}: the daemon dropped the connection: {exc}") from None
            outcomes[outcome] += 1
            if outcome == "pending":  # the daemon waits for the rest: give up on this one
                sock.close()
                sock = None
                continue
            try:
                reply = recv_frame(sock)
            except TimeoutError:
                raise AssertionError(f"{where}: no reply within {IO_TIMEOUT} s") from None
            assert reply is not None, f"{where}: closed without a reply"
            assert isinstance(reply.get("ok"), bool), f"{where}: {reply!r}"
            if outcome == "close":
                assert reply["ok"] is False and reply["code"] == code, f"{where}: {reply!r}"
                assert_closed(sock)
                sock.close()
                sock = None
            elif not reply["ok"]:
                assert reply["code"] in HANDLER_CODES, f"{where}: {reply!r}"
                assert isinstance(reply["error"], str) and reply["error"], f"{where}: {reply!r}"
            codes[str(reply.get("code", "ok"))] += 1
            if reply["ok"]:
                answered[str(message["op"])] += 1
            if sock is not None and rng.random() < 0.05:
                sock.close()
                sock = None
    finally:
        os.close(devnull)
        if sock is not None:
            sock.close()
    elapsed = time.monotonic() - started
    print(f"fuzz: {FUZZ_FRAMES} frames in {elapsed:.1f} s, seed {FUZZ_SEED}: {dict(outcomes)}")
    print(f"fuzz: replies {dict(codes)}; answered ok {dict(answered)}")

    # Every path was exercised, not just the first check.
    assert outcomes["pending"] > 100 and outcomes["close"] > 1000 and outcomes["reply"] > 1000, outcomes
    assert codes["ok"] > 100 and codes[protocol.E_BAD_REQUEST] > 1000 and codes[protocol.E_NOT_FOUND] > 100, (
        codes
    )
    assert codes[protocol.E_VERSION] > 50, codes
    assert codes[protocol.E_INTERNAL] == 0, codes

    assert_same_daemon_answers(spool, pid)
    after = job_summary(spool)
    assert {job_id: after.get(job_id) for job_id in before} == before
    extra = {job_id: summary for job_id, summary in after.items() if job_id not in before}
    assert all(summary == ("true", "queued") for summary in extra.values()), extra
    for job_id, (_, state) in after.items():  # nothing may start once the blocker is killed
        if state in ("queued", "allocating"):
            spool.ts("-r", str(job_id))
    assert_same_daemon_answers(spool, pid)
    # Every connection and every passed descriptor was let go.
    wait_for(lambda: open_fds(pid) <= fds_before, what=f"the daemon's descriptors to return to {fds_before}")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    key=st.sampled_from([k for k in FIELDS["submit"] if k not in ("command", "batch", "after_ok")]),
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats()
        | st.text(max_size=20)
        | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ),
)
def test_any_value_in_any_submit_field_is_answered(spool: Spool, key: str, value: Any) -> None:
    """One daemon for all examples: a submit with one field replaced by anything gets a
    non-internal answer, and the connection stays usable.  Valid ones would run ``true``
    but cannot: a dependency that does not exist stops them."""
    if daemon_pid(spool) is None:
        start(spool)
    message = submit_request(spool, after_ok=[NO_SUCH_JOB], **{key: value})
    with connect(spool) as sock:
        reply = exchange(sock, message)
        assert reply["ok"] is False, reply
        assert reply["code"] in (protocol.E_BAD_REQUEST, protocol.E_NOT_FOUND), reply
        assert_serves(sock)


# -- slow and many clients ------------------------------------------------------------------


def test_slow_clients_do_not_hold_up_others(spool: Spool) -> None:
    pid = start(spool)
    silent = connect(spool, timeout=REQUEST_TIMEOUT + 10)
    opened = time.monotonic()
    drip = connect(spool)
    frame = protocol.encode(protocol.request("ping", padding="x" * 100))
    stop = threading.Event()

    def trickle() -> None:
        for byte in frame:
            if stop.wait(1.0):
                return
            try:
                drip.sendall(bytes([byte]))
            except OSError:
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
        assert dripper.is_alive(), "the trickling client was stopped early"
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


def test_socket_and_lock_file_are_owner_only(spool: Spool) -> None:
    start(spool)
    assert stat.S_IMODE(os.stat(spool.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(spool.socket) + ".lock").st_mode) == 0o600
    assert os.stat(spool.socket).st_uid == os.getuid()


# -- a peer with another uid ----------------------------------------------------------------

NOBODY = 65534
PEER = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
try:
    sock.connect(sys.argv[1])
except PermissionError:
    print("EACCES")
    sys.exit(0)
try:
    sock.sendall(bytes.fromhex(sys.argv[2]))
except OSError:
    pass
data = b""
while True:
    try:
        chunk = sock.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    data += chunk
print("REPLY " + data.hex())
"""


def _as_nobody(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-I", "-S", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
    )


@pytest.fixture
def world_spool() -> Iterator[Spool]:
    """A spool whose directories (not its socket) another user may traverse."""
    root = Path(tempfile.mkdtemp(prefix="ts-peer-", dir="/tmp"))
    os.chmod(root, 0o755)
    spool = Spool(root)
    try:
        yield spool
    finally:
        spool.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_peer_with_another_uid_is_refused(world_spool: Spool) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run a client as another uid")
    python = next(
        (
            p
            for p in (shutil.which("python3"), "/usr/bin/python3")
            if p and _as_nobody(p, "-c", "import socket").returncode == 0
        ),
        None,
    )
    if python is None:
        pytest.skip(f"no Python interpreter that uid {NOBODY} may run")
    spool = world_spool
    pid = start(spool)
    os.chmod(spool.socket.parent, 0o755)
    frame = protocol.encode(protocol.request("list")).hex()

    # First line of defence: the owner-only socket file.
    done = _as_nobody(python, "-c", PEER, str(spool.socket), frame)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "EACCES", done.stdout

    # Second: with the file opened up, the daemon itself refuses the peer (SO_PEERCRED).
    os.chmod(spool.socket, 0o666)
    try:
        done = _as_nobody(python, "-c", PEER, str(spool.socket), frame)
    finally:
        os.chmod(spool.socket, 0o600)
    assert done.returncode == 0, done.stderr
    kind, _, data = done.stdout.strip().partition(" ")
    assert kind == "REPLY", done.stdout
    reply = protocol.decode(bytes.fromhex(data))
    assert reply["ok"] is False and reply["code"] == protocol.E_DENIED, reply
    assert "text" not in reply
    assert_same_daemon_answers(spool, pid)


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
