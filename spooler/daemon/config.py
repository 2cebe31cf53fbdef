"""Daemon settings: read from the environment at start, changed by requests, saved in the save-list."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spooler import paths
from spooler.daemon.config_file import FileConfig, QueueConfig, SlurmConfig
from spooler.daemon.fairshare import Limits
from spooler.daemon.queues import Queue, queue_records, queues_from_records
from spooler.durations import parse_duration

POLICIES = ("backfill", "greedy", "fcfs")  # see spooler.daemon.scheduler

DEFAULT_MAX_FINISHED = 1000
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_KILL_GRACE = 10.0
# Where a multi-user (system) daemon keeps its state and its users' logs by default.
SYSTEM_STATE = "/var/lib"  # the save-list goes to /var/lib/spooler/
SYSTEM_LOGDIR = "/var/log/spooler"


def _int_env(env: Mapping[str, str], name: str, default: int, minimum: int) -> tuple[int, str]:
    raw = env.get(name)
    if raw is None or raw == "":
        return default, ""
    try:
        value = int(raw)
    except ValueError:
        return default, f"{name}={raw!r} is not a number; using {default}"
    if value < minimum:
        return default, f"{name}={raw!r} must be at least {minimum}; using {default}"
    return value, ""


def _float_env(env: Mapping[str, str], name: str, default: float, warnings: list[str]) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        warnings.append(f"{name}={raw!r} is not a number of seconds; using {default:g}")
        return default
    return value


@dataclass
class Settings:
    """What ``ts -S``, ``--set_logdir`` and ``--setenv`` change; persisted across restarts."""

    slots: int = 1
    logdir: str = "/tmp"
    env_overrides: dict[str, str | None] = field(default_factory=dict)  # None: unset for jobs
    gpu_free_perc: int = 90
    queues: dict[str, Queue] = field(default_factory=dict)  # named queues (default: ``slots``)

    def to_record(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "logdir": self.logdir,
            "env_overrides": self.env_overrides,
            "gpu_free_perc": self.gpu_free_perc,
            "queues": queue_records(self.queues),
        }

    def update_from_record(self, record: Mapping[str, Any]) -> None:
        if isinstance(record.get("slots"), int) and record["slots"] >= 0:  # 0: drained
            self.slots = record["slots"]
        if isinstance(record.get("logdir"), str):
            self.logdir = record["logdir"]
        if isinstance(record.get("env_overrides"), dict):
            self.env_overrides = dict(record["env_overrides"])
        if isinstance(record.get("gpu_free_perc"), int) and 1 <= record["gpu_free_perc"] <= 100:
            self.gpu_free_perc = record["gpu_free_perc"]
        if "queues" in record:
            self.queues = queues_from_records(record["queues"])

    def slots_of(self, queue: str | None) -> int:
        """A queue's -S (None: the default queue's); 0 for a queue that does not exist."""
        if queue is None:
            return self.slots
        named = self.queues.get(queue)
        return named.slots if named is not None else 0


def apply_file(config: StartupConfig, file: FileConfig, env: Mapping[str, str] = os.environ) -> None:
    """The config file's settings: its defaults where no ``TS_*`` variable (or TMPDIR) set one,
    and a multi-user daemon's admin group and per-user limits (fair share applies either way)."""
    defaults = file.defaults
    if defaults.slots is not None and not env.get("TS_SLOTS"):
        config.settings.slots = defaults.slots
    if defaults.logdir is not None and not env.get("TMPDIR"):
        config.settings.logdir = defaults.logdir
    if defaults.gpu_free_perc is not None:
        config.settings.gpu_free_perc = defaults.gpu_free_perc
    if defaults.kill_grace is not None and not env.get("TS_KILL_GRACE"):
        config.kill_grace = float(defaults.kill_grace)
    config.backend, config.slurm = file.backend, file.slurm  # TS_BACKEND already over the file's
    config.queues = file.queues
    if config.multi_user:
        config.admin_group = file.admin_group
        config.user_limits = file.limits


@dataclass
class StartupConfig:
    """Read once when the daemon starts (``TS_*`` variables of the environment it starts in)."""

    savelist: str
    settings: Settings
    max_finished: int
    max_connections: int
    queue_limit: int | None  # TS_MAXCONN also bounds the queue for -B, as in the original
    fsync: bool
    kill_grace: float
    warnings: list[str]
    policy: str = "backfill"  # TS_SCHED_POLICY: how GPU jobs are ordered (see scheduler)
    default_time: int | None = None  # TS_DEFAULT_TIME: the limit of a job given no --time
    backend: str = "local"  # where jobs run: TS_BACKEND, or the config file's backend
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # the config file's [slurm]
    queues: dict[str, QueueConfig] = field(default_factory=dict)  # its [queues.NAME]: backend, slots

    # ts --daemon --multi-user: one queue for every local user, each job run as its submitter
    multi_user: bool = False
    admin_group: str | None = None  # its members may act on every job and change settings
    user_limits: Limits | None = None  # per-user limits and fair share (multi-user)

    @classmethod
    def from_env(
        cls, socket: str, env: Mapping[str, str] = os.environ, multi_user: bool = False
    ) -> StartupConfig:
        """``multi_user``: the system daemon's state lives under /var/lib/spooler and its logs
        under /var/log/spooler (per user) unless TS_SAVELIST and TMPDIR say otherwise."""
        warnings: list[str] = []
        slots, warn = _int_env(env, "TS_SLOTS", 1, 1)
        warnings += [warn] if warn else []
        max_finished, warn = _int_env(env, "TS_MAXFINISHED", DEFAULT_MAX_FINISHED, 0)
        warnings += [warn] if warn else []
        maxconn, warn = _int_env(env, "TS_MAXCONN", 0, 1)
        warnings += [warn] if warn else []
        logdir = paths.tmpdir(env) if env.get("TMPDIR") or not multi_user else SYSTEM_LOGDIR
        settings = Settings(slots=slots, logdir=logdir)
        policy = env.get("TS_SCHED_POLICY") or "backfill"
        if policy not in POLICIES:
            warnings.append(f"TS_SCHED_POLICY={policy!r} is not one of {', '.join(POLICIES)}; using backfill")
            policy = "backfill"
        default_time = None
        if env.get("TS_DEFAULT_TIME"):
            try:
                default_time = parse_duration(env["TS_DEFAULT_TIME"])
            except ValueError as exc:
                warnings.append(f"TS_DEFAULT_TIME: {exc}; jobs without --time have no limit")
        if multi_user and not env.get("TS_SAVELIST"):
            env = {**env, "XDG_STATE_HOME": SYSTEM_STATE}
        return cls(
            multi_user=multi_user,
            savelist=paths.savelist_path(socket, env),
            settings=settings,
            max_finished=max_finished,
            max_connections=maxconn or DEFAULT_MAX_CONNECTIONS,
            queue_limit=maxconn or None,
            fsync=env.get("TS_FSYNC", "1") not in ("0", "no", "off", "false"),
            kill_grace=_float_env(env, "TS_KILL_GRACE", DEFAULT_KILL_GRACE, warnings),
            warnings=warnings,
            policy=policy,
            default_time=default_time,
        )
