"""The fleet summary's metric definitions: one set for every engine.

Each engine (DuckDB in process, Spark for fleets past one machine) does two
things only:

1. register one view per stream, named ``ea_<stream>``, with exactly the
   columns of :data:`STREAM_COLUMNS` (a field missing from a record or from
   a whole layout, e.g. ``model_version`` before it existed, is ``NULL``),
   plus ``device`` (the key's ``device=`` partition: the uploader's id) and
   ``obj_date`` (its ``date=``); ``ea_latest`` holds the ``device`` and ``ts``
   of every record of each device's newest object per stream, for "last seen";
2. run the SQL of :func:`queries` and return each row as a dict.

The SQL sticks to what both DuckDB and Spark SQL accept (no ``QUALIFY``, no
``FILTER``, no ``::`` casts, no engine-only functions); the one function that
differs, an exact percentile, goes through :class:`Dialect`. Everything
time-related is epoch seconds (``ts``); formatting is done once in Python
(:mod:`edge_actors.offline.fleet.summary`), so both engines write the same JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ATTENTION_REASONS",
    "DRIFT_STATES",
    "HEALTH_METRICS",
    "INTENDED_DROP_REASONS",
    "STREAMS",
    "STREAM_COLUMNS",
    "DUCKDB",
    "SPARK",
    "Dialect",
    "Thresholds",
    "Window",
    "queries",
]

#: Every stream the agent uploads (docs/fleet.md, "Key layout").
STREAMS: tuple[str, ...] = ("model", "events", "system", "processes", "drops", "payload")

#: Columns read from each stream's records; neutral types (``string``,
#: ``double``, ``bigint``) that each engine maps to its own. Only what the
#: summary needs: the model stream's ``inputs``/``outputs`` are never parsed.
STREAM_COLUMNS: dict[str, dict[str, str]] = {
    "model": {"ts": "double", "model": "string", "model_version": "string", "kind": "string"},
    "events": {
        "ts": "double",
        "model": "string",
        "model_version": "string",
        "feature": "string",
        "test": "string",
        "state": "string",
        "statistic": "double",
        "threshold": "double",
    },
    "system": {
        "ts": "double",
        "cpu_percent": "double",
        "mem_percent": "double",
        "temp_max_c": "double",
    },
    "processes": {"ts": "double"},
    "drops": {
        "ts": "double",
        "stream": "string",
        "reason": "string",
        "dropped": "bigint",
    },
    "payload": {"ts": "double", "model": "string", "model_version": "string"},
}

#: Event states that open, extend or close a drift episode (``check`` does neither).
DRIFT_STATES: tuple[str, ...] = ("drift_started", "drift_worsened", "drift_resolved")

#: Drop reasons that are the configuration working as intended, not data loss.
INTENDED_DROP_REASONS: tuple[str, ...] = ("sampled",)

#: System fields summarized as percentiles, in output order.
HEALTH_METRICS: tuple[str, ...] = ("cpu_percent", "mem_percent", "temp_max_c")

#: The "needs attention" reasons, in the order the list is sorted by.
ATTENTION_REASONS: tuple[str, ...] = ("drifting", "silent", "losing_data", "hot")


@dataclass(frozen=True)
class Thresholds:
    """When a device needs attention.

    Attributes:
        silent_after_s: no record for this long before ``as_of``: silent.
        hot_cpu_percent: p95 of ``cpu_percent`` at or above this: hot.
        hot_mem_percent: p95 of ``mem_percent`` at or above this: hot.
        hot_temp_c: p95 of ``temp_max_c`` at or above this: hot.
    """

    silent_after_s: float = 3600.0
    hot_cpu_percent: float = 90.0
    hot_mem_percent: float = 90.0
    hot_temp_c: float = 80.0


@dataclass(frozen=True)
class Window:
    """The time range summarized, epoch seconds: ``since <= ts < until``.

    ``drift_since`` reaches further back for the events stream only, so an
    episode that began before ``since`` and is still open is found.
    """

    since: float
    until: float
    drift_since: float


@dataclass(frozen=True)
class Dialect:
    """The few spellings that differ between engines."""

    name: str
    #: Exact percentile with linear interpolation; ``{x}`` and ``{q}`` are filled in.
    percentile: str

    def quantile(self, expr: str, q: float) -> str:
        """SQL of the ``q`` quantile of ``expr`` (nulls ignored)."""
        return self.percentile.format(x=expr, q=repr(float(q)))


#: DuckDB: ``quantile_cont`` interpolates linearly, as Spark's exact ``percentile``.
DUCKDB = Dialect("duckdb", "quantile_cont({x}, {q})")
#: Spark SQL: ``percentile`` (exact), never ``percentile_approx`` (results would differ).
SPARK = Dialect("spark", "percentile({x}, {q})")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _between(w: Window, since: float | None = None) -> str:
    return f"ts >= {since if since is not None else w.since!r} AND ts < {w.until!r}"


def queries(d: Dialect, w: Window) -> dict[str, str]:
    """Name -> SQL of every metric of the summary, over the ``ea_*`` views.

    Every query orders its rows fully, so both engines return the same list.
    """
    health = ",\n".join(
        f"  {d.quantile(m, 0.5)} AS {m}_p50, {d.quantile(m, 0.95)} AS {m}_p95, "
        f"max({m}) AS {m}_max, count({m}) AS {m}_n"
        for m in HEALTH_METRICS
    )
    counts = "\nUNION ALL\n".join(
        f"SELECT device, '{s}' AS stream, CAST(floor(ts / 3600) AS BIGINT) * 3600 AS hour, "
        f"count(*) AS records FROM ea_{s} WHERE {_between(w)} "
        "GROUP BY device, CAST(floor(ts / 3600) AS BIGINT) * 3600"
        for s in STREAMS
    )
    seen = "\nUNION ALL\n".join(
        [
            f"SELECT device, max(ts) AS ts FROM ea_{s} WHERE ts < {w.until!r} GROUP BY device"
            for s in STREAMS
        ]
        + [f"SELECT device, max(ts) AS ts FROM ea_latest WHERE ts < {w.until!r} GROUP BY device"]
    )
    return {
        # Every device with at least one object anywhere, and its newest record.
        "last_seen": f"SELECT device, max(ts) AS last_seen FROM (\n{seen}\n) AS s "
        "GROUP BY device ORDER BY device",
        # Records per device, stream and hour (hour = epoch seconds of its start).
        "hourly": f"SELECT device, stream, hour, records FROM (\n{counts}\n) AS c "
        "ORDER BY device, stream, hour",
        # Drift episodes still open at `until`: the last non-check event of a
        # (device, model, version, feature, test) is a start or a worsening;
        # it began at the last drift_started (any later one would have closed
        # it first); NULL when that was before `drift_since`.
        "drift_open": f"""
