"""``benchmarks/box_cost.py`` on a tiny load: its JSON has the figures and the records add up.

No timing is asserted (shared, noisy machine): only that a real agent fed by a
real producer process reports a CPU share and a PSS for each of its processes,
and that every record logged is delivered to the sink or counted as dropped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ROLES = {"supervisor", "sampler", "drift", "uploader"}


def _run(*args: str, timeout: float = 240) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "box_cost.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=timeout,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, res.stdout[-2000:]
    out: dict[str, Any] = json.loads(lines[0])
    return out


@pytest.mark.slow
def test_box_cost_figures_and_every_record_accounted_for() -> None:
    out = _run(
        "--rate",
        "2000",
        "--seconds",
        "1",
        "--warmup",
        "0.5",
        "--records",
        "20000",
        "--no-whylogs",
        "--no-one-core",
    )
    st = out["steady"]
    assert set(st["cpu_percent_by_process"]) == ROLES
    assert set(st["pss_mb"]) == ROLES
    assert all(v >= 0 for v in st["cpu_percent_by_process"].values())
    assert st["agent_cpu_percent_of_one_core"] == pytest.approx(
        sum(st["cpu_percent_by_process"].values()), abs=0.05
    )
    assert st["total_pss_mb"] == pytest.approx(sum(st["pss_mb"].values()), abs=0.3)
    assert st["records_in_window"] > 0

    rec = st["records"]
    assert rec["logged"] > st["records_in_window"]
    assert rec["logged"] == (
        rec["delivered"] + rec["dropped_by_producer"] + rec["dropped_by_agent"] + rec["unaccounted"]
    )
    # Nothing is lost at 2,000 records/s: every record is in the sink exactly once.
    assert rec["unaccounted"] == 0
    assert rec["delivered"] == rec["logged"]
    assert rec["objects"] == {"lines": rec["delivered"], "distinct_lane_seq": rec["delivered"]}
    assert out["meets_targets"]["unaccounted"] is True

    many = out["many_records"]
    assert many["records"] == 20000
    assert many["samples"][-1]["records"] == 20000
    assert set(many["samples"][-1]["pss_mb"]) == ROLES
    d = many["delivery"]
    assert d["logged"] == 20000
    assert d["logged"] == d["delivered"] + d["dropped_by_producer"] + d["dropped_by_agent"]
    assert d["unaccounted"] == 0

    assert out["whylogs"] == {"skipped": "--no-whylogs"}
    assert out["one_core"] == {"skipped": "--no-one-core"}


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("whylogs") is None, reason="whylogs: pip install -e '.[bench]'"
)
def test_whylogs_baseline_profiles_every_record() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import box_cost
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    wl = box_cost.whylogs_baseline(2000, 0.5, 1.5)
    assert "error" not in wl, wl
    assert wl["records_in_window"] > 0
    assert wl["records_profiled"] == wl["records_sent"] >= wl["records_in_window"]
    assert wl["profile_cpu_percent_of_one_core"] > 0
