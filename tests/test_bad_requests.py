"""A real daemon given broken frames and bad requests, one at a time, on its Unix socket."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
from conftest import Spool
from raw_socket import (
    assert_closed,
    assert_same_daemon_answers,
    assert_serves,
    connect,
    exchange,
    recv_frame,
    start,
    submit_request,
)

from spooler import protocol
from spooler.daemon.server import REQUEST_TIMEOUT
from spooler.protocol import HEADER, MAX_FRAME, PROTOCOL_VERSION


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
