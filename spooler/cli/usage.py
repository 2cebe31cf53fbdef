"""``ts -h``: the usage text, built from the option table so it cannot drift from the parser."""

from __future__ import annotations

from spooler.cli.options import OPTIONS

ENVIRONMENT = (
    ("TS_SOCKET", "path of the daemon's socket (default $TMPDIR/socket-ts.<uid>)"),
    ("TS_SLOTS", "jobs that run at once, read when the daemon starts"),
    ("TS_MAXFINISHED", "ended jobs kept in the list (1000 by default)"),
    ("TS_MAXCONN", "queue limit for -B and maximum concurrent connections"),
    ("TS_ONFINISH", "program run when a job ends (job id, exit status, output file, command)"),
    ("TS_ENV", "command run at enqueue time; its output is shown by -i"),
    ("TS_SAVELIST", "file that keeps the job list across daemon restarts"),
    ("TS_FSYNC", "0 to skip fsync of the save-list before replying (faster, less durable)"),
    ("TS_MAILTO", "where -m mails the output (you by default)"),
    ("TS_NOTIFY_URL", "where to POST JSON when a job ends (as --notify URL)"),
    ("TS_NOTIFY_ON", "fail (the default): notify of jobs that failed; end: of every job"),
    ("TS_VISIBLE_DEVICES", "the GPUs the daemon may use, e.g. 0,1 (changeable with --setenv)"),
    ("TS_GPU_POLL", "seconds between GPU checks while a job waits for GPUs (1)"),
    ("TS_FAKE_GPUS", "a JSON file standing in for NVML (tests and demos)"),
    ("TS_KILL_GRACE", "seconds from the SIGTERM of -k/-T to the SIGKILL of what is left (10)"),
    ("TS_KEEP_CUDA_VISIBLE_DEVICES", "1: jobs without GPUs keep the submitter's CUDA_VISIBLE_DEVICES"),
    ("TS_SNAPSHOT_LIMIT_MB", "the most --snapshot copies (512)"),
    ("TS_BACKEND", "where jobs run: local (default) or slurm, over the config file"),
    ("TS_CONFIG", "the config file (~/.config/spooler/config.toml)"),
    ("TMPDIR", "directory of the output files and of the default socket"),
)


def usage() -> str:
    lines = [
        "usage: ts [action] [-nEzfmdB] [-L label] [-N slots] [-D ids] [-W ids] [-O name] [command...]",
        "       ts sweep [options] FILE [--dry-run]",
        "       ts results [filters] [--sort [-]FIELD] [--best [max:|min:]FIELD] [--format FORMAT]",
        "",
        "Actions (one at a time; with none, a command is queued, and without a command the list is shown):",
    ]
    width = max(len(f"{o.names} {o.metavar}") for o in OPTIONS)
    sections = (
        ("action", None),
        ("job", "Options for queued jobs:"),
        ("filter", "Filters, for -l, -r, -k, --requeue, --watch and ts results:"),
        ("results", "ts results [filters] [options]: a table of the jobs' arguments and results"),
        ("daemon", "ts --daemon [options]:"),
    )
    for kind, title in sections:
        if title:
            lines += ["", title]
        for option in OPTIONS:
            if option.kind == kind:
                lines.append(f"  {f'{option.names} {option.metavar}'.ljust(width)}  {option.help}")
    lines += ["", "Environment:"]
    width = max(len(name) for name, _ in ENVIRONMENT)
    lines += [f"  {name.ljust(width)}  {text}" for name, text in ENVIRONMENT]
    return "\n".join(lines) + "\n"
