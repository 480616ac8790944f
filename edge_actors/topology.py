"""Which rings an instance has: their names, record layouts, sizes and consumers.

Every process derives the same answer from the config, so a ring spec that
travels over a control pipe is just ``{"name", "kind"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_actors.records import (
    EVENT_DTYPE,
    PROCESS_DTYPE,
    SYSTEM_DTYPE,
    model_dtype,
    payload_dtype,
)
from edge_actors.ring import round_capacity

if TYPE_CHECKING:
    from edge_actors.config import Config

#: Consumer line of each reading worker in a ring header.
UPLOADER = 0
DRIFT = 1

#: Ring kinds, and the outbox stream each one feeds.
STREAM_OF_KIND = {
    "system": "system",
    "procs": "processes",
    "events": "events",
    "lane": "model",
    "payload": "payload",
}
_SUFFIX = {"system": "sys", "procs": "proc", "events": "evt"}
MAX_LANES = 999
#: Smallest lane, whatever ``model_logging.buffer_size`` says. A reader asleep
#: when a burst starts is woken by the doorbell after half a lane (doorbell.py);
#: the other half must hold what the producer writes until the reader runs and
#: catches up. ``EdgeMonitor`` logging at full speed writes ~40k records/s on a
#: Raspberry-Pi-class core, and a woken uploader can take ~0.2 s (scheduling on a
#: loaded box plus one outbox transaction in progress): 8192 records per half.
LANE_FLOOR = 16384
#: Smallest payload ring: ``EdgeMonitor`` writes at most one payload per model
#: record and two model records per prediction, so half the lane floor covers the
#: same burst (``model_logging.payload_capacity`` never shrinks it below that).
PAYLOAD_FLOOR = LANE_FLOOR // 2


def prefix(instance: str) -> str:
    """Name prefix of every segment of ``instance`` (for stale-segment cleanup)."""
    return f"ea_{instance}_"


def ring_name(instance: str, kind: str, index: int = 0) -> str:
    """Segment name of a ring; at most 30 characters for instance names <= 16."""
    if kind == "lane":
        return f"{prefix(instance)}l{index}"
    if kind == "payload":
        return f"{prefix(instance)}p{index}"
    return prefix(instance) + _SUFFIX[kind]


def parse_name(instance: str, name: str) -> tuple[str, int] | None:
    """(kind, index) of a segment name of this instance, or None if it is not one of ours."""
    pre = prefix(instance)
    if not name.startswith(pre):
        return None
    rest = name[len(pre) :]
    for kind, suffix in _SUFFIX.items():
        if rest == suffix:
            return kind, 0
    if rest[:1] in ("l", "p") and rest[1:].isdigit():
        return ("lane" if rest[0] == "l" else "payload"), int(rest[1:])
    return None


@dataclass(frozen=True)
class RingSpec:
    """One ring as the workers need to know it."""

    name: str
    kind: str
    index: int = 0

    @property
    def stream(self) -> str:
        """The outbox stream this ring's records go to."""
        return STREAM_OF_KIND[self.kind]

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the control pipe."""
        return {"name": self.name, "kind": self.kind, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RingSpec:
        """Inverse of :meth:`as_dict`."""
        return cls(str(d["name"]), str(d["kind"]), int(d.get("index", 0)))


def n_model_values(cfg: Config) -> int:
    """Values per model record: inputs then outputs of the widest model (at least one slot)."""
    from edge_actors.lanemodel import lane_width

    return lane_width(cfg)


def dtype_for(kind: str, cfg: Config) -> np.dtype[Any]:
    """Record dtype of a ring kind under this config."""
    if kind == "system":
        return SYSTEM_DTYPE
    if kind == "procs":
        return PROCESS_DTYPE
    if kind == "events":
        return EVENT_DTYPE
    if kind == "lane":
        return model_dtype(n_model_values(cfg))
    if kind == "payload":
        return payload_dtype(cfg.model_logging.payload_slot_bytes)
    raise ValueError(f"unknown ring kind {kind!r}")


def capacity_for(kind: str, cfg: Config) -> int:
    """Slots of a ring kind: sized from the config, power of two.

    ``system.max_memory_buffer_mb`` bounds the system ring (a few thousand
    samples is hours of history at the default interval, and every slot is
    resident shared memory on a small box).
    """
    if kind == "lane":
        return round_capacity(cfg.model_logging.buffer_size, floor=LANE_FLOOR)
    if kind == "payload":
        return round_capacity(cfg.model_logging.payload_capacity, floor=PAYLOAD_FLOOR)
    if kind == "events":
        return 4096
    if kind == "procs":
        return 8192
    slot = SYSTEM_DTYPE.itemsize + 8
    by_budget = int(cfg.system.max_memory_buffer_mb * 2**20 // slot)
    cap = 1 << max(6, min(by_budget, 4096).bit_length() - 1)
    return cap


def consumers_for(kind: str) -> int:
    """Consumer lines: the uploader reads every ring, the drift worker the lanes too."""
    return 2 if kind == "lane" else 1
