"""``ts --watch``: a live view of the queue and the GPUs, redrawn every 2 seconds until Ctrl-C.

With filters (``ts --watch --sweep NAME``) it shows the jobs they select, and a line with how
many of them are done and the best result so far (``--best``, or the first numeric result).

A frame is a pure function of what the daemon reports (:func:`render_watch`), so its layout is
tested without a terminal.  When standard output is not a terminal (or ``TERM=dumb``), one plain
frame is printed and the call ends: that is what ``ts --watch | cat`` gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
import unicodedata
from collections.abc import Iterator
from typing import Any

from spooler.cli.parse import Invocation, filter_of
from spooler.client import Client, connect
from spooler.errors import SpoolerError
from spooler.protocol import requests as rq
from spooler.text import duration

REFRESH = 2.0  # seconds between frames
_RESIZE_CHECK = 0.1  # a resized terminal is redrawn this soon, not at the next frame

_HIDE_CURSOR, _SHOW_CURSOR = "\033[?25l", "\033[?25h"
_HOME, _CLEAR_LINE, _CLEAR_DOWN = "\033[H", "\033[K", "\033[J"
_BOLD, _RESET = "\033[1m", "\033[0m"
_ROW_COLORS = {
    "running": "\033[1;34m",
    "queued": "\033[33m",
    "allocating": "\033[35m",
    "failed": "\033[31m",
}
_BAR_COLOR = "\033[32m"
_WAITING = ("queued", "allocating", "held")
_ENDED = ("finished", "skipped", "lost", "timeout")
_MIN_JOB_ROWS = 3  # GPU bars give way before the job list shrinks below this
_HOLDERS_ROOM = 20  # cells kept after a GPU's bar for the ids of the jobs that hold it


# -- pure rendering -------------------------------------------------------------------------


def failed(job: dict[str, Any]) -> bool:
    """Ended badly: a non-zero exit, a signal, skipped for a failed dependency, or lost."""
    if job["state"] in ("skipped", "lost", "timeout"):
        return True
    return job["state"] == "finished" and (job.get("exit_code") != 0 or job.get("signal") is not None)


def counts(jobs: list[dict[str, Any]]) -> dict[str, int]:
    """Finished (well), failed, running, queued (allocating included) and allocating jobs.

    A failed job is not counted as finished, so the first four add up to the whole list.
    """
    result = dict.fromkeys(("finished", "failed", "running", "queued", "allocating"), 0)
    for job in jobs:
        state = job["state"]
        if failed(job):
            result["failed"] += 1
        elif state == "finished":
            result["finished"] += 1
        elif state in ("running", "paused"):
            result["running"] += 1
        elif state in _WAITING:
            result["queued"] += 1
            result["allocating"] += state == "allocating"
    return result


def drain_estimate(jobs: list[dict[str, Any]], slots: int) -> float | None:
    """Seconds until the queue is empty: mean run time of ended jobs x waiting jobs / slots.

    None when nothing has finished yet, so there is no run time to go by.
    """
    waiting = sum(job["state"] in _WAITING for job in jobs)
    if not waiting:
        return 0.0
    times = [
        float(job["run_time"])
        for job in jobs
        if job["state"] == "finished" and job.get("run_time") is not None
    ]
    if not times:
        return None
    return sum(times) / len(times) * waiting / max(slots, 1)


def progress(jobs: list[dict[str, Any]], best: dict[str, Any] | None, scope: str) -> str:
    """``sweep lr: 5 of 8 runs done (1 failed), best acc 0.9733 (job 5, max result.acc)``.

    ``best`` is the ``best`` of a ``results`` reply: field, how (max or min), value, ids.
    """
    done = sum(job["state"] in _ENDED for job in jobs)
    bad = sum(failed(job) for job in jobs)
    line = f"{scope}: {done} of {len(jobs)} run{'s' * (len(jobs) != 1)} done"
    line += f" ({bad} failed)" if bad else ""
    if best is None:
        return line + ", no result yet"
    name = str(best["field"]).split(".", 1)[-1]
    if best.get("value") is None:
        return line + f", no {name} yet"
    ids = ",".join(map(str, best["ids"]))
    value = best["value"]
    shown = f"{value:.6g}" if isinstance(value, float) else str(value)
    return line + f", best {name} {shown} (job {ids}, {best['how']} {best['field']})"


def _cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def width_of(text: str) -> int:
    """Terminal cells ``text`` takes: wide (CJK) characters 2, combining marks 0."""
    return sum(map(_cells, text))


def fit(text: str, width: int) -> str:
    """``text`` on one line of at most ``width`` terminal cells, cut with an ellipsis.

    Control characters become spaces: a newline in a command would break the layout, and an
    escape sequence in one would reach the terminal.
    """
    text = "".join(c if c.isprintable() else " " for c in text)
    if width_of(text) <= width:
        return text
    if width <= 0:
        return ""
    kept, used = [], 0
    for char in text:
        used += _cells(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


def _ordered(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What matters most first: running jobs, then the queue in its order, then the latest ended."""
    running = sorted(
        (j for j in jobs if j["state"] in ("running", "paused")), key=lambda j: j.get("start_time") or 0
    )
    waiting = [j for j in jobs if j["state"] in _WAITING]  # the daemon lists them in queue order
    ended = sorted(
        (j for j in jobs if j["state"] in _ENDED),
        key=lambda j: (j.get("end_time") or 0, j["id"]),
        reverse=True,
    )
    return running + waiting + ended


