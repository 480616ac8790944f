"""The worker roster: the one list of the agent's worker processes.

Everything that names workers reads it: the config (``workers.<name>`` keys,
their memory defaults and help), the supervisor (start and stop order), the
forked child (which class to import) and ``check-config``'s summary. Adding
a worker is one row here plus its class.

The order is the stop order, and also the start order: data producers first,
the uploader (which flushes the outbox when asked to stop) last.

Imported by the config, hence by the ML process: the standard library only;
a worker's class is imported by :meth:`WorkerSpec.load` in that worker's
process alone, so the drift code stays in the drift worker and boto3 in the
uploader.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["ROSTER", "WORKER_NAMES", "WorkerSpec", "worker_spec"]


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: its name, default memory budget, class and description."""

    #: Name in the config (``workers.<name>``), in status and in logs.
    name: str
    #: Default ``workers.<name>.memory_limit_mb`` (unique memory, MB).
    memory_limit_mb: float
    #: ``module:Class`` of the worker, imported lazily by :meth:`load`.
    target: str
    #: One line for the configuration reference.
    doc: str
    #: Niceness added in the worker's process. The drift worker yields the CPU
    #: to the uploader: when both want more than the box has, a late drift check
    #: costs nothing and a late ring read loses records (issue 10's seed loop
    #: overran its lane while drift and uploader shared one core).
    nice: int = 0

    def load(self) -> type:
        """Import and return the worker's class (call it in the worker's process only)."""
        module, _, cls_name = self.target.partition(":")
        cls: type = getattr(importlib.import_module(module), cls_name)
        return cls


#: Every worker, in stop order (which is also the start order).
ROSTER: tuple[WorkerSpec, ...] = (
    WorkerSpec(
        "sampler", 40.0, "edge_actors.workers.sampler:SamplerWorker", "System-health sampler."
    ),
    WorkerSpec("drift", 80.0, "edge_actors.workers.drift:DriftWorker", "Drift detector.", nice=5),
    WorkerSpec(
        "uploader",
        80.0,
        "edge_actors.workers.uploader:UploaderWorker",
        "Outbox writer and uploader.",
    ),
)
#: The workers' names, in stop order.
WORKER_NAMES: tuple[str, ...] = tuple(w.name for w in ROSTER)

_BY_NAME = {w.name: w for w in ROSTER}


def worker_spec(name: str) -> WorkerSpec:
    """The roster row of the worker called ``name``; ``KeyError`` for any other name."""
    return _BY_NAME[name]
