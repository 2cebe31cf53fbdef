"""Durations as users write them (``--time``, ``--begin +2h``): SLURM's forms and suffixed numbers.

Shared by the client (``ts --time``, sweep files, the Python API) and the daemon
(``TS_DEFAULT_TIME``), so a limit means the same wherever it is written.
"""

from __future__ import annotations

MAX_DURATION = 366 * 24 * 3600  # a limit longer than a year is a mistake, not a plan

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds, from ``90s``, ``45m``, ``2h``, ``3d``, ``1:30:00`` or SLURM's ``MM``, ``MM:SS``,
    ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS`` (a bare number is minutes, as in SLURM).
    Raises ValueError with a message that says what is accepted."""
    value = text.strip().lower()
    try:
        seconds = _seconds(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 45m, 2h, 1:30:00 or 2-00:00:00)") from None
    if seconds < 1:
        raise ValueError(f"{text!r}: a duration must be at least one second")
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than a year")
    return seconds


def _seconds(value: str) -> int:
    if value and value[-1] in _UNITS and _number(value[:-1]):
        return round(float(value[:-1]) * _UNITS[value[-1]])
    days = 0
    if "-" in value:
        day_text, value = value.split("-", 1)
        days = _whole(day_text)
        parts = [_whole(p) for p in value.split(":")]
        if not 1 <= len(parts) <= 3:
            raise ValueError(value)
        hours, minutes, seconds = [*parts, 0, 0][:3]
    else:
        parts = [_whole(p) for p in value.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        elif len(parts) == 3:
            hours, minutes, seconds = parts
        else:
            raise ValueError(value)
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _number(text: str) -> bool:
    """A plain decimal like ``90`` or ``1.5`` (no sign, exponent, ``inf`` or ``nan``)."""
    return text.isascii() and text.replace(".", "", 1).isdigit()


def _whole(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def format_duration(seconds: float) -> str:
    """``1d 2h``, ``2h 5m``, ``4m 10s``, ``12s``: the two largest units, for ``ts -i``."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{n}{unit}" for n, unit in parts[:2])


def parse_begin(text: str, now: float) -> int:
    """When a job queued with ``--begin TEXT`` may start, in seconds since the epoch: ``HH:MM``
    (or ``HH:MM:SS``; the next such time of day), an ISO 8601 date-time (local time unless it
    names its zone), or ``+DURATION`` from now (``+30s``, ``+2h``).  Raises ValueError for a
    time that cannot be read or that is past."""
    import datetime

    value = text.strip()
    if value.startswith("+"):
        return int(now) + parse_duration(value[1:])
    clock = value.split(":")
    if 2 <= len(clock) <= 3 and all(p.isascii() and p.isdigit() and len(p) <= 2 for p in clock):
        hour, minute, second = (int(p) for p in [*clock, "0"][:3])
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"{text!r} is not a time of day")
        today = datetime.datetime.fromtimestamp(now)
        at = today.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if at.timestamp() <= now:  # that time today is past: tomorrow's
            at = (today + datetime.timedelta(days=1)).replace(hour=hour, minute=minute, second=second)
            at = at.replace(microsecond=0)
        return int(at.timestamp())
    try:
        at = datetime.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use HH:MM, an ISO 8601 date-time (2026-05-01T22:00) or +DURATION (+30m)"
        ) from None
    stamp = at.timestamp()
    if stamp <= now:
        raise ValueError(f"{text!r} is in the past")
    if stamp > now + MAX_DURATION:
        raise ValueError(f"{text!r} is more than a year away")
    return int(-(-stamp // 1))  # never earlier than asked
