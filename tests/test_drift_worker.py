"""The drift worker in-process (real rings, real reference files) and in a real agent.

In-process tests construct :class:`DriftWorker` with a socket pair standing in
for the supervisor's channel and call its methods directly; the agent tests
run ``edge-actors run``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_actors.config import Config, load_config
from edge_actors.producer import Producer
from edge_actors.ring import Ring
from edge_actors.topology import DRIFT, RingSpec, dtype_for
from edge_actors.workers.drift import DriftWorker
from tests.conftest import MODEL
from tests.helpers_ring import Segments

FIELDS = MODEL["inputs"] + MODEL["outputs"]


def _reference(path: Path, nan_price: float = 0.0, seed: int = 0, **extra: Any) -> Path:
    rng = np.random.default_rng(seed)
    ref: dict[str, Any] = {name: rng.normal(size=5000).round(5).tolist() for name in FIELDS}
    if nan_price:
        ref["price"] = [None if rng.random() < nan_price else v for v in ref["price"]]
    ref.update(extra)
    path.write_text(json.dumps(ref))
    return path


@pytest.fixture
def worker(
    make_config: Callable[..., Path],
) -> Iterator[Callable[..., tuple[DriftWorker, socket.socket]]]:
    """Factory: a set-up DriftWorker for a config override; closed afterwards."""
    made: list[tuple[DriftWorker, socket.socket, socket.socket]] = []

    def make(extra: dict[str, Any] | None = None) -> tuple[DriftWorker, socket.socket]:
        cfg = load_config(make_config(extra or {}))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        w = DriftWorker(cfg, ours)
        w.setup()
        made.append((w, ours, theirs))
        return w, theirs

    yield make
    for w, ours, theirs in made:
        w.close()
        ours.close()
        theirs.close()


def _drift(ref: Path, **kw: Any) -> dict[str, Any]:
    return {"drift_detection": {"reference_data_path": str(ref), **kw}}


def test_reference_nan_rate_is_the_baseline(worker: Any, short_dir: Path) -> None:
    w, _ = worker(_drift(_reference(short_dir / "ref.json", nan_price=0.2)))
    out = next(g for g in w.groups if g.label == "outputs")
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(20_000, 2))
    rows[rng.random(20_000) < 0.2, 0] = np.nan  # the training data's own 20 % NaN rate
    events = out.det.update(rows, 0)
    assert [e for e in events if e.test == "nan_rate"] == []
    rows[rng.random(20_000) < 0.3, 0] = np.nan  # now 44 %: that is a change
    events = out.det.update(rows, 20_000)
    assert [e.state for e in events if e.test == "nan_rate"][:1] == ["drift_started"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"price": [1, 2, ' + "9" * 400 + "]}", "400-digit integer"),
        ('{"price": ' + "[" * 50_000 + "]" * 50_000 + "}", "deep nesting"),
        ('{"price": [1, 2, "three"]}', "text in a numeric feature"),
        ("\x00\x01garbage", "not JSON"),
    ],
)
def test_any_bad_reference_leaves_the_worker_idle(
    worker: Any, short_dir: Path, content: str, why: str
) -> None:
    bad = short_dir / "ref.json"
    bad.write_text(content)
    w, _ = worker(_drift(bad))
    assert w.groups == [], why
    assert "ref.json" in w.error, (why, w.error)
    assert w.stats()["summary_lines"][0].startswith("error: ")
    assert w.step() == 0


def _fill(segs: Segments, cfg: Config, n: int) -> Ring:
    """A lane ring (2 consumers, like the supervisor's) holding ``n`` stationary records."""
    ring = Ring.create(segs.new(), dtype_for("lane", cfg), 1 << 16, 2)
    recs = np.zeros(n, dtype_for("lane", cfg))
    recs["kind"] = 0  # KIND_PAIR
    recs["v"] = np.random.default_rng(5).normal(size=(n, len(FIELDS)))
    ring.writer().write_batch(recs)
    return ring


def test_idle_worker_drains_the_lanes(worker: Any, segs: Segments) -> None:
    w, _ = worker({})  # drift enabled, no reference configured
    assert w.error and not w.groups
    ring = _fill(segs, w.cfg, 3000)
    try:
        w.set_rings([RingSpec(ring.name, "lane")])
        w.step()
        # The supervisor removes a retired lane once every consumer line read it all.
        assert ring.consumer_line(DRIFT)["read_seq"] == ring.write_seq == 3000
    finally:
        w.close()
        ring.close()


def test_retired_lane_is_removed_without_a_reference(make_config: Any, agent: Any) -> None:
    a = agent(make_config({"model_logging": {"buffer_size": 4096}}))
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    assert p.wait_attached(5)
    for i in range(500):
        p.log([1.0, 2.0, 3.0, float(i)], [4.0, 5.0])
    a.wait_for(lambda s: any(r["kind"] == "lane" and r["written"] == 500 for r in s["rings"]))
    p.close()
    st = a.wait_for(lambda s: not any(r["kind"] == "lane" for r in s["rings"]), timeout=20)
    assert st["workers"]["drift"]["stats"]["error"]


def test_step_is_bounded_by_time_and_heartbeats_between_slices(
    worker: Any, short_dir: Path, segs: Segments, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_actors.workers.drift as drift_worker

    monkeypatch.setattr(drift_worker, "READ_BATCH", 2000)  # several slices in one step
    w, theirs = worker(_drift(_reference(short_dir / "ref.json")))
    ring = _fill(segs, w.cfg, 20_000)
    try:
        w.set_rings([RingSpec(ring.name, "lane")])
        w.step_budget = 0.0  # a slow box: every step is over budget at once
        n = w.step()
        # One slice (one check's worth of records), not the whole backlog.
        assert 0 < n <= w.cfg.drift_detection.check_frequency
        w.step_budget = 60.0
        w._hb_every = 0.0  # a heartbeat is due after every slice
        w._next_hb = 0.0
        theirs.setblocking(False)
        while True:  # drain what setup sent
            try:
                theirs.recv(1 << 20)
            except BlockingIOError:
                break
        n = w.step()
        assert n == 20_000 - w.cfg.drift_detection.check_frequency
        beats = 0
        while True:
            try:
                beats += json.loads(theirs.recv(1 << 20))["type"] == "hb"
            except BlockingIOError:
                break
        assert beats >= 2
    finally:
        w.close()
        ring.close()


def _feed(w: DriftWorker, n: int, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for g in w.groups:
        g.det.update(rng.normal(size=(n, len(g.cols))), g.seq)
        g.seq += n
    w._dirty = True


def test_checkpoint_lives_with_the_outbox_private_and_bound_to_the_reference(
    worker: Any, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = _reference(short_dir / "ref.json")
    w, _ = worker(_drift(ref))
    _feed(w, 3000)
    w.flush()
    path = Path(w.cfg.data_dir) / f"{w.cfg.instance}.drift-checkpoint.npz"
    assert path.is_file()
    assert not list(Path(w.cfg.run_dir).glob("*drift-checkpoint*"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(w.cfg.data_dir).stat().st_mode) & 0o077 == 0

    # Same reference, same model: resumes.
    same = {"instance": w.cfg.instance}
    w2, _ = worker({**_drift(ref), **same})
    assert all(g.det.records_seen == 3000 for g in w2.groups)

    # Another reference (a re-run against new training data): fresh, and the log says why.
    _reference(ref, seed=9)
    with caplog.at_level(logging.INFO, logger="edge_actors.workers.drift"):
        w3, _ = worker({**_drift(ref), **same})
    assert all(g.det.records_seen == 0 for g in w3.groups)
    assert "starting fresh" in caplog.text and "reference" in caplog.text


def test_checkpoint_of_another_model_schema_is_not_resumed(
    worker: Any, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = _reference(short_dir / "ref.json")
    w, _ = worker(_drift(ref))
    _feed(w, 3000)
    w.flush()
    other = {**MODEL, "name": "other-model"}
    with caplog.at_level(logging.INFO, logger="edge_actors.workers.drift"):
        w2, _ = worker({**_drift(ref), "model": other, "instance": w.cfg.instance})
    assert all(g.det.records_seen == 0 for g in w2.groups)
    assert "model schema" in caplog.text


def test_checkpoint_file_and_directory_modes_under_a_lax_umask(
    worker: Any, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_actors.drift import calibration

    monkeypatch.setattr(calibration, "_memory_cache", {})  # so the disk cache is written
    old = os.umask(0)
    try:
        w, _ = worker(_drift(_reference(short_dir / "ref.json")))
        _feed(w, 1500)
        w.flush()
        cache = Path(w.cfg.data_dir) / "cache"
        ck = Path(w.cfg.data_dir) / f"{w.cfg.instance}.drift-checkpoint.npz"
        assert stat.S_IMODE(ck.stat().st_mode) == 0o600
        for p in [cache, *cache.iterdir()]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode & 0o077 == 0, (p, oct(mode))
    finally:
        os.umask(old)


def test_events_and_status_carry_the_effective_sample_size(
    worker: Any, short_dir: Path, segs: Segments
) -> None:
    from edge_actors.records import EVENT_DTYPE
    from edge_actors.rows import event_rows

    w, _ = worker(_drift(_reference(short_dir / "ref.json")))
    lane = _fill(segs, w.cfg, 3000)
    evt = Ring.create(segs.new(), EVENT_DTYPE, 64, 1)
    try:
        w.set_rings([RingSpec(lane.name, "lane"), RingSpec(evt.name, "events")])
        while w.step():
            pass
        w._next_summary = 0.0  # the status summary is refreshed every few seconds
        feats = w.stats()["features"]
        assert set(feats) == set(FIELDS)
        assert all(0 < f["n_eff"] <= 1000 for f in feats.values())
        assert "n_eff=" in w.stats()["summary_lines"][0]
        w._write_events(w.groups[0].det.summary_events())
        got = event_rows("dev", "house", evt.consumer(0).read().records)
        assert got and all(0 < e["n_eff"] <= 1000 for e in got)
    finally:
        w.close()
        lane.close()
        evt.close()
