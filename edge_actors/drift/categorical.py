"""Chi-squared goodness of fit and PSI for categorical features.

Window values are float category codes (the producer stores them as floats):
``-1`` means a category the model did not know (OTHER), NaN means missing and
is left out of the test (the NaN rate is checked separately).  Codes that do
not appear in the reference also go to the OTHER bucket.

Expected counts are ``n * reference frequency``.  The chi-squared
approximation needs expected counts that are not tiny, so buckets whose
expected count is below ``min_expected_count`` are merged, smallest first,
into one pooled bucket until the pool reaches the minimum (if the pool is
still short it absorbs the next smallest bucket).  OTHER usually has expected
count 0 in the reference, so it always ends up in the pool: a new category
that floods the window still inflates the pooled bucket's observed count.
The statistic is ``sum((o - e)^2 / e)`` with ``len(buckets) - 1`` degrees of
freedom, the p-value ``chdtrc`` (a numpy port of ``scipy.special.chdtrc``); it equals
``scipy.stats.chisquare(merged_observed, merged_expected)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_actors.drift.distances import PSI_EPSILON, psi
from edge_actors.drift.special import chdtrc

__all__ = [
    "CategoricalReference",
    "Chi2Result",
    "chi2_test",
    "chi2_two_sample",
    "merge_buckets",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Window code for a category the model did not know.
OTHER_CODE = -1


@dataclass(frozen=True)
class Chi2Result:
    """Chi-squared goodness of fit: statistic, p-value, degrees of freedom, total count."""

    statistic: float
    pvalue: float
    df: int
    n: int


def merge_buckets(expected: FloatArray, min_expected_count: float) -> IntArray:
    """Group index per bucket: small buckets (expected < minimum) pooled into one group.

    Groups are numbered so that unmerged buckets keep their relative order and
    the pool, if any, is the last group.
    """
    k = expected.shape[0]
    order = np.argsort(expected, kind="stable")
    pooled = np.zeros(k, dtype=bool)
    acc = 0.0
    for idx in order:
        # A large bucket stops the pooling unless the pool is still short of the minimum.
        if expected[idx] >= min_expected_count and (
            acc >= min_expected_count or (acc == 0.0 and not pooled.any())
        ):
            break
        pooled[idx] = True
        acc += float(expected[idx])
    groups = np.empty(k, dtype=np.intp)  # bincount wants intp: int32 on 32-bit ARM
    keep = np.flatnonzero(~pooled)
    groups[keep] = np.arange(keep.shape[0])
    groups[pooled] = keep.shape[0]
    return groups


def chi2_test(
    observed: npt.ArrayLike, expected_freq: npt.ArrayLike, min_expected_count: float = 5.0
) -> Chi2Result:
    """Chi-squared goodness of fit of bucket counts against reference frequencies.

    Args:
        observed: window count per bucket.
        expected_freq: reference frequency (or count) per bucket; rescaled to the window total.
        min_expected_count: buckets below this expected count are pooled.
    """
    obs = np.asarray(observed, dtype=np.float64)
    freq = np.asarray(expected_freq, dtype=np.float64)
    n = float(obs.sum())
    if n <= 0 or freq.sum() <= 0:
        return Chi2Result(math.nan, math.nan, 0, int(n))
    exp = freq / freq.sum() * n
    groups = merge_buckets(exp, min_expected_count)
    n_groups = int(groups.max()) + 1
    obs_g = np.bincount(groups, weights=obs, minlength=n_groups)
    exp_g = np.bincount(groups, weights=exp, minlength=n_groups)
    df = n_groups - 1
    if df < 1:
        return Chi2Result(0.0, 1.0, 0, int(n))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (obs_g - exp_g) ** 2 / exp_g
    stat = float(terms.sum())
    return Chi2Result(stat, chdtrc(df, stat), df, int(n))


def chi2_two_sample(
    observed: npt.ArrayLike,
    reference: npt.ArrayLike,
    min_expected_count: float = 5.0,
    inflation: float = 1.0,
) -> Chi2Result:
    """Chi-squared test of homogeneity of a 2 x k table: window counts vs reference counts.

    Unlike :func:`chi2_test` it does not take the reference shares as exact: a
    reference of ``N`` rows carries sampling noise of its own, and the
    statistic is about ``N / (n + N)`` of the goodness-of-fit one (the
    one-sample test on a 1,000-row reference with 1,000-row windows alarms
    about twice as often as calibrated). Buckets are pooled on the smaller
    side's expected count. ``inflation`` is the variance inflation of the
    window's shares (``(1 + rho) / (1 - rho)`` for dependent records, see
    :func:`category_autocorrelation`); the reference is taken as independent,
    so the statistic is divided by ``(inflation * N + n) / (N + n)``. Without
    inflation and pooling it equals ``scipy.stats.chi2_contingency(...,
    correction=False)``.
    """
    obs = np.asarray(observed, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    n, big_n = float(obs.sum()), float(ref.sum())
    if n <= 0 or big_n <= 0:
        return Chi2Result(math.nan, math.nan, 0, int(n))
    # A bucket empty on both sides carries no information (and no degree of freedom).
    seen = (obs + ref) > 0
    obs, ref = obs[seen], ref[seen]
    tot = obs + ref
    e_w = tot * (n / (n + big_n))
    e_r = tot * (big_n / (n + big_n))
    groups = merge_buckets(np.minimum(e_w, e_r), min_expected_count)
    n_groups = int(groups.max()) + 1
    df = n_groups - 1
    if df < 1:
        return Chi2Result(0.0, 1.0, 0, int(n))
    o_g = np.bincount(groups, weights=obs, minlength=n_groups)
    r_g = np.bincount(groups, weights=ref, minlength=n_groups)
    ew_g = np.bincount(groups, weights=e_w, minlength=n_groups)
    er_g = np.bincount(groups, weights=e_r, minlength=n_groups)
    ok = (ew_g > 0) & (er_g > 0)
    stat = float(
        ((o_g[ok] - ew_g[ok]) ** 2 / ew_g[ok]).sum() + ((r_g[ok] - er_g[ok]) ** 2 / er_g[ok]).sum()
    )
    if inflation > 1.0:
        stat /= (inflation * big_n + n) / (big_n + n)
    return Chi2Result(stat, chdtrc(df, stat), df, int(n))


def category_autocorrelation(codes: FloatArray) -> float:
    """Lag-1 dependence of a category sequence (time order; NaN = missing), clipped to [0, 1).

    ``(P(same as previous) - sum p^2) / (1 - sum p^2)``: 0 for independent
    draws, ``phi`` for a chain that repeats the previous category with
    probability ``phi`` and otherwise draws afresh.
    """
    ok = ~np.isnan(codes)
    pairs = ok[1:] & ok[:-1]
    n_pairs = int(np.count_nonzero(pairs))
    if n_pairs < 2:
        return 0.0
    valid = codes[ok]
    _, counts = np.unique(valid, return_counts=True)
    p = counts / valid.shape[0]
    s2 = float((p * p).sum())
    if s2 >= 1.0:
        return 0.0
    same = float(np.count_nonzero((codes[1:] == codes[:-1]) & pairs)) / n_pairs
    return min(max((same - s2) / (1.0 - s2), 0.0), 0.999)


class CategoricalReference:
    """Reference category frequencies; maps window codes to buckets (known codes + OTHER).

    Args:
        counts: reference count per category code; a ``-1`` entry counts OTHER.
    """

    def __init__(self, counts: Mapping[int, float]) -> None:
        items = sorted((int(k), float(v)) for k, v in counts.items() if int(k) != OTHER_CODE)
        self.codes: IntArray = np.array([k for k, _ in items], dtype=np.int64)
        other = float(counts.get(OTHER_CODE, 0.0))
        #: Reference count per bucket; the last bucket is OTHER.
        self.counts: FloatArray = np.array([v for _, v in items] + [other], dtype=np.float64)
        if self.counts.sum() <= 0:
            raise ValueError("categorical reference has no counts")
        self.n = round(float(self.counts.sum()))

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> CategoricalReference:
        """Build from raw reference codes (NaN dropped)."""
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        uniq, cnt = np.unique(arr.astype(np.int64), return_counts=True)
        return cls({int(u): float(c) for u, c in zip(uniq, cnt, strict=True)})

    @property
    def n_buckets(self) -> int:
        """Known categories plus OTHER."""
        return int(self.counts.shape[0])

    def bucket_counts(self, window: npt.ArrayLike) -> FloatArray:
        """Count per bucket of a window of float codes (NaN ignored, unknown codes to OTHER)."""
        w = np.asarray(window, dtype=np.float64)
        w = w[~np.isnan(w)]
        codes = w.astype(np.int64)
        k = self.codes.shape[0]
        if k:
            pos = np.searchsorted(self.codes, codes)
            pos_c = np.minimum(pos, k - 1)
            known = self.codes[pos_c] == codes
            idx = np.where(known, pos_c, k)
        else:
            idx = np.full(codes.shape[0], k, dtype=np.intp)
        return np.bincount(idx, minlength=k + 1).astype(np.float64)

    def chi2(self, window: npt.ArrayLike, min_expected_count: float = 5.0) -> Chi2Result:
        """Chi-squared test of a window against the reference frequencies."""
        return chi2_test(self.bucket_counts(window), self.counts, min_expected_count)

    def chi2_two_sample(
        self, window: npt.ArrayLike, min_expected_count: float = 5.0, inflation: float = 1.0
    ) -> Chi2Result:
        """Two-sample chi-squared of a window against the reference (:func:`chi2_two_sample`)."""
        return chi2_two_sample(
            self.bucket_counts(window), self.counts, min_expected_count, inflation
        )

    @property
    def other_share(self) -> float:
        """Share of the reference in the OTHER bucket (categories the model does not know)."""
        return float(self.counts[-1] / self.counts.sum())

    def psi(self, window: npt.ArrayLike, eps: float = PSI_EPSILON) -> float:
        """PSI of a window over the reference buckets (proportions floored at ``eps``)."""
        return psi(self.bucket_counts(window), self.counts, eps)
