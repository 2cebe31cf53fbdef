"""Starting jobs and learning how they ended, without the daemon ever forking itself.

The daemon sends each launch to a small *launcher* process, started once, which spawns the job
(its own session and process group, output to the log) and is its parent: it collects the exit
status, records it in its exit log and reports.  The files say what runs where:

- ``spec``: what a launch carries (built in the daemon: command, environment, where output goes);
- ``handle``: the daemon's side: starts the launcher, sends launches, reads its reports;
- ``process``: the launcher process itself (``python -m spooler.daemon.launcher``);
- ``spawn``: spawning one job, shared by the launcher and the shim;
- ``shim``: the process that supervises a ``-z`` job and gzips its output as it comes;
- ``exits``: the exit logs, written by launcher and shims, read by the next daemon.
"""
