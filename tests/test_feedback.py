"""Ground truth arriving late, end to end: producer -> lane -> drift worker and uploader -> sink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_actors.config import load_config
from edge_actors.producer import Producer
from tests.conftest import cli
from tests.test_pipeline import sink_records

CLASSES = ["a", "b", "c", "d", "e"]
CLF = {
    "name": "clf",
    "inputs": ["x"],
    "outputs": [{"name": "label", "type": "categorical", "categories": CLASSES}],
    "task": "classification",
    "reference_performance": 0.9,
}


def _config(make_config: Any) -> Path:
    return make_config(
        {
            "model": CLF,
            "drift_detection": {"summary_interval_seconds": 1},
            "performance": {"window_size": 500, "check_every": 25},
            "model_logging": {"buffer_size": 65536},
        }
    )


def _stream(p: Producer, n: int, acc: float, rng: np.random.Generator, late: list[Any]) -> None:
    """``n`` predictions at accuracy ``acc``; truth for 20 % of them, 50-1000 records late."""
    for _ in range(n):
        truth = int(rng.integers(0, 5))
        pred = truth if rng.random() < acc else (truth + int(rng.integers(1, 5))) % 5
        rid = p.log([float(rng.normal())], [CLASSES[pred]])
        if rng.random() < 0.2:
            late.append((len(late) + int(rng.integers(50, 1000)), rid, CLASSES[truth]))
        late.sort()
        while late and late[0][0] <= 0:
            _, lid, t = late.pop(0)
            p.log_feedback(lid, t)
        late[:] = [(k - 1, i, t) for k, i, t in late]


def test_accuracy_drop_raises_performance_degraded_through_the_agent(
    make_config: Any, agent: Any
) -> None:
    a = agent(_config(make_config))
    sink = Path(a.cfg["data_dir"]) / "sink"
    m = load_config(a.config).model
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], m.inputs, m.outputs)
    assert p.wait_attached(5), p.stats()["last_error"]
    rng = np.random.default_rng(7)
    late: list[Any] = []
    _stream(p, 6000, 0.9, rng, late)
    st = a.wait_for(
        lambda s: (
            s["workers"]["drift"]["stats"].get("performance", {}).get("clf", {}).get("labelled", 0)
            >= 1000
        ),
        timeout=30,
    )
    perf = st["workers"]["drift"]["stats"]["performance"]["clf"]
    assert perf["state"] == "ok" and 0.85 < perf["accuracy"] < 0.95
    assert 0.15 < perf["coverage"] < 0.25 and perf["median_delay_s"] >= 0
    _stream(p, 8000, 0.8, rng, late)
    for _, lid, t in late:
        p.log_feedback(lid, t)
    a.wait_for(
        lambda s: any(e["state"] == "performance_degraded" for e in sink_records(sink, "events")),
        timeout=30,
    )
    ev = next(e for e in sink_records(sink, "events") if e["state"] == "performance_degraded")
    assert ev["test"] == "accuracy" and ev["feature"] == "label" and ev["model"] == "clf"
    assert ev["statistic"] < ev["threshold"] == 0.9 and ev["window_size"] == 500
    assert 0.15 < ev["coverage"] < 0.25 and ev["label_delay_s"] >= 0
    assert ev["correction"] == "2of3" and ev["p_value"] < 25 / 1e8
    # The periodic summary carries the window's figures, coverage and label delay.
    a.wait_for(
        lambda s: any(e["state"] == "performance" for e in sink_records(sink, "events")),
        timeout=30,
    )
    summ = next(e for e in sink_records(sink, "events") if e["state"] == "performance")
    assert summ["test"] == "accuracy" and 0 < summ["coverage"] < 1 and summ["label_delay_s"] >= 0
    # The truth is uploaded as its own stream, joinable on id with the model stream.
    labelled = p.stats()["written"] - 14000
    a.wait_for(
        lambda s: (
            len(sink_records(sink, "feedback")) == labelled
            and len(sink_records(sink, "model")) == 14000
        ),
        timeout=30,
    )
    fb = sink_records(sink, "feedback")
    model = {r["id"]: r for r in sink_records(sink, "model")}
    assert all(r["kind"] == "feedback" and r["truth"]["label"] in CLASSES for r in fb)
    assert "inputs" not in fb[0] and not any(r["kind"] == "feedback" for r in model.values())
    joined = [r for r in fb if r["id"] in model]
    assert len(joined) == len(fb) > 2000
    acc = np.mean([model[r["id"]]["outputs"]["label"] == r["truth"]["label"] for r in joined])
    assert 0.8 < acc < 0.9
    out = cli("status", "-c", str(a.config))
    assert "clf: performance degraded (accuracy" in out.stdout, out.stdout
    js = json.loads(cli("status", "--json", "-c", str(a.config)).stdout)
    assert js["workers"]["drift"]["stats"]["performance"]["clf"]["state"] == "degraded"
    p.close()


def test_log_feedback_checks_its_arguments(make_config: Any) -> None:
    m = load_config(_config(make_config)).model
    p = Producer("/nonexistent", "x", m.inputs, m.outputs, start=False)
    with pytest.raises(ValueError, match="record_id"):
        p.log_feedback(-1, "a")
    with pytest.raises(ValueError, match="outputs"):
        p.log_feedback(5, {"nope": 1})
    assert p.log_feedback(5, "a") == 5 and p.log_feedback(6, {"label": "b"}) == 6
    assert p.stats()["pending"] == 2
    p.close()


def test_edge_monitor_ground_truth_by_caller_id_next_to_drift_detection(
    make_config: Any, agent: Any, short_dir: Path
) -> None:
    """Regression (MAE/RMSE) on the house model, with a drift reference: both run."""
    from edge_actors import EdgeMonitor
    from tests.conftest import MODEL, deep_merge
    from tests.test_pipeline import _drift_config

    perf = {
        "model": {**MODEL, "task": "regression", "target": "price", "reference_performance": 40e3},
        "performance": {"min_labels": 10, "check_every": 10},
    }
    a = agent(_drift_config(lambda extra: make_config(deep_merge(extra, perf)), short_dir))
    mon = EdgeMonitor(config_path=str(a.config))
    rng = np.random.default_rng(3)
    try:
        for i in range(300):
            x = {"bedrooms": 3, "bathrooms": 2, "sqft": float(rng.normal(1800, 400)), "age": 9.0}
            mon.log_model_input(x)
            truth = float(rng.normal(400_000, 50_000))
            mon.log_model_output(
                f"req-{i}", {"price": truth + rng.normal(0, 50e3), "confidence": 1}
            )
            if i % 2 == 0:
                mon.log_ground_truth(f"req-{i}", {"price": truth, "note": "operator"})
        st = a.wait_for(
            lambda s: (
                s["workers"]["drift"]["stats"]
                .get("performance", {})
                .get("house", {})
                .get("labelled", 0)
                == 150
            ),
            timeout=30,
        )
        drift = st["workers"]["drift"]["stats"]
        p = drift["performance"]["house"]
        assert p["task"] == "regression" and p["metric"] == "mae" and p["state"] == "ok"
        assert 30e3 < p["mae"] < 50e3 and 40e3 < p["rmse"] < 65e3
        assert p["coverage"] == 0.5 and p["dropped"]["unknown_id"] == 0
        assert drift["features"]["price"]["state"] == "ok"  # the detectors ran on the same lane
        assert mon.get_status()["dropped"] == {}
    finally:
        mon.stop()


def test_feedback_blocks_carry_the_bytes_the_row_form_gives(tmp_path: Path) -> None:
    """The uploader stores truth as numpy blocks: the NDJSON equals the dict rows' (``truth``)."""
    from edge_actors.outbox import Outbox, RecordBlock
    from edge_actors.records import KIND_FEEDBACK
    from edge_actors.rows import block_spec
    from tests.test_outbox import _lane_block

    recs, seqs, rows = _lane_block(200)
    recs["kind"] = KIND_FEEDBACK
    spec = block_spec(
        "feedback",
        device_id=rows.device_id,
        model=rows.model,
        lane="ea_l0",
        inputs=rows.in_names,
        outputs=rows.out_names,
        cats={str(i): c for i, c in rows.cats.items()},
    )
    bodies = []
    for form in ("rows", "blocks"):
        with Outbox.open(tmp_path / f"{form}.db", max_bytes=1 << 26, seq_base=0) as ob:
            if form == "rows":
                ob.append({"feedback": rows.rows("ea_l0", recs, seqs)})
            else:
                ob.append({}, blocks={"feedback": [RecordBlock(spec, recs, seqs)]})
            batch = ob.peek("feedback", 10_000)
            assert batch is not None
            bodies.append(batch.body)
    assert bodies[0] == bodies[1]
    first = json.loads(bodies[1].splitlines()[0])
    assert first["kind"] == "feedback" and set(first["truth"]) == {"price"}
    assert "inputs" not in first and "outputs" not in first
