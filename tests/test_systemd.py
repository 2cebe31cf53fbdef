"""contrib/systemd/spooler.service: what it must say, systemd's own check, and the daemon it runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import TS, Spool, wait_for

from spooler import paths

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "systemd" / "spooler.service"


def settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values, in order (systemd keys may repeat); comments skipped."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def test_the_unit_keeps_jobs_alive_and_restarts_on_failure() -> None:
    unit = settings(UNIT.read_text())
    # The default KillMode (control-group) would kill every running job with the daemon.
    assert unit["Service.KillMode"] == ["process"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Install.WantedBy"] == ["default.target"]
    (start,) = unit["Service.ExecStart"]
    program, *args = start.split()
    assert args == ["--daemon"] and program.endswith("/ts")


def test_the_unit_uses_the_socket_clients_find() -> None:
    # The daemon must listen where ts looks by default, so nothing may move its socket.
    for value in settings(UNIT.read_text()).get("Service.Environment", []):
        assert not value.startswith(("TS_SOCKET=", "TMPDIR=")), value
    assert "Sockets" not in UNIT.read_text()  # no socket activation: the daemon does not take one


def test_readme_install_steps() -> None:
    readme = (UNIT.parent / "README.md").read_text()
    for step in (
        "mkdir -p ~/.config/systemd/user",
        "cp contrib/systemd/spooler.service ~/.config/systemd/user/",
        "systemctl --user daemon-reload",
        "systemctl --user enable --now spooler.service",
        'loginctl enable-linger "$USER"',
        "journalctl --user -u spooler",
    ):
        assert step in readme


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify fails on an ExecStart binary that does not exist, and ~/.local/bin/ts need not:
    # check a copy that runs the ts under test instead.
    ts = TS[0] if len(TS) == 1 else shutil.which("ts")
    if ts is None:
        pytest.skip("no ts executable to point ExecStart at")
    text = UNIT.read_text()
    unit = settings(text)
    copy = tmp_path / "spooler.service"
    copy.write_text(text.replace(unit["Service.ExecStart"][0], f"{ts} --daemon"))
    runtime = tmp_path / "runtime"  # a user manager needs one, and a container may have none
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    done = subprocess.run(
        ["systemd-analyze", "verify", "--user", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0 and "Failed to initialize manager" in output:
        pytest.skip(f"systemd-analyze cannot run here: {output.strip()}")
    assert done.returncode == 0, output
    assert output == "", output  # verify only warns about unknown keys: any output is a mistake


def test_the_daemon_as_the_unit_runs_it(spool: Spool) -> None:
    """``ts --daemon`` with no TS_SOCKET serves the default socket; SIGTERM to it alone (what
    KillMode=process sends) stops it cleanly and leaves running jobs running."""
    env = {k: v for k, v in spool.env.items() if k != "TS_SOCKET"}
    socket = Path(paths.default_socket(env))
    assert len(str(socket)) < 100, "the temporary directory is too deep for a socket path"

    def ts(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TS, *args], env=env, capture_output=True, text=True, timeout=60, check=False)

    daemon = subprocess.Popen([*TS, "--daemon"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    gate = spool.root / "gate"
    job_pid = None
    try:
        wait_for(lambda: socket.exists() and ts("-l").returncode == 0, what="the daemon to serve")
        submitted = ts("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done")
        assert submitted.returncode == 0, submitted.stderr
        job = int(submitted.stdout)
        wait_for(lambda: ts("-s", str(job)).stdout.strip() == "running", what="the job to run")
        job_pid = int(ts("-p", str(job)).stdout)

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert not socket.exists()
        os.kill(job_pid, 0)  # still running: raises ProcessLookupError otherwise
    finally:
        gate.touch()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if job_pid is not None:
            wait_for(lambda: not _alive(job_pid), what="the job to end")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False
