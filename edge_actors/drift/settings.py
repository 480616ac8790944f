"""The drift detector's settings: one frozen object, built from the config.

:class:`DriftSettings` is what a :class:`~edge_actors.drift.detector.DriftDetector`
runs with. Its defaults are :mod:`edge_actors.drift.defaults`, the same
constants the ``drift_detection`` config section takes its defaults from, so
``DriftSettings()`` is the shipped configuration; :meth:`DriftSettings.from_config`
builds it from a loaded section (what the worker and the benchmarks run). It
holds no state: the detector's runtime cadence (``check_frequency`` set at
runtime, stretched when falling behind) lives in the detector.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from edge_actors.drift import defaults as D
from edge_actors.drift.corrections import Correction

if TYPE_CHECKING:
    from edge_actors.config import DriftConfig

__all__ = ["DriftSettings", "Mode"]

Mode = Literal["calibrated", "per_check"]
# Lookups rather than casts: a value outside them is refused with its key's name.
_MODES: dict[str, Mode] = {"calibrated": "calibrated", "per_check": "per_check"}
_CORRECTIONS: dict[str, Correction] = {"bonferroni": "bonferroni", "bh": "bh", "none": "none"}


@dataclass(frozen=True)
class DriftSettings:
    """How a drift detector tests; see :mod:`edge_actors.drift.detector` for the meaning.

    Attributes:
        window_size: short window, records.
        long_window_size: long window, records (0 disables it).
        check_frequency: records between checks of the short window.
        mode: ``'calibrated'`` or ``'per_check'``.
        threshold: p-value threshold of per_check mode (before correction).
        erfa: expected records to a false alarm over all features (calibrated mode).
        min_statistic: effect-size floor on KS D (calibrated mode).
        confirm_m: exceedances needed among the last ``confirm_n`` checks.
        confirm_n: window of the confirmation, and clean checks needed to resolve.
        correction: ``'bonferroni'``, ``'bh'`` or ``'none'``.
        nan_rate_threshold: alarm when the NaN rate exceeds the reference's by this.
        out_of_range_threshold: alarm when this share of values is outside the reference range.
        min_expected_count: chi-squared buckets below this expected count are pooled.
        unknown_category_threshold: alarm when the share of unknown categories
            exceeds the reference's by this.
        quality_hysteresis: data-quality alarms resolve below ``threshold * (1 - this)``.
        worsened_factor: effect growth that emits ``drift_worsened`` (0: never).
        autocorrelation: test with the effective sample size of dependent records.
        discrete_max_values: numeric features with at most this many distinct
            reference values are tested with chi-squared on them (0: never).
        atom_min_share: other numeric features whose most frequent reference
            value holds at least this share are tested in two parts, that
            value's share (chi-squared) and KS on the other values (0: never).
        long_check_frequency: records between long-window checks (``None``:
            ``max(check_frequency, long_window_size / 10)`` rounded up to a
            multiple of ``check_frequency``; see :attr:`long_cadence`).
    """

    window_size: int = D.WINDOW_SIZE
    long_window_size: int = D.LONG_WINDOW_SIZE
    check_frequency: int = D.CHECK_FREQUENCY
    mode: Mode = D.MODE
    threshold: float = D.THRESHOLD
    erfa: float = D.EXPECTED_RECORDS_TO_FALSE_ALARM
    min_statistic: float = D.MIN_STATISTIC
    confirm_m: int = D.CONFIRM_M
    confirm_n: int = D.CONFIRM_N
    correction: Correction = D.CORRECTION
    nan_rate_threshold: float = D.NAN_RATE_THRESHOLD
    out_of_range_threshold: float = D.OUT_OF_RANGE_THRESHOLD
    min_expected_count: float = D.MIN_EXPECTED_COUNT
    unknown_category_threshold: float = D.UNKNOWN_CATEGORY_THRESHOLD
    quality_hysteresis: float = D.QUALITY_HYSTERESIS
    worsened_factor: float = D.WORSENED_FACTOR
    autocorrelation: bool = D.AUTOCORRELATION
    discrete_max_values: int = D.DISCRETE_MAX_VALUES
    atom_min_share: float = D.ATOM_MIN_SHARE
    long_check_frequency: int | None = None

    def __post_init__(self) -> None:
        if self.window_size <= 0 or self.check_frequency <= 0 or self.long_window_size < 0:
            raise ValueError("window_size and check_frequency must be > 0")
        if 0 < self.long_window_size <= self.window_size:
            raise ValueError("long_window_size must exceed window_size (or be 0)")
        if not 1 <= self.confirm_m <= self.confirm_n:
            raise ValueError(
                f"need 1 <= confirm_m <= confirm_n, got {self.confirm_m}, {self.confirm_n}"
            )
        if self.mode not in _MODES:
            raise ValueError(f"unknown mode {self.mode!r}")
        if self.correction not in _CORRECTIONS:
            raise ValueError(f"unknown correction {self.correction!r}")
        if not 0.0 <= self.quality_hysteresis < 1.0:
            raise ValueError(f"quality_hysteresis must be in [0, 1), got {self.quality_hysteresis}")
        if not 0.0 <= self.atom_min_share <= 1.0:
            raise ValueError(f"atom_min_share must be in [0, 1], got {self.atom_min_share}")
        if self.long_check_frequency is not None and self.long_check_frequency <= 0:
            raise ValueError(f"long_check_frequency must be > 0, got {self.long_check_frequency}")

    @property
    def long_cadence(self) -> int:
        """Records between long-window checks (:attr:`long_check_frequency` or its default)."""
        if self.long_check_frequency is not None:
            return self.long_check_frequency
        # The long window sees small shifts, which need many records: checking it
        # as often as the short one would cost 10x for little gain in delay.
        c = self.check_frequency
        base = max(c, self.long_window_size // 10)
        return -(-base // c) * c

    def replace(self, **changes: Any) -> DriftSettings:
        """A copy with some settings changed (validated like a new object)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_config(cls, dc: DriftConfig) -> DriftSettings:
        """The settings of a ``drift_detection`` config section.

        Raises:
            ValueError: ``mode`` or ``correction`` outside the values the detector knows
                (the config loader refuses them first; this guards hand-built configs).
        """
        mode = _MODES.get(dc.mode)
        if mode is None:
            raise ValueError(f"drift_detection.mode: unknown mode {dc.mode!r}")
        correction = _CORRECTIONS.get(dc.correction)
        if correction is None:
            raise ValueError(f"drift_detection.correction: unknown correction {dc.correction!r}")
        return cls(
            window_size=dc.window_size,
            long_window_size=dc.long_window_size,
            check_frequency=dc.check_frequency,
            mode=mode,
            threshold=dc.threshold,
            erfa=float(dc.expected_records_to_false_alarm),
            min_statistic=dc.min_statistic,
            confirm_m=dc.confirm_m,
            confirm_n=dc.confirm_n,
            correction=correction,
            nan_rate_threshold=dc.nan_rate_threshold,
            out_of_range_threshold=dc.out_of_range_threshold,
            min_expected_count=dc.min_expected_count,
            unknown_category_threshold=dc.unknown_category_threshold,
            quality_hysteresis=dc.quality_hysteresis,
            worsened_factor=dc.worsened_factor,
            autocorrelation=dc.autocorrelation,
            discrete_max_values=dc.discrete_max_values,
            atom_min_share=dc.atom_min_share,
        )
