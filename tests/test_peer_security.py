"""Who may talk to the daemon: owner-only socket and lock files, and a peer with another uid."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Spool
from raw_socket import assert_same_daemon_answers, start

from spooler import protocol


def test_socket_and_lock_file_are_owner_only(spool: Spool) -> None:
    start(spool)
    assert stat.S_IMODE(os.stat(spool.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(spool.socket) + ".lock").st_mode) == 0o600
    assert os.stat(spool.socket).st_uid == os.getuid()


# -- a peer with another uid ----------------------------------------------------------------

NOBODY = 65534
PEER = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
try:
    sock.connect(sys.argv[1])
except PermissionError:
    print("EACCES")
    sys.exit(0)
try:
    sock.sendall(bytes.fromhex(sys.argv[2]))
except OSError:
    pass
data = b""
while True:
    try:
        chunk = sock.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    data += chunk
print("REPLY " + data.hex())
"""


def _as_nobody(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-I", "-S", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
    )


@pytest.fixture
def world_spool() -> Iterator[Spool]:
    """A spool whose directories (not its socket) another user may traverse."""
    root = Path(tempfile.mkdtemp(prefix="ts-peer-", dir="/tmp"))
    os.chmod(root, 0o755)
    spool = Spool(root)
    try:
        yield spool
    finally:
        spool.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_peer_with_another_uid_is_refused(world_spool: Spool) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run a client as another uid")
    python = next(
        (
            p
            for p in (shutil.which("python3"), "/usr/bin/python3")
            if p and _as_nobody(p, "-c", "import socket").returncode == 0
        ),
        None,
    )
    if python is None:
        pytest.skip(f"no Python interpreter that uid {NOBODY} may run")
    spool = world_spool
    pid = start(spool)
    os.chmod(spool.socket.parent, 0o755)
    frame = protocol.encode(protocol.request("list")).hex()

    # First line of defence: the owner-only socket file.
    done = _as_nobody(python, "-c", PEER, str(spool.socket), frame)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "EACCES", done.stdout

    # Second: with the file opened up, the daemon itself refuses the peer (SO_PEERCRED).
    os.chmod(spool.socket, 0o666)
    try:
        done = _as_nobody(python, "-c", PEER, str(spool.socket), frame)
    finally:
        os.chmod(spool.socket, 0o600)
    assert done.returncode == 0, done.stderr
    kind, _, data = done.stdout.strip().partition(" ")
    assert kind == "REPLY", done.stdout
    reply = protocol.decode(bytes.fromhex(data))
    assert reply["ok"] is False and reply["code"] == protocol.E_DENIED, reply
    assert "text" not in reply
    assert_same_daemon_answers(spool, pid)
