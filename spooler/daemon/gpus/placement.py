"""Which GPUs a job may take, decided from an inventory snapshot: pure, no I/O.

:func:`choose_gpus` decides from a snapshot and the jobs of ours already holding GPUs, so a
burst of jobs cannot all pass the same free-memory check before any of them has allocated
anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spooler.daemon.gpus.inventory import GpuInfo


@dataclass(frozen=True)
class Holder:
    job_id: int
    mem_mib: int | None  # None: holds the GPU exclusively; else shares it, having been promised this much


def _jobs(holders: Sequence[Holder]) -> str:
    ids = ", ".join(str(h.job_id) for h in holders)
    return f"job{'s' if len(holders) > 1 else ''} {ids}"


def _above_threshold(gpu: GpuInfo, free_perc: int) -> bool:
    return gpu.free_mib * 100 >= free_perc * gpu.total_mib


def choose_gpus(
    gpus: list[GpuInfo],
    *,
    count: int,
    free_perc: int,
    holders: Mapping[int, Sequence[Holder]],
    visible: Sequence[int] | None = None,
    mem_mib: int | None = None,
) -> list[int] | str:
    """The GPUs to give a job (sorted indices), or a one-line reason why it must wait.

    Exclusive (``mem_mib`` None): a visible GPU that no job of ours holds and that has at least
    ``free_perc`` % of its memory free.  Shared: a visible GPU with no exclusive holder whose free
    memory, less what was promised to the sharing jobs already there, is at least ``mem_mib``;
    the threshold does not apply.  The GPUs with the most (effective) free memory win, ties to the
    lowest index, so that successive jobs spread over the GPUs.
    """
    if count < 1 or not 1 <= free_perc <= 100 or (mem_mib is not None and mem_mib < 1):
        raise ValueError(f"bad request: count={count} free_perc={free_perc} mem_mib={mem_mib}")
    candidates = [g for g in gpus if visible is None or g.index in visible]
    fit: list[tuple[int, int]] = []  # (effective free MiB, index)
    why_not: list[str] = []
    for gpu in candidates:
        held = list(holders.get(gpu.index, ()))
        name = f"GPU {gpu.index}"
        if mem_mib is None:
            if held:
                why_not.append(f"{name} held by {_jobs(held)}")
            elif not _above_threshold(gpu, free_perc):
                why_not.append(f"{name} below {free_perc}% free ({gpu.free_mib}/{gpu.total_mib} MiB free)")
            else:
                fit.append((gpu.free_mib, gpu.index))
            continue
        exclusive = [h for h in held if h.mem_mib is None]
        promised = sum(h.mem_mib or 0 for h in held)
        available = gpu.free_mib - promised
        if exclusive:
            why_not.append(f"{name} held exclusively by {_jobs(exclusive)}")
        elif available < mem_mib:
            detail = f", {promised} promised to {_jobs(held)}" if held else ""
            why_not.append(f"{name} has {max(available, 0)} MiB available ({gpu.free_mib} free{detail})")
        else:
            fit.append((available, gpu.index))
    if len(fit) >= count:
        fit.sort(key=lambda pair: (-pair[0], pair[1]))
        return sorted(index for _, index in fit[:count])
    need = f"needs {count} GPU{'s' if count > 1 else ''}" + (f" with {mem_mib} MiB" if mem_mib else "")
    if not gpus:
        return f"{need}, no GPU found"
    if not candidates:
        shown = ", ".join(str(i) for i in visible or ())
        return f"{need}, none of the visible GPUs ({shown}) exists"
    if len(candidates) < count:
        where = " visible" if visible is not None else ""
        why_not.append(f"only {len(candidates)} GPU{'s' if len(candidates) > 1 else ''}{where}")
    return f"{need}, {len(fit)} {'fit' if mem_mib else 'free'}: {', '.join(why_not)}"


def describe(
    gpus: list[GpuInfo],
    free_perc: int,
    holders: Mapping[int, Sequence[Holder]],
    visible: Sequence[int] | None,
) -> list[dict[str, Any]]:
    """One dict per GPU for the GPU view and its JSON; ``free``: an exclusive job could take it now."""
    rows = []
    for gpu in gpus:
        held = holders.get(gpu.index, ())
        shown = visible is None or gpu.index in visible
        free = shown and not held and _above_threshold(gpu, free_perc)
        row = {**dataclasses.asdict(gpu), "free_mib": gpu.free_mib, "visible": shown, "free": free}
        rows.append({**row, "held_by": [h.job_id for h in held]})
    return rows
