"""Shell completion through the real ``ts``: scripts, option names, live job ids, no daemon."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import Spool


def complete(spool: Spool, words: str, shell: str = "bash", var: str = "_TS_COMPLETE") -> list[str]:
    """What ``ts`` answers the completion script with, for the command line ``words``.

    The word being completed is the last one ("" after a trailing space), as the scripts send.
    """
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    done = spool.run(env={var: f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [line for line in done.stdout.splitlines() if line]  # no candidates: one empty line


def values(lines: list[str]) -> list[str]:
    """The values of bash's ``type,value`` lines."""
    return [line.split(",", 1)[1] for line in lines]


def gate_job(spool: Spool, name: str, *opts: str) -> int:
    """A job that runs until the test creates file ``name``."""
    gate = spool.root / name
    return spool.submit("sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done", opts=opts)


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F"), ("zsh", "#compdef ts"), ("fish", "complete --no-files --command ts")],
)
def test_source_scripts(spool: Spool, shell: str, marker: str) -> None:
    done = spool.run(env={"_TS_COMPLETE": f"{shell}_source"})
    assert done.returncode == 0, done.stderr
    assert "_TS_COMPLETE" in done.stdout
    assert marker in done.stdout
    assert not spool.socket.exists()


def test_tsp_has_its_own_script(spool: Spool) -> None:
    done = spool.run(env={"_TSP_COMPLETE": "bash_source"})
    assert done.returncode == 0, done.stderr
    assert "_TSP_COMPLETE" in done.stdout and " tsp" in done.stdout
    assert values(complete(spool, "tsp --set_g", var="_TSP_COMPLETE")) == ["--set_gpu_free_perc"]


def test_a_bad_instruction_is_one_line_and_exit_2(spool: Spool) -> None:
    done = spool.run(env={"_TS_COMPLETE": "tcsh_source"})
    assert done.returncode == 2
    assert "_TS_COMPLETE" in done.stderr and "Traceback" not in done.stderr


def test_option_names(spool: Spool) -> None:
    assert values(complete(spool, "ts --set_g")) == ["--set_gpu_free_perc"]
    offered = values(complete(spool, "ts -"))
    assert {"-k", "--kill", "-G", "--gpus", "--gpu_mem", "--batch", "--watch", "-h"} <= set(offered)


def test_zsh_shows_option_help(spool: Spool) -> None:
    lines = complete(spool, "ts --wat", shell="zsh")
    assert lines == ["plain", "--watch", "redraw the list and the GPUs every 2 s until Ctrl-C"]


def test_values_of_options(spool: Spool) -> None:
    assert values(complete(spool, "ts -M ")) == ["default", "json", "tab"]
    assert complete(spool, "ts --batch ") == ["file,"]  # the shell completes the path
    assert complete(spool, "ts --set_logdir lo") == ["file,lo"]


def test_after_the_command_words_are_files_not_options(spool: Spool) -> None:
    # "ts python -": the "-" belongs to python, so ts's options must not be offered.
    assert complete(spool, "ts python -") == ["file,-"]
    assert complete(spool, "ts -G 1 python tr") == ["file,tr"]


def test_job_ids_from_the_live_queue(spool: Spool) -> None:
    running = gate_job(spool, "gate-a")
    spool.wait_state(running, "running")
    queued = gate_job(spool, "gate-b", "-L", "second")
    waiting = spool.submit("true", opts=("-D", str(running)))
    assert spool.job(queued)["state"] == "queued"

    everything = {str(running), str(queued), str(waiting)}
    assert set(values(complete(spool, "ts -i "))) == everything
    assert set(values(complete(spool, "ts -w "))) == everything
    # Only the jobs the action can act on: -k running ones, -u queued ones.
    assert values(complete(spool, "ts -k ")) == [str(running)]
    assert set(values(complete(spool, "ts -u "))) == {str(queued), str(waiting)}
    # A list completes its last element and does not offer an id twice.
    assert set(values(complete(spool, f"ts -D {running},"))) == {
        f"{running},{queued}",
        f"{running},{waiting}",
    }
    # zsh and fish show each id's state and command beside it.
    zsh = complete(spool, "ts -k ", shell="zsh")
    assert zsh[:2] == ["plain", str(running)] and zsh[2].startswith("running: sh -c")
    fish = spool.run(
        env={"_TS_COMPLETE": "fish_complete", "COMP_WORDS": "ts -i ", "COMP_CWORD": ""}
    ).stdout.splitlines()
    assert f"plain,{queued}\tqueued: [second]sh -c" in "\n".join(fish)


def test_no_daemon_means_no_ids_and_no_daemon_started(spool: Spool) -> None:
    assert {"-k", "--kill"} <= set(values(complete(spool, "ts -")))
    assert complete(spool, "ts -k ") == []
    assert complete(spool, "ts --state f") == ["plain,finished", "plain,failed"]
    assert not spool.socket.exists()
    assert not spool.socket.parent.exists()  # not even its directory was created


def test_plain_ts_calls_never_import_click(spool: Spool) -> None:
    # Completion is the only user of click: it costs more than a whole ts call to import.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "spooler", "-V"],
        env=spool.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "spooler.cli.main" in imported
    assert not any(name.split(".")[0] == "click" for name in imported)


def test_ts_results_words_are_its_options_and_values(spool: Spool) -> None:
    assert complete(spool, "ts res") == ["file,res", "plain,results"]
    assert values(complete(spool, "ts results --so")) == ["--sort"]
    assert {"--sweep", "--where", "--best", "--format", "--ids"} <= set(
        values(complete(spool, "ts results --"))
    )
    assert values(complete(spool, "ts results --format ")) == ["table", "csv", "json", "markdown"]
    assert values(complete(spool, "ts --format m")) == ["markdown"]
    assert complete(spool, "ts results --state f") == ["plain,finished", "plain,failed"]
    # The fields come from the live queue; --sort takes -FIELD and lists, --best max: and min:.
    job = spool.submit(
        "sh",
        "-c",
        'echo \'{"acc": 1, "m": {"f1": 2}}\' > "$TS_RESULT_FILE" # %(lr)',
        opts=("--arg", "lr=1", "--"),
    )
    spool.wait_state(job, "finished")
    assert values(complete(spool, "ts results --sort ")) == [
        "id",
        "state",
        "time",
        "args.lr",
        "result.acc",
        "result.m.f1",
    ]
    assert values(complete(spool, "ts results --sort id,-result.")) == ["id,-result.acc", "id,-result.m.f1"]
    assert values(complete(spool, "ts results --best min:a")) == ["min:args.lr"]
    assert values(complete(spool, "ts --watch --best result.m")) == ["result.m.f1"]
    assert values(complete(spool, "ts results --sweep x --label ")) == []


def test_ids_and_queues_for_the_controls_of_a_jobs_life(spool: Spool) -> None:
    running = gate_job(spool, "gate-c")
    spool.wait_state(running, "running")
    held = spool.submit("true", opts=("--hold", "--queue", "cpu"))
    queued = gate_job(spool, "gate-d")
    assert values(complete(spool, "ts --pause ")) == [str(running)]
    assert values(complete(spool, "ts --release ")) == [str(held)]
    assert values(complete(spool, "ts --resume ")) == []
    assert set(values(complete(spool, "ts --edit "))) == {str(held), str(queued)}
    assert values(complete(spool, "ts -l --queue ")) == ["cpu", "default"]


def test_list_last_is_offered(spool: Spool) -> None:
    assert "--last" in values(complete(spool, "ts -l --la"))
