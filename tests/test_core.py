"""The options of the core issue, end to end through ``ts`` against a real daemon."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import TS, Spool, alive, text_of, wait_for, wait_pid_file


def gate(spool: Spool, name: str = "gate") -> tuple[list[str], Path]:
    """A command that runs until the test creates a file: holds a slot for as long as needed."""
    path = spool.root / name
    return ["sh", "-c", f"until [ -e {path} ]; do sleep 0.02; done"], path


def test_enqueue_prints_id_and_returns_before_the_job_ends(spool: Spool) -> None:
    cmd, path = gate(spool)
    first = spool.submit(*cmd)
    second = spool.submit("true")
    assert (first, second) == (0, 1)
    assert spool.job(first)["state"] == "running"
    assert spool.job(second)["state"] == "queued"
    path.touch()
    assert spool.run("-w", str(second)).returncode == 0


def test_list_is_the_default_action_with_the_original_columns(spool: Spool) -> None:
    long_cmd = ["echo", *[f"argument-number-{i}" for i in range(30)]]
    job = spool.submit(*long_cmd)
    spool.run("-w", str(job))
    bare, listed = spool.ts(), spool.ts("-l")
    assert bare == listed
    header = listed.splitlines()[0].split()
    assert header[:6] == ["ID", "State", "Output", "E-Level", "Time", "Command"]
    assert "[run=0/1]" in listed.splitlines()[0]
    assert " ".join(long_cmd) in listed  # piped output never cuts the command


def test_slots_get_set_and_two_jobs_run_at_once(spool: Spool) -> None:
    assert spool.ts("-S").strip() == "1"
    spool.ts("-S", "2")
    assert spool.ts("-S").strip() == "2"
    cmd, path = gate(spool)
    a, b, c = spool.submit(*cmd), spool.submit(*cmd), spool.submit("true")
    spool.wait_state(a, "running")
    spool.wait_state(b, "running")
    assert spool.job(c)["state"] == "queued"
    assert "[run=2/2]" in spool.ts("-l")
    path.touch()
    assert spool.run("-w", str(c)).returncode == 0


def test_ts_slots_variable_is_read_at_daemon_start(spool: Spool) -> None:
    spool.ts("-l", env={"TS_SLOTS": "3"})
    assert spool.ts("-S").strip() == "3"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5"])
def test_bad_slot_values_are_refused(spool: Spool, value: str) -> None:
    done = spool.run("-S", value)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert spool.ts("-S").strip() == "1"


def test_zero_slots_drains_running_jobs_go_on_and_nothing_new_starts(spool: Spool) -> None:
    spool.ts("-S", "2")
    cmd, path = gate(spool)
    running = spool.submit(*cmd)
    spool.wait_state(running, "running")
    spool.ts("-S", "0")
    assert spool.ts("-S").strip() == "0"
    later = spool.submit("true")
    path.touch()
    assert spool.run("-w", str(running)).returncode == 0  # the running job went on to its end
    assert spool.job(later)["state"] == "queued"
    assert "[run=0/0]" in spool.ts("-l")
    spool.ts("-S", "1")
    assert spool.run("-w", str(later)).returncode == 0


def test_a_job_needing_more_slots_waits_for_them(spool: Spool) -> None:
    spool.ts("-S", "2")
    cmd, path = gate(spool)
    a = spool.submit(*cmd)
    wide = spool.submit("true", opts=("-N", "2"))
    spool.wait_state(a, "running")
    assert spool.job(wide)["state"] == "queued"
    assert spool.job(wide)["slots"] == 2
    path.touch()
    assert spool.run("-w", str(wide)).returncode == 0


def test_label(spool: Spool) -> None:
    job = spool.submit("true", opts=("-L", "exp-1"))
    spool.run("-w", str(job))
    assert "[exp-1]true" in spool.ts("-l")
    assert spool.ts("-a", str(job)).strip() == "exp-1"
    assert spool.ts("-a").strip() == "exp-1"


def test_no_output_and_foreground(spool: Spool) -> None:
    quiet = spool.submit("echo", "hidden", opts=("-n",))
    assert spool.run("-w", str(quiet)).returncode == 0
    assert spool.job(quiet)["output"] is None
    fg = spool.run("-f", "sh", "-c", "echo stored; exit 5")
    assert fg.returncode == 5
    assert fg.stdout == ""  # -f prints no id and the output is stored
    job = spool.jobs()[-1]
    assert Path(job["output"]).read_text() == "stored\n"
    term = spool.run("-nf", "sh", "-c", "echo to-terminal; echo err >&2; exit 4")
    assert term.returncode == 4
    assert term.stdout == "to-terminal\n"
    assert term.stderr == "err\n"


def test_tail_and_cat_follow_until_the_job_ends(spool: Spool) -> None:
    path = spool.root / "gate"
    job = spool.submit("sh", "-c", f"seq 1 15; until [ -e {path} ]; do sleep 0.02; done; echo last; exit 6")
    log = Path(spool.wait_state(job, "running")["output"])
    # -t shows the last 10 lines of what is there when it starts: wait until all 15 are.
    wait_for(lambda: text_of(log).endswith("15\n"), what="the job's first 15 lines")
    follower = subprocess.Popen([*TS, "-t", str(job)], env=spool.env, stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    first = follower.stdout.readline()
    path.touch()
    rest = follower.stdout.read()
    assert follower.wait(timeout=30) == 6
    lines = (first + rest).split()
    assert lines == [str(i) for i in range(6, 16)] + ["last"]
    whole = spool.run("-c", str(job))
    assert whole.returncode == 6
    assert whole.stdout.split() == [str(i) for i in range(1, 16)] + ["last"]


def test_tail_waits_for_a_queued_job_to_start(spool: Spool) -> None:
    cmd, path = gate(spool)
    spool.submit(*cmd)
    job = spool.submit("sh", "-c", "seq 1 12; exit 3")
    sockets = spool.daemon_sockets()
    followers = [
        subprocess.Popen([*TS, flag, str(job)], env=spool.env, stdout=subprocess.PIPE, text=True)
        for flag in ("-t", "-c")
    ]
    wait_for(lambda: spool.daemon_sockets() >= sockets + 2, what="both followers waiting in the daemon")
    assert spool.job(job)["state"] == "queued"
    path.touch()
    tail, cat = (f.communicate(timeout=30)[0] for f in followers)
    assert [f.returncode for f in followers] == [3, 3]
    # Followed from before it started: every line, as tail -f shows all of a file that was empty.
    assert tail.split() == cat.split() == [str(i) for i in range(1, 13)]


def test_tail_of_a_queued_job_that_is_removed_or_skipped(spool: Spool) -> None:
    path = spool.root / "gate"
    first = spool.submit("sh", "-c", f"until [ -e {path} ]; do sleep 0.02; done; exit 1")
    removed = spool.submit("true")
    sockets = spool.daemon_sockets()
    follower = subprocess.Popen(
        [*TS, "-t", str(removed)], env=spool.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: spool.daemon_sockets() >= sockets + 1, what="the follower waiting in the daemon")
    spool.ts("-r", str(removed))
    _, err = follower.communicate(timeout=30)
    assert follower.returncode != 0
    assert err.startswith("ts: ") and str(removed) in err and "Traceback" not in err
    skipped = spool.submit("-W", str(first), "true")
    path.touch()
    spool.run("-w", str(first))
    spool.wait_state(skipped, "skipped")
    result = spool.run("-t", str(skipped))
    assert result.returncode != 0
    assert result.stderr == f"ts: job {skipped} was skipped and has no output\n"


def test_job_fields(spool: Spool) -> None:
    job = spool.submit("sh", "-c", "echo $$; exit 0")
    spool.run("-w", str(job))
    output = spool.ts("-o", str(job)).strip()
    assert Path(output).name.startswith("ts-out.")
    assert Path(output).parent == spool.logdir
    assert spool.ts("-p", str(job)).strip() == Path(output).read_text().strip()
    assert spool.ts("-s", str(job)).strip() == "finished"
    info = spool.ts("-i", str(job))
    assert "Exit status: died with exit code 0" in info
    assert "Command: sh -c 'echo $$; exit 0'" in info


def test_pid_of_a_job_that_just_started(spool: Spool) -> None:
    # A job handed to the launcher a moment ago has no pid yet: ts -p waits for it, not fails.
    cmd, path = gate(spool)
    for _ in range(5):
        job = spool.submit(*cmd)
        spool.wait_state(job, "running")
        pid = int(spool.ts("-p", str(job)))
        assert alive(pid)
        path.touch()
        spool.run("-w", str(job))
        path.unlink()


def test_wait_exit_codes(spool: Spool) -> None:
    ok, bad = spool.submit("true"), spool.submit("sh", "-c", "exit 7")
    assert spool.run("-w", str(ok)).returncode == 0
    assert spool.run("-w", str(bad)).returncode == 7
    assert spool.run("-w").returncode == 7  # the last added job
    killed = spool.submit("sh", "-c", "kill -9 $$")
    assert spool.run("-w", str(killed)).returncode == 255
    assert spool.job(killed)["signal"] == "SIGKILL"


def test_remove_queued_job_and_refuse_running_one(spool: Spool) -> None:
    cmd, path = gate(spool)
    running = spool.submit(*cmd)
    queued = spool.submit("true")
    spool.ts("-r", str(queued))
    assert [j["id"] for j in spool.jobs()] == [running]
    refused = spool.run("-r", str(running))
    assert refused.returncode != 0 and "running" in refused.stderr
    path.touch()


def test_kill_terminates_the_whole_process_group(spool: Spool) -> None:
    pidfile = spool.root / "child.pid"
    job = spool.submit("sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait")
    child = wait_pid_file(pidfile)
    spool.ts("-k", str(job))
    assert spool.run("-w", str(job)).returncode == 255
    assert spool.job(job)["signal"] == "SIGTERM"
    wait_for(lambda: not alive(child), what="the job's child to die")


def test_clear_finished(spool: Spool) -> None:
    cmd, path = gate(spool)
    done = spool.submit("true")
    spool.run("-w", str(done))
    running = spool.submit(*cmd)
    spool.ts("-C")
    assert [j["id"] for j in spool.jobs()] == [running]
    path.touch()


def test_stop_daemon_and_restart_keeps_jobs(spool: Spool) -> None:
    job = spool.submit("sh", "-c", "echo kept")
    spool.run("-w", str(job))
    spool.ts("-K")
    assert not spool.socket.exists()
    wait_for(lambda: spool.daemon_pid() is None, what="the daemon process to exit")
    assert [j["id"] for j in spool.jobs()] == [job]  # a new daemon, the same list
    assert spool.submit("true") == job + 1


def test_help_and_version(spool: Spool) -> None:
    assert "-S, --slots [num]" in spool.ts("-h")
    assert spool.ts("-V").startswith("ts (spooler) ")


def test_jobs_get_the_submitters_directory_and_environment(spool: Spool, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    job = spool.submit(
        "sh",
        "-c",
        "pwd; echo $MY_VAR; echo $PYTHONUNBUFFERED; cat; ls -l /proc/self/fd/0",
        env={"MY_VAR": "from-the-submitter"},
        cwd=workdir,
    )
    spool.run("-w", str(job))
    lines = Path(spool.job(job)["output"]).read_text().splitlines()
    assert lines[:3] == [str(workdir), "from-the-submitter", "1"]
    assert lines[3].endswith("/dev/null")
    mode = stat.S_IMODE(os.stat(spool.job(job)["output"]).st_mode)
    assert mode == 0o600


def test_a_single_word_with_shell_operators_runs_through_sh(spool: Spool) -> None:
    job = spool.submit("echo one && echo two | tr a-z A-Z")
    spool.run("-w", str(job))
    assert Path(spool.job(job)["output"]).read_text() == "one\nTWO\n"


def test_bad_input_is_one_line_and_loses_nothing(spool: Spool) -> None:
    kept = spool.submit("true")
    cases = [
        ("-w", "99"),
        ("-L",),
        ("-D", "1,,x", "true"),
        ("",),
        ("-U", "3"),
        ("--no-such-option",),
        ("-S", "2", "extra"),
    ]
    for args in cases:
        done = spool.run(*args)
        assert done.returncode != 0, args
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert [j["id"] for j in spool.jobs()] == [kept]


def test_a_command_that_does_not_exist_finishes_with_a_reason(spool: Spool) -> None:
    job = spool.submit("no-such-command-here", "arg")
    assert spool.run("-w", str(job)).returncode == 127
    assert "no-such-command-here" in Path(spool.job(job)["output"]).read_text()
    assert spool.run("-w", str(spool.submit("true"))).returncode == 0  # the daemon stays up


def test_unwritable_log_directory_is_refused(spool: Spool, tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    done = spool.run("--set_logdir", str(missing))
    assert done.returncode != 0 and "not a directory" in done.stderr
    assert spool.ts("--get_logdir").strip() == str(spool.logdir)


def test_list_last_shows_only_the_end_of_the_list(spool: Spool) -> None:
    cmd, path = gate(spool)
    running = spool.submit(*cmd)
    queued = [spool.submit("echo", str(i)) for i in range(4)]
    whole = spool.ts("-l").splitlines()
    assert [line.split()[0] for line in whole[1:]] == [str(running), *map(str, queued)]
    last_two = spool.ts("-l", "--last", "2").splitlines()
    assert [line.split() for line in last_two] == [line.split() for line in (whole[0], *whole[-2:])]
    assert spool.ts("--last", "1", "--ids").split() == [str(queued[-1])]
    assert len(spool.ts("-l", "--last", "100").splitlines()) == len(whole)
    assert [j["id"] for j in json.loads(spool.ts("-M", "json", "--last", "3"))] == queued[-3:]
    for bad in (["-l", "--last", "0"], ["-l", "--last", "x"], ["-r", "--last", "2"]):
        done = spool.run(*bad)
        assert done.returncode != 0 and "Traceback" not in done.stderr
    path.touch()
