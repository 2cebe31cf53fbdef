"""``ts --watch``: the frame layout (pure), one snapshot when piped, and a real terminal session."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TS, Spool, wait_for

from spooler.cli.watch import counts, drain_estimate, render_watch, width_of

NOW = 1_700_000_000.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def job(job_id: int, state: str, command: str = "python train.py", **fields: Any) -> dict[str, Any]:
    """A job as ``ts -M json`` gives it (the fields the view reads)."""
    data: dict[str, Any] = {
        "id": job_id,
        "state": state,
        "command": command,
        "label": None,
        "exit_code": None,
        "signal": None,
        "run_time": None,
        "start_time": None,
        "end_time": None,
        "slots": 1,
        "gpus": [],
        "gpus_requested": 0,
        "gpu_indices_requested": None,
    }
    if state in ("finished", "running"):
        data.update(start_time=NOW - 100, run_time=20.0)
    if state == "finished":
        data.update(exit_code=0, end_time=NOW - 80)
    data.update(fields)
    return data


def gpu(index: int, used: int, held_by: list[int], free: bool = False) -> dict[str, Any]:
    return {
        "index": index,
        "name": "Fake A100",
        "uuid": f"GPU-{index}",
        "total_mib": 24000,
        "used_mib": used,
        "free_mib": 24000 - used,
        "visible": True,
        "free": free,
        "held_by": held_by,
    }


MIXED = [
    job(0, "finished", run_time=10.0, end_time=NOW - 50),
    job(1, "finished", run_time=30.0, end_time=NOW - 10),
    job(2, "finished", exit_code=1, run_time=5.0, end_time=NOW - 40),
    job(3, "finished", exit_code=None, signal="SIGTERM", run_time=5.0, end_time=NOW - 30),
    job(4, "skipped"),
    job(5, "lost"),
    job(6, "running", "python run.py", gpus=[1], label="exp"),
    job(7, "allocating", gpus_requested=2),
    job(8, "queued"),
    job(9, "queued"),
    job(10, "queued"),
]


def check_fits(frame: str, width: int, height: int) -> list[str]:
    lines = frame.split("\n")
    assert len(lines) <= height, f"{len(lines)} lines for a height of {height}"
    for line in lines:
        assert width_of(ANSI.sub("", line)) <= width, f"wider than {width}: {line!r}"
    return lines


def test_counts_and_drain_estimate() -> None:
    tally = counts(MIXED)
    assert tally == {"finished": 2, "failed": 4, "running": 1, "queued": 4, "allocating": 1}
    # The four groups add up to the whole list: a failed job is not also "finished".
    assert sum(tally[k] for k in ("finished", "failed", "running", "queued")) == len(MIXED)
    # Mean run time of the jobs that ran to their end (10, 30, 5, 5) x 4 waiting / 2 slots.
    assert drain_estimate(MIXED, 2) == pytest.approx(12.5 * 4 / 2)
    assert drain_estimate([job(0, "queued")], 4) is None  # nothing to go by yet
    assert drain_estimate([job(0, "finished")], 4) == 0.0


def test_summary_and_order() -> None:
    frame = render_watch(MIXED, [], 2, 80, 24, NOW, False)
    lines = check_fits(frame, 80, 24)
    assert lines[0].startswith("ts --watch") and "slots 1/2" in lines[0]
    assert "finished 2  failed 4  running 1  queued 4 (1 allocating)" in lines[1]
    assert "queue drains in ~25s" in lines[1]
    ids = [int(line.split()[0]) for line in lines if line[:1].isdigit()]
    # Running first, then the queue in its order, then the most recently ended first.
    assert ids == [6, 7, 8, 9, 10, 1, 3, 2, 0, 5, 4]
    row = next(line for line in lines if line.startswith("3 "))
    assert "SIGTERM" in row
    assert "[exp]python run.py" in next(line for line in lines if line.startswith("6 "))


@pytest.mark.parametrize(("width", "height"), [(80, 24), (40, 10), (132, 50), (20, 6), (10, 3)])
@pytest.mark.parametrize("color", [False, True])
def test_fits_the_terminal(width: int, height: int, color: bool) -> None:
    jobs = [job(i, "queued", f"python train.py --seed {i} " + "x" * i) for i in range(200)]
    jobs += [job(200, "running", "训练 " * 40), job(201, "finished", "echo 'a\nb' \x1b[31m red")]
    gpus = [gpu(i, 12000, [200]) for i in range(8)]
    frame = render_watch(jobs, gpus, 4, width, height, NOW, color)
    check_fits(frame, width, height)
    assert ("\x1b" in frame) is color  # colour only when asked, never from a job's command
    assert "\x1b[31m red" not in frame


def test_a_long_queue_is_cut_with_a_count() -> None:
    jobs = [job(i, "queued") for i in range(100)]
    lines = check_fits(render_watch(jobs, [], 1, 80, 24, NOW, False), 80, 24)
    assert len(lines) == 24
    assert re.fullmatch(r"… \d+ more \(ts -l lists them all\)", lines[-1])
    shown = sum(line[:1].isdigit() for line in lines)
    assert shown + int(lines[-1].split()[1]) == 100


def test_gpu_bars() -> None:
    gpus = [gpu(0, 12000, [6]), gpu(1, 0, [], free=True), gpu(2, 23000, [])]
    lines = check_fits(render_watch(MIXED, gpus, 2, 80, 24, NOW, False), 80, 24)
    bars = [line for line in lines if line.startswith("GPU ")]
    assert len(bars) == 3
    assert bars[0].endswith("jobs 6") and bars[1].endswith("free") and bars[2].endswith("in use by others")
    inside = [re.search(r"\[([█·]+)\]", bar).group(1) for bar in bars]  # type: ignore[union-attr]
    assert len({len(bar) for bar in inside}) == 1  # the bars line up
    assert abs(inside[0].count("█") - len(inside[0]) / 2) <= 1
    assert inside[1].count("█") == 0 and inside[2].count("·") <= 2
    assert "11.7/23.4 GiB" in bars[0]


def test_gpu_bars_give_way_to_the_job_list() -> None:
    gpus = [gpu(i, 0, [], free=True) for i in range(16)]
    jobs = [job(i, "queued") for i in range(10)]
    lines = check_fits(render_watch(jobs, gpus, 1, 80, 14, NOW, False), 80, 14)
    assert sum(line[:1].isdigit() for line in lines) >= 3
    assert any(line.startswith("GPU ") for line in lines)
    assert re.fullmatch(r"… \d+ more GPUs \(ts --gpu_status\)", lines[-1])


def test_no_jobs() -> None:
    lines = check_fits(render_watch([], [], 1, 80, 24, NOW, False), 80, 24)
    assert "No jobs." in lines
    assert "queue empty" in lines[1]


def test_piped_it_prints_one_snapshot(spool: Spool) -> None:
    gpus = spool.root / "gpus.json"
    gpus.write_text(json.dumps([{"total_mib": 24000, "used_mib": 6000}, {"total_mib": 24000, "used_mib": 0}]))
    spool.env.update(TS_FAKE_GPUS=str(gpus), TS_GPU_POLL="0.1", COLUMNS="80", LINES="24")
    first = spool.submit("true")
    spool.wait_state(first, "finished")
    gate = spool.root / "gate"
    running = spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done", opts=("-G", "1"))
    spool.wait_state(running, "running")
    done = spool.run("--watch", timeout=30)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ts --watch")
    assert "finished 1  failed 0  running 1  queued 0" in lines[1]
    assert any(line.startswith(f"{running} ") and "running" in line for line in lines)
    assert any(line.startswith("GPU ") and line.endswith(f"jobs {running}") for line in lines)
    assert all(len(line) <= 80 for line in lines) and len(lines) <= 24


def _read(fd: int, until: float) -> bytes:
    """What the terminal shows before ``until`` (or until the program closes it)."""
    data = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:  # EIO: every process closed the terminal's other end
            if exc.errno == errno.EIO:
                break
            raise
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def watch_in_a_terminal(spool: Spool, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``ts --watch`` on a fresh 80x24 pseudo-terminal that is its controlling terminal (so Ctrl-C
    typed into it is a SIGINT); yields the process and the terminal's master side."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [*TS, "--watch"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=spool.root,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    try:
        yield proc, master
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
@pytest.mark.parametrize("no_color", [False, True])
def test_in_a_terminal(spool: Spool, stop: str, no_color: bool) -> None:
    gate = spool.root / "gate"
    running = spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done", opts=("-L", "watchme"))
    spool.wait_state(running, "running")
    env = {k: v for k, v in spool.env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm"
    if no_color:
        env["NO_COLOR"] = "1"
    with watch_in_a_terminal(spool, env) as (proc, master):
        shown = b""
        deadline = time.monotonic() + 20
        while b"watchme" not in shown and time.monotonic() < deadline and proc.poll() is None:
            shown += _read(master, time.monotonic() + 0.2)
        assert b"watchme" in shown, shown[-2000:]
        if stop == "ctrl-c":
            os.write(master, b"\x03")
        else:
            proc.send_signal(signal.SIGTERM)
        shown += _read(master, time.monotonic() + 10)
        assert proc.wait(timeout=10) == 0
    text = shown.decode()
    assert text.startswith("\x1b[?25l")  # cursor hidden first
    assert text.rstrip("\r\n").endswith("\x1b[?25h")  # and shown again last
    assert "\x1b[H" in text
    assert ("\x1b[1;34m" in text) is not no_color
    frame = text.split("\x1b[H")[1]
    lines = frame.replace("\x1b[?25h", "").split("\r\n")
    assert len([line for line in lines if ANSI.sub("", line)]) <= 24
    assert all(width_of(ANSI.sub("", line)) <= 80 for line in lines)
    assert "Traceback" not in text


def test_daemon_gone_keeps_the_last_frame(spool: Spool, tmp_path: Path) -> None:
    # The view polls through one connection; after ts -K it says so instead of dying or
    # starting a new daemon behind the user's back.
    spool.submit("true")
    with watch_in_a_terminal(spool, {**spool.env, "TERM": "xterm"}) as (proc, master):
        shown = _read(master, time.monotonic() + 0.5)
        spool.ts("-K")
        wait_for(lambda: not spool.socket.exists(), what="the daemon to stop")
        end = time.monotonic() + 15
        while b"No answer from the daemon" not in shown and time.monotonic() < end:
            shown += _read(master, time.monotonic() + 0.2)
        assert b"No answer from the daemon" in shown
        assert not spool.socket.exists()
        proc.send_signal(signal.SIGINT)
        shown += _read(master, time.monotonic() + 5)
        assert proc.wait(timeout=10) == 0
