"""The pure performance module: late-truth join, rolling metrics, degraded/recovered events."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from edge_actors.drift.performance import (
    ModelPerformance,
    PerformanceSettings,
    PerformanceTracker,
    PredictionIndex,
    binom_sf,
    macro_f1,
    normal_sf,
)
from edge_actors.records import KIND_FEEDBACK, KIND_INPUT, KIND_OUTPUT, KIND_PAIR

KEY = ("clf", "1")


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 10, 0.1), (3, 10, 0.1), (60, 500, 0.1), (93, 750, 0.1), (500, 500, 0.3), (7, 5, 0.5)],
)
def test_binomial_tail_matches_scipy(k: int, n: int, p: float) -> None:
    assert binom_sf(k, n, p) == pytest.approx(stats.binom.sf(k - 1, n, p), rel=1e-9, abs=1e-300)


def test_normal_tail_matches_scipy() -> None:
    for z in (-2.0, 0.0, 1.5, 5.0):
        assert normal_sf(z) == pytest.approx(stats.norm.sf(z), rel=1e-12)


def test_macro_f1_by_hand() -> None:
    # class 0: tp 2, fp 1, fn 0 -> 0.8; class 1: tp 1, fn 1 -> 2/3;
    # class 2: predicted once, wrong -> 0; class 3: missed once -> 0.
    truth = np.array([0, 0, 1, 1, 3.0])
    pred = np.array([0, 0, 1, 0, 2.0])
    # class 3: tp 0 (fn 1) -> 0; classes 0..3 present
    expect = (0.8 + 2 / 3 + 0 + 0) / 4
    assert macro_f1(pred, truth, 4) == pytest.approx(expect)


def test_index_joins_late_truth_and_counts_what_falls_out() -> None:
    idx = PredictionIndex(4)
    idx.add(np.arange(10, 14), np.arange(4) * 10**9, np.array([1.0, 2, 3, 4]))
    assert idx.take(11, 5 * 10**9, 2.0) == (11, 4 * 10**9, 2.0, 2.0)
    assert idx.take(11, 6 * 10**9, 2.0) is None  # a second truth for one prediction
    assert idx.counts["duplicate_truth"] == 1
    # Two more predictions push out 10 (unlabelled) and 11 (labelled).
    idx.add(np.array([14, 15]), np.array([5, 6]) * 10**9, np.array([5.0, 6]))
    assert idx.counts["evicted_unlabelled"] == 1
    assert 10 not in idx.slot and 11 not in idx.slot and len(idx.slot) == 4
    # Truth for an id it does not hold waits, then is counted unknown.
    assert idx.take(10, 7 * 10**9, 1.0) is None
    idx.expire_waiting(8 * 10**9, 60 * 10**9)
    assert idx.counts["unknown_id"] == 0 and 10 in idx.waiting
    idx.expire_waiting(80 * 10**9, 60 * 10**9)
    assert idx.counts["unknown_id"] == 1 and not idx.waiting


def test_truth_before_its_prediction_joins_when_the_prediction_comes() -> None:
    idx = PredictionIndex(8)
    assert idx.take(99, 2 * 10**9, 1.0) is None
    got = idx.add(np.array([99]), np.array([10**9]), np.array([0.0]))
    assert got == [(99, 10**9, 0.0, 1.0)]


def test_waiting_truth_is_bounded() -> None:
    idx = PredictionIndex(64, wait_capacity=16)
    for i in range(20):
        idx.take(1000 + i, i, 1.0)
    assert len(idx.waiting) == 16 and idx.counts["unknown_id"] == 4


def _classify(
    rng: np.random.Generator, n: int, acc: float, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    truth = rng.integers(0, k, n)
    wrong = rng.random(n) >= acc
    pred = np.where(wrong, (truth + rng.integers(1, k, n)) % k, truth)
    return pred.astype(float), truth.astype(float)


def test_accuracy_drop_raises_degraded_then_recovered_with_window_and_counts() -> None:
    rng = np.random.default_rng(1)
    s = PerformanceSettings("classification", 0.90, n_classes=5)
    tr = PerformanceTracker("refhash", "label")
    tr.add_model(KEY, s)
    tr.predictions(KEY, 100_000)
    zeros = np.zeros(1000)
    events = []
    for acc in (0.9,) * 5 + (0.8,) * 5 + (0.9,) * 5:
        p, t = _classify(rng, 1000, acc)
        events += tr.update(KEY, p, t, zeros + 2.0, 1.0)
    states = [e.state for e in events]
    assert states == ["performance_degraded", "performance_recovered"]
    deg = events[0]
    assert deg.test == "accuracy" and deg.threshold == 0.90 and deg.window_size == s.window_size
    assert deg.errors == round((1 - deg.statistic) * deg.window_size)
    assert deg.p_value < s.alpha and deg.correction == "2of3"
    assert 5000 < deg.seq_last < 6000 and deg.seq_last - deg.seq_first + 1 == s.window_size
    assert deg.model == "clf" and deg.model_version == "1" and deg.label_delay_s == 2.0
    assert deg.coverage == pytest.approx(deg.seq_last / 100_000, abs=0.01)
    summary = tr.summary(KEY)
    assert summary["state"] == "ok" and 0.85 < summary["accuracy"] < 0.95
    assert 0.8 < summary["macro_f1"] < 0.95


def test_slicing_does_not_change_events() -> None:
    rng = np.random.default_rng(2)
    p, t = _classify(rng, 12_000, 0.9)
    p2, t2 = _classify(rng, 6_000, 0.75)
    p, t = np.concatenate([p, p2]), np.concatenate([t, t2])
    out = []
    for step in (1, 7, 1000, len(p)):
        tr = PerformanceTracker()
        tr.add_model(KEY, PerformanceSettings("classification", 0.9))
        evs = []
        for a in range(0, len(p), step):
            evs += tr.update(
                KEY, p[a : a + step], t[a : a + step], np.zeros(len(p[a : a + step])), 0.0
            )
        out.append([(e.state, e.seq_last, e.errors) for e in evs])
    assert out[0] and all(o == out[0] for o in out)


def test_regression_mae_rise_is_found_with_rmse_in_status() -> None:
    rng = np.random.default_rng(3)
    tr = PerformanceTracker()
    tr.add_model(("reg", ""), PerformanceSettings("regression", 1.0 * math.sqrt(2 / math.pi)))
    events = []
    for sd in (1.0,) * 10 + (1.3,) * 5:
        truth = rng.normal(0, 5, 1000)
        pred = truth + rng.normal(0, sd, 1000)
        events += tr.update(("reg", ""), pred, truth, np.zeros(1000), 0.0)
    assert [e.state for e in events] == ["performance_degraded"]
    assert events[0].test == "mae" and events[0].seq_last > 10_000
    s = tr.summary(("reg", ""))
    assert s["rmse"] == pytest.approx(1.3, rel=0.1) and s["mae"] == pytest.approx(
        1.3 * 0.798, rel=0.1
    )


def test_no_false_degraded_in_a_million_stationary_labels() -> None:
    """1 M labelled records at exactly the reference accuracy (the worst case of H0).

    The bound: each check fails with probability <= alpha = check_every /
    expected_labels_to_false_alarm (exact binomial tail), so the expected
    number of false alarms in 1 M labels is <= 1e6 / 1e8 = 0.01.
    """
    rng = np.random.default_rng(20261129)
    s = PerformanceSettings("classification", 0.90, n_classes=5)
    tr = PerformanceTracker()
    tr.add_model(KEY, s)
    events = []
    for _ in range(100):
        p, t = _classify(rng, 10_000, 0.90)
        events += tr.update(KEY, p, t, np.zeros(10_000), 0.0)
    assert tr.states[KEY].labelled == 1_000_000
    assert tr.states[KEY].checks > 39_000
    assert events == []
    # Same stream judged against a reference it falls short of by 5 points: found.
    tr.add_model(KEY, PerformanceSettings("classification", 0.95))
    p, t = _classify(rng, 5_000, 0.90)
    assert [e.state for e in tr.update(KEY, p, t, np.zeros(5_000), 0.0)] == ["performance_degraded"]


def test_model_performance_joins_lane_records_in_any_order() -> None:
    s = PerformanceSettings("classification", 0.9, min_labels=1, check_every=1)
    mp = ModelPerformance(KEY, s, index_size=100, feature="label")
    base = 10**18
    kinds = np.array([KIND_INPUT, KIND_OUTPUT, KIND_PAIR, KIND_FEEDBACK, KIND_FEEDBACK])
    ids = np.array([1, 1, 2, 2, 1])
    t_ns = base + np.array([0, 1, 2, 5, 9]) * 10**9
    vals = np.array([np.nan, 1.0, 0.0, 0.0, 2.0])
    mp.feed(kinds, ids, t_ns, vals)
    summ = mp.summary()
    assert summ["labelled"] == 2 and summ["predictions"] == 2 and summ["accuracy"] == 0.5
    assert summ["coverage"] == 1.0 and summ["median_delay_s"] == pytest.approx(5.5)
    # Truth for an id never seen, and a NaN truth: counted by reason.
    mp.feed(
        np.array([KIND_FEEDBACK, KIND_FEEDBACK]),
        np.array([77, 2]),
        base + np.array([10, 11]) * 10**9,
        np.array([1.0, np.nan]),
    )
    mp.feed(np.array([KIND_PAIR]), np.array([3]), np.array([base + 200 * 10**9]), np.array([1.0]))
    mp.feed(
        np.array([KIND_FEEDBACK]), np.array([3]), np.array([base + 201 * 10**9]), np.array([1.0])
    )
    d = mp.summary()["dropped"]
    assert d["unknown_id"] == 1 and d["missing_truth"] == 1


def test_batch_join_counts_duplicates_and_never_joins_an_evicted_id() -> None:
    idx = PredictionIndex(4)
    idx.add(np.array([1, 2, 3, 4]), np.zeros(4, np.int64), np.array([1.0, 2, 3, 4]))
    idx.add(np.array([5, 6, 7, 8, 9]), np.ones(5, np.int64), np.array([5.0, 6, 7, 8, 9]))
    assert idx.counts["evicted_unlabelled"] == 5  # 1-4, and 5 at once (only 4 fit)
    for _ in range(3):  # past the dict rebuild: stale ids stay unjoinable
        idx.add(np.array([10, 11]), np.full(2, 2, np.int64), np.array([1.0, 1]))
    got = idx.take_many(
        np.array([3, 11, 11, 10]), np.full(4, 9, np.int64), np.array([0.0, 1, 1, 2])
    )
    assert got[0].tolist() == [11, 10] and got[1].tolist() == [7, 7] and got[2].tolist() == [1, 1]
    assert idx.counts["duplicate_truth"] == 1 and 3 in idx.waiting
    assert len(idx.slot) <= 5


def _lane_with_late_truth(rng: np.random.Generator) -> tuple[npt.NDArray[Any], ...]:
    """A lane: 6,000 predictions at 0.9 then 8,000 at 0.7; truth for 20 %, 50-1,000 records late."""
    kinds: list[int] = []
    ids: list[int] = []
    vals: list[float] = []
    late: list[tuple[int, int, float]] = []
    for i in range(14_000):
        truth = int(rng.integers(0, 5))
        ok = rng.random() < (0.9 if i < 6_000 else 0.7)
        kinds.append(KIND_PAIR)
        ids.append(i)
        vals.append(float(truth if ok else (truth + 1) % 5))
        if rng.random() < 0.2:
            late.append((i + int(rng.integers(50, 1000)), i, float(truth)))
        late.sort()
        while late and late[0][0] <= i:
            _, rid, t = late.pop(0)
            kinds.append(KIND_FEEDBACK)
            ids.append(rid)
            vals.append(t)
    n = len(kinds)
    t_ns = 10**18 + np.arange(n, dtype=np.int64) * 10**7
    return np.array(kinds), np.array(ids), t_ns, np.array(vals)


def test_event_coverage_does_not_depend_on_how_much_of_the_lane_is_read_at_once() -> None:
    """A worker that fell behind reads a whole lane in one slice: the event's coverage
    (labelled / predictions) must still be the label share, not diluted by the
    predictions logged after the truth that made the check (0.11 instead of 0.2)."""
    kinds, ids, t_ns, vals = _lane_with_late_truth(np.random.default_rng(5))
    coverage = []
    for step in (100, len(kinds)):
        mp = ModelPerformance(
            KEY, PerformanceSettings("classification", 0.9), index_size=32_768, feature="label"
        )
        evs = []
        for a in range(0, len(kinds), step):
            b = a + step
            evs += mp.feed(kinds[a:b], ids[a:b], t_ns[a:b], vals[a:b])
        degraded = [e for e in evs if e.state == "performance_degraded"]
        assert degraded, step
        coverage.append(degraded[0].coverage)
    assert all(0.17 < c < 0.21 for c in coverage), coverage