def _exit_text(job: dict[str, Any]) -> str:
    if job["state"] != "finished":
        return ""
    if job.get("signal"):
        return str(job["signal"])
    return "" if job.get("exit_code") is None else str(job["exit_code"])


def _gpus_text(job: dict[str, Any]) -> str:
    if job.get("gpus"):
        return ",".join(map(str, job["gpus"]))
    if job.get("gpu_indices_requested"):
        return "[" + ",".join(map(str, job["gpu_indices_requested"])) + "]"
    return f"x{job['gpus_requested']}" if job.get("gpus_requested") else ""


def _job_table(jobs: list[dict[str, Any]], width: int, color: bool) -> tuple[str, list[str]]:
    """The header and one line per job: ID, State, E-Level, Time, GPUs (where used), Command."""
    show_gpus = any(_gpus_text(j) for j in jobs)
    rows = []
    for job in jobs:
        cells = [str(job["id"]), job["state"], _exit_text(job), duration(job.get("run_time"))]
        if show_gpus:
            cells.append(_gpus_text(job))
        rows.append(cells)
    headers = ["ID", "State", "E-Level", "Time", *(["GPUs"] if show_gpus else [])]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str], command: str) -> str:
        return fit("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + command, width)

    lines = []
    for job, cells in zip(jobs, rows, strict=True):
        label = f"[{job['label']}]" if job.get("label") else ""
        text = line(cells, label + str(job.get("command", ""))).rstrip()
        code = _ROW_COLORS.get("failed" if failed(job) else job["state"])
        lines.append(f"{code}{text}{_RESET}" if color and code else text)
    return line(headers, "Command").rstrip(), lines


def _gpu_lines(gpus: list[dict[str, Any]], width: int, color: bool) -> list[str]:
    """One memory bar per GPU, with the jobs that hold it; the bars line up, one width for all."""
    index_width = max((len(str(g["index"])) for g in gpus), default=1)
    # "GPU i [bar] used/total GiB  holders": the bar takes what is left after room for the rest.
    bar_width = max(4, min(40, width - (4 + index_width + 1) - 2 - len(" 000.0/000.0 GiB  ") - _HOLDERS_ROOM))
    lines = []
    for gpu in gpus:
        total, used = max(int(gpu["total_mib"]), 1), max(int(gpu["used_mib"]), 0)
        if gpu.get("held_by"):
            holders = "jobs " + ",".join(map(str, gpu["held_by"]))
        elif not gpu.get("visible", True):
            holders = "outside TS_VISIBLE_DEVICES"
        else:
            holders = "free" if gpu.get("free") else "in use by others"
        filled = min(bar_width, round(used / total * bar_width))
        run = "█" * filled
        text = fit(
            f"GPU {str(gpu['index']).ljust(index_width)} [{run}{'·' * (bar_width - filled)}]"
            f" {used / 1024:5.1f}/{total / 1024:.1f} GiB  {holders}",
            width,
        )
        if color and run and run in text:
            text = text.replace(run, f"{_BAR_COLOR}{run}{_RESET}", 1)
        lines.append(text)
    return lines


def render_watch(
    jobs: list[dict[str, Any]],
    gpus: list[dict[str, Any]],
    slots: int,
    width: int,
    height: int,
    now: float,
    color: bool,
    notice: str = "",
    progress: str = "",
    busy: int | None = None,
) -> str:
    """One frame: at most ``height`` lines of at most ``width`` cells, without a final newline.

    ``jobs`` are the dicts of ``ts -M json``, ``gpus`` those of the ``gpu_status`` request;
    ``notice`` is a line to show under the summary (the daemon stopped answering, say), and
    ``progress`` one above it (how far a sweep is, see :func:`progress`).  ``busy``: the slots
    in use, when ``jobs`` are not all the jobs (a filtered view); else counted from ``jobs``.
    """
    tally = counts(jobs)
    if busy is None:
        busy = sum(int(j.get("slots") or 1) for j in jobs if j["state"] in ("running", "paused"))
    eta = drain_estimate(jobs, slots)
    if tally["queued"] == 0:
        drain = "queue empty"
    elif eta is None:
        drain = "drain time unknown"
    else:
        drain = f"queue drains in ~{duration(eta)}"
    queued = f"queued {tally['queued']}"
    if tally["allocating"]:
        queued += f" ({tally['allocating']} allocating)"
    title = fit(f"ts --watch  {time.strftime('%H:%M:%S', time.localtime(now))}  slots {busy}/{slots}", width)
    head = [
        f"{_BOLD}{title}{_RESET}" if color else title,
        fit(
            f"finished {tally['finished']}  failed {tally['failed']}  running {tally['running']}  "
            f"{queued}  {drain}",
            width,
        ),
    ]
    if progress:
        head.append(fit(progress, width))
    if notice:
        head.append(fit(notice, width))

    header, rows = _job_table(_ordered(jobs), width, color)
    if not rows:
        header, rows = fit("No jobs.", width), []
    gpu_block = _gpu_lines(gpus, width, color)
    # Rows left under the summary, a blank line and the table header.
    room = height - len(head) - 2
    # GPU bars (after a blank line) take what the job list leaves, but never its first rows
    # (and the line that counts the rest).
    job_need = min(len(rows), _MIN_JOB_ROWS) + (len(rows) > _MIN_JOB_ROWS)
    gpu_room = max(0, room - job_need - 1)
    if len(gpu_block) > gpu_room:
        kept = max(gpu_room - 1, 0)
        more = fit(f"… {len(gpu_block) - kept} more GPUs (ts --gpu_status)", width)
        gpu_block = [*gpu_block[:kept], more] if gpu_room else []
    job_room = room - (len(gpu_block) + 1 if gpu_block else 0)
    if len(rows) > job_room:
        shown = max(job_room - 1, 0)
        rows = [*rows[:shown], fit(f"… {len(rows) - shown} more (ts -l lists them all)", width)]
    lines = [*head, "", header, *rows]
    if gpu_block:
        lines += ["", *gpu_block]
    return "\n".join(lines[: max(height, 0)])


# -- the terminal ---------------------------------------------------------------------------


class _Daemon:
    """The connection the view polls through.

    The first connection starts a daemon if none runs, as every ``ts`` call does; after that the
    view only reconnects to a running one, so a ``ts -K`` meanwhile is not undone behind the
    user's back.
    """

    def __init__(self, inv: Invocation) -> None:
        self.filter = filter_of(inv)
        self.best = inv.results.get("best")
        sweep = inv.filters.get("sweep")
        self.scope = f"sweep {sweep}" if sweep else "selected jobs" if self.filter else "all jobs"
        self.progress = self.filter is not None or self.best is not None
        self.client: Client | None = Client()

    def fetch(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, str, int | None]:
        """The jobs, the GPUs, the number of slots, and with filters the progress line and the
        slots in use by every job (the daemon's count: the view shows only some jobs)."""
        if self.client is None:
            client = Client.__new__(Client)
            client.sock = connect(autostart=False)
            self.client = client
        try:
            jobs = json.loads(self.client.call(rq.List(format="json", filter=self.filter))["text"])
            gpus = self.client.call(rq.GpuStatus(data=True)).get("gpus") or []
            slots = int(self.client.call(rq.Slots())["slots"])
            line, busy = "", None
            if self.progress:
                request = rq.Results(filter=self.filter, best=self.best, pick_best=self.best is None)
                reply = self.client.call(request)
                line = progress(jobs, reply.get("best"), self.scope)
                busy = reply.get("busy") if self.filter is not None else None
        except BaseException:
            self.close()  # a half-read reply leaves the connection unusable
            raise
        return jobs, gpus, slots, line, busy

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _size() -> os.terminal_size:
    try:
        return os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return shutil.get_terminal_size()


@contextlib.contextmanager
def _screen() -> Iterator[None]:
    """Hide the cursor and the echo of typed keys; put both back however the view ends."""
    saved_tty = None
    try:
        import termios

        if sys.stdin.isatty():
            fd = sys.stdin.fileno()
            saved_tty = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~termios.ECHO  # Ctrl-C still interrupts; "^C" is just not drawn
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (ImportError, OSError):
        saved_tty = None
    # SIGTERM and SIGHUP end the view the way Ctrl-C does, so the terminal is restored.
    saved_signals = {
        sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    sys.stdout.write(_HIDE_CURSOR)
    sys.stdout.flush()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            # Below the last frame, which stays on the screen, as watch(1) leaves it.
            sys.stdout.write(f"{_RESET}\n{_SHOW_CURSOR}")
            sys.stdout.flush()
        if saved_tty is not None:
            import termios

            with contextlib.suppress(OSError):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, saved_tty)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)


