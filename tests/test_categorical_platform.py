"""The categorical statistics on the platform's own index type (``np.intp``).

``np.bincount`` takes only arrays castable to ``intp``, which is int32 on a
32-bit interpreter: int64 bucket indices raised ``TypeError`` in the drift
worker's first categorical check on every 32-bit ARM board (found by
``make test-arm`` on armhf). On a 64-bit host ``intp`` is int64 and this
passes either way; ``make test-arm`` runs it on armv7 and armv6, where it fails
without the fix. No scipy (the ARM roots do not have it): expected values by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_actors.drift.categorical import (
    CategoricalReference,
    chi2_test,
    chi2_two_sample,
    merge_buckets,
)


def test_bucket_counts_pool_unknown_codes_into_other() -> None:
    ref = CategoricalReference({0: 50.0, 1: 30.0, 2: 20.0})
    got = ref.bucket_counts([0, 0, 1, 2, 2, 2, 7, np.nan])
    assert got.tolist() == [2.0, 1.0, 3.0, 1.0]  # 7 is OTHER, NaN ignored
    empty = CategoricalReference({-1: 5.0})
    assert empty.bucket_counts([3, 4]).tolist() == [2.0]


def test_small_buckets_are_merged_and_tested() -> None:
    # 1 and 2 are pooled, and the pool (3) is still short of 5, so it takes 50 too.
    groups = merge_buckets(np.array([100.0, 1.0, 2.0, 50.0]), 5.0)
    assert groups.tolist() == [0, 1, 1, 1]
    # Goodness of fit: two groups after pooling -> one degree of freedom.
    res = chi2_test([60, 1, 1, 38], [100, 1, 2, 50])
    assert res.df == 1
    exp = np.array([100, 53]) / 153 * 100
    obs = np.array([60, 40])
    assert res.statistic == pytest.approx(float(((obs - exp) ** 2 / exp).sum()))
    # Two-sample: the same window against itself is no evidence at all.
    same = chi2_two_sample([40, 30, 20, 10], [400, 300, 200, 100])
    assert same.statistic == pytest.approx(0.0, abs=1e-12) and same.pvalue == pytest.approx(1.0)
    shifted = chi2_two_sample([10, 20, 30, 40], [400, 300, 200, 100])
    assert shifted.df == 3 and shifted.pvalue < 1e-6
