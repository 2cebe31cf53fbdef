"""Every ``ts`` option, declared once: the parser, ``-h``, the man-page check and shell
completion all read this table.

``kind`` is ``action`` (what this call does; one per call), ``job`` (how a queued job runs),
``filter`` (which jobs ``-l``, ``ts results`` and the actions on many jobs act on: ``-r``, ``-k``,
``--requeue``, ``--hold``, ``--release``, ``--pause``, ``--resume``), ``results`` (how ``ts
results`` shows them) or ``daemon`` (how ``ts --daemon`` serves).
``arg`` says what follows the option:
  ``none``; ``id`` (an optional job id: the next word unless it starts with ``-``);
  ``int?`` (an optional number, same rule); ``count?`` (an optional number, taken only when
  the next word is all digits, since a command may follow); ``ids?`` (a list like ``0,2``,
  taken only when the next word is one: ``-g`` alone is the action that lists GPU jobs);
  ``str`` (a required value); ``multi`` (a required value, repeatable).
"""

from __future__ import annotations


class Option:
    __slots__ = ("arg", "dest", "help", "kind", "long", "metavar", "short")

    def __init__(
        self,
        short: str | None,
        long: str | None,
        kind: str,
        dest: str,
        arg: str,
        help: str,
        metavar: str = "",
    ) -> None:
        self.short = short
        self.long = long
        self.kind = kind
        self.dest = dest
        self.arg = arg
        self.help = help
        self.metavar = metavar or {"id": "[id]", "int?": "[num]", "count?": "[num]"}.get(arg, "")

    @property
    def names(self) -> str:
        parts = [f"-{self.short}" if self.short else "", f"--{self.long}" if self.long else ""]
        return ", ".join(p for p in parts if p)


def _action(short: str | None, long: str | None, dest: str, arg: str, help: str, metavar: str = "") -> Option:
    return Option(short, long, "action", dest, arg, help, metavar)


def _filter(long: str, dest: str, arg: str, help: str, metavar: str = "") -> Option:
    return Option(None, long, "filter", dest, arg, help, metavar)


def _job(short: str | None, long: str | None, dest: str, arg: str, help: str, metavar: str = "") -> Option:
    return Option(short, long, "job", dest, arg, help, metavar)


def _results(long: str, dest: str, help: str, metavar: str) -> Option:
    return Option(None, long, "results", dest, "str", help, metavar)


