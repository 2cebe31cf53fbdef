"""How a command is run: as argv, or through ``sh -c`` when it is one word of shell syntax.

Shared by the client (which must know how a template will be filled: shell-quoted or not) and
the daemon (which runs it), so both always agree.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ts about 2 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable

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


# Finds a character ``shlex.quote`` would quote (NUL, which no argv word holds, is the separator
# of the words searched at once).  Compiled at the first display: keeps the enqueue path light.
_search_unsafe: Callable[[str], object] | None = None


def display(command: list[str]) -> str:
    """The command as one line a user could paste into a shell."""
    global _search_unsafe
    if len(command) == 1:
        return command[0]
    if _search_unsafe is None:
        import re

        _search_unsafe = re.compile(r"[^\w@%+=:,./\0-]", re.ASCII).search
    # Most commands need no quotes: one search of all the words rather than a quote() of each
    # (``ts -l`` of 100,000 jobs spends a fifth of its time here otherwise).
    joined = "\0".join(command)
    if _search_unsafe(joined) is None and "" not in command:
        return joined.replace("\0", " ")
    import shlex

    return " ".join(shlex.quote(word) for word in command)
