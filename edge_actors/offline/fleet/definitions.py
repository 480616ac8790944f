"""The fleet summary's metric definitions: one set for every engine.

Each engine (DuckDB in process, Spark for fleets past one machine) does three
things only:

1. register one view per stream, ``raw_<stream>``, over the selected objects
   (:class:`edge_actors.offline.fleet.source.Selection`): exactly the columns
   of :data:`STREAM_COLUMNS` (a field missing from a record or from a whole
   layout, e.g. ``model_version`` before it existed, is ``NULL``), plus
   ``src``, the object's path (``filename`` in DuckDB, ``input_file_name()``
   in Spark); and ``raw_latest`` (``src``, ``ts``) over each device's newest
   objects (``Selection.latest``), for "last seen";
2. materialize (DuckDB ``CREATE TEMP TABLE``, Spark ``cache()``) each
   ``t_<name>`` of :func:`tables`, in order: the raw records are scanned once,
   the high-volume streams (model, payload, processes) kept as hourly counts;
3. run the SQL of :func:`queries` over the ``t_*`` tables and return each row
   as a dict.

The SQL sticks to what both DuckDB and Spark SQL accept (no ``QUALIFY``, no
``FILTER``, no ``::`` casts, no correlated subqueries); what differs (an exact
percentile, the device from a path) goes through :class:`Dialect`.
Everything time-related is epoch seconds (``ts``, ``hour``); formatting is
done once in Python (:mod:`edge_actors.offline.fleet.summary`), so both
engines write the same JSON.
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
    "HOURLY_STREAMS",
    "SPARK",
    "Dialect",
    "Thresholds",
    "Window",
    "queries",
    "tables",
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
    #: The key's ``device=`` value from the object path ``{x}``.
    device: str = "regexp_extract({x}, '.*/device=([^/]+)/', 1)"

    def quantile(self, expr: str, q: float) -> str:
        """SQL of the ``q`` quantile of ``expr`` (nulls ignored)."""
        return self.percentile.format(x=expr, q=repr(float(q)))

    def device_of(self, expr: str) -> str:
        """SQL of the device id in the object path ``expr``."""
        return self.device.format(x=expr)


#: DuckDB: ``quantile_cont`` interpolates linearly, as Spark's exact ``percentile``.
DUCKDB = Dialect("duckdb", "quantile_cont({x}, {q})")
#: Spark SQL: ``percentile`` (exact), never ``percentile_approx`` (results would differ).
#: ``input_file_name()`` is a URI: a device id with characters that need
#: escaping would need ``url_decode`` around it (Spark >= 3.4).
SPARK = Dialect("spark", "percentile({x}, {q})")

#: Streams kept as hourly counts per device (and model) in stage 2: the
#: summary needs no single record of them, and they are the bulk.
HOURLY_STREAMS: tuple[str, ...] = ("model", "payload", "processes")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _hour(ts: str = "ts") -> str:
    return f"CAST(floor({ts} / 3600) AS BIGINT) * 3600"


def _read(col: str) -> str:
    """The SQL that reads ``col``: an unversioned model's ``""`` version is NULL.

    The agent writes ``model_version: ""`` for a model declared without a
    version, and objects from before versions existed have no such field:
    both mean "no version", which the summary shows as ``null``.
    """
    return "NULLIF(model_version, '')" if col == "model_version" else col


def tables(d: Dialect, w: Window) -> dict[str, str]:
    """Name -> SQL of the ``t_*`` tables to materialize, in order (stage 2 of the module doc).

    Rows outside the window are dropped here: the window is ``since <= ts <
    until`` (``drift_since`` for events); ``t_latest`` only before ``until``.
    """
    out: dict[str, str] = {}
    for stream in STREAMS:
        cols = STREAM_COLUMNS[stream]
        where = f"ts >= {w.since!r} AND ts < {w.until!r}"
        if stream == "events":
            # Before the window only the episode transitions matter: the periodic
            # 'check' summaries of a week of lookback would be most of the table.
            where = (
                f"({where}) OR (ts >= {w.drift_since!r} AND ts < {w.since!r} "
                f"AND state IN {_in(DRIFT_STATES)})"
            )
        if stream in HOURLY_STREAMS:
            keys = [c for c in ("model", "model_version") if c in cols]
            by = ", ".join(["src", *map(_read, keys), _hour()])
            sel = ", ".join(["src", *(f"{_read(k)} AS {k}" for k in keys), f"{_hour()} AS hour"])
            # Grouped by object first: the device comes from its path once per group.
            inner = (
                f"SELECT {sel}, count(*) AS records, min(ts) AS first_ts, max(ts) AS last_ts "
                f"FROM raw_{stream} WHERE {where} GROUP BY {by}"
            )
            outer_keys = ", ".join([d.device_of("src"), *keys, "hour"])
            out[f"t_{stream}"] = (
                f"SELECT {d.device_of('src')} AS device, "
                + "".join(f"{k}, " for k in keys)
                + "hour, sum(records) AS records, min(first_ts) AS first_ts, "
                f"max(last_ts) AS last_ts FROM ({inner}) AS g GROUP BY {outer_keys}"
            )
        else:
            names = ", ".join(c if _read(c) == c else f"{_read(c)} AS {c}" for c in cols)
            out[f"t_{stream}"] = (
                f"SELECT {d.device_of('src')} AS device, {names} FROM raw_{stream} WHERE {where}"
            )
    out["t_latest"] = (
        f"SELECT {d.device_of('src')} AS device, max(ts) AS ts FROM raw_latest "
        f"WHERE ts < {w.until!r} GROUP BY {d.device_of('src')}"
    )
    return out


def queries(d: Dialect, w: Window) -> dict[str, str]:
    """Name -> SQL of every metric of the summary, over the ``t_*`` tables of :func:`tables`.

    Every query orders its rows fully, so both engines return the same list
    (``NULLS LAST`` spelled out where a key may be null: DuckDB puts NULL
    last by default, Spark first).
    """
    health = ",\n".join(
        f"  {d.quantile(m, 0.5)} AS {m}_p50, {d.quantile(m, 0.95)} AS {m}_p95, "
        f"max({m}) AS {m}_max, count({m}) AS {m}_n"
        for m in HEALTH_METRICS
    )
    window = f"ts >= {w.since!r} AND ts < {w.until!r}"
    parts = []
    for s in STREAMS:
        if s in HOURLY_STREAMS:
            parts.append(
                f"SELECT device, '{s}' AS stream, hour, sum(records) AS records "
                f"FROM t_{s} GROUP BY device, hour"
            )
        else:
            parts.append(
                f"SELECT device, '{s}' AS stream, {_hour()} AS hour, count(*) AS records "
                f"FROM t_{s} WHERE {window} GROUP BY device, {_hour()}"
            )
    counts = "\nUNION ALL\n".join(parts)
    seen = "\nUNION ALL\n".join(
        [
            f"SELECT device, max(last_ts) AS ts FROM t_{s} GROUP BY device"
            if s in HOURLY_STREAMS
            else f"SELECT device, max(ts) AS ts FROM t_{s} GROUP BY device"
            for s in STREAMS
        ]
        + ["SELECT device, ts FROM t_latest"]
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
  FROM t_events
  WHERE state IN {_in(DRIFT_STATES)}
) AS e
WHERE rn = 1 AND state <> 'drift_resolved'
ORDER BY device, model NULLS LAST, model_version NULLS LAST, feature, test""",
        # Episode transitions in the window, for the drift timeline.
        "drift_events": f"""
SELECT device, model, model_version, feature, test, state, ts, statistic, threshold
FROM t_events
WHERE state IN {_in(DRIFT_STATES)} AND {window}
ORDER BY device, ts, model NULLS LAST, model_version NULLS LAST, feature, test, state""",
        # Records lost before upload, by the stream they belonged to and why.
        "drops": """
SELECT device, stream, reason, sum(dropped) AS dropped
FROM t_drops
GROUP BY device, stream, reason
ORDER BY device, stream, reason""",
        # System health over the window.
        "health": f"""
SELECT device, count(*) AS samples,
{health}
FROM t_system
GROUP BY device
ORDER BY device""",
        # Which model versions each device ran in the window (model records).
        "models": """
SELECT device, model, model_version, sum(records) AS records, min(first_ts) AS first_seen,
       max(last_ts) AS last_seen
FROM t_model
GROUP BY device, model, model_version
ORDER BY device, model NULLS LAST, model_version NULLS LAST""",
    }
