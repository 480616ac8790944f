"""Several models and versions on one agent, end to end with real processes.

Three ML processes log at the same time into one agent: two versions of a
detector and a classifier. Each record must land under its model's key with
its version; a drift in the classifier's input must raise events for the
classifier only; each new version says so with ``version_seen``.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge_actors.producer import Producer, connect

N = 3000


def _write_refs(d: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    det = d / "detector_ref.json"
    det.write_text(
        json.dumps(
            {
                "a": rng.normal(0, 1, 4000).tolist(),
                "b": rng.normal(5, 2, 4000).tolist(),
                "score": rng.uniform(0, 1, 4000).tolist(),
            }
        )
    )
    cls = d / "classifier_ref.json"
    cls.write_text(
        json.dumps({"x": rng.normal(10, 1, 4000).tolist(), "p": rng.uniform(0, 1, 4000).tolist()})
    )
    return det, cls


def _config(make_config: Any, extra: dict[str, Any] | None = None) -> Path:
    path: Path = make_config(extra or {})
    data = yaml.safe_load(path.read_text())
    det_ref, cls_ref = _write_refs(path.parent)
    del data["model"]
    data["models"] = [
        # Two versions of the detector share its reference (no per-version one).
        {"name": "detector", "inputs": ["a", "b"], "outputs": ["score"]},
        {
            "name": "classifier",
            "task": "classification",
            "inputs": ["x"],
            "outputs": ["p"],
            "reference_data_path": str(cls_ref),
            "drift_detection": {"confirm_m": 2, "confirm_n": 2},
        },
    ]
    data["drift_detection"] = {
        "reference_data_path": str(det_ref),
        "window_size": 300,
        "long_window_size": 0,
        "check_frequency": 100,
        "summary_interval_seconds": 3600,
    }
    data["model_logging"] = {**data.get("model_logging", {}), "buffer_size": 16384}
    path.write_text(yaml.safe_dump(data))
    return path


def _log(config: str, model: str, version: str | None, shift_after: int) -> None:
    """A separate ML process: connect as ``model``/``version`` and log N predictions."""
    rng = np.random.default_rng(hash((model, version)) % 2**32)
    p = connect(config, model=model, version=version, attach_timeout=5.0)
    assert p.wait_attached(10), p.stats()
    for i in range(N):
        if model == "detector":
            p.log([rng.normal(0, 1), rng.normal(5, 2)], [rng.uniform(0, 1)])
        else:
            x = rng.normal(10, 1) + (6.0 if i >= shift_after else 0.0)
            p.log([x], [rng.uniform(0, 1)])
        if i % 200 == 0:
            time.sleep(0.01)
    assert p.stats()["dropped_total"] == 0, p.stats()
    p.close()


def _objects(sink: Path, stream: str) -> dict[Path, list[dict[str, Any]]]:
    out = {}
    for path in sorted((sink / stream).rglob("*.ndjson.gz")):
        with gzip.open(path, "rt") as fh:
            out[path.relative_to(sink)] = [json.loads(line) for line in fh if line.strip()]
    return out


def _wait(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_two_models_and_two_versions_from_three_processes(make_config: Any, agent: Any) -> None:
    config = _config(make_config)
    a = agent(config)
    sink = Path(a.cfg["data_dir"]) / "sink"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_log, args=(str(config), "detector", "1.4.2", N)),
        ctx.Process(target=_log, args=(str(config), "detector", "2.0", N)),
        ctx.Process(target=_log, args=(str(config), "classifier", None, N // 2)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0

    def uploaded() -> bool:
        n = sum(len(r) for r in _objects(sink, "model").values())
        return n >= 3 * N

    _wait(uploaded)
    objects = _objects(sink, "model")
    # Each object holds one model, under its model= partition, after date=.
    seen: dict[tuple[str, str], int] = {}
    for rel, recs in objects.items():
        parts = rel.parts
        assert parts[1] == "device=test-device" and parts[2].startswith("date="), rel
        assert parts[3].startswith("model="), rel
        model = parts[3].removeprefix("model=")
        for r in recs:
            assert r["model"] == model, (rel, r)
            key = (r["model"], r["model_version"])
            seen[key] = seen.get(key, 0) + 1
    assert seen == {("detector", "1.4.2"): N, ("detector", "2.0"): N, ("classifier", ""): N}

    # The classifier's input drifted: its events only; the detector stays quiet.
    def drift_events() -> list[dict[str, Any]]:
        evs = [e for recs in _objects(sink, "events").values() for e in recs]
        return [e for e in evs if e["state"] == "drift_started"]

    _wait(lambda: bool(drift_events()))
    a.request({"op": "flush", "worker": "uploader"})
    time.sleep(1.0)
    events = {rel: recs for rel, recs in _objects(sink, "events").items()}
    started = [e for recs in events.values() for e in recs if e["state"] == "drift_started"]
    assert started and {(e["model"], e["feature"]) for e in started} == {("classifier", "x")}
    assert len([e for e in started if e["test"] == "ks"]) == 1  # one episode, one start
    for rel, recs in events.items():
        assert all(f"model={e['model']}" in rel.parts for e in recs), rel
    versions = {
        (e["model"], e["model_version"])
        for recs in events.values()
        for e in recs
        if e["state"] == "version_seen"
    }
    assert versions == {("detector", "1.4.2"), ("detector", "2.0")}

    # status groups the drift worker's figures by model and version.
    # (The worker sends its stats every few seconds: wait for the final ones.)
    def drift_stats() -> dict[str, Any]:
        stats: dict[str, Any] = a.status()["workers"]["drift"]["stats"]
        return stats.get("models") or {}

    _wait(lambda: all(m["records"] == N for k, m in drift_stats().items() if k != "detector"))
    models = drift_stats()
    assert set(models) == {"detector", "detector@1.4.2", "detector@2.0", "classifier"}
    _wait(lambda: drift_stats()["classifier"]["features"]["x"]["state"] == "drift")
    assert drift_stats()["detector@2.0"]["features"]["a"]["state"] == "ok"
    lines = a.status()["workers"]["drift"]["stats"]["summary_lines"]
    assert "detector@1.4.2: 3000 records" in lines and "classifier: 3000 records" in lines
    assert a.stop() == 0


def test_a_producer_of_an_undeclared_model_is_refused(make_config: Any, agent: Any) -> None:
    config = _config(make_config)
    with pytest.raises(ValueError, match="model 'camera' is not declared in the config"):
        connect(config, model="camera")
    with pytest.raises(ValueError, match="declares models detector, classifier: say which"):
        connect(config)
    a = agent(config)
    # A producer that does not read the config is refused by the agent, with the reason.
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], ["q"], [], model="camera")
    try:
        assert not p.wait_attached(1.0)
        assert "model 'camera' is not declared" in p.stats()["last_error"]
    finally:
        p.close()
    assert a.stop() == 0


def test_an_undeclared_model_is_accepted_when_allowed(make_config: Any, agent: Any) -> None:
    config = _config(make_config, {"model_logging": {"allow_undeclared_models": True}})
    with pytest.raises(ValueError, match="give its fields in code"):
        connect(config, model="camera")
    a = agent(config)
    sink = Path(a.cfg["data_dir"]) / "sink"
    p = connect(config, model="camera", version="0.1", inputs=["lux"], outputs=["people"])
    assert p.wait_attached(5), p.stats()
    for i in range(100):
        p.log([float(i)], [1.0])
    p.close()
    _wait(lambda: sum(len(r) for r in _objects(sink, "model").values()) >= 100)
    (rel, recs), *_ = _objects(sink, "model").items()
    assert rel.parts[3] == "model=camera"
    assert recs[0]["inputs"] == {"lux": 0.0} and recs[0]["model_version"] == "0.1"
    drift = a.status()["workers"]["drift"]["stats"]["models"]["camera@0.1"]
    assert "not declared" in drift["error"]  # uploaded, not tested: no reference
    assert a.stop() == 0


def test_edge_monitor_takes_a_model_and_refuses_an_undeclared_one(make_config: Any) -> None:
    from edge_actors import EdgeMonitor

    config = _config(make_config)
    with pytest.raises(ValueError, match="model 'camera' is not declared"):
        EdgeMonitor(config, model="camera")
    with pytest.raises(ValueError, match="say which one"):
        EdgeMonitor(config)


def test_human_status_groups_drift_by_model_and_version() -> None:
    from edge_actors.offline.status_view import _worker_lines

    feat = {"state": "drift", "test": "ks", "statistic": 0.5, "threshold": 0.1, "p_value": 0.0}
    stats = {
        "features": {},
        "models": {
            "detector@1.4.2": {"records": 10, "error": "", "features": {"a": feat}},
            "camera": {"records": 5, "error": "not declared", "features": {}},
        },
    }
    assert _worker_lines("drift", stats) == [
        "detector@1.4.2: 10 records",
        "  a: drift (ks 0.5 / 0.1, p=0)",
        "camera: 5 records, not declared",
    ]


def test_a_restarted_agent_gives_a_versioned_lane_back_to_its_producer(
    make_config: Any, agent: Any
) -> None:
    import os
    import signal

    config = _config(make_config, {"workers": {"drift": {"enabled": False}}})
    a = agent(config)
    sink = Path(a.cfg["data_dir"]) / "sink"
    p = connect(config, model="detector", version="3.1", attach_timeout=5.0)
    try:
        assert p.wait_attached(5)
        lane = p.stats()["lane"]
        for _ in range(100):
            p.log([0.0, 5.0], [0.5])
        os.kill(a.pid, signal.SIGKILL)  # the lane outlives its supervisor
        a.proc.wait(5)
        b = agent(config)  # adopts the lane: its label says detector 3.1
        _wait(lambda: p.stats()["attaches"] >= 2, 20)
        assert p.stats()["lane"] == lane  # the same lane, nothing lost
        for _ in range(100):
            p.log([0.0, 5.0], [0.5])
    finally:
        p.close()
    _wait(lambda: sum(len(r) for r in _objects(sink, "model").values()) >= 200)
    recs = [r for rs in _objects(sink, "model").values() for r in rs]
    assert {(r["model"], r["model_version"]) for r in recs} == {("detector", "3.1")}
    assert b.stop() == 0
