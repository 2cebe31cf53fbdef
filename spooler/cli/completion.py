"""Shell completion for ``ts`` and ``tsp``, through click's completion machinery.

``ts`` parses its own command line (importing click costs more than a whole ``ts`` call, see
parse.py), so click is imported here only, when a shell asks: main() calls :func:`complete`
when ``_TS_COMPLETE`` or ``_TSP_COMPLETE`` is set.  The click command is built from the option
table, so completion offers exactly the options the parser accepts::

    eval "$(_TS_COMPLETE=bash_source ts)"     # ~/.bashrc; zsh_source in ~/.zshrc
    _TS_COMPLETE=fish_source ts | source      # fish

Options that take job ids complete the ids of the live queue (and labels, sweep names and the
fields of ``ts results --sort/--best`` complete from it too).  That asks an already running
daemon only: pressing Tab must never start a daemon, wait for one, or print a traceback.  After
``ts results`` the words are its filters and options, not a command.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

import click
from click.shell_completion import CompletionItem, get_completion_class, shell_complete

from spooler.cli.options import LONG, OPTIONS, SHORT, Option

# The variable the completion script sets, and the program name it completes.
_PROGRAMS = {"_TS_COMPLETE": "ts", "_TSP_COMPLETE": "tsp"}

# Options whose value is one or more job ids (by Option.dest), besides every ``arg == "id"``.
# The value is the separator between ids: -U takes ID-ID, -D and -W take ID,ID,...
_ID_LISTS = {"swap": "-", "after": ",", "after_ok": ","}

_WAITING = frozenset({"queued", "allocating", "held"})
_ENDED = frozenset({"finished", "skipped", "lost", "timeout"})
# Jobs an option can act on at all (the daemon refuses the others); the rest offer every job.
_STATES: dict[str, frozenset[str]] = {
    "kill": frozenset({"running", "paused"}),
    "urgent": _WAITING,
    "edit": _WAITING,
    "swap": _WAITING,
    "remove": _WAITING | _ENDED,
    "requeue": _ENDED,
    "release": frozenset({"held"}),
    "pause": frozenset({"running"}),
    "resume": frozenset({"paused"}),
}
# What --state accepts ("failed" is a filter of its own: a bad exit, a signal, skipped, lost).
_STATE_NAMES = (
    "queued", "allocating", "held", "running", "paused", "finished", "skipped", "lost", "timeout", "failed",
)  # fmt: skip

_PATHS = frozenset({"set_logdir", "batch", "skip_if_exists"})
_FORMATS = ("table", "csv", "json", "markdown")
_SUBCOMMANDS = ("results", "sweep")
_DAEMON_TIMEOUT = 1.0  # seconds a stuck daemon may hold up a Tab press
_HELP_WIDTH = 70

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _queue() -> list[dict[str, Any]]:
    """The daemon's jobs, or none at all when no daemon answers quickly."""
    try:
        from spooler.client import Client, connect
        from spooler.protocol.requests import List

        sock = connect(autostart=False)
        sock.settimeout(_DAEMON_TIMEOUT)
        client = Client.__new__(Client)  # Client() would start a daemon when none runs
        client.sock = sock
        with client:
            jobs = json.loads(client.call(List(format="json"))["text"])
    except Exception:  # no daemon, another protocol version, a timeout: just no ids
        return []
    return [job for job in jobs if isinstance(job, dict)] if isinstance(jobs, list) else []


def _one_line(text: str) -> str:
    # zsh reads completions as newline-separated fields: a newline in a command would break it.
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= _HELP_WIDTH else text[: _HELP_WIDTH - 1] + "…"


def _describe(job: dict[str, Any]) -> str:
    """The help text shown beside an id (zsh, fish): state and command, on one short line."""
    label = f"[{job['label']}]" if job.get("label") else ""
    return _one_line(f"{job.get('state', '?')}: {label}{job.get('command', '')}")


def _list_item(
    incomplete: str, separator: str | None, candidates: list[tuple[str, str]]
) -> list[CompletionItem]:
    """Complete the last element of a list like "3,5," (or a lone value), keeping the rest."""
    done, partial = "", incomplete
    if separator and separator in incomplete:
        cut = incomplete.rindex(separator) + 1
        done, partial = incomplete[:cut], incomplete[cut:]
    taken = set(done.split(separator)) if separator else set()
    return [
        CompletionItem(done + value, help=help or None)
        for value, help in candidates
        if value.startswith(partial) and value not in taken
    ]


def _ids(dest: str) -> Completer:
    states = _STATES.get(dest)

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        jobs = [j for j in _queue() if states is None or j.get("state") in states]
        return _list_item(incomplete, _ID_LISTS.get(dest), [(str(j.get("id")), _describe(j)) for j in jobs])

    return complete


