"""Human rendering of the supervisor's status (``edge-actors status``)."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}{unit}"
    return f"{v}{unit}"


def _sig(v: Any) -> str:
    """A statistic with 4 significant digits (``0.0836``, ``312.4``, ``0``)."""
    return f"{v:.4g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def drift_line(name: str, f: dict[str, Any]) -> str:
    """One feature of the drift worker's status: state, test statistic / threshold, distances.

    ``sqft: drift (ks 0.4516 / 0.0836, p=0, W1 312.4, PSI 1.98)``; before the
    first check of a feature: ``sqft: ok (no data yet)``.
    """
    state = f.get("state", "?")
    if f.get("statistic") is None:
        return f"{name}: {state} (no data yet)"
    parts = [f"{f.get('test', '?')} {_sig(f['statistic'])} / {_sig(f.get('threshold'))}"]
    if f.get("p_value") is not None:
        parts.append(f"p={_sig(f['p_value'])}")
    if f.get("wasserstein") is not None:
        parts.append(f"W1 {_sig(f['wasserstein'])}")
    if f.get("psi") is not None:
        parts.append(f"PSI {_sig(f['psi'])}")
    return f"{name}: {state} ({', '.join(parts)})"


def _worker_lines(name: str, stats: dict[str, Any]) -> list[str]:
    """The indented detail lines of one worker (the drift worker's per feature)."""
    features = stats.get("features") if name == "drift" else None
    models = stats.get("models") if name == "drift" else None
    perf = stats.get("performance_lines") if name == "drift" else None
    perf_lines = list(perf) if isinstance(perf, list) else []
    if isinstance(models, dict) and len(models) > 1:
        # Several models or versions: a heading each, its features below.
        lines: list[str] = []
        for key, m in models.items():
            if not isinstance(m, dict):
                continue
            head = f"{key}: {m.get('records', 0)} records"
            lines.append(head + (f", {m['error']}" if m.get("error") else ""))
            feats = m.get("features") or {}
            lines += ["  " + drift_line(n, f) for n, f in feats.items() if isinstance(f, dict)]
        return lines + perf_lines
    if isinstance(features, dict):
        errors = [f"error: {stats['error']}"] if stats.get("error") else []
        lines = [drift_line(n, f) for n, f in features.items() if isinstance(f, dict)]
        return errors + lines + perf_lines
    extra = stats.get("summary_lines")
    return list(extra) if isinstance(extra, list) else []


def render(status: dict[str, Any]) -> str:
    """A compact multi-line summary of a status dict."""
    lines = [
        f"instance {status['instance']} (device {status.get('device_id', '?')}): "
        f"{status['state']}, supervisor pid {status['pid']}, up {_fmt(status['uptime_s'], 's')}",
        "",
        f"{'WORKER':9} {'PID':>7} {'STATE':9} {'UP':>8} {'RESTARTS':>8} "
        f"{'MEMORY/BUDGET':>15} {'HB AGE':>7}  LAST EXIT",
    ]
    for name, w in status["workers"].items():
        mem = (
            f"{_fmt(w['memory_mb'])}/{w['memory_limit_mb']:g}MB"
            if w["memory_mb"] is not None
            else f"-/{w['memory_limit_mb']:g}MB"
        )
        reasons = ",".join(f"{k}:{v}" for k, v in w["restart_reasons"].items())
        # A running worker paused by the pause op (EdgeMonitor.stop_system_monitoring...).
        state = "paused" if w.get("paused") and w["state"] == "running" else w["state"]
        lines.append(
            f"{name:9} {_fmt(w['pid']):>7} {state:9} {_fmt(w['uptime_s'], 's'):>8} "
            f"{w['restarts']:>8} {mem:>15} {_fmt(w['heartbeat_age_s'], 's'):>7}  "
            f"{w['last_exit'] or '-'}" + (f" [{reasons}]" if reasons else "")
        )
    # Ring names grow with the instance name (up to 16 characters): keep the columns.
    width = max([18, *(len(r["name"]) for r in status["rings"])])
    lines += [
        "",
        f"{'RING':{width}} {'KIND':7} {'WRITTEN':>10} {'CAP':>7} {'FILL':>6} {'LOST':>8}",
    ]
    for r in status["rings"]:
        fill = max((c["fill"] for c in r["consumers"]), default=0.0)
        lost = sum(c["lost"] for c in r["consumers"])
        lines.append(
            f"{r['name']:{width}} {r['kind']:7} {r['written']:>10} {r['capacity']:>7} "
            f"{fill * 100:>5.1f}% {lost:>8}" + (f"  ({r['state']})" if "state" in r else "")
        )
    producers = status.get("producers", [])
    lines += ["", f"producers attached: {len(producers)}"]
    for p in producers:
        lines.append(f"  pid {p['pid']} -> {p['lane']} ({p['state']})")
    for bad in status.get("invalid_lanes", []):
        lines.append(f"  INVALID lane {bad['lane']} (pid {bad['pid']}), removed: {bad['problem']}")
    if "shm_mb" in status:
        lines.append(
            f"shared memory: {status['shm_mb']:g} of {status['shm_budget_mb']:g} MB budget"
        )
    for name, w in status["workers"].items():
        extra = _worker_lines(name, w.get("stats") or {})
        if extra:
            lines += ["", f"{name}:"] + [f"  {ln}" for ln in extra]
    return "\n".join(lines)
