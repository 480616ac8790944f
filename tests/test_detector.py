"""Streaming detector: false alarms, detection delay, per_check behaviour, checkpointing."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from edge_actors.drift.calibration import (
    expected_records_to_false_alarm,
    ks_threshold,
    per_check_alpha,
    simulate_stationary,
)
from edge_actors.drift.detector import DriftDetector, DriftEvent, FeatureKind
from edge_actors.drift.ks import ks_pvalue


def _features(rng: np.random.Generator, k: int) -> list[tuple[str, FeatureKind, Any]]:
    return [(f"f{i}", "numeric", rng.normal(size=10000)) for i in range(k)]


def _clock() -> itertools.count[float]:
    return itertools.count(1.0)


def test_stationary_million_records_few_false_alarms() -> None:
    rng = np.random.default_rng(20240601)
    det = DriftDetector(_features(rng, 8))
    events: list[DriftEvent] = []
    for start in range(0, 1_000_000, 20_000):
        events += det.update(rng.normal(size=(20_000, 8)), start)
    started = [e for e in events if e.state == "drift_started"]
    assert len(started) <= 3, started


@pytest.mark.parametrize(("shift", "limit"), [(0.5, 2_000), (0.2, 10_000)])
def test_mean_shift_detected(shift: float, limit: int) -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        det = DriftDetector(_features(rng, 8))
        det.update(rng.normal(size=(20_000, 8)), 0)
        found = None
        for s in range(20_000, 20_000 + limit, 100):
            x = rng.normal(size=(100, 8))
            x[:, 3] += shift
            for e in det.update(x, s):
                if e.state == "drift_started" and e.feature == "f3" and found is None:
                    found = e
        assert found is not None, (shift, seed)
        assert found.test == "ks" and found.seq_last - 20_000 < limit
        assert found.p_value < 1e-3
        assert found.p_value == pytest.approx(
            ks_pvalue(found.statistic, found.window_size, 10000), abs=1e-12
        )


def test_drift_resolves_after_clean_checks() -> None:
    rng = np.random.default_rng(5)
    det = DriftDetector(_features(rng, 2), long_window_size=0)
    det.update(rng.normal(size=(2000, 2)), 0)
    shifted = rng.normal(size=(3000, 2))
    shifted[:, 0] += 1.0
    ev = det.update(shifted, 2000)
    assert [e.state for e in ev if e.test == "ks"] == ["drift_started"]
    assert det.summary()[0]["state"] == "drifting"
    ev = det.update(rng.normal(size=(3000, 2)), 5000)
    assert [e.state for e in ev if e.test == "ks"] == ["drift_resolved"]
    assert det.summary()[0]["state"] == "ok"


def test_per_check_mode_alarms_repeatedly() -> None:
    rng = np.random.default_rng(7)
    det = DriftDetector(_features(rng, 8), mode="per_check", threshold=0.05, correction="none")
    events: list[DriftEvent] = []
    for start in range(0, 100_000, 10_000):
        events += det.update(rng.normal(size=(10_000, 8)), start)
    started = [e for e in events if e.state == "drift_started" and e.test == "ks"]
    # ~5 % of 8 x 991 checks: hundreds here, tens of thousands over 1M records.
    assert len(started) > 200
    assert all(e.p_value < 0.05 for e in started)


def test_per_check_bonferroni_and_bh_thresholds() -> None:
    rng = np.random.default_rng(8)
    for corr in ("bonferroni", "bh"):
        det = DriftDetector(
            _features(rng, 4), mode="per_check", correction=corr, long_window_size=0
        )
        det.update(rng.normal(size=(1000, 4)), 0)
        x = rng.normal(size=(1000, 4))
        x[:, 1] += 0.6
        ev = det.update(x, 1000)
        ks_events = [e for e in ev if e.test == "ks"]
        # The shifted feature alarms at every check; the others only by chance (per_check).
        assert sum(e.feature == "f1" for e in ks_events) >= 5
        if corr == "bonferroni":
            assert all(e.p_value < 0.05 / 4 and e.threshold == 0.05 / 4 for e in ks_events)


def test_categorical_and_quality_events() -> None:
    rng = np.random.default_rng(9)
    cats = rng.choice([0.0, 1.0, 2.0], p=[0.6, 0.3, 0.1], size=10000)
    det = DriftDetector(
        [("num", "numeric", rng.normal(size=10000)), ("cat", "categorical", cats)],
        long_window_size=0,
    )
    x = np.column_stack([rng.normal(size=3000), rng.choice(cats, size=3000)])
    assert [e for e in det.update(x, 0) if e.state == "drift_started"] == []
    x = np.column_stack([rng.normal(size=3000), rng.choice([0.0, 5.0], size=3000)])
    x[:, 0][rng.random(3000) < 0.3] = np.nan
    x[:1500, 0] += 100.0
    ev = det.update(x, 3000)
    kinds = {(e.feature, e.test) for e in ev if e.state == "drift_started"}
    assert ("cat", "chi2") in kinds
    assert ("num", "nan_rate") in kinds
    assert ("num", "out_of_range") in kinds
    summary = {s["feature"]: s for s in det.summary()}
    assert summary["num"]["nan_rate"] > 0.2
    assert summary["cat"]["p_value"] < 1e-6
    checks = det.summary_events()
    assert {e.state for e in checks} == {"check"} and len(checks) == 2


def test_checkpoint_resume_identical() -> None:
    rng = np.random.default_rng(11)
    feats = _features(rng, 3)
    data = rng.normal(size=(30_000, 3))
    data[12_000:, 1] += 0.4
    data[20_000:, 1] -= 0.4

    def make() -> DriftDetector:
        return DriftDetector(
            feats, long_window_size=5000, check_frequency=100, clock=_clock().__next__
        )

    a = make()
    ev_a: list[DriftEvent] = []
    for s in range(0, 30_000, 700):
        ev_a += a.update(data[s : s + 700], s)

    b = make()
    ev_b: list[DriftEvent] = []
    k = 13_300
    for s in range(0, k, 700):
        ev_b += b.update(data[s : min(s + 700, k)], s)
    state = b.state_dict()
    c = make()
    c.load_state_dict(state)
    for s in range(k, 30_000, 700):
        ev_b += c.update(data[s : s + 700], s)

    def strip(ev: list[DriftEvent]) -> list[tuple[object, ...]]:
        return [tuple(v for key, v in e.to_dict().items() if key != "t") for e in ev]

    assert any(e.state == "drift_started" for e in ev_a)
    assert any(e.state == "drift_resolved" for e in ev_a)
    assert strip(ev_a) == strip(ev_b)
    assert c.summary() == a.summary()


def test_budget_stretches_cadence() -> None:
    rng = np.random.default_rng(12)
    det = DriftDetector(_features(rng, 2), long_window_size=0)
    det.update(rng.normal(size=(5000, 2)), 0, budget=0.0)
    assert det.effective_check_frequency == 200
    det.update(rng.normal(size=(5000, 2)), 5000, budget=10.0)
    assert det.effective_check_frequency == 100
    det.check_frequency = 500
    assert det.effective_check_frequency == 500


def test_calibration_bound_and_cache(tmp_path: object) -> None:
    alpha = per_check_alpha(1e6, 100, 8, 3, 0.5)
    assert alpha == pytest.approx(3 * 100 * 0.5 / 8e6)
    assert expected_records_to_false_alarm([(alpha, 100), (alpha * 10, 1000)], 8, 3) == (
        pytest.approx(1e6)
    )
    thr = ks_threshold(200, 1000, 1e-3, cache_dir=str(tmp_path))
    assert ks_pvalue(thr, 200, 1000) < 1e-3 <= ks_pvalue(thr - 1 / 1000, 200, 1000)
    # The simulated exceedance rate matches the exact tail (averaged over references:
    # one fixed reference shifts the rate) and starts stay below exceedances / m.
    tot_checks = tot_exceed = 0
    for seed in range(4):
        checks, exceed, starts = simulate_stationary(
            200, 1000, 20, thr * 0.7, 200_000, 3, 5, seed=seed
        )
        assert starts <= exceed / 3
        tot_checks += checks
        tot_exceed += exceed
    expected = ks_pvalue(thr * 0.7, 200, 1000) * tot_checks
    assert 0.3 * expected < tot_exceed < 3.0 * expected


def test_summary_reports_wasserstein_and_psi_of_the_short_window() -> None:
    from scipy import stats

    from edge_actors.drift.distances import NumericPSI

    rng = np.random.default_rng(3)
    ref = rng.normal(size=5000)
    cat_ref = {0: 500.0, 1: 300.0, 2: 200.0}
    det = DriftDetector(
        [("x", "numeric", ref), ("c", "categorical", cat_ref)],
        window_size=500,
        long_window_size=0,
        check_frequency=100,
    )
    x = rng.normal(0.8, 1.0, size=800)
    c = rng.choice([0.0, 1.0, 2.0], p=[0.2, 0.3, 0.5], size=800)
    det.update(np.column_stack([x, c]), 0)
    got = {item["feature"]: item for item in det.summary(exact=False)}
    window = x[-500:]
    assert got["x"]["wasserstein"] == pytest.approx(stats.wasserstein_distance(window, ref))
    assert got["x"]["psi"] == pytest.approx(NumericPSI(np.sort(ref))(window))
    assert got["x"]["psi"] > 0.2  # a 0.8 sd shift is a large PSI
    assert got["c"]["psi"] > 0.1 and np.isnan(got["c"]["wasserstein"])
