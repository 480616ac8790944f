"""Distances, categorical tests and corrections against scipy.stats oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from edge_actors.drift.categorical import CategoricalReference, chi2_test, merge_buckets
from edge_actors.drift.corrections import adjust_pvalues, benjamini_hochberg, bonferroni, reject
from edge_actors.drift.distances import (
    NumericPSI,
    WassersteinReference,
    nan_rate,
    out_of_range_rate,
    psi,
    wasserstein_1,
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 300),
    st.integers(1, 3000),
    st.sampled_from(["normal", "discrete", "far"]),
    st.integers(0, 2**32 - 1),
)
def test_wasserstein_matches_scipy(n: int, m: int, kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if kind == "discrete":
        w, r = rng.integers(0, 4, n).astype(float), rng.integers(0, 5, m).astype(float)
    elif kind == "far":
        w, r = rng.normal(1e4 + 0.3, 1, n), rng.normal(1e4, 1, m)
    else:
        w, r = rng.normal(0.2, 1.5, n), rng.normal(size=m)
    expected = stats.wasserstein_distance(w, r)
    got = wasserstein_1(w, WassersteinReference(np.sort(r)))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_psi_numeric_and_epsilon() -> None:
    rng = np.random.default_rng(0)
    ref = np.sort(rng.normal(size=10000))
    p = NumericPSI(ref, bins=10)
    assert p.edges.shape[0] == 9
    assert p(rng.normal(size=5000)) < 0.01
    assert p(rng.normal(1.0, size=5000)) > 0.25
    # All mass in one bin: finite thanks to the epsilon floor.
    assert math.isfinite(p(np.full(100, 10.0)))
    assert psi([1, 0], [1, 1]) == pytest.approx(
        (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    )


def test_nan_and_range_rates() -> None:
    w = np.array([0.0, np.nan, 5.0, -3.0, 1.0])
    assert nan_rate(w) == pytest.approx(0.2)
    assert out_of_range_rate(w, -1.0, 2.0) == pytest.approx(0.5)
    assert math.isnan(nan_rate(np.array([])))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 500), min_size=2, max_size=12),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 10.0),
)
def test_chi2_matches_scipy(ref_counts: list[int], seed: int, min_exp: float) -> None:
    freq = np.asarray(ref_counts, dtype=float) + 1.0
    rng = np.random.default_rng(seed)
    obs = rng.multinomial(int(rng.integers(1, 2000)), freq / freq.sum()).astype(float)
    res = chi2_test(obs, freq, min_exp)
    exp = freq / freq.sum() * obs.sum()
    groups = merge_buckets(exp, min_exp)
    k = groups.max() + 1
    o = np.bincount(groups, obs, k)
    e = np.bincount(groups, exp, k)
    if k < 2:
        assert res.pvalue == 1.0
        return
    # Every merged bucket meets the minimum unless everything is pooled.
    assert (e >= min_exp - 1e-9).all()
    oracle = stats.chisquare(o, e)
    assert res.df == k - 1
    assert res.statistic == pytest.approx(oracle.statistic, rel=1e-10, abs=1e-10)
    assert res.pvalue == pytest.approx(oracle.pvalue, abs=1e-12)


def test_categorical_other_bucket_and_nan() -> None:
    ref = CategoricalReference.from_values(np.repeat([0.0, 1.0, 2.0], [500, 300, 200]))
    assert ref.n_buckets == 4
    counts = ref.bucket_counts(np.array([0.0, 1.0, 7.0, -1.0, np.nan, 2.0]))
    assert counts.tolist() == [1.0, 1.0, 1.0, 2.0]
    rng = np.random.default_rng(1)
    same = rng.choice([0.0, 1.0, 2.0], p=[0.5, 0.3, 0.2], size=1000)
    assert ref.chi2(same).pvalue > 1e-3
    flooded = same.copy()
    flooded[:150] = 9.0  # a category the reference never saw
    res = ref.chi2(flooded)
    assert res.pvalue < 1e-10
    assert ref.psi(same) < 0.01 < ref.psi(flooded)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_bh_matches_scipy(ps: list[float]) -> None:
    expected = stats.false_discovery_control(ps)
    np.testing.assert_allclose(benjamini_hochberg(ps), expected, rtol=1e-12, atol=1e-15)


def test_bonferroni_and_nan_handling() -> None:
    ps = np.array([0.01, 0.2, np.nan, 0.5])
    np.testing.assert_allclose(bonferroni(ps), [0.03, 0.6, np.nan, 1.0])
    bh = benjamini_hochberg(ps)
    np.testing.assert_allclose(bh[[0, 1, 3]], stats.false_discovery_control([0.01, 0.2, 0.5]))
    assert math.isnan(bh[2])
    assert reject(ps, 0.05, "bonferroni").tolist() == [True, False, False, False]
    np.testing.assert_allclose(adjust_pvalues([0.1], "none"), [0.1])
    with pytest.raises(ValueError):
        adjust_pvalues([0.1], "holm")  # type: ignore[arg-type]


def test_asymptotic_threshold_is_conservative_for_large_windows() -> None:
    """Large windows use the asymptotic quantile plus a margin: exact p stays below alpha."""
    from edge_actors.drift.calibration import EXACT_COST_LIMIT, ks_threshold
    from edge_actors.drift.ks import ks_pvalue

    for n, m, alpha in [(10_000, 5_000, 1e-5), (5_000, 5_000, 1e-4)]:
        assert n * m > EXACT_COST_LIMIT
        thr = ks_threshold(n, m, alpha)
        assert ks_pvalue(thr, n, m, "exact") < alpha


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 8), st.integers(50, 2000), st.integers(50, 5000), st.integers(0, 2**32 - 1))
def test_two_sample_chi2_matches_scipy_contingency(k: int, n: int, m: int, seed: int) -> None:
    from edge_actors.drift.categorical import chi2_two_sample

    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k) * 2)
    obs = np.bincount(rng.choice(k, p=p, size=n), minlength=k).astype(float)
    ref = np.bincount(rng.choice(k, p=p, size=m), minlength=k).astype(float)
    keep = (obs + ref) > 0
    got = chi2_two_sample(obs, ref, min_expected_count=0.0)
    if keep.sum() < 2:
        return
    res = stats.chi2_contingency(np.vstack([obs[keep], ref[keep]]), correction=False)
    assert got.statistic == pytest.approx(res.statistic, rel=1e-9, abs=1e-9)
    assert got.pvalue == pytest.approx(res.pvalue, rel=1e-6, abs=1e-12)


def test_two_sample_chi2_is_the_one_sample_statistic_scaled_by_reference_size() -> None:
    from edge_actors.drift.categorical import chi2_two_sample

    obs = np.array([430.0, 240.0, 160.0, 100.0, 70.0])
    ref = np.array([400.0, 250.0, 150.0, 120.0, 80.0]) * 10
    one = chi2_test(obs, ref).statistic
    two = chi2_two_sample(obs, ref).statistic
    # N / (n + N) within the second-order term: the reference's own noise is accounted for.
    assert two == pytest.approx(one * 10_000 / 11_000, rel=0.02)
    # Dependent window records (variance inflation 3) count for less.
    assert chi2_two_sample(obs, ref, inflation=3.0).statistic == pytest.approx(
        two * 11_000 / (3 * 10_000 + 1000)
    )
