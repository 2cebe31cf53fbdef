"""The config file's shared-server sections: ``[defaults]``, ``[limits]``, ``[limits.users.NAME]``,
``admin_group`` and ``socket``; and what a bad file does to a personal ``ts``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import TS, Spool

from spooler.daemon.config import StartupConfig, apply_file
from spooler.daemon.config_file import ConfigError, Defaults, load, parse
from spooler.daemon.fairshare import Limits, UserLimits

GOOD = """\
admin_group = "gpu-admins"
socket = "/run/spooler/socket"

[defaults]
slots = 4
logdir = "/var/log/spooler"
gpu_free_perc = 80
kill_grace = 5

[limits]
max_running_per_user = 2
max_gpus_per_user = 4
max_queued_per_user = 500

[limits.users.alice]
max_gpus_per_user = 8
"""


def test_a_shared_servers_file_is_read_whole() -> None:
    config = parse(GOOD, "c.toml")
    assert (config.admin_group, config.socket) == ("gpu-admins", "/run/spooler/socket")
    assert config.defaults == Defaults(slots=4, logdir="/var/log/spooler", gpu_free_perc=80, kill_grace=5)
    assert config.limits == Limits(UserLimits(2, 4, 500), {"alice": UserLimits(None, 8, None)})
    assert config.limits.of("alice").max_gpus == 8 and config.limits.of("bob").max_gpus == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[limits]\nmax_running_per_user = 0\n",
            "c.toml:2: limits.max_running_per_user must be a whole number",
        ),
        ("[limits]\nmax_gpus_per_user = -1\n", "c.toml:2: limits.max_gpus_per_user must be a whole number"),
        (
            "[limits]\nmax_queued_per_user = 1.5\n",
            "c.toml:2: limits.max_queued_per_user must be a whole number",
        ),
        ("[limits]\nmax_jobs = 3\n", "c.toml:2: unknown [limits] key 'max_jobs'"),
        ("\n[limits.users.bob]\nmax_gpus = 3\n", "c.toml:3: unknown [limits.users.bob] key 'max_gpus'"),
        (
            "[limits.users.bob]\nmax_gpus_per_user = 0\n",
            "c.toml:2: limits.users.bob.max_gpus_per_user must be",
        ),
        ("[defaults]\nslots = 'four'\n", "c.toml:2: defaults.slots must be a whole number"),
        ("[defaults]\nlogdir = 'logs'\n", "c.toml:2: defaults.logdir must be an absolute path"),
        ("admin_group = ''\n", "c.toml:1: admin_group must be a non-empty string"),
        ("[limits\n", "c.toml: "),
    ],
)
def test_bad_settings_are_refused_with_their_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, "c.toml")
    assert str(caught.value).startswith(message), caught.value


def test_the_environment_wins_over_the_files_defaults(tmp_path: Path) -> None:
    file = parse(GOOD, "c.toml")
    config = StartupConfig.from_env(
        str(tmp_path / "sock"), {"TS_SAVELIST": str(tmp_path / "s"), "TS_SLOTS": "2"}
    )
    apply_file(config, file, {"TS_SLOTS": "2"})
    assert (config.settings.slots, config.settings.logdir, config.kill_grace) == (2, "/var/log/spooler", 5.0)
    assert config.user_limits is None  # a personal daemon has no per-user limits


def test_a_multi_user_daemon_reads_the_system_file_unless_ts_config_names_another(tmp_path: Path) -> None:
    assert load({}, multi_user=True).path in (None, "/etc/spooler/config.toml")
    own = tmp_path / "c.toml"
    own.write_text("[limits]\nmax_running_per_user = 1\n")
    assert load({"TS_CONFIG": str(own)}, multi_user=True).limits.default.max_running == 1


def test_a_personal_ts_with_a_bad_file_says_so_and_exits_2(spool: Spool, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults]\nslots = 2\nslotz = 3\n")
    done = spool.run("-l", env={"TS_CONFIG": str(bad)})
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [
        f"ts: the daemon could not start: {bad}:3: unknown [defaults] key 'slotz' "
        "(known: gpu_free_perc, kill_grace, logdir, slots)"
    ]
    assert spool.run("-l").returncode == 0  # without it, the daemon starts


def test_a_personal_daemon_takes_its_defaults_from_the_file(spool: Spool, tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[defaults]\nslots = 3\n")
    assert spool.ts("-S", env={"TS_CONFIG": str(good)}).strip() == "3"


def test_ts_uses_the_shared_socket_the_file_names_and_starts_no_daemon(spool: Spool, tmp_path: Path) -> None:
    config = tmp_path / "shared.toml"
    config.write_text(f'socket = "{tmp_path}/nothing-here/socket"\n')
    env = {k: v for k, v in spool.env.items() if k != "TS_SOCKET"}
    done = spool.run("-l", env={"TS_CONFIG": str(config), "TMPDIR": str(tmp_path)})
    assert done.returncode == 0  # TS_SOCKET set: the file's socket is not consulted
    done = subprocess.run(
        [*TS, "-l"], env={**env, "TS_CONFIG": str(config), "TMPDIR": str(tmp_path / "t")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip() == f"ts: no daemon is running on {tmp_path}/nothing-here/socket"
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").iterdir())
