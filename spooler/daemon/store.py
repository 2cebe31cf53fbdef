"""The save-list: a snapshot file plus an append-only journal beside it.

Every change to the job list is appended to ``<savelist>.journal`` as one framed record
(length, CRC-32, msgpack).  Appending costs the same whatever the number of jobs; the journal is
folded into the snapshot (``<savelist>``, written to a temporary file, fsynced and renamed)
when it has grown as large as the snapshot, so compaction is amortised constant per change.

Records are idempotent ("job N now looks like this", "job N is gone", "setting K is V"), so
replaying a journal on top of a snapshot that already contains part of it is harmless.  A
record torn by a crash is detected by its CRC and everything before it is kept.  A file that
cannot be read is moved aside (never deleted) and the daemon starts from what it could recover.

Compaction runs in a forked child while the daemon goes on serving (:meth:`Store.rotate`): the
journal is renamed ``<savelist>.journal.prev`` and a fresh one started; the child writes the
snapshot of the state at the fork, and the previous journal is deleted once it is in place.
Loading replays the snapshot, the previous journal, then the journal, so a crash at any point of
this leaves a complete list.

fsync policy: :meth:`Store.commit` fsyncs the journal; the daemon calls it before it answers a
request that changed the list (so a printed job id is on disk), unless ``TS_FSYNC=0``.  State
changes made by the daemon itself (a job started or ended) are written at once but fsynced with
the next commit: a daemon crash loses none of them, a power cut may lose the last few.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

FORMAT = "spooler-savelist"
FORMAT_VERSION = 1
_RECORD = struct.Struct(">II")  # length, crc32 of the body
_MAX_RECORD = 256 * 1024 * 1024
MIN_COMPACT_BYTES = 4 * 1024 * 1024
COMPACT_RETRY_SECONDS = 10.0


@dataclass
class Loaded:
    """What a save-list held: plain records, turned into jobs by the daemon."""

    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    next_id: int = 0
    warnings: list[str] = field(default_factory=list)

    def apply(self, record: dict[str, Any]) -> None:
        op = record["o"]
        if op == "job":
            job = record["j"]
            self.jobs[int(job["id"])] = job
            self.next_id = max(self.next_id, int(job["id"]) + 1)
        elif op == "del":
            self.jobs.pop(int(record["i"]), None)
        elif op == "env":
            self.envs[str(record["k"])] = dict(record["e"])
        elif op == "set":
            self.settings[str(record["k"])] = record["v"]
        elif op == "next":
            self.next_id = max(self.next_id, int(record["i"]))
        else:
            raise ValueError(f"unknown record type {op!r}")


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, chunks: Iterable[bytes]) -> int:
    """Replace ``path`` with the bytes of ``chunks`` so that a crash leaves the old or the new
    file, whole.  Returns the size written."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = 0
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            size += len(view)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path)
    return size


@dataclass
class Snapshot:
    """What a compaction writes.  Job records are made one at a time as the file is written,
    so the whole list is never held twice in memory."""

    jobs: Iterable[dict[str, Any]]
    job_count: int
    envs: dict[str, dict[str, str]]
    settings: dict[str, Any]
    next_id: int


def _packed(snapshot: Snapshot, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The snapshot file's bytes (one msgpack map, as the loader reads it), in chunks."""
    packer = msgpack.Packer(use_bin_type=True)
    head = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "written": time.time(),
        "next_id": snapshot.next_id,
        "settings": snapshot.settings,
        "envs": snapshot.envs,
    }
    buf = bytearray(packer.pack_map_header(len(head) + 1))
    for key, value in head.items():
        buf += packer.pack(key)
        buf += packer.pack(value)
    buf += packer.pack("jobs")
    buf += packer.pack_array_header(snapshot.job_count)
    written = 0
    for record in snapshot.jobs:
        buf += packer.pack(record)
        written += 1
        if len(buf) >= chunk_size:
            yield bytes(buf)
            buf.clear()
    if written != snapshot.job_count:
        raise RuntimeError(f"snapshot of {snapshot.job_count} jobs produced {written}")
    yield bytes(buf)


