"""spooler: a task spooler for GPU servers, the successor of GPU Task Spooler (``ts``).

Kept import-light: ``ts`` imports this package on every call.
"""

__version__ = "0.1.0"
