"""The client's msgpack: the subset of the format that requests and replies use, in pure Python.

``ts`` is a short-lived process, and importing the msgpack package costs it about 5 ms on every
call (its C extension, and ``datetime`` and ``collections`` for its extension types), a third of
what the whole interpreter takes to start.  Requests and replies are small maps of strings,
numbers, booleans, lists and byte strings, which this module packs byte for byte as
``msgpack.packb(obj, use_bin_type=True)`` does and unpacks as ``msgpack.unpackb(data,
raw=False, strict_map_key=True)`` does (tests/test_protocol.py checks both against msgpack).
The daemon keeps the C msgpack (``spooler.protocol.encode``): it packs and unpacks big job
records all day long.

Extension types (timestamps) are not part of the protocol; unpacking one raises ValueError.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any


def pack(obj: Any) -> bytes:
    out: list[bytes] = []
    _pack(obj, out)
    return b"".join(out)


def _sized(n: int, small: int, small_limit: int, codes: tuple[int, int, int]) -> bytes:
    """The header of a string, byte string, array or map of ``n`` items: the fix form for
    ``n < small_limit`` (``small`` holds the type bits), else the 8-, 16- or 32-bit form."""
    if n < small_limit:
        return bytes((small | n,))
    code8, code16, code32 = codes
    if n < 0x100 and code8:
        return bytes((code8, n))
    if n < 0x10000:
        return bytes((code16,)) + n.to_bytes(2, "big")
    return bytes((code32,)) + n.to_bytes(4, "big")


def _pack_int(value: int) -> bytes:
    if 0 <= value < 0x80 or -0x20 <= value < 0:
        return (value & 0xFF).to_bytes(1, "big")
    if value >= 0:
        for code, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
            if value < 1 << (8 * size):
                return bytes((code,)) + value.to_bytes(size, "big")
    else:
        for code, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
            if value >= -(1 << (8 * size - 1)):
                return bytes((code,)) + value.to_bytes(size, "big", signed=True)
    raise OverflowError(f"{value} does not fit in 64 bits")


def _pack(obj: Any, out: list[bytes]) -> None:
    if obj is None:
        out.append(b"\xc0")
    elif obj is True or obj is False:
        out.append(b"\xc3" if obj else b"\xc2")
    elif isinstance(obj, int):
        out.append(_pack_int(obj))
    elif isinstance(obj, str):
        data = obj.encode()
        out += (_sized(len(data), 0xA0, 32, (0xD9, 0xDA, 0xDB)), data)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        out += (_sized(len(data), 0, 0, (0xC4, 0xC5, 0xC6)), data)
    elif isinstance(obj, float):
        import struct  # floats are rare in requests (a --time, a poll interval)

        out.append(b"\xcb" + struct.pack(">d", obj))
    elif isinstance(obj, (list, tuple)):
        out.append(_sized(len(obj), 0x90, 16, (0, 0xDC, 0xDD)))
        for item in obj:
            _pack(item, out)
    elif isinstance(obj, dict):
        out.append(_sized(len(obj), 0x80, 16, (0, 0xDE, 0xDF)))
        for key, value in obj.items():
            _pack(key, out)
            _pack(value, out)
    else:
        raise TypeError(f"cannot serialize {type(obj).__name__} object")


def unpack(data: bytes) -> Any:
    """The one object ``data`` holds; ValueError when it is not exactly one msgpack object."""
    reader = _Reader(data)
    try:
        obj = reader.read()
    except IndexError:
        raise ValueError("truncated msgpack data") from None
    if reader.pos != len(data):
        raise ValueError(f"{len(data) - reader.pos} extra bytes after the msgpack object")
    return obj


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        start = self.pos
        self.pos = end = start + size
        if end > len(self.data):
            raise IndexError(size)
        return self.data[start:end]

    def number(self, size: int, signed: bool = False) -> int:
        return int.from_bytes(self.take(size), "big", signed=signed)

    def read(self) -> Any:
        code = self.data[self.pos]
        self.pos += 1
        if code < 0x80:
            return code
        if code >= 0xE0:
            return code - 0x100
        if code < 0x90:
            return self.map(code & 0x0F)
        if code < 0xA0:
            return [self.read() for _ in range(code & 0x0F)]
        if code < 0xC0:
            return self.take(code & 0x1F).decode()
        if code in _CONSTANTS:
            return _CONSTANTS[code]
        if code in _UNSIGNED:
            return self.number(_UNSIGNED[code])
        if code in _SIGNED:
            return self.number(_SIGNED[code], signed=True)
        if code in _STRINGS:
            return self.take(self.number(_STRINGS[code])).decode()
        if code in _BINARIES:
            return self.take(self.number(_BINARIES[code]))
        if code in (0xDC, 0xDD):
            return [self.read() for _ in range(self.number(2 if code == 0xDC else 4))]
        if code in (0xDE, 0xDF):
            return self.map(self.number(2 if code == 0xDE else 4))
        if code in (0xCA, 0xCB):
            import struct  # floats are rare in replies

            return struct.unpack(">f" if code == 0xCA else ">d", self.take(4 if code == 0xCA else 8))[0]
        raise ValueError(f"unsupported msgpack type 0x{code:02x}")

    def map(self, size: int) -> dict[Any, Any]:
        result = {}
        for _ in range(size):
            key = self.read()
            if not isinstance(key, (str, bytes)):
                raise ValueError(f"{type(key).__name__} is not allowed for map key")
            result[key] = self.read()
        return result


_CONSTANTS = {0xC0: None, 0xC2: False, 0xC3: True}
_UNSIGNED = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_SIGNED = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_STRINGS = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_BINARIES = {0xC4: 1, 0xC5: 2, 0xC6: 4}
