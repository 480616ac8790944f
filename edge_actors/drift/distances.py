"""Distances and data-quality rates between a window and a sorted reference.

* :func:`wasserstein_1` equals ``scipy.stats.wasserstein_distance(window, ref)``
  and costs ``O(n log m)``: the reference is summarised once by prefix sums
  (:class:`WassersteinReference`) so that the integral of ``|F_w - F_r|`` over
  each gap between window points is evaluated in closed form.
* :class:`NumericPSI` bins by reference quantiles.  Empty bins would make PSI
  infinite, so every bin proportion (window and reference) is floored at
  ``eps = 1e-4`` before ``sum((a - e) * ln(a / e))``; with 10 bins one empty
  bin therefore contributes at most ``0.1 * ln(1000) ~= 0.69``.
* :func:`nan_rate` and :func:`out_of_range_rate` are data-quality checks.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "PSI_EPSILON",
    "NumericPSI",
    "WassersteinReference",
    "nan_rate",
    "out_of_range_rate",
    "psi",
    "wasserstein_1",
]

FloatArray = npt.NDArray[np.float64]

#: Floor applied to bin proportions before PSI so that empty bins stay finite.
PSI_EPSILON = 1e-4


class WassersteinReference:
    """A sorted, NaN-free reference with the prefix sums Wasserstein-1 needs.

    Values are centred on their mean before summing so that the prefix sums
    do not lose precision for data far from zero (W1 is shift-invariant).
    """

    def __init__(self, sorted_values: FloatArray) -> None:
        vals = np.asarray(sorted_values, dtype=np.float64)
        if vals.shape[0] == 0:
            raise ValueError("reference must not be empty")
        self.center = float(vals.mean())
        self.values: FloatArray = vals - self.center
        self.n = int(vals.shape[0])
        # prefix[k] = sum of the k smallest centred values
        self.prefix: FloatArray = np.concatenate([[0.0], np.cumsum(self.values)])

    def integral_cdf(self, x: FloatArray) -> FloatArray:
        """``G(x) = integral of F_r from -inf to x`` for centred ``x``."""
        cnt = np.searchsorted(self.values, x, side="right")
        return (cnt * x - self.prefix[cnt]) / self.n


def wasserstein_1(window: npt.ArrayLike, ref: WassersteinReference) -> float:
    """Wasserstein-1 distance between a NaN-free window and the reference."""
    w = np.sort(np.asarray(window, dtype=np.float64)) - ref.center
    n = w.shape[0]
    if n == 0:
        raise ValueError("window must not be empty")
    m = ref.n
    g = ref.integral_cdf(w)
    # Left tail: F_w = 0 before the first window point.
    total = float(g[0])
    # Right tail: F_w = 1 after the last one; integral of (1 - F_r) from w[-1] to inf.
    cnt_last = int(np.searchsorted(ref.values, w[-1], side="right"))
    total += float((ref.prefix[-1] - ref.prefix[cnt_last] - (m - cnt_last) * w[-1]) / m)
    if n > 1:
        a, b = w[:-1], w[1:]
        level = np.arange(1, n) / n
        # F_r crosses the window level c at the ceil(c m)-th smallest reference value.
        j = np.minimum(np.ceil(level * m - 1e-9).astype(np.int64), m)
        cross = np.clip(ref.values[np.maximum(j - 1, 0)], a, b)
        g_a, g_b = g[:-1], g[1:]
        g_x = ref.integral_cdf(cross)
        below = level * (cross - a) - (g_x - g_a)
        above = (g_b - g_x) - level * (b - cross)
        total += float(np.sum(below) + np.sum(above))
    return total


def psi(observed: npt.ArrayLike, expected: npt.ArrayLike, eps: float = PSI_EPSILON) -> float:
    """Population stability index of two count (or proportion) vectors over the same bins."""
    a = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    a_sum, e_sum = a.sum(), e.sum()
    if a_sum <= 0 or e_sum <= 0:
        return float("nan")
    pa = np.maximum(a / a_sum, eps)
    pe = np.maximum(e / e_sum, eps)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


class NumericPSI:
    """PSI of numeric windows over bins cut at reference quantiles.

    Args:
        sorted_values: sorted, NaN-free reference.
        bins: number of quantile bins; tied quantiles collapse, so there may be fewer.
    """

    def __init__(self, sorted_values: FloatArray, bins: int = 10) -> None:
        vals = np.asarray(sorted_values, dtype=np.float64)
        if vals.shape[0] == 0:
            raise ValueError("reference must not be empty")
        qs = np.quantile(vals, np.arange(1, bins) / bins)
        self.edges: FloatArray = np.unique(qs)
        # Reference proportions are counted, not assumed 1/bins, because of ties.
        self.expected: FloatArray = self._counts(vals)

    def _counts(self, values: FloatArray) -> FloatArray:
        idx = np.searchsorted(self.edges, values, side="right")
        return np.bincount(idx, minlength=self.edges.shape[0] + 1).astype(np.float64)

    def __call__(self, window: npt.ArrayLike) -> float:
        """PSI of a NaN-free window against the reference bins."""
        return psi(self._counts(np.asarray(window, dtype=np.float64)), self.expected)


def nan_rate(window: npt.ArrayLike) -> float:
    """Share of NaN values in the window (NaN for an empty window)."""
    w = np.asarray(window, dtype=np.float64)
    if w.shape[0] == 0:
        return float("nan")
    return float(np.count_nonzero(np.isnan(w))) / int(w.shape[0])


def out_of_range_rate(window: npt.ArrayLike, ref_min: float, ref_max: float) -> float:
    """Share of non-NaN window values outside ``[ref_min, ref_max]`` (NaN if none)."""
    w = np.asarray(window, dtype=np.float64)
    w = w[~np.isnan(w)]
    if w.shape[0] == 0:
        return float("nan")
    return float(np.count_nonzero((w < ref_min) | (w > ref_max))) / int(w.shape[0])
