"""The config file's ``[queues.NAME]`` tables: which backend runs a queue's jobs, its first -S and
its own ``[slurm]`` keys; a bad table is one line with the file and line.  (The daemon running
a queue in SLURM beside local ones is ``test_slurm_queues``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Spool

from spooler.daemon.backends import Binding
from spooler.daemon.config_file import ConfigError, QueueConfig, SlurmConfig, load, parse
from spooler.daemon.queues import Queue, configure

GOOD = """\
[slurm]
partition = "debug"
account = "lab"

[queues.cluster]
backend = "slurm"
slots = 20

[queues.cluster.slurm]
partition = "long"
extra_args = ["--mem=16G"]

[queues.gpu]
backend = "local"

[queues.default]
backend = "local"
"""


def test_queue_tables_are_read() -> None:
    config = parse(GOOD, "c.toml")
    assert config.backend == "local"
    assert config.queues == {
        "cluster": QueueConfig("slurm", 20, {"partition": "long", "extra_args": ["--mem=16G"]}),
        "gpu": QueueConfig("local", None, {}),
        "default": QueueConfig("local", None, {}),
    }


def test_the_binding_of_each_queue() -> None:
    config = parse(GOOD, "c.toml")
    binding = Binding(config.backend, config.queues, config.slurm)
    assert [binding.of(q) for q in (None, "cluster", "gpu", "new")] == ["local", "slurm", "local", "local"]
    assert binding.uses("slurm") and binding.uses("local")
    # The queue's [slurm] keys over the daemon's: the others are the daemon's.
    assert binding.slurm_of("cluster") == SlurmConfig(
        partition="long", account="lab", extra_args=["--mem=16G"]
    )
    assert binding.slurm_of(None) == binding.slurm_of("gpu") == SlurmConfig(partition="debug", account="lab")
    # A daemon whose backend is SLURM: every queue not bound otherwise is SLURM's.
    everywhere = Binding("slurm", {"here": QueueConfig("local")})
    assert [everywhere.of(q) for q in (None, "any", "here")] == ["slurm", "slurm", "local"]
    assert not Binding().uses("slurm") and not Binding("slurm").uses("local")


def test_ts_backend_sets_the_daemons_backend_and_the_queues_keep_theirs(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[queues.cluster]\nbackend = "slurm"\n[queues.here]\nbackend = "local"\n')
    config = load({"TS_CONFIG": str(path), "TS_BACKEND": "slurm"})
    binding = Binding(config.backend, config.queues)
    assert [binding.of(q) for q in (None, "cluster", "here")] == ["slurm", "slurm", "local"]


def test_a_queues_slots_are_its_first_only() -> None:
    queues = {"cluster": Queue("cluster", 7)}  # -S 7 set with ts, kept in the save-list
    configured = {
        "cluster": QueueConfig("slurm", 20),
        "new": QueueConfig("slurm", 4),
        "default": QueueConfig(),
    }
    assert configure(queues, configured)
    assert queues == {"cluster": Queue("cluster", 7), "new": Queue("new", 4)}
    assert not configure(queues, configured)
    assert configure(queues, {"plain": QueueConfig("local")}) and queues["plain"].slots == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[queues.c]\nbackend = "pbs"\n',
            'c.toml:2: queues.c.backend must be "local" or "slurm", not \'pbs\'',
        ),
        ("[queues.c]\nslot = 2\n", "c.toml:2: unknown [queues.c] key 'slot' (known: backend, slots, slurm)"),
        (
            "[queues.c]\nslots = 0\n",
            "c.toml:2: queues.c.slots must be a whole number from 1 to 1000000, not 0",
        ),
        ('\n\n[queues.c]\nslots = "2"\n', "c.toml:4: queues.c.slots must be a whole number"),
        ("queues = 3\n", "c.toml:1: queues must be tables [queues.NAME]"),
        ("[queues]\nc = 3\n", "c.toml:2: [queues.c] must be a table"),
        ('[queues.c]\nslurm = "x"\n', "c.toml:2: queues.c.slurm must be a table, not 'x'"),
        (
            "[queues.c.slurm]\nmax_in_flight = 3\n",
            "c.toml:2: unknown [queues.c.slurm] key 'max_in_flight' (known: account, extra_args, partition, "
            "qos)",
        ),
        ('[queues.c.slurm]\nqos = ""\n', "c.toml:2: queues.c.slurm.qos must be a non-empty string"),
        ('[queues."a b"]\nbackend = "slurm"\n', "c.toml:1: 'a b' is not a queue name"),
        # An inline table: no line to point at, and no line 0 either.
        ('[queues]\nc = {backend = "pbs"}\n', 'c.toml: queues.c.backend must be "local" or "slurm"'),
        ("[queues.default]\nslots = 2\n", "c.toml:2: the default queue's slots are [defaults] slots"),
        (
            '\n[queue.c]\nbackend = "slurm"\n',
            "c.toml:2: unknown section 'queue' (known: defaults, limits, queues, slurm)",
        ),
    ],
)
def test_a_bad_queue_table_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(text, "c.toml")
    assert str(refused.value).startswith(message), str(refused.value)
    assert "\n" not in str(refused.value)


def test_ts_with_a_bad_queue_table_says_one_line(spool: Spool) -> None:
    path = spool.root / "bad.toml"
    path.write_text('[queues.cluster]\nbackend = "slurm"\nslots = -1\n')
    done = spool.run("-l", env={"TS_CONFIG": str(path)})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"{path}:3: queues.cluster.slots must be a whole number from 1 to 1000000, not -1" in done.stderr


def test_a_local_only_daemon_with_queue_tables_is_as_before(spool: Spool) -> None:
    """Queues bound here: no SLURM anywhere, and ``ts -l``, ``-i`` and ``--queues`` as ever."""
    path = spool.root / "config.toml"
    path.write_text('[queues.cpu]\nbackend = "local"\nslots = 3\n')
    spool.env["TS_CONFIG"] = str(path)
    assert spool.ts("--queues").splitlines() == [
        "Queue    Slots  Running  Queued",
        "default  1      0        0",
        "cpu      3      0        0",
    ]
    job = spool.submit("sh", "-c", "echo ${SLURM_JOB_ID:-here}", opts=("--queue", "cpu"))
    assert spool.run("-w", str(job)).returncode == 0
    assert spool.ts("-c", str(job)) == "here\n"
    assert "SLURM" not in spool.ts("-l").splitlines()[0] and "Runs in" not in spool.ts("-i", str(job))
    assert spool.ts("--queue", "cpu", "-S") == "3\n"
