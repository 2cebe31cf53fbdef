"""Every ``ts`` option, declared once: the parser, ``-h``, the man-page check and shell
completion all read this table.

``kind`` is ``action`` (what this call does; one per call) or ``job`` (how a queued job runs).
``arg`` says what follows the option:
  ``none``; ``id`` (an optional job id: the next word unless it starts with ``-``);
  ``int?`` (an optional number, same rule); ``count?`` (an optional number, taken only when
  the next word is all digits, since a command may follow); ``str`` (a required value).
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


OPTIONS: tuple[Option, ...] = (
    # Actions (one at a time)
    Option("l", "list", "action", "list", "none", "show the job list (the default action)"),
    Option("M", "serialize", "action", "list", "str", "list in this format: default, json or tab", "FORMAT"),
    Option(
        "t",
        "tail",
        "action",
        "tail",
        "id",
        "follow the last 10 lines of the output until the job ends; last run if no id",
    ),
    Option(
        "c",
        "cat",
        "action",
        "cat",
        "id",
        "show the whole output, following it until the job ends; last run if no id",
    ),
    Option("p", "pid", "action", "pid", "id", "show the job's pid; last run if no id"),
    Option("o", "output", "action", "output", "id", "show the output file; last run if no id"),
    Option("i", "info", "action", "info", "id", "show job information; last run if no id"),
    Option("s", "state", "action", "state", "id", "show the job state; last added if no id"),
    Option("r", "remove", "action", "remove", "id", "remove a queued or ended job; last added if no id"),
    Option(
        "w",
        "wait",
        "action",
        "wait",
        "id",
        "wait for a job and exit with its exit status; last added if no id",
    ),
    Option("k", "kill", "action", "kill", "id", "send SIGTERM to the job's process group; last run if no id"),
    Option(
        "T", "kill_all", "action", "kill_all", "none", "send SIGTERM to every running job's process group"
    ),
    Option("u", "urgent", "action", "urgent", "id", "put a queued job first; last added if no id"),
    Option("U", "swap", "action", "swap", "str", "swap two queued jobs", "ID-ID"),
    Option(
        "S", "slots", "action", "slots", "int?", "get, or set to num, the number of jobs that run at once"
    ),
    Option("C", "clear", "action", "clear", "none", "clear the list of ended jobs"),
    Option("K", "kill_server", "action", "shutdown", "none", "stop the daemon (queued jobs are kept)"),
    Option("R", "count_running", "action", "count_running", "none", "show the number of running jobs"),
    Option("q", "last_queue_id", "action", "last_id", "none", "show the id of the last added job"),
    Option("a", "get_label", "action", "label", "id", "show the job label; last added if no id"),
    Option("F", "full_cmd", "action", "full_cmd", "id", "show the full command; last added if no id"),
    Option(None, "getenv", "action", "getenv", "str", "show a variable of the daemon's environment", "VAR"),
    Option(None, "setenv", "action", "setenv", "str", "set a variable that new jobs get", "VAR=VALUE"),
    Option(None, "unsetenv", "action", "unsetenv", "str", "remove a variable from what new jobs get", "VAR"),
    Option(None, "get_logdir", "action", "get_logdir", "none", "show the directory of the log files"),
    Option(None, "set_logdir", "action", "set_logdir", "str", "set the directory of the log files", "PATH"),
    Option(None, "daemon", "action", "daemon", "none", "run the daemon in the foreground (for systemd)"),
    Option("h", "help", "action", "help", "none", "show this help"),
    Option("V", "version", "action", "version", "none", "show the program version"),
    # Job options
    Option(
        "n", None, "job", "no_output", "none", "do not store the output (with -f it goes to this terminal)"
    ),
    Option("E", None, "job", "stderr_apart", "none", "keep stderr apart, in the output file name plus '.e'"),
    Option("O", None, "job", "log_name", "str", "name of the log file (no directory)", "NAME"),
    Option("z", None, "job", "gzip", "none", "gzip the stored output"),
    Option("f", None, "job", "foreground", "none", "wait for the job and exit with its exit status"),
    Option("m", None, "job", "mail", "none", "mail the output when the job ends (sendmail)"),
    Option("d", None, "job", "after_last", "none", "run after the last added job ends"),
    Option("D", None, "job", "after", "str", "run after these jobs end, whatever their result", "ID,..."),
    Option(
        "W", None, "job", "after_ok", "str", "run after these jobs end with exit code 0, else skip", "ID,..."
    ),
    Option("L", None, "job", "label", "str", "label the job", "LABEL"),
    Option("N", None, "job", "slots", "str", "number of slots the job needs (1 by default)", "NUM"),
    Option("B", None, "job", "no_block", "none", "if the queue is full, exit with 2 instead of waiting"),
    Option(
        None, "batch", "job", "batch", "str", "queue one job per line of FILE ('-': standard input)", "FILE"
    ),
)

SHORT = {o.short: o for o in OPTIONS if o.short}
LONG = {o.long: o for o in OPTIONS if o.long}
