"""Named queues: jobs queued with ``--queue NAME`` take slots of their own, so a CPU queue runs
while the GPU queue's slots are full.  Queues share the GPUs (and the order of the one job
list); only slots are counted per queue.

A queue is a small named object on purpose: settings that belong to one queue (where its jobs
run, say) can join ``slots`` here without touching the scheduler.  The queue without a name,
``default``, is the daemon's own ``-S`` (``Settings.slots``); the others are kept in the
settings record, so their slots survive restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spooler.daemon.config_file import QueueConfig

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


def configure(queues: dict[str, Queue], configured: Mapping[str, QueueConfig]) -> bool:
    """The queues of the config file (``[queues.NAME]``, each with its ``slots`` or None) exist,
    with those slots where they are new: a queue's -S, once set, is its own.  True if one was
    added."""
    added = False
    for name, table in configured.items():
        if name != DEFAULT and name not in queues:
            queues[name] = Queue(name, table.slots if table.slots is not None else 1)
            added = True
    return added
