"""``fleet summary --format html``: the summary document as one self-contained page.

Needs attention and the fleet totals first, then three charts drawn with the
device report's helpers (:mod:`edge_actors.offline.report`: inline PNGs, no
external reference, each ``<img>`` carrying its ``data-points``):

- drift timeline: one row per device with drift in the window, a bar per
  episode (start to resolve, or to ``as_of`` while open);
- devices x features heat map: the largest statistic/threshold of each
  device's drift events and open episodes;
- freshness: every device's last-seen time, with the silent limit.

Then one table row per device. Built from the JSON document only
(:mod:`.summary`), so it looks the same whatever engine computed it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from edge_actors.offline.report import (
    _CSS,
    MATPLOTLIB_MISSING,
    ReportError,
    _Chart,
    _Charts,
    _dates,
    _e,
    _figure,
    _fmt_duration,
    _legend,
    _points,
    _table,
)

__all__ = ["MAX_ROWS", "render_html"]

#: Devices drawn at most in the timeline and the heat map (the needs-attention ones first).
MAX_ROWS = 60

_EXTRA_CSS = """
.reason{font-weight:600}.r-drifting{color:#b00}.r-silent{color:#555}
.r-losing_data{color:#a60}.r-hot{color:#c40}
"""


def _ts(text: str | None) -> float | None:
    if text is None:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _label(e: Mapping[str, Any]) -> str:
    version = f"@{e['model_version']}" if e.get("model_version") else ""
    return f"{e.get('model') or '?'}{version}/{e.get('feature') or '?'}"


def _episodes(
    d: Mapping[str, Any], since: float, until: float
) -> list[tuple[str, float, float, bool]]:
    """``(feature label, start, end, open)`` of one device's episodes in the window."""
    out: list[tuple[str, float, float, bool]] = []
    opened: dict[tuple[str, str], float] = {}
    for ev in d["drift_events"]:
        key = (_label(ev), str(ev.get("test")))
        t = _ts(ev["time"])
        if t is None:
            continue
        if ev["state"] == "drift_started":
            opened.setdefault(key, t)
        elif ev["state"] == "drift_resolved":
            out.append((key[0], opened.pop(key, since), t, False))
    for ep in d["drift_open"]:
        key = (_label(ep), str(ep.get("test")))
        began = _ts(ep.get("began"))
        start = opened.pop(key, began if began is not None else since)
        out.append((key[0], max(start, since), until, True))
    # Started in the window and neither resolved nor open (the lookback missed it): to as_of.
    out.extend((k[0], t, until, True) for k, t in opened.items())
    return out


def _ranked(devices: Sequence[Mapping[str, Any]], keep: set[str]) -> list[Mapping[str, Any]]:
    """The devices in ``keep``, attention first, at most :data:`MAX_ROWS`."""
    chosen = [d for d in devices if d["device"] in keep]
    chosen.sort(key=lambda d: (not d["attention"], d["device"]))
    return chosen[:MAX_ROWS]


def _timeline(summary: Mapping[str, Any], charts: _Charts, notes: list[str]) -> _Chart | None:
    since, until = _ts(summary["since"]), _ts(summary["as_of"])
    assert since is not None and until is not None
    eps = {d["device"]: _episodes(d, since, until) for d in summary["devices"]}
    rows = _ranked(summary["devices"], {k for k, v in eps.items() if v})
    if not rows:
        return None
    fig, ax = charts.figure(max(2.2, 0.8 + 0.24 * len(rows)))
    for i, d in enumerate(rows):
        for k, (_f, start, end, is_open) in enumerate(sorted(eps[d["device"]])):
            color = "tab:red" if is_open else "tab:orange"
            label = None
            if i == 0 or k == 0:
                label = "open episode" if is_open else "resolved in the window"
            ax.plot(
                _dates([start, end]),
                [i, i],
                "-",
                color=color,
                lw=6,
                solid_capstyle="butt",
                label=label,
            )
            ax.plot(_dates([start]), [i], "|", color="k", ms=9)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([d["device"] for d in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_title("fleet drift timeline (one row per device with drift)", fontsize=10, loc="left")
    _dedupe_legend(ax)
    if len(eps) and sum(1 for v in eps.values() if v) > len(rows):
        notes.append(f"timeline: {len(rows)} of {sum(1 for v in eps.values() if v)} devices")
    return _Chart("chart-fleet-drift", "fleet drift timeline", charts.png(fig), points=_points(ax))


def _dedupe_legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels, strict=True):
        seen.setdefault(lab, h)
    ax.legend(
        list(seen.values()),
        list(seen),
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=max(1, len(seen)),
        fontsize=8,
        frameon=False,
        borderaxespad=0.1,
    )


def _heatmap(summary: Mapping[str, Any], charts: _Charts) -> _Chart | None:
    import numpy as np
    from matplotlib.figure import Figure

    cells: dict[tuple[str, str], float] = {}
    for d in summary["devices"]:
        for e in (*d["drift_events"], *d["drift_open"]):
            stat, thr = e.get("statistic"), e.get("threshold")
            if stat is None or not thr:
                continue
            key = (d["device"], f"{_label(e)} ({e.get('test')})")
            cells[key] = max(cells.get(key, 0.0), float(stat) / float(thr))
    if not cells:
        return None
    rows = _ranked(summary["devices"], {k[0] for k in cells})
    names = [d["device"] for d in rows]
    features = sorted({k[1] for k in cells if k[0] in names})
    grid = np.full((len(names), len(features)), np.nan)
    for (dev, feat), v in cells.items():
        if dev in names:
            grid[names.index(dev), features.index(feat)] = v
    height = max(2.4, 1.4 + 0.24 * len(names))
    fig = Figure(figsize=(11.0, height), dpi=100)
    fig.subplots_adjust(left=0.75 / 11, right=0.88, bottom=1.2 / height, top=1 - 0.32 / height)
    ax = fig.add_subplot()
    img = ax.imshow(
        np.ma.masked_invalid(grid),
        aspect="auto",
        cmap="OrRd",
        vmin=0,
        vmax=max(2.0, float(np.nanmax(grid))),
        interpolation="nearest",
    )
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xticks(range(len(features)))
    ax.set_xticklabels(features, fontsize=7, rotation=20, ha="right")
    ax.set_title(
        "devices x features: largest statistic / threshold (1 = alarm level)",
        fontsize=10,
        loc="left",
    )
    fig.colorbar(img, ax=ax, fraction=0.03, pad=0.01)
    points = int(np.isfinite(grid).sum())
    return _Chart(
        "chart-fleet-heatmap", "devices x features heat map", charts.png(fig), points=points
    )


def _freshness(summary: Mapping[str, Any], charts: _Charts) -> _Chart | None:
    seen = [(d["device"], _ts(d["last_seen"])) for d in summary["devices"]]
    pts = sorted((t, name) for name, t in seen if t is not None)
    if not pts:
        return None
    until = _ts(summary["as_of"])
    assert until is not None
    limit = until - float(summary["thresholds"]["silent_after_s"])
    fig, ax = charts.figure(max(2.4, min(8.0, 0.8 + 0.2 * len(pts))))
    fresh = [(i, t) for i, (t, _n) in enumerate(pts) if t > limit]
    stale = [(i, t) for i, (t, _n) in enumerate(pts) if t <= limit]
    for sel, color, label in ((fresh, "tab:green", "reporting"), (stale, "tab:red", "silent")):
        if sel:
            ax.plot(
                _dates([t for _i, t in sel]),
                [i for i, _t in sel],
                "o",
                color=color,
                ms=4,
                ls="none",
                label=label,
            )
    ax.axvline(
        _dates([limit])[0],
        color="tab:red",
        ls="--",
        lw=1,
        label=f"silent limit ({_fmt_duration(until - limit)})",
    )
    if len(pts) <= MAX_ROWS:
        ax.set_yticks(range(len(pts)))
        ax.set_yticklabels([n for _t, n in pts], fontsize=7)
    else:
        ax.set_ylabel("devices, stalest first", fontsize=8)
    ax.set_ylim(len(pts) - 0.5, -0.5)
    ax.set_title("freshness: last record of each device", fontsize=10, loc="left")
    _legend(ax)
    # One point per device (the limit line is not data).
    return _Chart(
        "chart-fleet-freshness", "freshness (last seen)", charts.png(fig), points=len(pts)
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _attention_table(summary: Mapping[str, Any]) -> str:
    items = summary["attention"]
    if not items:
        return '<p class="note" id="attention-none">No device needs attention.</p>'
    rows = [
        [
            _e(a["device"]),
            f'<span class="reason r-{_e(a["reason"])}">{_e(a["reason"])}</span>',
            _e(a["since"] or "-"),
            _e(a["detail"]),
        ]
        for a in items
    ]
    return '<div id="attention">' + _table(["device", "reason", "since", "detail"], rows) + "</div>"


def _totals_table(summary: Mapping[str, Any]) -> str:
    t = summary["totals"]
    rows = [
        ["devices", _fmt(t["devices"])],
        ["reporting in the window", _fmt(t["reporting"])],
        *([r.replace("_", " "), _fmt(t[r])] for r in ("drifting", "silent", "losing_data", "hot")),
        ["records", _e(", ".join(f"{s} {n:,}" for s, n in t["records"].items() if n) or "none")],
        ["dropped", _e(", ".join(f"{r} {n:,}" for r, n in t["dropped"].items()) or "none")],
        [
            "model versions",
            _e(
                ", ".join(
                    f"{m['model']}@{m['model_version'] or '?'} on {m['devices']}"
                    for m in t["model_versions"]
                )
                or "none"
            ),
        ],
    ]
    return (
        '<table class="meta" id="totals"><tbody>'
        + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in rows)
        + "</tbody></table>"
    )


def _devices_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for d in summary["devices"]:
        h = d["health"]

        def p95(m: str, h: Mapping[str, Any] = h) -> str:
            v = h.get(m)
            return _fmt(v["p95"]) if v else "-"

        rows.append(
            [
                _e(d["device"]),
                _e(d["last_seen"] or "never"),
                _e(_fmt(d["records_per_hour"].get("model", 0.0))),
                _e(str(len(d["drift_open"]))),
                _e(_fmt(d["lost"])),
                _e(p95("cpu_percent")),
                _e(p95("mem_percent")),
                _e(p95("temp_max_c")),
                _e(", ".join(f"{m['model']}@{m['model_version'] or '?'}" for m in d["models"])),
                _e(", ".join(d["attention"])),
            ]
        )
    head = [
        "device",
        "last seen (UTC)",
        "model/h",
        "open drift",
        "lost",
        "CPU p95 %",
        "mem p95 %",
        "temp p95 °C",
        "models",
        "attention",
    ]
    return '<div id="devices">' + _table(head, rows, (2, 3, 4, 5, 6, 7)) + "</div>"


def render_html(summary: Mapping[str, Any]) -> str:
    """The page of a summary document (:func:`.summary.build`'s output).

    Raises:
        ReportError: matplotlib is not installed (:data:`MATPLOTLIB_MISSING`).
    """
    since, until = _ts(summary["since"]), _ts(summary["as_of"])
    assert since is not None and until is not None
    seen = [t for d in summary["devices"] if (t := _ts(d["last_seen"])) is not None]
    try:
        charts = _Charts(min([since, *seen]), until)
    except ImportError as exc:
        raise ReportError(MATPLOTLIB_MISSING) from exc
    notes: list[str] = []
    drift_charts = _Charts(since, until)
    figures = [
        ("Drift timeline", _timeline(summary, drift_charts, notes), "No drift in the window."),
        ("Drift by device and feature", _heatmap(summary, charts), "No drift in the window."),
        ("Freshness", _freshness(summary, charts), "No device has a record."),
    ]
    title = f"edge-actors fleet summary: {summary['source']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}{_EXTRA_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{_e(summary["since"])} \u2192 {_e(summary["as_of"])} '
        f"({_e(_fmt_duration(until - since))})</p>",
        f"<h2>Needs attention ({len(summary['attention'])})</h2>",
        _attention_table(summary),
        "<h2>Fleet</h2>",
        _totals_table(summary),
    ]
    for heading, chart, empty in figures:
        parts.append(f"<h2>{_e(heading)}</h2>")
        parts.append(_figure(chart) if chart is not None else f'<p class="note">{_e(empty)}</p>')
    parts.extend(f'<p class="note">{_e(n)}</p>' for n in notes)
    parts += ["<h2>Devices</h2>", _devices_table(summary), "</body></html>\n"]
    return "\n".join(parts)
