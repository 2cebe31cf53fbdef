"""The frame codec in isolation: no daemon, no sockets (besides one socketpair)."""

from __future__ import annotations

import math
import socket
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgpack_values import nested

from spooler import protocol
from spooler.protocol import HEADER, MAX_FRAME, FrameError
from spooler.protocol.requests import OPS

values = nested(max_size=5, max_leaves=20)
maps = st.dictionaries(st.text(), values, max_size=8)


def frame_of(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


# -- round trip -----------------------------------------------------------------------------


@given(maps)
def test_encode_decode_round_trip(message: dict[str, Any]) -> None:
    frame = protocol.encode(message)
    assert protocol.decode(frame) == message
    assert protocol.frame_length(frame[: HEADER.size]) == len(frame) - HEADER.size
    assert protocol.decode_body(frame[HEADER.size :]) == message


def test_header_is_four_byte_big_endian_length() -> None:
    frame = protocol.encode({"op": "ping"})
    body = msgpack.packb({"op": "ping"}, use_bin_type=True)
    assert frame == len(body).to_bytes(4, "big") + body
    assert HEADER.size == 4


def test_encode_refuses_a_message_above_the_frame_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_FRAME", 16)
    protocol.encode({"a": "x" * 8})  # 12 bytes of msgpack: fits
    with pytest.raises(FrameError, match="exceeds"):
        protocol.encode({"a": "x" * 64})


# -- truncation -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [b"", b"\x00", b"\x00\x00", b"\x00\x00\x00"])
def test_truncated_header(header: bytes) -> None:
    with pytest.raises(FrameError, match="truncated frame header"):
        protocol.decode(header)


@given(maps, st.data())
def test_every_proper_prefix_of_a_frame_is_rejected(message: dict[str, Any], data: st.DataObject) -> None:
    frame = protocol.encode(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(frame) - 1), label="cut")
    with pytest.raises(FrameError, match="truncated"):
        protocol.decode(frame[:cut])


def test_truncated_body() -> None:
    frame = protocol.encode({"v": 1, "op": "list"})
    with pytest.raises(FrameError, match=r"truncated frame: \d+ of \d+ bytes"):
        protocol.decode(frame[:-1])
    with pytest.raises(FrameError, match="truncated frame: 0 of"):
        protocol.decode(frame[: HEADER.size])


def test_trailing_bytes_after_the_body_are_rejected() -> None:
    frame = protocol.encode({"v": 1, "op": "list"})
    with pytest.raises(FrameError):
        protocol.decode(frame + b"\x00")


# -- the length limit -----------------------------------------------------------------------


@pytest.mark.parametrize("length", [MAX_FRAME + 1, 2**31, 0xFFFFFFFF])
def test_oversized_length_prefix_is_rejected(length: int) -> None:
    with pytest.raises(FrameError, match="exceeds"):
        protocol.frame_length(HEADER.pack(length))
    # decode() checks the announced length before it looks at (or waits for) the body: the
    # error is "exceeds", not "truncated", although no body byte follows.
    with pytest.raises(FrameError, match="exceeds"):
        protocol.decode(HEADER.pack(length))


@pytest.mark.parametrize("length", [0, 1, MAX_FRAME - 1, MAX_FRAME])
def test_lengths_up_to_the_limit_are_accepted(length: int) -> None:
    assert protocol.frame_length(HEADER.pack(length)) == length


def test_client_checks_the_length_before_reading_the_body() -> None:
    """The client's receive path rejects an oversized reply without waiting for (or allocating) it."""
    from spooler.client import Client

    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5)
        client = Client.__new__(Client)  # no connect(): wire it to the socketpair
        client.sock = ours
        theirs.sendall(HEADER.pack(0xFFFFFFFF))
        with pytest.raises(FrameError, match="exceeds"):
            client.receive()


