"""``make bench``: run every benchmark, write docs/performance.md and docs/performance.json.

    python benchmarks/run_all.py [--quick] [--only NAME ...]

``--only`` re-runs the named benchmarks and keeps the other results of the
previous docs/performance.json (each result keeps the date it was measured;
the report lists which came from an earlier run).

Every ``benchmarks/*.py`` with a ``__main__`` block is a benchmark, except the
helpers (``agentlib``, ``run_all``) and the scripts another benchmark runs
and embeds (``drift_stats`` in ``drift``, ``uploader_core`` in ``uploader``).
Each runs as a subprocess with a timeout and prints ONE JSON object; the
objects are collected into ``docs/performance.json`` and one table in
``docs/performance.md``: figure | measured | target | baseline (same run) |
ratio | ok?. Every speed or memory figure is compared against a baseline
measured in the same run on the same machine (shared, noisy machines make
absolute numbers from different runs incomparable).

Exit status: non-zero only if a benchmark crashed, timed out or printed no
JSON. A missed target is marked in the table, not an error.
``--quick`` passes each benchmark's quick flags (shorter runs, less precise).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
DOCS = REPO / "docs"

#: Not benchmarks: shared code and this runner.
HELPERS = {"agentlib", "run_all"}
#: Run (and embedded) by another benchmark: not run twice.
EMBEDDED = {
    "drift_stats": "drift",
    "drift_cases": "drift",
    "uploader_core": "uploader",
    "uploader_cpu": "uploader",
}
#: Run order (the rest follow alphabetically).
ORDER = ["producer", "restart", "footprint", "drift", "uploader", "burst"]
QUICK_ARGS = {"footprint": ["--settle", "10", "--window", "10"]}
TIMEOUTS = {
    "footprint": 300,
    "drift": 3600,
    "restart": 240,
    "burst": 240,
    "box_cost": 1200,
    "fleet": 7200,
}
DEFAULT_TIMEOUT = 300


# ------------------------------------------------------------------ discovery
def discover() -> list[str]:
    """Names of the benchmark scripts, in run order."""
    names = []
    for path in sorted(BENCH.glob("*.py")):
        name = path.stem
        if name in HELPERS or name in EMBEDDED or name.startswith("_"):
            continue
        if '__name__ == "__main__"' not in path.read_text():
            continue
        names.append(name)
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def bench_args(name: str, quick: bool) -> list[str]:
    """The command-line flags of one benchmark (quick flags where it has them)."""
    if not quick:
        return []
    if name in QUICK_ARGS:
        return QUICK_ARGS[name]
    return ["--quick"] if "--quick" in (BENCH / f"{name}.py").read_text() else []


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """Run one benchmark; its JSON, or an ``error`` entry."""
    cmd = [sys.executable, str(BENCH / f"{name}.py"), *bench_args(name, quick)]
    timeout = TIMEOUTS.get(name, DEFAULT_TIMEOUT)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        return {"error": f"timed out after {timeout} s", "stderr_tail": err[-2000:]}
    elapsed = time.perf_counter() - t0
    lines = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("{")]
    if res.returncode != 0 or not lines:
        return {
            "error": f"exit status {res.returncode}" if res.returncode else "no JSON on stdout",
            "stderr_tail": res.stderr[-2000:],
            "stdout_tail": res.stdout[-1000:],
            "wall_s": round(elapsed, 1),
        }
    try:
        out: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return {"error": f"bad JSON: {exc}", "stdout_tail": res.stdout[-1000:]}
    out["wall_s"] = round(elapsed, 1)
    out["command"] = " ".join(["python", f"benchmarks/{name}.py", *cmd[2:]])
    return out


# ------------------------------------------------------------------ machine
def machine() -> dict[str, Any]:
    """Platform, CPU model, cores, RAM, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                cpu = value.strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram,
        "python": platform.python_version(),
    }


