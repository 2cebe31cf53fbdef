"""Where the socket, the lock and the state live.

The socket follows the original ``ts``: ``$TS_SOCKET``, else ``$TMPDIR/socket-ts.<uid>``.
Everything the daemon keeps across restarts sits beside the save-list file, ``$TS_SAVELIST``,
else ``${XDG_STATE_HOME:-~/.local/state}/spooler/<socket key>.savelist`` so that daemons on
different sockets never share state.
"""

from __future__ import annotations

import os
import stat

from spooler.errors import UnsafePathError

TYPE_CHECKING = False  # collections.abc imports collections: about 1.5 ms of ts's start-up
if TYPE_CHECKING:
    from collections.abc import Mapping


def tmpdir(env: Mapping[str, str] = os.environ) -> str:
    return env.get("TMPDIR") or "/tmp"


def default_socket(env: Mapping[str, str] = os.environ) -> str:
    return os.path.join(tmpdir(env), f"socket-ts.{os.getuid()}")


def socket_path(env: Mapping[str, str] = os.environ) -> str:
    return os.path.abspath(env.get("TS_SOCKET") or default_socket(env))


def lock_path(sock: str) -> str:
    return sock + ".lock"


def state_home(env: Mapping[str, str] = os.environ) -> str:
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "spooler")


def savelist_path(sock: str, env: Mapping[str, str] = os.environ) -> str:
    explicit = env.get("TS_SAVELIST")
    if explicit:
        return os.path.abspath(explicit)
    if sock == os.path.abspath(default_socket(env)):
        key = "default"
    else:
        import hashlib

        key = "sock-" + hashlib.sha256(sock.encode()).hexdigest()[:16]
    return os.path.join(state_home(env), key + ".savelist")


def check_socket_path(sock: str) -> None:
    """Refuse a socket whose directory others may replace it in, or that another user owns.

    A world-writable directory is acceptable only with the sticky bit (as /tmp has), which
    stops other users from removing or renaming our socket.
    """
    directory = os.path.dirname(sock) or "."
    try:
        dst = os.stat(directory)
    except FileNotFoundError:
        return  # the daemon creates it, owner-only
    uid = os.getuid()
    if dst.st_mode & stat.S_IWOTH and not dst.st_mode & stat.S_ISVTX:
        raise UnsafePathError(f"refusing socket {sock}: its directory is writable by other users")
    if (
        dst.st_uid not in (uid, 0)
        and dst.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        and not (dst.st_mode & stat.S_ISVTX)
    ):
        raise UnsafePathError(f"refusing socket {sock}: its directory belongs to another user")
    try:
        sst = os.lstat(sock)
    except FileNotFoundError:
        return
    if sst.st_uid not in (uid, 0):  # root's: a multi-user daemon's (root may do anything anyway)
        raise UnsafePathError(f"refusing socket {sock}: it is owned by uid {sst.st_uid}, not you")
    if not stat.S_ISSOCK(sst.st_mode):
        raise UnsafePathError(f"refusing {sock}: it exists and is not a socket")
