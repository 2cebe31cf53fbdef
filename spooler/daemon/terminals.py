"""The terminals of ``ts -nf`` jobs: the client's stdout and stderr, passed with the submission
and held until the job starts (the launcher gets them) or ends without starting."""

from __future__ import annotations

import os


class Terminals:
    def __init__(self) -> None:
        self._fds: dict[int, tuple[int, int]] = {}

    def hold(self, job_id: int, fds: tuple[int, int]) -> None:
        self._fds[job_id] = fds

    def take(self, job_id: int) -> tuple[int, int] | None:
        """The descriptors, now the caller's to close."""
        return self._fds.pop(job_id, None)

    def close(self, job_id: int) -> None:
        close_pair(self.take(job_id))


def close_pair(fds: tuple[int, int] | None) -> None:
    for fd in set(fds or ()):
        os.close(fd)