# ------------------------------------------------------------------- table
def get(d: Any, path: str) -> Any:
    """``d["a"]["b"]`` for ``"a.b"``; None when any part is missing."""
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def fmt(x: Any, unit: str = "") -> str:
    """A number for the table: thousands separators, 3 significant digits for small ones."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        ax = abs(x)
        if isinstance(x, int) or ax >= 1000:
            s = f"{x:,.0f}"
        elif ax >= 100:
            s = f"{x:.0f}"
        elif ax >= 10:
            s = f"{x:.1f}"
        elif ax >= 1:
            s = f"{x:.2f}"
        else:
            s = f"{x:.3g}"
        return f"{s} {unit}".rstrip()
    return str(x)


class Table:
    """Rows of figure | measured | target | baseline | ratio | ok?."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []
        self.missed: list[str] = []

    def section(self, title: str) -> None:
        self.rows.append((f"**{title}**", "", "", "", "", ""))

    def add(
        self,
        figure: str,
        measured: Any,
        target: str = "",
        ok: bool | None = None,
        baseline: str = "",
        ratio: float | None = None,
        unit: str = "",
    ) -> None:
        m = measured if isinstance(measured, str) else fmt(measured, unit)
        r = "" if ratio is None else f"{ratio:,.1f}x" if ratio < 1000 else f"{ratio:,.0f}x"
        mark = "—" if ok is None else ("yes" if ok else "**NO**")
        if ok is False:
            self.missed.append(figure)
        self.rows.append((figure, m, target, baseline, r, mark))

    def markdown(self) -> str:
        head = "| figure | measured | target | baseline (same run) | ratio | ok? |"
        sep = "|---|---|---|---|---|---|"
        body = ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join([head, sep, *body])


def _ok(x: Any, pred: Callable[[Any], bool]) -> bool | None:
    return None if x is None else bool(pred(x))


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def _drift_cases(t: Table, c: dict[str, Any]) -> None:
    """Rows for ``benchmarks/drift_cases.py`` (embedded in the drift benchmark)."""
    if not c or "error" in c:
        return
    st, dl, pe = c.get("stationary", {}), c.get("delays", {}), c.get("peers", {})
    for phi in ("0.3", "0.5", "0.9", "0.99"):
        x = st.get(f"ar1_phi_{phi}", {})
        # Keys hold a dot ("0.5"): no dotted path through get().
        peer = pe.get(f"stationary_ar1_phi_{phi}", {})
        naive = peer.get("naive_ks_2samp_p05_alarms_per_million")
        kswin = peer.get("river_kswin_alarms_per_million")
        t.add(
            f"false `drift_started` per million, AR(1) phi = {phi} "
            f"(shown drifting {fmt(100 * x.get('share_drifting', 0))} % of checks)",
            x.get("false_starts_per_million"),
            "≤ 1" if phi != "0.99" else "drifting ≤ 1 %",
            _ok(x.get("false_starts_per_million"), lambda v: v <= 1)
            if phi != "0.99"
            else _ok(x.get("share_drifting"), lambda v: v <= 0.01),
            (f"naive ks_2samp {fmt(naive)}; " if naive is not None else "")
            + (f"river KSWIN {fmt(kswin)}" if kswin is not None else ""),
        )
    for n in ("1000", "10000"):
        x = st.get(f"categorical_ref_{n}", {})
        t.add(
            f"false `drift_started` per million, categorical, references of {n} rows",
            x.get("false_starts_per_million"),
            "≤ 1",
            _ok(x.get("false_starts_per_million"), lambda v: v <= 1),
        )
    for name, label in (("ties", "count feature (4 values)"), ("nan_20pc", "20 % NaN as trained")):
        x = st.get(name, {})
        t.add(
            f"false starts per million, {label}",
            x.get("false_starts_per_million"),
            "≤ 1",
            _ok(x.get("false_starts_per_million"), lambda v: v <= 1),
        )
    rows = [
        ("shift_0.5sd_iid", "0.5 sd shift, independent records", 600),
        ("shift_0.5sd_ar1_phi_0.9", "0.5 sd shift, AR(1) phi = 0.9", 10_000),
    ]
    for key, label, goal in rows:
        x = dl.get(key, {})
        naive = get(
            pe, f"delay_0.5sd_{'iid' if 'iid' in key else 'ar1_phi_0.9'}.naive_ks_2samp_p05"
        )
        t.add(
            f"detection delay, {label} (median; missed {x.get('missed')} of {x.get('runs')})",
            x.get("median"),
            f"≤ {goal:,} records",
            _ok(x.get("median"), lambda v, g=goal: v <= g),
            f"naive ks_2samp {fmt((naive or {}).get('median'))}" if naive else "",
            unit="records",
        )
    for share in ("5", "2"):
        x = get(dl, f"new_category_{share}pc.unknown_category_event") or {}
        t.add(
            f"new category in {share} % of rows: `unknown_category` delay (median; missed "
            f"{x.get('missed')})",
            x.get("median"),
            "",
            None,
            unit="records",
        )
    chi, ks = dl.get("ties_shift_chi2_on_values", {}), dl.get("ties_shift_ks_forced", {})
    t.add(
        "count feature, shares moved (KS distance 0.1): delay with chi-squared on its values",
        chi.get("median"),
        "< KS",
        _ok(_ratio(ks.get("median"), chi.get("median")), lambda v: v > 1),
        f"KS {fmt(ks.get('median'))}",
        _ratio(ks.get("median"), chi.get("median")),
        unit="records",
    )
    atom = st.get("atom_90pc", {})
    t.add(
        "false starts per million, 0 in 90 % of rows and a continuous rest (atom split)",
        get(atom, "split.false_starts_per_million"),
        "≤ 1",
        _ok(get(atom, "split.false_starts_per_million"), lambda v: v <= 1),
        f"whole-feature KS {fmt(get(atom, 'ks_whole.false_starts_per_million'))}",
    )
    for key, what in (
        ("atom_rest_shift", "the continuous rest shifted 0.5 sd"),
        ("atom_share_90_to_85pc", "the atom's share 90 -> 85 %"),
    ):
        sp, kw = get(dl, f"{key}.split") or {}, get(dl, f"{key}.ks_whole") or {}
        t.add(
            f"0 in 90 % of rows, {what}: delay with the atom split (median; missed "
            f"{fmt(sp.get('missed'))} of {fmt(sp.get('runs'))})",
            sp.get("median"),
            "< KS",
            _ok(_ratio(kw.get("median"), sp.get("median")), lambda v: v > 1),
            f"whole-feature KS {fmt(kw.get('median'))}, missed {fmt(kw.get('missed'))}",
            _ratio(kw.get("median"), sp.get("median")),
            unit="records",
        )
    ws = c.get("worst_step", {})
    t.add(
        f"drift step, {ws.get('features')} features drifting at once: longest heartbeat gap "
        f"(worst step {fmt(ws.get('worst_step_s'))} s)",
        ws.get("longest_heartbeat_gap_over_heartbeat"),
        "≤ 1.5 heartbeat intervals",
        _ok(ws.get("longest_heartbeat_gap_over_heartbeat"), lambda v: v <= 1.5),
        unit="intervals",
    )


