"""edge-actors: a small multiprocess agent that monitors ML models on edge devices.

The ML application uses :func:`connect` (or the seed-compatible
``EdgeMonitor``); ``edge-actors run`` starts the supervisor. ``load_config``
is the seed library's (a dict; see ``edge_actors.compat``). Names are
imported lazily so that ``import edge_actors`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EdgeMonitor", "Producer", "__version__", "connect", "load_config"]

if TYPE_CHECKING:
    from edge_actors.compat import load_config
    from edge_actors.monitor import EdgeMonitor
    from edge_actors.producer import Producer, connect


def __getattr__(name: str) -> Any:
    if name in ("connect", "Producer"):
        from edge_actors import producer

        return getattr(producer, name)
    if name == "EdgeMonitor":
        from edge_actors.monitor import EdgeMonitor

        return EdgeMonitor
    if name == "load_config":
        from edge_actors.compat import load_config

        return load_config
    raise AttributeError(f"module 'edge_actors' has no attribute {name!r}")
