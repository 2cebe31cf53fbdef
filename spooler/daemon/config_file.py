"""The daemon's config file: TOML at ``$TS_CONFIG``, else ``~/.config/spooler/config.toml``.

Read once when the daemon starts.  Every key a section may hold is declared in ``SECTIONS``
(its type and its check), so a typo is refused with its file and line instead of being
silently ignored, and a new section is one more entry there and one more dataclass.

    backend = "slurm"          # where jobs run: "local" (default) or "slurm"
    [slurm]
    partition = "gpu"
    account = "lab"
    qos = "normal"
    extra_args = ["--mem=16G"]
    max_in_flight = 1000       # at most this many of our jobs in SLURM at once
    poll_interval = 5          # seconds between squeue calls while jobs are in SLURM

A named queue (``ts --queue NAME``) may run its jobs elsewhere than the daemon's other queues,
so one daemon has a local GPU queue and a cluster queue side by side.  ``backend`` binds the
queue (the daemon's ``backend``, or ``TS_BACKEND``, is that of every queue without its own;
``default`` names the queue without a name); ``slots`` is its ``-S`` until ``ts --queue NAME
-S N`` changes it (for a queue in SLURM: how many of its jobs SLURM may run at once).  Its
``[slurm]`` table takes the place of the daemon's keys of the same name for its jobs:

    [queues.cluster]
    backend = "slurm"
    slots = 20
    [queues.cluster.slurm]     # optional; the daemon's [slurm] applies otherwise
    partition = "long"
    [queues.gpu]
    backend = "local"

The defaults the environment sets (each ``TS_*`` variable still wins over the file), and a shared
server's settings (``ts --daemon --multi-user`` reads ``/etc/spooler/config.toml``):

    admin_group = "gpu-admins" # its members may act on every job and change server settings
    socket = "/run/spooler/socket"  # a shared daemon's: ts uses it when no personal one runs
    [defaults]
    slots = 4
    logdir = "/var/log/spooler"
    gpu_free_perc = 90
    kill_grace = 10
    [limits]                   # per user, on a shared daemon
    max_running_per_user = 2
    max_gpus_per_user = 4
    max_queued_per_user = 500
    [limits.users.alice]       # one user's own limits
    max_gpus_per_user = 8
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spooler.daemon.fairshare import Limits, UserLimits
from spooler.protocol import RequestError
from spooler.protocol.requests import queue_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

BACKENDS = ("local", "slurm")


class ConfigError(Exception):
    """A config file that cannot be used: the message names the file, and the line if known."""


@dataclass
class SlurmConfig:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra_args: list[str] = field(default_factory=list)
    max_in_flight: int = 1000
    poll_interval: float = 5.0


# The keys of [slurm] a queue's own [queues.NAME.slurm] may set (the others are the daemon's).
QUEUE_SLURM_KEYS = ("partition", "account", "qos", "extra_args")


@dataclass
class QueueConfig:
    """A ``[queues.NAME]`` table."""

    backend: str | None = None  # None: the daemon's
    slots: int | None = None  # its -S at first (None: one, as for a queue a job names first)
    slurm: dict[str, Any] = field(default_factory=dict)  # its [slurm] keys, over the daemon's


@dataclass
class Defaults:
    """What the ``TS_*`` variables set; None: the variable's (or the built-in) default."""

    slots: int | None = None
    logdir: str | None = None
    gpu_free_perc: int | None = None
    kill_grace: float | None = None


@dataclass
class FileConfig:
    backend: str = "local"
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    path: str | None = None  # the file read, if any
    admin_group: str | None = None
    socket: str | None = None  # a shared (multi-user) daemon's socket
    defaults: Defaults = field(default_factory=Defaults)
    limits: Limits = field(default_factory=Limits)
    queues: dict[str, QueueConfig] = field(default_factory=dict)  # [queues.NAME], by name


Check = Callable[[Any], str]  # "" when the value is good, else what it should be


def _string(value: Any) -> str:
    return "" if isinstance(value, str) and value else "a non-empty string"


def _strings(value: Any) -> str:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return "" if ok else "a list of strings"


def _count(value: Any) -> str:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1_000_000
    return "" if ok else "a whole number from 1 to 1000000"


def _seconds(value: Any) -> str:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.05 <= value <= 3600
    return "" if ok else "a number of seconds from 0.05 to 3600"


def _percent(value: Any) -> str:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100
    return "" if ok else "a whole number from 1 to 100"


def _grace(value: Any) -> str:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 86400
    return "" if ok else "a number of seconds from 0 to 86400"


def _absolute(value: Any) -> str:
    return "" if isinstance(value, str) and value.startswith("/") else "an absolute path"


def _users(value: Any) -> str:
    return "" if isinstance(value, dict) else "tables [limits.users.NAME]"


def _backend(value: Any) -> str:
    return "" if value in BACKENDS else " or ".join(f'"{b}"' for b in BACKENDS)


def _table(value: Any) -> str:
    return "" if isinstance(value, dict) else "a table"


# section ("" is the top level) -> key -> check
LIMITS: dict[str, Check] = {
    "max_running_per_user": _count,
    "max_gpus_per_user": _count,
    "max_queued_per_user": _count,
}
SECTIONS: dict[str, dict[str, Check]] = {
    "": {"backend": _backend, "admin_group": _string, "socket": _absolute},
    "defaults": {"slots": _count, "logdir": _absolute, "gpu_free_perc": _percent, "kill_grace": _grace},
    "limits": {**LIMITS, "users": _users},
    "slurm": {
        "partition": _string,
        "account": _string,
        "qos": _string,
        "extra_args": _strings,
        "max_in_flight": _count,
        "poll_interval": _seconds,
    },
    "queues": {},  # [queues.NAME]: QUEUE, checked by _queues
}
QUEUE: dict[str, Check] = {"backend": _backend, "slots": _count, "slurm": _table}
QUEUE_SLURM: dict[str, Check] = {key: SECTIONS["slurm"][key] for key in QUEUE_SLURM_KEYS}