def _fleet(t: Table, c: dict[str, Any]) -> None:
    """Rows for ``benchmarks/fleet.py``: fleet summary, DuckDB (baseline) vs Spark local."""
    if not c or "error" in c:
        return
    t.section(
        f"fleet summary, 1 day at {fmt(c.get('per_hour', 0) / 3600)} prediction/s per device "
        "(DuckDB is the baseline)"
    )
    for r in c.get("runs", []):
        n, d, s = r.get("devices"), r.get("duckdb", {}), r.get("spark", {})
        same = "identical JSON" if r.get("identical_json") else "JSON DIFFERS"
        t.add(
            f"{fmt(n)} devices ({fmt(r.get('gz_mb'))} MB gz): Spark local wall time ({same})",
            s.get("wall_s"),
            "",
            _ok(r.get("planted_found"), bool),
            f"DuckDB {fmt(d.get('wall_s'))} s",
            _ratio(s.get("wall_s"), d.get("wall_s")),
            unit="s",
        )
        t.add(
            f"{fmt(n)} devices: Spark local peak RSS (process tree, JVM included)",
            s.get("peak_rss_mb"),
            "",
            None,
            f"DuckDB {fmt(d.get('peak_rss_mb'))} MB",
            _ratio(s.get("peak_rss_mb"), d.get("peak_rss_mb")),
            unit="MB",
        )
    for engine, f in (c.get("fit") or {}).items():
        if f:
            t.add(
                f"{engine}: projected wall time for 20,000 devices "
                f"({fmt(f.get('fixed_s'))} s + {fmt(f.get('per_device_s'))} s/device)",
                f.get("projected_20000_s"),
                unit="s",
            )


def _models(t: Table, c: dict[str, Any]) -> None:
    """Rows for ``benchmarks/models.py``: what each additional model costs the agent."""
    if not c or "error" in c:
        return
    per, one = c.get("per_additional_model", {}), c.get("baseline_one_model", {})
    ratio = c.get("ratio_largest_to_one", {})
    most = max((r.get("models", 0) for r in c.get("runs", [])), default=0)
    t.section(
        f"several models ({fmt(c.get('rate_per_model'))} predictions/s per model; one model is "
        "the baseline)"
    )
    for key, label, unit, base in (
        ("agent_pss_mb", "agent PSS", "MB", one.get("agent_pss_mb")),
        ("drift_uss_mb", "drift worker USS", "MB", one.get("drift_uss_mb")),
        ("lane_shm_mb", "lane shared memory", "MB", one.get("lane_shm_mb")),
    ):
        t.add(
            f"{label} per additional model",
            per.get(key),
            "",
            None,
            f"one model {fmt(base)}",
            unit=unit,
        )
    cpu = per.get("agent_cpu_share")
    t.add(
        "agent CPU per additional model (% of a core)",
        None if cpu is None else 100 * cpu,
        "",
        None,
        f"{most} models / one: CPU {fmt(ratio.get('agent_cpu'))}x, PSS "
        f"{fmt(ratio.get('agent_pss'))}x",
        unit="%",
    )


