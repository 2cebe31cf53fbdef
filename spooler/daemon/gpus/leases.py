"""Machine-wide GPU leases, shared by the spooler daemons of every user on one host.

The race: every user runs their own daemon, and each puts a job on a GPU that NVML shows free.  For
the seconds before that job has allocated memory the GPU still looks free to every other daemon,
so two users' daemons can start jobs on the same GPU.  A lease closes that window: a daemon takes
the GPU's lease before starting a job there, and a GPU leased by another daemon is not free,
whatever NVML says.

Why flock: a lease is a ``flock`` on ``<dir>/<uuid>.lock`` (exclusive: a job takes the whole GPU;
shared: jobs that share it, each declaring its memory).  The kernel drops a flock when the last
descriptor of its open file description closes, so the lease of a process that died, even by
``kill -9``, frees itself: no pid files to trust, nothing to clean.  Being tied to the open file
description, the lease can be handed to the job launcher with SCM_RIGHTS and lasts as long as the
job.  Lock files are never deleted: unlinking a locked file lets a newcomer lock a fresh inode
beside the old holder.

Why notes: a flock says neither who holds it nor how much memory a sharing job was promised.  Each
holder also keeps a JSON note, ``<uuid>.<uid>.<random hex>``, flocked for the lease's lifetime.  A
note counts only while it is locked (dead holders' notes are ignored) and only if the file's owner
is the uid in its name: the directory is sticky, like /tmp, so anyone may create files there but
only their owner may delete them, and nobody can fake or erase a lease in another user's name
(bar root and the directory's owner: the first daemon makes it, unless the admin makes it as root).

Where: ``/run/lock`` where it is shared (sticky and world-writable), else ``/dev/shm``.  Both are
tmpfs, emptied at boot, but systemd-logind (RemoveIPC=yes) deletes a user's files under /dev/shm
when their last session ends, which would silently drop the leases of a daemon left running.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import pwd
import re
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass

NOTE_CAP = 4096  # bytes: a note is a few dozen; anything larger is not ours to parse
_UUID = re.compile(r"[A-Za-z0-9_-]+\Z")
_NOTE = re.compile(r"(?P<uuid>[A-Za-z0-9_-]+)\.(?P<uid>[0-9]+)\.[0-9a-f]{16}\Z")
_TMP = ".tmp-"  # files being made; readers skip them (no note or lock file starts with a dot)
_TMP_MAX_AGE = 60.0  # a temporary file lives microseconds unless its maker died: then we tidy ours
# O_NONBLOCK: a FIFO planted under a lock file's name must not hang the daemon in open().
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DIR_NAME = "spooler-gpu-leases"


def default_lease_dir(env: Mapping[str, str]) -> str:
    """``$TS_GPU_LEASE_DIR``, else the first of /run/lock and /dev/shm that every user can share.

    The choice must come out the same for every user's daemon, so it depends only on the machine
    (the mode of those directories), never on who asks."""
    if env.get("TS_GPU_LEASE_DIR"):
        return env["TS_GPU_LEASE_DIR"]
    for base in ("/run/lock", "/dev/shm"):
        with contextlib.suppress(OSError):
            st = os.stat(base)
            if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and st.st_mode & stat.S_IWOTH:
                return os.path.join(base, _DIR_NAME)
    return os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else "/run/lock", _DIR_NAME)


class LeaseError(Exception):
    """The lease directory cannot be used; ``str()`` is one line saying why."""


@dataclass(frozen=True)
class LeaseHolder:
    """A live lease, from its note."""

    user: str  # the uid's name, or the uid itself where it has none
    uid: int
    owner: str  # identifies the daemon (its save-list path), stable across its restarts
    job_id: int
    mem_mib: int | None  # None: holds the GPU exclusively; else shares it, declaring this much
    pid: int  # the daemon that took it


@functools.lru_cache(maxsize=256)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except OSError:
        return False


def _why(exc: OSError) -> str:
    return "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)


class Lease:
    """A held lease.  Its ``fds`` keep it held, in whichever processes have them."""

    def __init__(self, uuid: str, mem_mib: int | None, lock_fd: int, note_fd: int, note_path: str) -> None:
        self.uuid = uuid
        self.mem_mib = mem_mib
        self.note_path = note_path
        self._fds = [lock_fd, note_fd]

    @property
    def fds(self) -> list[int]:
        """The lock file and the note: pass both (SCM_RIGHTS) to whatever is to hold the lease."""
        return list(self._fds)

    def close(self) -> None:
        """Close our copies, once handed on: the lease stays held while any process has them."""
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def release(self) -> None:
        """Give the lease up now (a job that could not start), for every holder of these fds.

        After :meth:`close` this only removes the note, and only if nobody holds it any more."""
        if self._fds:
            # Unlock before removing the note: meanwhile readers over-count us, never under-count.
            fcntl.flock(self._fds[0], fcntl.LOCK_UN)
            _unlink(self.note_path)
            self.close()
            return
        with contextlib.suppress(OSError):
            fd = os.open(self.note_path, _OPEN)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # fails while the job still holds it
                _unlink(self.note_path)
            finally:
                os.close(fd)


class LeaseDir:
    """The directory of leases, as seen by one daemon (``owner``: its save-list path)."""

    def __init__(self, path: str, owner: str) -> None:
        self.path = os.path.abspath(path)
        self.owner = owner
        self.uid = os.getuid()
        self._prepare()

    def _prepare(self) -> None:
        if not os.path.lexists(self.path):
            self._create()
        where = f"GPU lease directory {self.path}"
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            raise LeaseError(f"{where}: {_why(exc)}") from None
        mode, name = stat.S_IMODE(st.st_mode), _user(st.st_uid)
        sticky = mode & stat.S_ISVTX
        if stat.S_ISLNK(st.st_mode):
            why = "it is a symlink (set TS_GPU_LEASE_DIR to the directory itself)"
        elif not stat.S_ISDIR(st.st_mode):
            why = "not a directory"
        elif not sticky and st.st_uid != self.uid:
            why = f"owned by user {name} and not sticky (mode {mode:o}): our leases would not be safe there"
        elif not sticky and mode & 0o022:
            why = f"writable by others but not sticky (mode {mode:o}), so anyone could delete any lease"
        elif not os.access(self.path, os.W_OK | os.X_OK):
            why = f"we cannot write to it (owner {name}, mode {mode:o})"
        else:
            return
        raise LeaseError(f"{where}: {why}")

    def _create(self) -> None:
        # Made under a temporary name and renamed into place, so that no other daemon ever sees it
        # half-made (ours and not yet sticky) and refuses it.
        tmp = f"{self.path}{_TMP}{secrets.token_hex(8)}"
        try:
            os.mkdir(tmp, 0o700)
        except OSError as exc:
            raise LeaseError(f"cannot create GPU lease directory {self.path}: {_why(exc)}") from None
        try:
            os.chmod(tmp, 0o1777)  # explicitly: mkdir's mode goes through the umask
            os.rename(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(tmp)  # another daemon made it first: _prepare checks theirs

    def lock_path(self, uuid: str) -> str:
        if not _UUID.match(uuid):
            raise ValueError(f"invalid GPU UUID {uuid!r}")
        return os.path.join(self.path, f"{uuid}.lock")

    def _publish(self, path: str, content: bytes, lock: bool) -> int | None:
        """Make the file ``path`` complete at once: mode 0644, written, flocked if ``lock``.

        Built under a temporary name and hard-linked into place (link, unlike rename, never
        replaces a file); None when ``path`` exists already.  Returns its descriptor."""
        tmp = os.path.join(self.path, _TMP + secrets.token_hex(8))
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.fchmod(fd, 0o644)  # whatever the umask: every user must open it to flock or read it
            if lock:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.write(fd, content) != len(content):
                raise OSError(errno.ENOSPC, "short write", tmp)
            os.link(tmp, path)
        except FileExistsError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        finally:
            _unlink(tmp)
        return fd

    def _open_lock(self, path: str) -> int | str:
        """The lock file's descriptor, made if missing; or why it cannot be used."""
        for _ in range(3):
            try:
                fd = os.open(path, _OPEN)
            except FileNotFoundError:
                made = self._publish(path, b"", lock=False)
                if made is None:
                    continue  # another daemon made it just now: open theirs
                return made
            except OSError as exc:
                return self._unusable(path, _why(exc))
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                return fd
            os.close(fd)
            return self._unusable(path, "not a regular file", st.st_uid)
        return f"cannot use lock file {path}: it keeps vanishing"

    def _unusable(self, path: str, why: str, uid: int | None = None) -> str:
        if uid is None:
            try:
                uid = os.lstat(path).st_uid
            except OSError:
                return f"cannot use lock file {path}: {why}"
        return f"cannot use lock file {path} (owner {_user(uid)}): {why}"

    def acquire(self, uuid: str, *, mem_mib: int | None, job_id: int) -> Lease | str:
        """Lease the GPU, exclusively if ``mem_mib`` is None, else shared; never blocks or raises.

        Returns the :class:`Lease`, or one line saying why not (who holds it, or what is wrong)."""
        try:
            lock_path = self.lock_path(uuid)
        except ValueError as exc:
            return str(exc)
        note = {"owner": self.owner, "job": job_id, "mem_mib": mem_mib, "pid": os.getpid()}
        note_path = os.path.join(self.path, f"{uuid}.{self.uid}.{secrets.token_hex(8)}")
        lock_fd = note_fd = -1
        op = (fcntl.LOCK_EX if mem_mib is None else fcntl.LOCK_SH) | fcntl.LOCK_NB
        try:
            if os.path.islink(self.path) or not os.path.isdir(self.path):
                self._prepare()  # removed (an admin's cleanup) or replaced under us: check again
            # The note goes up before the lock is tried: a reader may briefly count a lease that
            # fails, never miss one that holds.
            made = self._publish(note_path, json.dumps(note).encode(), lock=True)
            if made is None:
                return f"cannot lease {uuid}: note {note_path} exists"
            note_fd = made
            for _ in range(3):
                got = self._open_lock(lock_path)
                if isinstance(got, str):
                    return got
                lock_fd = got
                try:
                    fcntl.flock(lock_fd, op)
                except BlockingIOError:
                    return self._held(uuid, note_path)
                if _same_file(lock_fd, lock_path):
                    lease = Lease(uuid, mem_mib, lock_fd, note_fd, note_path)
                    lock_fd = note_fd = -1
                    return lease
                # Unlinked or replaced after we opened it: a lock on it would guard nothing.
                os.close(lock_fd)
                lock_fd = -1
            return f"cannot lease {uuid}: its lock file keeps being replaced"
        except (OSError, LeaseError) as exc:
            why = _why(exc) if isinstance(exc, OSError) else str(exc)
            return f"cannot lease {uuid}: {why}"
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)
            if note_fd >= 0:
                _unlink(note_path)
                os.close(note_fd)

    def _held(self, uuid: str, own_note: str) -> str:
        others = [holder for path, holder in self._notes(uuid) if path != own_note]
        if not others:
            return "held by a process that left no note"
        parts = []
        for h in others:
            kind = "exclusive" if h.mem_mib is None else f"{h.mem_mib} MiB"
            mine = (h.uid, h.owner) == (self.uid, self.owner)
            parts.append(
                f"this spooler (job {h.job_id}, {kind})"
                if mine
                else f"another spooler (user {h.user}, {kind})"
            )
        return "held by " + ", ".join(dict.fromkeys(parts))

    def holders(self, uuid: str) -> list[LeaseHolder]:
        """The live leases on the GPU, ours included (filter them by ``(uid, owner)``)."""
        self.lock_path(uuid)  # validates the UUID
        return [holder for _, holder in self._notes(uuid)]

    def is_free(self, uuid: str, exclusive: bool = True) -> bool:
        """Whether a lease could be had now (any lease if ``exclusive``, else a shared one)."""
        try:
            fd = os.open(self.lock_path(uuid), _OPEN)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        try:  # the probe's lock goes with its descriptor, closed at once
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def _notes(self, uuid: str) -> list[tuple[str, LeaseHolder]]:
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        found = []
        for name in names:
            path = os.path.join(self.path, name)
            match = _NOTE.match(name)
            if match and match["uuid"] == uuid:
                holder = self._read_note(path, int(match["uid"]))
                if holder is not None:
                    found.append((path, holder))
            elif name.startswith(_TMP):
                with contextlib.suppress(OSError):
                    st = os.lstat(path)
                    if st.st_uid == self.uid and time.time() - st.st_mtime > _TMP_MAX_AGE:
                        os.unlink(path)
        return sorted(found, key=lambda item: (item[1].uid, item[1].owner, item[1].job_id))

    def _read_note(self, path: str, uid: int) -> LeaseHolder | None:
        try:
            fd = os.open(path, _OPEN)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
                return None  # forged: named for a uid that does not own it
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # live: its holder has it locked
            else:
                if uid == self.uid:
                    _unlink(path)  # stale and ours: tidy it (others' stale notes are theirs to remove)
                return None
            data = os.read(fd, NOTE_CAP + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            note = json.loads(data) if len(data) <= NOTE_CAP else None
        except ValueError:
            return None
        if not isinstance(note, dict):
            return None
        owner, job, mem, pid = note.get("owner"), note.get("job"), note.get("mem_mib"), note.get("pid")
        # type() is int, not isinstance: JSON true must not pass for job 1.
        mem_ok = mem is None or (type(mem) is int and mem >= 0)
        if isinstance(owner, str) and type(job) is int and type(pid) is int and mem_ok:
            return LeaseHolder(_user(uid), uid, owner, job, mem, pid)
        return None
