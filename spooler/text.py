"""Text helpers used on both sides of the socket: a value quoted briefly, a duration."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any


def brief(value: Any, limit: int = 40) -> str:
    """A value as it appears in an error message: JSON, on one line, cut short if long, so a
    value from a request or a file never grows the message."""
    import json

    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # e.g. a TOML date in a sweep file
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def duration(seconds: float | None) -> str:
    """Human time: ``0.52s``, ``42s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
