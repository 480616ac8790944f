"""edge_actors.drift.special against scipy.special (and mpmath where scipy is the weaker one).

Tolerances checked here (relative unless stated):

* ``kolmogorov``: bit-identical port; checked to 1e-15.
* ``kolmogi``: 1e-15 for p in [1e-300, 1] (measured 1.8e-16).
* ``smirnov``: 1e-13 while sf >= 1e-50, 1e-12 down to 1e-300 (measured
  ~3e-14 and ~1.1e-13: scipy sums in double-double, we exponentiate a double
  exponent of size |log sf|), 1e-15 absolute below that.
* ``chdtrc``: 1e-12 vs scipy (measured <= ~1e-14) except where scipy's own
  lgamma-based prefactor is the weak part (df > 100 and |x - df| > 0.4 df:
  scipy is off by up to ~1e-11 there); there we check against mpmath: 1e-13 while Q >= 1e-50, 5e-13
  down to 1e-300 (measured 2e-13 at Q ~ 1e-225; ~|log Q| * 4e-16).
"""

from __future__ import annotations

import math
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import scipy.special as sc
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_actors.drift.special import chdtrc, kolmogi, kolmogorov, smirnov


def _close(got: float, want: float, rtol: float, atol: float = 0.0) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    if got == want:
        return True
    return abs(got - want) <= max(atol, rtol * abs(want))


def _smirnov_rtol(want: float) -> tuple[float, float]:
    if want >= 1e-50:
        return 1e-13, 0.0
    if want >= 1e-300:
        return 1e-12, 0.0
    return 0.0, 1e-15


# --------------------------------------------------------------------------- smirnov


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 37, 100, 140, 141, 500, 1013, 5000, 9091, 20000])
def test_smirnov_dense_grid(n: int) -> None:
    xs = np.concatenate(
        [
            np.linspace(0.0, 1.0, 201),
            np.linspace(0.0, min(1.0, 8.0 / math.sqrt(n)), 201),
            [0.5 / n, 1.0 / n, 1.5 / n, 2.0 / n, 1 - 1.0 / n, 1 - 0.5 / n, 1 - 1.5 / n],
            [np.nextafter(1.0 / n, 0), np.nextafter(1.0 / n, 2), np.nextafter(1.0, 0)],
        ]
    )
    for x in xs:
        x = float(x)
        want = float(sc.smirnov(n, x))
        rtol, atol = _smirnov_rtol(want)
        got = smirnov(n, x)
        assert _close(got, want, rtol, atol), (n, x, got, want)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=20000),
    u=st.floats(min_value=0.0, max_value=1.0),
    tail=st.booleans(),
)
def test_smirnov_hypothesis(n: int, u: float, tail: bool) -> None:
    # Half the draws concentrate where the sf is not negligible (x ~ 1/sqrt(n)).
    x = u if tail else u * min(1.0, 8.0 / math.sqrt(n))
    want = float(sc.smirnov(n, x))
    rtol, atol = _smirnov_rtol(want)
    assert _close(smirnov(n, x), want, rtol, atol)


