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
    ("TMPDIR", "directory of the output files and of the default socket"),
)


def usage() -> str:
    lines = [
        "usage: ts [action] [-nEzfmdB] [-L label] [-N slots] [-D ids] [-W ids] [-O name] [command...]",
        "",
        "Actions (one at a time; with none, a command is queued, and without a command the list is shown):",
    ]
    width = max(len(f"{o.names} {o.metavar}") for o in OPTIONS)
    for kind, title in (("action", None), ("job", "Options for queued jobs:")):
        if title:
            lines += ["", title]
        for option in OPTIONS:
            if option.kind == kind:
                lines.append(f"  {f'{option.names} {option.metavar}'.ljust(width)}  {option.help}")
    lines += ["", "Environment:"]
    lines += [f"  {name.ljust(15)} {text}" for name, text in ENVIRONMENT]
    return "\n".join(lines) + "\n"
