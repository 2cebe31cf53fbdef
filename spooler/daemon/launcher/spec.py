"""What one launch carries, built in the daemon and sent to the launcher: the command, its
environment, and where its output goes.

Kept apart from the job list so each rule (where output goes, which variables a job sees) is
written once and can be read without the scheduling around it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import msgpack

from spooler.daemon.spare_logs import SpareLogs, generated_name
from spooler.jobs import Job


@dataclass
class Launch:
    """What it takes to start one job (descriptors passed by ``ts -nf`` travel beside it)."""

    job_id: int
    argv: list[str]
    shell: bool
    cwd: str
    env: dict[str, str]
    result_path: str  # $TS_RESULT_FILE: removed before the job starts, so none is stale
    stdout_path: str | None = None  # the log; None: /dev/null (or the descriptors passed)
    stderr_path: str | None = None  # -E: stderr apart; None: with stdout
    exclusive: bool = True  # a generated log name must be new; a -O name is truncated
    compress: bool = False  # -z: gzip stdout (and stderr when it goes to the same place)
    # How many of the descriptors sent with the launch (the last ones) the launcher keeps open
    # until the job ends: the job's machine-wide GPU leases, which last as long as they are open.
    kept_fds: int = 0
    # A multi-user daemon's job runs as its owner: the launcher (root) switches to this uid
    # (with the account's groups) just before exec, and creates the log as that user.
    uid: int | None = None
    umask: int | None = None
    # The daemon created the (generated, empty) log file ahead of the launch: open, not create.
    precreated: bool = False

    def to_wire(self) -> bytes:
        data: bytes = msgpack.packb(
            [
                self.job_id, self.argv, self.shell, self.cwd, self.env, self.result_path,
                self.stdout_path, self.stderr_path, self.exclusive, self.compress, self.kept_fds,
                self.uid, self.umask, self.precreated,
            ]
        )  # fmt: skip
        return data

    @classmethod
    def from_wire(cls, data: bytes) -> Launch:
        fields = msgpack.unpackb(data, raw=False)
        return cls(*fields)


def place_output(
    spec: Launch, job: Job, logdir: str, terminal: bool, spares: SpareLogs | None = None
) -> None:
    """Where the job's output goes: sets the spec's paths and ``job.log_path``.

    The launcher creates the files; a generated name (``ts-out.`` and 8 random hex digits) is
    created exclusively, so it can never overwrite anything.  ``spares``: the daemon's log files
    made ahead (see ``spare_logs``), one of which a plain generated log may be.
    """
    if not job.store_output or terminal:
        return  # /dev/null, or the terminal of ts -nf
    if job.uid is not None:
        # Multi-user: each user's logs in a directory of their own, which only they may read.
        logdir = os.path.join(logdir, job.user or str(job.uid))
    if job.log_name:
        path = os.path.join(logdir, job.log_name)
        spec.exclusive = False
    elif spares is not None and job.uid is None and not job.gzip and (spare := spares.take(logdir)):
        path = spare
        spec.precreated = True
    else:
        path = generated_name(logdir, job.gzip)
    spec.stdout_path = path
    spec.stderr_path = path + ".e" if job.stderr_apart else None
    job.log_path = path


def environment(
    captured: Mapping[str, str], overrides: Mapping[str, str | None], job: Job, result_file: str
) -> dict[str, str]:
    """The submitter's environment, the daemon's ``--setenv``/``--unsetenv``, then ours."""
    env = dict(captured)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PYTHONUNBUFFERED"] = "1"
    if job.assigned_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, job.assigned_gpus))
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as NVML and nvidia-smi do
    elif env.get("TS_KEEP_CUDA_VISIBLE_DEVICES", "") in ("", "0"):
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job sees no GPU, as in the original
    env["TS_ATTEMPT"] = str(job.attempt)
    if job.args is not None:
        env["TS_ARGS"] = json.dumps(job.args)
    env["TS_RESULT_FILE"] = result_file
    return env
