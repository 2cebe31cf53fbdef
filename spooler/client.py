"""Talk to the daemon: connect (starting it when none answers), send a request, read the reply.

This is the whole of the ``ts`` hot path besides argument parsing, so it imports only what
every call needs: ``_socket`` rather than ``socket`` (which pulls in ``enum``, ``selectors`` and
``functools``, about 5 ms), the pure-Python ``spooler.protocol.wire`` rather than msgpack (about
5 ms), and the modules of the rarer paths (starting a daemon, passing descriptors) where they
are used.
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from spooler import paths, protocol
from spooler.errors import (
    BadConfigFile,
    ConnectionLost,
    DaemonDiedStarting,
    DaemonUnavailable,
    QueueFull,
    RemoteError,
    VersionMismatch,
)
from spooler.protocol import wire

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from spooler.protocol.requests import Request, Submit

START_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0
RESEND_TRIES = 20  # connections that dropped before a submission's reply, before giving up
BULK_ITEMS = 200  # commands in one submission from which msgpack's C codec is used (Client.bulk)
SPAWN_TRIES = 10  # daemons that died before they served (killed while starting) before giving up


def _spawn_daemon(sock_path: str, lock_fd: int) -> bool:
    """Start a daemon in the background and wait until it reports that it serves (True), or
    says why it cannot (raised), or dies without a word (False: killed while starting).

    fork, setsid, fork: the daemon is no child of ours and has no controlling terminal.  It
    inherits the locked lock file, so no other client can start a second one meanwhile.
    """
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    os.set_inheritable(lock_fd, True)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "spooler.daemon", "--socket", sock_path]
    argv += ["--ready-fd", str(write_end), "--lock-fd", str(lock_fd)]
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")
            os.umask(0o077)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    os.close(write_end)
    os.waitpid(pid, 0)
    try:
        lines = _read_ready(read_end)
    finally:
        os.close(read_end)
    for line in lines:
        if line.startswith("warning: "):
            print(f"ts: {line}", file=sys.stderr)
        elif line.startswith("bad-config: "):
            raise BadConfigFile(f"the daemon could not start: {line[12:]}")
        elif line.startswith("error: "):
            raise DaemonUnavailable(f"the daemon could not start: {line[7:]}")
    return "ready" in lines


def _read_ready(fd: int) -> list[str]:
    import select

    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").splitlines()


def shared_socket(env: Mapping[str, str] = os.environ) -> str | None:
    """The socket of a shared (multi-user) daemon that the config file names, if any.

    Read only when no personal daemon answers, so a ``ts`` call pays for it only then.  Just this
    one key: the daemon checks the whole file (and reports a bad one) when it starts.
    """
    path = env.get("TS_CONFIG") or os.path.join(
        env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config"),
        "spooler",
        "config.toml",
    )
    try:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

        with open(path, "rb") as f:
            value = tomllib.load(f).get("socket")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) and value.startswith("/") else None


def _left_by_a_shared_daemon(sock_path: str) -> bool:
    """A socket file every user may write to: a multi-user daemon's, which is not running now."""
    try:
        return bool(os.lstat(sock_path).st_mode & 0o002)
    except OSError:
        return False


