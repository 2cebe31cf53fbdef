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
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class FileConfig:
    backend: str = "local"
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    path: str | None = None  # the file read, if any


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


def _backend(value: Any) -> str:
    return "" if value in BACKENDS else " or ".join(f'"{b}"' for b in BACKENDS)


# section ("" is the top level) -> key -> check
SECTIONS: dict[str, dict[str, Check]] = {
    "": {"backend": _backend},
    "slurm": {
        "partition": _string,
        "account": _string,
        "qos": _string,
        "extra_args": _strings,
        "max_in_flight": _count,
        "poll_interval": _seconds,
    },
}


def config_path(env: Mapping[str, str] = os.environ) -> str:
    if env.get("TS_CONFIG"):
        return env["TS_CONFIG"]
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "spooler", "config.toml")


def load(env: Mapping[str, str] = os.environ) -> FileConfig:
    """The config file's settings (defaults where it is absent), then ``TS_BACKEND`` over them."""
    path = config_path(env)
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
        if isinstance(value, dict) and key in SECTIONS and key:
            _section(text, path, key, value)
            continue
        _check(text, path, "", key, value)
        setattr(config, key, value)
    slurm = data.get("slurm")
    if isinstance(slurm, dict):
        config.slurm = SlurmConfig(**slurm)
    return config


def _section(text: str, path: str, name: str, values: dict[str, Any]) -> None:
    for key, value in values.items():
        _check(text, path, name, key, value)


def _check(text: str, path: str, section: str, key: str, value: Any) -> None:
    where = f"{path}:{line_of(text, section, key)}"
    known = SECTIONS.get(section, {})
    if key not in known:
        what = f"[{section}] key" if section else ("section" if isinstance(value, dict) else "key")
        choices = ", ".join(sorted(known)) if section or not isinstance(value, dict) else ""
        choices = choices or ", ".join(sorted(s for s in SECTIONS if s))
        raise ConfigError(f"{where}: unknown {what} {key!r} (known: {choices})")
    wanted = known[key](value)
    if wanted:
        name = f"{section}.{key}" if section else key
        raise ConfigError(f"{where}: {name} must be {wanted}, not {value!r}")


def line_of(text: str, section: str, key: str) -> int:
    """The line where ``key`` is set in ``section`` (or where section ``key`` begins); 0 if not found."""
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[\s*([^\]\s]+)\s*\]", line)
        if header:
            current = header.group(1)
            if not section and current == key:
                return number
            continue
        if current == section and re.match(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return number
    return 0
