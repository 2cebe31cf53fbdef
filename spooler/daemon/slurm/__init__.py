"""The slurm backend: the daemon sends its jobs to a SLURM cluster instead of its launcher.

SLURM does the scheduling; the daemon keeps the job list, the ids, ``-S``, dependencies that
are not in SLURM yet, retries and everything the user sees.  It speaks to SLURM only through its
command-line tools and their stable machine-readable forms (never ``--json``, never a library
compiled against one SLURM release).  The files, all in the daemon:

- ``commands``: pure: ``sbatch`` arguments from a job, the parsers of ``sbatch --parsable``,
  ``squeue``, ``sacct`` and ``scontrol``, and SLURM's states mapped onto ours;
- ``script``: pure: the batch script that wraps a job (or every task of a job array) and
  writes its exit status beside its log, so results never depend on ``sacct``;
- ``tools``: running those tools off the event loop, with a time limit;
- ``ending``: how a job SLURM ran ends here (its exit status, who cancelled it);
- ``polling``: the timer of the one ``squeue`` call, with its back-off;
- ``backend``: submitting, polling (one ``squeue`` call for all jobs), cancelling and finding
  our jobs again after a restart (by the token each carries in ``--comment``);
- ``dispatch``: the scheduling pass of a daemon whose jobs go to SLURM.
"""