def connect(sock_path: str | None = None, autostart: bool = True) -> _socket.socket:
    if sock_path is None and not os.environ.get("TS_SOCKET"):
        sock_path = paths.socket_path()
        if not os.path.exists(sock_path):
            # No personal daemon: a shared one named in the config is used, never a new one started.
            shared = shared_socket()
            if shared is not None:
                sock_path, autostart = shared, False
    sock_path = sock_path or paths.socket_path()
    paths.check_socket_path(sock_path)
    deadline = time.monotonic() + CONNECT_TIMEOUT
    delay = 0.002
    silent_deaths = 0
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(sock_path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(f"cannot connect to {sock_path}: {exc.strerror}") from None
        if not autostart:
            raise DaemonUnavailable(f"no daemon is running on {sock_path}")
        if _left_by_a_shared_daemon(sock_path):
            # Never a personal daemon where a shared one served (not even root's): its users
            # would talk to a daemon that runs their jobs as someone else.
            raise DaemonUnavailable(f"the shared daemon on {sock_path} is not running")
        import fcntl

        os.makedirs(os.path.dirname(sock_path), mode=0o700, exist_ok=True)
        lock_fd = os.open(paths.lock_path(sock_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # a daemon runs, or another client is starting one: wait for its socket
        else:
            if _spawn_daemon(sock_path, lock_fd):
                continue
            silent_deaths += 1  # killed while it started: start another, a few times
            if silent_deaths < SPAWN_TRIES and time.monotonic() < deadline:
                continue
            raise DaemonDiedStarting(
                f"the daemon for {sock_path} did not start (see its log in the state directory)"
            )
        finally:
            os.close(lock_fd)
        if time.monotonic() > deadline:
            raise DaemonUnavailable(f"the daemon on {sock_path} does not answer")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _recv_exact(sock: _socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionLost("the daemon closed the connection")
        data += chunk
    return bytes(data)


def check(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        return reply
    message = str(reply.get("error", "request failed"))
    code = str(reply.get("code", ""))
    if code == protocol.E_VERSION:
        raise VersionMismatch(message)
    if code == protocol.E_QUEUE_FULL:
        raise QueueFull(message, code)
    raise RemoteError(message, code)


class Client:
    """One connection to the daemon; requests go one at a time."""

    # A submission of many commands (ts --batch, a sweep) and its reply (an id per job) go
    # through msgpack's C codec: packing 100,000 commands in Python takes 0.7 s, next to which
    # its import (about 5 ms) is nothing.  Set by each send for the reply that follows.
    bulk = False

    def __init__(self, sock_path: str | None = None, autostart: bool = True) -> None:
        self.sock_path = sock_path
        self.autostart = autostart
        self.sock = connect(sock_path, autostart)

    def reconnect(self) -> None:
        self.sock.close()
        self.sock = connect(self.sock_path, self.autostart)

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        self.bulk = len(message.get("items") or ()) >= BULK_ITEMS
        if self.bulk:
            frame = protocol.encode(message)
        else:
            body = wire.pack(message)
            if len(body) > protocol.MAX_FRAME:
                raise protocol.FrameError(
                    f"message of {len(body)} bytes exceeds the {protocol.MAX_FRAME}-byte frame limit"
                )
            frame = protocol.HEADER.pack(len(body)) + body
        try:
            if fds:
                import array

                ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                sent = self.sock.sendmsg([frame], ancillary)
                frame = frame[sent:]
            if frame:
                self.sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            # Never mistaken for ``ts -l | head`` (a closed stdout, which exits quietly).
            raise ConnectionLost("the daemon closed the connection") from None

    def receive(self) -> dict[str, Any]:
        header = _recv_exact(self.sock, protocol.HEADER.size)
        body = _recv_exact(self.sock, protocol.frame_length(header))
        if self.bulk:
            return protocol.decode_body(body)
        try:
            message = wire.unpack(body)
        except ValueError as exc:  # as protocol.decode_body says it on the daemon's side
            raise protocol.FrameError(f"invalid msgpack: {exc}") from None
        if not isinstance(message, dict):
            raise protocol.FrameError(f"expected a map, got {type(message).__name__}")
        return message

    def call(self, request: Request, fds: list[int] | None = None) -> dict[str, Any]:
        """Send one request and return its reply; an error reply raises."""
        self.send(request.wire(), fds)
        return check(self.receive())

    def submit_request(self, request: Submit, fds: list[int] | None = None) -> dict[str, Any]:
        """Queue, surviving the daemon's death (:meth:`call_again_if_lost`).  The submission's
        token makes the daemon answer a repeat with the ids it gave the first time, so a
        daemon's death costs a delay, never a lost or a doubled job."""
        if request.token is None:
            request.token = os.urandom(8).hex()  # 64 random bits: unique among recent ones
        return self.call_again_if_lost(request, fds)

    def call_again_if_lost(self, request: Request, fds: list[int] | None = None) -> dict[str, Any]:
        """:meth:`call` for a request that may be sent twice: when the connection drops before
        the reply (the daemon died), it goes again on a new connection, to a new daemon if
        need be."""
        first_loss = None  # counted from the first loss: a wait may have lasted for hours
        losses = 0
        while True:
            try:
                if losses:
                    self.reconnect()
                return self.call(request, fds)
            except (ConnectionLost, DaemonDiedStarting):
                # Giving up now could tell the user a job failed that is queued: keep at it.
                losses += 1
                first_loss = first_loss or time.monotonic()
                if losses >= RESEND_TRIES or time.monotonic() - first_loss > CONNECT_TIMEOUT:
                    raise

    def request(self, op: str, *, fds: list[int] | None = None, **fields: Any) -> dict[str, Any]:
        """The same with an untyped request map (tests and tools)."""
        self.send(protocol.request(op, **fields), fds)
        return check(self.receive())

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