def _field_values(field: str) -> Completer:
    """The values of a job field in the live queue: labels for -L and --label, sweep names."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        values = sorted({str(j[field]) for j in _queue() if j.get(field)})
        return _list_item(incomplete, None, [(v, "") for v in values if v.isprintable()])

    return complete


def _states(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _list_item(incomplete, ",", [(name, "") for name in _STATE_NAMES])


def _fields(dest: str) -> Completer:
    """The columns of ``ts results`` in the live queue: id, state, time, args.*, result.*;
    after ``-`` (--sort, descending) or ``max:``/``min:`` (--best) too."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from spooler.results import FIXED, flatten

        names: dict[str, None] = dict.fromkeys(FIXED)
        for job in _queue():
            row: dict[str, Any] = {}
            for group in ("args", "result"):
                if job.get(group) is not None:
                    flatten(job[group], group, row)
            names.update(dict.fromkeys(row))
        done, _, partial = incomplete.rpartition(",") if dest == "sort" else ("", "", incomplete)
        head = done + "," if done else ""
        if dest == "sort" and partial.startswith("-"):
            head, partial = head + "-", partial[1:]
        elif dest == "best" and partial.startswith(("max:", "min:")):
            head, partial = head + partial[:4], partial[4:]
        return [CompletionItem(head + name) for name in names if name.startswith(partial)]

    return complete


_VALUES: dict[str, Completer] = {"sort": _fields("sort"), "best": _fields("best"), "states": _states}


def _results_words(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """After ``ts results``: its filters and options, and their values."""
    words = list(ctx.params.get("command") or ())
    previous = LONG.get(words[-1][2:]) if len(words) > 1 and words[-1].startswith("--") else None
    if previous is not None and previous.arg == "str":
        if previous.dest == "format":
            return [CompletionItem(name) for name in _FORMATS if name.startswith(incomplete)]
        if previous.dest in ("label", "sweep"):
            return _field_values(previous.dest)(ctx, param, incomplete)
        completer = _VALUES.get(previous.dest)
        return completer(ctx, param, incomplete) if completer else []
    if incomplete.startswith("-"):
        names = [(f"--{o.long}", o.help) for o in OPTIONS if o.kind in ("filter", "results") and o.long]
        return [CompletionItem(name, help=help) for name, help in names if name.startswith(incomplete)]
    return []


def _command_words(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The command's words are files, but a first word may be a subcommand of ts."""
    words = ctx.params.get("command") or ()
    if words[:1] == ("results",):
        return _results_words(ctx, param, incomplete)
    items = [CompletionItem(incomplete, type="file")]
    if not words and incomplete:
        items += [CompletionItem(name) for name in _SUBCOMMANDS if name.startswith(incomplete)]
    return items


def _parameter(index: int, option: Option) -> click.Option:
    # Our dests are not unique (-l and -M both set "list"), so click gets a name of its own.
    decls = [f"option{index}"]
    # A name two options share goes where parse.py sends it: to the one the table names last.
    decls += [f"-{option.short}"] if option.short and SHORT[option.short] is option else []
    decls += [f"--{option.long}"] if option.long and LONG[option.long] is option else []
    kwargs: dict[str, Any] = {"help": option.help}
    if option.arg == "none":
        kwargs["is_flag"] = True
    elif option.arg == "multi":
        kwargs["multiple"] = True
    elif option.arg != "str":
        # id, int?, count?, ids?: the value may be left out, as parse.py allows.
        kwargs.update(is_flag=False, flag_value="")
    if option.arg == "id" or option.dest in _ID_LISTS:
        kwargs["shell_complete"] = _ids(option.dest)
    elif option.dest in _PATHS:
        kwargs["type"] = click.Path()
    elif option.short == "M":
        kwargs["type"] = click.Choice(["default", "json", "tab"])
    elif option.dest == "format":
        kwargs["type"] = click.Choice(_FORMATS)
    elif option.dest in ("sort", "best"):
        kwargs["shell_complete"] = _fields(option.dest)
    elif option.dest == "states":
        kwargs["shell_complete"] = _states
    elif option.dest in ("label", "sweep", "queue", "user") and option.arg == "str":
        kwargs["shell_complete"] = _field_values(option.dest)
    return click.Option(decls, **kwargs)


class _TsCommand(click.Command):
    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        # Once the command has begun, its words are its own: "ts python -" must not offer
        # ts's options.  Offer files, as for any argument.
        if ctx.params.get("command"):
            argument = next(p for p in self.params if isinstance(p, click.Argument))
            return _command_words(ctx, argument, incomplete)
        return super().shell_complete(ctx, incomplete)


def _command(prog: str) -> click.Command:
    params: list[click.Parameter] = [_parameter(i, o) for i, o in enumerate(OPTIONS)]
    # The command: its first word is a program or a file, the rest the program's arguments.
    params.append(click.Argument(["command"], nargs=-1, type=click.Path(), shell_complete=_command_words))
    return _TsCommand(
        prog,
        params=params,
        add_help_option=False,  # -h and --help are in the table
        # As in parse.py: options stop at the first word that is not one.
        context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
    )


def complete() -> NoReturn:
    """Answer the shell (a completion script, or completions for the words it sends) and exit."""
    variable = next((v for v in _PROGRAMS if v in os.environ), "_TS_COMPLETE")
    instruction = os.environ.get(variable, "")
    shell, _, verb = instruction.partition("_")
    if get_completion_class(shell) is None or verb not in ("source", "complete"):
        print(
            f"ts: {variable}={instruction!r}: expected bash_source, zsh_source or fish_source",
            file=sys.stderr,
        )
        sys.exit(2)
    # A warning, like a traceback, would land in the middle of the user's command line.
    warnings.simplefilter("ignore")
    try:
        status = shell_complete(_command(_PROGRAMS[variable]), {}, _PROGRAMS[variable], variable, instruction)
        sys.stdout.flush()
    except Exception:  # a traceback would land in the middle of the user's command line
        status = 1
    sys.exit(status)