def _draw(frame: str, height: int) -> None:
    # Each line clears itself before it is drawn, so the old frame never flickers away; rows
    # below a shorter frame are cleared after it.  No newline after a full screen's last line,
    # which would scroll the frame up.
    lines = frame.split("\n")
    out = _HOME + "\n".join(_CLEAR_LINE + line for line in lines)
    if len(lines) < height:
        out += "\n" + _CLEAR_DOWN
    sys.stdout.write(out)
    sys.stdout.flush()


def _pause(seconds: float, size: os.terminal_size) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _size() == size:
        time.sleep(min(_RESIZE_CHECK, max(deadline - time.monotonic(), 0)))


def watch(inv: Invocation) -> int:
    daemon = _Daemon(inv)
    try:
        jobs, gpus, slots, line, busy = daemon.fetch()
        if not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
            size = shutil.get_terminal_size()
            frame = render_watch(
                jobs, gpus, slots, size.columns, size.lines, time.time(), False, "", line, busy
            )
            sys.stdout.write(frame + "\n")
            return 0
        color = not os.environ.get("NO_COLOR")
        notice, fetched = "", time.time()
        with _screen():
            try:
                while True:
                    size = _size()
                    frame = render_watch(
                        jobs, gpus, slots, size.columns, size.lines, time.time(), color, notice, line, busy
                    )
                    _draw(frame, size.lines)
                    _pause(REFRESH, size)
                    try:
                        (jobs, gpus, slots, line, busy), notice, fetched = daemon.fetch(), "", time.time()
                    except (SpoolerError, OSError, ValueError) as exc:
                        # Keep showing the last data we have, and say how old it is.
                        since = time.strftime("%H:%M:%S", time.localtime(fetched))
                        notice = f"No answer from the daemon since {since}: {exc}"
            except KeyboardInterrupt:
                return 0
    finally:
        daemon.close()