def _performance_delay(t: Table, c: dict[str, Any]) -> None:
    """Rows for ``benchmarks/performance_delay.py``: late labels to ``performance_degraded``."""
    if not c or "error" in c:
        return
    st, lab = c.get("setup", {}), c.get("labels_to_detect", {})
    t.section(
        f"ground truth: accuracy {st.get('accuracy')} with {fmt(100 * st.get('label_share', 0))} % "
        f"of labels {st.get('label_delay_s')} s late, {fmt(c.get('runs'))} runs"
    )
    t.add(
        f"labelled records to performance_degraded, median (p10 {fmt(lab.get('p10'))}, p90 "
        f"{fmt(lab.get('p90'))}, missed {fmt(c.get('missed'))})",
        lab.get("median"),
        "",
        _ok(c.get("missed"), lambda v: v == 0),
    )
    t.add(
        "false performance_degraded without the change (same runs)",
        c.get("false_alarms_without_change"),
        "0",
        _ok(c.get("false_alarms_without_change"), lambda v: v == 0),
    )
    cost = c.get("cost", {})
    t.add(
        "join + tracker CPU per lane record",
        cost.get("feed_us_per_record"),
        "",
        None,
        # A cost above its baseline: the ratio column reads "times better", so it is
        # given in the comparison text instead.
        f"dict update {fmt(cost.get('baseline_dict_update_us_per_record'))} µs "
        f"({fmt(cost.get('ratio'))} times that)",
        None,
        unit="µs",
    )


def _box_cost(t: Table, c: dict[str, Any]) -> None:
    """Rows for ``benchmarks/box_cost.py``: the agent's cost per record on the box."""
    if not c or "error" in c:
        return
    st, wl, oc = c.get("steady", {}), c.get("whylogs", {}), c.get("one_core", {})
    tg = c.get("targets", {})
    t.section("the agent's cost on the box (steady stream, default config)")
    cpu = st.get("agent_cpu_percent_of_one_core")
    by = st.get("cpu_percent_by_process") or {}
    wcpu = wl.get("profile_cpu_percent_of_one_core")
    t.add(
        f"whole agent at {fmt(st.get('rate_achieved'))} predictions/s (8 in + 1 out), CPU "
        f"({', '.join(f'{k} {fmt(v)}' for k, v in by.items())})",
        cpu,
        f"≤ {tg.get('agent_cpu_percent_of_one_core', 5)} % of a core",
        _ok(cpu, lambda v: v <= tg.get("agent_cpu_percent_of_one_core", 5)),
        f"whylogs in-process {fmt(wcpu)} %" if wcpu is not None else wl.get("error", "")[:80],
        _ratio(wcpu, cpu),
        unit="%",
    )
    t.add("… total PSS at the end", st.get("total_pss_mb"), "", None, unit="MB")
    rec = st.get("records") or {}
    t.add(
        f"… records logged {fmt(rec.get('logged'))} = delivered {fmt(rec.get('delivered'))} + "
        f"dropped {fmt((rec.get('dropped_by_producer') or 0) + (rec.get('dropped_by_agent') or 0))}"
        " + unaccounted",
        rec.get("unaccounted"),
        "0",
        _ok(rec.get("unaccounted"), lambda v: v == 0),
    )
    dropped = (rec.get("dropped_by_producer") or 0) + (rec.get("dropped_by_agent") or 0)
    t.add(
        "… records dropped (every raw record delivered: "
        + (
            ", ".join(
                f"{k} {fmt(v)}" for k, v in (rec.get("dropped_by_agent_reasons") or {}).items()
            )
            or "none"
        )
        + ")",
        dropped if rec else None,
        "0",
        _ok(dropped if rec else None, lambda v: v == 0),
    )
    m = c.get("many_records")
    if m:
        n = m.get("records", 0)
        lim = tg.get("pss_mb_after_10m", 64)
        t.add(
            f"agent PSS after {fmt(n)} records pushed at {fmt(m.get('rate_per_s'))} rec/s",
            m.get("pss_mb_at_end"),
            f"≤ {lim} MB" if n >= 10_000_000 else "",
            _ok(m.get("pss_mb_at_end"), lambda v: v <= lim) if n >= 10_000_000 else None,
            unit="MB",
        )
        grow = tg.get("pss_growth_mb_1m_to_10m", 2)
        t.add(
            f"… PSS growth from {fmt(m.get('pss_mb_at_1m_records'))} to {fmt(n)} records",
            m.get("pss_growth_mb_1m_to_end"),
            f"≤ {grow} MB" if n >= 10_000_000 else "",
            _ok(m.get("pss_growth_mb_1m_to_end"), lambda v: v <= grow) if n >= 10_000_000 else None,
            unit="MB",
        )
    if oc and "skipped" not in oc and "error" not in oc:
        t.add(
            f"sustained rate with 0 loss, agent pinned to one CPU (it got "
            f"{fmt(100 * (oc.get('agent_core_share_at_max') or 0))} % of it; "
            f"≈{fmt(oc.get('max_rate_per_full_core_estimate'))} rec/s per whole core)",
            oc.get("max_rate_no_loss"),
            "",
            None,
            unit="rec/s",
        )


