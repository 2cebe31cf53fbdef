"""Who uses a GPU: compute processes and compute mode in the inventory, and describe_process."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pynvml
import pytest
from conftest import wait_for

from spooler.daemon.gpus.inventory import (
    FakeInventory,
    GpuError,
    GpuInfo,
    GpuProcess,
    NvmlInventory,
    ProcessInfo,
    describe_process,
)

MIB = 1 << 20
NOT_AVAILABLE = (1 << 64) - 1  # what the C library reports where a process's memory is unknown


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def fake_error(tmp_path: Path, data: Any) -> str:
    with pytest.raises(GpuError) as caught:
        FakeInventory(str(write(tmp_path / "gpus.json", data))).read()
    message = str(caught.value)
    assert message.startswith(f"TS_FAKE_GPUS file {tmp_path / 'gpus.json'}: GPU 0: ")
    assert "\n" not in message and len(message) < 300
    return message


# --- FakeInventory: processes and compute mode ---------------------------------------------------


def test_fake_processes_and_compute_mode(tmp_path: Path) -> None:
    path = write(
        tmp_path / "gpus.json",
        [
            {"total_mib": 100, "used_mib": 60, "processes": [{"pid": 7, "used_mib": 50}, {"pid": 8}]},
            {"total_mib": 100, "used_mib": 0, "processes": [], "compute_mode": "exclusive_process"},
            {"total_mib": 100, "used_mib": 0, "compute_mode": "default"},
            {"total_mib": 100, "used_mib": 9, "processes": [{"pid": 9, "used_mib": None}]},
        ],
    )
    inv = FakeInventory(str(path))
    gpus = inv.read()
    assert gpus[0].processes == (GpuProcess(7, 50), GpuProcess(8, None))
    assert [g.exclusive_process for g in gpus] == [False, True, False, False]
    assert gpus[1].processes == gpus[2].processes == ()
    assert gpus[3] == GpuInfo(3, "Fake GPU", "GPU-fake-3", 100, 9, (GpuProcess(9, None),))
    write(path, [{"total_mib": 100, "used_mib": 1, "processes": [{"pid": 1, "used_mib": 1}]}])
    assert inv.read()[0].processes == (GpuProcess(1, 1),)  # re-read at every read
    write(path, [{"total_mib": 100, "used_mib": 0}])
    assert inv.read() == [GpuInfo(0, "Fake GPU", "GPU-fake-0", 100, 0)]


@pytest.mark.parametrize(
    ("processes", "reason"),
    [
        ("7", 'processes must be a list of objects, got "7"'),
        ({"pid": 7}, 'processes must be a list of objects, got {"pid": 7}'),
        (None, "processes must be a list of objects, got null"),
        ([7], "processes[0]: expected an object with a pid, got 7"),
        ([{"pid": 7}, [8]], "processes[1]: expected an object with a pid, got [8]"),
        ([{}], "processes[0]: pid must be an integer > 0, got null"),
        ([{"pid": "7"}], 'processes[0]: pid must be an integer > 0, got "7"'),
        ([{"pid": 7.0}], "processes[0]: pid must be an integer > 0, got 7.0"),
        ([{"pid": True}], "processes[0]: pid must be an integer > 0, got true"),
        ([{"pid": 0}], "processes[0]: pid must be an integer > 0, got 0"),
        ([{"pid": 7, "used_mib": -1}], "processes[0]: used_mib must be an integer >= 0 or null, got -1"),
        ([{"pid": 7, "used_mib": "5"}], 'processes[0]: used_mib must be an integer >= 0 or null, got "5"'),
        ([{"pid": 7, "used_mib": False}], "processes[0]: used_mib must be an integer >= 0 or null, got fals"),
        ([{"pid": 7, "mem": 5}], "processes[0]: unknown field 'mem' (known: pid, used_mib)"),
    ],
)
def test_fake_bad_processes(tmp_path: Path, processes: Any, reason: str) -> None:
    message = fake_error(tmp_path, [{"total_mib": 100, "used_mib": 0, "processes": processes}])
    assert f"GPU 0: {reason}" in message


@pytest.mark.parametrize("mode", ["exclusive", "EXCLUSIVE_PROCESS", 3, None, True, ["default"]])
def test_fake_bad_compute_mode(tmp_path: Path, mode: Any) -> None:
    message = fake_error(tmp_path, [{"total_mib": 100, "used_mib": 0, "compute_mode": mode}])
    assert message.endswith(f'compute_mode must be "default" or "exclusive_process", got {json.dumps(mode)}')


def test_fake_unknown_field_lists_the_new_ones(tmp_path: Path) -> None:
    message = fake_error(tmp_path, [{"total_mib": 100, "used_mib": 0, "procs": []}])
    known = "compute_mode, name, processes, total_mib, used_mib, uuid"
    assert message.endswith(f"GPU 0: unknown field 'procs' (known: {known})")


# --- NvmlInventory with a stand-in module --------------------------------------------------------


class StandIn:
    """The nvml* functions NvmlInventory calls, for one 16 GiB GPU with 3 MiB used."""

    def __init__(self, processes: Any = (), mode: Any = pynvml.NVML_COMPUTEMODE_DEFAULT) -> None:
        self.processes, self.mode = processes, mode

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle-{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA Test"

    def nvmlDeviceGetUUID(self, handle: str) -> str:
        return "GPU-t"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        assert handle == "handle-0"
        return SimpleNamespace(total=16 * 1024 * MIB, used=3 * MIB)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> Any:
        assert handle == "handle-0"
        return self.processes() if callable(self.processes) else self.processes

    def nvmlDeviceGetComputeMode(self, handle: str) -> Any:
        assert handle == "handle-0"
        return self.mode() if callable(self.mode) else self.mode


def nvml_error(code: int) -> Callable[[], Any]:
    def fail() -> Any:
        raise pynvml.NVMLError(code)

    return fail


def read_one(nvml: Any) -> GpuInfo:
    inv = NvmlInventory(nvml)
    try:
        (gpu,) = inv.read()
    finally:
        inv.close()
    return gpu


def proc(pid: int, used: int | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0, computeInstanceId=0)


def test_nvml_processes() -> None:
    listed = [proc(100, 2 * MIB), proc(101, MIB + 1), proc(102, 0), proc(103, None), proc(104, NOT_AVAILABLE)]
    gpu = read_one(StandIn(listed))
    assert gpu.processes == (
        GpuProcess(100, 2),
        GpuProcess(101, 2),  # rounded up, like the GPU's used memory
        GpuProcess(102, 0),
        GpuProcess(103, None),  # pynvml's own translation of "not available"
        GpuProcess(104, None),  # the raw sentinel, as older bindings pass it on
    )
    assert (gpu.total_mib, gpu.used_mib, gpu.exclusive_process) == (16 * 1024, 3, False)


@pytest.mark.parametrize(
    "failure",
    [
        nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED),
        nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND),  # a driver too old for the v3 call
        nvml_error(pynvml.NVML_ERROR_NO_PERMISSION),
        lambda: None,  # not a list
        lambda: [SimpleNamespace(usedGpuMemory=1)],  # an item without a pid
    ],
)
def test_nvml_process_query_failure_leaves_processes_unknown(failure: Callable[[], Any]) -> None:
    gpu = read_one(StandIn(failure, mode=pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS))
    assert gpu == GpuInfo(0, "NVIDIA Test", "GPU-t", 16 * 1024, 3, (), True)


@pytest.mark.parametrize(
    ("mode", "exclusive"),
    [
        (pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS, True),
        (pynvml.NVML_COMPUTEMODE_DEFAULT, False),
        (pynvml.NVML_COMPUTEMODE_PROHIBITED, False),
        (nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED), False),
        (nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST), False),
    ],
)
def test_nvml_compute_mode(mode: Any, exclusive: bool) -> None:
    gpu = read_one(StandIn([proc(5, MIB)], mode=mode))
    assert (gpu.exclusive_process, gpu.processes, gpu.used_mib) == (exclusive, (GpuProcess(5, 1),), 3)


def test_nvml_module_without_the_new_functions() -> None:
    """A binding (or stand-in) that lacks them still reads the memory."""

    class Old(StandIn):
        nvmlDeviceGetComputeRunningProcesses = None  # type: ignore[assignment]
        nvmlDeviceGetComputeMode = None  # type: ignore[assignment]

    assert read_one(Old()) == GpuInfo(0, "NVIDIA Test", "GPU-t", 16 * 1024, 3)


# --- describe_process --------------------------------------------------------------------------------


def shown(args: list[str]) -> str:
    text = " ".join(" ".join(args).split())
    return text if len(text) <= 80 else text[:77] + "..."


def test_describe_this_process() -> None:
    info = describe_process(os.getpid())
    assert info == ProcessInfo(
        os.getpid(), pwd.getpwuid(os.getuid()).pw_name, shown(psutil.Process().cmdline()), os.getsid(0)
    )
    assert info.session is not None and info.command != "?"


def test_describe_long_command_line_is_cut() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "a\nb", "x" * 200])
    try:
        # Popen returns while the kernel may still be setting up the new program: its command
        # line shows a moment later.
        wait_for(lambda: psutil.Process(child.pid).cmdline(), what="the child's command line")
        info = describe_process(child.pid)
    finally:
        child.kill()
        child.wait()
    assert info.command == shown([sys.executable, "-c", "import time; time.sleep(30)", "a b", "x" * 200])
    assert len(info.command) == 80 and info.command.endswith("...") and "\n" not in info.command


def test_describe_zombie_falls_back_to_its_name() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.001)
        info = describe_process(pid)
    finally:
        os.waitpid(pid, 0)
    comm = Path("/proc/self/comm").read_text().strip()
    me = pwd.getpwuid(os.getuid()).pw_name
    assert (info.user, info.command, info.session) == (me, f"[{comm}]", os.getsid(0))


def test_describe_missing_pid() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in (pid_max + 1, 0, -1, 1 << 40):  # 0 must not describe this process, 1 << 40 overflows getsid
        assert describe_process(pid) == ProcessInfo(pid, "?", "?", None)


@contextmanager
def child_as(real: int, effective: int) -> Iterator[int]:
    """A forked child that has set its real and effective uid and waits until told to exit."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            signal.alarm(10)  # never outlive a test that went wrong
            os.close(ready_r)
            os.close(done_w)  # so that the parent closing its end ends the read below
            os.setresuid(real, effective, effective)
            os.write(ready_w, b"x")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"x", "the child could not change its uid"
        yield pid
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def unnamed_uid() -> int:
    for uid in range(54321, 54421):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    pytest.skip("no unnamed uid found")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a child under another uid")
@pytest.mark.parametrize("case", ["nobody", "real uid only", "uid without a name"])
def test_describe_other_users_process(case: str) -> None:
    real = unnamed_uid() if case == "uid without a name" else 65534
    effective = 0 if case == "real uid only" else real  # /proc/PID is owned by the effective uid
    expected = str(real) if case == "uid without a name" else "nobody"
    with child_as(real, effective) as pid:
        info = describe_process(pid)
    assert info == ProcessInfo(pid, expected, shown(psutil.Process().cmdline()), os.getsid(0))
