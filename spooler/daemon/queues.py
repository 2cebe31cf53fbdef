"""Named queues: jobs queued with ``--queue NAME`` take slots of their own, so a CPU queue runs
while the GPU queue's slots are full.  Queues share the GPUs (and the order of the one job
list); only slots are counted per queue.

A queue is a small named object on purpose: settings that belong to one queue (where its jobs
run, say) can join ``slots`` here without touching the scheduler.  The queue without a name,
``default``, is the daemon's own ``-S`` (``Settings.slots``); the others are kept in the
settings record, so their slots survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT = "default"


@dataclass
class Queue:
    name: str
    slots: int = 1  # a queue springs into being with one slot when first named

    def to_record(self) -> dict[str, Any]:
        return {"slots": self.slots}

    @classmethod
    def from_record(cls, name: str, record: Any) -> Queue | None:
        """None for a record this version cannot read (it is dropped, not fatal)."""
        if not isinstance(record, dict):
            return None
        slots = record.get("slots", 1)
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 0:
            return None
        return cls(name, slots)


def queue_records(queues: dict[str, Queue]) -> dict[str, dict[str, Any]]:
    return {name: queue.to_record() for name, queue in queues.items()}


def queues_from_records(record: Any) -> dict[str, Queue]:
    if not isinstance(record, dict):
        return {}
    found = {str(name): Queue.from_record(str(name), value) for name, value in record.items()}
    return {name: queue for name, queue in found.items() if queue is not None}
