"""Streaming drift detector: ring-buffer windows, tests at a cadence, a drift state per feature.

Pure python/numpy, no I/O: the drift worker feeds record batches to
:meth:`DriftDetector.update` and writes the returned :class:`DriftEvent` s.

Windows
    One ring of ``max(window_size, long_window_size)`` records per feature.
    The short window (last ``window_size`` records) is checked every
    ``check_frequency`` records once full; the long window (last
    ``long_window_size`` records) every ``long_check_frequency`` records,
    by default ``max(c, long / 10)`` rounded up to a multiple of ``c``: it
    exists to see small shifts, which need many records, and checking it as
    often as the short window would cost 10x for little gain in delay.
    For KS features a second ring holds each record's rank key
    ``#ref <= v + #ref < v`` (uint16 while the reference allows), computed
    once per :meth:`~DriftDetector.update` call for the whole block: the key
    is monotone in ``v`` and determines both ranks (lookup tables), so a
    check sorts one row of keys (a radix sort) instead of sorting its values
    and binary-searching each of them in the reference again at every check
    it is part of. The plain KS features (no atom, uint16 keys) of a check
    are evaluated together, one 2-D numpy operation per step for all of
    them (:meth:`~DriftDetector._evaluate_block`). The statistic, the
    autocorrelation and every other result are the same to the last bit as
    the per-feature path (:func:`~edge_actors.drift.ks.statistic_from_ranks`;
    ``tests/test_drift_block.py``).

Tests
    Numeric features: two-sample KS against the reference (see
    :mod:`edge_actors.drift.ks`).  Numeric features whose reference has at
    most ``discrete_max_values`` distinct values (counts, flags) are tested
    like categorical ones on those values: KS thresholds assume continuous
    data and are needlessly strict with ties.  Other numeric features whose
    most frequent reference value holds at least ``atom_min_share`` of the
    reference (a feature that is 0 in 90 % of rows, the rest continuous) are
    tested in two parts, each at half the per-check alpha (Bonferroni): the
    share of that value (two-sample chi-squared, 2 x 2; events with test
    ``atom_share``, the window's share as statistic) and KS on the other
    values, calibrated for the number of them a window is expected to hold.
    KS on the whole feature would be conservative there (its ties shrink the
    statistic's null distribution) and dilute a change of the rest by the
    atom's share.  Categorical features:
    two-sample chi-squared (window counts vs reference counts, an OTHER
    bucket; :mod:`edge_actors.drift.categorical`).  Data quality: NaN rate
    above the reference's by more than ``nan_rate_threshold``; (numeric)
    share of values outside the reference range above
    ``out_of_range_threshold``; (categorical) share of values in categories
    the reference never saw, above its own share by
    ``unknown_category_threshold`` (test ``unknown_category``).

Dependent records
    The tests assume independent records; sensor streams are autocorrelated,
    and a window of 1,000 AR(1) records with phi = 0.9 carries the
    information of about 53 independent ones.  With ``autocorrelation`` on
    (default) each tested window's lag-1 autocorrelation ``rho`` is
    estimated (numeric: of the values, winsorized to the reference's 1st-99th
    percentiles; categorical: of "same category as the previous record") and the
    test uses the effective sample size ``n_eff = n (1 - rho) / (1 + rho)``
    (the AR(1) variance inflation; for other dependence it is an
    approximation).  Cost: on independent data ``rho`` is estimated around 0
    with noise ``1 / sqrt(n)``, so thresholds rise by about 1 %; on
    dependent data detection waits for more records, because there is less
    information.  ``n_eff`` is in the summary and in every event.

Modes
    ``calibrated`` (default): per-check thresholds from
    :mod:`edge_actors.drift.calibration` so that the expected number of
    records to a false ``drift_started`` on stationary data is at least
    ``erfa``; an exceedance also needs ``D >= min_statistic``.  Each feature
    has a state machine: ``confirm_m`` exceedances among the last
    ``confirm_n`` checks of the short or of the long window emit
    ``drift_started``; ``confirm_n`` consecutive clean checks of every window
    emit ``drift_resolved``.  During an episode, ``drift_worsened`` is
    emitted when the effect size (KS D; for chi-squared Cohen's
    ``w = sqrt(chi2 / n)``) reached by ``confirm_m`` of the last
    ``confirm_n`` checks of a window is ``worsened_factor`` times the one
    last reported, so a false or long episode cannot hide a larger change.
    ``correction`` in calibrated mode: ``bonferroni`` (and ``bh``, which has
    no streaming counterpart here and acts as ``bonferroni``) splits the
    false-alarm budget over the ``k`` features (``erfa`` holds for all of
    them together); ``none`` gives each feature the whole budget (``erfa``
    holds per feature, ``k`` times more false alarms in total).
    Data-quality alarms use the same m-of-n confirmation, and resolve only
    after ``confirm_n`` checks below ``threshold * (1 - quality_hysteresis)``
    (above the reference's own rate), so a rate hovering around the
    threshold does not flap.
    ``per_check`` (the seed's behaviour): every check, KS (or chi-squared) on
    the short window, ``drift_started`` for each feature whose p-value is
    below ``threshold`` after ``correction`` - one event per alarming check,
    no state.  Exact p-values cost milliseconds, so they are computed only
    for features whose D passes the uncorrected critical value (no p-value
    above ``threshold`` can be rejected by Bonferroni or BH).

``DriftEvent.threshold`` is the value the statistic was compared with: a KS
D threshold in calibrated mode, a p-value threshold (after correction) in
per_check mode and for chi-squared, a rate for the data-quality tests.
KS p-values in events and summaries come from
:func:`~edge_actors.drift.ks.ks_pvalue_bounded` (exact for small sizes,
else an approximation within 30 %): they never cost more than microseconds.

Falling behind
    ``update(..., budget=seconds)`` doubles the effective cadence (up to 64x)
    when the checks of a call took longer than ``budget`` and halves it back
    when they took under a quarter of it; ``check_frequency`` can also be set
    at runtime.  Fewer checks only lower the false-alarm rate.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge_actors.drift.calibration import ks_threshold, per_check_alpha
from edge_actors.drift.categorical import (
    CategoricalReference,
    Chi2Result,
    category_autocorrelation,
)
from edge_actors.drift.corrections import Correction, adjust_pvalues
from edge_actors.drift.distances import NumericPSI, WassersteinReference, wasserstein_1
from edge_actors.drift.ks import KSChecker, KSReference, ks_pvalue_bounded
from edge_actors.drift.settings import DriftSettings, Mode

__all__ = ["DriftDetector", "DriftEvent", "DriftSettings", "FeatureKind", "Mode"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
FeatureKind = Literal["numeric", "categorical"]
_STATE_VERSION = 2
_MAX_STRETCH = 64
_MAX = np.maximum.reduce
_SHIPPED = DriftSettings()
#: A feature with an atom (``DriftSettings.atom_min_share``) is split only when at
#: least this many reference values are outside the atom.
ATOM_MIN_REST = 50
#: Tests whose events are data-quality alarms (a rate against a threshold).
QUALITY_TESTS = ("nan_rate", "out_of_range", "unknown_category")


@dataclass(frozen=True)
class DriftEvent:
    """One drift event; see the module docstring for the meaning of ``threshold``."""

    t: float
    feature: str
    test: str
    statistic: float
    p_value: float
    threshold: float
    correction: str
    window_size: int
    n_ref: int
    state: str
    seq_first: int
    seq_last: int
    reference_hash: str
    #: Effective sample size of the window (``window_size`` less NaNs, less dependence).
    n_eff: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return asdict(self)


class _Machine:
    """m-of-n confirmation over one or more channels (short / long window, or one DQ test)."""

    def __init__(self, channels: Sequence[str], m: int, n: int) -> None:
        self.m, self.n = m, n
        self.hist: dict[str, list[bool]] = {c: [] for c in channels}
        self.clean: dict[str, int] = dict.fromkeys(channels, n)
        self.drifting = False

    def step(self, channel: str, hit: bool, clean: bool | None = None) -> str | None:
        """One check's outcome; ``clean`` (default: not ``hit``) counts towards resolving."""
        hist = self.hist[channel]
        hist.append(hit)
        if len(hist) > self.n:
            del hist[0]
        if clean is None:
            clean = not hit
        self.clean[channel] = self.clean[channel] + 1 if clean else 0
        if not self.drifting:
            if sum(hist) >= self.m:
                self.drifting = True
                return "drift_started"
            return None
        if all(v >= self.n for v in self.clean.values()):
            self.drifting = False
            # Exceedances of one episode must not count towards the next:
            # that is what bounds starts by exceedances / m in the calibration.
            for h in self.hist.values():
                h.clear()
            return "drift_resolved"
        return None

    def state(self) -> dict[str, Any]:
        return {
            "hist": {k: list(v) for k, v in self.hist.items()},
            "clean": dict(self.clean),
            "drifting": self.drifting,
        }

    def load(self, d: Mapping[str, Any]) -> None:
        self.hist = {str(k): [bool(x) for x in v] for k, v in d["hist"].items()}
        self.clean = {str(k): int(v) for k, v in d["clean"].items()}
        self.drifting = bool(d["drifting"])


