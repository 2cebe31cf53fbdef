"""How a command is run: as argv, or through ``sh -c`` when it is one word of shell syntax.

Shared by the client (which must know how a template will be filled: shell-quoted or not) and
the daemon (which runs it), so both always agree.
"""

from __future__ import annotations

_SHELL_CHARS = frozenset(" \t\n;&|<>()$`\\\"'*?[]{}~=#!")


def needs_shell(command: list[str]) -> bool:
    """A single word with spaces or shell operators runs through ``sh -c`` (``ts "a && b"``)."""
    return len(command) == 1 and any(c in _SHELL_CHARS for c in command[0])


def from_line(line: str) -> list[str]:
    """A ``--batch`` line: kept whole when it uses shell syntax, else split into words."""
    import shlex

    words = shlex.split(line)
    if len(words) > 1 and any(c in line for c in ";&|<>()$`*?[]{}~\\"):
        return [line]
    return words


def display(command: list[str]) -> str:
    """The command as one line a user could paste into a shell."""
    if len(command) == 1:
        return command[0]
    import shlex  # only for display: keeps the enqueue path light

    return " ".join(shlex.quote(word) for word in command)