# -- bodies that are not one msgpack map ----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",  # nothing at all
        b"\xc1",  # the one byte msgpack never uses
        b"\x92\x01",  # an array of two holding one item
        b"\x81\xa1a",  # a map whose only value is missing
        b"\xdd\xff\xff\xff\xff",  # an array announcing 4 G items
        b"\xdb\xff\xff\xff\xff",  # a str announcing 4 GiB
        b"\xa2\xff\xfe",  # a str that is not UTF-8
        b"\x80\x80",  # two maps: trailing data
        b"\x91" * 100_000,  # nested deeper than any unpacker allows
    ],
    ids=["empty", "c1", "short-array", "short-map", "huge-array", "huge-str", "bad-utf8", "extra", "deep"],
)
def test_invalid_msgpack(body: bytes) -> None:
    with pytest.raises(FrameError):
        protocol.decode_body(body)
    with pytest.raises(FrameError):
        protocol.decode(frame_of(body))


@pytest.mark.parametrize(
    "value",
    [[1, 2], [], 5, -1, "op", b"bytes", None, True, 1.5],
    ids=["list", "empty-list", "int", "negative", "str", "bin", "nil", "bool", "float"],
)
def test_msgpack_that_is_not_a_map(value: Any) -> None:
    body = msgpack.packb(value, use_bin_type=True)
    with pytest.raises(FrameError, match="expected a map"):
        protocol.decode_body(body)
    with pytest.raises(FrameError, match="expected a map"):
        protocol.decode(frame_of(body))


def test_map_with_non_string_keys_is_rejected() -> None:
    body = msgpack.packb({1: "x"}, use_bin_type=True)
    with pytest.raises(FrameError):
        protocol.decode_body(body)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_to_a_map_or_raise_frame_error(data: bytes) -> None:
    for decoder, arg in (
        (protocol.decode_body, data),
        (protocol.decode, data),
        (protocol.decode, frame_of(data)),
    ):
        try:
            message = decoder(arg)
        except FrameError:
            continue
        assert isinstance(message, dict)


@given(values)
def test_any_msgpack_value_decodes_to_a_map_or_raises_frame_error(value: Any) -> None:
    body = msgpack.packb(value, use_bin_type=True)
    if isinstance(value, dict):
        assert protocol.decode_body(body) == value
    else:
        with pytest.raises(FrameError):
            protocol.decode_body(body)


def test_nan_survives_the_codec() -> None:
    message = protocol.decode(protocol.encode({"x": math.nan}))
    assert math.isnan(message["x"])


# -- requests, replies, and the handler table -----------------------------------------------


def test_request_carries_version_and_op() -> None:
    assert protocol.request("ping") == {"v": protocol.PROTOCOL_VERSION, "op": "ping"}
    message = protocol.request("list", format="json", width=80)
    assert message == {"v": protocol.PROTOCOL_VERSION, "op": "list", "format": "json", "width": 80}
    assert protocol.decode(protocol.encode(message)) == message


@given(
    st.sampled_from(sorted(OPS)),
    st.dictionaries(st.text().filter(lambda k: k not in ("v", "op")), values, max_size=4),
)
def test_request_round_trips_with_any_fields(op: str, fields: dict[str, Any]) -> None:
    message = protocol.request(op, **fields)
    assert message["v"] == protocol.PROTOCOL_VERSION and message["op"] == op
    assert protocol.decode(protocol.encode(message)) == message


def test_error_reply_shape() -> None:
    reply = protocol.error_reply(protocol.E_BAD_REQUEST, "nope")
    assert reply == {"ok": False, "code": "bad_request", "error": "nope"}


def test_protocol_version_is_a_positive_int() -> None:
    assert isinstance(protocol.PROTOCOL_VERSION, int) and protocol.PROTOCOL_VERSION >= 1


def test_handler_table_covers_exactly_the_protocol_ops() -> None:
    from spooler.daemon.handlers import HANDLERS

    assert set(HANDLERS) == set(OPS)
    assert all(callable(handler) for handler in HANDLERS.values())


def test_ops_are_plain_strings() -> None:
    assert all(isinstance(op, str) and op for op in OPS)
