"""The fleet summary: the metric rows of any engine -> one JSON document -> text.

Both engines return the rows of :func:`definitions.queries`; :func:`build`
turns them into the document below (the same bytes whatever the engine:
numbers are rounded here, times formatted here, everything sorted here).

JSON layout (``"schema": "edge-actors/fleet-summary/1"``)::

    {
      "schema": "edge-actors/fleet-summary/1",
      "source": "s3://bucket/prefix/",            # what was read
      "as_of": "2026-11-28T12:00:00.000000Z",      # the summary's "now"
      "since": "2026-11-27T12:00:00.000000Z",      # window start (records: since <= t < as_of)
      "drift_since": "...",                        # how far back open episodes are looked for
      "thresholds": {"silent_after_s": 3600.0, "hot_cpu_percent": 90.0,
                     "hot_mem_percent": 90.0, "hot_temp_c": 80.0},
      "attention": [                               # sorted: reason (drifting, silent,
        {"device": "pi-07", "reason": "drifting",  # losing_data, hot), then device
         "since": "2026-11-28T03:12:55.000000Z",   # when it began (null: unknown)
         "detail": "house/sqft (ks), house/age (ks)"}
      ],
      "unreadable": ["events/device=pi-03/date=.../....ndjson.gz"],   # objects left out
      "totals": {
        "devices": 30, "reporting": 28,            # reporting: a record in the window
        "drifting": 3, "silent": 2, "losing_data": 2, "hot": 1,
        "records": {"model": 123, "events": 4, ...},   # in the window, every stream
        "dropped": {"budget": 10, "ring_overrun": 7, "sampled": 0, ...},
        "model_versions": [{"model": "house", "model_version": null, "devices": 30}]
      },
      "devices": [                                 # sorted by device
        {
          "device": "pi-01",
          "last_seen": "2026-11-28T11:59:50.000000Z",   # newest record, any stream
          "silent_for_s": 10.0,
          "attention": ["drifting"],
          "records": {"model": 86400, ...},            # in the window, per stream
          "records_per_hour": {"model": 3600.0, ...},  # records / hours in the window
          "hourly": {"model": [["2026-11-28T11:00:00.000000Z", 3600], ...], ...},
          "drift_open": [{"model": "house", "model_version": null, "feature": "sqft",
                          "test": "ks", "state": "drift_started", "began": "...",
                          "last_event": "...", "statistic": 0.31, "threshold": 0.08}],
          "drift_events": [{"time": "...", "model": ..., "model_version": ...,
                            "feature": ..., "test": ..., "state": ...,
                            "statistic": ..., "threshold": ...}],
          "drops": {"model": {"ring_overrun": 7}},      # stream -> reason -> records
          "lost": 7,                                   # drops but the intended ones
          "health": {"samples": 8640,
                     "cpu_percent": {"p50": 12.0, "p95": 40.5, "max": 77.0},
                     "mem_percent": {...}, "temp_max_c": {...}},   # null: no sample
          "models": [{"model": "house", "model_version": "1.4.2", "records": 86400,
                      "first_seen": "...", "last_seen": "..."}]
        }
      ]
    }

A device appears when it has any object under the source (any stream, any
date): a device silent for a week is listed with its ``last_seen``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from edge_actors.offline.fleet.definitions import (
    ATTENTION_REASONS,
    HEALTH_METRICS,
    INTENDED_DROP_REASONS,
    STREAMS,
    Thresholds,
    Window,
)

__all__ = ["SCHEMA", "Rows", "build", "iso", "render_text"]

#: Version of the JSON layout above; bumped on any incompatible change.
SCHEMA = "edge-actors/fleet-summary/1"

#: Query name -> its rows, each a dict of column -> value (what an engine returns).
Rows = Mapping[str, Sequence[Mapping[str, Any]]]

_UTC = dt.timezone.utc


def iso(ts: float | None) -> str | None:
    """UTC ISO-8601 with microseconds (as the records' ``time``), ``None`` for ``None``."""
    if ts is None or not math.isfinite(float(ts)):
        return None
    return dt.datetime.fromtimestamp(float(ts), _UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _num(value: Any, digits: int = 3) -> float | None:
    """A rounded float, ``None`` for null/NaN: engines differ in the last bits of sums."""
    if value is None:
        return None
    f = float(value)
    return round(f, digits) if math.isfinite(f) else None


def _model_key(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row.get("model") or "", row.get("model_version") or "")


def build(
    rows: Rows,
    *,
    source: str,
    window: Window,
    thresholds: Thresholds,
) -> dict[str, Any]:
    """The summary document (see the module doc) from the rows of every query."""
    devices: dict[str, dict[str, Any]] = {}

    def dev(name: str) -> dict[str, Any]:
        d = devices.get(name)
        if d is None:
            d = devices[name] = {
                "device": name,
                "last_seen": None,
                "silent_for_s": None,
                "attention": [],
                "records": {s: 0 for s in STREAMS},
                "records_per_hour": {s: 0.0 for s in STREAMS},
                "hourly": {s: [] for s in STREAMS},
                "drift_open": [],
                "drift_events": [],
                "drops": {},
                "lost": 0,
                "health": {"samples": 0, **{m: None for m in HEALTH_METRICS}},
                "models": [],
            }
        return d

    last_ts: dict[str, float] = {}
    for r in rows["last_seen"]:
        d = dev(str(r["device"]))
        if r["last_seen"] is not None:
            last_ts[d["device"]] = float(r["last_seen"])
            d["last_seen"] = iso(r["last_seen"])
            d["silent_for_s"] = _num(max(0.0, window.until - float(r["last_seen"])))
    hours = max((window.until - window.since) / 3600.0, 1e-9)
    for r in rows["hourly"]:
        d = dev(str(r["device"]))
        stream, n = str(r["stream"]), int(r["records"])
        d["hourly"].setdefault(stream, []).append([iso(r["hour"]), n])
        d["records"][stream] = d["records"].get(stream, 0) + n
    for d in devices.values():
        d["records_per_hour"] = {s: _num(n / hours) for s, n in d["records"].items()}
        for series in d["hourly"].values():
            series.sort()
    for r in rows["drift_open"]:
        dev(str(r["device"]))["drift_open"].append(
            {
                "model": r["model"],
                "model_version": r["model_version"],
                "feature": r["feature"],
                "test": r["test"],
                "state": r["state"],
                "began": iso(r["began"]),
                "last_event": iso(r["last_event"]),
                "statistic": _num(r["statistic"], 6),
                "threshold": _num(r["threshold"], 6),
            }
        )
    for r in rows["drift_events"]:
        dev(str(r["device"]))["drift_events"].append(
            {
                "time": iso(r["ts"]),
                "model": r["model"],
                "model_version": r["model_version"],
                "feature": r["feature"],
                "test": r["test"],
                "state": r["state"],
                "statistic": _num(r["statistic"], 6),
                "threshold": _num(r["threshold"], 6),
            }
        )
    for r in rows["drops"]:
        d = dev(str(r["device"]))
        n = int(r["dropped"] or 0)
        per = d["drops"].setdefault(str(r["stream"]), {})
        per[str(r["reason"])] = per.get(str(r["reason"]), 0) + n
        if r["reason"] not in INTENDED_DROP_REASONS:
            d["lost"] += n
    for r in rows["health"]:
        d = dev(str(r["device"]))
        h: dict[str, Any] = {"samples": int(r["samples"])}
        for m in HEALTH_METRICS:
            h[m] = (
                {
                    "p50": _num(r[f"{m}_p50"]),
                    "p95": _num(r[f"{m}_p95"]),
                    "max": _num(r[f"{m}_max"]),
                }
                if int(r[f"{m}_n"] or 0)
                else None
            )
        d["health"] = h
    for r in rows["models"]:
        dev(str(r["device"]))["models"].append(
            {
                "model": r["model"],
                "model_version": r["model_version"],
                "records": int(r["records"]),
                "first_seen": iso(r["first_seen"]),
                "last_seen": iso(r["last_seen"]),
            }
        )

    attention: list[dict[str, Any]] = []
    for name, d in devices.items():
        d["drift_open"].sort(key=lambda e: (*_model_key(e), e["feature"] or "", e["test"] or ""))
        d["models"].sort(key=_model_key)
        for item in _attention(d, last_ts.get(name), window, thresholds):
            d["attention"].append(item["reason"])
            attention.append(item)
    order = {r: i for i, r in enumerate(ATTENTION_REASONS)}
    attention.sort(key=lambda a: (order[a["reason"]], a["device"]))

    listed = [devices[k] for k in sorted(devices)]
    unreadable = sorted(str(r["path"]) for r in rows.get("unreadable", ()))
    return {
        "schema": SCHEMA,
        "source": source,
        "as_of": iso(window.until),
        "since": iso(window.since),
        "drift_since": iso(window.drift_since),
        "thresholds": {
            "silent_after_s": thresholds.silent_after_s,
            "hot_cpu_percent": thresholds.hot_cpu_percent,
            "hot_mem_percent": thresholds.hot_mem_percent,
            "hot_temp_c": thresholds.hot_temp_c,
        },
        "attention": attention,
        "unreadable": unreadable,
        "totals": _totals(listed),
        "devices": listed,
    }


def _attention(
    d: Mapping[str, Any], last: float | None, window: Window, th: Thresholds
) -> list[dict[str, Any]]:
    """The device's "needs attention" items, in :data:`ATTENTION_REASONS` order."""
    out: list[dict[str, Any]] = []
    name = d["device"]
    if d["drift_open"]:
        began = [e["began"] for e in d["drift_open"] if e["began"]]
        what = ", ".join(
            f"{e['model']}{'@' + e['model_version'] if e['model_version'] else ''}/"
            f"{e['feature']} ({e['test']})"
            for e in d["drift_open"]
        )
        out.append(
            {
                "device": name,
                "reason": "drifting",
                "since": min(began) if began else None,
                "detail": what,
            }
        )
    if last is None or window.until - last >= th.silent_after_s:
        out.append(
            {
                "device": name,
                "reason": "silent",
                "since": iso(last),
                "detail": "no record since " + (iso(last) or "ever"),
            }
        )
    if d["lost"] > 0:
        parts = [
            f"{stream} {reason} {n}"
            for stream, per in sorted(d["drops"].items())
            for reason, n in sorted(per.items())
            if reason not in INTENDED_DROP_REASONS and n
        ]
        out.append(
            {
                "device": name,
                "reason": "losing_data",
                "since": None,
                "detail": f"{d['lost']} records lost: " + ", ".join(parts),
            }
        )
    hot = []
    limits = (
        ("cpu_percent", th.hot_cpu_percent, "CPU p95 {v:g} %"),
        ("mem_percent", th.hot_mem_percent, "memory p95 {v:g} %"),
        ("temp_max_c", th.hot_temp_c, "temperature p95 {v:g} °C"),
    )
    for metric, limit, text in limits:
        h = d["health"].get(metric)
        if h and h["p95"] is not None and h["p95"] >= limit:
            hot.append(text.format(v=h["p95"]))
    if hot:
        out.append({"device": name, "reason": "hot", "since": None, "detail": ", ".join(hot)})
    return out


def _totals(devices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    records = {s: 0 for s in STREAMS}
    dropped: dict[str, int] = {}
    versions: dict[tuple[str | None, str | None], set[str]] = {}
    for d in devices:
        for s, n in d["records"].items():
            records[s] = records.get(s, 0) + n
        for per in d["drops"].values():
            for reason, n in per.items():
                dropped[reason] = dropped.get(reason, 0) + n
        for m in d["models"]:
            versions.setdefault((m["model"], m["model_version"]), set()).add(d["device"])
    count = {r: sum(1 for d in devices if r in d["attention"]) for r in ATTENTION_REASONS}
    return {
        "devices": len(devices),
        "reporting": sum(1 for d in devices if any(d["records"].values())),
        **count,
        "records": records,
        "dropped": dict(sorted(dropped.items())),
        "model_versions": [
            {"model": m, "model_version": v, "devices": len(devs)}
            for (m, v), devs in sorted(
                versions.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or "")
            )
        ],
    }


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def render_text(summary: Mapping[str, Any]) -> str:
    """The summary for a terminal: needs attention first, then totals, then one line per device."""
    t = summary["totals"]
    lines = [
        f"fleet summary {summary['since']} .. {summary['as_of']} ({summary['source']})",
        "",
    ]
    att = summary["attention"]
    bad = summary.get("unreadable", [])
    if bad:
        lines.append(f"unreadable objects left out: {len(bad)} (first: {bad[0]})")
    lines.append(f"needs attention: {len(att)}" if att else "needs attention: none")
    for a in att:
        since = f" since {a['since']}" if a["since"] and a["reason"] != "silent" else ""
        lines.append(f"  {a['device']:<20} {a['reason']:<12} {a['detail']}{since}")
    lines += [
        "",
        f"devices {t['devices']}, reporting {t['reporting']}: drifting {t['drifting']}, "
        f"silent {t['silent']}, losing data {t['losing_data']}, hot {t['hot']}",
        "records: " + ", ".join(f"{s} {n}" for s, n in t["records"].items() if n),
        "dropped: " + (", ".join(f"{r} {n}" for r, n in t["dropped"].items()) or "none"),
        "models: "
        + (
            ", ".join(
                f"{m['model']} {m['model_version'] or '(no version)'} on {m['devices']}"
                for m in t["model_versions"]
            )
            or "none"
        ),
        "",
        f"{'device':<20} {'last seen':<12} {'model/h':>9} {'drift':>5} {'lost':>7} "
        f"{'cpu95':>6} {'mem95':>6} {'temp95':>6}",
    ]
    for d in summary["devices"]:
        h = d["health"]

        def p95(m: str, h: Mapping[str, Any] = h) -> str:
            v = h.get(m)
            return f"{v['p95']:.0f}" if v and v["p95"] is not None else "-"

        lines.append(
            f"{d['device']:<20} {_ago(d['silent_for_s']):<12} "
            f"{d['records_per_hour'].get('model', 0):>9.0f} {len(d['drift_open']):>5} "
            f"{d['lost']:>7} {p95('cpu_percent'):>6} {p95('mem_percent'):>6} "
            f"{p95('temp_max_c'):>6}"
        )
    return "\n".join(lines) + "\n"
