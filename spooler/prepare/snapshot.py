"""``ts --snapshot``: copy the code a job will run at the moment it is queued.

Edits made after queueing otherwise change what queued jobs run.  In a git repository the copy
holds what ``git ls-files`` lists (tracked files as they are on disk, uncommitted changes
included, plus new files that are not ignored); elsewhere the directory, minus caches and
virtual environments, up to a size limit.  The job runs in the copy, in the same relative
directory it was queued from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from spooler.errors import UsageError

DEFAULT_LIMIT_MB = 512
IGNORED_DIRS = frozenset(
    {".git", "__pycache__", ".venv", "venv", "node_modules", ".tox"}
    | {".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints"}
)
IGNORED_SUFFIXES = (".pyc", ".pyo")


@dataclass
class Snapshot:
    path: str  # the copy (removed with the last job that uses it)
    cwd: str  # where the job starts, inside the copy
    info: str  # what it is a copy of, for ts -i


def _git(cwd: str, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode(errors="surrogateescape") if done.returncode == 0 else None


def _limit() -> int:
    raw = os.environ.get("TS_SNAPSHOT_LIMIT_MB", "")
    return int(raw) * 1024 * 1024 if raw.isdigit() else DEFAULT_LIMIT_MB * 1024 * 1024


def _files_in_git(top: str) -> list[str] | None:
    listed = _git(top, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is None:
        return None
    return [name for name in dict.fromkeys(listed.split("\0")) if name]


def _files_in_directory(top: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS)
        for name in sorted(files):
            if not name.endswith(IGNORED_SUFFIXES):
                found.append(os.path.relpath(os.path.join(root, name), top))
    return found


def take(cwd: str, snapshots_dir: str) -> Snapshot:
    """Copy the tree around ``cwd`` into a new directory under ``snapshots_dir``."""
    top_line = _git(cwd, "rev-parse", "--show-toplevel")
    top = top_line.strip() if top_line else cwd
    files = _files_in_git(top) if top_line else None
    if files is None:
        top, files = cwd, _files_in_directory(cwd)
        info = f"copy of {cwd}"
    else:
        commit = (_git(top, "rev-parse", "HEAD") or "no commit yet").strip()
        dirty = bool((_git(top, "status", "--porcelain") or "").strip())
        info = f"git {commit}{' with uncommitted changes' if dirty else ''} of {top}"
    limit = _limit()
    total = 0
    for name in files:
        try:
            total += os.lstat(os.path.join(top, name)).st_size
        except OSError:
            continue  # deleted but not yet committed: not part of the tree as it is now
        if total > limit:
            raise UsageError(
                f"--snapshot: {top} holds more than {limit // 2**20} MiB of files to copy "
                "(raise TS_SNAPSHOT_LIMIT_MB, or ignore data files in .gitignore)"
            )
    os.makedirs(snapshots_dir, mode=0o700, exist_ok=True)
    dest = os.path.join(snapshots_dir, f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.mkdir(dest, 0o700)
    try:
        for name in files:
            source = os.path.join(top, name)
            target = os.path.join(dest, name)
            if not os.path.lexists(source) or (os.path.isdir(source) and not os.path.islink(source)):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    except OSError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise UsageError(f"--snapshot: could not copy {top}: {exc.strerror or exc}") from None
    relative = os.path.relpath(cwd, top)
    job_cwd = os.path.normpath(os.path.join(dest, relative))
    os.makedirs(job_cwd, exist_ok=True)
    return Snapshot(path=dest, cwd=job_cwd, info=info)
