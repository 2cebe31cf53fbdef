"""Which GPUs a job may take, decided from an inventory snapshot: pure, no I/O.

A :class:`GpuPool` is the picture of the GPUs for one scheduling pass: what NVML reported, which
jobs of ours hold which GPU (and when each is expected to let go, from its time limit), and the
GPUs other spoolers hold leases on.  The scheduler asks it where a job fits, takes GPUs from it
as it starts jobs, so a burst of jobs cannot all pass the same free-memory check before any of
them has allocated anything, and asks when the GPUs a waiting job needs should come free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spooler.daemon.gpus.inventory import GpuInfo
from spooler.jobs import Job


@dataclass(frozen=True)
class Holder:
    job_id: int  # -1: another spooler's lease (``who`` says whose)
    mem_mib: int | None  # None: holds the GPU exclusively; else shares it, having been promised this much
    until: float | None = None  # when it is expected to let go (its time limit); None: unknown
    who: str = ""


@dataclass(frozen=True)
class Want:
    """What a job asks of the GPUs."""

    count: int
    mem_mib: int | None = None  # --gpu_mem: share GPUs with this much free and not promised (-g: never)
    indices: tuple[int, ...] = ()  # -g: exactly these GPUs, without the memory check
    min_free_mib: int = 0  # a retry after CUDA ran out of memory waits for this much free

    @classmethod
    def of(cls, job: Job) -> Want:
        if job.gpu_indices:
            return cls(len(job.gpu_indices), None, tuple(job.gpu_indices))
        return cls(job.gpus, job.gpu_mem_mib, (), job.oom_free_mib or 0)


def _jobs(holders: Sequence[Holder]) -> str:
    foreign = [h.who for h in holders if h.job_id < 0]
    ours = [str(h.job_id) for h in holders if h.job_id >= 0]
    parts = [f"job{'s' if len(ours) > 1 else ''} {', '.join(ours)}"] if ours else []
    return ", ".join(parts + list(dict.fromkeys(foreign)))


class GpuPool:
    def __init__(
        self,
        gpus: list[GpuInfo],
        *,
        free_perc: int,
        holders: Mapping[int, Sequence[Holder]],
        visible: Sequence[int] | None = None,
        ignore_mib: int = 0,
    ) -> None:
        if not 1 <= free_perc <= 100:
            raise ValueError(f"bad free_perc {free_perc}")
        self.gpus = gpus
        self.free_perc = free_perc
        self.held: dict[int, list[Holder]] = {i: list(h) for i, h in holders.items()}
        self.visible = visible
        self.ignore_mib = ignore_mib
        self.candidates = [g for g in gpus if visible is None or g.index in visible]

    # -- one GPU ---------------------------------------------------------------------------------

    def free_enough(self, gpu: GpuInfo) -> bool:
        """Free for an exclusive job by memory: at least ``free_perc`` % free, use below
        ``TS_GPU_IGNORE_MIB`` not counting (a desktop session's few hundred MiB)."""
        used = 0 if gpu.used_mib <= self.ignore_mib else gpu.used_mib
        return (gpu.total_mib - used) * 100 >= self.free_perc * gpu.total_mib

    def _blocked_by_mode(self, gpu: GpuInfo) -> bool:
        """A GPU in exclusive-process compute mode that any process uses takes no other."""
        return gpu.exclusive_process and bool(gpu.processes)

    def check(self, gpu: GpuInfo, want: Want) -> tuple[int, str]:
        """(room, "") when the GPU suits the job, with a rank (more room first); else (0, why not)."""
        held = self.held.get(gpu.index, [])
        name = f"GPU {gpu.index}"
        if want.indices:
            return (0, f"{name} held by {_jobs(held)}") if held else (gpu.free_mib, "")
        if want.mem_mib is None:
            if held:
                return 0, f"{name} held by {_jobs(held)}"
            if self._blocked_by_mode(gpu):
                return 0, f"{name} is in exclusive-process mode and in use"
            if not self.free_enough(gpu):
                return 0, f"{name} below {self.free_perc}% free ({gpu.free_mib}/{gpu.total_mib} MiB free)"
            if gpu.free_mib < want.min_free_mib:
                return 0, f"{name} has {gpu.free_mib} MiB free, the job ran out with {want.min_free_mib}"
            return gpu.free_mib, ""
        exclusive = [h for h in held if h.mem_mib is None]
        promised = sum(h.mem_mib or 0 for h in held)
        available = gpu.free_mib - promised
        if exclusive:
            return 0, f"{name} held exclusively by {_jobs(exclusive)}"
        if self._blocked_by_mode(gpu):
            return 0, f"{name} is in exclusive-process mode and in use"
        need = max(want.mem_mib, want.min_free_mib)
        if available < need:
            detail = f", {promised} promised to {_jobs(held)}" if held else ""
            return 0, f"{name} has {max(available, 0)} MiB available ({gpu.free_mib} free{detail})"
        return available, ""

    # -- a job -----------------------------------------------------------------------------------

    def fitting(self, want: Want, exclude: Iterable[int] = ()) -> tuple[list[int], list[str]]:
        """The GPUs that suit the job now, best first, and why each other one does not."""
        skip = set(exclude)
        fit: list[tuple[int, int]] = []
        why_not: list[str] = []
        pool = [g for g in self.gpus if g.index in want.indices] if want.indices else self.candidates
        for gpu in pool:
            if gpu.index in skip:
                continue
            room, why = self.check(gpu, want)
            if why:
                why_not.append(why)
            else:
                fit.append((room, gpu.index))
        fit.sort(key=lambda pair: (-pair[0], pair[1]))
        return [index for _, index in fit], why_not

    def choose(self, want: Want, exclude: Iterable[int] = ()) -> list[int] | str:
        """The GPUs to give the job (sorted), or a one-line reason why it must wait.

        Exclusive: a visible GPU that nobody holds with at least ``free_perc`` % free.  Shared
        (``mem_mib``): one without an exclusive holder whose free memory, less what was promised
        to the jobs sharing it, is at least ``mem_mib``.  The most free memory wins, ties to the
        lowest index, so successive jobs spread over the GPUs.
        """
        if want.indices:
            missing = [i for i in want.indices if i not in {g.index for g in self.gpus}]
            if missing:
                return f"-g: no GPU {', '.join(map(str, missing))}"
        fit, why_not = self.fitting(want, exclude)
        if len(fit) >= want.count:
            return sorted(fit[: want.count])
        if want.indices:
            return f"waiting for {', '.join(why_not)}" if why_not else "waiting for GPUs held for another job"
        count, mem = want.count, want.mem_mib
        need = f"needs {count} GPU{'s' if count > 1 else ''}" + (f" with {mem} MiB" if mem else "")
        if not self.gpus:
            return f"{need}, no GPU found"
        if not self.candidates:
            shown = ", ".join(str(i) for i in self.visible or ())
            return f"{need}, none of the visible GPUs ({shown}) exists"
        if len(self.candidates) < count:
            where = " visible" if self.visible is not None else ""
            n = len(self.candidates)
            why_not.append(f"only {n} GPU{'s' if n > 1 else ''}{where}")
        return f"{need}, {len(fit)} {'fit' if mem else 'free'}: {', '.join(why_not)}"

    def take(self, job: Job, indices: Sequence[int], until: float | None = None) -> None:
        """The job starts on these GPUs: later placements in this pass see them held."""
        mem = Want.of(job).mem_mib
        for index in indices:
            self.held.setdefault(index, []).append(Holder(job.id, mem, until))

    def uuids(self, indices: Sequence[int]) -> list[str]:
        return [g.uuid for g in self.gpus if g.index in indices]

    def least_free(self, indices: Sequence[int]) -> int | None:
        """The free memory (MiB) of the least free of these GPUs, as NVML reported it."""
        free = [g.free_mib for g in self.gpus if g.index in indices]
        return min(free) if free else None

    def start_by(self, want: Want, fit: Sequence[int]) -> float | None:
        """The earliest time the job could have all its GPUs, if the jobs holding the others end
        at their time limits; None when that cannot be known (a holder without a limit, another
        spooler's lease, memory used outside the spooler)."""
        need = want.count - len(fit)
        if need <= 0:
            return 0.0
        pool = [g for g in self.gpus if g.index in want.indices] if want.indices else self.candidates
        releases: list[float] = []
        for gpu in pool:
            if gpu.index in fit:
                continue
            held = self.held.get(gpu.index, [])
            ends = [h.until for h in held]
            if not held or any(h.job_id < 0 or h.until is None for h in held):
                continue  # not ours to predict: not free for reasons no time limit bounds
            releases.append(max(e for e in ends if e is not None))
        if len(releases) < need:
            return None
        return sorted(releases)[need - 1]


def choose_gpus(
    gpus: list[GpuInfo],
    *,
    count: int,
    free_perc: int,
    holders: Mapping[int, Sequence[Holder]],
    visible: Sequence[int] | None = None,
    mem_mib: int | None = None,
) -> list[int] | str:
    """The GPUs to give a job of ``count`` GPUs (see :meth:`GpuPool.choose`)."""
    if count < 1 or not 1 <= free_perc <= 100 or (mem_mib is not None and mem_mib < 1):
        raise ValueError(f"bad request: count={count} free_perc={free_perc} mem_mib={mem_mib}")
    pool = GpuPool(gpus, free_perc=free_perc, holders=holders, visible=visible)
    return pool.choose(Want(count, mem_mib))


def describe(
    gpus: list[GpuInfo],
    free_perc: int,
    holders: Mapping[int, Sequence[Holder]],
    visible: Sequence[int] | None,
    *,
    earmarked: Mapping[int, int] | None = None,
    ignore_mib: int = 0,
) -> list[dict[str, Any]]:
    """One dict per GPU for the GPU view and its JSON; ``free``: an exclusive job could take it now."""
    pool = GpuPool(gpus, free_perc=free_perc, holders=holders, visible=visible, ignore_mib=ignore_mib)
    rows = []
    for gpu in gpus:
        held = holders.get(gpu.index, ())
        shown = visible is None or gpu.index in visible
        mark = (earmarked or {}).get(gpu.index)
        free = shown and not held and mark is None and not pool.check(gpu, Want(1))[1]
        row = {f.name: getattr(gpu, f.name) for f in dataclasses.fields(gpu) if f.name != "processes"}
        row.update(free_mib=gpu.free_mib, visible=shown, free=free)
        row["held_by"] = [h.job_id for h in held if h.job_id >= 0]
        others = [h.who for h in held if h.job_id < 0]
        if others:
            row["held_elsewhere"] = list(dict.fromkeys(others))
        if mark is not None:
            row["earmarked_for"] = mark
        rows.append(row)
    return rows