# fmt: off
OPTIONS: tuple[Option, ...] = (
    # Actions (one at a time)
    _action("l", "list", "list", "none", "show the job list (the default action)"),
    _action("M", "serialize", "list", "str", "list in this format: default, json or tab", "FORMAT"),
    _action("t", "tail", "tail", "id", "follow the last 10 lines of the output until the job ends; last run if no id"),
    _action("c", "cat", "cat", "id", "show the whole output, following it until the job ends; last run if no id"),
    _action("p", "pid", "pid", "id", "show the job's pid; last run if no id"),
    _action("o", "output", "output", "id", "show the output file; last run if no id"),
    _action("i", "info", "info", "id", "show job information; last run if no id"),
    _action("s", None, "state", "id", "show the job state; last added if no id"),
    _action("r", "remove", "remove", "id", "remove a queued or ended job; last added if no id"),
    _action("w", "wait", "wait", "id", "wait for a job and exit with its exit status; last added if no id"),
    _action("k", "kill", "kill", "id", "send SIGTERM to the job's process group; last run if no id"),
    _action("T", "kill_all", "kill_all", "none", "send SIGTERM to every running job's process group"),
    _action("u", "urgent", "urgent", "id", "put a queued job first; last added if no id"),
    _action("U", "swap", "swap", "str", "swap two queued jobs", "ID-ID"),
    _action("S", "slots", "slots", "int?", "get, or set to num, the number of jobs that run at once (0: start no more, drain)"),
    _action(None, "wait-all", "wait_all", "none", "wait until every job (or every job the filters select) has ended; exit 1 if any ended badly"),
    _action(None, "queues", "queues", "none", "list the queues with their slots, their running and queued jobs and (with SLURM) their backend"),
    _action("C", "clear", "clear", "none", "clear the list of ended jobs"),
    _action("K", "kill_server", "shutdown", "none", "stop the daemon (queued jobs are kept)"),
    _action(None, "reset", "reset", "none", "drop every queued and ended job, then stop the daemon"),
    _action("R", "count_running", "count_running", "none", "show the number of running jobs"),
    _action("q", "last_queue_id", "last_id", "none", "show the id of the last added job"),
    _action("a", "get_label", "label", "id", "show the job label; last added if no id"),
    _action("F", "full_cmd", "full_cmd", "id", "show the full command; last added if no id"),
    _action(None, "getenv", "getenv", "str", "show a variable of the daemon's environment", "VAR"),
    _action(None, "setenv", "setenv", "str", "set a variable that new jobs get", "VAR=VALUE"),
    _action(None, "unsetenv", "unsetenv", "str", "remove a variable from what new jobs get", "VAR"),
    _action(None, "requeue", "requeue", "id", "put an ended job (or every job the filters select) back in the queue"),
    _action(None, "edit", "edit", "id", "edit a job that has not started: its command in $VISUAL or $EDITOR (vi), or with --label/-L and --priority its label and priority; last added if no id"),
    _action(None, "pause", "pause", "id", "stop a running job's process group (SIGSTOP): it keeps its slots and GPUs; last run if no id"),
    _action(None, "resume", "resume", "id", "continue a paused job (SIGCONT); last run if no id"),
    _action(None, "release", "release", "id", "let a held job (or every held job the filters select) start; last added if no id"),
    _action(None, "get_logdir", "get_logdir", "none", "show the directory of the log files"),
    _action(None, "set_logdir", "set_logdir", "str", "set the directory of the log files", "PATH"),
    _action(None, "get_gpu_free_perc", "get_gpu_free_perc", "none", "show the free-memory percentage above which a GPU counts as free"),
    _action(None, "set_gpu_free_perc", "set_gpu_free_perc", "str", "set that percentage (1-100, 90 by default)", "NUM"),
    _action(None, "gpu_status", "gpu_status", "none", "show every GPU: memory, whether it counts as free, its jobs"),
    _action(None, "watch", "watch", "none", "redraw the list and the GPUs every 2 s until Ctrl-C"),
    _action(None, "daemon", "daemon", "none", "run the daemon in the foreground (for systemd)"),
    _action(None, "users", "users", "none", "per user: running and queued jobs, GPUs held, GPU-hours used today"),
    _action("h", "help", "help", "none", "show this help"),
    _action("V", "version", "version", "none", "show the program version"),
    # Options of queued jobs
    _job("n", None, "no_output", "none", "do not store the output (with -f it goes to this terminal)"),
    _job("E", None, "stderr_apart", "none", "keep stderr apart, in the output file name plus '.e'"),
    _job("O", None, "log_name", "str", "name of the log file (no directory)", "NAME"),
    _job("z", None, "gzip", "none", "gzip the stored output"),
    _job("f", None, "foreground", "none", "wait for the job and exit with its exit status"),
    _job("m", None, "mail", "none", "mail the output when the job ends (sendmail)"),
    _job("d", None, "after_last", "none", "run after the last added job ends"),
    _job("D", None, "after", "str", "run after these jobs end, whatever their result", "ID,..."),
    _job("W", None, "after_ok", "str", "run after these jobs end with exit code 0, else skip", "ID,..."),
    _job("L", None, "label", "str", "label the job", "LABEL"),
    _job("N", None, "slots", "str", "number of slots the job needs (1 by default)", "NUM"),
    _job("B", None, "no_block", "none", "if the queue is full, exit with 2 instead of waiting"),
    _job("G", "gpus", "gpus", "count?", "number of GPUs the job needs (1 if no number follows)"),
    _job("g", "gpu_indices", "gpu_indices", "ids?", "run on exactly these GPUs, without the memory check; alone: list jobs on GPUs", "[ID,...]"),
    _job(None, "gpu_mem", "gpu_mem", "str", "share a GPU: place the job where SIZE (e.g. 20G) is free and not yet promised", "SIZE"),
    _job(None, "batch", "batch", "str", "queue one job per line of FILE ('-': standard input)", "FILE"),
    _job(None, "priority", "priority", "str", "higher runs first (default 0); ts --priority N ID changes a queued job", "N"),
    _job(None, "retry", "retry", "str", "give a job that exits non-zero N more attempts (TS_ATTEMPT counts them)", "N"),
    _job(None, "retry-timeout", "retry_timeout", "none", "with --retry: retry an attempt that reached its --time limit too"),
    _job(None, "time", "time", "str", "stop the job (SIGTERM, then SIGKILL) if it still runs after DURATION (90s, 45m, 2h, 1:30:00, 2-00:00:00)", "DURATION"),
    _job(None, "arg", "arg", "multi", "an argument for the command's %(KEY) placeholders (repeatable; JSON values)", "KEY=VALUE"),
    _job(None, "args", "args", "multi", "arguments as a JSON object", "JSON"),
    _job(None, "allow-extra", "allow_extra", "none", "allow arguments that no placeholder uses"),
    _job(None, "skip-if-exists", "skip_if_exists", "str", "skip the job if PATH (templated) exists when it is due to start", "PATH"),
    _job(None, "snapshot", "snapshot", "none", "run on a copy of the working tree taken now (git: tracked and new files)"),
    _job(None, "queue", "queue", "str", "queue the job in queue NAME, with slots of its own (ts --queue NAME -S N sets them; with -l and the other filters: only its jobs)", "NAME"),
    _job(None, "begin", "begin", "str", "start the job no earlier than TIME: HH:MM (the next such time), an ISO 8601 date-time, or +DURATION (+30s, +2h)", "TIME"),
    _job(None, "notify", "notify", "str", "POST JSON about the job to URL when it ends (TS_NOTIFY_ON: fail, the default, or end)", "URL"),
    _job(None, "cascade", "cascade", "none", "with --requeue: also requeue the jobs skipped because it failed, transitively"),
    _job(None, "hold", "hold", "none", "queue the job held: it keeps its place but starts only once released; ts --hold ID holds a queued job"),
    _job(None, "dry-run", "dry_run", "none", "with sweep: print the commands, queue nothing"),
    # How ts results shows its rows (--best also names the best result of ts --watch)
    _results("sort", "sort", "order the rows by FIELD (-FIELD: descending; several keys: comma-separated)", "[-]FIELD,..."),
    _results("best", "best", "mark the row with the highest FIELD (min:FIELD: the lowest); with --watch too", "[max:|min:]FIELD"),
    _results("format", "format", "the rows as a table (the default), csv, json or markdown", "FORMAT"),
    # Filters, for -l, ts results, -r, -k, --requeue, --hold, --release, --pause and --resume
    _filter("state", "states", "str", "only jobs in these states (comma-separated; 'failed' too)", "STATE,..."),
    _filter("label", "label", "str", "only jobs with this label", "LABEL"),
    _filter("sweep", "sweep", "str", "only jobs of this sweep", "NAME"),
    _filter("where", "where", "str", "only jobs for which EXPR holds, e.g. 'args.lr > 1e-3 and state == \"finished\"'", "EXPR"),
    _filter("ids", "ids_only", "none", "print only the ids, one per line"),
    _filter("last", "last", "str", "with -l: only the last N jobs of the list (the latest to end)", "N"),
    _filter("user", "user", "str", "only the jobs of user NAME (a multi-user daemon)", "NAME"),
    _filter("mine", "mine", "none", "only my own jobs (a multi-user daemon)"),
    # How ts --daemon serves
    Option(None, "multi-user", "daemon", "multi_user", "none", "with --daemon, as root: one queue for every local user, each job run as its submitter"),
    Option(None, "socket", "daemon", "socket", "str", "with --daemon: the socket to serve on (multi-user: /run/spooler/socket by default)", "PATH"),
)
# fmt: on

SHORT = {o.short: o for o in OPTIONS if o.short}
LONG = {o.long: o for o in OPTIONS if o.long}