def _lag1_autocorrelation(x: FloatArray, scratch: bool = False, n_nan: int = -1) -> float:
    """Lag-1 autocorrelation of a time-ordered series (NaN = missing), clipped to [0, 0.999].

    ``scratch``: ``x`` may be overwritten; ``n_nan``: its NaN count when known.
    Both only save passes: the result is the same to the last bit.
    """
    if n_nan == 0 and scratch and x.shape[0] >= 3:
        # No NaN: x - mean in place, no mask (the same sums as below).
        n = x.shape[0]
        # np.add.reduce / n is what x.mean() computes, without its wrapper.
        x -= float(np.add.reduce(x)) / n
        var = float(np.dot(x, x)) / n
        if var <= 0.0:
            return 0.0
        cov = float(np.dot(x[1:], x[:-1])) / (n - 1)
        return float(min(max(cov / var, 0.0), 0.999))
    ok = ~np.isnan(x)
    n = int(np.count_nonzero(ok))
    if n < 3:
        return 0.0
    z = np.where(ok, x - float(x[ok].mean()), 0.0)
    var = float(np.dot(z, z)) / n
    pairs = n - 1 if n == x.shape[0] else int(np.count_nonzero(ok[1:] & ok[:-1]))
    if var <= 0.0 or pairs < 2:
        return 0.0
    # Missing values are zeros in z: the pair sum covers the valid pairs only.
    cov = float(np.dot(z[1:], z[:-1])) / pairs
    return min(max(cov / var, 0.0), 0.999)


def effective_size(n: float, rho: float) -> float:
    """AR(1) effective sample size ``n (1 - rho) / (1 + rho)`` (at least 1 when ``n > 0``)."""
    if n <= 0:
        return 0.0
    return max(1.0, n * (1.0 - rho) / (1.0 + rho))


