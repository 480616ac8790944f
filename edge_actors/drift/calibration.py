"""False-alarm control for repeated KS / chi-squared checks on a stream.

Problem
    A plain ``p < 0.05`` every 100 records alarms every few thousand records
    on data that never drifted.  Calibrated mode instead picks, per test, a
    per-check false-positive probability ``alpha_check`` so that the expected
    number of records to the first false ``drift_started`` of *any* of the
    ``k`` monitored features is at least ``erfa`` (default 1,000,000).

Method (a bound, not an extrapolated simulation)
    1. Under H0 the KS statistic is distribution-free, so the probability that
       one check exceeds a threshold ``tau`` is exactly the two-sample p-value
       ``p(tau)`` (:func:`edge_actors.drift.ks.ks_pvalue`, exact for the
       default sizes); for chi-squared it is the ``chdtrc`` p-value.
    2. m-of-n confirmation: a ``drift_started`` needs ``m`` exceedances, and
       the exceedances that start one episode cannot start the next (an
       episode only resolves after ``n`` clean checks).  So starts <=
       exceedances / m, whatever the correlation between overlapping windows.
    3. Expected starts per record per feature are therefore at most
       ``sum over windows of p_window / (m * cadence_window)``; the budget
       ``1 / (k * erfa)`` is split evenly between the short and the long window,
       giving ``alpha_check = m * cadence / (2 * k * erfa)`` for each, and
       ``tau`` is the smallest attainable D with ``p(tau) < alpha_check``
       (:func:`edge_actors.drift.ks.ks_critical_statistic`).
    The bound ignores the clustering of exceedances caused by overlapping
    windows (90 % overlap at the defaults), which only lowers the real rate:
    :func:`simulate_stationary` measures it on a uniform stream (deterministic
    seed), and the tests and ``benchmarks/drift_stats.py`` report the achieved
    count.  Being conservative costs little: the KS tail falls like
    ``exp(-2 n_e tau^2)``, so a factor of 3 in ``alpha_check`` moves ``tau`` by
    about 3 %.  Simulating far enough into the tail to calibrate ``tau``
    directly (1e-5 per check) would take minutes, not the ~2 s a worker has at
    start-up; extrapolating from shallower levels is less safe than this bound.

Limits
    The bound holds in expectation for independent continuous records.
    Dependent records (a sensor sampled faster than it changes) break it:
    the detector then tests with an effective sample size (see
    :mod:`edge_actors.drift.detector`). Ties (discrete data) make KS
    conservative, so the bound still holds; few-valued features are tested
    with chi-squared on their values instead, and a feature with one large
    atom in two parts (the atom's share, KS on the rest) at half the alpha
    each, so the bound holds for their sum.  Windows with NaNs have fewer
    values; the detector rescales ``tau`` by ``sqrt(n_e(full) / n_e(valid))``
    (the asymptotic scaling).  Stretching the cadence at runtime only lowers
    the false-alarm rate.  The effect-size floor ``min_statistic`` is applied
    on top and can only lower it further.

Thresholds are cached on disk per (window, n_ref, alpha) under a cache
directory passed in by the caller; nothing is written at import.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_actors.drift.ks import KSChecker, KSReference, ks_critical_statistic

__all__ = [
    "WindowCalibration",
    "ks_threshold",
    "per_check_alpha",
    "simulate_stationary",
]

logger = logging.getLogger(__name__)

_CACHE_FILE = "ks_thresholds_v1.json"
# Process-global singleton: thresholds computed or loaded by this process, by
# ``_key``. Each entry is a pure function of its key, so a stale entry cannot
# exist. After fork() the child inherits the parent's entries (still correct;
# the supervisor never calibrates, so a drift worker starts with none) and
# adds its own, which the parent and siblings never see: processes share
# thresholds only through the file in ``cache_dir``. No lock: the drift worker
# uses it from one thread; a race could only compute a value twice.
_memory_cache: dict[str, float] = {}


def per_check_alpha(
    erfa: float, cadence: int, n_features: int, confirm_m: int, share: float = 0.5
) -> float:
    """Per-check false-positive probability for one window type (see module docstring).

    Args:
        erfa: expected records to a false alarm, over all features.
        cadence: records between checks of this window.
        n_features: features with a statistical test.
        confirm_m: exceedances needed (m of m-of-n) to start a drift episode.
        share: fraction of the false-alarm budget given to this window type.
    """
    if erfa <= 0 or cadence <= 0 or n_features <= 0 or confirm_m <= 0:
        raise ValueError("erfa, cadence, n_features and confirm_m must be > 0")
    return min(1.0, confirm_m * cadence * share / (n_features * erfa))


def _key(window: int, n_ref: int, alpha: float) -> str:
    return f"{window}:{n_ref}:{alpha:.12e}"


def _load(cache_dir: Path) -> dict[str, float]:
    try:
        data = json.loads((cache_dir / _CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _store(cache_dir: Path, entries: dict[str, float]) -> None:
    try:
        # Private like everything the agent writes (issue 11: 0700 directories, 0600 files).
        cache_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        cache_dir.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".ks_thr")
        with os.fdopen(fd, "w") as fh:
            json.dump(entries, fh)
        os.replace(tmp, cache_dir / _CACHE_FILE)
    except OSError as exc:
        # A read-only or full disk only costs a recomputation next start.
        logger.warning("could not write KS threshold cache in %s: %s", cache_dir, exc)


#: Above this window * n_ref the threshold comes from the asymptotic distribution.
EXACT_COST_LIMIT = 2_000_000
#: Conservative factor on an asymptotic threshold.
ASYMP_MARGIN = 1.01


def ks_threshold(
    window: int, n_ref: int, alpha: float, cache_dir: str | os.PathLike[str] | None = None
) -> float:
    """Smallest KS D with per-check p-value below ``alpha`` for these sizes (cached)."""
    key = _key(window, n_ref, alpha)
    got = _memory_cache.get(key)
    if got is not None:
        return got
    disk: dict[str, float] = {}
    if cache_dir is not None:
        disk = _load(Path(cache_dir))
        if key in disk:
            _memory_cache[key] = disk[key]
            return disk[key]
    if window * n_ref > EXACT_COST_LIMIT:
        # An exact p-value costs O(window * n_ref): ~0.6 s per evaluation at
        # the default 1,000 x 10,000 here, ~25x that on a slow arm box, and a
        # threshold takes ten or more: minutes at start-up, past the start-up
        # heartbeat. At these sizes the asymptotic p-value is within ~2 % of the
        # exact one, which moves the quantile by far less than the 1 % added
        # on top to keep the threshold on the conservative side.
        value = ks_critical_statistic(alpha, window, n_ref, "asymp") * ASYMP_MARGIN
    else:
        value = ks_critical_statistic(alpha, window, n_ref)
    _memory_cache[key] = value
    if cache_dir is not None:
        disk[key] = value
        _store(Path(cache_dir), disk)
    return value


@dataclass(frozen=True)
class WindowCalibration:
    """Per-check alpha and KS threshold for one window type of one feature."""

    window: int
    cadence: int
    n_ref: int
    alpha: float
    ks_threshold: float


def simulate_stationary(
    window: int,
    n_ref: int,
    cadence: int,
    threshold: float,
    records: int,
    confirm_m: int,
    confirm_n: int,
    seed: int = 0,
) -> tuple[int, int, int]:
    """Simulate one feature on a stationary uniform stream.

    Returns ``(checks, exceedances, drift_starts)`` for sliding-window KS
    every ``cadence`` records with m-of-n confirmation, so the real false
    alarm rate can be compared with the bound used for calibration.
    """
    rng = np.random.default_rng(seed)
    checker = KSChecker(KSReference(rng.random(n_ref)), window)
    stream = rng.random(records)
    hist: list[bool] = []
    drifting = False
    clean = 0
    checks = exceed = starts = 0
    for end in range(window, records + 1, cadence):
        hit = checker.statistic(stream[end - window : end]) >= threshold - 1e-12
        checks += 1
        exceed += hit
        hist.append(hit)
        if len(hist) > confirm_n:
            hist.pop(0)
        if not drifting and sum(hist) >= confirm_m:
            drifting, clean = True, 0
            starts += 1
        elif drifting:
            clean = 0 if hit else clean + 1
            if clean >= confirm_n:
                drifting = False
                hist.clear()
    return checks, exceed, starts


def expected_records_to_false_alarm(
    alphas_and_cadences: list[tuple[float, int]], n_features: int, confirm_m: int
) -> float:
    """The ERFA lower bound implied by per-check alphas (inverse of the bound above)."""
    rate = sum(a / (confirm_m * c) for a, c in alphas_and_cadences) * n_features
    return math.inf if rate == 0 else 1.0 / rate
