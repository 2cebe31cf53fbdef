"""Who is asking, on a multi-user daemon: the account behind a connection's peer credentials.

Taken from ``SO_PEERCRED`` when the connection is accepted (``server``): the kernel's word for
the uid and gid of the process that connected, which no request field can change.
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass

from spooler.jobs import Job


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as the kernel reported the connecting process."""

    uid: int
    gid: int
    name: str
    admin: bool

    def owns(self, job: Job) -> bool:
        return self.admin or job.uid == self.uid


def caller_of(uid: int, gid: int, admin_group: str | None) -> Caller:
    """The caller behind a connection: the account's name, and whether it is an admin (root,
    or a member of ``admin_group``, by membership or as its primary group)."""
    try:
        account = pwd.getpwuid(uid)
    except KeyError:  # a uid without an account may still queue jobs; they fail when started
        return Caller(uid, gid, f"uid{uid}", uid == 0)
    admin = uid == 0
    if admin_group and not admin:
        try:
            group = grp.getgrnam(admin_group)
        except KeyError:
            group = None
        if group is not None:
            admin = group.gr_gid in (gid, account.pw_gid) or account.pw_name in group.gr_mem
    return Caller(uid, gid, account.pw_name, admin)