def build_table(results: dict[str, dict[str, Any]], quick: bool) -> Table:
    t = Table()
    for name, r in results.items():
        if "error" in r:
            t.add(f"{name}: CRASHED", r["error"], "runs", False)

    p = results.get("producer", {})
    if "error" not in p and p:
        t.section("producer (in the ML process)")
        p50, p99 = get(p, "log_ns.list.p50"), get(p, "log_ns.list.p99")
        t.add(
            "`log()` p50, 8 inputs + 1 output",
            p50,
            "≤ 1,000 ns",
            _ok(p50, lambda x: x <= 1000),
            unit="ns",
        )
        t.add("`log()` p99", p99, "≤ 5,000 ns", _ok(p99, lambda x: x <= 5000), unit="ns")
        lb = get(p, "log_batch_records_per_s")
        t.add(
            "`log_batch()` of 100k rows",
            lb,
            "≥ 20,000,000 rec/s",
            _ok(lb, lambda x: x >= 2e7),
            unit="rec/s",
        )
        ring, q = (
            get(p, "end_to_end_records_per_s.ring"),
            get(p, "end_to_end_records_per_s.mp_queue"),
        )
        pipe = get(p, "end_to_end_records_per_s.mp_pipe")
        rq = _ratio(ring, q)
        rb = get(p, "ring_batch_records_per_s")
        t.add(
            "producer → consumer process, ring, `log_batch` of 1,000",
            rb,
            "",
            None,
            f"mp.Queue {fmt(q)} rec/s",
            _ratio(rb, q),
            unit="rec/s",
        )
        t.add(
            "producer → consumer process, ring, one `log()` per record",
            ring,
            "≥ 5x mp.Queue",
            _ok(rq, lambda x: x >= 5),
            f"mp.Queue {fmt(q)} rec/s",
            rq,
            unit="rec/s",
        )
        t.add(
            "… same, vs mp.Pipe",
            ring,
            "",
            None,
            f"mp.Pipe {fmt(pipe)} rec/s",
            _ratio(ring, pipe),
            unit="rec/s",
        )

    r = results.get("restart", {})
    if "error" not in r and r:
        t.section("supervision")
        tgt = r.get("target_ms", 300)
        hb, cons = r.get("median_ms_to_heartbeating"), r.get("median_ms_to_consuming")
        t.add(
            f"SIGKILL → replacement heartbeating, median of {r.get('kills')}",
            hb,
            f"≤ {tgt} ms",
            _ok(hb, lambda x: x <= tgt),
            unit="ms",
        )
        t.add(
            "SIGKILL → replacement consuming again, median",
            cons,
            f"≤ {tgt} ms",
            _ok(cons, lambda x: x <= tgt),
            unit="ms",
        )

    f = results.get("footprint", {})
    if "error" not in f and f:
        t.section("footprint (default config, idle)")
        tg = f.get("targets", {})
        pss = f.get("total_pss_mb")
        t.add(
            "total PSS, supervisor + 3 workers",
            pss,
            f"≤ {tg.get('total_pss_mb', 80)} MB",
            _ok(pss, lambda x: x <= tg.get("total_pss_mb", 80)),
            unit="MB",
        )
        cpu = f.get("idle_cpu_percent_of_one_core")
        t.add(
            "idle CPU, whole agent",
            cpu,
            f"≤ {tg.get('idle_cpu_percent_of_one_core', 1.0)} % of a core",
            _ok(cpu, lambda x: x <= tg.get("idle_cpu_percent_of_one_core", 1.0)),
            unit="%",
        )
        su = get(f, "startup_to_ready_s.median")
        t.add(
            "start-up to READY=1 (sd_notify), median of 3",
            su,
            f"≤ {tg.get('startup_to_ready_s', 1.5)} s",
            _ok(su, lambda x: x <= tg.get("startup_to_ready_s", 1.5)),
            unit="s",
        )
        pu = f.get("producer_added_uss_mb")
        base = get(f, "producer_probe.uss_numpy_mb")
        t.add(
            "producer: USS added to an app (connect + 10k logs)",
            pu,
            f"≤ {tg.get('producer_added_uss_mb', 5)} MB",
            _ok(pu, lambda x: x <= tg.get("producer_added_uss_mb", 5)),
            f"app with numpy: {fmt(base)} MB" if base else "",
            unit="MB",
        )

    d = results.get("drift", {})
    if "error" not in d and d:
        t.section("drift worker")
        s = d.get("stats", {})
        ours, sc = s.get("ks_check_ms_w1000_nref10000"), s.get("scipy_ks_2samp_ms")
        t.add(
            "KS check, window 1,000 vs reference 10,000",
            ours,
            "< scipy",
            _ok(_ratio(sc, ours), lambda x: x > 1),
            f"`scipy.stats.ks_2samp` {fmt(sc)} ms",
            _ratio(sc, ours),
            unit="ms",
        )
        thr = s.get("detector_records_per_s_9_features_cadence_100")
        t.add("detector alone, 9 features, check every 100", thr, "", None, unit="rec/s")
        for key, rate in (("sustained_20k", "20,000"), ("sustained_100k", "100,000")):
            x = d.get(key, {})
            if not x:
                continue
            conf = x.get("configured_check_frequency")
            eff = x.get("effective_check_frequency_under_load", {})
            samples = eff.get("samples") or []
            at_conf = sum(1 for v in samples if v == conf)
            cad = (
                f"{fmt(eff.get('min'))}-{fmt(eff.get('max'))} "
                f"({at_conf}/{len(samples)} samples at {conf})"
            )
            consumed = f"{fmt(x.get('drift_records'))} of {fmt(x.get('records_sent'))}"
            lost = x.get("drift_ring_lost")
            if key == "sustained_20k":
                t.add(
                    f"{rate} rec/s for {fmt(x.get('seconds'))} s: effective cadence",
                    cad,
                    f"= configured ({conf})",
                    bool(samples) and at_conf == len(samples),
                )
                t.add(
                    f"{rate} rec/s: records consumed, ring lost (drift line)",
                    f"{consumed}, lost {fmt(lost)}",
                    "lost 0",
                    _ok(lost, lambda v: v == 0),
                )
            else:
                t.add(
                    f"{rate} rec/s ({x.get('feeders')} feeders) for {fmt(x.get('seconds'))} s: "
                    "consumed, ring lost (drift line)",
                    f"{consumed}, lost {fmt(lost)}",
                    "lost 0, all consumed",
                    _ok(lost, lambda v, x=x: v == 0 and x["drift_records"] == x["records_sent"]),
                )
                t.add(f"{rate} rec/s: effective cadence (stretched)", cad, "shown", None)
            t.add(
                f"{rate} rec/s: drift worker CPU",
                x.get("drift_cpu_percent_of_one_core"),
                "",
                None,
                unit="% of a core",
            )
            t.add(
                f"{rate} rec/s: uploader lane loss (its own line; not the drift target)",
                f"lost {fmt(x.get('uploader_ring_lost'))}, "
                f"ingested {fmt(x.get('uploader_ingested'))}, "
                f"CPU {fmt(x.get('uploader_cpu_percent_of_one_core'))} %",
                "",
                None,
            )
        uss = d.get("drift_uss_mb_max")
        idle = get(d, "sustained_20k.drift_uss_mb.idle")
        t.add(
            "drift worker USS under load (max)",
            uss,
            "≤ 40 MB",
            _ok(uss, lambda v: v <= 40),
            f"idle before load {fmt(idle)} MB" if idle else "",
            unit="MB",
        )
        n = s.get("stationary_records")
        cal = s.get("false_drift_started_calibrated")
        pc_m = s.get("false_drift_started_per_check_per_million")
        if n:
            allowed = math.ceil(15 * n / 10_000_000)
            base_n = pc_m * n / 1e6 if pc_m is not None else None
            t.add(
                f"false `drift_started`, {fmt(n)} stationary records (calibrated)",
                cal,
                f"≤ {allowed}" + ("" if n == 10_000_000 else " (15 per 10M, scaled)"),
                _ok(cal, lambda v: v <= allowed),
                f"per_check mode: {fmt(pc_m)} per million → ≈{fmt(base_n)} in {fmt(n)}"
                f" (measured on {fmt(s.get('per_check_records'))})",
                _ratio(base_n, max(cal, 1)) if cal is not None else None,
            )
        for shift, lim in (("0.5", 2000), ("0.2", 10000)):
            med = s.get(f"median_delay_records_{shift}sd")
            t.add(
                f"detection delay, {shift} sd mean shift (median; max "
                f"{fmt(s.get(f'max_delay_records_{shift}sd'))}, "
                f"missed {s.get(f'missed_{shift}sd')})",
                med,
                f"≤ {lim:,} records",
                _ok(med, lambda v, lim=lim: v <= lim),
                unit="records",
            )
        _drift_cases(t, d.get("cases", {}))

    _box_cost(t, results.get("box_cost", {}))
    _fleet(t, results.get("fleet", {}))
    _models(t, results.get("models", {}))
    _performance_delay(t, results.get("performance_delay", {}))

    b = results.get("burst", {})
    if "error" not in b and b:
        t.section("bursts (real agent)")
        sl = b.get("seed_loop", {})
        over = sum((sl.get("ring_overrun") or {}).values()) if sl else None
        t.add(
            f"seed example loop, `buffer_size: 1000`, unpaced {fmt(sl.get('seconds'))} s "
            f"({fmt(sl.get('predictions_per_s'))} pred/s): `ring_overrun`",
            over,
            "0",
            _ok(over, lambda v: v == 0),
            f"a 1,024-slot lane holds {fmt(sl.get('seed_lane_seconds_at_this_rate'))} s of it",
            _ratio(sl.get("lane_seconds_at_this_rate"), sl.get("seed_lane_seconds_at_this_rate")),
        )
        ov = b.get("overload", {})
        vis = ov.get("visible_after_ms")
        t.add(
            f"overloaded producer ({fmt(ov.get('written_per_s'))} rec/s): loss in `stats()` after",
            vis,
            "≤ 1,000 ms",
            _ok(vis, lambda v: v <= 1000),
            unit="ms",
        )
        t.add(
            "… `stats()` loss == loss the agent stored; written == read + lost",
            bool(ov.get("stats_equal_agent") and ov.get("written_eq_read_plus_lost")),
            "yes",
            _ok(
                ov.get("stats_equal_agent"),
                lambda v: bool(v and ov.get("written_eq_read_plus_lost")),
            ),
        )

    u = results.get("uploader", {})
    if "error" not in u and u:
        t.section("uploader")
        ing, nv = get(u, "ingest.rec_per_s"), get(u, "naive_baseline.rec_per_s")
        t.add(
            f"ring → outbox via `UploaderWorker`, synchronous={get(u, 'ingest.synchronous')}",
            ing,
            "≥ 50,000 rec/s",
            _ok(ing, lambda v: v >= 50_000),
            f"per-record INSERT + commit {fmt(nv)} rec/s",
            _ratio(ing, nv),
            unit="rec/s",
        )
        ws = get(u, "ingest_with_shipper.rec_per_s")
        t.add(
            "… same, shipper thread uploading to a local sink meanwhile",
            ws,
            "≥ 50,000 rec/s",
            _ok(ws, lambda v: v >= 50_000),
            f"per-record INSERT + commit {fmt(nv)} rec/s",
            _ratio(ws, nv),
            unit="rec/s",
        )
        wb, nwb = (
            get(u, "ingest.process_write_bytes_per_record"),
            get(u, "naive_baseline.process_write_bytes_per_record"),
        )
        t.add(
            "bytes written per record (WAL + checkpoint, /proc/self/io)",
            wb,
            "",
            None,
            f"per-record commit {fmt(nwb)} B",
            _ratio(nwb, wb),
            unit="B",
        )
        t.add(
            "outbox growth on disk per record (db + WAL)",
            get(u, "ingest.db_wal_growth_bytes_per_record"),
            "",
            None,
            unit="B",
        )
        t.add(
            "uploaded object bytes per record (gzip NDJSON)",
            get(u, "compressed.object_bytes_per_record"),
            "",
            None,
            unit="B",
        )
        for b in (5000, 1000):
            rate = get(u, f"s3.batch_{b}.rec_per_s")
            t.add(
                f"outbox → S3 (moto on loopback), max_batch_size {b:,}",
                rate,
                "≥ 20,000 rec/s",
                _ok(rate, lambda v: v >= 20_000),
                unit="rec/s",
            )
    return t


