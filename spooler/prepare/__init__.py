"""What the client prepares before it submits, so the daemon only ever runs finished commands:
argument templates (``template``), sweep files (``sweep``) and code snapshots (``snapshot``).
Client side: none of it is imported by the daemon.
"""
