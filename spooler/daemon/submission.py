"""A submission becoming a job: what is checked before a job is queued, and the job made from
the request's fields (the one place where they become a job's)."""

from __future__ import annotations

import sys

from spooler.commands import needs_shell
from spooler.daemon.gpus.manager import GpuManager
from spooler.daemon.hooks import find_sendmail
from spooler.daemon.table import JobTable
from spooler.jobs import Job, JobState
from spooler.protocol import E_INVALID, E_NOT_FOUND, E_QUEUE_FULL, RequestError
from spooler.protocol.requests import Submit

# A --begin time this much in the past is refused; less is the time the request took to arrive.
BEGIN_SLACK = 60.0


def check(
    request: Submit, table: JobTable, gpu: GpuManager | None, now: float, queue_limit: int | None
) -> None:
    """Refuse a job that cannot be queued; ``gpu``: the inventory its GPUs come from (None
    where SLURM gives them)."""
    for dep in [*request.after, *request.after_ok]:
        if dep not in table.jobs:
            raise RequestError(E_NOT_FOUND, f"cannot depend on job {dep}: it does not exist")
    if request.mail and find_sendmail(request.env) is None:
        raise RequestError(E_INVALID, "-m: no sendmail found to mail the output; install one or drop -m")
    if gpu is not None:
        gpu.validate(request.gpus, request.gpu_indices or None)
    if request.begin_at is not None and request.begin_at < now - BEGIN_SLACK:
        raise RequestError(E_INVALID, "--begin: that time is in the past")
    if queue_limit is not None and len(table.queue) >= queue_limit:
        raise RequestError(E_QUEUE_FULL, f"the queue is full ({queue_limit} jobs waiting, TS_MAXCONN)")


def job_of(request: Submit, command: list[str], now: float) -> Job:
    """A new job from a submission: the one place where a request's fields become a job's.
    (Lists are copied: a batch makes all its jobs from one request.)"""
    return Job(
        id=-1,  # the table gives it the next id
        command=command,
        cwd=sys.intern(request.cwd),
        shell=needs_shell(command),
        enqueue_time=now,
        label=request.label,
        slots=request.slots,
        store_output=not request.no_output,
        stderr_apart=request.stderr_apart,
        gzip=request.gzip,
        log_name=request.log_name,
        mail=request.mail,
        after=list(request.after),
        after_ok=list(request.after_ok),
        env_info=request.env_info,
        gpus=request.gpus,
        gpu_indices=list(request.gpu_indices) or None,
        gpu_mem_mib=request.gpu_mem_mib,
        priority=request.priority,
        max_retries=request.retry,
        retry_timeout=request.retry_timeout,
        time_limit=request.time_limit,
        args=request.args,
        sweep=request.sweep,
        skip_if_exists=request.skip_if_exists,
        snapshot=request.snapshot,
        snapshot_info=request.snapshot_info,
        begin_at=request.begin_at,
        queue=request.queue,
        notify_url=request.notify_url,
        notify_on=request.notify_on,
        state=JobState.HELD if request.hold else JobState.QUEUED,
        token=request.token,
    )
