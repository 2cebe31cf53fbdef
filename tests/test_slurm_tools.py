"""Running SLURM's tools off the event loop (``spooler.daemon.slurm.tools``), with stand-ins."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from spooler.daemon.slurm.tools import Result, Tools


def run(argv: list[str], timeout: float = 10.0, stdin: str = "") -> tuple[Result, Tools]:
    """One ``Tools.run`` on a real loop; the child's end is watched through a pidfd here, as the
    daemon's SIGCHLD handler reports it there."""
    loop = asyncio.new_event_loop()

    def watch(pid: int, exited: Callable[[int], None]) -> None:
        pidfd = os.pidfd_open(pid)

        def ended() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            exited(os.waitpid(pid, 0)[1])

        loop.add_reader(pidfd, ended)

    tools = Tools(loop, os.environ, watch)
    results: list[Result] = []
    tools.run(argv, lambda r: (results.append(r), loop.stop()), stdin=stdin, timeout=timeout)
    loop.run_forever()
    loop.close()
    return results[0], tools


def test_output_larger_than_a_pipe_is_read_whole() -> None:
    result, tools = run(["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; echo oops >&2; exit 3"])
    assert (result.returncode, len(result.stdout), result.stderr) == (3, 300000, "oops\n")
    assert tools.calls["sh"] == 1


def test_standard_input_larger_than_a_pipe() -> None:
    result, _ = run(["wc", "-c"], stdin="y" * 200000)
    assert result.stdout.strip() == "200000"


def test_a_tool_that_does_not_answer_is_killed() -> None:
    result, _ = run(["sleep", "30"], timeout=0.2)
    assert result.timed_out and result.returncode == -1 and "did not answer" in result.stderr


def test_a_missing_tool() -> None:
    result, _ = run(["no-such-slurm-tool"])
    assert result.returncode == -1 and "command not found" in result.stderr