# ------------------------------------------------------------------ report
def notes(results: dict[str, dict[str, Any]]) -> list[str]:
    """Short readings of the figures that need one."""
    out = []
    d = results.get("drift", {})
    hi = d.get("sustained_100k") or {}
    if hi:
        out.append(
            f"At 100,000 rec/s the drift worker consumed {fmt(hi.get('drift_records'))} of "
            f"{fmt(hi.get('records_sent'))} records with {fmt(hi.get('drift_ring_lost'))} lost; "
            "its cadence stretched up to every "
            f"{fmt(get(hi, 'effective_check_frequency_under_load.max'))} records (configured "
            f"{hi.get('configured_check_frequency')}). The uploader reads the same lanes on its "
            f"own consumer line: it lost {fmt(hi.get('uploader_ring_lost'))} and had "
            f"{fmt(hi.get('uploader_ring_pending'))} still pending after the drift worker drained."
        )
    if hi and hi.get("seconds") and hi.get("uploader_ingested") is not None:
        up = results.get("uploader", {})
        out.append(
            "In the running agent at 100,000 rec/s the uploader ingested about "
            f"{fmt(hi['uploader_ingested'] / hi['seconds'])} rec/s using "
            f"{fmt(hi.get('uploader_cpu_percent_of_one_core'))} % of a core, against "
            f"{fmt(get(up, 'ingest.rec_per_s'))} rec/s for the same ingestion code alone "
            "(uploader benchmark): on this 2-core machine it shares the CPUs with two feeders "
            "and the drift worker."
        )
    lo = d.get("sustained_20k") or {}
    if lo:
        eff = get(lo, "effective_check_frequency_under_load.samples") or []
        out.append(
            f"At 20,000 rec/s the effective cadence sampled once a second was {eff}; "
            f"the drift worker used {fmt(lo.get('drift_cpu_percent_of_one_core'))} % of a core."
            + (
                ""
                if all(v == lo.get("configured_check_frequency") for v in eff)
                else " The detector doubles its cadence when the checks of one update call take "
                "longer than their budget (0.05 s), so a single large read after a pause "
                "stretches it even when the average rate is easily kept up."
            )
        )
    return out