class _Feature:
    """Per-feature reference, work buffers, thresholds, machines and last results."""

    def __init__(
        self,
        name: str,
        kind: FeatureKind,
        reference: Any,
        max_window: int,
        nan_rate: float | None,
        discrete_max_values: int,
        atom_min_share: float = 0.0,
    ) -> None:
        self.name, self.kind = name, kind
        self.ref_nan_rate = 0.0
        self.ks: KSChecker | None = None
        self.cat: CategoricalReference | None = None
        #: Distinct reference values of a few-valued numeric feature (tested with chi-squared).
        self.support: FloatArray | None = None
        #: A value holding a large share of the reference (``atom_min_share``):
        #: its share is tested with chi-squared and the other values with KS.
        self.atom = math.nan
        self.atom_share = 0.0
        self.atom_counts: FloatArray | None = None
        #: The atom's positions ``[lo, hi)`` in the sorted reference.
        self.atom_block = (0, 0)
        self.ks_rest: KSChecker | None = None
        #: KS features: each record's rank key ``#ref <= v + #ref < v``, computed
        #: once when it arrives (see :meth:`DriftDetector._keys_of`); NaN is
        #: ``key_nan`` (above every key, so it sorts last). ``right_of`` /
        #: ``left_of`` give a key's two ranks back (``rank_nan`` for NaN).
        self.rank_nan = 0
        self.key_nan = 0
        self.rank_zero: np.unsignedinteger[Any] = np.uint16(0)
        self.rank_ref_n: np.unsignedinteger[Any] = np.uint16(0)
        self.key_ring: npt.NDArray[np.unsignedinteger[Any]] | None = None
        self.key_buf: npt.NDArray[np.unsignedinteger[Any]] | None = None
        self.right_of: npt.NDArray[np.unsignedinteger[Any]] | None = None
        self.left_of: npt.NDArray[np.unsignedinteger[Any]] | None = None
        if kind == "numeric":
            if isinstance(reference, KSReference):
                ks_ref = reference
            else:
                raw = np.asarray(reference, dtype=np.float64).ravel()
                if raw.shape[0]:
                    self.ref_nan_rate = float(np.isnan(raw).mean())
                ks_ref = KSReference(raw)
            self.n_ref = ks_ref.n
            self.ref_min, self.ref_max = ks_ref.min, ks_ref.max
            values = ks_ref.values
            self.q_lo = float(values[int(0.01 * (values.shape[0] - 1))])
            self.q_hi = float(values[int(0.99 * (values.shape[0] - 1))])
            distinct = int(np.count_nonzero(np.diff(values))) + 1
            if 1 < distinct <= discrete_max_values:
                support, counts = np.unique(values, return_counts=True)
                self.support = support
                self.cat = CategoricalReference(
                    {i: float(c) for i, c in enumerate(counts.tolist())}
                )
            else:
                self.ks = KSChecker(ks_ref, max_window)
                if atom_min_share > 0:
                    self._find_atom(values, max_window, atom_min_share)
        elif kind == "categorical":
            if isinstance(reference, CategoricalReference):
                self.cat = reference
            elif isinstance(reference, Mapping):
                self.cat = CategoricalReference(reference)
            else:
                raw = np.asarray(reference, dtype=np.float64).ravel()
                if raw.shape[0]:
                    self.ref_nan_rate = float(np.isnan(raw).mean())
                self.cat = CategoricalReference.from_values(raw)
            self.n_ref = self.cat.n
            self.ref_min = self.ref_max = math.nan
        else:
            raise ValueError(f"feature {name!r}: unknown kind {kind!r}")
        if nan_rate is not None:
            if not 0.0 <= nan_rate <= 1.0:
                raise ValueError(f"feature {name!r}: reference NaN rate {nan_rate} not in [0, 1]")
            self.ref_nan_rate = float(nan_rate)
        self.test = "ks" if self.ks is not None else "chi2"
        #: KS on the whole feature (no atom split): evaluated in the detector's block.
        self.plain_ks = self.ks is not None and self.ks_rest is None
        #: Keys of values equal to a reference value held more than once, and
        #: their ranks: the only keys whose ranks are not ``((k + 1) // 2, k // 2)``.
        self.tie_keys = np.empty(0, dtype=np.intp)
        self.tie_right = np.empty(0, dtype=np.intp)
        self.tie_left = np.empty(0, dtype=np.intp)
        #: Per ``r``: where the block of ``ref[r - 1]``'s value starts (its values' ``l``).
        self.block_start: npt.NDArray[np.intp] | None = None
        #: Set by :meth:`keys`: the last value equal to a repeated reference value (-1: none).
        self.last_tie_hit = -1
        #: Reference size of the KS that is tested (the rest's, for a feature with an atom).
        self.ks_n_ref = self.ks_rest.ref.n if self.ks_rest is not None else self.n_ref
        #: Per-check alpha of the atom's share test, per window.
        self.atom_alpha: dict[str, float] = {}
        self.thr_short = math.nan
        self.thr_long = math.nan
        self.last: dict[str, float] = {}
        self.last_long: dict[str, float] = {}
        #: drift_worsened: effect sizes of the last checks and the one last reported, per window.
        self.effects: dict[str, list[float]] = {}
        self.reported: dict[str, float] = {}
        self.settle: dict[str, int] = {}

    def _find_atom(self, values: FloatArray, max_window: int, min_share: float) -> None:
        """A value holding ``min_share`` of the reference: test it apart from the rest."""
        n = values.shape[0]
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(values)) + 1, [n]))
        lengths = np.diff(bounds)
        j = int(np.argmax(lengths))
        k = int(lengths[j])
        if k < min_share * n or n - k < ATOM_MIN_REST:
            return
        lo, hi = int(bounds[j]), int(bounds[j + 1])
        rest = np.concatenate((values[:lo], values[hi:]))
        self.atom = float(values[lo])
        self.atom_block = (lo, hi)
        self.atom_share = k / n
        self.atom_counts = np.array([float(k), float(n - k)])
        self.ks_rest = KSChecker(KSReference(rest, assume_sorted=True), max_window)

    def init_ranks(
        self, ring_len: int, key_ring: npt.NDArray[np.unsignedinteger[Any]] | None = None
    ) -> None:
        """Rank-key tables of a KS feature and its key ring (all NaN; ``key_ring`` if given).

        A value's key ``r + l`` (``r = #ref <= v``, ``l = #ref < v``) is monotone
        in ``v`` and determines ``(r, l)``: strictly between reference values
        ``r = l = j`` (key ``2j``); equal to the block ``ref[lo:hi]`` of one
        value, ``(hi, lo)`` (key ``lo + hi``, odd or strictly inside the block,
        so never the key of a value between).
        """
        assert self.ks is not None
        values = self.ks.ref.values
        m = values.shape[0]
        self.rank_nan = m + 1
        # uint16 while it fits: numpy sorts 16-bit integers with a radix sort.
        rdt = np.uint16 if self.rank_nan <= np.iinfo(np.uint16).max else np.uint32
        self.key_nan = 2 * m + 2
        kdt = np.uint16 if self.key_nan <= np.iinfo(np.uint16).max else np.uint32
        j = np.arange(m + 1)
        right = np.full(self.key_nan + 1, self.rank_nan, dtype=rdt)
        left = right.copy()
        right[2 * j] = j
        left[2 * j] = j
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(values)) + 1, [m]))
        lo, hi = bounds[:-1], bounds[1:]
        right[lo + hi] = hi
        left[lo + hi] = lo
        multi = hi - lo > 1
        self.tie_keys, self.tie_right, self.tie_left = lo[multi] + hi[multi], hi[multi], lo[multi]
        start = np.zeros(m + 1, dtype=np.intp)
        start[hi] = lo  # r = hi for a value equal to ref[lo:hi]
        self.block_start = start
        right.setflags(write=False)
        left.setflags(write=False)
        self.right_of, self.left_of = right, left
        if key_ring is None:
            key_ring = np.full(ring_len, self.key_nan, dtype=kdt)
        assert key_ring.dtype == kdt and key_ring.shape == (ring_len,)
        self.key_ring = key_ring
        # Search keys of the rank type: a Python int would cast the window.
        self.rank_zero = rdt(0)
        self.rank_ref_n = rdt(m)
        self.key_buf = np.empty(ring_len, dtype=kdt)

    def keys(self, values: FloatArray) -> npt.NDArray[np.intp]:
        """Rank keys of ``values`` (NaN: ``key_nan``)."""
        assert self.ks is not None and self.block_start is not None
        # r + l: between reference values l = r; equal to one, l is where its block
        # starts (r - 1 without ties). ref[-1] for r = 0 is never equal to v.
        ref = self.ks.ref.values
        right = ref.searchsorted(values, side="right")
        equal = ref[right - 1] == values
        self.last_tie_hit = -1
        if self.ks.ties:
            at = np.flatnonzero(equal)
            r = right[at]
            right += right
            start = self.block_start[r]
            right[at] = r + start
            hits = at[start < r - 1]
            if hits.shape[0]:
                self.last_tie_hit = int(hits[-1])
        else:
            right += right
            right -= equal
        # NaN sorts last in searchsorted: keys at 2 m (an equal NaN test is never true).
        if right.shape[0] and math.isnan(_MAX(values)):
            right[np.isnan(values)] = self.key_nan
        return right

    def nominal_rest(self, size: int) -> int:
        """Values of a window of ``size`` expected outside the atom (the KS part's size)."""
        return max(1, round(size * (1.0 - self.atom_share)))

    def codes(self, window: FloatArray) -> FloatArray:
        """Values of a few-valued numeric feature as bucket codes (-1: not a reference value)."""
        assert self.support is not None
        k = self.support.shape[0]
        pos = np.minimum(np.searchsorted(self.support, window), k - 1)
        out = np.where(self.support[pos] == window, pos, -1).astype(np.float64)
        out[np.isnan(window)] = np.nan
        return out


