"""Detection results are pinned: the same stream and seed give the same events.

``tests/data/drift_golden_events.json`` holds the events the detector emitted
on this stream before its windows were made incremental (issue 17); any
change of the statistics' arithmetic, of the cadences or of the state machines
shows up here. Regenerate it only for a deliberate change of detection:
``python tests/test_drift_golden.py --write``.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_actors.drift.detector import DriftDetector, DriftSettings, FeatureKind

GOLDEN = Path(__file__).parent / "data" / "drift_golden_events.json"


def _stream() -> tuple[list[tuple[str, FeatureKind, Any]], np.ndarray]:
    """Eight features of every kind the detector knows, with changes at known places."""
    rng = np.random.default_rng(20261129)
    n = 60_000
    ref_nan = rng.normal(size=10_000)
    ref_nan[rng.random(10_000) < 0.1] = np.nan
    atom_ref = rng.normal(3.0, 1.0, 10_000)
    atom_ref[rng.random(10_000) < 0.9] = 0.0
    feats: list[tuple[str, FeatureKind, Any]] = [
        ("iid", "numeric", rng.normal(size=10_000)),
        ("shift", "numeric", rng.normal(size=10_000)),
        ("slow", "numeric", rng.normal(size=5_000)),
        ("nan", "numeric", ref_nan),
        ("atom", "numeric", atom_ref),
        ("count", "numeric", rng.choice(4, p=[0.4, 0.3, 0.2, 0.1], size=10_000).astype(float)),
        ("cat", "categorical", {0: 5000.0, 1: 3000.0, 2: 2000.0}),
        ("ar", "numeric", rng.normal(size=10_000)),
    ]
    x = np.empty((n, len(feats)))
    x[:, 0] = rng.normal(size=n)
    x[:, 1] = rng.normal(size=n)
    x[20_000:35_000, 1] += 0.6  # starts, worsens below, then resolves
    x[26_000:35_000, 1] += 0.6
    x[:, 2] = rng.normal(size=n) + np.linspace(0.0, 0.3, n)  # slow drift: the long window
    x[:, 3] = rng.normal(size=n)
    x[:, 3][rng.random(n) < np.where(np.arange(n) < 40_000, 0.1, 0.35)] = np.nan
    x[:, 4] = rng.normal(3.0, 1.0, n)
    x[:, 4][rng.random(n) < np.where(np.arange(n) < 30_000, 0.9, 0.84)] = 0.0
    x[:, 5] = rng.choice(4, p=[0.4, 0.3, 0.2, 0.1], size=n)
    x[45_000:, 5] = rng.choice(4, p=[0.3, 0.3, 0.25, 0.15], size=n - 45_000)
    x[:, 6] = rng.choice(3, p=[0.5, 0.3, 0.2], size=n)
    x[50_000:, 6] = rng.choice([0, 1, 2, -1], p=[0.45, 0.3, 0.2, 0.05], size=n - 50_000)
    e = rng.normal(size=n) * math.sqrt(1 - 0.8**2)
    ar = np.empty(n)
    ar[0] = rng.normal()
    for i in range(1, n):
        ar[i] = 0.8 * ar[i - 1] + e[i]
    x[:, 7] = ar
    x[:, 7][40_000:45_000] = 25.0  # out of range
    return feats, x


def run_stream() -> list[dict[str, Any]]:
    """The events of the shipped settings and of per_check mode on the stream (uneven batches)."""
    feats, x = _stream()
    n_all = x.shape[0]
    out: list[dict[str, Any]] = []
    for label, settings, n in (
        ("shipped", DriftSettings(), x.shape[0]),
        (
            "short_only",
            DriftSettings(long_window_size=0, check_frequency=50, window_size=500),
            n_all,
        ),
        # per_check alarms at most checks once anything drifts: a shorter stream.
        ("per_check", DriftSettings(mode="per_check", long_window_size=0), 24_000),
    ):
        clock = itertools.count(1.0)
        det = DriftDetector(feats, settings, reference_hash="golden", clock=clock.__next__)
        sizes = itertools.cycle([337, 1, 4096, 100, 999, 25_000, 7])
        s = 0
        while s < n:
            b = next(sizes)
            for ev in det.update(x[s : min(s + b, n)], s):
                out.append({"run": label, **ev.to_dict()})
            s += b
        for item in det.summary():
            out.append({"run": label, "summary": item})
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(p, q) for p, q in zip(a, b, strict=True))
    return bool(a == b)


def test_same_stream_same_events() -> None:
    want = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(run_stream()))
    assert [e.get("state") for e in got] == [e.get("state") for e in want]
    for g, w in zip(got, want, strict=True):
        assert _same(g, w), (g, w)
    # The stream exercises what it claims to.
    states = {(e["run"], e.get("feature"), e.get("test"), e.get("state")) for e in want}
    for needed in [
        ("shipped", "shift", "ks", "drift_started"),
        ("shipped", "shift", "ks", "drift_worsened"),
        ("shipped", "shift", "ks", "drift_resolved"),
        ("shipped", "nan", "nan_rate", "drift_started"),
        ("shipped", "ar", "out_of_range", "drift_started"),
        ("shipped", "atom", "atom_share", "drift_started"),
        ("shipped", "count", "chi2", "drift_started"),
        ("shipped", "cat", "unknown_category", "drift_started"),
        ("per_check", "shift", "ks", "drift_started"),
    ]:
        assert needed in states, needed


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps(run_stream(), indent=0, sort_keys=True) + "\n")
