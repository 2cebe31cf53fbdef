"""A multi-user daemon (``ts --daemon --multi-user``, as root) shared by throwaway local users.

Users are made with ``useradd`` for the test module and removed with ``userdel`` afterwards.
Their ``ts`` cannot be this virtual environment's: its interpreter lives inside root's home,
which other users may not enter (and the checkout may be too).  They run Debian's
``/usr/bin/python3`` instead, with a copy of this checkout's client (and msgpack) that everyone
may read on ``PYTHONPATH`` (nothing is installed, no network is needed), switched to the user
by ``setpriv`` before the interpreter starts, so the client is the user's from its first
instruction, exactly as a user's own shell starts it.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TS, kill_processes_with, text_of, wait_for

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path


def why_not_here() -> str:
    """Why the multi-user tests cannot run on this machine ("" when they can)."""
    if os.geteuid() != 0:
        return "needs root (to run a multi-user daemon and create throwaway users)"
    for tool in ("useradd", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"needs {SYSTEM_PYTHON}: an interpreter other users may run"
    return ""


_CLIENT_COPY: Path | None = None  # set by the users fixture


def python_path() -> str:
    """Where the users' interpreter finds the client: a copy every user may read (the checkout
    and its virtual environment may be inside a directory only root may enter)."""
    if _CLIENT_COPY is not None:
        return str(_CLIENT_COPY)
    return os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])


def readable_client_copy(base: Path) -> Path:
    """This checkout's ``spooler`` package and the third-party packages the client may import
    (msgpack; click for shell completion), copied under ``base`` and readable by everyone."""
    import click
    import msgpack

    target = base / "pylib"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "spooler", target / "spooler", ignore=skip)
    for package in (msgpack, click):
        source = Path(str(package.__file__)).parent
        shutil.copytree(source, target / source.name, ignore=skip)
    for directory, _dirs, files in os.walk(target):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    return target


class Users:
    """Throwaway accounts, removed (with their homes) at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made: list[str] = []

    def add(self, tag: str) -> User:
        name = f"tsmu{os.getpid() % 100000}{tag}"
        home = self.base / name
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", name],
            check=True,
            capture_output=True,
        )
        self.made.append(name)
        entry = pwd.getpwnam(name)
        return User(name, entry.pw_uid, entry.pw_gid, home)

    def remove(self, name: str) -> None:
        subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
        if name in self.made:
            self.made.remove(name)

    def remove_all(self) -> None:
        for name in list(self.made):
            self.remove(name)


