"""GPUs in the daemon: which ones we may use, who holds them, and placing waiting jobs.

The inventory (NVML, fake or none) is opened once at start.  A GPU is reserved at the moment a
job is placed and stays held until the job ends, whatever NVML reports in between: that is what
keeps a burst of jobs from landing on a GPU whose memory has not shown as used yet.  Across
daemons (every user's, on a shared server) the same holds through machine-wide leases
(``leases``): a job's GPUs are leased when it starts, the launcher keeps the leases open until
it ends, and no daemon gives out a GPU another one holds a lease on.  NVML is polled only while
some job waits for GPUs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from spooler.daemon.config import Settings
from spooler.daemon.gpus.inventory import GpuError, GpuInfo, describe_process, open_inventory, parse_visible
from spooler.daemon.gpus.leases import Lease, LeaseDir, LeaseError, default_lease_dir
from spooler.daemon.gpus.placement import GpuPool, Holder, Want, describe
from spooler.jobs import Job
from spooler.protocol import RequestError

log = logging.getLogger("spooler")

DEFAULT_POLL = 1.0


class GpuManager:
    def __init__(
        self, env: Mapping[str, str], settings: Settings, loop: asyncio.AbstractEventLoop, owner: str = ""
    ) -> None:
        self.inventory = open_inventory(env)
        self.settings = settings
        self.loop = loop
        self.daemon_visible = env.get("TS_VISIBLE_DEVICES")
        try:
            self.poll_interval = max(0.05, float(env.get("TS_GPU_POLL", DEFAULT_POLL)))
        except ValueError:
            self.poll_interval = DEFAULT_POLL
        self.ignore_mib = _int(env, "TS_GPU_IGNORE_MIB", 0)
        self._timer: asyncio.TimerHandle | None = None
        self.leases: LeaseDir | None = None
        self.lease_problem = ""
        if self.inventory.kind == "none":
            log.info("GPUs: none usable (%s)", getattr(self.inventory, "reason", ""))
            return
        log.info("GPUs: %s inventory", self.inventory.kind)
        try:
            self.leases = LeaseDir(default_lease_dir(env), owner)
        except LeaseError as exc:
            self.lease_problem = f"off, only this spooler's own reservations count: {exc}"
            log.warning("GPU leases %s", self.lease_problem)

    @property
    def present(self) -> bool:
        return self.inventory.kind != "none"

    def visible(self) -> list[int] | None:
        """TS_VISIBLE_DEVICES of the daemon, or as changed by ``ts --setenv``."""
        overrides = self.settings.env_overrides
        value = overrides.get("TS_VISIBLE_DEVICES", self.daemon_visible)  # None there: --unsetenv
        try:
            return parse_visible(value)
        except ValueError as exc:
            log.warning("ignoring TS_VISIBLE_DEVICES: %s", exc)
            return None

    def read(self) -> list[GpuInfo]:
        return self.inventory.read()

    def validate(self, count: int, indices: list[int] | None) -> None:
        """Refuse at enqueue what could never run; accept when NVML cannot tell right now."""
        if not count and not indices:
            return
        if not self.present:
            raise RequestError("invalid", f"no GPU can be used here: {getattr(self.inventory, 'reason', '')}")
        try:
            gpus = self.read()
        except GpuError:
            return  # the job waits, showing why, until NVML answers again
        existing = {g.index for g in gpus}
        if indices:
            unknown = [i for i in indices if i not in existing]
            if unknown:
                raise RequestError(
                    "invalid", f"-g: no GPU {', '.join(map(str, unknown))} (GPUs here: {_span(existing)})"
                )
            return
        visible = self.visible()
        usable = [i for i in existing if visible is None or i in visible]
        if count > len(usable):
            where = "visible " if visible is not None else ""
            raise RequestError(
                "invalid", f"-G {count}: only {len(usable)} {where}GPUs here, so it could never run"
            )

    def holders(self, running: Iterable[Job], gpus: Iterable[GpuInfo] = ()) -> dict[int, list[Holder]]:
        """Who holds each GPU: our running jobs, and the leases of other spoolers."""
        held: dict[int, list[Holder]] = {}
        for job in running:
            mem = Want.of(job).mem_mib
            for index in job.assigned_gpus:
                held.setdefault(index, []).append(Holder(job.id, mem, job.deadline()))
        leases = self.leases
        if leases is not None:
            for gpu in gpus:
                try:
                    found = leases.holders(gpu.uuid)
                except ValueError:  # a UUID that cannot name a lease file
                    continue
                for h in found:
                    if h.uid != leases.uid or h.owner != leases.owner:
                        who = f"another spooler (user {h.user})"
                        held.setdefault(gpu.index, []).append(Holder(-1, h.mem_mib, None, who))
        return held

    def lease(self, job: Job, uuids: list[str]) -> list[Lease] | str:
        """Lease the job's GPUs machine-wide (all or none); the reason if another spooler was first."""
        if self.leases is None:
            return []
        mem = Want.of(job).mem_mib
        taken: list[Lease] = []
        for uuid in uuids:
            lease = self.leases.acquire(uuid, mem_mib=mem, job_id=job.id)
            if isinstance(lease, str):
                for earlier in taken:
                    earlier.release()
                return f"a GPU was just leased elsewhere: {lease}"
            taken.append(lease)
        return taken

    def pool(self, running: Iterable[Job]) -> GpuPool | str:
        """The GPUs for one scheduling pass (NVML read once), or why they cannot be read."""
        try:
            gpus = self.read()
        except GpuError as exc:
            return f"GPUs cannot be read: {exc}"
        return GpuPool(
            gpus,
            free_perc=self.settings.gpu_free_perc,
            holders=self.holders(running, gpus),
            visible=self.visible(),
            ignore_mib=self.ignore_mib,
        )

    def poll(self, waiting: bool, kick: Callable[[], None]) -> None:
        """Re-examine waiting GPU jobs every poll interval, and only while there are some."""
        if waiting and self._timer is None:
            self._timer = self.loop.call_later(self.poll_interval, self._tick, kick)
        elif not waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self, kick: Callable[[], None]) -> None:
        self._timer = None
        kick()

    def status(self, running: Iterable[Job], earmarked: Mapping[int, int] | None = None) -> dict[str, Any]:
        if not self.present:
            return {"kind": "none", "reason": getattr(self.inventory, "reason", ""), "gpus": []}
        try:
            gpus = self.read()
        except GpuError as exc:
            return {"kind": self.inventory.kind, "reason": str(exc), "gpus": []}
        rows = describe(
            gpus,
            self.settings.gpu_free_perc,
            self.holders(running, gpus),
            self.visible(),
            earmarked=earmarked,
            ignore_mib=self.ignore_mib,
        )
        ours = {job.pid for job in running if job.pid}  # each job leads its own session
        for gpu, row in zip(gpus, rows, strict=True):
            row["foreign_processes"] = foreign_processes(gpu, ours)
        leases = self.lease_problem or (f"on, in {self.leases.path}" if self.leases else "")
        return {"kind": self.inventory.kind, "reason": "", "gpus": rows, "leases": leases}

    def close(self) -> None:
        self.poll(False, lambda: None)
        self.inventory.close()


def foreign_processes(gpu: GpuInfo, our_sessions: set[int]) -> list[dict[str, Any]]:
    """The processes using a GPU that this spooler did not start (not in one of its jobs'
    sessions): who blocks the GPU, for ``--gpu_status``."""
    rows = []
    for process in gpu.processes:
        info = describe_process(process.pid)
        if info.session is not None and info.session in our_sessions:
            continue
        rows.append(
            {"pid": process.pid, "used_mib": process.used_mib, "user": info.user, "command": info.command}
        )
    return rows


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return max(0, int(env.get(name, default)))
    except ValueError:
        log.warning("ignoring %s=%r: not a whole number", name, env.get(name))
        return default


def _span(indices: Iterable[int]) -> str:
    ordered = sorted(indices)
    return ", ".join(map(str, ordered)) if ordered else "none"
