"""What a job is started with: where its output goes and its environment.

Kept apart from the job list so each rule (where output goes, which variables a job sees) is
written once and can be read without the scheduling around it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

from spooler.jobs import Job
from spooler.runner import Launch


def place_output(spec: Launch, job: Job, logdir: str, terminal: bool) -> None:
    """Where the job's output goes: sets the spec's paths and ``job.log_path``.

    The launcher creates the files; a generated name (``ts-out.`` and 8 random hex digits) is
    created exclusively, so it can never overwrite anything.
    """
    if not job.store_output or terminal:
        return  # /dev/null, or the terminal of ts -nf
    if job.log_name:
        path = os.path.join(logdir, job.log_name)
        spec.exclusive = False
    else:
        path = os.path.join(logdir, f"ts-out.{os.urandom(4).hex()}{'.gz' if job.gzip else ''}")
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


_last_check: dict[str, tuple[float, bool]] = {}


def disk_full(path: str) -> bool:
    """Is the file system of ``path`` full?  Asked at most once a second per directory."""
    directory = os.path.dirname(path)
    now = time.monotonic()
    checked = _last_check.get(directory)
    if checked is not None and now - checked[0] < 1.0:
        return checked[1]
    try:
        fs = os.statvfs(directory)
        full = fs.f_bavail == 0
    except OSError:
        full = False
    _last_check[directory] = (now, full)
    return full
