"""What a job is started with: its output files and its environment.

Kept apart from the job list so each rule (where output goes, which variables a job sees) is
written once and can be read without the scheduling around it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping

from spooler.jobs import Job

_OPEN = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def open_output(job: Job, logdir: str, terminal: tuple[int, int] | None) -> tuple[int, int]:
    """(stdout, stderr) descriptors for the job; sets ``job.log_path`` when output is stored.

    ``terminal``: the client's own stdout and stderr, passed by ``ts -nf``.
    """
    if not job.store_output:
        if terminal is not None:
            return terminal
        devnull = os.open(os.devnull, os.O_WRONLY)
        return devnull, devnull
    if terminal is not None:
        for fd in set(terminal):
            os.close(fd)
    if job.log_name:
        path = os.path.join(logdir, job.log_name)
        out = os.open(path, _OPEN, 0o600)
    else:
        out, path = tempfile.mkstemp(prefix="ts-out.", suffix=".gz" if job.gzip else "", dir=logdir)
    job.log_path = path
    err = os.open(path + ".e", _OPEN, 0o600) if job.stderr_apart else out
    return out, err


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


def read_result(path: str, limit: int) -> tuple[object, str]:
    """(value, problem) from a job's ``$TS_RESULT_FILE``, which is removed; (None, "") if absent."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None, ""
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    if len(data) > limit:
        return None, f"result file larger than {limit} bytes: ignored"
    try:
        return json.loads(data), ""
    except ValueError:
        return None, "result file is not valid JSON: ignored"


def disk_full(path: str) -> bool:
    try:
        fs = os.statvfs(os.path.dirname(path))
    except OSError:
        return False
    return fs.f_bavail == 0
