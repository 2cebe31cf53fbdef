"""Which GPUs exist and how much memory they have free: the inventory the daemon reads.

The daemon reads the GPUs through an *inventory*: NVML on a real machine, a JSON file named by
``$TS_FAKE_GPUS`` in tests (re-read at every read, so a test changes GPU memory by rewriting it),
or nothing at all where no driver exists.  Every failure reaches the daemon as one
:class:`GpuError` with a one-line reason; a raw ``pynvml`` exception never escapes.

Each GPU also lists the compute processes NVML sees on it and whether it is in exclusive-process
mode, so that users see who blocks a GPU on a shared server; :func:`describe_process` says who runs
such a process and what.

Which of them a job may take is :mod:`spooler.daemon.gpus.placement`'s business.
"""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from spooler.text import brief

_MIB = 1 << 20
_NOT_AVAILABLE = (1 << 64) - 1  # NVML_VALUE_NOT_AVAILABLE_ulonglong, which older bindings pass on
_EXCLUSIVE_PROCESS = 3  # NVML_COMPUTEMODE_EXCLUSIVE_PROCESS: one process (one CUDA context) at most


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU, as NVML reports it (its pid may be another PID namespace's)."""

    pid: int
    used_mib: int | None  # None where NVML cannot tell


@dataclass(frozen=True)
class GpuInfo:
    index: int  # NVML index: nvidia-smi's numbering; jobs get CUDA_DEVICE_ORDER=PCI_BUS_ID to match
    name: str
    uuid: str
    total_mib: int
    used_mib: int
    processes: tuple[GpuProcess, ...] = ()  # empty also where NVML could not list them
    exclusive_process: bool = False  # compute mode EXCLUSIVE_PROCESS: a second process cannot start

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


def _mib_up(size: int) -> int:
    return -(-size // _MIB)  # round up: never overstate free memory


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
                used = min(total, _mib_up(int(memory.used)))
                name, uuid = _text(nvml.nvmlDeviceGetName(handle)), _text(nvml.nvmlDeviceGetUUID(handle))
                processes, exclusive = self._processes(handle), self._exclusive(handle)
                gpus.append(GpuInfo(index, name, uuid, total, used, processes, exclusive))
        except Exception as err:
            raise _nvml_error(err) from err
        return gpus

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...]:
        """The compute processes on a GPU; none where NVML cannot list them (old driver, MIG, ...)."""
        try:
            found = []
            for item in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                memory = item.usedGpuMemory  # bytes; None or the sentinel where not available
                used = None if memory is None or not 0 <= int(memory) < _NOT_AVAILABLE else int(memory)
                found.append(GpuProcess(int(item.pid), None if used is None else _mib_up(used)))
            return tuple(found)
        except Exception:
            return ()

    def _exclusive(self, handle: Any) -> bool:
        try:
            return bool(self._nvml.nvmlDeviceGetComputeMode(handle) == _EXCLUSIVE_PROCESS)
        except Exception:
            return False

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


_FAKE_FIELDS = {"total_mib", "used_mib", "name", "uuid", "processes", "compute_mode"}
_FAKE_PROCESS_FIELDS = {"pid", "used_mib"}
_COMPUTE_MODES = {"default": False, "exclusive_process": True}


def _unknown(entry: dict[str, Any], known: set[str]) -> str | None:
    unknown = sorted(set(entry) - known)
    return f"unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})" if unknown else None


def _is_int(value: object, least: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


class FakeInventory:
    """GPUs described by a JSON file: ``[{"total_mib": 24000, "used_mib": 0, "name": ..., "uuid": ...}]``.

    Optional per GPU: ``"processes": [{"pid": 1234, "used_mib": 500}]`` (``used_mib`` may be
    null or left out: not known) and ``"compute_mode": "default" | "exclusive_process"``.
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
        entry = self._object(where, entry, _FAKE_FIELDS, "an object")
        sizes = []
        for key in ("total_mib", "used_mib"):
            if key not in entry:
                raise self._fail(f"{where}: {key} is missing")
            value = entry[key]
            if not _is_int(value, 0):
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
        mode = entry.get("compute_mode", "default")
        if not isinstance(mode, str) or mode not in _COMPUTE_MODES:
            modes = " or ".join(f'"{m}"' for m in _COMPUTE_MODES)
            raise self._fail(f"{where}: compute_mode must be {modes}, got {brief(mode)}")
        processes = self._processes(where, entry.get("processes", []))
        return GpuInfo(index, texts[0], texts[1], total, used, processes, _COMPUTE_MODES[mode])

    def _object(self, where: str, value: object, known: set[str], what: str) -> dict[str, Any]:
        """A JSON object of the file, with only known keys."""
        if not isinstance(value, dict):
            raise self._fail(f"{where}: expected {what}, got {brief(value)}")
        unknown = _unknown(value, known)
        if unknown:
            raise self._fail(f"{where}: {unknown}")
        return value

    def _processes(self, where: str, value: object) -> tuple[GpuProcess, ...]:
        if not isinstance(value, list):
            raise self._fail(f"{where}: processes must be a list of objects, got {brief(value)}")
        processes = []
        for number, item in enumerate(value):
            at = f"{where}: processes[{number}]"
            item = self._object(at, item, _FAKE_PROCESS_FIELDS, "an object with a pid")
            pid, used = item.get("pid"), item.get("used_mib")
            if not _is_int(pid, 1):
                raise self._fail(f"{at}: pid must be an integer > 0, got {brief(pid)}")
            if used is not None and not _is_int(used, 0):
                raise self._fail(f"{at}: used_mib must be an integer >= 0 or null, got {brief(used)}")
            processes.append(GpuProcess(pid, used))
        return tuple(processes)

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


@dataclass(frozen=True)
class ProcessInfo:
    """Who runs a process and what: ``"?"`` for what cannot be read (the process is gone, or its
    pid belongs to another PID namespace, as NVML's pids in a container can)."""

    pid: int
    user: str  # the name of its real uid, or the uid as a number where it has no name
    command: str  # its command line on one line, cut to about 80 characters; [comm] where empty
    session: int | None  # its session id (os.getsid), None where unknown


def _read_proc(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def describe_process(pid: int) -> ProcessInfo:
    """Who runs ``pid`` and what, read from ``/proc``.  Never raises."""
    if pid <= 0:  # /proc/0 does not exist, and os.getsid(0) would describe this process
        return ProcessInfo(pid, "?", "?", None)
    user = "?"
    status = _read_proc(pid, "status") or ""
    for line in status.splitlines():
        if line.startswith("Uid:"):  # Uid: real effective saved filesystem
            uid = (line.split()[1:] or ["?"])[0]
            try:
                user = pwd.getpwuid(int(uid)).pw_name
            except (KeyError, ValueError, OverflowError):  # a uid without a name (or no uid at all)
                user = uid
            break
    command = " ".join((_read_proc(pid, "cmdline") or "").replace("\0", " ").split())
    if not command:  # a zombie or a kernel thread: only its name is left
        comm = " ".join((_read_proc(pid, "comm") or "").split())
        command = f"[{comm}]" if comm else "?"
    if len(command) > 80:
        command = command[:77] + "..."
    try:
        session: int | None = os.getsid(pid)
    except (OSError, OverflowError):  # gone, or not a pid at all
        session = None
    return ProcessInfo(pid, user, command, session)
