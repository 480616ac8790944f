"""Model performance from late ground truth: join truth to predictions, test a rolling window.

Pure (numpy and the standard library; no rings, no processes, no clock): the
drift worker feeds it lane records and writes the events it returns, the
benchmark and the tests drive it with simulated timestamps.

* :class:`PredictionIndex` keeps the last ``capacity`` predictions by record
  id (ids, times and predicted values in numpy arrays, a dict from id to
  slot), so truth arriving seconds or hours later finds what was predicted.
  A prediction pushed out before its truth came is counted
  ``evicted_unlabelled``; truth for an id it does not hold waits a little in a
  small bounded buffer (another process may log the truth before the agent
  has read the prediction from the other lane), then is counted
  ``unknown_id``.
* :class:`PerformanceTracker` keeps, per (model, version), the last
  ``window_size`` labelled predictions and tests them every ``check_every``
  labels against the reference's performance:

  - classification (categorical output): the number of errors ``k`` in the
    window against ``Binomial(n, 1 - (reference_accuracy - tolerance))``,
    exact upper-tail p-value;
  - regression (numeric output): the window's mean absolute error against
    ``reference_mae * (1 + tolerance)``, one-sided z-test with the window's
    own standard deviation (a CLT approximation: valid for the window sizes
    used here unless the errors are extremely heavy-tailed).

  A check *fails* when its p-value is below ``alpha``; ``confirm_m`` failures
  among the last ``confirm_n`` checks raise ``performance_degraded``; once
  degraded, ``confirm_m`` of ``confirm_n`` checks with a p-value above
  ``recover_p`` raise ``performance_recovered``.

False alarms: ``alpha = check_every / expected_labels_to_false_alarm``. On
stationary data at the reference performance, each check fails with
probability at most ``alpha`` (the binomial tail is exact; higher accuracy
only lowers it), and an alarm needs a failed check, so by the union bound the
expected number of false ``performance_degraded`` in ``L`` labelled records
is at most ``L / check_every * alpha = L / expected_labels_to_false_alarm``
(1e8 by default: at most 0.01 in a million labels), whatever the dependence
between overlapping windows.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_actors.drift.detector import DriftEvent

__all__ = [
    "DELAYS_KEPT",
    "PerfEvent",
    "PerformanceSettings",
    "PerformanceTracker",
    "PredictionIndex",
    "binom_sf",
    "binom_sf_table",
    "normal_sf",
]

#: Label delays kept per (model, version) for the median shown in ``status``.
DELAYS_KEPT = 4096
#: Bytes one index entry costs, measured with tracemalloc on CPython 3.11 (numpy
#: slots 25 B, the dict entry and its two int objects the rest; 65,536 entries
#: held 11.1 MB); ``prediction_index_size`` times this is the budget.
INDEX_BYTES_PER_ENTRY = 170
#: Records of a lane slice joined at a time. Coverage (labelled / predictions)
#: in an event counts the predictions read up to the end of the piece that
#: made the check: a lane slice of thousands of records, read whole, would
#: count predictions logged after the truth that triggered the check.
FEED_PIECE = 256

Key = tuple[str, str]


def binom_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, exact (log-space sum; ``n`` up to ~1e5)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    # log pmf(k), then pmf(j+1)/pmf(j) = (n-j)/(j+1) * p/(1-p), summed in log space.
    head = (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    j = np.arange(k, n, dtype=np.float64)
    steps = np.log((n - j) / (j + 1)) + (math.log(p) - math.log1p(-p))
    terms = np.concatenate(([head], head + np.cumsum(steps)))
    top = float(terms.max())
    return float(min(1.0, math.exp(top) * float(np.exp(terms - top).sum())))


def binom_sf_table(n: int, p: float) -> npt.NDArray[np.float64]:
    """``P(X >= k)`` for ``k = 0..n``, ``X ~ Binomial(n, p)`` (one exact tail per k)."""
    return np.array([binom_sf(k, n, p) for k in range(n + 1)], np.float64)


def normal_sf(z: float) -> float:
    """``P(Z >= z)`` for a standard normal ``Z``."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class PerformanceSettings:
    """How one (model, version) is judged; see the module docstring."""

    #: ``classification`` (accuracy, macro-F1) or ``regression`` (MAE, RMSE).
    task: str
    #: The reference's accuracy (classification) or MAE (regression).
    reference: float
    window_size: int = 750
    check_every: int = 25
    expected_labels_to_false_alarm: float = 1e8
    #: Classification: accuracy may drop this much (absolute); regression: MAE
    #: may grow by this share, before a check can fail.
    tolerance: float = 0.0
    confirm_m: int = 2
    confirm_n: int = 3
    #: A check counts towards recovery when its p-value is above this.
    recover_p: float = 0.05
    #: Number of classes (classification: the output's categories), for macro-F1.
    n_classes: int = 0
    #: Labelled records a window needs before it is tested.
    min_labels: int = 100

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task: must be classification or regression, got {self.task!r}")
        if not (self.reference == self.reference) or self.reference < 0:
            raise ValueError(f"reference performance: must be a number >= 0, got {self.reference}")
        if self.task == "classification" and not 0.0 < self.reference <= 1.0:
            raise ValueError(f"reference accuracy: must be in (0, 1], got {self.reference}")
        if self.window_size < 1 or self.check_every < 1:
            raise ValueError("window_size and check_every must be >= 1")
        if not 1 <= self.confirm_m <= self.confirm_n:
            raise ValueError(
                f"need 1 <= confirm_m <= confirm_n, got {self.confirm_m}/{self.confirm_n}"
            )

    @property
    def alpha(self) -> float:
        """False-alarm probability of one check (see the module docstring)."""
        return min(1.0, self.check_every / self.expected_labels_to_false_alarm)

    @property
    def metric(self) -> str:
        """The tested metric: ``accuracy`` or ``mae``."""
        return "accuracy" if self.task == "classification" else "mae"

    @property
    def bound(self) -> float:
        """The worst performance that still counts as the reference's."""
        if self.task == "classification":
            return max(0.0, self.reference - self.tolerance)
        return self.reference * (1.0 + self.tolerance)


