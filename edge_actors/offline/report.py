"""``edge-actors report``: one self-contained HTML page about a device's recorded streams.

Sources:

- ``-c CONFIG``: the device's own SQLite outbox (``storage.sqlite_path``), opened
  READ-ONLY, plus the local sink directory (``storage.local_path``) when it
  exists: records already uploaded have left the outbox and sit in the sink.
- ``--from DIR``: a local copy of a sink tree (e.g. ``aws s3 sync`` output) with
  the usual key layout (see :mod:`edge_actors.keys`).

Records are de-duplicated by ``(stream, seq)``: a batch that was written to the
sink but not yet acknowledged is in both places.

The page holds charts as inline base64 PNGs (no external reference at all):
per feature the drift statistic of the periodic ``check`` events against its
threshold with the drift episodes shaded; NaN and out-of-range rates; CPU,
memory, disk and temperature; the model record rate. A header gives the
device, the model, the time range, record counts per stream, drops and the
drift episodes as a table.

matplotlib is an optional extra (``pip install 'edge-actors[report]'``). The
agent never imports this module's plotting code: matplotlib is imported only
inside :func:`render_html`, with the Agg backend.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import html
import io
import itertools
import math
import os
import re
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_actors.keys import key_model, parse_key

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "MATPLOTLIB_MISSING",
    "Dataset",
    "Episode",
    "ReportError",
    "add_report_parser",
    "cmd_report",
    "drift_episodes",
    "load_config_sources",
    "load_sink_tree",
    "render_html",
]

MATPLOTLIB_MISSING = "the report needs matplotlib: pip install 'edge-actors[report]'"

#: A sink copy whose last agent record is younger than this shows open episodes as
#: ongoing (uploads lag by the upload interval and the copy's own sync).
LIVE_SECONDS = 3600.0
#: Event tests that are data-quality checks, not distribution tests.
QUALITY_TESTS = ("nan_rate", "out_of_range")
#: System fields kept for the charts.
_SYSTEM_KEEP = ("ts", "cpu_percent", "mem_percent", "swap_percent", "disk_percent", "temp_max_c")
_ID_RE = re.compile(r"[^A-Za-z0-9_-]+")
_UTC = dt.timezone.utc
_FIG_WIDTH = 11.0


class ReportError(Exception):
    """A bad or missing input: reported as one line, exit code 1."""


# ---------------------------------------------------------------------------- data


@dataclass
class StreamInfo:
    """Records of one stream: count and time range."""

    count: int = 0
    t_first: float = math.inf
    t_last: float = -math.inf


@dataclass
class Dataset:
    """What the page is made from (the records of ONE device)."""

    device: str | None = None
    model: str | None = None
    streams: dict[str, StreamInfo] = field(default_factory=dict)
    system: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    drops: list[dict[str, Any]] = field(default_factory=list)
    model_ts: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duplicates: int = 0
    unreadable: int = 0
    since: float | None = None
    drift_mode: str | None = None
    #: True: the agent runs now (its control socket answered); None: unknown.
    live: bool | None = None

    @property
    def t_first(self) -> float:
        """Oldest record time of any stream (inf when empty)."""
        return min((s.t_first for s in self.streams.values()), default=math.inf)

    @property
    def t_last(self) -> float:
        """Newest record time of any stream (-inf when empty)."""
        return max((s.t_last for s in self.streams.values()), default=-math.inf)

    @property
    def total(self) -> int:
        """Records of every stream."""
        return sum(s.count for s in self.streams.values())


def _num(value: Any) -> float:
    """A finite float, or NaN (``null``, strings, bools, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    x = float(value)
    return x if math.isfinite(x) else math.nan


class _Collector:
    """Adds records to a :class:`Dataset`, de-duplicating by ``(stream, seq)``."""

    def __init__(self, data: Dataset, device: str | None, since: float | None) -> None:
        self.data = data
        self.device = device
        self.since = since
        self.seen: dict[str, set[int]] = {}

    def add_lines(self, stream: str, raw: bytes) -> None:
        from edge_actors.outbox import decode_ndjson

        records, bad = decode_ndjson(raw)
        self.data.unreadable += bad
        for rec in records:
            self.add(stream, rec)

    def add(self, stream: str, rec: dict[str, Any]) -> None:
        data = self.data
        dev = rec.get("device_id")
        if self.device is not None and isinstance(dev, str) and dev != self.device:
            return
        seq = rec.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            seen = self.seen.setdefault(stream, set())  # "model/x": seqs per model
            if seq in seen:
                data.duplicates += 1
                return
            seen.add(seq)
        ts = _num(rec.get("ts"))
        if self.since is not None and not ts >= self.since:
            return
        stream = stream.split("/")[0]  # a model's stream counts with its kind
        info = data.streams.setdefault(stream, StreamInfo())
        info.count += 1
        if not math.isnan(ts):
            info.t_first = min(info.t_first, ts)
            info.t_last = max(info.t_last, ts)
        if data.device is None and isinstance(dev, str):
            data.device = dev
        if stream == "system":
            data.system.append({k: rec.get(k) for k in _SYSTEM_KEEP})
        elif stream == "events":
            data.events.append(rec)
        elif stream == "drops":
            data.drops.append(rec)
        elif stream == "model" and not math.isnan(ts):
            data.model_ts.append(ts)
        if data.model is None and stream in ("model", "events"):
            model = rec.get("model")
            if isinstance(model, str):
                data.model = model


def _sink_objects(root: Path, prefix: str) -> Iterator[tuple[Path, str, str]]:
    """``(path, stream, device)`` of every object below ``root`` with a valid key."""
    for path in sorted(root.rglob("*.ndjson.gz")):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if prefix:
            if not rel.startswith(prefix):
                continue
            rel = rel[len(prefix) :]
        try:
            _prefix, stream, device, _date, _first, _last = parse_key(rel)
            model = key_model(rel)
        except ValueError:
            continue
        yield path, (stream if model is None else f"{stream}/{model}"), device


def _read_sink(
    collector: _Collector, objects: Iterable[tuple[Path, str, str]], device: str | None
) -> int:
    n = 0
    for path, stream, dev in objects:
        if device is not None and dev != device:
            continue
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as exc:
            collector.data.unreadable += 1
            print(f"edge-actors: skipping unreadable object {path}: {exc}", file=sys.stderr)
            continue
        collector.add_lines(stream, raw)
        n += 1
    return n


def _read_outbox(collector: _Collector, path: Path) -> int:
    """Add every record stored in the outbox at ``path``, without writing anything.

    Returns:
        The number of chunks read.
    """
    # Imported here: every CLI command imports this module for its parser.
    from edge_actors.outbox import OutboxReader, OutboxReadError

    chunks = 0
    try:
        with OutboxReader(path) as reader:
            for chunk in reader.chunks():
                collector.data.unreadable += chunk.unreadable
                for rec in chunk.records:
                    collector.add(chunk.stream, rec)
                chunks += 1
    except OutboxReadError as exc:
        raise ReportError(str(exc)) from exc
    return chunks


def _finish(data: Dataset) -> Dataset:
    data.system.sort(key=lambda r: _num(r.get("ts")))
    data.events.sort(key=lambda r: _num(r.get("ts")))
    data.drops.sort(key=lambda r: _num(r.get("ts")))
    data.model_ts.sort()
    return data


def load_sink_tree(
    root: str | os.PathLike[str], *, device: str | None = None, since: float | None = None
) -> Dataset:
    """Read a local copy of a sink tree (any key prefix).

    Args:
        root: directory holding ``[prefix]stream/device=ID/date=D/*.ndjson.gz``.
        device: the device to report on; required when the tree holds several.
        since: keep records with ``ts >= since`` (epoch seconds) only.

    Raises:
        ReportError: missing directory, no objects, several devices and no ``device``.
    """
    base = Path(root)
    if not base.is_dir():
        raise ReportError(f"--from {base}: not a directory")
    objects = list(_sink_objects(base, ""))
    if not objects:
        raise ReportError(
            f"--from {base}: no edge-actors objects "
            "(stream/device=ID/date=YYYY-MM-DD/FIRST-LAST.ndjson.gz) found"
        )
    devices = sorted({d for _p, _s, d in objects})
    if device is None:
        if len(devices) > 1:
            raise ReportError(
                f"--from {base}: holds several devices ({', '.join(devices)}): "
                "choose one with --device"
            )
        device = devices[0]
    elif device not in devices:
        raise ReportError(
            f"--from {base}: no objects of device {device!r} (found: {', '.join(devices)})"
        )
    data = Dataset(device=device, since=since)
    collector = _Collector(data, device, since)
    n = _read_sink(collector, objects, device)
    data.sources.append(f"sink copy {base} ({n} objects)")
    return _finish(data)


def load_config_sources(
    cfg: Any, *, device: str | None = None, since: float | None = None
) -> Dataset:
    """Read the outbox (read-only) and the local sink directory of a loaded config.

    Raises:
        ReportError: neither the outbox nor the sink directory exists.
    """
    storage = cfg.storage
    db = Path(storage.sqlite_path)
    sink = Path(storage.local_path)
    device = device or cfg.device_id
    data = Dataset(device=device, model=cfg.model.name, since=since)
    data.drift_mode = getattr(cfg.drift_detection, "mode", None)
    collector = _Collector(data, device, since)
    found = False
    if db.is_file():
        chunks = _read_outbox(collector, db)
        data.sources.append(f"outbox {db} ({chunks} chunks, read-only)")
        found = True
    else:
        data.notes.append(f"no outbox at {db}")
    if sink.is_dir():
        prefix = storage.prefix or ""
        n = _read_sink(collector, _sink_objects(sink, prefix), device)
        data.sources.append(f"local sink {sink} ({n} objects)")
        found = True
    if storage.type == "s3":
        data.notes.append(
            "storage.type is s3: records already uploaded are in the bucket, not here; "
            "sync it (aws s3 sync) and use --from DIR for the full history"
        )
    if not found:
        raise ReportError(f"no data: neither the outbox {db} nor the sink directory {sink} exists")
    data.live = _agent_answers(cfg)
    return _finish(data)


def _agent_answers(cfg: Any) -> bool:
    """True when the config's agent answers on its control socket right now."""
    from edge_actors import control

    try:
        control.request(cfg.run_dir, cfg.instance, {"op": "ping"}, timeout=1.0)
    except control.ControlError:
        return False
    return True


# ---------------------------------------------------------------------------- episodes


@dataclass
class Episode:
    """One drift episode of a (feature, test): from ``drift_started`` to ``drift_resolved``.

    ``start`` is ``None`` when the start was not in the data (before ``--since``
    or dropped); ``end`` is ``None`` while the episode is still open (the agent
    still runs), the end of the agent's run when it stopped first
    (``run_ended``).
    """

    feature: str
    test: str
    start: float | None
    end: float | None
    peak: float = math.nan
    threshold: float = math.nan
    events: int = 0
    #: The episode was still open when the agent stopped: ``end`` is the end of that run.
    run_ended: bool = False

    @property
    def quality(self) -> bool:
        """A data-quality alarm (NaN rate, out of range), not a distribution test."""
        return self.test in QUALITY_TESTS


def agent_runs(ts: Sequence[float], min_gap: float = 30.0) -> list[tuple[float, float]]:
    """The spans the agent ran, from its periodic samples' times: ``[(first, last), ...]``.

    A gap longer than 5 median sampling intervals (at least ``min_gap``
    seconds) separates two runs: nothing was sampled, so no agent ran.
    """
    times = sorted(t for t in ts if math.isfinite(t))
    if not times:
        return []
    steps = sorted(b - a for a, b in itertools.pairwise(times) if b > a)
    gap = max(min_gap, 5 * steps[len(steps) // 2]) if steps else min_gap
    runs = [[times[0], times[0]]]
    for t in times[1:]:
        if t - runs[-1][1] > gap:
            runs.append([t, t])
        else:
            runs[-1][1] = t
    return [(a, b) for a, b in runs]


def _run_end(runs: Sequence[tuple[float, float]], t: float | None) -> float | None:
    """End of the run that holds ``t`` (or is nearest to it); None without runs."""
    if t is None or not runs:
        return None
    for k, (a, b) in enumerate(runs):
        if t <= b:
            # In a gap: the nearer run (events come a little before a run's first sample).
            if t < a and k and t - runs[k - 1][1] < a - t:
                return runs[k - 1][1]
            return b
    return runs[-1][1]


def drift_episodes(
    events: Sequence[dict[str, Any]],
    runs: Sequence[tuple[float, float]] = (),
    live: bool = True,
) -> list[Episode]:
    """Pair ``drift_started``/``drift_resolved`` events per (feature, test), in time order.

    Events of the same (feature, test) inside an episode (checks, repeated
    starts in ``per_check`` mode) raise its peak statistic. With ``runs``
    (:func:`agent_runs`), an episode still open when its agent stopped ends
    with that run: a ``drift_started`` in a later run begins a new episode, and
    at the end of the data only an episode of the last run of an agent that
    is still running (``live``) stays open. A ``drift_resolved`` always closes
    the open episode (a restarted drift worker resumes its state).
    """
    open_: dict[tuple[str, str], Episode] = {}
    out: list[Episode] = []

    def close_with_run(ep: Episode) -> None:
        end = _run_end(runs, ep.start)
        if end is not None:
            ep.end, ep.run_ended = max(end, ep.start or end), True

    for ev in sorted(events, key=lambda r: _num(r.get("ts"))):
        key = (str(ev.get("feature", "")), str(ev.get("test", "")))
        state = ev.get("state")
        ts = _num(ev.get("ts"))
        stat = _num(ev.get("statistic"))
        ep = open_.get(key)
        if state == "drift_started" and ep is not None and runs:
            end = _run_end(runs, ep.start)
            if end is not None and end < ts and _run_end(runs, ts) != end:
                # The agent stopped while this episode was open and started afresh.
                close_with_run(ep)
                del open_[key]
                ep = None
        if state == "drift_started" and ep is None:
            ep = Episode(key[0], key[1], ts, None, threshold=_num(ev.get("threshold")))
            open_[key] = ep
            out.append(ep)
        elif state == "drift_resolved":
            if ep is None:
                ep = Episode(key[0], key[1], None, ts, threshold=_num(ev.get("threshold")))
                out.append(ep)
            else:
                del open_[key]
                ep.end = ts
        if ep is not None:
            ep.events += 1
            if not math.isnan(stat) and not stat <= ep.peak:
                ep.peak = stat
    if runs:
        last_run_end = runs[-1][1]
        for ep in open_.values():
            if not (live and _run_end(runs, ep.start) == last_run_end):
                close_with_run(ep)
    return out


def _is_live(data: Dataset, runs: Sequence[tuple[float, float]]) -> bool:
    """Whether the last run's agent may still run: asked when known, else by recency."""
    if data.live is not None:
        return data.live
    # A copy of a sink tree: recent samples mean an agent that (probably) runs.
    return bool(runs) and time.time() - runs[-1][1] < LIVE_SECONDS


# ---------------------------------------------------------------------------- charts


def _fmt_time(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "-"
    return dt.datetime.fromtimestamp(t, _UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = round(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s}s" if s else f"{m}m"
    return f"{s}s"


def _fmt_num(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.4g}"


def _dates(ts: Sequence[float] | Any) -> Any:
    """Epoch seconds -> numpy datetime64 (UTC), which matplotlib plots as dates."""
    import numpy as np

    arr = np.asarray(ts, dtype=np.float64)
    return (arr * 1e6).astype("datetime64[us]")


class _Charts:
    """Figure helpers bound to the time range of the whole page, so charts line up."""

    def __init__(self, t0: float, t1: float) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import dates as mdates
        from matplotlib.figure import Figure

        self._figure_cls = Figure
        self._mdates = mdates
        if not t1 > t0:
            t0, t1 = t0 - 60.0, t1 + 60.0
        pad = (t1 - t0) * 0.01
        self.t0, self.t1 = t0, t1
        self.xlim = _dates([t0 - pad, t1 + pad])

    def figure(self, height: float = 2.8) -> tuple[Figure, Axes]:
        fig = self._figure_cls(figsize=(_FIG_WIDTH, height), dpi=100)
        # Fixed margins (in inches), not a constrained layout: the plot areas of
        # every chart line up vertically, so times can be compared across charts.
        fig.subplots_adjust(
            left=0.75 / _FIG_WIDTH,
            right=1 - 0.2 / _FIG_WIDTH,
            bottom=0.62 / height,
            top=1 - 0.32 / height,
        )
        ax = fig.add_subplot()
        ax.set_xlim(self.xlim[0], self.xlim[1])
        locator = self._mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        fmt = self._mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(fmt)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("time (UTC)", fontsize=8)
        return fig, ax

    def shade(self, ax: Axes, episodes: Sequence[Episode], color: str, label: str) -> None:
        for i, ep in enumerate(episodes):
            start = self.t0 if ep.start is None else ep.start
            end = self.t1 if ep.end is None else ep.end
            if end <= start:
                end = start + (self.t1 - self.t0) * 0.002
            x = _dates([start, end])
            ax.axvspan(x[0], x[1], color=color, alpha=0.18, lw=0, label=label if i == 0 else None)

    @staticmethod
    def png(fig: Figure) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        return base64.b64encode(buf.getvalue()).decode("ascii")


def _legend(ax: Axes) -> None:
    """One row of legend above the plot, right of the title: it never hides data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncol=len(handles),
            fontsize=8,
            frameon=False,
            borderaxespad=0.1,
            handlelength=1.6,
            columnspacing=1.2,
        )


def _headroom(ax: Axes) -> None:
    """y from 0, with room above the highest point for the markers and the legend."""
    _lo, hi = ax.dataLim.intervaly
    top = hi * 1.18 if math.isfinite(hi) and hi > 0 else 1.0
    ax.set_ylim(0, top)


def _stat_mode(events: Sequence[dict[str, Any]], test: str, config_mode: str | None) -> str:
    """``"p"`` when ``threshold`` is a p-value bound, ``"d"`` when it bounds the statistic.

    Chi-squared (and the atom share test) and ``per_check`` mode compare p-values;
    calibrated KS compares D.
    """
    if test in ("chi2", "atom_share") or config_mode == "per_check":
        return "p"
    if config_mode == "calibrated":
        return "d"
    d_votes = p_votes = 0
    for ev in events:
        if ev.get("state") != "drift_started":
            continue
        stat, p, thr = _num(ev.get("statistic")), _num(ev.get("p_value")), _num(ev.get("threshold"))
        if stat >= thr:
            d_votes += 1
        elif p < thr:
            p_votes += 1
    return "p" if p_votes > d_votes else "d"


@dataclass
class _Chart:
    id: str
    title: str
    png: str | None = None
    note: str | None = None
    #: Data points drawn (finite values of every series), shown as ``data-points``.
    points: int = 0


def _points(ax: Axes) -> int:
    """Finite data points of every line on ``ax`` (what a reader sees plotted)."""
    import numpy as np

    n = 0
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata(), dtype=np.float64)
        n += int(np.isfinite(y).sum())
    return n


def _html_id(kind: str, name: str, used: set[str]) -> str:
    base = f"chart-{kind}-{_ID_RE.sub('_', name) or 'x'}"
    out, k = base, 2
    while out in used:
        out, k = f"{base}-{k}", k + 1
    used.add(out)
    return out


def _drift_charts(
    data: Dataset,
    charts: _Charts,
    episodes: Sequence[Episode],
    runs: Sequence[tuple[float, float]] = (),
) -> list[_Chart]:
    used: set[str] = set()
    by_feature: dict[str, list[dict[str, Any]]] = {}
    for ev in data.events:
        if ev.get("test") in QUALITY_TESTS:
            continue
        by_feature.setdefault(str(ev.get("feature", "")), []).append(ev)
    out = []
    for feature, evs in by_feature.items():
        tests = sorted({str(e.get("test", "")) for e in evs})
        # One chart per feature; a feature normally has one distribution test.
        for test in tests:
            tevs = [e for e in evs if e.get("test") == test]
            name = feature if len(tests) == 1 else f"{feature}-{test}"
            out.append(_drift_chart(data, charts, episodes, feature, test, tevs, name, used, runs))
    return out


def _drift_chart(
    data: Dataset,
    charts: _Charts,
    episodes: Sequence[Episode],
    feature: str,
    test: str,
    evs: Sequence[dict[str, Any]],
    name: str,
    used: set[str],
    runs: Sequence[tuple[float, float]] = (),
) -> _Chart:
    mode = _stat_mode(evs, test, data.drift_mode)
    value_key = "p_value" if mode == "p" else "statistic"
    # Every event is the result of one check: the periodic summaries and the
    # state changes alike, so a short run still draws a line.
    checks = [e for e in evs if not math.isnan(_num(e.get(value_key)))]

    def value(ev: dict[str, Any]) -> float:
        # A p-value of 0 (underflow) is drawn at the bottom of the log scale.
        y = _num(ev.get(value_key))
        return max(y, 1e-16) if mode == "p" else y

    fig, ax = charts.figure()
    eps = [e for e in episodes if e.feature == feature and e.test == test]
    charts.shade(ax, eps, "tab:red", "drift episode")
    if checks:
        ts = [_num(e.get("ts")) for e in checks]
        ys = [value(e) for e in checks]
        xs, vals = _with_gaps(ts, ys, runs)
        ax.plot(_dates(xs), vals, ".-", color="tab:blue", ms=4, lw=1.2, label=value_key)
        thr = [_num(e.get("threshold")) for e in checks]
        ax.step(_dates(ts), thr, where="post", color="tab:red", ls="--", lw=1.2, label="threshold")
    for state, marker, color in (("drift_started", "^", "tab:red"), ("drift_resolved", "v", "g")):
        sel = [e for e in evs if e.get("state") == state]
        if sel:
            ax.plot(
                _dates([_num(e.get("ts")) for e in sel]),
                [value(e) for e in sel],
                marker,
                color=color,
                ms=8,
                ls="none",
                label=state,
            )
    if mode == "p":
        ax.set_yscale("log")
        ax.set_ylabel("p-value (drift below threshold)", fontsize=8)
    else:
        ax.set_ylabel(f"{test} statistic", fontsize=8)
        _headroom(ax)
    ax.set_title(f"drift: {feature} ({test})", fontsize=10, loc="left")
    _legend(ax)
    note = None if len(checks) > 1 else "one check of this feature in the data"
    chart = _Chart(
        _html_id("drift", name, used),
        f"drift of {feature} ({test})",
        charts.png(fig),
        None,
        _points(ax),
    )
    chart.note = note
    return chart


def _quality_charts(data: Dataset, charts: _Charts, episodes: Sequence[Episode]) -> list[_Chart]:
    used: set[str] = set()
    features: dict[str, None] = {}
    for ev in data.events:
        feature = str(ev.get("feature", ""))
        if ev.get("test") in QUALITY_TESTS or (
            ev.get("state") == "check"
            and not (
                math.isnan(_num(ev.get("nan_rate")))
                and math.isnan(_num(ev.get("out_of_range_rate")))
            )
        ):
            features.setdefault(feature)
    out = []
    for feature in features:
        evs = [e for e in data.events if str(e.get("feature", "")) == feature]
        fig, ax = charts.figure(2.4)
        eps = [e for e in episodes if e.feature == feature and e.quality]
        charts.shade(ax, [e for e in eps if e.test == "nan_rate"], "tab:orange", "NaN-rate alarm")
        charts.shade(
            ax, [e for e in eps if e.test == "out_of_range"], "tab:purple", "out-of-range alarm"
        )
        checks = [e for e in evs if e.get("state") == "check"]
        for key, color, label in (
            ("nan_rate", "tab:orange", "NaN rate"),
            ("out_of_range_rate", "tab:purple", "out-of-range rate"),
        ):
            pts = [(_num(e.get("ts")), _num(e.get(key))) for e in checks]
            pts = [p for p in pts if not math.isnan(p[1])]
            if pts:
                ax.plot(
                    _dates([p[0] for p in pts]),
                    [p[1] for p in pts],
                    ".-",
                    color=color,
                    lw=1,
                    ms=3,
                    label=f"{label} (checks)",
                )
        for test, color, label in (
            ("nan_rate", "tab:orange", "NaN rate"),
            ("out_of_range", "tab:purple", "out-of-range rate"),
        ):
            sel = [e for e in evs if e.get("test") == test]
            if not sel:
                continue
            ts = _dates([_num(e.get("ts")) for e in sel])
            for state, marker in (("drift_started", "^"), ("drift_resolved", "v")):
                idx = [i for i, e in enumerate(sel) if e.get("state") == state]
                if idx:
                    ax.plot(
                        ts[idx],
                        [_num(sel[i].get("statistic")) for i in idx],
                        marker,
                        color=color,
                        ms=8,
                        ls="none",
                        label=f"{label}: {state}",
                    )
            thr = [_num(e.get("threshold")) for e in sel]
            ax.hlines(
                thr[-1],
                charts.xlim[0],
                charts.xlim[1],
                colors=color,
                linestyles="--",
                lw=1,
                label=f"{label} threshold",
            )
        _headroom(ax)
        ax.yaxis.set_major_formatter(_percent_formatter())
        ax.set_ylabel("share of values", fontsize=8)
        ax.set_title(f"data quality: {feature}", fontsize=10, loc="left")
        _legend(ax)
        out.append(
            _Chart(
                _html_id("quality", feature, used),
                f"data quality of {feature}",
                charts.png(fig),
                points=_points(ax),
            )
        )
    return out


def _percent_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0)


def _with_gaps(
    ts: Sequence[float], ys: Sequence[float], runs: Sequence[tuple[float, float]]
) -> tuple[list[float], list[float]]:
    """``ts``/``ys`` (in time order) with a NaN point wherever a run ended between two points.

    matplotlib breaks a line at NaN: no line is drawn across time no agent ran.
    """
    import bisect

    ends = sorted(b for _a, b in runs[:-1])
    out_t: list[float] = []
    out_y: list[float] = []
    for i, (t, y) in enumerate(zip(ts, ys, strict=True)):
        if i:
            k = bisect.bisect_left(ends, ts[i - 1])
            if k < len(ends) and ends[k] < t:
                out_t.append((ts[i - 1] + t) / 2)
                out_y.append(math.nan)
        out_t.append(t)
        out_y.append(y)
    return out_t, out_y


def _system_charts(
    data: Dataset, charts: _Charts, skipped: list[str], runs: Sequence[tuple[float, float]]
) -> list[_Chart]:
    rows = [r for r in data.system if not math.isnan(_num(r.get("ts")))]
    if not rows:
        return []
    times = [_num(r["ts"]) for r in rows]
    out = []
    specs: list[tuple[str, str, list[tuple[str, str, str]], str]] = [
        ("cpu", "CPU", [("cpu_percent", "CPU %", "tab:blue")], "%"),
        (
            "mem",
            "memory",
            [("mem_percent", "memory %", "tab:green"), ("swap_percent", "swap %", "tab:gray")],
            "%",
        ),
        ("disk", "disk", [("disk_percent", "disk used %", "tab:brown")], "%"),
        ("temp", "temperature", [("temp_max_c", "max temperature °C", "tab:red")], "°C"),
    ]
    for key, title, series, unit in specs:
        ys = {f: [_num(r.get(f)) for r in rows] for f, _l, _c in series}
        present = [s for s in series if any(not math.isnan(y) for y in ys[s[0]])]
        if not present:
            if key == "temp":
                skipped.append("no temperature readings (no sensor psutil can read)")
            continue
        fig, ax = charts.figure(2.4)
        for f, label, color in present:
            xs, vals = _with_gaps(times, ys[f], runs)
            # Markers too: a run of a single sample is a point, not an invisible line.
            ax.plot(_dates(xs), vals, ".-", color=color, lw=1, ms=2, label=label)
        if unit == "%":
            # Headroom above 100 %, so a saturated CPU is drawn above the frame line.
            ax.set_ylim(0, 108)
            ax.set_yticks([0, 25, 50, 75, 100])
        else:
            ax.margins(y=0.2)
        ax.set_ylabel(unit, fontsize=8)
        ax.set_title(f"system: {title}", fontsize=10, loc="left")
        _legend(ax)
        out.append(
            _Chart(f"chart-system-{key}", f"system {title}", charts.png(fig), points=_points(ax))
        )
    return out


def _model_chart(data: Dataset, charts: _Charts) -> _Chart | None:
    if not data.model_ts:
        return None
    import numpy as np

    span = max(charts.t1 - charts.t0, 1.0)
    width = max(1.0, span / 120)
    for nice in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 6 * 3600, 86400):
        if nice >= width:
            width = float(nice)
            break
    edges = np.arange(charts.t0, charts.t1 + width, width)
    counts, edges = np.histogram(np.asarray(data.model_ts), bins=edges)
    covered = np.minimum(edges[1:], charts.t1) - edges[:-1]
    if len(counts) > 1 and covered[-1] < width / 2:
        # A last bin that covers a sliver of time would show a false drop (or spike).
        counts, edges, covered = counts[:-1], edges[:-1], covered[:-1]
    rates = counts * 60.0 / np.maximum(covered, 1e-9)
    fig, ax = charts.figure(2.2)
    ax.step(
        _dates(edges[: len(rates) + 1]),
        np.append(rates, rates[-1]),
        where="post",
        color="tab:blue",
        lw=1,
    )
    _headroom(ax)
    ax.set_ylabel("records / min", fontsize=8)
    ax.set_title(f"model records per minute ({_fmt_duration(width)} bins)", fontsize=10, loc="left")
    return _Chart("chart-model-rate", "model record rate", charts.png(fig), points=len(rates))


# ---------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;
max-width:1140px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.meta td:first-child{font-weight:600;background:#fafafa}
figure{margin:.6em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{color:#666;font-size:.85em}
.ongoing{color:#b00;font-weight:600}.muted{color:#888}
.grid{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = ' class="n"' if i in numeric else ""
            out.append(f"<td{cls}>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _figure(chart: _Chart) -> str:
    if chart.png is None:
        return ""
    note = f"<figcaption>{_e(chart.note)}</figcaption>" if chart.note else ""
    return (
        f'<figure><img id="{_e(chart.id)}" alt="{_e(chart.title)}" '
        f'data-points="{chart.points}" src="data:image/png;base64,{chart.png}">{note}</figure>'
    )


def _drops_table(data: Dataset) -> str:
    agg: dict[tuple[str, str], list[int]] = {}
    for r in data.drops:
        key = (str(r.get("stream", "?")), str(r.get("reason", "?")))
        cur = agg.setdefault(key, [0, 0])
        d, t = _num(r.get("dropped")), _num(r.get("total"))
        cur[0] += 0 if math.isnan(d) else int(d)
        cur[1] = max(cur[1], 0 if math.isnan(t) else int(t))
    if not agg:
        return '<p class="note">No drops reported.</p>'
    rows = [[_e(s), _e(r), f"{d:,}", f"{t:,}"] for (s, r), (d, t) in sorted(agg.items())]
    return _table(["stream", "reason", "dropped in range", "total since install"], rows, (2, 3))


def _episodes_table(episodes: Sequence[Episode], t_last: float) -> str:
    if not episodes:
        return '<p class="note" id="episodes-none">No drift episodes in this range.</p>'
    rows = []
    for ep in sorted(episodes, key=lambda e: e.start if e.start is not None else -math.inf):
        start = _fmt_time(ep.start) if ep.start is not None else "before the range"
        if ep.end is None:
            end = '<span class="ongoing">ongoing</span>'
            dur = _fmt_duration(t_last - ep.start) + "+" if ep.start is not None else "-"
        elif ep.run_ended:
            end = f'<span class="muted">agent stopped {_e(_fmt_time(ep.end))}</span>'
            dur = _fmt_duration(ep.end - ep.start) if ep.start is not None else "-"
        else:
            end = _e(_fmt_time(ep.end))
            dur = _fmt_duration(ep.end - ep.start) if ep.start is not None else "-"
        kind = "data quality" if ep.quality else "distribution"
        rows.append(
            [
                _e(ep.feature),
                _e(ep.test),
                _e(kind),
                _e(start),
                end,
                _e(dur),
                _e(_fmt_num(ep.peak)),
                _e(_fmt_num(ep.threshold)),
            ]
        )
    return (
        '<div id="episodes">'
        + _table(
            [
                "feature",
                "test",
                "kind",
                "started (UTC)",
                "resolved (UTC)",
                "duration",
                "peak",
                "threshold",
            ],
            rows,
            (6, 7),
        )
        + "</div>"
    )


def render_html(data: Dataset, *, title: str | None = None) -> str:
    """The report page for ``data``.

    Raises:
        ReportError: matplotlib is not installed (:data:`MATPLOTLIB_MISSING`).
    """
    try:
        charts = _Charts(data.t_first, data.t_last)
    except ImportError as exc:
        raise ReportError(MATPLOTLIB_MISSING) from exc
    # The agent's own periodic records (system samples, drift events) tell when it ran.
    runs = agent_runs([_num(r.get("ts")) for r in (*data.system, *data.events)])
    episodes = drift_episodes(data.events, runs, _is_live(data, runs))
    drift = _drift_charts(data, charts, episodes, runs)
    quality = _quality_charts(data, charts, episodes)
    system_notes: list[str] = []
    system = _system_charts(data, charts, system_notes, runs)
    model = _model_chart(data, charts)

    t0, t1 = data.t_first, data.t_last
    device = data.device or "unknown"
    heading = title or f"edge-actors report: {device}"
    meta = [
        ("device", _e(device)),
        ("model", _e(data.model or "unknown")),
        (
            "time range (UTC)",
            _e(f"{_fmt_time(t0)} \u2192 {_fmt_time(t1)} ({_fmt_duration(t1 - t0)})"),
        ),
        ("records", _e(f"{data.total:,}")),
        ("sources", "<br>".join(_e(s) for s in data.sources) or "-"),
        ("generated", _e(_fmt_time(time.time()) + " UTC")),
    ]
    if data.since is not None:
        meta.insert(3, ("since", _e(_fmt_time(data.since) + " UTC")))
    if data.duplicates:
        meta.append(("duplicates", _e(f"{data.duplicates:,} records in both outbox and sink")))
    if data.unreadable:
        meta.append(("unreadable", _e(f"{data.unreadable:,} objects, chunks or lines skipped")))
    stream_rows = [
        [_e(name), f"{info.count:,}", _e(_fmt_time(info.t_first)), _e(_fmt_time(info.t_last))]
        for name, info in sorted(data.streams.items())
    ]
    n_drift = sum(1 for e in episodes if not e.quality)
    n_open = sum(1 for e in episodes if e.end is None)

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(heading)}</h1>",
        f'<p class="note">{len(episodes)} episodes ({n_drift} distribution, '
        f"{len(episodes) - n_drift} data quality), {n_open} still open.</p>",
        '<div class="grid"><div>',
        '<table class="meta" id="summary"><tbody>',
        *(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in meta),
        "</tbody></table>",
        *(f'<p class="note">{_e(n)}</p>' for n in data.notes),
        "</div><div>",
        '<div id="streams">',
        _table(["stream", "records", "first (UTC)", "last (UTC)"], stream_rows, (1,)),
        '</div><h3 style="margin:.4em 0;font-size:1em">Drops</h3><div id="drops">',
        _drops_table(data),
        "</div></div></div>",
        "<h2>Drift episodes</h2>",
        _episodes_table(episodes, t1),
        "<h2>Drift statistics</h2>",
        '<p class="note">Statistic of the periodic <code>check</code> events against the '
        "threshold it is compared with; shaded: drift episodes (start to resolve, or to the "
        "end of the data when unresolved).</p>",
    ]
    if drift:
        parts.extend(_figure(c) for c in drift)
    else:
        parts.append('<p class="note" id="drift-none">No drift events in this range.</p>')
    parts.append("<h2>Data quality</h2>")
    if quality:
        parts.append(
            '<p class="note">NaN and out-of-range rates of the window, from the data-quality '
            "alarms (markers) and the check summaries when they carry the rates; shaded: alarms."
            "</p>"
        )
        parts.extend(_figure(c) for c in quality)
    else:
        parts.append('<p class="note" id="quality-none">No data-quality alarms.</p>')
    parts.append("<h2>System health</h2>")
    if system:
        parts.extend(_figure(c) for c in system)
        parts.extend(f'<p class="note">{_e(n)}.</p>' for n in system_notes)
    else:
        parts.append('<p class="note" id="system-none">No system samples in this range.</p>')
    parts.append("<h2>Model records</h2>")
    if model is not None:
        parts.append(_figure(model))
    else:
        parts.append('<p class="note" id="model-none">No model records in this range.</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- CLI


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of hours, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report`` on the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="write an HTML report (drift, data quality, system health)",
        description=(
            "Write one self-contained HTML page with charts of the recorded streams: drift "
            "statistics and episodes, data-quality rates, system health, model record rate. "
            "Needs matplotlib: pip install 'edge-actors[report]'."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "-c",
        "--config",
        help="YAML config: read its outbox (read-only) and its local sink directory",
    )
    src.add_argument(
        "--from",
        dest="from_dir",
        metavar="DIR",
        help="a local copy of a sink tree (e.g. aws s3 sync output)",
    )
    p.add_argument("-o", "--output", required=True, metavar="HTML", help="output HTML file")
    p.add_argument(
        "--since", type=_hours, metavar="HOURS", help="only the last HOURS hours (from now)"
    )
    p.add_argument(
        "--device",
        metavar="ID",
        help="device to report on (default: the config's, or the only one)",
    )
    p.set_defaults(func=cmd_report)
    return p


def _write_atomic(path: Path, text: str) -> None:
    from edge_actors.safe_write import UnsafeTarget, write_atomic

    if path.is_dir() and not path.is_symlink():
        raise ReportError(f"-o {path}: is a directory")
    try:
        write_atomic(path, text.encode("utf-8"))
    except UnsafeTarget as exc:
        raise ReportError(f"-o {path}: {exc}") from exc
    except OSError as exc:
        raise ReportError(f"-o {path}: cannot write: {exc.strerror or exc}") from exc


def _check_output(path: Path) -> None:
    """Refuse a bad ``-o`` before reading anything (it is checked again when writing)."""
    from edge_actors.safe_write import UnsafeTarget, check_target

    if path.is_dir() and not path.is_symlink():
        raise ReportError(f"-o {path}: is a directory")
    try:
        check_target(path)
    except UnsafeTarget as exc:
        raise ReportError(f"-o {path}: {exc}") from exc


def cmd_report(args: argparse.Namespace) -> int:
    """``edge-actors report``: exit 0, or 1 with one line on stderr."""
    try:
        # Before reading anything: a missing extra should not cost a long read first.
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ReportError(MATPLOTLIB_MISSING) from None
        _check_output(Path(args.output))
        since = time.time() - args.since * 3600.0 if args.since is not None else None
        if args.from_dir is not None:
            data = load_sink_tree(args.from_dir, device=args.device, since=since)
        else:
            from edge_actors.config import load_config

            cfg = load_config(args.config)
            data = load_config_sources(cfg, device=args.device, since=since)
        if not data.total:
            when = f" in the last {args.since:g} h" if args.since is not None else ""
            raise ReportError(f"no records of device {data.device!r}{when}")
        page = render_html(data)
        out = Path(args.output)
        _write_atomic(out, page)
    except ReportError as exc:
        print(f"edge-actors: {exc}", file=sys.stderr)
        return 1
    print(
        f"{out}: {data.total:,} records, {len(data.events):,} drift events, {len(page) // 1024} KiB"
    )
    return 0