def test_smirnov_edges() -> None:
    for n, x in [(5, 0.0), (5, 1.0), (1, 0.3), (1, 0.0), (1, 1.0), (20000, 0.0), (20000, 1.0)]:
        assert smirnov(n, x) == float(sc.smirnov(n, x))
    for n, x in [(0, 0.5), (-1, 0.5), (5, -0.1), (5, 1.1), (5, math.nan)]:
        assert math.isnan(smirnov(n, x))
    # x exactly 1/n and n*x an exact integer (the zero term is excluded).
    for n in (4, 8, 10, 1000):
        for k in (1, 2, n // 2, n - 1):
            x = k / n
            assert _close(smirnov(n, x), float(sc.smirnov(n, x)), 1e-13, 1e-300)
    # Beyond scipy's underflow cut-off both give exactly 0.
    assert smirnov(20000, 0.2) == float(sc.smirnov(20000, 0.2)) == 0.0


def test_smirnov_large_n_approximation() -> None:
    # Above 1e6 scipy switches to exp(-(6nx+1)^2 / 18n); so do we.
    for x in (1e-5, 1e-4, 5e-4, 1e-3, 2e-3):
        want = float(sc.smirnov(2_000_000, x))
        assert _close(smirnov(2_000_000, x), want, 1e-13)


def test_smirnov_against_mpmath() -> None:
    # Where we differ from scipy most (deep tail) check who is right: both ~1e-13.
    mpmath.mp.dps = 50
    n, x = 100, 0.9875
    xm = mpmath.mpf(x)
    total = mpmath.mpf(0)
    for j in range(math.floor(n * (1 - x)) + 1):
        p = xm + mpmath.mpf(j) / n
        total += mpmath.binomial(n, j) * p ** (j - 1) * (1 - p) ** (n - j)
    exact = x * total
    assert abs(smirnov(n, x) - exact) / exact < 2e-13


# --------------------------------------------------------------------------- kolmogorov


def test_kolmogorov_grid() -> None:
    xs = np.concatenate(
        [np.linspace(0.0, 10.0, 5001), np.geomspace(1e-3, 40.0, 2000), [0.82, 0.8200000000000001]]
    )
    for x in xs:
        want = float(sc.kolmogorov(x))
        assert _close(kolmogorov(float(x)), want, 1e-15), x


def test_kolmogorov_edges() -> None:
    for x in (-1.0, 0.0, 0.04, 0.0406, 0.05, math.inf, -math.inf, 1e300):
        assert kolmogorov(x) == float(sc.kolmogorov(x))
    assert math.isnan(kolmogorov(math.nan))


@settings(max_examples=300, deadline=None)
@given(x=st.floats(min_value=0.0, max_value=50.0))
def test_kolmogorov_hypothesis(x: float) -> None:
    assert _close(kolmogorov(x), float(sc.kolmogorov(x)), 1e-15)


def test_kolmogi_grid() -> None:
    ps = np.concatenate([np.geomspace(1e-300, 1.0, 3000), np.linspace(0.0, 1.0, 3001)])
    for p in ps:
        want = float(sc.kolmogi(p))
        assert _close(kolmogi(float(p)), want, 1e-15), p


def test_kolmogi_edges() -> None:
    for p in (0.0, 1.0, 5e-324, 1e-310, 1 - 2**-53, 1 - 2**-52, 0.5):
        assert _close(kolmogi(p), float(sc.kolmogi(p)), 1e-15), p
    for p in (-0.1, 1.1, math.nan):
        assert math.isnan(kolmogi(p))
    assert kolmogi(0.0) == math.inf
    assert kolmogi(1.0) == 0.0


@settings(max_examples=300, deadline=None)
@given(e=st.floats(min_value=-300.0, max_value=0.0))
def test_kolmogi_hypothesis_roundtrip(e: float) -> None:
    p = 10.0**e
    x = kolmogi(p)
    assert _close(x, float(sc.kolmogi(p)), 1e-15)
    if p < 1.0:
        assert _close(kolmogorov(x), p, 1e-12)


# --------------------------------------------------------------------------- chdtrc


def _chdtrc_mp(df: float, x: float) -> float:
    mpmath.mp.dps = 40
    return float(
        mpmath.gammainc(mpmath.mpf(df) / 2, mpmath.mpf(x) / 2, mpmath.inf, regularized=True)
    )


def _chdtrc_ref(df: float, x: float) -> tuple[float, float]:
    """Reference value and tolerance: scipy, unless its lgamma prefactor is the weak part.

    For |x - df| > 0.4 df cephes computes ``x^a e^-x / Gamma(a)`` as
    ``exp(a log x - x - lgamma(a))``, which loses ~eps * a log(x) (1e-11 at
    df ~ 1000); there mpmath is the reference.
    """
    if df > 100 and abs(x - df) > 0.4 * df:
        want = _chdtrc_mp(df, x)
        return want, (1e-13 if want >= 1e-50 else 5e-13)
    return float(sc.chdtrc(df, x)), 1e-12


@pytest.mark.parametrize("df", [*range(1, 41), 50, 99, 100, 199, 200, 401, 1000])
def test_chdtrc_grid_vs_scipy(df: int) -> None:
    sd = math.sqrt(2 * df)
    xs = np.concatenate(
        [
            np.linspace(0.0, 3.0, 61),
            np.linspace(0.0, df + 40 * sd + 100, 301),
            df + np.linspace(-6, 6, 61) * sd,
        ]
    )
    for x in xs[xs >= 0]:
        want, rtol = _chdtrc_ref(df, float(x))
        got = chdtrc(df, float(x))
        assert _close(got, want, rtol, 1e-300), (df, x, got, want)


@pytest.mark.parametrize("df", [2000, 5000, 10000, 20000, 100000])
def test_chdtrc_large_df(df: int) -> None:
    sd = math.sqrt(2 * df)
    # Near the centre scipy (Temme's expansion) is accurate: compare with it.
    for z in np.linspace(-6, 6, 25):
        x = df + z * sd
        assert _close(chdtrc(df, x), float(sc.chdtrc(df, x)), 1e-12), (df, x)
    # In the far tail scipy's prefactor loses ~1e-12; compare with mpmath instead.
    for f in np.linspace(0.2, 2.5, 24):
        x = float(f * df)
        want = _chdtrc_mp(df, x)
        # A double exponent of size |log Q| costs ~|log Q| * 4e-16 relative.
        rtol = 1e-13 if want >= 1e-50 else 5e-13
        assert _close(chdtrc(df, x), want, rtol, 1e-300), (df, x)


@settings(max_examples=300, deadline=None)
@given(
    df=st.integers(min_value=1, max_value=1000),
    z=st.floats(min_value=-1.0, max_value=30.0),
)
def test_chdtrc_hypothesis_integer_df(df: int, z: float) -> None:
    x = max(0.0, df + z * math.sqrt(2 * df) + 3 * z)
    want, rtol = _chdtrc_ref(df, x)
    assert _close(chdtrc(df, x), want, rtol, 1e-300)


@settings(max_examples=300, deadline=None)
@given(
    df=st.floats(min_value=0.01, max_value=60.0),
    x=st.floats(min_value=0.0, max_value=200.0),
)
def test_chdtrc_hypothesis_real_df(df: float, x: float) -> None:
    assert _close(chdtrc(df, x), float(sc.chdtrc(df, x)), 1e-12, 1e-300)


def test_chdtrc_edges() -> None:
    cases = [
        (1, 0.0),
        (0.5, 0.0),
        (0, 1.0),
        (0, 0.0),
        (-1, 1.0),
        (1, -1.0),
        (math.inf, 1.0),
        (math.inf, math.inf),
        (1, math.inf),
        (math.nan, 1.0),
        (1, math.nan),
        (1e-300, 1.0),
        (1, 1e-300),
        (3, 1e-3),
        (1, 1500.0),
        (1, 2000.0),
    ]
    for df, x in cases:
        assert _close(chdtrc(df, x), float(sc.chdtrc(df, x)), 1e-13, 1e-300), (df, x)


# --------------------------------------------------------------------------- no scipy


def test_drift_modules_do_not_import_scipy() -> None:
    code = (
        "import sys\n"
        "import edge_actors.drift.detector, edge_actors.drift.categorical\n"
        "import edge_actors.drift.ks, edge_actors.workers.drift\n"
        "bad = sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