class Shared:
    """One multi-user daemon in a directory every user may traverse."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "run" / "socket"
        self.logdir = root / "logs"
        self.logdir.mkdir(mode=0o755)
        self.savelist = root / "state" / "savelist"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
        self.env.update(
            TS_SOCKET=str(self.socket),
            TS_SAVELIST=str(self.savelist),
            TMPDIR=str(self.logdir),
            TS_GPU_LEASE_DIR=str(root / "gpu-leases"),
            TS_KILL_GRACE="1",
        )
        self.daemon: subprocess.Popen[bytes] | None = None

    def restart(self, config: str | None = None) -> None:
        """Stop the daemon (its jobs go on) and start another, with this config file if given."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.root_ts("-K")
            self.daemon.wait(timeout=30)
        if config is not None:
            path = self.root / "config.toml"
            path.write_text(config)
            self.env["TS_CONFIG"] = str(path)
        self.start()

    def start(self) -> None:
        self.daemon = subprocess.Popen(
            [*TS, "--daemon", "--multi-user", "--socket", str(self.socket)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self.socket.exists() and self.run_root("-l").returncode == 0, what="the daemon")

    def run_root(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TS, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.root,
        )

    def root_ts(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = self.run_root(*args, env=env)
        assert done.returncode == 0, f"ts {' '.join(args)}: {done.stderr}"
        return done.stdout

    def run_as(
        self,
        user: User,
        *args: str,
        cwd: Path | None = None,
        python: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``ts ARGS`` (or ``python`` with its arguments) as ``user``, from its home."""
        program = python if python is not None else ["-m", "spooler", *args]
        return subprocess.run(
            [
                "setpriv",
                f"--reuid={user.uid}",
                f"--regid={user.gid}",
                "--init-groups",
                SYSTEM_PYTHON,
                *program,
            ],
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(user.home),
                "LC_ALL": "C.UTF-8",
                "TS_SOCKET": str(self.socket),
                "PYTHONPATH": python_path(),
                "SECRET": f"secret-of-{user.name}",
                **(env or {}),
            },
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd or user.home,
        )

    def ts_as(
        self, user: User, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> str:
        done = self.run_as(user, *args, cwd=cwd, env=env)
        assert done.returncode == 0, f"ts {' '.join(args)} as {user.name}: {done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def submit_as(
        self, user: User, *command: str, opts: tuple[str, ...] = (), cwd: Path | None = None
    ) -> int:
        return int(self.ts_as(user, *opts, *command, cwd=cwd).strip())

    def jobs(self) -> list[dict[str, Any]]:
        return list(json.loads(self.root_ts("-M", "json")))

    def job(self, job_id: int) -> dict[str, Any]:
        return next(j for j in self.jobs() if j["id"] == job_id)

    def wait_state(self, job_id: int, *states: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["state"] in states else None

        return wait_for(reached, what=f"job {job_id} to be {'/'.join(states)}")

    def daemon_pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.pid

    def kill_daemon(self) -> None:
        """kill -9: the socket file stays behind, as after a crash."""
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(timeout=30)

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.run_root("-T")
            self.run_root("-K")
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
        kill_processes_with(f"TS_SOCKET={self.socket}")


def cannot_run_client(user: User) -> bool:
    done = subprocess.run(
        ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", SYSTEM_PYTHON, "-c",
         "import spooler.cli.main, msgpack"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": python_path()},
        capture_output=True,
        cwd="/",
        check=False,
    )  # fmt: skip
    return done.returncode != 0


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    why = why_not_here()
    if why:
        pytest.skip(why)
    global _CLIENT_COPY
    base = Path(tempfile.mkdtemp(prefix="ts-users-", dir="/tmp"))
    os.chmod(base, 0o755)
    _CLIENT_COPY = readable_client_copy(base)
    made = Users(base)
    try:
        yield made
    finally:
        made.remove_all()
        _CLIENT_COPY = None
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def alice(users: Users) -> User:
    user = users.add("a")
    if cannot_run_client(user):
        pytest.skip(f"{SYSTEM_PYTHON} cannot import this worktree's client as another user")
    return user


@pytest.fixture(scope="module")
def bob(users: Users) -> User:
    return users.add("b")


@pytest.fixture
def shared() -> Iterator[Shared]:
    root = Path(tempfile.mkdtemp(prefix="ts-shared-", dir="/tmp"))
    os.chmod(root, 0o755)
    spool = Shared(root)
    spool.start()
    try:
        yield spool
    finally:
        spool.stop()
        print(
            "--- daemon log (tail) ---", *text_of(Path(f"{spool.savelist}.log")).splitlines()[-40:], sep="\n"
        )
        shutil.rmtree(root, ignore_errors=True)


# A raw client, run as a user: sends the frames given (hex) on one connection, prints each reply.
RAW_CLIENT = """
import socket, sys
from spooler import protocol
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(20)
sock.connect(sys.argv[1])
for frame in sys.argv[2:]:
    sock.sendall(bytes.fromhex(frame))
    header = sock.recv(protocol.HEADER.size, socket.MSG_WAITALL)
    body = sock.recv(protocol.frame_length(header), socket.MSG_WAITALL)
    print(body.hex())
"""


def send_as(spool: Shared, user: User, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    """Each request map (sent as it is, forged fields and all) as ``user``; the replies."""
    from spooler import protocol

    frames = [protocol.encode(message).hex() for message in messages]
    done = spool.run_as(user, python=["-c", RAW_CLIENT, str(spool.socket), *frames])
    assert done.returncode == 0, done.stderr
    return [protocol.decode_body(bytes.fromhex(line)) for line in done.stdout.split()]


# Sends COUNT malformed frames, each on a connection of its own, as a user.
GARBAGE_CLIENT = """
import os, socket, struct, sys
path, count = sys.argv[1], int(sys.argv[2])
for n in range(count):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    kind = n % 4
    if kind == 0:
        frame = os.urandom(64)  # noise
    elif kind == 1:
        frame = struct.pack(">I", 1 << 31) + b"x"  # a length far over the limit
    elif kind == 2:
        frame = struct.pack(">I", 5) + b"\\xc1\\xc1\\xc1\\xc1\\xc1"  # not msgpack
    else:
        frame = struct.pack(">I", 3) + b"\\x93\\x01\\x02"  # msgpack, but not a map
    try:
        sock.sendall(frame)
        sock.recv(65536)
    except OSError:
        pass
    sock.close()
print("sent", count)
"""
