"""Run the daemon: take the lock, load the save-list, bind the socket, serve until stopped.

``run()`` is the same in the foreground (``ts --daemon``, systemd, tests) and in the background
(the client, ``spooler.client``, forks, detaches and execs ``python -m spooler.daemon`` with a
pipe to report readiness and the already-locked lock file).  The process is single-threaded:
the save-list is compacted in a forked child, which must not happen while other threads exist.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import grp
import logging
import os
import signal
import socket
import sys

from spooler import paths
from spooler.daemon.config import StartupConfig, apply_file
from spooler.daemon.config_file import ConfigError, FileConfig, load
from spooler.daemon.handlers import HANDLERS
from spooler.daemon.server import Server
from spooler.daemon.spooler import Spooler

log = logging.getLogger("spooler")


class StartupError(Exception):
    pass


def acquire_lock(sock: str, inherited_fd: int | None) -> int:
    if inherited_fd is not None:
        # Passed down locked by the client that started us.  Not to be passed further: a hook
        # or any other process we spawn would otherwise hold the lock after we exit.
        os.set_inheritable(inherited_fd, False)
        return inherited_fd
    lock = paths.lock_path(sock)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"a daemon is already running on {sock} (lock {lock} is held)") from None
    return fd


def read_config_file(multi_user: bool) -> FileConfig:
    """Read once, at start; a bad file stops the start (ConfigError, with the file and line)."""
    file = load(os.environ, multi_user)
    if file.admin_group is not None:
        try:
            grp.getgrnam(file.admin_group)
        except KeyError:
            raise ConfigError(f"{file.path}: admin_group {file.admin_group!r}: no such group") from None
    return file


def bind(sock_path: str, multi_user: bool = False) -> socket.socket:
    """Bind the socket owner-only (multi-user: open to every local user, who are told apart by
    their peer credentials).  We hold the lock, so any socket file there is stale."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(sock_path)
    finally:
        os.umask(old_umask)
    os.chmod(sock_path, 0o666 if multi_user else 0o600)
    listener.listen(512)
    return listener


def _setup_logging(path: str, foreground: bool) -> None:
    handler: logging.Handler
    try:
        handler = logging.FileHandler(path)
        os.chmod(path, 0o600)
    except OSError:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if foreground and handler.__class__ is not logging.StreamHandler:
        log.addHandler(logging.StreamHandler(sys.stderr))
    log.setLevel(logging.INFO)


def run(
    sock: str,
    *,
    ready_fd: int | None = None,
    lock_fd: int | None = None,
    foreground: bool = True,
    multi_user: bool = False,
) -> int:
    """Serve on ``sock`` until ``ts -K``, SIGTERM or SIGINT.  Returns the exit status.

    ``multi_user`` (root only): every local user may connect; each job runs as its submitter."""

    def tell(line: str) -> None:
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, (line + "\n").encode())
        elif line.startswith(("warning:", "error:", "bad-config:")):
            print(f"ts: {line}", file=sys.stderr)

    if ready_fd is not None:
        os.set_inheritable(ready_fd, False)
    try:
        if multi_user and os.geteuid() != 0:
            raise StartupError("--multi-user: the daemon must run as root, to run each job as its submitter")
        paths.check_socket_path(sock)
        os.makedirs(os.path.dirname(sock), mode=0o755 if multi_user else 0o700, exist_ok=True)
        lock = acquire_lock(sock, lock_fd)
        config = StartupConfig.from_env(sock, multi_user=multi_user)
        apply_file(config, read_config_file(multi_user), os.environ)
        os.makedirs(os.path.dirname(config.savelist), mode=0o700, exist_ok=True)
        if multi_user:
            os.makedirs(config.settings.logdir, mode=0o755, exist_ok=True)
        _setup_logging(config.savelist + ".log", foreground)
        loop = asyncio.new_event_loop()
        log_fds = {h.stream.fileno() for h in log.handlers if isinstance(h, logging.FileHandler) and h.stream}
        spooler = Spooler(config, loop, keep_fds=frozenset({lock, *log_fds}))
        spooler.load()
        listener = bind(sock, multi_user)
    except ConfigError as exc:
        tell(f"bad-config: {exc}")
        return 2
    except Exception as exc:
        tell(f"error: {exc}")
        return 1
    handlers = {op: functools.partial(route, spooler) for op, route in HANDLERS.items()}
    server = Server(
        loop, listener, handlers, spooler.commit, config.max_connections, multi_user, config.admin_group
    )
    loop.add_signal_handler(signal.SIGCHLD, spooler.reap_children)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP ignored"))
    for warning in spooler.warnings:
        log.warning("%s", warning)
        tell(f"warning: {warning}")
    log.info("daemon %d serving on %s%s", os.getpid(), sock, " for every user" if multi_user else "")
    tell("ready")
    if ready_fd is not None:
        os.close(ready_fd)
    spooler.reap_children()  # children that ended before the handler was installed
    spooler.kick()
    try:
        loop.run_forever()
    finally:
        # Remove the socket before the lock is released, so the next daemon never sees ours.
        with contextlib.suppress(OSError):
            os.unlink(sock)
        server.close()
        spooler.shutdown_jobs()
        spooler.close()
        log.info("daemon %d stopped; running jobs continue and are adopted by the next daemon", os.getpid())
        os.close(lock)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spooler.daemon", description="the spooler daemon")
    parser.add_argument("--socket", default=None, help="socket path (default: $TS_SOCKET or the ts default)")
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lock-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sock = os.path.abspath(args.socket) if args.socket else paths.socket_path()
    return run(sock, ready_fd=args.ready_fd, lock_fd=args.lock_fd, foreground=args.ready_fd is None)
