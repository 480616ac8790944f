"""Drift statistics benchmark; prints ONE JSON object.

Figures: ms per KS check (window 1000 vs reference 10,000) for our
searchsorted statistic (and the exact p-value) against ``scipy.stats.ks_2samp``;
detector throughput (8 features + 1 output, the shipped config's
``drift_detection`` settings, as every detector here); false
``drift_started`` counts on stationary data in calibrated and per_check mode;
median detection delays of 0.5 sd and 0.2 sd mean shifts over 20 seeds.

Usage: ``python benchmarks/drift_stats.py [--records N] [--per-check-records N] [--seeds N]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_actors.config import load_config
from edge_actors.drift.detector import DriftDetector
from edge_actors.drift.ks import KSChecker, KSReference, ks_pvalue
from edge_actors.drift.settings import DriftSettings

#: What users run: the detector settings of the shipped config.
SHIPPED = DriftSettings.from_config(
    load_config(Path(__file__).resolve().parent.parent / "configs" / "default.yaml").drift_detection
)


def _per_call(fn: Any, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1e3


def _features(rng: np.random.Generator, k: int = 9) -> list[tuple[str, Any, Any]]:
    return [(f"f{i}", "numeric", rng.normal(size=10000)) for i in range(k)]


def _stationary(mode: str, records: int, seed: int, batch: int = 20_000) -> tuple[int, float]:
    rng = np.random.default_rng(seed)
    det = DriftDetector(_features(rng), SHIPPED.replace(mode=mode))
    started = 0
    t0 = time.perf_counter()
    for s in range(0, records, batch):
        n = min(batch, records - s)
        started += sum(
            e.state == "drift_started" and e.test == "ks"
            for e in det.update(rng.normal(size=(n, 9)), s)
        )
    return started, records / (time.perf_counter() - t0)


def _delay(shift: float, seed: int, limit: int = 30_000) -> int | None:
    rng = np.random.default_rng(1000 + seed)
    det = DriftDetector(_features(rng), SHIPPED)
    det.update(rng.normal(size=(20_000, 9)), 0)
    for s in range(20_000, 20_000 + limit, 100):
        x = rng.normal(size=(100, 9))
        x[:, 0] += shift
        for e in det.update(x, s):
            if e.state == "drift_started" and e.feature == "f0":
                return e.seq_last - 20_000 + 1
    return None


def main() -> None:
    """Run the benchmark and print one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--per-check-records", type=int, default=200_000)
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    ref = rng.normal(size=10_000)
    window = rng.normal(size=1000)
    checker = KSChecker(KSReference(ref), 1000)
    ours_ms = _per_call(lambda: checker.statistic(window), 2000)
    d = checker.statistic(window)
    pvalue_ms = _per_call(lambda: ks_pvalue(d, 1000, 10_000), 20)
    t0 = time.perf_counter()
    from scipy import stats

    scipy_import_s = time.perf_counter() - t0
    scipy_ms = _per_call(lambda: stats.ks_2samp(window, ref), 200)

    calibrated, throughput = _stationary("calibrated", args.records, seed=1)
    per_check, _ = _stationary("per_check", args.per_check_records, seed=1)

    out: dict[str, Any] = {
        "ks_check_ms_w1000_nref10000": round(ours_ms, 4),
        "ks_exact_pvalue_ms": round(pvalue_ms, 2),
        "scipy_ks_2samp_ms": round(scipy_ms, 4),
        "scipy_over_ours_ratio": round(scipy_ms / ours_ms, 1),
        "scipy_stats_import_s": round(scipy_import_s, 3),
        "detector_records_per_s_9_features_cadence_100": round(throughput),
        "stationary_records": args.records,
        "false_drift_started_calibrated": calibrated,
        "per_check_records": args.per_check_records,
        "false_drift_started_per_check": per_check,
        "false_drift_started_per_check_per_million": round(
            per_check * 1e6 / args.per_check_records
        ),
    }
    for shift in (0.5, 0.2):
        delays = [_delay(shift, s) for s in range(args.seeds)]
        found = [x for x in delays if x is not None]
        out[f"median_delay_records_{shift}sd"] = statistics.median(found) if found else None
        out[f"max_delay_records_{shift}sd"] = max(found) if found else None
        out[f"missed_{shift}sd"] = len(delays) - len(found)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
