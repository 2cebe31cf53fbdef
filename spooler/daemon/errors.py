"""The error a request handler raises for anything the user must fix."""

from __future__ import annotations


class RequestError(Exception):
    """A request that cannot be carried out; ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
