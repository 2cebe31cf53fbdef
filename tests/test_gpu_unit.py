"""GPUs without a GPU: the fake inventory, NVML error wrapping, parsing and GPU placement."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spooler.cli.sizes import parse_size
from spooler.daemon.gpus.inventory import (
    FakeInventory,
    GpuError,
    GpuInfo,
    NoGpus,
    NvmlInventory,
    open_inventory,
    parse_visible,
)
from spooler.daemon.gpus.placement import Holder, choose_gpus, describe

GIB = 1024


def gpu(index: int, total: int = 24 * GIB, used: int = 0) -> GpuInfo:
    return GpuInfo(index, "Test GPU", f"GPU-test-{index}", total, used)


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# --- FakeInventory -------------------------------------------------------------------------------


def test_fake_reads_defaults_and_rereads(tmp_path: Path) -> None:
    path = write(
        tmp_path / "gpus.json", [{"total_mib": 1000, "used_mib": 10}, {"total_mib": 2000, "used_mib": 0}]
    )
    inv = FakeInventory(str(path))
    assert inv.kind == "fake"
    assert inv.read() == [
        GpuInfo(0, "Fake GPU", "GPU-fake-0", 1000, 10),
        GpuInfo(1, "Fake GPU", "GPU-fake-1", 2000, 0),
    ]
    assert inv.read()[0].free_mib == 990
    write(path, [{"total_mib": 1000, "used_mib": 900, "name": "A100", "uuid": "GPU-x"}])
    assert inv.read() == [GpuInfo(0, "A100", "GPU-x", 1000, 900)]
    write(path, [])
    assert inv.read() == []
    inv.close()


def test_fake_relative_path_is_fixed_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "gpus.json", [{"total_mib": 1, "used_mib": 1}])
    monkeypatch.chdir(tmp_path)
    inv = FakeInventory("gpus.json")
    monkeypatch.chdir("/")
    assert len(inv.read()) == 1


def test_fake_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    inv = FakeInventory(str(path))
    with pytest.raises(GpuError, match="cannot read") as caught:
        inv.read()
    assert str(path) in str(caught.value)
    write(path, [{"total_mib": 5, "used_mib": 0}])
    assert inv.read()[0].total_mib == 5  # recovers once the file exists
    path.unlink()
    with pytest.raises(GpuError):
        inv.read()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "not valid JSON"),
        ("[{", "not valid JSON"),
        (b"\xff\xfe[]", "not valid JSON"),
        ("[" * 100000 + "]" * 100000, "not valid JSON"),
        ({"total_mib": 1, "used_mib": 0}, "expected a JSON list"),
        ("null", "expected a JSON list"),
        ([1], "GPU 0: expected an object, got 1"),
        ([{"total_mib": 1, "used_mib": 0}, []], "GPU 1: expected an object"),
        ([{"used_mib": 0}], "GPU 0: total_mib is missing"),
        ([{"total_mib": 1}], "GPU 0: used_mib is missing"),
        ([{"total_mib": "24000", "used_mib": 0}], 'total_mib must be an integer >= 0, got "24000"'),
        ([{"total_mib": 24000.0, "used_mib": 0}], "total_mib must be an integer >= 0, got 24000.0"),
        ([{"total_mib": True, "used_mib": 0}], "total_mib must be an integer >= 0, got true"),
        ([{"total_mib": None, "used_mib": 0}], "total_mib must be an integer >= 0, got null"),
        ([{"total_mib": -1, "used_mib": 0}], "total_mib must be an integer >= 0, got -1"),
        ([{"total_mib": 10, "used_mib": -1}], "used_mib must be an integer >= 0, got -1"),
        ([{"total_mib": 10, "used_mib": False}], "used_mib must be an integer >= 0, got false"),
        ([{"total_mib": 10, "used_mib": 11}], "GPU 0: used_mib 11 is more than total_mib 10"),
        ([{"total_mib": 10, "used_mib": 0, "name": 3}], "GPU 0: name must be a string, got 3"),
        ([{"total_mib": 10, "used_mib": 0, "uuid": None}], "GPU 0: uuid must be a string, got null"),
        ([{"total_mib": 10, "used_mib": 0, "used_mb": 1}], "GPU 0: unknown field 'used_mb'"),
        ([{"total_mib": 1, "used_mib": 0, "name": "x" * 100}, 1], "GPU 1: expected an object"),
        ([{"total_mib": 10, "used_mib": 0, "name": ["x" * 100]}], "..."),
    ],
)
def test_fake_invalid_file(tmp_path: Path, content: Any, reason: str) -> None:
    path = tmp_path / "gpus.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write(path, content)
    with pytest.raises(GpuError) as caught:
        FakeInventory(str(path)).read()
    message = str(caught.value)
    assert message.startswith(f"TS_FAKE_GPUS file {path}: ")
    assert reason in message
    assert "\n" not in message and len(message) < 300


def test_fake_zero_sized_gpu_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "gpus.json", [{"total_mib": 0, "used_mib": 0}])
    assert FakeInventory(str(path)).read() == [GpuInfo(0, "Fake GPU", "GPU-fake-0", 0, 0)]


# --- open_inventory and NoGpus ---------------------------------------------------------------------


def test_open_inventory_fake(tmp_path: Path) -> None:
    path = write(tmp_path / "gpus.json", [{"total_mib": 10, "used_mib": 0}])
    inv = open_inventory({"TS_FAKE_GPUS": str(path)})
    assert inv.kind == "fake"
    assert [g.index for g in inv.read()] == [0]


def test_open_inventory_fake_missing_file_does_not_raise_until_read(tmp_path: Path) -> None:
    inv = open_inventory({"TS_FAKE_GPUS": str(tmp_path / "nope.json")})
    assert inv.kind == "fake"
    with pytest.raises(GpuError, match=r"nope\.json"):
        inv.read()


def test_open_inventory_without_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """What this GPU-less machine sees; forced so that it also holds where a GPU exists."""

    def no_driver() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    for env in ({}, {"TS_FAKE_GPUS": ""}):
        inv = open_inventory(env)
        assert inv.kind == "none"
        with pytest.raises(GpuError, match=r"^no NVIDIA driver: NVML: Driver Not Loaded$"):
            inv.read()
        inv.close()


def test_open_inventory_on_this_machine_never_raises() -> None:
    inv = open_inventory({})
    try:
        assert inv.kind in ("nvml", "none")
        if inv.kind == "none":
            assert isinstance(inv, NoGpus) and inv.reason.startswith("no NVIDIA driver: ")
    finally:
        inv.close()


def test_open_inventory_without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes ``import pynvml`` raise ImportError
    inv = open_inventory({})
    assert inv.kind == "none"
    with pytest.raises(GpuError, match="no NVIDIA driver: cannot import pynvml"):
        inv.read()


def test_no_gpus() -> None:
    inv = NoGpus("no NVIDIA driver: test")
    assert inv.kind == "none"
    with pytest.raises(GpuError, match=r"^no NVIDIA driver: test$"):
        inv.read()
    inv.close()


# --- NvmlInventory, with pynvml's functions replaced ---------------------------------------------


class FakeNvml:
    """Stands in for the pynvml functions NvmlInventory calls; records init and shutdown."""

    def __init__(self, devices: list[tuple[Any, Any, int, int]]) -> None:
        self.devices = devices  # (name, uuid, total bytes, used bytes)
        self.calls: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex"):
            monkeypatch.setattr(pynvml, name, getattr(self, name))
        for name in ("nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetMemoryInfo"):
            monkeypatch.setattr(pynvml, name, getattr(self, name))

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> Any:
        return self.devices[handle][0]

    def nvmlDeviceGetUUID(self, handle: int) -> Any:
        return self.devices[handle][1]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        _, _, total, used = self.devices[handle]
        return SimpleNamespace(total=total, used=used, free=total - used)


MIB = 1 << 20


def test_nvml_reads_every_time_and_inits_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(
        [(b"NVIDIA H100", b"GPU-aaa", 80 * GIB * MIB, 1 * MIB), ("NVIDIA L4", "GPU-bbb", 24 * GIB * MIB, 0)]
    )
    fake.install(monkeypatch)
    inv = NvmlInventory()
    assert inv.kind == "nvml"
    assert inv.read() == [
        GpuInfo(0, "NVIDIA H100", "GPU-aaa", 80 * GIB, 1),
        GpuInfo(1, "NVIDIA L4", "GPU-bbb", 24 * GIB, 0),
    ]
    fake.devices[1] = ("NVIDIA L4", "GPU-bbb", 24 * GIB * MIB, 5 * GIB * MIB)
    assert inv.read()[1].used_mib == 5 * GIB
    inv.close()
    inv.close()
    assert fake.calls == ["init", "shutdown"]


def test_nvml_rounds_used_up_and_total_down(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml([("g", "u", 10 * MIB + 5, 3 * MIB + 1), ("g", "u", 10 * MIB + 5, 10 * MIB + 5)]).install(
        monkeypatch
    )
    gpus = NvmlInventory().read()
    assert (gpus[0].total_mib, gpus[0].used_mib) == (10, 4)
    assert (gpus[1].total_mib, gpus[1].used_mib, gpus[1].free_mib) == (10, 10, 0)


def nvml_error(code: int) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise pynvml.NVMLError(code)

    return fail


def test_nvml_init_error_becomes_gpu_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    with pytest.raises(GpuError, match=r"^NVML Shared Library Not Found$") as caught:
        NvmlInventory()
    assert isinstance(caught.value.__cause__, pynvml.NVMLError)


@pytest.mark.parametrize(
    ("function", "error", "message"),
    [
        ("nvmlDeviceGetCount", nvml_error(pynvml.NVML_ERROR_UNINITIALIZED), "NVML: Uninitialized"),
        ("nvmlDeviceGetHandleByIndex", nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST), "NVML: GPU is lost"),
        ("nvmlDeviceGetName", nvml_error(pynvml.NVML_ERROR_NO_PERMISSION), "NVML: Insufficient Permissions"),
        ("nvmlDeviceGetUUID", nvml_error(pynvml.NVML_ERROR_UNKNOWN), "NVML: Unknown Error"),
        ("nvmlDeviceGetMemoryInfo", nvml_error(pynvml.NVML_ERROR_TIMEOUT), "NVML: Timeout"),
        (
            "nvmlDeviceGetMemoryInfo",
            nvml_error(987654),
            "NVML Error with code 987654",
        ),  # a code the binding does not know
        ("nvmlDeviceGetMemoryInfo", lambda handle: None, "NVML: 'NoneType' object has no attribute"),
        ("nvmlDeviceGetCount", lambda: "many", "NVML: invalid literal"),
        (
            "nvmlDeviceGetName",
            lambda handle: (_ for _ in ()).throw(OSError("line 1\nline 2")),
            "NVML: line 1 line 2",
        ),
    ],
)
def test_nvml_read_errors_become_gpu_errors(
    monkeypatch: pytest.MonkeyPatch, function: str, error: Any, message: str
) -> None:
    FakeNvml([("g", "u", 10 * MIB, 0)]).install(monkeypatch)
    inv = NvmlInventory()
    monkeypatch.setattr(pynvml, function, error)
    with pytest.raises(GpuError) as caught:
        inv.read()
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
    assert not isinstance(caught.value, pynvml.NVMLError)


def test_nvml_shutdown_errors_are_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml([]).install(monkeypatch)
    inv = NvmlInventory()
    assert inv.read() == []
    monkeypatch.setattr(pynvml, "nvmlShutdown", nvml_error(pynvml.NVML_ERROR_UNINITIALIZED))
    inv.close()


def test_nvml_accepts_a_module_object() -> None:
    fake = FakeNvml([("g", "GPU-1", 2 * MIB, MIB)])
    inv = NvmlInventory(fake)
    assert inv.read() == [GpuInfo(0, "g", "GPU-1", 2, 1)]
    inv.close()
    assert fake.calls == ["init", "shutdown"]


# --- parse_visible and parse_size ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("0", [0]),
        ("0,1", [0, 1]),
        ("3,1", [3, 1]),
        (" 2 , 0 ", [2, 0]),
        ("1,1,0,1", [1, 0]),
        ("10", [10]),
    ],
)
def test_parse_visible(value: str | None, expected: list[int] | None) -> None:
    assert parse_visible(value) == expected


@pytest.mark.parametrize("value", ["a", "1,,2", "-1", "0,", ",0", "1.5", "+1", "0x1", "1 2", "²", "GPU-abc"])
def test_parse_visible_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="invalid GPU list") as caught:
        parse_visible(value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("20G", 20 * GIB),
        ("20GB", 20 * GIB),
        ("20GiB", 20 * GIB),
        ("20g", 20 * GIB),
        ("20gib", 20 * GIB),
        ("20 GiB", 20 * GIB),
        (" 20G ", 20 * GIB),
        ("512M", 512),
        ("512MB", 512),
        ("512MiB", 512),
        ("512m", 512),
        ("512", 512),
        ("1.5G", 1536),
        ("1.5", 2),
        (".5G", 512),
        ("1.G", 1024),
        ("2048K", 2),
        ("1K", 1),
        ("1kib", 1),
        ("1T", 1024 * 1024),
        ("0.0001M", 1),
        ("007", 7),
    ],
)
def test_parse_size(text: str, mib: int) -> None:
    assert parse_size(text) == mib


@pytest.mark.parametrize(
    "text",
    [
        "",
        "G",
        "abc",
        "0",
        "0G",
        "0.0",
        "-1",
        "-1G",
        "20X",
        "20B",
        "20iB",
        "20 G B",
        "1e3",
        "inf",
        "nan",
        "1,5G",
        "²",
    ],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["", "M", "MiB", "G", "GB", "gib"]))
def test_parse_size_integers(number: int, unit: str) -> None:
    factor = GIB if unit.lower().startswith("g") else 1
    assert parse_size(f"{number}{unit}") == number * factor


# --- choose_gpus -----------------------------------------------------------------------------------


def ex(job_id: int) -> Holder:
    return Holder(job_id, None)


def sh(job_id: int, mem: int) -> Holder:
    return Holder(job_id, mem)


FOUR = [gpu(0), gpu(1), gpu(2), gpu(3)]


def test_single_gpu_jobs_spread_over_free_gpus() -> None:
    holders: dict[int, list[Holder]] = {}
    for job_id in range(4):
        chosen = choose_gpus(FOUR, count=1, free_perc=90, holders=holders)
        assert isinstance(chosen, list)
        assert chosen == [job_id]  # all equally free: lowest index that nobody holds
        holders[chosen[0]] = [ex(job_id)]
    reason = choose_gpus(FOUR, count=1, free_perc=90, holders=holders)
    assert (
        reason == "needs 1 GPU, 0 free: GPU 0 held by job 0, GPU 1 held by job 1, "
        "GPU 2 held by job 2, GPU 3 held by job 3"
    )


def test_most_free_memory_wins_then_lowest_index() -> None:
    gpus = [gpu(0, used=500), gpu(1, used=100), gpu(2, used=0), gpu(3, used=0)]
    assert choose_gpus(gpus, count=1, free_perc=50, holders={}) == [2]
    assert choose_gpus(gpus, count=2, free_perc=50, holders={}) == [2, 3]
    assert choose_gpus(gpus, count=3, free_perc=50, holders={}) == [1, 2, 3]
    assert choose_gpus(gpus, count=1, free_perc=50, holders={2: [ex(1)]}) == [3]
    assert choose_gpus(gpus, count=4, free_perc=50, holders={}) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("used", "free_perc", "qualifies"),
    [
        (2400, 90, True),  # exactly 90% free
        (2401, 90, False),
        (0, 100, True),
        (1, 100, False),
        (23999, 1, False),
        (23760, 1, True),  # exactly 1% free
        (24000, 1, False),
    ],
)
def test_threshold_boundary(used: int, free_perc: int, qualifies: bool) -> None:
    result = choose_gpus([gpu(0, total=24000, used=used)], count=1, free_perc=free_perc, holders={})
    if qualifies:
        assert result == [0]
    else:
        free = 24000 - used
        assert result == f"needs 1 GPU, 0 free: GPU 0 below {free_perc}% free ({free}/24000 MiB free)"


def test_visible_restricts_the_choice() -> None:
    assert choose_gpus(FOUR, count=1, free_perc=90, holders={}, visible=[2, 3]) == [2]
    assert choose_gpus(FOUR, count=2, free_perc=90, holders={2: [ex(5)]}, visible=[3, 2, 1]) == [1, 3]
    assert choose_gpus(FOUR, count=1, free_perc=90, holders={}, visible=[]) == (
        "needs 1 GPU, none of the visible GPUs () exists"
    )
    assert choose_gpus(FOUR, count=1, free_perc=90, holders={}, visible=[7, 9]) == (
        "needs 1 GPU, none of the visible GPUs (7, 9) exists"
    )
    assert choose_gpus(FOUR, count=3, free_perc=90, holders={}, visible=[0, 1]) == (
        "needs 3 GPUs, 2 free: only 2 GPUs visible"
    )


def test_count_larger_than_qualifying_lists_each_reason() -> None:
    gpus = [gpu(0), gpu(1), gpu(2, total=24000, used=21000), gpu(3)]
    holders = {1: [ex(7)], 3: [sh(8, 1000), sh(9, 1000)]}
    reason = choose_gpus(gpus, count=2, free_perc=90, holders=holders)
    assert reason == (
        "needs 2 GPUs, 1 free: GPU 1 held by job 7, GPU 2 below 90% free (3000/24000 MiB free), "
        "GPU 3 held by jobs 8, 9"
    )
    assert choose_gpus(FOUR, count=5, free_perc=90, holders={}) == "needs 5 GPUs, 4 free: only 4 GPUs"
    assert choose_gpus(FOUR, count=5, free_perc=90, holders={0: [ex(1)]}) == (
        "needs 5 GPUs, 3 free: GPU 0 held by job 1, only 4 GPUs"
    )
    assert choose_gpus([], count=1, free_perc=90, holders={}) == "needs 1 GPU, no GPU found"


def test_shared_jobs_pack_by_promised_memory() -> None:
    gpus = [gpu(0, total=24 * GIB, used=2 * GIB)]  # 22G free
    assert choose_gpus(gpus, count=1, free_perc=90, holders={}, mem_mib=10 * GIB) == [0]
    one = {0: [sh(1, 10 * GIB)]}
    assert choose_gpus(gpus, count=1, free_perc=90, holders=one, mem_mib=10 * GIB) == [0]
    two = {0: [sh(1, 10 * GIB), sh(2, 10 * GIB)]}
    assert choose_gpus(gpus, count=1, free_perc=90, holders=two, mem_mib=10 * GIB) == (
        "needs 1 GPU with 10240 MiB, 0 fit: "
        "GPU 0 has 2048 MiB available (22528 free, 20480 promised to jobs 1, 2)"
    )
    assert choose_gpus(gpus, count=1, free_perc=90, holders=two, mem_mib=2 * GIB) == [0]  # exactly fits


def test_shared_ignores_threshold_and_needs_memory() -> None:
    busy = [gpu(0, total=24000, used=20000)]  # 16% free: not free for an exclusive job
    assert choose_gpus(busy, count=1, free_perc=90, holders={}, mem_mib=4000) == [0]
    assert choose_gpus(busy, count=1, free_perc=90, holders={}, mem_mib=4001) == (
        "needs 1 GPU with 4001 MiB, 0 fit: GPU 0 has 4000 MiB available (4000 free)"
    )


def test_exclusive_and_shared_holders_block_each_other() -> None:
    gpus = [gpu(0), gpu(1)]
    assert choose_gpus(gpus, count=1, free_perc=90, holders={0: [ex(3)]}, mem_mib=GIB) == [1]
    assert choose_gpus(gpus, count=1, free_perc=90, holders={0: [ex(3)], 1: [ex(4)]}, mem_mib=GIB) == (
        "needs 1 GPU with 1024 MiB, 0 fit: GPU 0 held exclusively by job 3, GPU 1 held exclusively by job 4"
    )
    assert choose_gpus(gpus, count=1, free_perc=90, holders={0: [sh(3, 1)]}) == [1]
    assert choose_gpus(gpus, count=1, free_perc=90, holders={0: [sh(3, 1)], 1: [sh(4, 1)]}) == (
        "needs 1 GPU, 0 free: GPU 0 held by job 3, GPU 1 held by job 4"
    )


def test_shared_jobs_spread_by_effective_free_memory() -> None:
    gpus = [gpu(0), gpu(1), gpu(2)]
    holders: dict[int, list[Holder]] = {}
    placed = []
    for job_id in range(6):
        chosen = choose_gpus(gpus, count=1, free_perc=90, holders=holders, mem_mib=8 * GIB)
        assert isinstance(chosen, list)
        holders.setdefault(chosen[0], []).append(sh(job_id, 8 * GIB))
        placed.append(chosen[0])
    assert placed == [0, 1, 2, 0, 1, 2]
    for index in range(3):
        assert choose_gpus(gpus, count=1, free_perc=90, holders=holders, mem_mib=8 * GIB) == [index]
        holders[index].append(sh(99, 8 * GIB))
    assert isinstance(choose_gpus(gpus, count=1, free_perc=90, holders=holders, mem_mib=1), str)


def test_shared_multi_gpu_request() -> None:
    gpus = [gpu(0), gpu(1), gpu(2)]
    holders = {1: [sh(1, 20 * GIB)]}
    assert choose_gpus(gpus, count=2, free_perc=90, holders=holders, mem_mib=10 * GIB) == [0, 2]
    assert choose_gpus(gpus, count=3, free_perc=90, holders=holders, mem_mib=10 * GIB) == (
        "needs 3 GPUs with 10240 MiB, 2 fit: "
        "GPU 1 has 4096 MiB available (24576 free, 20480 promised to job 1)"
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"count": 0}, {"count": -1}, {"free_perc": 0}, {"free_perc": 101}, {"mem_mib": 0}, {"mem_mib": -5}],
)
def test_choose_rejects_bad_requests(kwargs: dict[str, int]) -> None:
    args: dict[str, Any] = {"count": 1, "free_perc": 90, "holders": {}, **kwargs}
    with pytest.raises(ValueError):
        choose_gpus(FOUR, **args)


def test_choose_does_not_mutate_its_inputs() -> None:
    holders = {0: [ex(1)]}
    visible = [0, 1]
    gpus = list(FOUR)
    choose_gpus(gpus, count=1, free_perc=90, holders=holders, visible=visible)
    assert holders == {0: [ex(1)]} and visible == [0, 1] and gpus == FOUR


def test_inventory_errors_propagate_to_the_caller(tmp_path: Path) -> None:
    """The daemon's loop reads, then chooses; a read failure reaches it as GpuError, not a crash."""
    path = write(tmp_path / "gpus.json", [{"total_mib": 100, "used_mib": 0}])
    inv = FakeInventory(str(path))
    assert choose_gpus(inv.read(), count=1, free_perc=90, holders={}) == [0]
    write(path, "{broken")
    with pytest.raises(GpuError, match="not valid JSON"):
        choose_gpus(inv.read(), count=1, free_perc=90, holders={})


