"""The spooler daemon: one per socket, holding the job list and running the jobs."""
