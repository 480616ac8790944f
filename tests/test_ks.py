"""KS statistic and p-value against the ``scipy.stats.ks_2samp`` oracle."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from edge_actors.drift.ks import (
    KSChecker,
    KSReference,
    ks_critical_statistic,
    ks_pvalue,
    ks_statistic,
    ks_test,
)


def _oracle(window: np.ndarray, ref: np.ndarray, method: str = "auto") -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ks_2samp(window, ref, alternative="two-sided", method=method)
    return float(res.statistic), float(res.pvalue)


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9


def _ours(window: np.ndarray, ref: np.ndarray, method: str = "auto") -> tuple[float, float]:
    r = KSReference(ref)
    d = ks_statistic(np.sort(window), r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ks_test(d, len(window), r.n, method)  # type: ignore[arg-type]
    return res.statistic, res.pvalue


@st.composite
def _samples(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 400))
    m = draw(st.integers(1, 400))
    kind = draw(st.sampled_from(["normal", "discrete", "shifted", "ties"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=n), rng.normal(size=m)
    if kind == "shifted":
        shift = draw(st.floats(0.0, 2.0))
        return rng.normal(shift, size=n), rng.normal(size=m)
    if kind == "discrete":
        k = draw(st.integers(1, 6))
        return rng.integers(0, k, size=n).astype(float), rng.integers(0, k, size=m).astype(float)
    base = rng.normal(size=5)
    return rng.choice(base, size=n), np.concatenate([rng.choice(base, size=m - 1), [0.25]])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_samples(), st.sampled_from(["auto", "exact", "asymp"]))
def test_matches_scipy_small_and_ties(data: tuple[np.ndarray, np.ndarray], method: str) -> None:
    window, ref = data
    d_s, p_s = _oracle(window, ref, method)
    d_o, p_o = _ours(window, ref, method)
    assert d_o == pytest.approx(d_s, abs=1e-12)
    assert _close(p_o, p_s), (len(window), len(ref), d_s, p_s, p_o)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(9000, 30000),
    st.integers(50, 2000),
    st.floats(0.0, 0.3),
    st.integers(0, 2**32 - 1),
)
def test_matches_scipy_large_asymptotic(m: int, n: int, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    window, ref = rng.normal(shift, size=n), rng.normal(size=m)
    d_s, p_s = _oracle(window, ref)
    d_o, p_o = _ours(window, ref)
    assert d_o == pytest.approx(d_s, abs=1e-12)
    assert _close(p_o, p_s)


@pytest.mark.parametrize(
    ("n", "m", "shift"),
    [
        (1000, 10000, 0.0),
        (1000, 10000, 0.1),
        (10000, 1000, 0.05),
        (1000, 1000, 0.08),
        (10000, 10000, 0.02),
        (3, 10000, 0.0),
        (500, 10001, 0.1),
        (40, 20000, 0.3),
        (120, 20000, 0.3),
    ],
)
def test_matches_scipy_fixed_cases(n: int, m: int, shift: float) -> None:
    rng = np.random.default_rng(n * 7 + m)
    window, ref = rng.normal(shift, size=n), rng.normal(size=m)
    d_s, p_s = _oracle(window, ref)
    d_o, p_o = _ours(window, ref)
    assert d_o == pytest.approx(d_s, abs=1e-12)
    assert _close(p_o, p_s)


@pytest.mark.parametrize("n", [1, 2, 5, 50, 139, 140, 141, 500, 5000, 200000])
def test_asymptotic_distribution_all_branches(n: int) -> None:
    """Sweep d over (0, 1] so every branch of the kstwo.sf port is exercised."""
    for d in np.concatenate([np.linspace(0.0005, 1.0, 120), [0.5 / n, 1.0 / n, 0.5]]):
        expected = float(stats.kstwo.sf(d, n))
        ours = ks_pvalue(float(d), 2 * n, 2 * n, "asymp")
        assert abs(ours - expected) <= 1e-9, (n, d)


def test_statistic_bit_identical_with_ties() -> None:
    rng = np.random.default_rng(3)
    ref = np.round(rng.normal(size=10000), 1)
    window = np.round(rng.normal(0.05, size=1000), 1)
    r = KSReference(ref)
    checker = KSChecker(r, 1000)
    raw = stats.ks_2samp(window, ref, method="asymp").statistic
    assert checker.statistic(window) == raw
    assert ks_statistic(np.sort(window), r) == raw


def test_statistic_from_ranks_is_the_statistic() -> None:
    # Ranks computed once per record (the detector's incremental windows) give the
    # same D as sorting the window, bit for bit, with and without reference ties
    # and with window values equal to reference values.
    rng = np.random.default_rng(4)
    for ref_values in (rng.normal(size=5000), np.round(rng.normal(size=5000), 1)):
        checker = KSChecker(KSReference(ref_values), 2000)
        for _ in range(20):
            window = rng.normal(rng.normal(0, 0.1), size=int(rng.integers(1, 2000)))
            window[: window.shape[0] // 3] = rng.choice(ref_values, window.shape[0] // 3)
            right, left = checker.ranks(window)
            d = checker.statistic_ranks(np.sort(right), np.sort(left))
            assert d == checker.statistic(window)
            assert d == stats.ks_2samp(window, ref_values, method="asymp").statistic


def test_reference_drops_nan_and_sorts() -> None:
    r = KSReference([3.0, math.nan, 1.0, 2.0])
    assert r.values.tolist() == [1.0, 2.0, 3.0]
    assert r.n == 3 and r.min == 1.0 and r.max == 3.0
    with pytest.raises(ValueError):
        KSReference([math.nan])


def test_checker_does_not_allocate_reference_sized_arrays() -> None:
    import tracemalloc

    rng = np.random.default_rng(0)
    checker = KSChecker(KSReference(rng.normal(size=100_000)), 1000)
    window = rng.normal(size=1000)
    checker.statistic(window)
    tracemalloc.start()
    checker.statistic(window)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Two window-sized index arrays at most; a reference-sized one would be 800 kB.
    assert peak < 40_000


@pytest.mark.parametrize(
    ("n", "m", "alpha"), [(1000, 10000, 0.05), (200, 300, 0.01), (50, 20000, 1e-4)]
)
def test_critical_statistic(n: int, m: int, alpha: float) -> None:
    crit = ks_critical_statistic(alpha, n, m)
    g = math.gcd(n, m)
    lcm = n // g * m
    assert ks_pvalue(crit, n, m) < alpha
    assert ks_pvalue(crit - 1.0 / lcm, n, m) >= alpha


def test_no_scipy_stats_import() -> None:
    import subprocess

    code = (
        "import sys, edge_actors.drift.ks, edge_actors.drift.categorical, "
        "edge_actors.drift.distances, edge_actors.drift.corrections, "
        "edge_actors.drift.calibration, edge_actors.drift.detector; "
        "assert 'scipy.stats' not in sys.modules, sorted(m for m in sys.modules if 'scipy' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_exact_pvalue_rounding_to_one_is_not_a_failure() -> None:
    """Found by hypothesis: n=1, m=5, D=0.6 is exactly p=1 (scipy), not the asymptotic 0.8."""
    res = ks_test(0.6, 1, 5)
    assert res.method == "exact" and res.pvalue == 1.0
