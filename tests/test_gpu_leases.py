"""Machine-wide GPU leases: real lock files, real processes, real uids (as root)."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import select
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import wait_for

from spooler.daemon.gpus.leases import Lease, LeaseDir, LeaseError, LeaseHolder, default_lease_dir

U = "GPU-0a1b2c3d-test"
NOBODY = 65534
OTHER = 65533  # a uid with no passwd entry: named by number
ME = pwd.getpwuid(os.getuid()).pw_name
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another uid")


class Child:
    """A forked process that runs ``fn`` (as ``uid`` if given), reports its JSON result, and stays
    alive, keeping whatever it opened, until :meth:`finish`."""

    parent_ends: ClassVar[set[int]] = set()  # of live children's pipes: no other child may keep them

    def __init__(self, fn: Callable[[], Any], uid: int | None = None) -> None:
        self._result, wr = os.pipe()
        hold, self._hold = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                for fd in {self._result, self._hold} | Child.parent_ends:
                    os.close(fd)
                if uid is not None:
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                try:
                    out = fn()
                except Exception as exc:
                    out = {"error": repr(exc)}
                os.write(wr, json.dumps(out).encode() + b"\n")
                os.read(hold, 1)  # until the parent closes its end
            finally:
                os._exit(0)
        os.close(wr)
        os.close(hold)
        Child.parent_ends |= {self._result, self._hold}
        self.done = False

    def result(self, timeout: float = 5.0) -> Any:
        data = b""
        end = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([self._result], [], [], max(0.0, end - time.monotonic()))
            assert ready, "the child did not report in time"
            chunk = os.read(self._result, 4096)
            assert chunk, "the child died without reporting"
            data += chunk
        return json.loads(data)

    def finish(self, kill: bool = False) -> None:
        if self.done:
            return
        self.done = True
        if kill:
            os.kill(self.pid, signal.SIGKILL)
        Child.parent_ends -= {self._result, self._hold}
        os.close(self._hold)  # lets it exit
        os.close(self._result)
        os.waitpid(self.pid, 0)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(fn: Callable[[], Any], uid: int | None = None) -> Child:
        children.append(Child(fn, uid))
        return children[-1]

    yield start
    for child in children:
        child.finish(kill=True)


@pytest.fixture
def path() -> Iterator[str]:
    """Where a lease directory goes: under a 0755 directory, so that other uids can reach it."""
    base = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(base, 0o755)
    yield os.path.join(base, "leases")
    shutil.rmtree(base)


def files(path: str) -> list[str]:
    return sorted(os.listdir(path))


def notes(path: str) -> list[str]:
    return [name for name in files(path) if not name.endswith(".lock")]


def test_default_dir() -> None:
    assert default_lease_dir({"TS_GPU_LEASE_DIR": "/x/y"}) == "/x/y"
    default = default_lease_dir({})
    assert os.path.basename(default) == "spooler-gpu-leases"
    assert os.path.dirname(default) in ("/run/lock", "/dev/shm")


def test_exclusive_excludes_exclusive_and_shared(path: str) -> None:
    a, b = LeaseDir(path, "a"), LeaseDir(path, "b")
    lease = a.acquire(U, mem_mib=None, job_id=1)
    assert isinstance(lease, Lease)
    assert b.acquire(U, mem_mib=None, job_id=2) == f"held by another spooler (user {ME}, exclusive)"
    assert b.acquire(U, mem_mib=100, job_id=3) == f"held by another spooler (user {ME}, exclusive)"
    assert a.acquire(U, mem_mib=100, job_id=4) == "held by this spooler (job 1, exclusive)"
    assert not b.is_free(U, exclusive=True) and not b.is_free(U, exclusive=False)
    assert len(notes(path)) == 1  # the refused ones took their notes away
    lease.release()
    assert notes(path) == []
    assert b.is_free(U)
    assert isinstance(b.acquire(U, mem_mib=None, job_id=2), Lease)


def test_shared_admits_shared_and_excludes_exclusive(path: str) -> None:
    a, b = LeaseDir(path, "a"), LeaseDir(path, "b")
    first, second = a.acquire(U, mem_mib=1000, job_id=1), b.acquire(U, mem_mib=2000, job_id=2)
    assert isinstance(first, Lease) and isinstance(second, Lease)
    reason = b.acquire(U, mem_mib=None, job_id=3)
    assert reason == f"held by another spooler (user {ME}, 1000 MiB), this spooler (job 2, 2000 MiB)"
    assert b.is_free(U, exclusive=False) and not b.is_free(U, exclusive=True)
    first.release()
    assert not b.is_free(U, exclusive=True)
    second.release()
    assert isinstance(b.acquire(U, mem_mib=None, job_id=3), Lease)


def test_racing_daemons_in_a_new_directory_get_one_lease(path: str, spawn: Callable[..., Child]) -> None:
    go_r, go_w = os.pipe()

    def race() -> str:
        os.close(go_w)
        os.read(go_r, 1)  # all start together, against a directory and lock file nobody made yet
        got = LeaseDir(path, f"d{os.getpid()}").acquire(U, mem_mib=None, job_id=1)
        return "won" if isinstance(got, Lease) else got

    children = [spawn(race) for _ in range(8)]
    os.close(go_w)
    results = [child.result() for child in children]
    assert results.count("won") == 1, results
    assert all(r == "won" or r.startswith("held by another spooler") for r in results), results
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o1777


def test_killed_holder_frees_its_lease(path: str, spawn: Callable[..., Child]) -> None:
    child = spawn(lambda: repr(LeaseDir(path, "child").acquire(U, mem_mib=None, job_id=5)))
    assert "Lease" in child.result()
    ours = LeaseDir(path, "parent")
    assert ours.acquire(U, mem_mib=None, job_id=1) == f"held by another spooler (user {ME}, exclusive)"
    child.finish(kill=True)
    wait_for(lambda: ours.is_free(U), timeout=5, what="the killed child's lease to free itself")
    assert ours.holders(U) == []
    assert notes(path) == []  # its note, stale and of our uid, was tidied away
    assert isinstance(ours.acquire(U, mem_mib=None, job_id=1), Lease)


def test_fds_handed_to_another_process_keep_the_lease(path: str, spawn: Callable[..., Child]) -> None:
    ours, theirs = socket.socketpair()

    def keep() -> int:  # the job launcher: forked before the lease exists, so it gets it only by message
        _, fds, _, _ = socket.recv_fds(theirs, 1, 8)
        theirs.sendall(b"k")
        theirs.recv(1)  # until told to let go
        return len(fds)

    launcher = spawn(keep)
    daemon, other = LeaseDir(path, "daemon"), LeaseDir(path, "other")
    lease = daemon.acquire(U, mem_mib=None, job_id=7)
    assert isinstance(lease, Lease) and len(lease.fds) == 2
    socket.send_fds(ours, [b"x"], lease.fds)
    assert ours.recv(1) == b"k"
    lease.close()
    assert lease.fds == []
    assert not other.is_free(U)
    assert [h.job_id for h in other.holders(U)] == [7]
    ours.sendall(b"x")
    assert launcher.result() == 2
    launcher.finish()
    wait_for(lambda: other.is_free(U), timeout=5, what="the lease to end with the launcher")
    lease.release()  # after close(): removes the note, now stale
    assert notes(path) == []


def test_holders_report_user_job_and_memory(path: str) -> None:
    a, b = LeaseDir(path, "/home/a/.ts/list"), LeaseDir(path, "b")
    uid, pid = os.getuid(), os.getpid()
    first, second = a.acquire(U, mem_mib=1500, job_id=11), b.acquire(U, mem_mib=0, job_id=12)
    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert sorted(a.holders(U), key=lambda h: h.job_id) == [
        LeaseHolder(ME, uid, "/home/a/.ts/list", 11, 1500, pid),
        LeaseHolder(ME, uid, "b", 12, 0, pid),
    ]
    assert a.holders("GPU-other") == []
    first.release()
    second.release()
    third = a.acquire(U, mem_mib=None, job_id=13)
    assert isinstance(third, Lease)
    assert b.holders(U) == [LeaseHolder(ME, uid, "/home/a/.ts/list", 13, None, pid)]
    with pytest.raises(ValueError):
        a.holders("../etc")
    assert a.acquire("GPU 1/..", mem_mib=None, job_id=1) == "invalid GPU UUID 'GPU 1/..'"


def test_stale_and_bad_notes_are_ignored_and_our_stale_ones_removed(path: str) -> None:
    leases = LeaseDir(path, "a")
    good = {"owner": "x", "job": 1, "mem_mib": None, "pid": 1}
    stale = Path(path, f"{U}.{os.getuid()}.{'0' * 16}")
    stale.write_text(json.dumps(good))
    live_bad = {"1" * 16: "not json", "2" * 16: json.dumps({**good, "job": "1"}), "3" * 16: "[1]"}
    live_bad["4" * 16] = json.dumps({**good, "owner": "x" * 5000})  # over the size cap
    held = []
    for name, text in live_bad.items():
        note = Path(path, f"{U}.{os.getuid()}.{name}")
        note.write_text(text)
        held.append(os.open(note, os.O_RDONLY))
        fcntl.flock(held[-1], fcntl.LOCK_EX)
    old_tmp = Path(path, ".tmp-0123456789abcdef")
    old_tmp.touch()
    os.utime(old_tmp, (time.time() - 3600, time.time() - 3600))
    try:
        assert leases.holders(U) == []
        assert not stale.exists()  # stale and ours: removed
        assert not old_tmp.exists()  # a temporary file its maker left behind
        assert len(notes(path)) == 4  # live (locked), however bad: left to their holders
        assert leases.is_free(U)
    finally:
        for fd in held:
            os.close(fd)


def test_created_directory_and_files_ignore_the_umask(path: str) -> None:
    old = os.umask(0o077)
    try:
        leases = LeaseDir(path, "a")
        assert isinstance(leases.acquire(U, mem_mib=10, job_id=1), Lease)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o1777
    assert [stat.S_IMODE(os.lstat(os.path.join(path, f)).st_mode) for f in files(path)] == [0o644, 0o644]
    assert not [f for f in files(path) if f.startswith(".")]  # no temporary files left


def test_unusable_directories_are_refused_in_one_line(path: str) -> None:
    target = path + "-real"
    os.mkdir(target, 0o1777)
    os.symlink(target, path)
    with pytest.raises(LeaseError, match=r"^GPU lease directory .*leases: it is a symlink"):
        LeaseDir(path, "a")
    os.unlink(path)
    Path(path).touch()
    with pytest.raises(LeaseError, match="not a directory"):
        LeaseDir(path, "a")
    os.unlink(path)
    os.mkdir(path)
    os.chmod(path, 0o777)
    with pytest.raises(LeaseError, match=r"writable by others but not sticky \(mode 777\)"):
        LeaseDir(path, "a")
    os.chmod(path, 0o700)  # private, ours: fine
    LeaseDir(path, "a")


@needs_root
def test_directory_of_another_user_without_sticky_bit_is_refused(
    path: str, spawn: Callable[..., Child]
) -> None:
    os.mkdir(path)
    os.chmod(path, 0o777)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(LeaseError) as err:
        LeaseDir(path, "a")
    assert str(err.value) == (
        f"GPU lease directory {path}: owned by user nobody and not sticky (mode 777)"
        ": our leases would not be safe there"
    )
    os.chown(path, 0, 0)
    os.chmod(path, 0o1755)

    def refused() -> str:
        try:
            LeaseDir(path, "a")
        except LeaseError as exc:
            return str(exc)
        return "accepted"

    assert spawn(refused, NOBODY).result().endswith("we cannot write to it (owner root, mode 1755)")
    os.chmod(path, 0o1777)  # sticky and world-writable: fine, whoever owns it
    assert spawn(refused, NOBODY).result() == "accepted"


@needs_root
def test_another_users_lease_is_reported_and_their_stale_note_kept(
    path: str, spawn: Callable[..., Child]
) -> None:
    ours = LeaseDir(path, "a")
    child = spawn(lambda: repr(LeaseDir(path, "theirs").acquire(U, mem_mib=None, job_id=3)), NOBODY)
    assert "Lease" in child.result()
    assert ours.acquire(U, mem_mib=8, job_id=1) == "held by another spooler (user nobody, exclusive)"
    assert ours.holders(U) == [LeaseHolder("nobody", NOBODY, "theirs", 3, None, child.pid)]
    child.finish()
    wait_for(lambda: ours.is_free(U), timeout=5, what="their lease to end")
    assert ours.holders(U) == []
    assert len(notes(path)) == 1  # stale, but theirs to remove


@needs_root
def test_a_note_faked_in_another_users_name_is_ignored(path: str, spawn: Callable[..., Child]) -> None:
    ours = LeaseDir(path, "a")

    def fake() -> str:  # nobody writes a live, well-formed note that claims to be ours (uid 0)
        fd = os.open(f"{path}/{U}.0.{'f' * 16}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"owner": "a", "job": 1, "mem_mib": 99, "pid": 1}).encode())
        return "ok"

    assert spawn(fake, NOBODY).result() == "ok"
    assert len(notes(path)) == 1
    assert ours.holders(U) == []


@needs_root
def test_another_user_cannot_delete_our_note_or_lock_file(path: str, spawn: Callable[..., Child]) -> None:
    lease = LeaseDir(path, "a").acquire(U, mem_mib=None, job_id=1)
    assert isinstance(lease, Lease)
    names = files(path)

    def vandal() -> list[str]:
        out = []
        for name in names:
            for act in (os.unlink, lambda p: os.rename(p, p + ".x")):
                try:
                    act(os.path.join(path, name))
                    out.append(f"{name}: done")
                except OSError as exc:
                    out.append(type(exc).__name__)
        return out

    assert spawn(vandal, NOBODY).result() == ["PermissionError"] * 4
    assert files(path) == names


def test_unusable_lock_files_give_a_reason(path: str) -> None:
    leases = LeaseDir(path, "a")
    lock = leases.lock_path(U)
    os.mkfifo(lock)  # would block an open() without O_NONBLOCK
    assert (
        leases.acquire(U, mem_mib=None, job_id=1)
        == f"cannot use lock file {lock} (owner {ME}): not a regular file"
    )
    assert not leases.is_free(U)
    os.unlink(lock)
    os.symlink("/etc/passwd", lock)
    assert (
        leases.acquire(U, mem_mib=None, job_id=1)
        == f"cannot use lock file {lock} (owner {ME}): it is a symlink"
    )
    assert notes(path) == []


@needs_root
def test_a_lock_file_we_cannot_open_gives_its_owner(path: str, spawn: Callable[..., Child]) -> None:
    LeaseDir(path, "a")
    lock = os.path.join(path, f"{U}.lock")

    def private() -> str:
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return "ok"

    def attempt() -> str:
        return repr(LeaseDir(path, "b").acquire(U, mem_mib=None, job_id=1))

    assert spawn(private, NOBODY).result() == "ok"
    expected = f"cannot use lock file {lock} (owner nobody): Permission denied"
    assert spawn(attempt, OTHER).result() == repr(expected)
