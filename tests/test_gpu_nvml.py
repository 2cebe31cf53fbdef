"""The GPU inventory and placement against the real NVML: runs only where an NVIDIA GPU and driver exist."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from spooler.daemon.gpus.inventory import GpuInfo, GpuInventory, open_inventory
from spooler.daemon.gpus.placement import choose_gpus, describe

pytestmark = pytest.mark.gpu


@pytest.fixture
def nvml() -> Iterator[GpuInventory]:
    env = {k: v for k, v in os.environ.items() if k != "TS_FAKE_GPUS"}
    inventory = open_inventory(env)
    if inventory.kind != "nvml":
        reason = getattr(inventory, "reason", inventory.kind)
        inventory.close()
        pytest.skip(f"no NVIDIA GPU here: {reason}")
    yield inventory
    inventory.close()


def test_nvml_reads_every_gpu(nvml: GpuInventory) -> None:
    import pynvml

    gpus = nvml.read()
    assert len(gpus) == pynvml.nvmlDeviceGetCount()
    if not gpus:
        pytest.skip("NVML works but reports no GPU")
    assert [g.index for g in gpus] == list(range(len(gpus)))
    for g in gpus:
        assert isinstance(g, GpuInfo)
        assert isinstance(g.name, str) and g.name
        assert g.uuid.startswith(("GPU-", "MIG-"))
        assert 0 <= g.used_mib <= g.total_mib and g.total_mib > 0
        assert g.free_mib == g.total_mib - g.used_mib
    assert len({g.uuid for g in gpus}) == len(gpus)
    again = nvml.read()  # a second read queries again and sees the same devices
    assert [(g.index, g.uuid, g.total_mib) for g in again] == [(g.index, g.uuid, g.total_mib) for g in gpus]


def test_nvml_matches_nvidia_smi(nvml: GpuInventory) -> None:
    if not shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi is not installed")
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
    )
    assert done.returncode == 0, done.stderr
    smi = [[field.strip() for field in line.split(",")] for line in done.stdout.splitlines() if line.strip()]
    gpus = nvml.read()
    assert [(int(index), uuid) for index, uuid, _ in smi] == [(g.index, g.uuid) for g in gpus]
    for (_, _, total), g in zip(smi, gpus, strict=True):
        assert abs(int(total) - g.total_mib) <= 1  # nvidia-smi rounds MiB its own way


def test_choose_and_describe_on_real_gpus(nvml: GpuInventory) -> None:
    gpus = nvml.read()
    if not gpus:
        pytest.skip("NVML works but reports no GPU")
    rows = describe(gpus, 1, {}, None)
    assert [r["index"] for r in rows] == [g.index for g in gpus]
    chosen = choose_gpus(gpus, count=1, free_perc=1, holders={})
    if any(r["free"] for r in rows):
        assert isinstance(chosen, list) and len(chosen) == 1 and rows[chosen[0]]["free"]
    else:
        assert isinstance(chosen, str)
    too_many = choose_gpus(gpus, count=len(gpus) + 1, free_perc=1, holders={})
    assert isinstance(too_many, str) and f"only {len(gpus)} GPU" in too_many
