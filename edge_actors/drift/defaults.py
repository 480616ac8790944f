"""The drift detection defaults, in one place.

Both :class:`edge_actors.config.DriftConfig` (what users run) and
:class:`edge_actors.drift.detector.DriftDetector` (what tests and benchmarks
construct) take their defaults from here, so a figure measured with the
detector's defaults is a figure of the shipped configuration. Plain constants
only: the config module imports this without importing numpy.
"""

from __future__ import annotations

from typing import Final

#: Records in the recent (short) window.
WINDOW_SIZE = 1000
#: Records in the long window (0 disables it).
LONG_WINDOW_SIZE = 10000
#: Records between two checks of the short window.
CHECK_FREQUENCY = 100
#: ``calibrated`` or ``per_check``.
MODE: Final = "calibrated"
#: per_check mode: p-value threshold before correction.
THRESHOLD = 0.05
#: Calibrated mode: expected records to a false ``drift_started`` over all features.
EXPECTED_RECORDS_TO_FALSE_ALARM = 1_000_000
#: Calibrated mode: effect-size floor on KS D.
MIN_STATISTIC = 0.0
#: m of m-of-n confirmation.
CONFIRM_M = 2
#: n of m-of-n confirmation (and clean checks needed to resolve).
CONFIRM_N = 3
#: Multiple-testing correction across features.
CORRECTION: Final = "bonferroni"
#: NaN-rate alarm: rate above the reference's by this much.
NAN_RATE_THRESHOLD = 0.1
#: Out-of-range alarm: share of values outside the reference's min/max.
OUT_OF_RANGE_THRESHOLD = 0.1
#: Unknown-category alarm: share of values in categories the reference never saw
#: (above the reference's own share of them).
UNKNOWN_CATEGORY_THRESHOLD = 0.01
#: Data-quality alarms resolve only below ``threshold * (1 - hysteresis)`` (above the baseline).
QUALITY_HYSTERESIS = 0.5
#: ``drift_worsened`` when the effect size grows by this factor during an episode (0: never).
WORSENED_FACTOR = 1.5
#: Test with the effective sample size of autocorrelated windows.
AUTOCORRELATION = True
#: Numeric features whose reference has at most this many distinct values are
#: tested with chi-squared on those values (0: always KS).
DISCRETE_MAX_VALUES = 20
#: Other numeric features whose most frequent reference value holds at least
#: this share (0 in 90 % of rows, say) are tested in two parts: that value's
#: share and KS on the other values (0: always KS on the whole feature).
ATOM_MIN_SHARE = 0.1
#: Chi-squared buckets expected fewer times than this are pooled.
MIN_EXPECTED_COUNT = 5.0
#: Seconds between two drift summary records.
SUMMARY_INTERVAL_SECONDS = 60.0
#: Seconds between two checkpoints of the drift state while records flow.
CHECKPOINT_INTERVAL_SECONDS = 30.0
