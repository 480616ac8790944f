"""The detector's cheap paths give the very results of the per-feature path, to the last bit.

The drift worker's CPU per record comes from two shortcuts (issue 17): each
record's two reference ranks are kept as one rank key (``#ref <= v + #ref <
v``) decoded through lookup tables, and the plain KS features of a check are
evaluated together in 2-D arrays (``DriftDetector._evaluate_block``). These
tests pin both against the straightforward computations: ``searchsorted`` in
the reference, and the per-feature ``_evaluate`` on the same detector.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from edge_actors.drift.detector import DriftDetector, DriftSettings, FeatureKind
from edge_actors.drift.ks import KSChecker, KSReference


def _awkward_values(rng: np.random.Generator, ref: np.ndarray, n: int) -> np.ndarray:
    """Values between, on and outside the reference values, and NaN."""
    v = rng.normal(size=n) * 1.5
    on = rng.random(n) < 0.3
    v[on] = rng.choice(ref, size=int(on.sum()))
    v[rng.random(n) < 0.05] = ref[0] - 1.0
    v[rng.random(n) < 0.05] = ref[-1] + 1.0
    v[rng.random(n) < 0.02] = ref[0]
    v[rng.random(n) < 0.02] = ref[-1]
    v[rng.random(n) < 0.03] = np.nan
    return v


@pytest.mark.parametrize("ties", [False, True])
def test_rank_key_gives_both_ranks_back(ties: bool) -> None:
    rng = np.random.default_rng(7)
    ref = rng.normal(size=5000)
    if ties:  # blocks of equal values, one of them large
        ref = np.round(ref, 1)
        ref[:700] = 0.0
    ref = np.sort(ref)
    det = DriftDetector([("x", "numeric", ref)], DriftSettings(atom_min_share=0.0))
    f = det._features[0]
    assert f.ks is not None and f.right_of is not None and f.left_of is not None
    v = _awkward_values(rng, ref, 20_000)
    keys = f.keys(v)
    ok = ~np.isnan(v)
    right = np.searchsorted(ref, v[ok], side="right")
    left = np.searchsorted(ref, v[ok], side="left")
    assert np.array_equal(f.right_of[keys[ok]], right)
    assert np.array_equal(f.left_of[keys[ok]], left)
    assert np.all(keys[~ok] == f.key_nan)
    assert np.all(keys[ok] < f.key_nan)
    # Keys are monotone in the value, so sorted keys give both rank rows sorted.
    order = np.argsort(v[ok], kind="stable")
    assert np.all(np.diff(keys[ok][order]) >= 0)
    # And the statistic from them is the one from the values.
    chk = KSChecker(KSReference(ref, assume_sorted=True), 20_000)
    w = np.sort(v[ok][:1000])
    ks = np.sort(keys[ok][:1000])
    assert chk.statistic_ranks(f.right_of[ks], f.left_of[ks]) == chk.statistic_sorted(w)


def _features(rng: np.random.Generator) -> list[tuple[str, FeatureKind, Any]]:
    atom = rng.normal(size=10_000)
    atom[rng.random(10_000) < 0.5] = 0.0
    return [
        ("plain0", "numeric", rng.normal(size=10_000)),
        ("plain1", "numeric", rng.normal(size=4_000) * 3 + 1),
        ("ties", "numeric", np.round(rng.normal(size=10_000), 1)),
        ("atom", "numeric", atom),
        ("few", "numeric", rng.integers(0, 5, size=10_000).astype(float)),
        ("cat", "categorical", {0: 500.0, 1: 300.0, 2: 200.0}),
        ("plain2", "numeric", rng.exponential(size=10_000)),
        # A few hundred values held twice: windows hold one of them now and then.
        ("fewties", "numeric", np.round(rng.normal(size=10_000), 4)),
    ]


def _stream(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.empty((n, 8))
    e = rng.normal(size=n)
    ar = np.empty(n)  # autocorrelated: n_eff below the window size
    ar[0] = 0.0
    for t in range(1, n):
        ar[t] = 0.8 * ar[t - 1] + e[t]
    x[:, 0] = ar * 0.6
    x[:, 1] = rng.normal(size=n) * 3 + 1
    x[:, 2] = np.round(rng.normal(size=n), 1)
    x[:, 3] = np.where(rng.random(n) < 0.5, 0.0, rng.normal(size=n))
    x[:, 4] = rng.integers(0, 5, size=n)
    x[:, 5] = rng.integers(0, 4, size=n)
    x[:, 6] = rng.exponential(size=n)
    x[:, 7] = np.round(rng.normal(size=n), 4)
    x[n // 3 : n // 3 + 2500, 7] = np.round(rng.normal(size=2500), 6)  # none of them
    # A shift, out-of-range values and NaN bursts half way, then back.
    h = n // 2
    x[h : h + 3000, 0] += 0.7
    x[h : h + 2000, 6] = 50.0
    x[h + 500 : h + 1500, 1] = np.nan
    x[h + 800 : h + 900, 0] = np.nan
    return x


def _run(det: DriftDetector, x: np.ndarray, batches: list[int]) -> list[Any]:
    out: list[Any] = []
    s = 0
    for b in itertools.cycle(batches):
        if s >= x.shape[0]:
            break
        events = det.update(x[s : s + b], s)
        out.append([e.to_dict() for e in events])
        out.append([(dict(f.last), dict(f.last_long)) for f in det._features])
        s += b
    out.append(det.summary())
    return out


@pytest.mark.parametrize("autocorrelation", [True, False])
def test_block_evaluation_equals_per_feature_evaluation(
    monkeypatch: pytest.MonkeyPatch, autocorrelation: bool
) -> None:
    rng = np.random.default_rng(11)
    feats = _features(rng)
    x = _stream(rng, 40_000)
    settings = DriftSettings(autocorrelation=autocorrelation)

    def make() -> DriftDetector:
        return DriftDetector(feats, settings, clock=itertools.count(1.0).__next__)

    fast, slow = make(), make()
    # The plain KS features (not the atom, ties or few-valued ones) take the block path...
    assert [fast._features[i].name for i in fast._block_cols] == [
        "plain0",
        "plain1",
        "ties",
        "plain2",
        "fewties",
    ]
    used: list[int] = []
    block = fast._evaluate_block

    def counting(size: int) -> dict[int, dict[str, float]]:
        got = block(size)
        used.append(len(got))
        return got

    monkeypatch.setattr(fast, "_evaluate_block", counting)
    # ... and the reference detector never does.
    monkeypatch.setattr(slow, "_evaluate_block", lambda size: {})
    batches = [500, 37, 1000, 3, 12_000, 250]
    a, b = _run(fast, x, batches), _run(slow, x, batches)
    assert max(used) == 5  # every plain feature in one block ...
    assert min(used) < 5  # ... and windows holding a NaN fell back to the per-feature path
    assert a == b
    events = [e for step in a[::2] if isinstance(step, list) for e in step]
    assert any(e["state"] == "drift_started" and e["feature"] == "plain0" for e in events)
    assert any(e["test"] == "out_of_range" for e in events)
    assert any(e["test"] == "nan_rate" for e in events)
    st_fast, st_slow = fast.state_dict(), slow.state_dict()
    assert np.array_equal(st_fast.pop("ring"), st_slow.pop("ring"), equal_nan=True)
    assert st_fast == st_slow


def test_restored_detector_continues_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    feats = _features(rng)
    x = _stream(rng, 30_000)
    det = DriftDetector(feats, clock=lambda: 1.0)
    det.update(x[:17_345], 0)
    again = DriftDetector(feats, clock=lambda: 1.0)
    again.load_state_dict(det.state_dict())
    assert _run(det, x[17_345:], [700]) == _run(again, x[17_345:], [700])