SYSTEM_CONFIG = "/etc/spooler/config.toml"  # a multi-user daemon's


def config_path(env: Mapping[str, str] = os.environ, multi_user: bool = False) -> str:
    if env.get("TS_CONFIG"):
        return env["TS_CONFIG"]
    if multi_user:
        return SYSTEM_CONFIG
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "spooler", "config.toml")


def load(env: Mapping[str, str] = os.environ, multi_user: bool = False) -> FileConfig:
    """The config file's settings (defaults where it is absent), then ``TS_BACKEND`` over them."""
    path = config_path(env, multi_user)
    config = FileConfig()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if env.get("TS_CONFIG"):
            raise ConfigError(f"TS_CONFIG={path}: no such file") from None
        raw = None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
    if raw is not None:
        config = parse(raw.decode("utf-8", errors="replace"), path)
    backend = env.get("TS_BACKEND")
    if backend:
        if backend not in BACKENDS:
            raise ConfigError(f"TS_BACKEND={backend!r} must be {_backend(None)}")
        config.backend = backend
    return config


def parse(text: str, path: str) -> FileConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    config = FileConfig(path=path)
    for key, value in data.items():
        if key == "queues":
            config.queues = _queues(text, path, value)
            continue
        if isinstance(value, dict) and key in SECTIONS and key:
            _section(text, path, key, value)
            continue
        _check(text, path, "", key, value)
        setattr(config, key, value)
    slurm = data.get("slurm")
    if isinstance(slurm, dict):
        config.slurm = SlurmConfig(**slurm)
    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        config.defaults = Defaults(**defaults)
    limits = data.get("limits")
    if isinstance(limits, dict):
        config.limits = _limits(text, path, limits)
    return config


def _limits(text: str, path: str, table: dict[str, Any]) -> Limits:
    users: dict[str, UserLimits] = {}
    for name, values in table.get("users", {}).items():
        section = f"limits.users.{name}"
        if not isinstance(values, dict):
            raise ConfigError(f"{where_in(path, text, 'limits', 'users')}: [{section}] must be a table")
        for key, value in values.items():
            _check(text, path, section, key, value, LIMITS)
        users[name] = _user_limits(values)
    return Limits(_user_limits(table), users)


def _queues(text: str, path: str, table: Any) -> dict[str, QueueConfig]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where_in(path, text, '', 'queues')}: queues must be tables [queues.NAME]")
    queues: dict[str, QueueConfig] = {}
    for name, values in table.items():
        section = f"queues.{name}"
        where = where_in(path, text, "", section)
        if not isinstance(values, dict):
            raise ConfigError(f"{where_in(path, text, 'queues', name)}: [{section}] must be a table")
        try:
            queue_name(name)
        except RequestError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        for key, value in values.items():
            _check(text, path, section, key, value, QUEUE)
        for key, value in values.get("slurm", {}).items():
            _check(text, path, f"{section}.slurm", key, value, QUEUE_SLURM)
        if name == "default" and "slots" in values:
            raise ConfigError(
                f"{where_in(path, text, section, 'slots')}: the default queue's slots are "
                "[defaults] slots (or TS_SLOTS), not [queues.default] slots"
            )
        queues[name] = QueueConfig(values.get("backend"), values.get("slots"), dict(values.get("slurm", {})))
    return queues


def _user_limits(values: Mapping[str, Any]) -> UserLimits:
    return UserLimits(
        values.get("max_running_per_user"), values.get("max_gpus_per_user"), values.get("max_queued_per_user")
    )


def _section(text: str, path: str, name: str, values: dict[str, Any]) -> None:
    for key, value in values.items():
        _check(text, path, name, key, value)


def _check(
    text: str, path: str, section: str, key: str, value: Any, keys: dict[str, Check] | None = None
) -> None:
    where = where_in(path, text, section, key)
    known = keys if keys is not None else SECTIONS.get(section, {})
    if key not in known:
        what = f"[{section}] key" if section else ("section" if isinstance(value, dict) else "key")
        choices = ", ".join(sorted(known)) if section or not isinstance(value, dict) else ""
        choices = choices or ", ".join(sorted(s for s in SECTIONS if s))
        raise ConfigError(f"{where}: unknown {what} {key!r} (known: {choices})")
    wanted = known[key](value)
    if wanted:
        name = f"{section}.{key}" if section else key
        raise ConfigError(f"{where}: {name} must be {wanted}, not {value!r}")


def where_in(path: str, text: str, section: str, key: str) -> str:
    """``FILE:LINE`` of a key (or a section), or ``FILE`` where the line is not found (a key
    set in an inline table or by a dotted key)."""
    line = line_of(text, section, key)
    return f"{path}:{line}" if line else path


def line_of(text: str, section: str, key: str) -> int:
    """The line where ``key`` is set in ``section`` (or where section ``key`` begins); 0 if not found."""
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:  # [a.b], [ a . "b" ]: a.b
            current = re.sub(r"\s*\.\s*", ".", header.group(1).strip()).replace('"', "").replace("'", "")
            if not section and (current == key or current.startswith(key + ".")):
                return number
            continue
        if current == section and re.match(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return number
    return 0
