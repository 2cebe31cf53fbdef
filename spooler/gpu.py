"""Which GPUs exist, how much memory they have free, and which of them a job may take.

The daemon reads the GPUs through an *inventory*: NVML on a real machine, a JSON file named by
``$TS_FAKE_GPUS`` in tests (re-read at every read, so a test changes GPU memory by rewriting it),
or nothing at all where no driver exists.  Every failure reaches the daemon as one
:class:`GpuError` with a one-line reason; a raw ``pynvml`` exception never escapes.

:func:`choose_gpus` is pure: it decides from a snapshot and the jobs of ours already holding
GPUs, so a burst of jobs cannot all pass the same free-memory check before any of them has
allocated anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

_MIB = 1 << 20


@dataclass(frozen=True)
class GpuInfo:
    index: int  # NVML index: nvidia-smi's numbering; jobs get CUDA_DEVICE_ORDER=PCI_BUS_ID to match
    name: str
    uuid: str
    total_mib: int
    used_mib: int

    @property
    def free_mib(self) -> int:
        return self.total_mib - self.used_mib


class GpuError(Exception):
    """The GPUs cannot be read; ``str(err)`` is a one-line reason such as ``NVML: Driver Not Loaded``."""


class GpuInventory(Protocol):
    kind: str  # "nvml", "fake" or "none"

    def read(self) -> list[GpuInfo]:
        """The current state of every GPU, in index order; raises :class:`GpuError`."""

    def close(self) -> None: ...


def _one_line(err: BaseException) -> str:
    try:
        text = str(err)
    except Exception:  # an NVMLError with an unknown code asks the library for its text
        text = ""
    text = " ".join(text.split())
    return text or type(err).__name__


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _nvml_error(err: BaseException) -> GpuError:
    text = _one_line(err)
    return GpuError(text if text.startswith("NVML") else f"NVML: {text}")


def _text(value: object) -> str:
    """NVML strings come back as bytes from older bindings and as str from newer ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class NvmlInventory:
    """The real GPUs.  NVML is initialised once here; :meth:`read` queries it afresh each time."""

    kind = "nvml"

    def __init__(self, nvml: Any = None) -> None:
        try:
            if nvml is None:
                import pynvml

                nvml = pynvml
            nvml.nvmlInit()
        except Exception as err:
            raise _nvml_error(err) from err
        self._nvml = nvml
        self._open = True

    def read(self) -> list[GpuInfo]:
        nvml = self._nvml
        try:
            gpus = []
            for index in range(int(nvml.nvmlDeviceGetCount())):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                total = int(memory.total) // _MIB
                used = min(total, -(-int(memory.used) // _MIB))  # round up: never overstate free
                name, uuid = _text(nvml.nvmlDeviceGetName(handle)), _text(nvml.nvmlDeviceGetUUID(handle))
                gpus.append(GpuInfo(index, name, uuid, total, used))
        except Exception as err:
            raise _nvml_error(err) from err
        return gpus

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass


class NoGpus:
    """No usable GPU on this machine: every read fails with the reason found at start-up."""

    kind = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def read(self) -> list[GpuInfo]:
        raise GpuError(self.reason)

    def close(self) -> None:
        pass


_FAKE_FIELDS = {"total_mib", "used_mib", "name", "uuid"}


class FakeInventory:
    """GPUs described by a JSON file: ``[{"total_mib": 24000, "used_mib": 0, "name": ..., "uuid": ...}]``.

    The file is read again at every :meth:`read`, so a test changes the GPUs by rewriting it.
    """

    kind = "fake"

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def _fail(self, why: str) -> GpuError:
        return GpuError(f"TS_FAKE_GPUS file {self.path}: {why}")

    def read(self) -> list[GpuInfo]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as err:
            raise self._fail(f"cannot read it: {err.strerror or err}") from err
        except (ValueError, RecursionError) as err:  # bad JSON or bad UTF-8; absurd nesting
            raise self._fail(f"not valid JSON: {_one_line(err)}") from err
        if not isinstance(data, list):
            raise self._fail("expected a JSON list with one object per GPU")
        return [self._gpu(index, entry) for index, entry in enumerate(data)]

    def _gpu(self, index: int, entry: object) -> GpuInfo:
        where = f"GPU {index}"
        if not isinstance(entry, dict):
            raise self._fail(f"{where}: expected an object, got {_show(entry)}")
        unknown = sorted(set(entry) - _FAKE_FIELDS)
        if unknown:
            raise self._fail(
                f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_FAKE_FIELDS))})"
            )
        sizes = []
        for key in ("total_mib", "used_mib"):
            if key not in entry:
                raise self._fail(f"{where}: {key} is missing")
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self._fail(f"{where}: {key} must be an integer >= 0, got {_show(value)}")
            sizes.append(value)
        total, used = sizes
        if used > total:
            raise self._fail(f"{where}: used_mib {used} is more than total_mib {total}")
        texts = []
        for key, default in (("name", "Fake GPU"), ("uuid", f"GPU-fake-{index}")):
            value = entry.get(key, default)
            if not isinstance(value, str):
                raise self._fail(f"{where}: {key} must be a string, got {_show(value)}")
            texts.append(value)
        return GpuInfo(index, texts[0], texts[1], total, used)

    def close(self) -> None:
        pass


def open_inventory(env: Mapping[str, str]) -> GpuInventory:
    """``$TS_FAKE_GPUS`` if set, else NVML, else :class:`NoGpus` with the reason.  Never raises."""
    fake = env.get("TS_FAKE_GPUS")
    if fake:
        return FakeInventory(fake)
    try:
        import pynvml
    except Exception as err:  # ImportError, or a broken installation
        return NoGpus(f"no NVIDIA driver: cannot import pynvml ({_one_line(err)})")
    try:
        return NvmlInventory(pynvml)
    except GpuError as err:
        return NoGpus(f"no NVIDIA driver: {err}")


def parse_visible(value: str | None) -> list[int] | None:
    """``TS_VISIBLE_DEVICES``: ``"0,2"`` -> ``[0, 2]``; unset or empty -> ``None`` (all GPUs)."""
    if value is None or not value.strip():
        return None
    indices: list[int] = []
    for item in value.split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()):
            raise ValueError(f"invalid GPU list {value!r}: {item!r} is not a GPU index (expected e.g. 0,1)")
        if int(item) not in indices:
            indices.append(int(item))
    return indices


_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?b)?)?", re.IGNORECASE)
_UNIT_MIB = {"k": Fraction(1, 1024), "m": Fraction(1), "g": Fraction(1024), "t": Fraction(1024 * 1024)}


def parse_size(text: str) -> int:
    """``--gpu_mem`` size in MiB: ``20G``, ``20GB``, ``20GiB``, ``512M``, ``1.5G``; a bare number is MiB.

    Units are binary whatever their spelling (GB = GiB), as nvidia-smi counts; fractions round up.
    """
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid size {text!r} (expected e.g. 20G, 512M or a number of MiB)")
    number, unit = match.group(1), (match.group(2) or "m").lower()
    mib = math.ceil(Fraction(number) * _UNIT_MIB[unit])
    if mib <= 0:
        raise ValueError(f"invalid size {text!r}: it must be more than zero")
    return mib


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
