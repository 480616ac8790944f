"""``edge-actors fleet``: which devices of a fleet need attention, from the uploaded objects.

- :mod:`.definitions`: the metrics, one set of SQL for every engine;
- :mod:`.source`: listing and fetching a sink tree or ``s3://bucket/prefix`` by partition;
- :mod:`.duckdb_engine` (default) and a Spark engine run the definitions;
- :mod:`.summary`: the rows -> the summary document (JSON) -> text;
- :mod:`.cli`: the ``fleet summary`` command.

:func:`summarize` ties them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_actors.offline.fleet.definitions import Thresholds, Window
from edge_actors.offline.fleet.source import Selection, open_store, select

__all__ = ["ENGINES", "Thresholds", "Window", "summarize"]

#: Engine name -> ``module:function`` with the signature of :func:`.duckdb_engine.run`.
ENGINES: dict[str, str] = {
    "duckdb": "edge_actors.offline.fleet.duckdb_engine:run",
    "spark": "edge_actors.offline.fleet.spark_engine:run",
}

EngineRun = Callable[[Path, Selection, Window], dict[str, list[dict[str, Any]]]]


def engine_run(name: str) -> EngineRun:
    """The ``run`` function of engine ``name`` (imported only now: DuckDB/pyspark are extras)."""
    import importlib

    module, _, func = ENGINES[name].partition(":")
    fn: EngineRun = getattr(importlib.import_module(module), func)
    return fn


def summarize(
    source: str,
    *,
    since_s: float = 86400.0,
    as_of: float | None = None,
    drift_lookback_s: float = 7 * 86400.0,
    thresholds: Thresholds | None = None,
    engine: str = "duckdb",
    endpoint_url: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """The fleet summary document of ``source`` (see :mod:`.summary` for its layout).

    Args:
        source: ``s3://bucket/prefix`` or a local sink directory.
        since_s: the window: the last ``since_s`` seconds before ``as_of``.
        as_of: the summary's "now" (epoch seconds; default: the clock).
        drift_lookback_s: how far back the events stream is read for drift
            episodes still open (at least the window).
        thresholds: when a device needs attention.
        engine: ``duckdb`` or ``spark``.
        endpoint_url, region: for an S3-compatible store.
    """
    from edge_actors.offline.fleet.summary import build

    until = time.time() if as_of is None else as_of
    window = Window(
        since=until - since_s, until=until, drift_since=until - max(since_s, drift_lookback_s)
    )
    run = engine_run(engine)
    store = open_store(source, endpoint_url=endpoint_url, region=region)
    try:
        sel = select(store, window.since, drift_since=window.drift_since)
        root = store.local_root(sel.all_paths())
        rows = run(root, sel, window)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    return build(rows, source=store.uri, window=window, thresholds=thresholds or Thresholds())
