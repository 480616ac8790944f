"""Multiple-testing corrections across the features checked at one time.

Bonferroni (the default) controls the family-wise error rate: each of ``k``
p-values is compared with ``alpha / k``.  Benjamini-Hochberg controls the
false discovery rate; its adjusted p-values equal
``scipy.stats.false_discovery_control(ps, method='bh')``.  Features whose test
did not run (``NaN`` p-value) are left out of ``k``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Correction", "adjust_pvalues", "benjamini_hochberg", "bonferroni", "reject"]

FloatArray = npt.NDArray[np.float64]
Correction = Literal["none", "bonferroni", "bh"]


def bonferroni(pvalues: npt.ArrayLike) -> FloatArray:
    """Bonferroni-adjusted p-values ``min(1, k p)``; NaNs stay NaN and do not count in ``k``."""
    ps = np.asarray(pvalues, dtype=np.float64)
    k = int(np.count_nonzero(~np.isnan(ps)))
    return np.minimum(ps * max(k, 1), 1.0)


def benjamini_hochberg(pvalues: npt.ArrayLike) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone); NaNs stay NaN."""
    ps = np.asarray(pvalues, dtype=np.float64)
    out = np.full(ps.shape, np.nan)
    ok = ~np.isnan(ps)
    vals = ps[ok]
    k = vals.shape[0]
    if k <= 1:
        out[ok] = vals
        return out
    order = np.argsort(vals)
    ranked = vals[order] * k / np.arange(1, k + 1)
    # The adjusted value of rank i is the smallest ranked value at or above i.
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty(k)
    adjusted[order] = np.clip(ranked, 0.0, 1.0)
    out[ok] = adjusted
    return out


def adjust_pvalues(pvalues: npt.ArrayLike, correction: Correction) -> FloatArray:
    """Adjusted p-values for ``correction`` (``'none'`` returns them unchanged)."""
    if correction == "bonferroni":
        return bonferroni(pvalues)
    if correction == "bh":
        return benjamini_hochberg(pvalues)
    if correction == "none":
        return np.array(pvalues, dtype=np.float64)
    raise ValueError(f"unknown correction {correction!r}")


def reject(pvalues: npt.ArrayLike, alpha: float, correction: Correction) -> npt.NDArray[np.bool_]:
    """Which hypotheses are rejected at level ``alpha`` after ``correction``."""
    adjusted = adjust_pvalues(pvalues, correction)
    with np.errstate(invalid="ignore"):
        out: npt.NDArray[np.bool_] = np.asarray(adjusted < alpha, dtype=np.bool_)
    return out
