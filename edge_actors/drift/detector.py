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

Tests
    Numeric features: two-sample KS against the reference (see
    :mod:`edge_actors.drift.ks`).  Categorical features: chi-squared with an
    OTHER bucket (:mod:`edge_actors.drift.categorical`).  Both kinds: NaN rate
    above the reference's by more than ``nan_rate_threshold``, and (numeric)
    share of values outside the reference range above ``out_of_range_threshold``.

Modes
    ``calibrated`` (default): per-check thresholds from
    :mod:`edge_actors.drift.calibration` so that the expected number of
    records to a false ``drift_started`` on stationary data is at least
    ``erfa``; an exceedance also needs ``D >= min_statistic``.  Each feature
    has a state machine: ``confirm_m`` exceedances among the last
    ``confirm_n`` checks of the short or of the long window emit
    ``drift_started``; ``confirm_n`` consecutive clean checks of every window
    emit ``drift_resolved``.  The multiple-testing budget is split over the
    features by the calibration itself (it divides by their number), so
    ``correction`` is only reported in calibrated mode.
    ``per_check`` (the seed's behaviour): every check, KS (or chi-squared) on
    the short window, ``drift_started`` for each feature whose p-value is
    below ``threshold`` after ``correction`` - one event per alarming check,
    no state.  Exact p-values cost milliseconds, so they are computed only
    for features whose D passes the uncorrected critical value (no p-value
    above ``threshold`` can be rejected by Bonferroni or BH).

``DriftEvent.threshold`` is the value the statistic was compared with: a KS
D threshold in calibrated mode, a p-value threshold (after correction) in
per_check mode and for chi-squared, a rate for the data-quality tests.

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
from edge_actors.drift.categorical import CategoricalReference
from edge_actors.drift.corrections import Correction, adjust_pvalues
from edge_actors.drift.distances import NumericPSI, WassersteinReference, wasserstein_1
from edge_actors.drift.ks import KSChecker, KSReference, ks_pvalue

__all__ = ["DriftDetector", "DriftEvent", "FeatureKind", "Mode"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
FeatureKind = Literal["numeric", "categorical"]
Mode = Literal["calibrated", "per_check"]
_STATE_VERSION = 1
_MAX_STRETCH = 64


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

    def step(self, channel: str, hit: bool) -> str | None:
        hist = self.hist[channel]
        hist.append(hit)
        if len(hist) > self.n:
            del hist[0]
        self.clean[channel] = 0 if hit else self.clean[channel] + 1
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


class _Feature:
    """Per-feature reference, work buffers, thresholds, machines and last results."""

    def __init__(self, name: str, kind: FeatureKind, reference: Any, max_window: int) -> None:
        self.name, self.kind = name, kind
        self.ref_nan_rate = 0.0
        self.ks: KSChecker | None = None
        self.cat: CategoricalReference | None = None
        if kind == "numeric":
            if isinstance(reference, KSReference):
                ks_ref = reference
            else:
                raw = np.asarray(reference, dtype=np.float64).ravel()
                if raw.shape[0]:
                    self.ref_nan_rate = float(np.isnan(raw).mean())
                ks_ref = KSReference(raw)
            self.ks = KSChecker(ks_ref, max_window)
            self.n_ref = ks_ref.n
            self.ref_min, self.ref_max = ks_ref.min, ks_ref.max
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
        self.test = "ks" if kind == "numeric" else "chi2"
        self.thr_short = math.nan
        self.thr_long = math.nan
        self.last: dict[str, float] = {}
        self.last_long: dict[str, float] = {}


class DriftDetector:
    """Streaming drift detector over several features; see the module docstring.

    Args:
        features: ``(name, kind, reference)`` per column; ``kind`` is
            ``'numeric'`` (reference: values or a :class:`KSReference`) or
            ``'categorical'`` (reference: codes, a count mapping or a
            :class:`CategoricalReference`).
        window_size: short window, records.
        long_window_size: long window, records (0 disables it).
        check_frequency: records between checks of the short window.
        mode: ``'calibrated'`` or ``'per_check'``.
        threshold: p-value threshold of per_check mode (before correction).
        erfa: expected records to a false alarm over all features (calibrated mode).
        min_statistic: effect-size floor on KS D (calibrated mode).
        confirm_m: exceedances needed among the last ``confirm_n`` checks.
        confirm_n: window of the confirmation, and clean checks needed to resolve.
        correction: ``'bonferroni'``, ``'bh'`` or ``'none'`` (per_check mode).
        nan_rate_threshold: alarm when the NaN rate exceeds the reference's by this.
        out_of_range_threshold: alarm when this share of values is outside the reference range.
        min_expected_count: chi-squared buckets below this expected count are pooled.
        reference_hash: copied into every event.
        long_check_frequency: records between long-window checks (default above).
        cache_dir: where calibrated thresholds are cached (none: recomputed).
        clock: returns epoch seconds for event times.
    """

    def __init__(
        self,
        features: Sequence[tuple[str, FeatureKind, Any]],
        window_size: int = 1000,
        long_window_size: int = 10000,
        check_frequency: int = 100,
        mode: Mode = "calibrated",
        threshold: float = 0.05,
        erfa: float = 1_000_000.0,
        min_statistic: float = 0.02,
        confirm_m: int = 3,
        confirm_n: int = 5,
        correction: Correction = "bonferroni",
        nan_rate_threshold: float = 0.1,
        out_of_range_threshold: float = 0.1,
        min_expected_count: float = 5.0,
        reference_hash: str = "",
        long_check_frequency: int | None = None,
        cache_dir: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not features:
            raise ValueError("at least one feature is required")
        if window_size <= 0 or check_frequency <= 0 or long_window_size < 0:
            raise ValueError("window_size and check_frequency must be > 0")
        if not 1 <= confirm_m <= confirm_n:
            raise ValueError(f"need 1 <= confirm_m <= confirm_n, got {confirm_m}, {confirm_n}")
        if mode not in ("calibrated", "per_check"):
            raise ValueError(f"unknown mode {mode!r}")
        self.window_size = int(window_size)
        self.long_window_size = int(long_window_size)
        if 0 < self.long_window_size <= self.window_size:
            raise ValueError("long_window_size must exceed window_size (or be 0)")
        self.mode: Mode = mode
        self.threshold = float(threshold)
        self.erfa = float(erfa)
        self.min_statistic = float(min_statistic)
        self.confirm_m, self.confirm_n = int(confirm_m), int(confirm_n)
        self.correction: Correction = correction
        self.nan_rate_threshold = float(nan_rate_threshold)
        self.out_of_range_threshold = float(out_of_range_threshold)
        self.min_expected_count = float(min_expected_count)
        self.reference_hash = reference_hash
        self.cache_dir = cache_dir
        self._clock = clock
        self._check_frequency = int(check_frequency)
        if long_check_frequency is None:
            base = max(self._check_frequency, self.long_window_size // 10)
            long_check_frequency = -(-base // self._check_frequency) * self._check_frequency
        self.long_check_frequency = int(long_check_frequency)
        self._ring_len = max(self.window_size, self.long_window_size)
        self._features = [_Feature(name, kind, ref, self._ring_len) for name, kind, ref in features]
        self._ring = np.full((len(self._features), self._ring_len), np.nan)
        self._pos = 0
        self._count = 0
        self._eff_c = self._check_frequency
        self._next_check = self._check_frequency
        self._next_long = self._ring_len
        self._last_seq = -1
        self._machines: list[dict[str, _Machine]] = []
        for _ in self._features:
            channels = ["short", "long"] if self.long_window_size else ["short"]
            self._machines.append(
                {
                    "stat": _Machine(channels, self.confirm_m, self.confirm_n),
                    "nan_rate": _Machine(["short"], self.confirm_m, self.confirm_n),
                    "out_of_range": _Machine(["short"], self.confirm_m, self.confirm_n),
                }
            )
        self._pcache: dict[tuple[float, int, int], float] = {}
        # Built on first use: only summaries report distances.
        self._dist_refs: dict[int, tuple[WassersteinReference, NumericPSI]] = {}
        self._calibrate()

    # ------------------------------------------------------------------ setup

    def _calibrate(self) -> None:
        k = len(self._features)
        if self.mode == "calibrated":
            share = 0.5 if self.long_window_size else 1.0
            self.alpha_short = per_check_alpha(
                self.erfa, self._check_frequency, k, self.confirm_m, share
            )
            self.alpha_long = per_check_alpha(
                self.erfa, self.long_check_frequency, k, self.confirm_m, share
            )
        else:
            self.alpha_short = self.alpha_long = self.threshold
        for f in self._features:
            if f.ks is None:
                f.thr_short, f.thr_long = self.alpha_short, self.alpha_long
                continue
            f.thr_short = ks_threshold(self.window_size, f.n_ref, self.alpha_short, self.cache_dir)
            if self.long_window_size and self.mode == "calibrated":
                f.thr_long = ks_threshold(
                    self.long_window_size, f.n_ref, self.alpha_long, self.cache_dir
                )

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
        if lowered and self.mode == "calibrated":
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
        self, values: npt.ArrayLike, seq_first: int, budget: float | None = None
    ) -> list[DriftEvent]:
        """Consume records ``seq_first ..`` (rows; columns = features) and run due checks.

        Args:
            values: shape ``(n_records, n_features)``; categorical columns hold
                float codes (-1 = OTHER), NaN = missing.
            seq_first: sequence number of the first row.
            budget: seconds the checks of this call may take before the
                cadence is stretched.
        """
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1) if len(self._features) == 1 else arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != len(self._features):
            raise ValueError(f"expected shape (n, {len(self._features)}), got {arr.shape}")
        events: list[DriftEvent] = []
        spent = 0.0
        i, n = 0, arr.shape[0]
        while i < n:
            take = min(n - i, self._next_check - self._count)
            self._write(arr[i : i + take])
            i += take
            self._count += take
            self._last_seq = seq_first + i - 1
            if self._count >= self._next_check:
                self._next_check = self._count + self._eff_c
                if self._count >= self.window_size:
                    t0 = time.perf_counter()
                    events.extend(self._check())
                    spent += time.perf_counter() - t0
        if budget is not None:
            if spent > budget and self._eff_c < self._check_frequency * _MAX_STRETCH:
                self._eff_c *= 2
                logger.info("drift checks behind budget; cadence now %d records", self._eff_c)
            elif spent < budget / 4 and self._eff_c > self._check_frequency:
                self._eff_c = max(self._eff_c // 2, self._check_frequency)
        return events

    def _write(self, rows: FloatArray) -> None:
        r = rows.shape[0]
        if r == 0:
            return
        if r >= self._ring_len:
            rows = rows[-self._ring_len :]
            self._ring[:, :] = rows.T
            self._pos = 0
            return
        first = min(r, self._ring_len - self._pos)
        self._ring[:, self._pos : self._pos + first] = rows[:first].T
        if first < r:
            self._ring[:, : r - first] = rows[first:].T
        self._pos = (self._pos + r) % self._ring_len

    def _parts(self, f: int, size: int) -> tuple[FloatArray, FloatArray]:
        start = self._pos - size
        row = self._ring[f]
        if start >= 0:
            return row[start : self._pos], row[:0]
        return row[start:], row[: self._pos]

    def _distances(self, i: int, f: _Feature) -> dict[str, float]:
        """Wasserstein-1 and PSI of the current short window: reported, never alarmed on."""
        size = min(self._count, self.window_size)
        a, b = self._parts(i, size)
        w = np.concatenate((a, b))
        w = w[~np.isnan(w)]
        if size == 0 or not len(w):
            return {"wasserstein": math.nan, "psi": math.nan}
        if f.ks is None:
            assert f.cat is not None
            return {"wasserstein": math.nan, "psi": f.cat.psi(w)}
        refs = self._dist_refs.get(i)
        if refs is None:
            values = f.ks.ref.values
            refs = self._dist_refs[i] = (WassersteinReference(values), NumericPSI(values))
        return {"wasserstein": wasserstein_1(w, refs[0]), "psi": refs[1](w)}

    def _pvalue(self, d: float, n: int, m: int) -> float:
        key = (d, n, m)
        p = self._pcache.get(key)
        if p is None:
            if len(self._pcache) > 256:
                self._pcache.clear()
            p = ks_pvalue(d, n, m)
            self._pcache[key] = p
        return p

    def _scaled(self, thr: float, size: int, n_valid: int, n_ref: int) -> float:
        if n_valid == size:
            return thr
        # Asymptotic scaling of the critical D with the effective sample size.
        en_full = size * n_ref / (size + n_ref)
        en_valid = n_valid * n_ref / (n_valid + n_ref)
        return thr * math.sqrt(en_full / en_valid)

    def _evaluate(self, fi: int, size: int) -> dict[str, float]:
        """Run the test of one feature on one window; return its results."""
        f = self._features[fi]
        a, b = self._parts(fi, size)
        res: dict[str, float] = {"window": float(size)}
        if f.ks is not None:
            buf, n_nan = f.ks.sort_parts(a, b)
            n_valid = size - n_nan
            res["nan_rate"] = n_nan / size
            res["n"] = float(n_valid)
            if n_valid == 0:
                res["statistic"] = math.nan
                res["out_of_range_rate"] = math.nan
                return res
            valid = buf[:n_valid]
            lo = int(np.searchsorted(valid, f.ref_min, side="left"))
            hi = int(np.searchsorted(valid, f.ref_max, side="right"))
            res["out_of_range_rate"] = (lo + n_valid - hi) / n_valid
            res["statistic"] = f.ks.statistic_sorted(valid)
        else:
            assert f.cat is not None
            window = np.concatenate([a, b])
            n_nan = int(np.count_nonzero(np.isnan(window)))
            res["nan_rate"] = n_nan / size
            res["out_of_range_rate"] = math.nan
            chi = f.cat.chi2(window, self.min_expected_count)
            res["statistic"] = chi.statistic
            res["p_value"] = chi.pvalue
            res["n"] = float(chi.n)
        return res

    def _event(
        self, f: _Feature, test: str, res: Mapping[str, float], threshold: float, state: str
    ) -> DriftEvent:
        size = int(res["window"])
        p = res.get("p_value", math.nan)
        if test == "ks" and math.isnan(p) and not math.isnan(res["statistic"]):
            p = self._pvalue(res["statistic"], int(res["n"]), f.n_ref)
        if test in ("nan_rate", "out_of_range"):
            stat = res["nan_rate"] if test == "nan_rate" else res["out_of_range_rate"]
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
            correction=self.correction,
            window_size=size,
            n_ref=f.n_ref,
            state=state,
            seq_first=self._last_seq - size + 1,
            seq_last=self._last_seq,
            reference_hash=self.reference_hash,
        )

    def _check(self) -> list[DriftEvent]:
        events: list[DriftEvent] = []
        do_long = (
            self.mode == "calibrated"
            and self.long_window_size > 0
            and self._count >= self._next_long
        )
        if do_long:
            self._next_long = self._count + self.long_check_frequency
        short = [self._evaluate(i, self.window_size) for i in range(len(self._features))]
        for f, res in zip(self._features, short, strict=True):
            f.last = res
        if self.mode == "per_check":
            events.extend(self._per_check(short))
        else:
            for i, (f, res) in enumerate(zip(self._features, short, strict=True)):
                events.extend(self._calibrated_step(i, f, res, "short", f.thr_short))
                if do_long:
                    lres = self._evaluate(i, self.long_window_size)
                    f.last_long = lres
                    events.extend(self._calibrated_step(i, f, lres, "long", f.thr_long))
        for i, (f, res) in enumerate(zip(self._features, short, strict=True)):
            events.extend(self._quality_step(i, f, res))
        return events

    def _calibrated_step(
        self, i: int, f: _Feature, res: dict[str, float], channel: str, thr: float
    ) -> list[DriftEvent]:
        stat = res["statistic"]
        if math.isnan(stat):
            hit = False
            used = thr
        elif f.ks is not None:
            size = int(res["window"])
            used = self._scaled(thr, size, int(res["n"]), f.n_ref)
            hit = stat >= used - 1e-12 and stat >= self.min_statistic
        else:
            used = thr
            hit = res["p_value"] < thr
        res["threshold"] = used
        res["exceeded"] = float(hit)
        state = self._machines[i]["stat"].step(channel, hit)
        if state is None:
            return []
        return [self._event(f, f.test, res, used, state)]

    def _per_check(self, short: list[dict[str, float]]) -> list[DriftEvent]:
        pvals = np.ones(len(self._features))
        for i, (f, res) in enumerate(zip(self._features, short, strict=True)):
            stat = res["statistic"]
            if math.isnan(stat):
                pvals[i] = math.nan
            elif f.ks is None:
                pvals[i] = res["p_value"]
            else:
                # p >= threshold cannot be rejected by any correction: skip the exact p.
                crit = self._scaled(f.thr_short, self.window_size, int(res["n"]), f.n_ref)
                if stat >= 0.95 * crit - 1e-12:
                    pvals[i] = self._pvalue(stat, int(res["n"]), f.n_ref)
                    res["p_value"] = pvals[i]
        adjusted = adjust_pvalues(pvals, self.correction)
        k = int(np.count_nonzero(~np.isnan(pvals)))
        corrected = (
            self.threshold / max(k, 1) if self.correction == "bonferroni" else self.threshold
        )
        events = []
        for i, (f, res) in enumerate(zip(self._features, short, strict=True)):
            res["threshold"] = corrected
            if adjusted[i] < self.threshold:
                events.append(self._event(f, f.test, res, corrected, "drift_started"))
        return events

    def _quality_step(self, i: int, f: _Feature, res: dict[str, float]) -> list[DriftEvent]:
        events = []
        nan_thr = f.ref_nan_rate + self.nan_rate_threshold
        state = self._machines[i]["nan_rate"].step("short", res["nan_rate"] > nan_thr)
        if state is not None:
            events.append(self._event(f, "nan_rate", res, nan_thr, state))
        oor = res["out_of_range_rate"]
        if not math.isnan(oor):
            state = self._machines[i]["out_of_range"].step(
                "short", oor > self.out_of_range_threshold
            )
            if state is not None:
                events.append(
                    self._event(f, "out_of_range", res, self.out_of_range_threshold, state)
                )
        return events

    # ------------------------------------------------------------------ reporting

    def summary(self, exact: bool = True) -> list[dict[str, Any]]:
        """Per-feature last results: statistic, p-value, threshold, state, data-quality rates.

        KS p-values are computed here (milliseconds each when exact), not at
        every check. ``exact=False`` uses the asymptotic distribution: for a
        status display that must not stall the worker's loop.
        """
        out = []
        for i, (f, machines) in enumerate(zip(self._features, self._machines, strict=True)):
            res = f.last
            stat = res.get("statistic", math.nan)
            p = res.get("p_value", math.nan)
            if f.ks is not None and math.isnan(p) and not math.isnan(stat) and "n" in res:
                if exact:
                    p = self._pvalue(stat, int(res["n"]), f.n_ref)
                else:
                    p = ks_pvalue(stat, int(res["n"]), f.n_ref, "asymp")
            item: dict[str, Any] = {
                "feature": f.name,
                "test": f.test,
                "statistic": stat,
                "p_value": p,
                "threshold": res.get("threshold", f.thr_short),
                "state": "drifting" if machines["stat"].drifting else "ok",
                "nan_rate": res.get("nan_rate", math.nan),
                "out_of_range_rate": res.get("out_of_range_rate", math.nan),
                "window_size": self.window_size,
                "n_ref": f.n_ref,
                **self._distances(i, f),
            }
            if f.last_long:
                item["long_statistic"] = f.last_long.get("statistic", math.nan)
                item["long_threshold"] = f.last_long.get("threshold", f.thr_long)
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
        for f, last, last_long in zip(self._features, d["last"], d["last_long"], strict=True):
            f.last = {str(k): float(v) for k, v in last.items()}
            f.last_long = {str(k): float(v) for k, v in last_long.items()}
