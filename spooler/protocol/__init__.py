"""The protocol between ``ts`` (and the Python API) and the daemon, shared by both ends: frames,
the protocol version and the error codes here, and every request type, declared once, in
``spooler.protocol.requests`` (built by the client, parsed and validated by the daemon).

A frame is a 4-byte big-endian length followed by that many bytes of msgpack holding one map.
Every request map carries ``v`` (PROTOCOL_VERSION) and ``op`` (one of the request types of
``spooler.protocol.requests``); the daemon answers each request with one reply map: ``{"ok": True, ...}`` or
``{"ok": False, "error": "one line for the user", "code": ...}``.

This package is on the client's hot path, so it imports only struct: ``ts`` packs and unpacks
its frames with ``spooler.protocol.wire``, and msgpack (about 5 ms to import) is imported by the
functions here that the daemon and tools use.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 2  # 2: wait until=start, kill only, status.started

# Checked against the length prefix before any buffer is allocated.  A batch of 100,000
# commands with a large captured environment stays well below it.
MAX_FRAME = 64 * 1024 * 1024

HEADER = struct.Struct(">I")

# Error codes a client may branch on.
E_VERSION = "version"
E_BAD_REQUEST = "bad_request"
E_NOT_FOUND = "not_found"
E_INVALID = "invalid"
E_QUEUE_FULL = "queue_full"
E_DENIED = "denied"
E_INTERNAL = "internal"


class RequestError(Exception):
    """A request that cannot be carried out; ``code`` is a protocol error code (``E_*``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def bad(message: str) -> RequestError:
    return RequestError(E_BAD_REQUEST, message)


class FrameError(Exception):
    """A frame that cannot be decoded: oversized, truncated, not msgpack, or not a map."""


def encode(message: dict[str, Any]) -> bytes:
    import msgpack  # see the module docstring: not on ts's path

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
    import msgpack  # see the module docstring: not on ts's path

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


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors that came with a message (``SCM_RIGHTS``), on either side of a socket."""
    import array
    import socket

    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def request(op: str, **fields: Any) -> dict[str, Any]:
    """A request map with any fields (tests and tools; ``ts`` builds typed requests)."""
    return {"v": PROTOCOL_VERSION, "op": op, **fields}


def error_reply(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "error": message}
