"""The client's pure-Python msgpack (spooler.protocol.wire) against the msgpack package."""

from __future__ import annotations

import math
import socket
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from msgpack_values import nested

from spooler import protocol
from spooler.client import BULK_ITEMS, Client
from spooler.protocol import wire

_values = nested(max_size=20, max_leaves=60, key_size=20)


@settings(max_examples=400, deadline=None)
@given(_values)
def test_packs_as_msgpack_does(value: Any) -> None:
    assert wire.pack(value) == msgpack.packb(value, use_bin_type=True)


@settings(max_examples=400, deadline=None)
@given(_values)
def test_unpacks_as_msgpack_does(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    assert wire.unpack(data) == msgpack.unpackb(data, raw=False, strict_map_key=True)


@pytest.mark.parametrize("size", [0, 15, 16, 31, 32, 255, 256, 65535, 65536, 70000])
def test_sizes_at_every_boundary(size: int) -> None:
    for value in ("x" * size, b"x" * size, [1] * size, {str(i): i for i in range(size)}):
        data = msgpack.packb(value, use_bin_type=True)
        assert wire.pack(value) == data
        assert wire.unpack(data) == value


def test_single_floats_and_special_floats_unpack() -> None:
    assert wire.unpack(msgpack.packb(1.5, use_single_float=True)) == 1.5
    assert math.isnan(wire.unpack(wire.pack(math.nan)))
    assert wire.unpack(wire.pack(-math.inf)) == -math.inf


@pytest.mark.parametrize(
    "data",
    [b"", b"\x92\x01", b"\xa5abc", b"\x01\x02", b"\xc1", b"\xd6\xff\x00\x00\x00\x00", b"\x81\x01\x02"],
)
def test_bad_data_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        wire.unpack(data)


def test_what_msgpack_cannot_pack_is_refused() -> None:
    with pytest.raises(OverflowError):
        wire.pack(2**64)
    with pytest.raises(TypeError):
        wire.pack({1, 2})


@pytest.mark.parametrize("items", [1, BULK_ITEMS])
def test_the_client_frames_the_same_with_either_codec(items: int) -> None:
    """Small requests go through spooler.protocol.wire, a submission of many commands through
    msgpack (Client.bulk); the daemon reads the same frame either way, and so does the client
    read the reply."""
    message = {"v": 2, "op": "submit", "items": [{"command": ["true", str(i)]} for i in range(items)]}
    reply = {"ok": True, "ids": list(range(items)), "note": 1.5}
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5)
        theirs.settimeout(5)
        client = Client.__new__(Client)  # no connect(): wire it to the socketpair
        client.sock = ours
        client.send(message)
        assert client.bulk == (items >= BULK_ITEMS)
        frame = protocol.encode(message)
        assert theirs.recv(len(frame), socket.MSG_WAITALL) == frame
        theirs.sendall(protocol.encode(reply))
        assert client.receive() == reply