SELECT device, model, model_version, feature, test, state, statistic, threshold,
       ts AS last_event, began
FROM (
  SELECT device, model, model_version, feature, test, state, statistic, threshold, ts,
         row_number() OVER (
           PARTITION BY device, model, model_version, feature, test
           ORDER BY ts DESC, state DESC) AS rn,
         max(CASE WHEN state = 'drift_started' THEN ts END) OVER (
           PARTITION BY device, model, model_version, feature, test) AS began
  FROM ea_events
  WHERE state IN {_in(DRIFT_STATES)} AND {_between(w, w.drift_since)}
) AS e
WHERE rn = 1 AND state <> 'drift_resolved'
ORDER BY device, model, model_version, feature, test""",
        # Episode transitions in the window, for the drift timeline.
        "drift_events": f"""
SELECT device, model, model_version, feature, test, state, ts, statistic, threshold
FROM ea_events
WHERE state IN {_in(DRIFT_STATES)} AND {_between(w)}
ORDER BY device, ts, model, model_version, feature, test, state""",
        # Records lost before upload, by the stream they belonged to and why.
        "drops": f"""
SELECT device, stream, reason, sum(dropped) AS dropped
FROM ea_drops
WHERE {_between(w)}
GROUP BY device, stream, reason
ORDER BY device, stream, reason""",
        # System health over the window.
        "health": f"""
SELECT device, count(*) AS samples,
{health}
FROM ea_system
WHERE {_between(w)}
GROUP BY device
ORDER BY device""",
        # Which model versions each device ran in the window (model records).
        "models": f"""
SELECT device, model, model_version, count(*) AS records, min(ts) AS first_seen,
       max(ts) AS last_seen
FROM ea_model
WHERE {_between(w)}
GROUP BY device, model, model_version
ORDER BY device, model, model_version""",
    }