class DriftDetector:
    """Streaming drift detector over several features; see the module docstring.

    Args:
        features: ``(name, kind, reference)`` per column; ``kind`` is
            ``'numeric'`` (reference: values or a :class:`KSReference`) or
            ``'categorical'`` (reference: codes, a count mapping or a
            :class:`CategoricalReference`).
        settings: how to test (default: the shipped configuration's; build
            one from a config with :meth:`DriftSettings.from_config`).
        reference_hash: copied into every event.
        cache_dir: where calibrated thresholds are cached (none: recomputed).
        clock: returns epoch seconds for event times.
        nan_rates: reference NaN rate per feature name, for references given
            without their NaNs (a sorted sample); otherwise taken from the values.
    """

    def __init__(
        self,
        features: Sequence[tuple[str, FeatureKind, Any]],
        settings: DriftSettings = _SHIPPED,
        *,
        reference_hash: str = "",
        cache_dir: str | None = None,
        clock: Callable[[], float] = time.time,
        nan_rates: Mapping[str, float] | None = None,
    ) -> None:
        if not features:
            raise ValueError("at least one feature is required")
        self.settings = settings
        s = settings
        self.reference_hash = reference_hash
        self.cache_dir = cache_dir
        self._clock = clock
        self._check_frequency = s.check_frequency
        self.long_check_frequency = s.long_cadence
        self._ring_len = max(s.window_size, s.long_window_size)
        rates = nan_rates or {}
        self._features = [
            _Feature(
                name,
                kind,
                ref,
                self._ring_len,
                rates.get(name),
                s.discrete_max_values,
                s.atom_min_share,
            )
            for name, kind, ref in features
        ]
        self._ring = np.full((len(self._features), self._ring_len), np.nan)
        #: Columns tested with KS: their records' rank keys are kept in a ring too.
        self._ks_cols = [i for i, f in enumerate(self._features) if f.ks is not None]
        #: Plain KS columns (no atom, no ties in the reference, uint16 keys):
        #: checked together, one 2-D operation for all of them
        #: (:meth:`_evaluate_block`); their key rings are the rows of one array.
        self._block_cols = [
            i
            for i in self._ks_cols
            if self._features[i].plain_ks
            and 2 * self._features[i].n_ref + 2 <= np.iinfo(np.uint16).max
        ]
        nb = len(self._block_cols)
        self._block_keys = np.empty((nb, self._ring_len), dtype=np.uint16)
        for b, i in enumerate(self._block_cols):
            f = self._features[i]
            self._block_keys[b] = 2 * f.n_ref + 2
            f.init_ranks(self._ring_len, self._block_keys[b])
        for i in self._ks_cols:
            if i not in self._block_cols:
                self._features[i].init_ranks(self._ring_len)
        self._block_init()
        self._rho_buf = np.empty(self._ring_len)
        self._pos = 0
        self._count = 0
        self._eff_c = self._check_frequency
        self._next_check = self._check_frequency
        self._next_long = self._ring_len
        self._last_seq = -1
        #: Checks run by this object (not checkpointed): lets a caller measure their cost.
        self.checks_run = 0
        self._machines: list[dict[str, _Machine]] = []
        for _ in self._features:
            channels = ["short", "long"] if s.long_window_size else ["short"]
            self._machines.append(
                {
                    "stat": _Machine(channels, s.confirm_m, s.confirm_n),
                    "nan_rate": _Machine(["short"], s.confirm_m, s.confirm_n),
                    "out_of_range": _Machine(["short"], s.confirm_m, s.confirm_n),
                    "unknown_category": _Machine(["short"], s.confirm_m, s.confirm_n),
                }
            )
        # Built on first use: only summaries report distances.
        self._dist_refs: dict[int, tuple[WassersteinReference, NumericPSI]] = {}
        self._calibrate()

    # ------------------------------------------------------------------ setup

    def _block_init(self) -> None:
        """Per-column constants and scratch of :meth:`_evaluate_block`."""
        cols = self._block_cols
        nb = len(cols)
        feats = [self._features[i] for i in cols]
        #: Reference sizes: the divisor of statistic_from_ranks, as the float it casts to.
        self._block_m = np.array([float(f.n_ref) for f in feats]).reshape(nb, 1)
        #: Rows whose reference holds ties: (row, (keys, r, l)) in the keys' dtype.
        self._block_ties = [
            (b, (f.tie_keys.astype(np.uint16), f.tie_right, f.tie_left))
            for b, f in enumerate(feats)
            if f.tie_keys.shape[0]
        ]
        #: Per block row: the record count of the last value equal to a repeated
        #: reference value (:meth:`_keys_of`), so that a check looks for their
        #: keys only when one is in the window.
        self._tie_last = [-(2**62)] * nb
        self._block_nan = np.array([f.key_nan for f in feats], dtype=np.uint16)
        #: Key ``2 m``: the value is above the reference's max (``#ref < v = m``).
        self._block_top = np.array([2 * f.n_ref for f in feats], dtype=np.uint16).reshape(nb, 1)
        self._block_qlo = np.array([f.q_lo for f in feats]).reshape(nb, 1)
        self._block_qhi = np.array([f.q_hi for f in feats]).reshape(nb, 1)
        self._block_rows = np.array(cols, dtype=np.intp)
        #: Per window size: contiguous scratch (keys, ranks, floats) and the
        #: rank fractions; strided views of larger buffers cost twice as much.
        self._block_work: dict[int, tuple[Any, ...]] = {}

    @property
    def effective_correction(self) -> Correction:
        """The correction that acts: in calibrated mode ``bh`` acts as ``bonferroni``."""
        if self.settings.mode == "calibrated" and self.settings.correction == "bh":
            return "bonferroni"
        return self.settings.correction

    def _calibrate(self) -> None:
        # Calibrated mode: the budget is split over the k features unless the
        # correction is 'none' (then erfa holds per feature).
        k = len(self._features) if self.effective_correction != "none" else 1
        if self.settings.mode == "calibrated":
            share = 0.5 if self.settings.long_window_size else 1.0
            self.alpha_short = per_check_alpha(
                self.settings.erfa, self._check_frequency, k, self.settings.confirm_m, share
            )
            self.alpha_long = per_check_alpha(
                self.settings.erfa, self.long_check_frequency, k, self.settings.confirm_m, share
            )
        else:
            self.alpha_short = self.alpha_long = self.settings.threshold
        s = self.settings
        for f in self._features:
            if f.ks is None:
                f.thr_short, f.thr_long = self.alpha_short, self.alpha_long
                continue
            # A feature with an atom runs two tests per check (Bonferroni: half each).
            split = 2.0 if f.ks_rest is not None else 1.0
            f.atom_alpha = {"short": self.alpha_short / split, "long": self.alpha_long / split}
            f.thr_short = ks_threshold(
                self._ks_size(f, s.window_size),
                f.ks_n_ref,
                self.alpha_short / split,
                self.cache_dir,
            )
            if s.long_window_size and s.mode == "calibrated":
                f.thr_long = ks_threshold(
                    self._ks_size(f, s.long_window_size),
                    f.ks_n_ref,
                    self.alpha_long / split,
                    self.cache_dir,
                )

    @staticmethod
    def _ks_size(f: _Feature, size: int) -> int:
        """Values the KS of a window of ``size`` is calibrated for (the rest's, with an atom)."""
        return f.nominal_rest(size) if f.ks_rest is not None else size

    @property
    def feature_names(self) -> list[str]:
        """Monitored feature names, in column order."""
        return [f.name for f in self._features]

    @property
    def check_frequency(self) -> int:
        """Configured records between short-window checks."""
        return self._check_frequency

    @check_frequency.setter
    def check_frequency(self, value: int) -> None:
        if value <= 0:
            raise ValueError(f"check_frequency must be > 0, got {value}")
        lowered = value < self._check_frequency
        self._check_frequency = int(value)
        self._eff_c = int(value)
        self._next_check = self._count + self._eff_c
        # A shorter cadence means more checks: recalibrate to keep the ERFA promise.
        if lowered and self.settings.mode == "calibrated":
            self._calibrate()

    @property
    def effective_check_frequency(self) -> int:
        """Records between short-window checks now (stretched when falling behind)."""
        return self._eff_c

    @property
    def records_seen(self) -> int:
        """Records consumed since construction (or since the restored checkpoint's start)."""
        return self._count

    # ------------------------------------------------------------------ streaming

    def update(
        self,
        values: npt.ArrayLike,
        seq_first: int,
        budget: float | None = None,
        tick: Callable[[], None] | None = None,
    ) -> list[DriftEvent]:
        """Consume records ``seq_first ..`` (rows; columns = features) and run due checks.

        Args:
            values: shape ``(n_records, n_features)``; categorical columns hold
                float codes (-1 = OTHER), NaN = missing.
            seq_first: sequence number of the first row.
            budget: seconds the checks of this call may take before the
                cadence is stretched.
            tick: called after each feature of a check: a check of many
                features on a slow box can take seconds, and the caller must
                keep heartbeating meanwhile.
        """
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1) if len(self._features) == 1 else arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != len(self._features):
            raise ValueError(f"expected shape (n, {len(self._features)}), got {arr.shape}")
        events: list[DriftEvent] = []
        spent = 0.0
        i, n = 0, arr.shape[0]
        # One rank look-up per feature for the whole block, not per check.
        keys = self._keys_of(arr)
        while i < n:
            take = min(n - i, self._next_check - self._count)
            self._write(arr[i : i + take], keys[:, i : i + take])
            i += take
            self._count += take
            self._last_seq = seq_first + i - 1
            if self._count >= self._next_check:
                self._next_check = self._count + self._eff_c
                if self._count >= self.settings.window_size:
                    t0 = time.perf_counter()
                    events.extend(self._check(tick))
                    spent += time.perf_counter() - t0
        if budget is not None:
            if spent > budget and self._eff_c < self._check_frequency * _MAX_STRETCH:
                self._eff_c *= 2
                logger.info("drift checks behind budget; cadence now %d records", self._eff_c)
            elif spent < budget / 4 and self._eff_c > self._check_frequency:
                self._eff_c = max(self._eff_c // 2, self._check_frequency)
        return events

    def _keys_of(self, rows: FloatArray) -> npt.NDArray[np.intp]:
        """Rank keys of ``rows`` (records x features), one row per KS column (``_ks_cols``)."""
        keys = np.empty((len(self._ks_cols), rows.shape[0]), dtype=np.intp)
        # Columns made contiguous first: searchsorted on a strided column is 4x slower.
        cols = np.ascontiguousarray(rows.T)
        for k, i in enumerate(self._ks_cols):
            keys[k] = self._features[i].keys(cols[i])
        # The rows go in from the next record on: count of row j is _count + j + 1.
        for b, i in enumerate(self._block_cols):
            hit = self._features[i].last_tie_hit
            if hit >= 0:
                self._tie_last[b] = self._count + hit + 1
        return keys

    def _write(self, rows: FloatArray, keys: npt.NDArray[np.intp]) -> None:
        r = rows.shape[0]
        if r == 0:
            return
        if r >= self._ring_len:
            rows = rows[-self._ring_len :]
            keys = keys[:, -self._ring_len :]
            r = self._ring_len
            self._pos = 0
        pos = self._pos
        first = min(r, self._ring_len - pos)
        self._ring[:, pos : pos + first] = rows[:first].T
        if first < r:
            self._ring[:, : r - first] = rows[first:].T
        for k, i in enumerate(self._ks_cols):
            ring = self._features[i].key_ring
            assert ring is not None
            ring[pos : pos + first] = keys[k, :first]
            if first < r:
                ring[: r - first] = keys[k, first:]
        self._pos = (pos + r) % self._ring_len

    def _rank(self, start: int, stop: int) -> None:
        """Rank keys of the ring's records ``start:stop`` for every KS feature (from the values)."""
        keys = self._keys_of(self._ring[:, start:stop].T)
        for k, i in enumerate(self._ks_cols):
            ring = self._features[i].key_ring
            assert ring is not None
            ring[start:stop] = keys[k]

    def _parts(self, f: int, size: int) -> tuple[FloatArray, FloatArray]:
        start = self._pos - size
        row = self._ring[f]
        if start >= 0:
            return row[start : self._pos], row[:0]
        return row[start:], row[: self._pos]

    def _distances(self, i: int, f: _Feature) -> dict[str, float]:
        """Wasserstein-1 and PSI of the current short window: reported, never alarmed on."""
        size = min(self._count, self.settings.window_size)
        a, b = self._parts(i, size)
        w = np.concatenate((a, b))
        w = w[~np.isnan(w)]
        if size == 0 or not len(w):
            return {"wasserstein": math.nan, "psi": math.nan}
        if f.ks is None:
            assert f.cat is not None
            codes = f.codes(w) if f.support is not None else w
            return {"wasserstein": math.nan, "psi": f.cat.psi(codes)}
        refs = self._dist_refs.get(i)
        if refs is None:
            values = f.ks.ref.values
            refs = self._dist_refs[i] = (WassersteinReference(values), NumericPSI(values))
        return {"wasserstein": wasserstein_1(w, refs[0]), "psi": refs[1](w)}

    def _pvalue(self, d: float, n_eff: float, m: int) -> float:
        """KS p-value at a bounded cost (see :func:`ks_pvalue_bounded`)."""
        return ks_pvalue_bounded(d, n_eff, m)[0]

    def _scaled(self, thr: float, size: int, n_eff: float, n_ref: int) -> float:
        if n_eff >= size:
            return thr
        if n_eff <= 0:
            return math.inf  # nothing to test (a window all atom, say)
        # Asymptotic scaling of the critical D with the effective sample size
        # (fewer valid values, or dependent ones).
        en_full = size * n_ref / (size + n_ref)
        en_eff = n_eff * n_ref / (n_eff + n_ref)
        return thr * math.sqrt(en_full / en_eff)

    def _evaluate_block(self, size: int) -> dict[int, dict[str, float]]:
        """:meth:`_evaluate` of every plain KS column whose window holds no NaN, at once.

        One sort, one gather, one reduction ... for all of them (2-D arrays, a
        row per column) instead of a dozen numpy calls per column; the same
        operations on the same numbers, so the results are the same to the last
        bit. Columns with a NaN in the window are left to :meth:`_evaluate`.
        """
        cols = self._block_cols
        if not cols or size < 3:
            return {}
        work = self._block_work.get(size)
        if work is None:
            nb = len(cols)
            idx = np.arange(size, dtype=np.float64)
            work = self._block_work[size] = (
                np.empty((nb, size), dtype=np.uint16),
                np.empty((nb, size), dtype=np.uint16),
                np.empty((nb, size), dtype=np.uint16),
                np.empty((nb, size)),
                (idx + 1.0) / size,  # as KSChecker._rank_fractions computes them
                idx / size,
            )
        buf, rank, lrank, sc, hi, lo = work
        pos = self._pos
        start = pos - size
        keys = self._block_keys
        if start >= 0:
            buf[...] = keys[:, start:pos]
        else:
            buf[:, :-start] = keys[:, start:]
            buf[:, -start:] = keys[:, :pos]
        buf.sort(axis=1, kind="stable")
        clean = (buf[:, -1] != self._block_nan).tolist()
        if not any(clean):
            return {}
        # statistic_from_ranks on every row: F_w - F_r at each window value, and
        # back. A key is 2 l + (r - l) with r - l in {0, 1} except for values equal
        # to a reference value held more than once: ranks by arithmetic, those few
        # runs of the sorted rows fixed after, no table look-up per value (a
        # gather from a table out of cache costs a memory access per value).
        np.add(buf, 1, out=rank)
        np.right_shift(rank, 1, out=rank)
        np.right_shift(buf, 1, out=lrank)
        for b, ties in self._block_ties:
            if self._tie_last[b] <= self._count - size:
                continue  # no value of the window is equal to a repeated reference value
            row = buf[b]
            first = row.searchsorted(ties[0], side="left")
            last = row.searchsorted(ties[0], side="right")
            for t in np.flatnonzero(last > first).tolist():
                rank[b, first[t] : last[t]] = ties[1][t]
                lrank[b, first[t] : last[t]] = ties[2][t]
        np.divide(rank, self._block_m, out=sc)
        np.subtract(hi, sc, out=sc)
        d_plus = _MAX(sc, axis=1).tolist()
        np.divide(lrank, self._block_m, out=sc)
        np.subtract(sc, lo, out=sc)
        d_minus = _MAX(sc, axis=1).tolist()
        # Below the reference's min the key is 0, above its max 2 m: in sorted
        # rows they are at either end, so most checks need only the end columns.
        outside = [0] * len(cols)
        low = (buf[:, 0] == 0).tolist()
        high = (buf[:, -1] >= self._block_top[:, 0]).tolist()
        for b in range(len(cols)):
            if low[b] or high[b]:
                row = buf[b]
                outside[b] = int(row.searchsorted(row.dtype.type(0), side="right")) + (
                    size - int(row.searchsorted(self._block_top[b, 0], side="left"))
                )
        rhos = [0.0] * len(cols)
        if self.settings.autocorrelation:
            ring = self._ring
            if start >= 0:
                w = ring[self._block_rows, start:pos]
            else:
                w = np.concatenate(
                    (ring[self._block_rows, start:], ring[self._block_rows, :pos]), axis=1
                )
            # _lag1_autocorrelation's no-NaN path, row by row in one call each.
            np.minimum(np.maximum(w, self._block_qlo, out=w), self._block_qhi, out=w)
            w -= (np.add.reduce(w, axis=1) / size).reshape(-1, 1)
            var = np.matmul(w[:, None, :], w[:, :, None]).ravel().tolist()
            cov = np.matmul(w[:, None, 1:], w[:, :-1, None]).ravel().tolist()
            for b in range(len(cols)):
                v = var[b] / size
                rhos[b] = 0.0 if v <= 0.0 else float(min(max(cov[b] / (size - 1) / v, 0.0), 0.999))
        out: dict[int, dict[str, float]] = {}
        n = float(size)
        for b, i in enumerate(cols):
            if not clean[b]:
                continue
            stat = max(d_plus[b], d_minus[b], 0.0)
            rho = rhos[b]
            out[i] = {
                "window": n,
                "nan_rate": 0 / size,
                "n": n,
                "unknown_rate": math.nan,
                "out_of_range_rate": outside[b] / size,
                "statistic": stat,
                "autocorrelation": rho,
                "n_eff": effective_size(size, rho),
                "effect": stat,
            }
        return out

    def _evaluate(self, fi: int, size: int) -> dict[str, float]:
        """Run the test of one feature on one window; return its results."""
        f = self._features[fi]
        a, b = self._parts(fi, size)
        res: dict[str, float] = {"window": float(size)}
        if f.ks is not None:
            assert f.key_ring is not None and f.key_buf is not None
            assert f.right_of is not None and f.left_of is not None
            # The window's rank keys, sorted: no values sorted, no searchsorted per check.
            start = self._pos - size
            buf = f.key_buf[:size]
            if start >= 0:
                buf[...] = f.key_ring[start : self._pos]
            else:
                buf[:-start] = f.key_ring[start:]
                buf[-start:] = f.key_ring[: self._pos]
            buf.sort(kind="stable")
            n_valid = (
                size if buf[-1] != f.key_nan else int(buf.searchsorted(buf.dtype.type(f.key_nan)))
            )
            # Sorted keys give both rank rows sorted (each rank is monotone in the key).
            right, left = f.right_of[buf], f.left_of[buf]
            n_nan = size - n_valid
            res["nan_rate"] = n_nan / size
            res["n"] = float(n_valid)
            res["unknown_rate"] = math.nan
            if n_valid == 0:
                res["statistic"] = math.nan
                res["out_of_range_rate"] = math.nan
                res["n_eff"] = 0.0
                res["autocorrelation"] = math.nan
                return res
            right, left = right[:n_valid], left[:n_valid]
            # Below the reference's min: no reference value <= v; above its max: all < v.
            lo = int(right.searchsorted(f.rank_zero, side="right"))
            hi = int(left.searchsorted(f.rank_ref_n, side="left"))
            res["out_of_range_rate"] = (lo + n_valid - hi) / n_valid
            res["statistic"] = f.ks.statistic_ranks(right, left)
            rho = 0.0
            if self.settings.autocorrelation:
                # Values winsorized to the reference's 1st..99th percentiles, so
                # that a few spikes cannot hide the dependence of the rest.
                w = self._rho_buf[:size]
                w[: a.shape[0]] = a
                w[a.shape[0] :] = b
                # np.clip(w, q_lo, q_hi) without its wrapper (NaN stays NaN either way).
                np.minimum(np.maximum(w, f.q_lo, out=w), f.q_hi, out=w)
                rho = _lag1_autocorrelation(w, scratch=True, n_nan=n_nan)
            res["autocorrelation"] = rho
            res["n_eff"] = effective_size(n_valid, rho)
            res["effect"] = res["statistic"]
            if f.ks_rest is not None:
                self._atom_parts(f, right, left, rho, size, res)
        else:
            assert f.cat is not None
            window = np.concatenate([a, b])
            n_nan = int(np.count_nonzero(np.isnan(window)))
            res["nan_rate"] = n_nan / size
            if f.support is not None:
                valid = window[~np.isnan(window)]
                n_valid = valid.shape[0]
                res["out_of_range_rate"] = (
                    float(np.count_nonzero((valid < f.ref_min) | (valid > f.ref_max))) / n_valid
                    if n_valid
                    else math.nan
                )
                window = f.codes(window)
            else:
                res["out_of_range_rate"] = math.nan
            rho = category_autocorrelation(window) if self.settings.autocorrelation else 0.0
            inflation = (1.0 + rho) / (1.0 - rho)
            counts = f.cat.bucket_counts(window)
            n_counted = float(counts.sum())
            res["unknown_rate"] = (
                float(counts[-1]) / n_counted if n_counted and f.support is None else math.nan
            )
            chi = self._chi2(f.cat, counts, inflation)
            res["statistic"] = chi.statistic
            res["p_value"] = chi.pvalue
            res["n"] = float(chi.n)
            res["autocorrelation"] = rho
            res["n_eff"] = effective_size(float(chi.n), rho)
            res["effect"] = (
                math.sqrt(chi.statistic * inflation / chi.n)
                if chi.n and not math.isnan(chi.statistic)
                else math.nan
            )
        return res

    def _atom_parts(
        self,
        f: _Feature,
        right: npt.NDArray[np.unsignedinteger[Any]],
        left: npt.NDArray[np.unsignedinteger[Any]],
        rho: float,
        size: int,
        res: dict[str, float],
    ) -> None:
        """A feature with an atom: its share (chi-squared) and KS on the other values.

        ``right``/``left`` are the window's sorted full-reference ranks.
        ``statistic``, ``n`` and ``n_eff`` become the KS part's; the whole
        window's D stays the effect size (``full_statistic``).
        """
        assert f.ks_rest is not None and f.atom_counts is not None
        n_valid = right.shape[0]
        a_lo, a_hi = f.atom_block
        # Values below the atom rank <= a_lo (right side), the atom itself a_hi;
        # values up to the atom rank <= a_lo (left side), those above >= a_hi.
        lo = int(right.searchsorted(right.dtype.type(a_hi), side="left"))
        hi = int(left.searchsorted(left.dtype.type(a_lo), side="right"))
        n_rest = n_valid - (hi - lo)
        inflation = (1.0 + rho) / (1.0 - rho)
        chi = self._chi2_pair(np.array([float(hi - lo), float(n_rest)]), f.atom_counts, inflation)
        res["atom_share"] = (hi - lo) / n_valid
        res["atom_p"] = chi.pvalue
        res["full_statistic"] = res["statistic"]
        res["ks_size"] = float(f.nominal_rest(size))
        res["n"] = float(n_rest)
        res["n_eff"] = effective_size(n_rest, rho)
        if n_rest == 0:
            res["statistic"] = 0.0
            return
        # Ranks in the reference without its atom: unchanged below it, k less above.
        k = a_hi - a_lo
        rest_r = np.concatenate((right[:lo], right[hi:] - k))
        rest_l = np.concatenate((left[:lo], left[hi:] - k))
        res["statistic"] = f.ks_rest.statistic_ranks(rest_r, rest_l)

    def _chi2_pair(self, counts: FloatArray, ref: FloatArray, inflation: float) -> Chi2Result:
        from edge_actors.drift.categorical import chi2_two_sample

        return chi2_two_sample(counts, ref, self.settings.min_expected_count, inflation)

    def _chi2(self, cat: CategoricalReference, counts: FloatArray, inflation: float) -> Chi2Result:
        from edge_actors.drift.categorical import chi2_two_sample

        return chi2_two_sample(counts, cat.counts, self.settings.min_expected_count, inflation)

    def _event(
        self, f: _Feature, test: str, res: Mapping[str, float], threshold: float, state: str
    ) -> DriftEvent:
        size = int(res["window"])
        p = res.get("p_value", math.nan)
        if test == "ks" and math.isnan(p) and not math.isnan(res["statistic"]):
            p = self._pvalue(res["statistic"], res.get("n_eff", res["n"]), f.ks_n_ref)
        if test in QUALITY_TESTS:
            stat = res[
                {"nan_rate": "nan_rate", "out_of_range": "out_of_range_rate"}.get(
                    test, "unknown_rate"
                )
            ]
            p = math.nan
        else:
            stat = res["statistic"]
        return DriftEvent(
            t=self._clock(),
            feature=f.name,
            test=test,
            statistic=float(stat),
            p_value=float(p),
            threshold=float(threshold),
            correction=self.effective_correction,
            window_size=size,
            n_ref=f.n_ref,
            state=state,
            seq_first=self._last_seq - size + 1,
            seq_last=self._last_seq,
            reference_hash=self.reference_hash,
            n_eff=float(res.get("n_eff", math.nan)),
        )

    def _check(self, tick: Callable[[], None] | None = None) -> list[DriftEvent]:
        self.checks_run += 1
        events: list[DriftEvent] = []
        do_long = (
            self.settings.mode == "calibrated"
            and self.settings.long_window_size > 0
            and self._count >= self._next_long
        )
        if do_long:
            self._next_long = self._count + self.long_check_frequency
        size = self.settings.window_size
        block = self._evaluate_block(size)
        if block and tick is not None:
            tick()
        short = []
        for i in range(len(self._features)):
            res = block.get(i)
            if res is None:
                res = self._evaluate(i, size)
                if tick is not None:
                    tick()
            short.append(res)
        long_block = self._evaluate_block(self.settings.long_window_size) if do_long else {}
        if long_block and tick is not None:
            tick()
        for f, res in zip(self._features, short, strict=True):
            f.last = res
        if self.settings.mode == "per_check":
            events.extend(self._per_check(short))
        else:
            for i, (f, res) in enumerate(zip(self._features, short, strict=True)):
                events.extend(self._calibrated_step(i, f, res, "short", f.thr_short))
                if do_long:
                    lres = long_block.get(i)
                    if lres is None:
                        lres = self._evaluate(i, self.settings.long_window_size)
                        if tick is not None:
                            tick()
                    f.last_long = lres
                    events.extend(self._calibrated_step(i, f, lres, "long", f.thr_long))
        for i, (f, res) in enumerate(zip(self._features, short, strict=True)):
            events.extend(self._quality_step(i, f, res))
        return events

    def _calibrated_step(
        self, i: int, f: _Feature, res: dict[str, float], channel: str, thr: float
    ) -> list[DriftEvent]:
        stat = res["statistic"]
        test = f.test
        if math.isnan(stat):
            hit = False
            used = thr
        elif f.ks is not None:
            size = int(res.get("ks_size", res["window"]))
            used = self._scaled(thr, size, res["n_eff"], f.ks_n_ref)
            big = res.get("full_statistic", stat) >= self.settings.min_statistic
            hit = stat >= used - 1e-12 and big
            if f.ks_rest is not None:
                atom_hit = big and res["atom_p"] < f.atom_alpha[channel]
                if atom_hit and not hit:
                    test = "atom_share"
                hit = hit or atom_hit
        else:
            used = thr
            hit = res["p_value"] < thr
        res["threshold"] = used
        res["exceeded"] = float(hit)
        if test == "atom_share":
            # The event reports the part that alarmed: the share against its p-value threshold.
            ev_res = {**res, "statistic": res["atom_share"], "p_value": res["atom_p"]}
            used = f.atom_alpha[channel]
        else:
            ev_res = res
        machine = self._machines[i]["stat"]
        state = machine.step(channel, hit)
        effect = res.get("effect", math.nan)
        hist = f.effects.setdefault(channel, [])
        hist.append(0.0 if math.isnan(effect) else effect)
        if len(hist) > self.settings.confirm_n:
            del hist[0]
        if state == "drift_started":
            f.reported = {channel: hist[-1]}
            # The statistic keeps growing while the windows fill with the new
            # data: that is the same change, not a worse one.
            f.settle = {"short": self._count + self.settings.window_size}
            f.settle["long"] = self._count + self.settings.long_window_size
        elif state == "drift_resolved":
            f.reported = {}
        if state is not None:
            return [self._event(f, test, ev_res, used, state)]
        if (
            not machine.drifting
            or self.settings.worsened_factor <= 0
            or len(hist) < self.settings.confirm_m
        ):
            return []
        # The effect reached by m of the last n checks: one noisy check cannot worsen.
        confirmed = sorted(hist)[-self.settings.confirm_m]
        before = f.reported.get(channel)
        if before is None or self._count < f.settle.get(channel, 0):
            f.reported[channel] = max(confirmed, before or 0.0)
            return []
        if confirmed > 0 and confirmed >= self.settings.worsened_factor * before:
            f.reported[channel] = confirmed
            size = (
                self.settings.window_size if channel == "short" else self.settings.long_window_size
            )
            f.settle[channel] = self._count + size
            return [self._event(f, test, ev_res, used, "drift_worsened")]
        return []

    def _per_check(self, short: list[dict[str, float]]) -> list[DriftEvent]:
        pvals = np.ones(len(self._features))
        for i, (f, res) in enumerate(zip(self._features, short, strict=True)):
            stat = res["statistic"]
            if math.isnan(stat):
                pvals[i] = math.nan
            elif f.ks is None:
                pvals[i] = res["p_value"]
            else:
                # p >= threshold cannot be rejected by any correction: skip the p-value.
                size = int(res.get("ks_size", self.settings.window_size))
                crit = self._scaled(f.thr_short, size, res["n_eff"], f.ks_n_ref)
                if stat >= 0.95 * crit - 1e-12:
                    pvals[i] = self._pvalue(stat, res["n_eff"], f.ks_n_ref)
                    res["p_value"] = pvals[i]
                if f.ks_rest is not None:
                    # Two tests on one feature: Bonferroni over them.
                    pvals[i] = min(1.0, 2.0 * min(float(pvals[i]), res["atom_p"]))
                    res["p_value"] = pvals[i]
        adjusted = adjust_pvalues(pvals, self.settings.correction)
        k = int(np.count_nonzero(~np.isnan(pvals)))
        corrected = (
            self.settings.threshold / max(k, 1)
            if self.settings.correction == "bonferroni"
            else self.settings.threshold
        )
        events = []
        for i, (f, res) in enumerate(zip(self._features, short, strict=True)):
            res["threshold"] = corrected
            if adjusted[i] < self.settings.threshold:
                events.append(self._event(f, f.test, res, corrected, "drift_started"))
        return events

    def _quality(
        self,
        i: int,
        f: _Feature,
        res: dict[str, float],
        test: str,
        rate: float,
        base: float,
        excess: float,
    ) -> list[DriftEvent]:
        if math.isnan(rate):
            return []
        thr = base + excess
        # Hysteresis: between the lower level and the threshold a check is neither.
        clean = rate <= base + excess * (1.0 - self.settings.quality_hysteresis)
        state = self._machines[i][test].step("short", rate > thr, clean)
        return [] if state is None else [self._event(f, test, res, thr, state)]

    def _quality_step(self, i: int, f: _Feature, res: dict[str, float]) -> list[DriftEvent]:
        events = self._quality(
            i, f, res, "nan_rate", res["nan_rate"], f.ref_nan_rate, self.settings.nan_rate_threshold
        )
        events += self._quality(
            i,
            f,
            res,
            "out_of_range",
            res["out_of_range_rate"],
            0.0,
            self.settings.out_of_range_threshold,
        )
        if f.cat is not None and f.support is None:
            events += self._quality(
                i,
                f,
                res,
                "unknown_category",
                res["unknown_rate"],
                f.cat.other_share,
                self.settings.unknown_category_threshold,
            )
        return events

    # ------------------------------------------------------------------ reporting

    def summary(self, exact: bool = True) -> list[dict[str, Any]]:
        """Per-feature last results: statistic, p-value, threshold, state, data-quality rates.

        KS p-values are computed here at a bounded cost (microseconds;
        :func:`~edge_actors.drift.ks.ks_pvalue_bounded`). ``exact`` is kept
        for callers of the earlier API and no longer changes the cost.
        """
        del exact
        out = []
        for i, (f, machines) in enumerate(zip(self._features, self._machines, strict=True)):
            res = f.last
            stat = res.get("statistic", math.nan)
            p = res.get("p_value", math.nan)
            if f.ks is not None and math.isnan(p) and not math.isnan(stat) and "n" in res:
                p = self._pvalue(stat, res.get("n_eff", res["n"]), f.ks_n_ref)
            item: dict[str, Any] = {
                "feature": f.name,
                "test": f.test,
                "statistic": stat,
                "p_value": p,
                "threshold": res.get("threshold", f.thr_short),
                "state": "drifting" if machines["stat"].drifting else "ok",
                "nan_rate": res.get("nan_rate", math.nan),
                "out_of_range_rate": res.get("out_of_range_rate", math.nan),
                "unknown_rate": res.get("unknown_rate", math.nan),
                "n_eff": res.get("n_eff", math.nan),
                "autocorrelation": res.get("autocorrelation", math.nan),
                # A feature with an atom: the window's share of it and that test's p-value.
                "atom_share": res.get("atom_share", math.nan),
                "atom_p_value": res.get("atom_p", math.nan),
                "quality": sorted(t for t in QUALITY_TESTS if machines[t].drifting),
                "window_size": self.settings.window_size,
                "n_ref": f.n_ref,
                **self._distances(i, f),
            }
            if f.last_long:
                item["long_statistic"] = f.last_long.get("statistic", math.nan)
                item["long_threshold"] = f.last_long.get("threshold", f.thr_long)
                item["long_n_eff"] = f.last_long.get("n_eff", math.nan)
            out.append(item)
        return out

    def summary_events(self) -> list[DriftEvent]:
        """The summary as ``state='check'`` events (one per feature with a completed check)."""
        events = []
        for f, item in zip(self._features, self.summary(), strict=True):
            if not f.last:
                continue
            res = dict(f.last)
            res["p_value"] = item["p_value"]
            events.append(self._event(f, f.test, res, float(item["threshold"]), "check"))
        return events

    # ------------------------------------------------------------------ checkpoint

    def state_dict(self) -> dict[str, Any]:
        """Windows, cursors and per-feature states; numpy arrays and plain values only."""
        return {
            "version": _STATE_VERSION,
            "features": self.feature_names,
            "ring": self._ring.copy(),
            "pos": self._pos,
            "count": self._count,
            "eff_c": self._eff_c,
            "check_frequency": self._check_frequency,
            "next_check": self._next_check,
            "next_long": self._next_long,
            "last_seq": self._last_seq,
            "machines": [{k: m.state() for k, m in ms.items()} for ms in self._machines],
            "last": [dict(f.last) for f in self._features],
            "last_long": [dict(f.last_long) for f in self._features],
            "effects": [{k: list(v) for k, v in f.effects.items()} for f in self._features],
            "reported": [dict(f.reported) for f in self._features],
            "settle": [dict(f.settle) for f in self._features],
        }

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a detector with the same configuration."""
        if int(d["version"]) != _STATE_VERSION:
            raise ValueError(f"unsupported detector state version {d['version']}")
        if list(d["features"]) != self.feature_names:
            raise ValueError("checkpoint features differ from this detector's")
        ring = np.asarray(d["ring"], dtype=np.float64)
        if ring.shape != self._ring.shape:
            raise ValueError(f"checkpoint ring shape {ring.shape} != {self._ring.shape}")
        self._ring[...] = ring
        self._rank(0, self._ring_len)
        # Whether the restored windows hold values equal to a repeated reference
        # value is not known: look for them until these records are out.
        self._tie_last = [int(d["count"])] * len(self._block_cols)
        self._pos = int(d["pos"])
        self._count = int(d["count"])
        if int(d["check_frequency"]) != self._check_frequency:
            self.check_frequency = int(d["check_frequency"])
        self._eff_c = int(d["eff_c"])
        self._next_check = int(d["next_check"])
        self._next_long = int(d["next_long"])
        self._last_seq = int(d["last_seq"])
        for ms, saved in zip(self._machines, d["machines"], strict=True):
            for k, m in ms.items():
                m.load(saved[k])
        for f, last, last_long, eff, rep, settle in zip(
            self._features,
            d["last"],
            d["last_long"],
            d["effects"],
            d["reported"],
            d["settle"],
            strict=True,
        ):
            f.last = {str(k): float(v) for k, v in last.items()}
            f.last_long = {str(k): float(v) for k, v in last_long.items()}
            f.effects = {str(k): [float(x) for x in v] for k, v in eff.items()}
            f.reported = {str(k): float(v) for k, v in rep.items()}
            f.settle = {str(k): int(v) for k, v in settle.items()}
