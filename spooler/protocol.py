"""Wire protocol between the ``ts`` client and the daemon.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack holding one map.
Every request map carries ``v`` (PROTOCOL_VERSION) and ``op`` (one of the names in OPS); the
daemon answers each request with one reply map: ``{"ok": True, ...}`` or
``{"ok": False, "error": "one line for the user", "code": ...}``.

This module is on the client's hot path: it imports nothing heavier than struct and msgpack.
"""

from __future__ import annotations

import struct

import msgpack

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 2  # 2: wait until=start, kill only, status.started

# Checked against the length prefix before any buffer is allocated.  A batch of 100,000
# commands with a large captured environment stays well below it.
MAX_FRAME = 64 * 1024 * 1024

HEADER = struct.Struct(">I")

# Every request the daemon understands; the daemon's handler table must cover exactly these
# (a test checks it).  Kept as plain strings so the client needs no enum import.
OPS = frozenset(
    {
        "submit",  # queue one job or a batch
        "list",  # the job list, rendered or as data
        "info",  # one job's details
        "job_field",  # one attribute of one job (-s, -p, -o, -a, -F)
        "wait",  # reply when a job ends (-w, -f, -c, -t)
        "remove",  # -r
        "requeue",  # --requeue
        "priority",  # --priority N ID
        "kill",  # -k, -T
        "clear",  # -C
        "slots",  # -S
        "urgent",  # -u
        "swap",  # -U
        "count_running",  # -R
        "last_id",  # -q
        "logdir",  # --get_logdir / --set_logdir
        "env",  # --getenv / --setenv / --unsetenv
        "gpu_free_perc",  # --get_gpu_free_perc / --set_gpu_free_perc
        "gpu_status",  # --gpu_status
        "shutdown",  # -K
        "ping",
    }
)

# Error codes a client may branch on.
E_VERSION = "version"
E_BAD_REQUEST = "bad_request"
E_NOT_FOUND = "not_found"
E_INVALID = "invalid"
E_QUEUE_FULL = "queue_full"
E_DENIED = "denied"
E_INTERNAL = "internal"


class FrameError(Exception):
    """A frame that cannot be decoded: oversized, truncated, not msgpack, or not a map."""


def encode(message: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise FrameError(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """Length announced by a 4-byte header, rejected when above MAX_FRAME."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    return int(length)


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise FrameError(f"invalid msgpack: {exc or type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise FrameError(f"expected a map, got {type(message).__name__}")
    return message


def decode(frame: bytes) -> dict[str, Any]:
    """Decode one complete frame (header included); used by tests and tools."""
    if len(frame) < HEADER.size:
        raise FrameError("truncated frame header")
    length = frame_length(frame[: HEADER.size])
    body = frame[HEADER.size :]
    if len(body) != length:
        raise FrameError(f"truncated frame: {len(body)} of {length} bytes")
    return decode_body(body)


def request(op: str, **fields: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "op": op, **fields}


def error_reply(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "error": message}
