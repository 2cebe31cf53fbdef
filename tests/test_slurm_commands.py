"""SLURM's command-line tools as data: arguments built from jobs, and output parsed, in-process.

The outputs below were captured from the test cluster (SLURM 22.05, tests/slurm/cluster.sh).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spooler.daemon import config_file
from spooler.daemon.config_file import ConfigError, SlurmConfig
from spooler.daemon.slurm import commands
from spooler.daemon.slurm.commands import Request, request_of, sbatch_args
from spooler.daemon.slurm.script import Task, batch_script, read_status
from spooler.jobs import Job, JobState

SQUEUE = """\
5|5|FAILED|NonZeroExitCode|debug|localhost|N/A|2026-12-02T14:25:18|2026-12-02T14:25:18|(null)
3|3|PENDING|Resources|debug||gres:gpu:2|2027-12-02T14:25:18|2028-12-01T14:25:18|ts:ccc
4_2|4|PENDING|JobArrayTaskLimit|debug||N/A|N/A|N/A|ts:arr
1|1|RUNNING|None|debug|localhost|gres:gpu:2|2026-12-02T14:25:18|2027-12-02T14:25:18|ts:abc
4_0|4|RUNNING|None|debug|localhost|N/A|2026-12-02T14:25:18|Unknown|ts:arr
12|12|CANCELLED|None|debug|localhost|N/A|2026-12-02T14:25:23|2026-12-02T14:25:24|ts:x
7|7|PENDING|Priority|debug||N/A|N/A|N/A|a|comment|with bars
"""

SCONTROL = (
    "JobId=3 JobName=wrap UserId=root(0) GroupId=root(0) JobState=RUNNING Reason=None "
    "Dependency=(null) ExitCode=0:0 RunTime=00:00:01 Partition=debug NodeList=localhost "
    "Command=/bin/sh -c echo hi WorkDir=/tmp/wt17-cap Comment=ts:ccc "
    "Nodes=localhost CPU_IDs=2 Mem=0 GRES=gpu:2(IDX:0-1) TresPerNode=gres:gpu:2\n"
    "JobId=5 JobName=wrap JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 Partition=debug\n"
)


def test_squeue_rows() -> None:
    rows = commands.parse_squeue(SQUEUE + "squeue: warning: something\n")
    assert [r.id for r in rows] == ["5", "3", "4_2", "1", "4_0", "12", "7"]
    assert rows[1].reason == "Resources" and rows[1].gres == "gres:gpu:2" and rows[1].nodes == ""
    assert rows[1].token == "ccc" and rows[0].token is None and rows[0].comment == ""
    assert rows[2].array_job == "4" and rows[2].token == "arr"
    assert rows[6].comment == "a|comment|with bars" and rows[6].token is None
    start, end = commands.timestamp(rows[5].start), commands.timestamp(rows[5].end)
    assert start is not None and end == start + 1
    assert commands.timestamp(rows[2].start) is None and commands.timestamp(rows[4].end) is None


def test_scontrol_keys_and_values_with_spaces() -> None:
    jobs = commands.parse_scontrol(SCONTROL)
    assert jobs[0]["JobState"] == "RUNNING" and jobs[0]["Command"] == "/bin/sh -c echo hi"
    assert jobs[0]["Comment"] == "ts:ccc" and commands.allocated_gpus(jobs[0]) == "0-1"
    assert commands.parse_exit_code(jobs[1]["ExitCode"]) == (3, None)
    assert commands.allocated_gpus(jobs[1]) == ""


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("12|COMPLETED|0:0|None", ("12", "COMPLETED", 0, None, "")),
        ("13|FAILED|3:0|NonZeroExitCode", ("13", "FAILED", 3, None, "NonZeroExitCode")),
        ("14|CANCELLED by 0|0:15|None", ("14", "CANCELLED", None, 15, "")),
        ("15_2|TIMEOUT|0:15|TimeLimit", ("15_2", "TIMEOUT", None, 15, "TimeLimit")),
        ("16|NODE_FAIL|0:0", ("16", "NODE_FAIL", 0, None, "")),
    ],
)
def test_sacct_rows(line: str, expected: tuple[object, ...]) -> None:
    (row,) = commands.parse_sacct(line + "\n")
    assert (row.id, row.state, row.exit_code, row.signal, row.reason) == expected


@pytest.mark.parametrize(
    ("out", "expected"), [("123\n", "123"), ("124;cluster\n", "124"), ("warning\n125\n", "125")]
)
def test_sbatch_parsable(out: str, expected: str) -> None:
    assert commands.parse_sbatch(out) == expected


def test_sbatch_without_an_id() -> None:
    with pytest.raises(ValueError, match="no job id"):
        commands.parse_sbatch("")


@pytest.mark.parametrize(
    ("stderr", "line", "unreachable"),
    [
        (
            "sbatch: error: invalid partition specified: nope\n"
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
            "Batch job submission failed: Invalid partition name specified",
            False,
        ),
        (
            "allocation failure: Requested node configuration is not available\n",
            "allocation failure: Requested node configuration is not available",
            False,
        ),
        (
            "sbatch: error: Batch job submission failed: "
            "Unable to contact slurm controller (connect failure)\n",
            "Batch job submission failed: Unable to contact slurm controller (connect failure)",
            True,
        ),
        (
            "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
            "Unable to contact slurm controller (connect failure)",
            True,
        ),
    ],
)
def test_error_lines(stderr: str, line: str, unreachable: bool) -> None:
    assert commands.error_line(stderr) == line
    assert commands.controller_unreachable(stderr) is unreachable


@pytest.mark.parametrize(
    ("state", "ours", "ended", "cancelled"),
    [
        ("PENDING", JobState.ALLOCATING, False, False),
        ("CONFIGURING", JobState.ALLOCATING, False, False),
        ("REQUEUED", JobState.ALLOCATING, False, False),
        ("RUNNING", JobState.RUNNING, False, False),
        ("COMPLETING", JobState.RUNNING, False, False),
        ("SUSPENDED", JobState.RUNNING, False, False),
        ("COMPLETED", JobState.FINISHED, True, False),
        ("FAILED", JobState.FINISHED, True, False),
        ("TIMEOUT", JobState.TIMEOUT, True, False),
        ("CANCELLED", JobState.FINISHED, True, True),
        ("CANCELLED by 0", JobState.FINISHED, True, True),
        ("NODE_FAIL", JobState.LOST, True, False),
        ("PREEMPTED", JobState.LOST, True, False),
        ("BOOT_FAIL", JobState.LOST, True, False),
        ("OUT_OF_MEMORY", JobState.LOST, True, False),
        ("SOMETHING_NEW", JobState.LOST, True, False),
    ],
)
def test_state_mapping(state: str, ours: JobState, ended: bool, cancelled: bool) -> None:
    seen = commands.verdict(state, "Resources")
    assert (seen.state, seen.ended, seen.cancelled) == (ours, ended, cancelled)
    if ours is JobState.LOST:
        assert state.split()[0] in seen.reason  # the reason names SLURM's state
    if state == "PENDING":
        assert seen.reason == "Resources"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(90, "0-00:01:30"), (3600, "0-01:00:00"), (2 * 86400 + 61, "2-00:01:01"), (0, "0-00:00:01")],
)
def test_time_format(seconds: int, text: str) -> None:
    assert commands.format_time(seconds) == text


def job(**fields: object) -> Job:
    defaults: dict[str, object] = {"id": 7, "command": ["python", "train.py"], "cwd": "/home/u/exp"}
    return Job(**{**defaults, **fields})  # type: ignore[arg-type]


def test_sbatch_arguments_of_a_job() -> None:
    config = SlurmConfig(partition="gpu", account="lab", qos="high", extra_args=["--mem=4G"])
    request = request_of(
        job(gpus=2, slots=4, time_limit=3600, label="base", stderr_apart=True),
        config,
        "/logs/ts-out.x",
        token="abc",
        deps=(("11",), ("12_3",)),
    )
    assert sbatch_args(request) == [
        "sbatch", "--parsable", "--job-name=base", "--chdir=/home/u/exp", "--export=ALL", "--no-requeue",
        "--output=/logs/ts-out.x", "--error=/logs/ts-out.x.e", "--gres=gpu:2", "--cpus-per-task=4",
        "--time=0-01:00:00", "--dependency=afterany:11,afterok:12_3", "--comment=ts:abc",
        "--partition=gpu", "--account=lab", "--qos=high", "--mem=4G",
    ]  # fmt: skip


def test_sbatch_arguments_of_an_array_and_a_test() -> None:
    request = Request(name="sweep", cwd="/w", output="/l/ts-out.t.%a", token="t", tasks=20, throttle=4)
    args = sbatch_args(request)
    assert "--array=0-19%4" in args and "--output=/l/ts-out.t.%a" in args and "--error=/l/ts-out.t.%a" in args
    assert not any(a.startswith(("--gres", "--time", "--dependency", "--cpus")) for a in args)
    assert sbatch_args(Request(name="x", cwd="/", output="/dev/null"), test_only=True)[:2] == [
        "sbatch",
        "--test-only",
    ]


def test_a_label_or_a_sweep_names_the_job() -> None:
    assert request_of(job(), SlurmConfig(), "o").name == "ts"
    assert request_of(job(sweep="lr"), SlurmConfig(), "o").name == "lr"


def run_script(text: str, tmp_path: Path, task: int | None = None) -> int:
    import subprocess

    script = tmp_path / "batch.sh"
    script.write_text(text)
    env = {"PATH": "/usr/bin:/bin", "KEEP": "shared"}
    if task is not None:
        env["SLURM_ARRAY_TASK_ID"] = str(task)
    return subprocess.run(["/bin/sh", str(script)], env=env, cwd=tmp_path, check=False).returncode


def test_the_batch_script_writes_the_exit_status_atomically(tmp_path: Path) -> None:
    status = tmp_path / "log.exit"
    text = batch_script(
        [Task(["/bin/sh", "-c", 'echo "$A $KEEP" > out; exit 3'], str(status), {"A": "it's"}, 4)]
    )
    assert run_script(text, tmp_path) == 3
    assert read_status(str(status)) == 3 and (tmp_path / "out").read_text() == "it's shared\n"
    assert [p.name for p in tmp_path.iterdir() if ".tmp." in p.name] == []


def test_an_array_script_runs_the_task_slurm_names(tmp_path: Path) -> None:
    tasks = [
        Task(["/bin/sh", "-c", f'printf "%s" "$TS_ARGS" > out{i}; exit {i}'], str(tmp_path / f"{i}.exit"),
             {"TS_ARGS": f'{{"lr": {i}, "x": "a b\\nc"}}'}, 10 + i)
        for i in range(3)
    ]  # fmt: skip
    text = batch_script(tasks)
    assert "# spooler jobs 10-12" in text
    assert run_script(text, tmp_path, task=2) == 2
    assert read_status(str(tmp_path / "2.exit")) == 2 and read_status(str(tmp_path / "0.exit")) is None
    assert (tmp_path / "out2").read_text() == '{"lr": 2, "x": "a b\\nc"}'
    assert run_script(text, tmp_path, task=9) == 127


def test_no_status_is_none(tmp_path: Path) -> None:
    assert read_status(str(tmp_path / "missing")) is None
    (tmp_path / "torn").write_text("")
    assert read_status(str(tmp_path / "torn")) is None


# -- the config file ---------------------------------------------------------------------------


def test_config_file_and_ts_backend(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'backend = "slurm"\n[slurm]\npartition = "gpu"\nextra_args = ["--mem=1G"]\nmax_in_flight = 5\n'
    )
    loaded = config_file.load({"TS_CONFIG": str(path)})
    assert loaded.backend == "slurm" and loaded.slurm.partition == "gpu" and loaded.slurm.max_in_flight == 5
    assert config_file.load({"TS_CONFIG": str(path), "TS_BACKEND": "local"}).backend == "local"
    assert config_file.load({"XDG_CONFIG_HOME": str(tmp_path)}).backend == "local"  # no file: defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'backend = "slurm"\n[slurm]\npartition = "a"\npartiton = "b"\n',
            r"c.toml:4: unknown \[slurm\] key 'partiton'",
        ),
        ('bakend = "slurm"\n', r"c.toml:1: unknown key 'bakend'"),
        ("[slurrm]\nx = 1\n", r"c.toml:1: unknown section 'slurrm'"),
        ('backend = "cloud"\n', r'c.toml:1: backend must be "local" or "slurm"'),
        ("[slurm]\nmax_in_flight = 0\n", r"c.toml:2: slurm.max_in_flight must be a whole number"),
        ('[slurm]\nextra_args = "--mem=1G"\n', r"c.toml:2: slurm.extra_args must be a list of strings"),
        ("backend = \n", r"c.toml: Invalid value"),
    ],
)
def test_config_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config_file.load({"TS_CONFIG": str(path)})


def test_config_env_errors() -> None:
    with pytest.raises(ConfigError, match="TS_BACKEND='x' must be"):
        config_file.load({"TS_CONFIG": "", "TS_BACKEND": "x", "XDG_CONFIG_HOME": "/nonexistent"})
    with pytest.raises(ConfigError, match="no such file"):
        config_file.load({"TS_CONFIG": "/nonexistent/c.toml"})