def write_docs(results: dict[str, dict[str, Any]], quick: bool, total_s: float) -> Table:
    DOCS.mkdir(exist_ok=True)
    m = machine()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for r in results.values():
        r.setdefault("measured", when)
    table = build_table(results, quick)
    cmds = [
        f"- `{r.get('command', 'benchmarks/' + n + '.py')}` ({fmt(r.get('wall_s'))} s"
        + (f", measured {r['measured']}" if r.get("measured", when) != when else "")
        + ")"
        for n, r in results.items()
    ]
    text = [
        "# Performance",
        "",
        "Generated by `make bench` (`benchmarks/run_all.py`"
        + (" --quick" if quick else "")
        + "); do not edit by hand. Raw figures: [performance.json](performance.json).",
        "",
        f"- Date: {when}",
        f"- Machine: {m['platform']}; CPU {m['cpu']}, {m['cores']} cores; "
        f"RAM {m['ram_gb']} GB; Python {m['python']}",
        f"- Mode: {'quick (shorter runs, less precise)' if quick else 'full'}; "
        f"total {total_s / 60:.1f} min",
        "",
        "Speed and memory are compared with a baseline measured in the same run on the same",
        "machine (the ratio column: how many times better than the baseline). Machines are",
        "shared and noisy: compare ratios across runs, not absolute numbers.",
        "",
        table.markdown(),
        "",
    ]
    if table.missed:
        text += ["Missed targets: " + "; ".join(table.missed) + ".", ""]
    nts = notes(results)
    if nts:
        text += ["## Notes", "", *[f"- {x}" for x in nts], ""]
    text += ["## Commands", "", *cmds, ""]
    (DOCS / "performance.md").write_text("\n".join(text))
    (DOCS / "performance.json").write_text(
        json.dumps(
            {
                "date": when,
                "machine": m,
                "quick": quick,
                "total_s": round(total_s, 1),
                "results": results,
            },
            indent=1,
        )
        + "\n"
    )
    return table


