"""CPU cost of drift detection per record; prints ONE JSON object.

    python benchmarks/drift_cpu.py [--records N] [--batch B] [--repeat R] [--decimals D]

The drift worker's share of issue 17's stream (10,000 predictions/s, 8
inputs + 1 output): two detectors with the shipped settings, 8 numeric
features and 1, references of 10,000 rows, fed ``--batch`` records at a time
(500: what the worker reads per 50 ms step at 10 k/s) after the windows are
full. The reference values are rounded to ``--decimals`` (6, as box_cost.py's
JSON reference: a few values then occur twice, as in most real references;
-1: not rounded, no ties). Reports process CPU microseconds per record (best of ``--repeat``) and
the share of one core this costs at 10,000 records/s. To compare two
versions, run this file from both trees in the same session.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from agentlib import machine

from edge_actors.drift.detector import DriftDetector, DriftSettings


def _detector(rng: np.random.Generator, k: int, decimals: int = 6) -> DriftDetector:
    # As the worker builds them: sorted reference samples, their NaN rate passed along.
    def ref() -> Any:
        x = rng.normal(size=10_000)
        return np.sort(x if decimals < 0 else x.round(decimals))

    feats: list[tuple[str, Any, Any]] = [(f"f{i}", "numeric", ref()) for i in range(k)]
    return DriftDetector(feats, DriftSettings(), nan_rates={f"f{i}": 0.0 for i in range(k)})


def run(records: int, batch: int, seed: int = 1, decimals: int = 6) -> float:
    """CPU seconds per record of feeding ``records`` records after a 20,000-record warm-up."""
    rng = np.random.default_rng(seed)
    d_in, d_out = _detector(rng, 8, decimals), _detector(rng, 1, decimals)
    x = rng.normal(size=(20_000 + records, 9))
    d_in.update(x[:20_000, :8], 0)
    d_out.update(x[:20_000, 8:], 0)
    t0 = time.process_time()
    for s in range(20_000, 20_000 + records, batch):
        d_in.update(x[s : s + batch, :8], s)
        d_out.update(x[s : s + batch, 8:], s)
    return (time.process_time() - t0) / records


def main() -> None:
    """Measure and print one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--decimals", type=int, default=6, help="round the references (-1: no)")
    args = ap.parse_args()
    best = min(run(args.records, args.batch, decimals=args.decimals) for _ in range(args.repeat))
    print(
        json.dumps(
            {
                "benchmark": "drift_cpu",
                "records": args.records,
                "batch": args.batch,
                "features": "8 inputs + 1 output",
                "reference_decimals": args.decimals,
                "cpu_us_per_record": round(best * 1e6, 3),
                "core_share_at_10k_per_s": round(best * 10_000, 4),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
