"""Field-by-field checks of request maps: types, ranges and lengths, one clear message each."""

from __future__ import annotations

from typing import Any

from spooler.daemon.errors import RequestError

MAX_ARGS = 100_000
MAX_WORD = 1024 * 1024
MAX_ENV = 10_000


def bad(message: str) -> RequestError:
    return RequestError("bad_request", message)


def optional_int(msg: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(f"{key} must be a whole number")
    if not lo <= value <= hi:
        raise bad(f"{key} must be between {lo} and {hi}, not {value}")
    return value


def integer(msg: dict[str, Any], key: str, lo: int, hi: int, default: int) -> int:
    value = optional_int(msg, key, lo, hi)
    return default if value is None else value


def job_id(msg: dict[str, Any], key: str = "id") -> int | None:
    return optional_int(msg, key, 0, 2**62)


def flag(msg: dict[str, Any], key: str) -> bool:
    value = msg.get(key, False)
    if not isinstance(value, bool):
        raise bad(f"{key} must be true or false")
    return value


def optional_str(msg: dict[str, Any], key: str, max_len: int = 4096) -> str | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"{key} must be a string")
    if len(value) > max_len:
        raise bad(f"{key} is longer than {max_len} characters")
    if "\0" in value:
        raise bad(f"{key} contains a NUL character")
    return value


def string(msg: dict[str, Any], key: str, max_len: int = 4096) -> str:
    value = optional_str(msg, key, max_len)
    if value is None:
        raise bad(f"{key} is required")
    return value


def command(value: Any, what: str = "command") -> list[str]:
    if not isinstance(value, list) or not value:
        raise bad(f"{what} must be a non-empty list of words")
    if len(value) > MAX_ARGS:
        raise bad(f"{what} has more than {MAX_ARGS} words")
    for word in value:
        if not isinstance(word, str) or len(word) > MAX_WORD or "\0" in word:
            raise bad(f"{what} words must be strings without NUL characters")
    if not value[0].strip():
        raise bad("empty command")
    return list(value)


def id_list(msg: dict[str, Any], key: str) -> list[int]:
    value = msg.get(key) or []
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise bad(f"{key} must be a list of job ids")
    return list(dict.fromkeys(value))


def environment(msg: dict[str, Any], key: str = "env") -> dict[str, str]:
    value = msg.get(key)
    if not isinstance(value, dict) or len(value) > MAX_ENV:
        raise bad(f"{key} must be a map of at most {MAX_ENV} variables")
    for name, val in value.items():
        if not isinstance(name, str) or not isinstance(val, str) or "\0" in name + val or "=" in name:
            raise bad(f"{key} must map variable names to string values")
    return dict(value)