def previous_results() -> dict[str, dict[str, Any]]:
    """The results of the last full or partial run, to keep what ``--only`` did not re-run."""
    try:
        old = json.loads((DOCS / "performance.json").read_text())
    except (OSError, ValueError):
        return {}
    results = old.get("results", {})
    for r in results.values():
        r.setdefault("measured", old.get("date", "an earlier run"))
    return dict(results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="quick flags for every benchmark")
    ap.add_argument("--only", nargs="*", help="run only these benchmarks")
    args = ap.parse_args()
    names = discover()
    if args.only:
        names = [n for n in names if n in args.only]
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for name in names:
        print(f"bench: {name} {' '.join(bench_args(name, args.quick))}".rstrip(), flush=True)
        results[name] = run_one(name, args.quick)
        r = results[name]
        state = f"CRASHED ({r['error']})" if "error" in r else "ok"
        print(f"bench: {name} {state} in {fmt(r.get('wall_s'))} s", flush=True)
    total = time.perf_counter() - t0
    if args.only:
        results = {**previous_results(), **results}
        results = {n: results[n] for n in discover() if n in results}
    table = write_docs(results, args.quick, total)
    print()
    print(table.markdown())
    print()
    print(f"wrote docs/performance.md and docs/performance.json in {total / 60:.1f} min")
    if table.missed:
        print("missed targets: " + "; ".join(table.missed))
    crashed = [n for n, r in results.items() if "error" in r]
    if crashed:
        print("crashed: " + ", ".join(crashed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
