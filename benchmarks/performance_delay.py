"""Detection delay of ``performance_degraded`` on late, partial labels; prints ONE JSON object.

    python benchmarks/performance_delay.py [--runs 25] [--seed 0]

Drives the pure join + tracker (``edge_actors.drift.performance.ModelPerformance``,
the code the drift worker runs) with simulated timestamps, no sleeps: a
5-class classifier logs 100 predictions/s; truth comes for 20 % of them,
1-60 s (uniform) after the prediction, as ``feedback`` records in arrival
order, fed in slices of 500 records like lane reads. Accuracy is 0.90 for
the first 20,000 predictions (the reference accuracy, 0.90, in the settings),
then 0.80. Per run: labelled records whose prediction came after the change,
joined before ``performance_degraded`` (the number the issue asks for), and
the seconds of simulated time from the change to the event. Reports the
median and the 10th/90th percentiles over ``--runs`` seeds, plus the shipped
settings (window, check cadence, alpha).

A baseline in the same run: the same stream without the change must raise
nothing (``false_alarms`` over all runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

import numpy as np

from edge_actors.drift.performance import ModelPerformance, PerformanceSettings
from edge_actors.records import KIND_FEEDBACK, KIND_PAIR

RATE = 100.0
N_BEFORE = 20_000
N_AFTER = 20_000
LABEL_SHARE = 0.2
CLASSES = 5
SLICE = 500


def stream(
    rng: np.random.Generator, acc_after: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Records in arrival order: kinds, ids, t_ns, values; and the change time (s)."""
    n = N_BEFORE + N_AFTER
    t = np.arange(n) / RATE
    acc = np.where(np.arange(n) < N_BEFORE, 0.90, acc_after)
    truth = rng.integers(0, CLASSES, n)
    wrong = rng.random(n) >= acc
    other = (truth + rng.integers(1, CLASSES, n)) % CLASSES
    pred = np.where(wrong, other, truth)
    labelled = rng.random(n) < LABEL_SHARE
    lt = t[labelled] + rng.uniform(1.0, 60.0, int(labelled.sum()))
    ids = np.arange(n, dtype=np.int64) + (7 << 40)
    kinds = np.concatenate([np.full(n, KIND_PAIR), np.full(len(lt), KIND_FEEDBACK)])
    all_ids = np.concatenate([ids, ids[labelled]])
    times = np.concatenate([t, lt])
    values = np.concatenate([pred, truth[labelled]]).astype(np.float64)
    order = np.argsort(times, kind="stable")
    t_ns = (times[order] * 1e9).astype(np.int64) + 1_700_000_000 * 10**9
    return kinds[order], all_ids[order], t_ns, values[order], N_BEFORE / RATE


def run(seed: int, acc_after: float, window: int = 0) -> dict[str, Any]:
    """One simulated run: when (labels, seconds) the first degraded event came, if any."""
    rng = np.random.default_rng(seed)
    kinds, ids, t_ns, values, change_s = stream(rng, acc_after)
    settings = _settings(window)
    mp = ModelPerformance(("clf", "1"), settings, index_size=65536, feature="label")
    base_ns = 1_700_000_000 * 10**9
    for a in range(0, len(kinds), SLICE):
        b = a + SLICE
        evs = mp.feed(kinds[a:b], ids[a:b], t_ns[a:b], values[a:b])
        for e in evs:
            if e.state == "performance_degraded":
                # Labels joined so far whose prediction came after the change.
                fb = (kinds[:b] == KIND_FEEDBACK) & (ids[:b] - (7 << 40) >= N_BEFORE)
                return {
                    "labels_after_change": int(fb.sum()),
                    "seconds_after_change": (e.t - base_ns / 1e9) - change_s,
                    "event": e.to_dict(),
                }
    return {"labels_after_change": None, "seconds_after_change": None}


def pct(xs: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``xs`` (None when empty)."""
    return float(np.percentile(xs, q)) if xs else None


def _settings(window: int) -> PerformanceSettings:
    s = PerformanceSettings("classification", 0.90, n_classes=CLASSES)
    return s if not window else dataclasses.replace(s, window_size=window)


def feed_cost(seed: int = 0, slices: int = 40, n: int = 20_000) -> dict[str, float]:
    """CPU per lane record of the join + tracker, against a baseline in the same run.

    A slice of ``n`` records like the drift worker reads at full speed: 5/6
    predictions, 1/6 truth for predictions of the slice before. The baseline
    is the cheapest thing any per-record index must do: a dict update of the
    slice's ids (``dict.update(zip(ids.tolist(), ...))``).
    """
    import time

    rng = np.random.default_rng(seed)
    mp = ModelPerformance(("m", ""), _settings(0), index_size=32768, feature="label")
    m = n * 5 // 6
    batches = []
    for k in range(1, slices + 1):
        ids = np.arange(k * n, k * n + m, dtype=np.int64)
        fb = rng.choice(np.arange((k - 1) * n, (k - 1) * n + m), n - m, replace=False)
        kinds = np.r_[np.full(m, KIND_PAIR), np.full(n - m, KIND_FEEDBACK)]
        all_ids = np.r_[ids, fb]
        batches.append((kinds, all_ids, all_ids * 1000, rng.integers(0, CLASSES, n).astype(float)))
    t0 = time.process_time()
    for b in batches:
        mp.feed(*b)
    feed = time.process_time() - t0
    t0 = time.process_time()
    d: dict[int, int] = {}
    for _, ids, _, _ in batches:
        d.update(zip(ids.tolist(), range(len(ids)), strict=True))
    base = time.process_time() - t0
    total = slices * n
    return {
        "feed_us_per_record": feed / total * 1e6,
        "baseline_dict_update_us_per_record": base / total * 1e6,
        "ratio": feed / base if base else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=0, help="window_size (0: the default)")
    args = ap.parse_args(argv)
    labels, secs, missed = [], [], 0
    example: dict[str, Any] = {}
    for k in range(args.runs):
        r = run(args.seed + k, 0.80, args.window)
        if r["labels_after_change"] is None:
            missed += 1
            continue
        labels.append(r["labels_after_change"])
        secs.append(r["seconds_after_change"])
        example = r["event"]
    false_alarms = sum(
        run(10_000 + args.seed + k, 0.90, args.window)["labels_after_change"] is not None
        for k in range(args.runs)
    )
    s = _settings(args.window)
    out = {
        "benchmark": "performance_delay",
        "runs": args.runs,
        "setup": {
            "rate_per_s": RATE,
            "label_share": LABEL_SHARE,
            "label_delay_s": [1, 60],
            "accuracy": [0.90, 0.80],
            "reference_accuracy": 0.90,
            "classes": CLASSES,
            "window_size": s.window_size,
            "check_every": s.check_every,
            "alpha": s.alpha,
            "confirm": f"{s.confirm_m} of {s.confirm_n}",
        },
        "labels_to_detect": {
            "median": pct(labels, 50),
            "p10": pct(labels, 10),
            "p90": pct(labels, 90),
            "max": max(labels) if labels else None,
        },
        "seconds_to_detect": {"median": pct(secs, 50), "p10": pct(secs, 10), "p90": pct(secs, 90)},
        "missed": missed,
        "false_alarms_without_change": false_alarms,
        "cost": feed_cost(args.seed),
        "example_event": {
            k: example.get(k)
            for k in (
                "statistic",
                "threshold",
                "p_value",
                "window_size",
                "errors",
                "coverage",
                "label_delay_s",
                "correction",
            )
        },
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
