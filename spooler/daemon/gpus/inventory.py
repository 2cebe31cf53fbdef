"""Which GPUs exist and how much memory they have free: the inventory the daemon reads.

The daemon reads the GPUs through an *inventory*: NVML on a real machine, a JSON file named by
``$TS_FAKE_GPUS`` in tests (re-read at every read, so a test changes GPU memory by rewriting it),
or nothing at all where no driver exists.  Every failure reaches the daemon as one
:class:`GpuError` with a one-line reason; a raw ``pynvml`` exception never escapes.

Which of them a job may take is :mod:`spooler.daemon.gpus.placement`'s business.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from spooler.text import brief

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
            raise self._fail(f"{where}: expected an object, got {brief(entry)}")
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
                raise self._fail(f"{where}: {key} must be an integer >= 0, got {brief(value)}")
            sizes.append(value)
        total, used = sizes
        if used > total:
            raise self._fail(f"{where}: used_mib {used} is more than total_mib {total}")
        texts = []
        for key, default in (("name", "Fake GPU"), ("uuid", f"GPU-fake-{index}")):
            value = entry.get(key, default)
            if not isinstance(value, str):
                raise self._fail(f"{where}: {key} must be a string, got {brief(value)}")
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