class Store:
    def __init__(self, path: str, *, fsync: bool = True) -> None:
        self.path = path
        self.journal_path = path + ".journal"
        self.prev_journal_path = path + ".journal.prev"  # being folded into the snapshot
        self.fsync = fsync
        self._fd = -1
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        self._unsynced = False
        self._missing = False  # a change could not be appended: only a snapshot can save it
        self._missing_at_rotation = False
        self._retry_at = 0.0  # after a failed compaction: when to try again if no room shows

    # -- loading -------------------------------------------------------------------------

    def load(self) -> Loaded:
        loaded = Loaded()
        self._load_snapshot(loaded)
        self._load_journal(loaded, self.prev_journal_path)
        self._load_journal(loaded, self.journal_path)
        return loaded

    def _move_aside(self, path: str, why: str, loaded: Loaded) -> None:
        aside = f"{path}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        os.replace(path, aside)
        loaded.warnings.append(f"save-list file {path} {why}; moved it to {aside}")

    def _load_snapshot(self, loaded: Loaded) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        self._snapshot_bytes = len(data)
        try:
            snap = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if not isinstance(snap, dict) or snap.get("format") != FORMAT:
                raise ValueError("not a save-list")
        except Exception as exc:
            self._move_aside(self.path, f"could not be read ({exc})", loaded)
            return
        version = snap.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            # Keep the newer file for the newer version, and take what this version understands.
            aside = f"{self.path}.v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
            with open(aside, "wb") as f:
                f.write(data)
            loaded.warnings.append(
                f"save-list {self.path} was written by a newer version (format {version}); "
                f"a copy is kept as {aside}"
            )
        try:
            for job in snap.get("jobs", []):
                loaded.jobs[int(job["id"])] = job
            loaded.envs.update(snap.get("envs", {}))
            loaded.settings.update(snap.get("settings", {}))
            loaded.next_id = max([int(snap.get("next_id", 0)), *(i + 1 for i in loaded.jobs)])
        except Exception as exc:
            loaded.warnings.append(f"save-list {self.path}: part of it could not be read ({exc})")

    def _load_journal(self, loaded: Loaded, path: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        pos = 0
        while pos < len(data):
            problem = ""
            if pos + _RECORD.size > len(data):
                problem = "ends in a torn record"
            else:
                length, crc = _RECORD.unpack_from(data, pos)
                body = data[pos + _RECORD.size : pos + _RECORD.size + length]
                if length > _MAX_RECORD or len(body) != length:
                    problem = "ends in a torn record"
                elif zlib.crc32(body) != crc:
                    problem = "has a damaged record"
                else:
                    try:
                        loaded.apply(msgpack.unpackb(body, raw=False, strict_map_key=False))
                    except Exception as exc:
                        problem = f"has a record that could not be applied ({exc})"
            if problem:
                # A torn tail is the unacknowledged write a crash interrupted; anything else is
                # kept aside for the user.  Either way the records before it stand.
                if problem != "ends in a torn record":
                    self._move_aside(path, f"{problem} at byte {pos}", loaded)
                else:
                    loaded.warnings.append(f"journal {path} {problem} at byte {pos}; ignored it")
                break
            pos += _RECORD.size + length

    # -- writing -------------------------------------------------------------------------

    def open(self) -> None:
        self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._journal_bytes = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            self.commit()
            os.close(self._fd)
            self._fd = -1

    def append(self, record: dict[str, Any]) -> None:
        """Append one record; on failure (a full disk) the journal is cut back to its last whole
        record, so a later append never lands behind a torn one, and the error is raised."""
        body: bytes = msgpack.packb(record, use_bin_type=True)
        frame = _RECORD.pack(len(body), zlib.crc32(body)) + body
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._journal_bytes)
            raise
        self._journal_bytes += len(frame)
        self._unsynced = True

    def put_job(self, record: dict[str, Any]) -> None:
        self.append({"o": "job", "j": record})

    def delete_job(self, job_id: int) -> None:
        self.append({"o": "del", "i": job_id})

    def put_env(self, key: str, env: dict[str, str]) -> None:
        self.append({"o": "env", "k": key, "e": env})

    def put_setting(self, key: str, value: Any) -> None:
        self.append({"o": "set", "k": key, "v": value})

    def commit(self) -> None:
        """Make everything appended so far durable (when fsync is on)."""
        if self._unsynced and self._fd >= 0:
            if self.fsync:
                os.fsync(self._fd)
            self._unsynced = False

    @property
    def needs_compaction(self) -> bool:
        due = self._journal_bytes > max(MIN_COMPACT_BYTES, self._snapshot_bytes)
        if not (due or self._missing):
            return False
        # After a failure (a full disk), not at every change: once there is room again, or
        # after a while.
        return not self._retry_at or time.monotonic() >= self._retry_at or self._has_room()

    def _has_room(self) -> bool:
        try:
            fs = os.statvfs(os.path.dirname(self.path) or ".")
        except OSError:
            return False
        # The new snapshot is at most the old one plus the journal, and is written beside it.
        needed = self._snapshot_bytes + self._journal_bytes + 64 * 1024
        return fs.f_bavail * fs.f_frsize >= needed

    def missed(self) -> None:
        """A change the daemon made could not be appended (a full disk): the next snapshot,
        written as soon as there is room, must carry it."""
        self._missing = True

    def postpone_compaction(self) -> None:
        """A compaction failed (a full disk): try again once there is room, or after a while."""
        self._retry_at = time.monotonic() + COMPACT_RETRY_SECONDS

    def write_snapshot(self, snapshot: Snapshot) -> int:
        """Replace the snapshot file with ``snapshot``; its size in bytes."""
        return write_atomic(self.path, _packed(snapshot))

    def compact(self, snapshot: Snapshot) -> None:
        """Write the whole state as the new snapshot and start an empty journal, here and now."""
        self._snapshot_bytes = self.write_snapshot(snapshot)
        self._missing = False
        self._retry_at = 0.0
        # Records now in the snapshot may stay in the journals if we crash before they are
        # removed: replaying them is harmless (see the module docstring).
        self.drop_prev_journal()
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            if self.fsync:
                os.fsync(self._fd)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.truncate(self.journal_path, 0)
        self._journal_bytes = 0
        self._unsynced = False

    def rotate(self) -> bool:
        """Begin a compaction in the background: the journal so far becomes the previous journal
        and appends go to a new one.  The caller then writes the snapshot of the state as it is
        now (in a child process) and calls :meth:`rotated`.  False, and nothing done, while a
        previous journal is still there (an earlier background compaction failed)."""
        if os.path.exists(self.prev_journal_path):
            return False
        self.commit()
        os.rename(self.journal_path, self.prev_journal_path)
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            os.rename(self.prev_journal_path, self.journal_path)  # as it was: appends go on
            raise
        try:
            _fsync_dir(self.path)
        except OSError:
            os.close(fd)
            os.unlink(self.journal_path)
            os.rename(self.prev_journal_path, self.journal_path)
            raise
        os.close(self._fd)
        self._fd = fd
        self._journal_bytes = 0
        # The snapshot of this moment carries what was missing; what is missed from now on
        # must wait for the next one.
        self._missing_at_rotation, self._missing = self._missing, False
        return True

    def rotated(self, ok: bool) -> None:
        """The background compaction ended: if the snapshot was written, the previous journal is
        in it.  If not, the previous journal stays, and the next compaction is done in place."""
        if ok:
            self._snapshot_bytes = os.stat(self.path).st_size
            self._retry_at = 0.0
            self.drop_prev_journal()  # the child did; a no-op unless it died just before
        else:
            self._missing = self._missing or self._missing_at_rotation

    def drop_prev_journal(self) -> None:
        """The snapshot now holds what the previous journal held (called by the compaction
        child as soon as its snapshot is in place, so that a daemon dying meanwhile does not
        leave older records to be replayed over it)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.prev_journal_path)
            _fsync_dir(self.path)