@dataclass(frozen=True)
class PerfEvent(DriftEvent):
    """A performance event: a drift event's fields (so it is stored, uploaded and
    shown like one) plus the model, its label coverage and delay, and the errors."""

    model: str = ""
    model_version: str = ""
    coverage: float = math.nan
    label_delay_s: float = math.nan
    #: Errors in the window (classification) / NaN (regression).
    errors: int = -1


class PredictionIndex:
    """The last ``capacity`` predictions by id, for joining late truth (see the module doc).

    Single-threaded. ``add`` takes arrays (one lane slice at a time); ``take``
    one id. Memory: ``capacity * INDEX_BYTES_PER_ENTRY`` bytes at most.
    """

    def __init__(self, capacity: int, wait_capacity: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"prediction index capacity: must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.ids = np.full(self.capacity, -1, np.int64)
        self.t_ns = np.zeros(self.capacity, np.int64)
        self.pred = np.full(self.capacity, np.nan, np.float64)
        self.labelled = np.ones(self.capacity, np.bool_)  # empty slots count as done
        self.slot: dict[int, int] = {}
        self.pos = 0
        #: Truth for ids not (yet) seen: id -> (t_ns, truth), oldest first.
        # An OrderedDict: dropping the oldest is O(1) (a dict's first key after many
        # deletions from the front costs a scan of the dead entries).
        self.waiting: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self.wait_capacity = max(16, capacity // 16) if wait_capacity is None else wait_capacity
        self.counts: dict[str, int] = {
            "predictions": 0,
            "evicted_unlabelled": 0,
            "unknown_id": 0,
            "duplicate_truth": 0,
        }

    def add(
        self,
        ids: npt.NDArray[np.int64],
        t_ns: npt.NDArray[np.int64],
        pred: npt.NDArray[np.float64],
    ) -> list[tuple[int, int, float, float]]:
        """Index predictions; returns joins of truth that waited: (id, delay_ns, pred, truth)."""
        n = len(ids)
        if n == 0:
            return []
        self.counts["predictions"] += n
        if n > self.capacity:  # only the newest fit; the rest are gone at once
            self.counts["evicted_unlabelled"] += n - self.capacity
            ids, t_ns, pred = ids[-self.capacity :], t_ns[-self.capacity :], pred[-self.capacity :]
            n = self.capacity
        slots = (self.pos + np.arange(n)) % self.capacity
        gone = ~self.labelled[slots]
        self.counts["evicted_unlabelled"] += int(gone.sum())
        self.ids[slots] = ids
        self.t_ns[slots] = t_ns
        self.pred[slots] = pred
        self.labelled[slots] = False
        # Evicted ids are not deleted one by one (a Python loop per record): a
        # mapping whose slot now holds another id is stale (see _join), and the
        # dict is rebuilt from the ring once it holds a quarter more than that.
        self.slot.update(zip(ids.tolist(), slots.tolist(), strict=True))
        self.pos = int((self.pos + n) % self.capacity)
        if len(self.slot) > self.capacity + self.capacity // 4:
            self._rebuild()
        joins: list[tuple[int, int, float, float]] = []
        if self.waiting:
            for rid in self.waiting.keys() & set(ids.tolist()):
                w = self.waiting.pop(rid)
                got = self._join(rid, w[0], w[1])
                if got is not None:
                    joins.append(got)
        return joins

    def _rebuild(self) -> None:
        """The id -> slot dict from the ring, oldest first (an id logged twice: its newest)."""
        order = (np.arange(self.capacity) + self.pos) % self.capacity
        order = order[self.ids[order] >= 0]
        self.slot = dict(zip(self.ids[order].tolist(), order.tolist(), strict=True))

    def take(self, rid: int, t_ns: int, truth: float) -> tuple[int, int, float, float] | None:
        """Join truth to its prediction: (id, delay_ns, pred, truth), or None (waiting/counted)."""
        got = self._join(rid, t_ns, truth)
        if got is None and not self._holds(rid):
            if rid in self.waiting:
                self.counts["duplicate_truth"] += 1
                return None
            self.waiting[rid] = (t_ns, truth)
            if len(self.waiting) > self.wait_capacity:
                self.waiting.popitem(last=False)
                self.counts["unknown_id"] += 1
        return got

    def take_many(
        self,
        ids: npt.NDArray[np.int64],
        t_ns: npt.NDArray[np.int64],
        truth: npt.NDArray[np.float64],
    ) -> tuple[npt.NDArray[Any], ...]:
        """:meth:`take` for a batch, vectorized; returns (ids, delay_ns, pred, truth) arrays.

        One dict lookup per truth, the rest in numpy; only truth that cannot be
        joined now (unknown ids, a second truth for one prediction in the
        batch) goes through :meth:`take` one by one.
        """
        get = self.slot.get
        slots = np.array([get(r, -1) for r in ids.tolist()], np.int64)
        ok = slots >= 0
        ok[ok] = self.ids[slots[ok]] == ids[ok]
        s = np.where(ok, slots, 0)
        fresh = ok & ~self.labelled[s]
        # The first truth of a slot in this batch wins; later ones are duplicates.
        if fresh.any():
            _, first = np.unique(s[fresh], return_index=True)
            keep = np.zeros(int(fresh.sum()), np.bool_)
            keep[first] = True
            fresh[np.flatnonzero(fresh)[~keep]] = False
        js = s[fresh]
        self.labelled[js] = True
        self.counts["duplicate_truth"] += int((ok & ~fresh).sum())
        for k in np.flatnonzero(~ok).tolist():
            self.take(int(ids[k]), int(t_ns[k]), float(truth[k]))
        return (
            ids[fresh],
            np.maximum(0, t_ns[fresh] - self.t_ns[js]),
            self.pred[js],
            truth[fresh],
        )

    def _holds(self, rid: int) -> bool:
        s = self.slot.get(rid)
        return s is not None and int(self.ids[s]) == rid

    def _join(self, rid: int, t_ns: int, truth: float) -> tuple[int, int, float, float] | None:
        s = self.slot.get(rid)
        if s is None or int(self.ids[s]) != rid:
            return None
        if self.labelled[s]:
            self.counts["duplicate_truth"] += 1
            return None
        self.labelled[s] = True
        return rid, max(0, t_ns - int(self.t_ns[s])), float(self.pred[s]), truth

    def expire_waiting(self, now_ns: int, max_age_ns: int) -> None:
        """Count truth that waited longer than ``max_age_ns`` for its prediction as unknown."""
        limit = now_ns - max_age_ns
        waiting = self.waiting
        while waiting:
            _rid, (t_ns, _truth) = next(iter(waiting.items()))
            if t_ns >= limit:
                break
            waiting.popitem(last=False)
            self.counts["unknown_id"] += 1

    def nbytes(self) -> int:
        """Bytes held, by the documented per-entry cost."""
        return self.capacity * INDEX_BYTES_PER_ENTRY


@dataclass
class _Window:
    """The last ``size`` labelled predictions of one (model, version)."""

    size: int
    pred: npt.NDArray[np.float64] = field(init=False)
    truth: npt.NDArray[np.float64] = field(init=False)
    n: int = 0
    pos: int = 0

    def __post_init__(self) -> None:
        self.pred = np.zeros(self.size, np.float64)
        self.truth = np.zeros(self.size, np.float64)

    def push(self, pred: npt.NDArray[np.float64], truth: npt.NDArray[np.float64]) -> None:
        k = len(pred)
        if k >= self.size:
            self.pred[:] = pred[-self.size :]
            self.truth[:] = truth[-self.size :]
            self.pos, self.n = 0, self.size
            return
        idx = (self.pos + np.arange(k)) % self.size
        self.pred[idx] = pred
        self.truth[idx] = truth
        self.pos = int((self.pos + k) % self.size)
        self.n = min(self.size, self.n + k)

    def values(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        if self.n < self.size:
            return self.pred[: self.n], self.truth[: self.n]
        return self.pred, self.truth


def macro_f1(
    pred: npt.NDArray[np.float64], truth: npt.NDArray[np.float64], n_classes: int
) -> float:
    """Macro-averaged F1 over the classes present in ``pred`` or ``truth`` (sklearn's labels)."""
    if not len(pred):
        return math.nan
    p = pred.astype(np.int64)
    t = truth.astype(np.int64)
    k = max(n_classes, int(p.max()) + 1, int(t.max()) + 1)
    # Out-of-range predictions (category -1) are their own class: never right.
    p = np.where(p < 0, k, p)
    t = np.where(t < 0, k + 1, t)
    k += 2
    tp = np.bincount(t[p == t], minlength=k).astype(np.float64)
    pc = np.bincount(p, minlength=k).astype(np.float64)
    tc = np.bincount(t, minlength=k).astype(np.float64)
    present = (pc + tc) > 0
    denom = pc + tc
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1[present].mean())


class _State:
    """One (model, version): its window, checks, confirmation and label figures."""

    def __init__(self, settings: PerformanceSettings) -> None:
        self.s = settings
        self.window = _Window(settings.window_size)
        self.labelled = 0
        self.next_check = settings.check_every
        self.hist: deque[bool] = deque(maxlen=settings.confirm_n)
        self.degraded = False
        self.delays: deque[float] = deque(maxlen=DELAYS_KEPT)
        self.predictions = 0
        self.last: dict[str, float] = {}
        self.checks = 0
        #: ``P(X >= k)`` for k = 0..window_size at the reference bound (built at first use).
        self.sf_table: npt.NDArray[np.float64] | None = None


class PerformanceTracker:
    """Rolling performance per (model, version) from joined truth; see the module docstring."""

    def __init__(self, reference_hash: str = "", feature: str = "") -> None:
        self.reference_hash = reference_hash
        #: The output field the truth is compared on (events' ``feature``).
        self.feature = feature
        self.states: dict[Key, _State] = {}

    def add_model(self, key: Key, settings: PerformanceSettings) -> None:
        """Track ``key`` (model, version) with ``settings``; fresh state if it was tracked."""
        self.states[key] = _State(settings)

    def predictions(self, key: Key, n: int) -> None:
        """``n`` more predictions of ``key`` were indexed (the coverage denominator)."""
        st = self.states.get(key)
        if st is not None:
            st.predictions += n

    def update(
        self,
        key: Key,
        pred: npt.NDArray[np.float64],
        truth: npt.NDArray[np.float64],
        delay_s: npt.NDArray[np.float64],
        t: float,
    ) -> list[PerfEvent]:
        """Add joined (prediction, truth) pairs of ``key`` in label order; returns events.

        Pairs with a NaN prediction or truth are ignored (counted by the caller).
        ``t`` (seconds since the epoch) stamps the events.
        """
        st = self.states.get(key)
        if st is None or not len(pred):
            return []
        st.delays.extend(delay_s.tolist())
        events: list[PerfEvent] = []
        start = 0
        n = len(pred)
        # Feed up to each check boundary, check there: the same events whatever the slicing.
        while start < n:
            take = min(n - start, st.next_check - st.labelled)
            st.window.push(pred[start : start + take], truth[start : start + take])
            st.labelled += take
            start += take
            if st.labelled >= st.next_check:
                st.next_check += st.s.check_every
                ev = self._check(key, st, t)
                if ev is not None:
                    events.append(ev)
        return events

    def _metrics(self, st: _State, full: bool = True) -> dict[str, float]:
        """The window's figures; ``full=False`` (a check) skips macro-F1."""
        pred, truth = st.window.values()
        n = len(pred)
        if st.s.task == "classification":
            errors = int(np.count_nonzero(pred != truth))
            m = {"n": n, "errors": errors, "accuracy": 1.0 - errors / n if n else math.nan}
            if full:
                m["macro_f1"] = macro_f1(pred, truth, st.s.n_classes)
            return m
        err = pred - truth
        ae = np.abs(err)
        return {
            "n": n,
            "mae": float(ae.mean()) if n else math.nan,
            "rmse": float(math.sqrt(float((err * err).mean()))) if n else math.nan,
            "ae_sd": float(ae.std(ddof=1)) if n > 1 else math.nan,
        }

    def _p_value(self, st: _State, m: dict[str, float]) -> float:
        """p-value of 'the window is no worse than the reference bound' (small: worse)."""
        n = int(m["n"])
        s = st.s
        if s.task == "classification":
            if n == s.window_size:  # a full window: one table for every error count
                if st.sf_table is None:
                    st.sf_table = binom_sf_table(n, 1.0 - s.bound)
                return float(st.sf_table[int(m["errors"])])
            return binom_sf(int(m["errors"]), n, 1.0 - s.bound)
        sd = m["ae_sd"]
        if not sd > 0:
            return 1.0 if m["mae"] <= s.bound else 0.0
        return normal_sf((m["mae"] - s.bound) / (sd / math.sqrt(n)))

    def _check(self, key: Key, st: _State, t: float) -> PerfEvent | None:
        if st.window.n < min(st.s.min_labels, st.s.window_size):
            return None
        m = self._metrics(st, full=False)
        p = self._p_value(st, m)
        st.checks += 1
        st.last = {**m, "p_value": p}
        s = st.s
        if not st.degraded:
            st.hist.append(p < s.alpha)
            if sum(st.hist) >= s.confirm_m:
                st.degraded = True
                st.hist.clear()
                return self._event(key, st, m, p, "performance_degraded", t)
        else:
            st.hist.append(p > s.recover_p)
            if sum(st.hist) >= s.confirm_m:
                st.degraded = False
                st.hist.clear()
                return self._event(key, st, m, p, "performance_recovered", t)
        return None

    def _event(
        self, key: Key, st: _State, m: dict[str, float], p: float, state: str, t: float
    ) -> PerfEvent:
        s = st.s
        n = int(m["n"])
        fig = self.labels(key)
        return PerfEvent(
            t=t,
            feature=self.feature,
            test=s.metric,
            statistic=float(m[s.metric]),
            p_value=p,
            threshold=s.bound,
            correction=f"{s.confirm_m}of{s.confirm_n}",
            window_size=n,
            n_ref=0,
            state=state,
            seq_first=st.labelled - n,
            seq_last=st.labelled - 1,
            reference_hash=self.reference_hash,
            n_eff=float(n),
            model=key[0],
            model_version=key[1],
            coverage=fig["coverage"],
            label_delay_s=fig["median_delay_s"],
            errors=int(m.get("errors", -1)),
        )

    def labels(self, key: Key) -> dict[str, float]:
        """Coverage (labelled / predictions) and the median label delay of ``key``."""
        st = self.states[key]
        return {
            "coverage": st.labelled / st.predictions if st.predictions else math.nan,
            "median_delay_s": float(np.median(np.fromiter(st.delays, np.float64)))
            if st.delays
            else math.nan,
        }

    def summary(self, key: Key) -> dict[str, Any]:
        """Status figures of ``key``: state, window metrics, labels, coverage, delay."""
        st = self.states[key]
        m = self._metrics(st) if st.window.n else {}
        out: dict[str, Any] = {
            "task": st.s.task,
            "state": "degraded" if st.degraded else "ok",
            "metric": st.s.metric,
            "reference": st.s.reference,
            "bound": st.s.bound,
            "labelled": st.labelled,
            "predictions": st.predictions,
            "window": st.window.n,
            "checks": st.checks,
            "p_value": st.last.get("p_value", math.nan),
            **{k: v for k, v in m.items() if k not in ("n", "ae_sd")},
            **self.labels(key),
        }
        return out

    def summary_event(self, key: Key, t: float) -> PerfEvent | None:
        """A periodic ``performance`` event with the window's figures (None before any label)."""
        st = self.states[key]
        if not st.window.n:
            return None
        m = self._metrics(st)
        p = self._p_value(st, m)
        return self._event(key, st, m, p, "performance", t)

    def keys(self) -> list[Hashable]:
        """The tracked (model, version) keys."""
        return list(self.states)


class ModelPerformance:
    """One (model, version): the prediction index, the join and the tracker, fed lane records.

    ``feed`` takes the columns of a lane slice (kinds, ids, times, the target
    output's values): records carrying outputs (``pair``, ``output``) are
    indexed as predictions, ``feedback`` records are joined to them.
    """

    def __init__(
        self,
        key: Key,
        settings: PerformanceSettings,
        *,
        index_size: int,
        feature: str,
        reference_hash: str = "",
        truth_wait_seconds: float = 60.0,
        column: int = 0,
    ) -> None:
        from edge_actors.records import KIND_FEEDBACK, KIND_OUTPUT, KIND_PAIR

        self.key = key
        #: The target output's column in a lane record's values (inputs come first).
        self.column = column
        self.index = PredictionIndex(index_size)
        self.tracker = PerformanceTracker(reference_hash, feature)
        self.tracker.add_model(key, settings)
        self.truth_wait_ns = int(truth_wait_seconds * 1e9)
        self._pred_kinds = np.array([KIND_PAIR, KIND_OUTPUT], np.int64)
        self._feedback = KIND_FEEDBACK
        self.counts: dict[str, int] = {"missing_prediction": 0, "missing_truth": 0}

    def feed(
        self,
        kinds: npt.NDArray[np.int64],
        ids: npt.NDArray[np.int64],
        t_ns: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
    ) -> list[PerfEvent]:
        """Index predictions and join feedback of one lane slice, in record order per kind.

        Fed in pieces of :data:`FEED_PIECE` records, so an event's coverage
        does not depend on how much of the lane the worker read at once.
        """
        events: list[PerfEvent] = []
        for i in range(0, len(kinds), FEED_PIECE):
            j = i + FEED_PIECE
            events += self._feed(kinds[i:j], ids[i:j], t_ns[i:j], values[i:j])
        return events

    def _feed(
        self,
        kinds: npt.NDArray[np.int64],
        ids: npt.NDArray[np.int64],
        t_ns: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
    ) -> list[PerfEvent]:
        is_fb = kinds == self._feedback
        is_pred = np.isin(kinds, self._pred_kinds)
        joins: list[tuple[int, int, float, float]] = []
        delay = np.zeros(0)
        pred = truth = np.zeros(0)
        if is_pred.any():
            v = values[is_pred]
            ok = ~np.isnan(v)
            self.counts["missing_prediction"] += int(len(v) - ok.sum())
            if ok.any():
                self.tracker.predictions(self.key, int(ok.sum()))
                joins += self.index.add(ids[is_pred][ok], t_ns[is_pred][ok], v[ok])
        if is_fb.any():
            v = values[is_fb]
            ok = ~np.isnan(v)
            self.counts["missing_truth"] += int(len(v) - ok.sum())
            _, d, pred, truth = self.index.take_many(ids[is_fb][ok], t_ns[is_fb][ok], v[ok])
            delay = d.astype(np.float64)
            self.index.expire_waiting(int(t_ns[is_fb].max()), self.truth_wait_ns)
        if joins:  # truth that waited for its prediction first (label order)
            arr = np.array([j[1:] for j in joins], np.float64)
            delay = np.concatenate([arr[:, 0], delay])
            pred = np.concatenate([arr[:, 1], pred])
            truth = np.concatenate([arr[:, 2], truth])
        if not len(pred):
            return []
        t_last = float(t_ns.max()) / 1e9
        return self.tracker.update(self.key, pred, truth, delay / 1e9, t_last)

    def summary(self) -> dict[str, Any]:
        """Status figures: the tracker's, plus the join's counters by reason."""
        return {
            **self.tracker.summary(self.key),
            "index_size": self.index.capacity,
            "index_bytes": self.index.nbytes(),
            "truth_waiting": len(self.index.waiting),
            "dropped": {
                **{k: v for k, v in self.index.counts.items() if k != "predictions"},
                **self.counts,
            },
        }

    def summary_event(self, t: float) -> PerfEvent | None:
        """The periodic ``performance`` event (None before any label)."""
        return self.tracker.summary_event(self.key, t)
