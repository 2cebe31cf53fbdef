"""Running a job as its owner: the launcher side of a multi-user daemon (which runs as root).

``posix_spawn`` cannot change credentials, so a job of another uid is started by fork, then in
the child (as ``atd`` and ``slurmd`` do) ``setgroups`` to the account's groups, ``setgid``,
``setuid``, in that order, each verified with ``getresgid``/``getresuid`` before anything of the
user's runs; then the umask, the working directory (entered as the user, so a directory they may
not enter fails the job with that reason), and exec.  A failure before exec reaches the launcher
through a close-on-exec pipe.

Log files are opened with the user's effective ids (:func:`acting_as`), so a name they planted
(a symbolic link to a file of root's) opens only what they could open themselves; the per-user
directory holding them is created by root, owned by the user, mode 0700.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import signal
import stat
from collections.abc import Iterator
from dataclasses import dataclass

_DEFAULT_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE, signal.SIGCHLD,
)  # fmt: skip


class CredentialError(Exception):
    """The job cannot run as its owner: the message says why."""


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str


def needs_switch(uid: int | None) -> bool:
    """A job of another uid than ours: only a (root) multi-user launcher sees one."""
    return uid is not None and uid != os.geteuid()


def account_of(uid: int) -> Account:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise CredentialError(f"ts: the job's user (uid {uid}) no longer exists") from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Account(uid, entry.pw_gid, groups, entry.pw_name, entry.pw_dir)


def user_environment(env: dict[str, str], account: Account) -> dict[str, str]:
    """The submitter's environment, with the account's own HOME, USER and LOGNAME."""
    return {**env, "HOME": account.home, "USER": account.name, "LOGNAME": account.name}


def ensure_user_dir(path: str, account: Account) -> None:
    """The user's log directory: made by root, owned by the user, 0700.  One that exists must
    be a real directory of theirs (not a link, not another user's)."""
    try:
        os.mkdir(path, 0o700)
        os.chown(path, account.uid, account.gid)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != account.uid:
        raise CredentialError(f"ts: {path} is not a directory of {account.name}'s: refusing to log there")


@contextlib.contextmanager
def acting_as(account: Account) -> Iterator[None]:
    """Within: files are opened and created with the user's effective ids (the launcher is
    single-threaded, so nothing else runs meanwhile)."""
    saved = os.getgroups()
    os.setgroups(list(account.groups))
    os.setegid(account.gid)
    os.seteuid(account.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(saved)


def become(account: Account) -> None:
    """In the child: drop every privilege for good, and check that it is gone."""
    os.setgroups(list(account.groups))
    os.setgid(account.gid)
    os.setuid(account.uid)
    if os.getresgid() != (account.gid,) * 3 or os.getresuid() != (account.uid,) * 3:
        raise CredentialError(f"ts: could not switch to {account.name}")
    if account.uid != 0:
        with contextlib.suppress(PermissionError):
            os.setuid(0)
            raise CredentialError("ts: root could be regained after the switch: refusing to run")


def spawn_as(
    account: Account,
    program: str,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    umask: int | None,
    out: int,
    err: int,
) -> tuple[int, str, int]:
    """Fork, become the user, exec.  (pid, "", 0) once exec succeeded, else (0, why, wait
    status)."""
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: nothing here may return to the launcher's code
        try:
            os.close(report_read)
            signal.set_wakeup_fd(-1)
            for sig in _DEFAULT_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.setsid()
            become(account)
            if umask is not None:
                os.umask(umask)
            try:
                os.chdir(cwd)
            except OSError as exc:
                raise CredentialError(f"ts: {account.name} cannot enter {cwd}: {exc.strerror}") from None
            os.dup2(devnull, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.execve(program, argv, env)
        except CredentialError as exc:
            _say(report_write, str(exc))
        except OSError as exc:
            _say(report_write, f"ts: cannot run {argv[0]!r}: {exc.strerror or exc}", exc.errno)
        except BaseException as exc:  # the child must reach _exit, whatever happened
            _say(report_write, f"ts: cannot start the job: {exc}")
        finally:
            os._exit(127)
    os.close(report_write)
    os.close(devnull)
    with os.fdopen(report_read, "rb") as report:
        why = report.read().decode(errors="replace")
    if not why:
        return pid, "", 0
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return 0, why[3:], int(why[:3]) << 8


def _say(fd: int, message: str, code: int | None = None) -> None:
    tag = "126" if code in (errno.EACCES, errno.ENOEXEC, errno.EISDIR) else "127"
    with contextlib.suppress(OSError):
        os.write(fd, f"{tag}{message}".encode())