holder_lists = st.lists(
    st.builds(Holder, st.integers(1, 50), st.one_of(st.none(), st.integers(1, 30000))), max_size=3
)


@given(
    totals=st.lists(st.tuples(st.integers(0, 30000), st.integers(0, 30000)), max_size=6),
    count=st.integers(1, 4),
    free_perc=st.integers(1, 100),
    holder_map=st.dictionaries(st.integers(0, 6), holder_lists, max_size=6),
    visible=st.one_of(st.none(), st.lists(st.integers(0, 7), unique=True)),
    mem_mib=st.one_of(st.none(), st.integers(1, 30000)),
)
def test_choose_never_returns_a_gpu_that_does_not_qualify(
    totals: list[tuple[int, int]],
    count: int,
    free_perc: int,
    holder_map: dict[int, list[Holder]],
    visible: list[int] | None,
    mem_mib: int | None,
) -> None:
    gpus = [gpu(i, total=max(a, b), used=min(a, b)) for i, (a, b) in enumerate(totals)]

    def qualifies(g: GpuInfo) -> bool:
        held = holder_map.get(g.index, [])
        if visible is not None and g.index not in visible:
            return False
        if mem_mib is None:
            return not held and g.free_mib * 100 >= free_perc * g.total_mib
        if any(h.mem_mib is None for h in held):
            return False
        return g.free_mib - sum(h.mem_mib or 0 for h in held) >= mem_mib

    good = [g.index for g in gpus if qualifies(g)]
    result = choose_gpus(
        gpus, count=count, free_perc=free_perc, holders=holder_map, visible=visible, mem_mib=mem_mib
    )
    if len(good) >= count:
        assert isinstance(result, list)
        assert len(result) == count == len(set(result))
        assert result == sorted(result)
        assert set(result) <= set(good)
    else:
        assert isinstance(result, str)
        assert result.startswith(f"needs {count} GPU") and "\n" not in result


# --- describe --------------------------------------------------------------------------------------


def test_describe() -> None:
    gpus = [gpu(0), gpu(1, total=1000, used=500), gpu(2), gpu(3)]
    rows = describe(gpus, 90, {2: [ex(4)], 3: [sh(5, 10), sh(6, 10)]}, visible=[0, 1, 2])
    assert rows[0] == {
        "index": 0,
        "name": "Test GPU",
        "uuid": "GPU-test-0",
        "total_mib": 24 * GIB,
        "used_mib": 0,
        "exclusive_process": False,
        "free_mib": 24 * GIB,
        "visible": True,
        "free": True,
        "held_by": [],
    }
    assert [(r["visible"], r["free"], r["held_by"], r["free_mib"]) for r in rows[1:]] == [
        (True, False, [], 500),
        (True, False, [4], 24 * GIB),
        (False, False, [5, 6], 24 * GIB),
    ]
    assert [r["visible"] for r in describe(gpus, 90, {}, None)] == [True] * 4
    assert [r["free"] for r in describe(gpus, 50, {}, None)] == [True] * 4
    json.dumps(rows)
