"""One real daemon fuzzed with malformed frames and random request fields: it survives intact."""

from __future__ import annotations

import array
import os
import random
import socket
import time
from collections import Counter
from typing import Any

import msgpack
from conftest import Spool, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_socket import (
    IO_TIMEOUT,
    NO_SUCH_JOB,
    assert_closed,
    assert_same_daemon_answers,
    assert_serves,
    connect,
    daemon_pid,
    exchange,
    job_summary,
    open_fds,
    recv_frame,
    start,
    submit_request,
)

from spooler import protocol
from spooler.protocol import HEADER, MAX_FRAME, PROTOCOL_VERSION
from spooler.protocol.requests import OPS

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
    "results": ["filter", "sort", "best", "pick_best", "format", "ids_only", "color"],
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
         "gpu_jobs", "data", "no_block", "ids_only", "pick_best"}  # fmt: skip
INTS = {"slots", "width", "signal", "id", "a", "b", "gpus", "gpu_mem_mib", "priority", "retry"}
STATES = ["queued", "allocating", "running", "finished", "skipped", "lost", "failed"]
WORDS = ["default", "json", "tab", "xml", "run", "added", "state", "status", "pid", "output", "label",
         "command", "true", ".", "..", "/", "/tmp", "PATH", "A=B", "HOME",
         "table", "csv", "markdown", "-id", "state,-time", "min:id", "max:result.x"]  # fmt: skip
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
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1_000_000
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
        message["set"] = rng.choice([-1, 1_000_001, "2", 2.0, True])
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
