"""What a job leaves behind when it ends, besides its exit status: its result file, whether
the disk holding its output filled up while it ran, and whether CUDA ran out of memory.
"""

from __future__ import annotations

import json
import os
import stat
import time

MAX_RESULT = 1024 * 1024  # bytes of $TS_RESULT_FILE kept with a job
# What a job's reason says when its result file was there but could not be kept; ``ts results``
# shows it in the row of the job (see result_problem).
NOT_JSON = "result file is not valid JSON: ignored"
TOO_LARGE = "result file larger than {limit} bytes: ignored"


def read_result(path: str, limit: int = MAX_RESULT, owner: int | None = None) -> tuple[object, str]:
    """(value, problem) from a job's ``$TS_RESULT_FILE``, which is removed; (None, "") if absent.

    ``owner``: a shared daemon's job wrote it in its owner's directory, so it is read only if it
    is a plain file of theirs (not a link, not another's file linked there): root reads it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if owner is not None and (st.st_uid != owner or not stat.S_ISREG(st.st_mode)):
                return None, ""
            data = f.read(limit + 1)
    except OSError:
        return None, ""
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    if len(data) > limit:
        return None, TOO_LARGE.format(limit=limit)
    try:
        return _storable(json.loads(data)), ""
    except ValueError:
        return None, NOT_JSON


_INT_RANGE = (-(2**63), 2**64 - 1)  # what the save-list (msgpack) can hold as an integer


def _storable(value: object) -> object:
    """JSON's integers have no bound, the save-list's do: a larger one is kept as a float (or,
    beyond a float, as its digits), never left to break the job's record."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        try:
            return float(value)
        except OverflowError:  # beyond even a float: its digits
            return str(value)
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    return value


def result_problem(reason: str) -> str | None:
    """Why a job that ended has no result although it wrote a file, from its reason."""
    for note in reason.split("; "):
        if note == NOT_JSON or (note.startswith("result file larger than ") and note.endswith(": ignored")):
            return note.removesuffix(": ignored")
    return None


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


def result_path(runs_dir: str, job_id: int, log_path: str | None = None) -> str:
    """The job's ``$TS_RESULT_FILE``: in the daemon's own directory, or, for a shared daemon's
    job (``log_path`` given), beside its log in its owner's directory, where it can write."""
    if log_path is not None:
        return os.path.join(os.path.dirname(log_path), f".ts-result.{job_id}.json")
    return os.path.join(runs_dir, f"{job_id}.result.json")


OOM_SIGNS = (b"CUDA out of memory", b"CUBLAS_STATUS_ALLOC_FAILED", b"CUDA_ERROR_OUT_OF_MEMORY")
_TAIL = 16 * 1024


def cuda_out_of_memory(*logs: str | None) -> bool:
    """Do the last lines of the job's output say that CUDA ran out of memory?  (PyTorch's
    ``torch.OutOfMemoryError`` says "CUDA out of memory"; cuBLAS and the driver API have their
    own words.)  Compressed logs are not read."""
    for path in logs:
        if not path or path.endswith(".gz"):
            continue
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _TAIL))
                tail = f.read(_TAIL)
        except OSError:
            continue
        if any(sign in tail for sign in OOM_SIGNS):
            return True
    return False
