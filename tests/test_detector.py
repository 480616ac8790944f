"""Streaming detector: false alarms, detection delay, per_check behaviour, checkpointing."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_actors.drift.calibration import (
    expected_records_to_false_alarm,
    ks_threshold,
    per_check_alpha,
    simulate_stationary,
)
from edge_actors.drift.detector import DriftDetector, DriftEvent, DriftSettings, FeatureKind
from edge_actors.drift.ks import ks_pvalue, ks_pvalue_bounded


def _features(rng: np.random.Generator, k: int) -> list[tuple[str, FeatureKind, Any]]:
    return [(f"f{i}", "numeric", rng.normal(size=10000)) for i in range(k)]


def _clock() -> itertools.count[float]:
    return itertools.count(1.0)


def test_stationary_records_few_false_alarms() -> None:
    # 400 k records (the million-record figures are in benchmarks/drift_stats.py).
    rng = np.random.default_rng(20240601)
    det = DriftDetector(_features(rng, 8))
    events: list[DriftEvent] = []
    for start in range(0, 400_000, 20_000):
        events += det.update(rng.normal(size=(20_000, 8)), start)
    started = [e for e in events if e.state == "drift_started"]
    assert len(started) <= 2, started


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
        # Event p-values are bounded-cost, at the window's effective size.
        assert found.p_value == ks_pvalue_bounded(found.statistic, found.n_eff, 10000)[0]
        assert found.window_size * 0.8 < found.n_eff <= found.window_size


def test_drift_resolves_after_clean_checks() -> None:
    rng = np.random.default_rng(5)
    det = DriftDetector(_features(rng, 2), DriftSettings(long_window_size=0))
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
    det = DriftDetector(
        _features(rng, 8), DriftSettings(mode="per_check", threshold=0.05, correction="none")
    )
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
            _features(rng, 4),
            DriftSettings(mode="per_check", correction=corr, long_window_size=0),
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
        DriftSettings(long_window_size=0),
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
            feats,
            DriftSettings(long_window_size=5000, check_frequency=100),
            clock=_clock().__next__,
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
    det = DriftDetector(_features(rng, 2), DriftSettings(long_window_size=0))
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
        DriftSettings(window_size=500, long_window_size=0, check_frequency=100),
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


# ---------------------------------------------------------------- real data (issue 13)


def _ar1(rng: np.random.Generator, phi: float, n: int) -> np.ndarray:
    """Stationary AR(1) with unit marginal variance."""
    from scipy.signal import lfilter

    e = rng.normal(size=n) * np.sqrt(1 - phi * phi)
    x0 = rng.normal()
    out: np.ndarray = lfilter([1.0], [1.0, -phi], e, zi=[phi * x0])[0]
    return out


def _run(det: DriftDetector, data: np.ndarray, batch: int = 5000) -> tuple[list[DriftEvent], float]:
    """Feed ``data``; events and the share of checks during which feature 0 was drifting."""
    events: list[DriftEvent] = []
    drifting = checks = 0
    step = det.check_frequency
    for s in range(0, data.shape[0], step):
        events += det.update(data[s : s + step], s)
        if det.records_seen >= det.settings.window_size:
            checks += 1
            drifting += det.summary(exact=False)[0]["state"] == "drifting"
    return events, drifting / max(checks, 1)


def _starts(events: list[DriftEvent], test: str | None = None) -> list[DriftEvent]:
    return [e for e in events if e.state == "drift_started" and (test is None or e.test == test)]


def test_defaults_are_the_shipped_config() -> None:
    from edge_actors.config import DriftConfig

    # A detector built without settings runs exactly what users run.
    assert DriftSettings() == DriftSettings.from_config(DriftConfig())
    assert DriftDetector(_features(np.random.default_rng(0), 1)).settings == DriftSettings()


def test_every_drift_key_reaches_the_detector() -> None:
    from edge_actors.config import ConfigError, parse_config

    cfg = parse_config(
        {"drift_detection": {"atom_min_share": 0, "discrete_max_values": 3}}, Path("."), "t.yaml"
    )
    s = DriftSettings.from_config(cfg.drift_detection)
    assert (s.atom_min_share, s.discrete_max_values) == (0.0, 3)
    with pytest.raises(ConfigError, match=r"drift_detection\.atom_min_share"):
        parse_config({"drift_detection": {"atom_min_share": 1.5}}, Path("."), "t.yaml")


def test_settings_refuse_what_the_detector_cannot_run() -> None:
    import dataclasses

    from edge_actors.config import DriftConfig

    with pytest.raises(ValueError, match=r"drift_detection\.mode"):
        DriftSettings.from_config(dataclasses.replace(DriftConfig(), mode="sometimes"))
    with pytest.raises(ValueError, match="confirm_m"):
        DriftSettings(confirm_m=4, confirm_n=3)
    with pytest.raises(ValueError, match="long_window_size"):
        DriftSettings().replace(long_window_size=500)


def test_autocorrelated_stream_no_false_starts_and_n_eff_shown() -> None:
    rng = np.random.default_rng(42)
    det = DriftDetector([("x", "numeric", rng.normal(size=10000))])
    events = det.update(_ar1(rng, 0.9, 200_000).reshape(-1, 1), 0)
    assert _starts(events, "ks") == []
    item = det.summary(exact=False)[0]
    # AR(1) phi = 0.9: n_eff = n (1 - phi) / (1 + phi) = 53 of 1000.
    assert 30 < item["n_eff"] < 90
    assert item["autocorrelation"] == pytest.approx(0.9, abs=0.05)


def test_very_slow_sensor_is_not_shown_drifting() -> None:
    rng = np.random.default_rng(43)
    det = DriftDetector([("x", "numeric", rng.normal(size=10000))])
    events, share = _run(det, _ar1(rng, 0.99, 200_000).reshape(-1, 1))
    assert share <= 0.01, share
    assert len(_starts(events, "ks")) <= 1


def test_shift_on_autocorrelated_stream_is_found_and_event_carries_n_eff() -> None:
    for seed in range(2):
        rng = np.random.default_rng(100 + seed)
        det = DriftDetector([("x", "numeric", rng.normal(size=10000))])
        x = _ar1(rng, 0.9, 40_000)
        x[20_000:] += 0.5
        found = [e for e in _run(det, x.reshape(-1, 1))[0] if e.state == "drift_started"]
        assert found and found[0].test == "ks", seed
        assert found[0].seq_last - 20_000 < 10_000
        assert 0 < found[0].n_eff < 0.2 * found[0].window_size


def test_categorical_small_reference_few_false_starts() -> None:
    p = [0.4, 0.25, 0.15, 0.12, 0.08]
    started = 0
    for seed in range(8):
        rng = np.random.default_rng(200 + seed)
        ref = rng.choice(5, p=p, size=1000).astype(float)
        det = DriftDetector([("c", "categorical", ref)])
        events = det.update(rng.choice(5, p=p, size=(80_000, 1)).astype(float), 0)
        started += len(_starts(events, "chi2"))
    # 640 k records from eight 1,000-row references: a one-sample test gives ~14 here.
    assert started <= 1


def test_new_category_has_its_own_event() -> None:
    rng = np.random.default_rng(300)
    det = DriftDetector([("c", "categorical", {0: 5000.0, 1: 3000.0, 2: 2000.0})])
    det.update(rng.choice(3, p=[0.5, 0.3, 0.2], size=(5000, 1)).astype(float), 0)
    x = rng.choice(3, p=[0.5, 0.3, 0.2], size=(5000, 1)).astype(float)
    x[rng.random(5000) < 0.05] = -1.0  # 5 % of rows in a category the model does not know
    ev = [e for e in det.update(x, 5000) if e.state == "drift_started"]
    unknown = [e for e in ev if e.test == "unknown_category"]
    assert unknown, ev
    assert unknown[0].seq_last - 5000 < 600
    assert det.summary()[0]["unknown_rate"] > 0.02


def test_flapping_quality_alarm_needs_hysteresis() -> None:
    rng = np.random.default_rng(400)
    det = DriftDetector(
        [("x", "numeric", rng.uniform(0, 1, 10000))], DriftSettings(long_window_size=0)
    )
    n = 60_000
    t = np.arange(n)
    rate = 0.1 + 0.03 * np.sin(2 * np.pi * t / 3000)
    x = rng.uniform(0, 1, n)
    x[rng.random(n) < rate] = 5.0
    ev = det.update(x.reshape(-1, 1), 0)
    oor = [e.state for e in ev if e.test == "out_of_range"]
    assert oor.count("drift_started") <= 1, oor


def test_drift_worsened_during_an_episode() -> None:
    rng = np.random.default_rng(500)
    det = DriftDetector([("x", "numeric", rng.normal(size=10000))])
    x = rng.normal(size=30_000)
    x[5000:] += 0.3
    x[15_000:] += 1.2
    ev = det.update(x.reshape(-1, 1), 0)
    states = [e.state for e in ev if e.test == "ks"]
    assert states[0] == "drift_started"
    worse = [e for e in ev if e.state == "drift_worsened"]
    assert worse and worse[0].seq_last >= 15_000
    # One event per window for one change: not one per check while the window fills.
    assert sorted(e.window_size for e in worse) == [1000, 10000]
    before = max(e.statistic for e in ev if e.seq_last < 15_000 and e.window_size == 1000)
    short = [e for e in worse if e.window_size == 1000]
    assert short and short[0].statistic > 1.5 * before


def test_correction_acts_in_calibrated_mode() -> None:
    rng = np.random.default_rng(600)
    feats = _features(rng, 50)
    thr = {}
    for corr in ("none", "bonferroni"):
        det = DriftDetector(feats, DriftSettings(correction=corr))
        thr[corr] = det.summary(exact=False)[0]["threshold"]
    # Bonferroni: each of 50 features gets 1/50 of the false-alarm budget.
    assert thr["bonferroni"] > thr["none"] * 1.05


def test_few_valued_numeric_feature_is_tested_on_its_values() -> None:
    rng = np.random.default_rng(700)
    vals = np.array([0.0, 1.0, 2.0, 3.0])
    ref = rng.choice(vals, p=[0.4, 0.3, 0.2, 0.1], size=10000)
    det = DriftDetector([("k", "numeric", ref)])
    det.update(rng.choice(vals, p=[0.4, 0.3, 0.2, 0.1], size=(5000, 1)), 0)
    assert det.summary()[0]["test"] == "chi2"
    x = rng.choice(vals, p=[0.3, 0.3, 0.25, 0.15], size=(20_000, 1))
    ev = [e for e in det.update(x, 5000) if e.state == "drift_started"]
    assert ev and ev[0].test == "chi2"


def _atom(rng: np.random.Generator, n: int, share: float = 0.9, loc: float = 3.0) -> np.ndarray:
    """0 in ``share`` of the rows, the rest continuous (N(loc, 1))."""
    x = rng.normal(loc, 1.0, n)
    x[rng.random(n) < share] = 0.0
    return x


def _atom_delay(seed: int, **change: float) -> tuple[int | None, str]:
    rng = np.random.default_rng(seed)
    det = DriftDetector([("x", "numeric", _atom(rng, 10000))])
    assert _starts(det.update(_atom(rng, 20_000).reshape(-1, 1), 0)) == []
    for s in range(20_000, 50_000, 100):
        for e in det.update(_atom(rng, 100, **change).reshape(-1, 1), s):
            if e.state == "drift_started":
                return e.seq_last - 20_000 + 1, e.test
    return None, ""


def test_feature_with_one_large_atom_sees_changes_of_each_part() -> None:
    # 0 in 90 % of the rows and a continuous rest: KS on the whole feature is
    # conservative there (its thresholds assume no ties), and it missed a 0.5 sd
    # shift of the rest within 30,000 records and took ~7,000 for the atom's
    # share moving from 90 to 85 %.
    for seed in range(3):
        delay, test = _atom_delay(800 + seed, loc=3.5)
        assert delay is not None and delay <= 15_000 and test == "ks", (seed, delay)
        delay, test = _atom_delay(900 + seed, share=0.85)
        assert delay is not None and delay <= 2_500 and test == "atom_share", (seed, delay)


def test_feature_with_one_large_atom_stays_quiet_when_stationary() -> None:
    rng = np.random.default_rng(950)
    det = DriftDetector([("x", "numeric", _atom(rng, 10000))])
    events = det.update(_atom(rng, 200_000).reshape(-1, 1), 0)
    assert _starts(events) == []
    item = det.summary()[0]
    assert item["atom_share"] == pytest.approx(0.9, abs=0.03)
    assert 0 < item["statistic"] < item["threshold"]
    # A stuck sensor (every value the atom) leaves the KS part nothing to test:
    # the share alarms, and nothing breaks.
    stuck = [e for e in det.update(np.zeros((3000, 1)), 200_000) if e.state == "drift_started"]
    assert [e.test for e in stuck] == ["atom_share"] and stuck[0].statistic > 0.9


def test_event_pvalues_have_bounded_cost() -> None:
    from edge_actors.drift.ks import EXACT_PVALUE_CELLS

    for n, m in [(1000, 10000), (300, 10000), (2000, 5000), (1000, 1000), (50, 10000)]:
        for d in (0.03, 0.06, 0.1, 0.2):
            exact = ks_pvalue(d, n, m, "exact")
            got, method = ks_pvalue_bounded(d, n, m)
            assert method == ("exact" if n * m <= EXACT_PVALUE_CELLS else "approx")
            if exact > 1e-6:
                # The stated error of the approximation (docs/design.md).
                assert got == pytest.approx(exact, rel=0.3), (n, m, d)
