"""Save-list compaction in a forked child, so the daemon goes on serving while it runs.

Writing the snapshot of 100,000 jobs takes about a second; done in place, every request waits
that long each time the journal has grown as large as the snapshot.  Instead the daemon rotates
the journal (see :meth:`spooler.store.Store.rotate`) and forks: the child holds a copy of the
job list as it was at that instant, writes it as the new snapshot and exits; the daemon keeps
appending to the new journal and, when the child has exited, deletes the previous journal.

The child keeps the daemon's lock file open, so no new daemon can start (and compact in its
turn) until the child's snapshot is in place, even if the daemon itself is killed meanwhile.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import NoReturn

from spooler.daemon.process import close_fds_except, name_process
from spooler.daemon.store import Snapshot, Store

log = logging.getLogger("spooler")

# The signals the daemon handles through its event loop.
_HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
SHUTDOWN_WAIT = 60.0  # seconds a stopping daemon gives a running compaction


class Compactor:
    def __init__(self, store: Store, state: Callable[[], Snapshot], keep_fds: frozenset[int]) -> None:
        self.store = store
        self.state = state  # builds the snapshot of the job list; called in the child
        self.keep_fds = keep_fds  # the lock file, and the daemon's log file
        self.pid: int | None = None
        self.began = self.pause = 0.0  # when the running compaction began; what forking it cost

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> bool:
        """Fork a child that writes the snapshot; False if it must be done in place instead
        (the previous journal of a failed compaction is still there, or fork failed)."""
        began = time.monotonic()
        try:
            if not self.store.rotate():
                return False
        except OSError as exc:
            log.error("could not rotate the journal for compaction: %s", exc)
            return False
        # Signals stay blocked until the child has let go of the daemon's event-loop wakeup
        # fd: one sent to the child in between would otherwise reach the daemon's loop.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            log.error("could not fork to compact the save-list: %s", exc)
            return False  # the previous journal stays: the compaction in place removes it
        if pid == 0:
            self._child(mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.pid = pid
        self.began = began
        self.pause = time.monotonic() - began
        return True

    def _child(self, mask: set[int | signal.Signals]) -> NoReturn:
        status = 1
        try:
            gc.disable()  # a collection would touch every object and copy the parent's memory
            signal.set_wakeup_fd(-1)  # the daemon's event loop must not hear our signals
            for sig in _HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # like the daemon
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            name_process(b"ts-compact")
            close_fds_except(set(self.keep_fds))  # clients must see the daemon close, not us
            self.store.write_snapshot(self.state())
            self.store.drop_prev_journal()
            status = 0
        except BaseException:
            log.exception("save-list compaction (process %d) failed", os.getpid())
        finally:
            os._exit(status)

    def reaped(self, pid: int, wait_status: int) -> bool:
        """SIGCHLD for ``pid``: True if it was the compaction child (now finished)."""
        if pid != self.pid:
            return False
        self.pid = None
        ok = os.waitstatus_to_exitcode(wait_status) == 0
        if ok:
            log.info(
                "save-list compacted in the background by process %d in %.3f s (the daemon paused %.1f ms)",
                pid,
                time.monotonic() - self.began,
                self.pause * 1000,
            )
        else:
            log.error("save-list compaction failed (status %d); it is redone in place next time", wait_status)
        self._finish(ok)
        return True

    def wait(self, timeout: float = SHUTDOWN_WAIT) -> None:
        """At shutdown: let a running compaction finish, so its snapshot lands before we exit;
        one that hangs is killed (its previous journal stays, and nothing is lost)."""
        if self.pid is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            pid, wait_status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.reaped(pid, wait_status)
                return
            if time.monotonic() > deadline:
                log.error("save-list compaction (process %d) did not finish; killing it", self.pid)
                os.kill(self.pid, signal.SIGKILL)
                _, wait_status = os.waitpid(self.pid, 0)
                self.reaped(self.pid, wait_status)
                return
            time.sleep(0.01)

    def _finish(self, ok: bool) -> None:
        try:
            self.store.rotated(ok)
        except OSError as exc:
            log.error("could not remove the previous journal: %s", exc)
