"""EdgeMonitor, the seed-compatible API, against real supervisor processes."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge_actors import EdgeMonitor, compat, control
from edge_actors.keys import parse_key
from edge_actors.monitor import AgentStartError, MonitorStoppedError
from edge_actors.outbox import Outbox
from tests.conftest import MODEL, REPO, unique_instance

DATA = REPO / "tests" / "data"


# --------------------------------------------------------------------------- helpers
def seed_config(
    short_dir: Path, source: str, extra: dict[str, Any] | None = None, ref: Any = None
) -> Path:
    """A seed config from tests/data, pointed at ``short_dir`` (and a reference, if given)."""
    cfg = yaml.safe_load((DATA / source).read_text())
    cfg["instance"] = unique_instance()
    cfg["run_dir"] = str(short_dir / "run")
    cfg["data_dir"] = str(short_dir / "data")
    cfg["storage"]["sqlite_path"] = str(short_dir / "data" / "outbox.db")
    if ref is not None:
        ref_path = short_dir / "reference.json"
        ref_path.write_text(json.dumps(ref))
        cfg["drift_detection"]["reference_data_path"] = str(ref_path)
    else:
        del cfg["drift_detection"]["reference_data_path"]
    for section, values in (extra or {}).items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    path = short_dir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def stored(data_dir: Path, stream: str) -> list[dict[str, Any]]:
    """Every record of ``stream`` that reached the local sink or is still in the outbox.

    An outbox batch in flight may also sit in the sink (uploaded, not yet acked):
    both have the same sequence range (a retry overwrites the same object), so
    ranges are counted once.
    """
    ranges: dict[tuple[int, int], list[dict[str, Any]]] = {}
    sink = data_dir / "sink"
    for path in sorted(sink.rglob("*.ndjson.gz")) if sink.exists() else []:
        _prefix, s, _dev, _date, first, last = parse_key(path.relative_to(sink).as_posix())
        if s == stream:
            with gzip.open(path, "rt") as fh:
                ranges[(first, last)] = [json.loads(line) for line in fh if line.strip()]
    ob = Outbox.open(data_dir / "outbox.db", max_bytes=2**30)
    try:
        for name in of_kind(ob, stream):
            while (batch := ob.next_batch(name, 1_000_000)) is not None:
                rows = [json.loads(line) for line in batch.body.splitlines() if line.strip()]
                ranges.setdefault((batch.first_seq, batch.last_seq), rows)
                ob.ack(batch)
    finally:
        ob.close()
    spans = sorted(ranges)
    for (_a, b), (c, _d) in itertools.pairwise(spans):
        assert b < c, f"overlapping {stream} ranges: {spans}"
    return [r for span in spans for r in ranges[span]]


def outbox_rows(data_dir: Path, stream: str) -> list[dict[str, Any]]:
    """Read-only view of a stream in the outbox (safe while an agent runs)."""
    ob = Outbox.open(data_dir / "outbox.db", max_bytes=2**30)
    try:
        batches = [ob.peek(name, 1_000_000) for name in of_kind(ob, stream)]
    finally:
        ob.close()
    return [
        json.loads(x) for b in batches if b is not None for x in b.body.splitlines() if x.strip()
    ]


def of_kind(ob: Outbox, stream: str) -> list[str]:
    """The outbox streams of a kind: ``model`` is ``model/<name>`` (one per model)."""
    return [s for s in ob.stream_names() if s.split("/")[0] == stream]


def shm_left(instance: str) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"ea_{instance}_")]


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def house_reference(rng: np.random.Generator, inputs: bool) -> dict[str, list[float]]:
    ref = {
        "price": rng.normal(400_000, 50_000, 5000).round(0).tolist(),
        "confidence": rng.uniform(0.8, 1.0, 5000).round(4).tolist(),
    }
    if inputs:
        ref |= {
            "bedrooms": rng.integers(1, 6, 5000).astype(float).tolist(),
            "bathrooms": rng.integers(1, 4, 5000).astype(float).tolist(),
            "sqft": rng.normal(1800, 400, 5000).round(1).tolist(),
            "age": rng.uniform(0, 80, 5000).round(2).tolist(),
        }
    return ref


class HouseModel:
    """The seed docs' example: a house-price model whose prices drift upward after 500 calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.rng = np.random.default_rng(42)

    def predict(self, x: dict[str, Any]) -> tuple[float, float]:
        self.calls += 1
        shift = 100_000.0 if self.calls > 500 else 0.0
        return float(self.rng.normal(400_000 + shift, 50_000)), float(self.rng.uniform(0.8, 1))

    def house(self) -> dict[str, Any]:
        r = self.rng
        return {
            "bedrooms": int(r.integers(1, 6)),
            "bathrooms": int(r.integers(1, 4)),
            "sqft": float(r.normal(1800, 400)),
            "age": float(r.uniform(0, 80)),
            "address": f"{int(r.integers(1, 999))} Elm Street",
        }


@pytest.fixture
def monitors() -> Any:
    """Keeps the monitors a test makes; stops them (and any agent they started) at teardown."""
    made: list[EdgeMonitor] = []

    def make(*args: Any, **kwargs: Any) -> EdgeMonitor:
        m = EdgeMonitor(*args, **kwargs)
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


# --------------------------------------------------------------------------- tests
def test_seed_quick_start_keeps_every_record_exactly_once(short_dir: Path, monitors: Any) -> None:
    ref = house_reference(np.random.default_rng(0), inputs=False)
    path = seed_config(
        short_dir,
        "seed_readme.yaml",
        {
            "storage": {"type": "local"},
            "telemetry": {"upload_interval_seconds": 0.3},
            "system": {"sampling_interval_seconds": 0.1},
        },
        ref,
    )
    instance = yaml.safe_load(path.read_text())["instance"]
    before = path.read_text()

    # The seed README's code, with only the import changed.
    EdgeMonitor = monitors  # the fixture's factory: a failing test still stops its agent
    monitor = EdgeMonitor(config_path=str(path))
    monitor.start_system_monitoring()
    ids = []
    for i in range(400):
        input_data = {
            "bedrooms": 3,
            "sqft": 1500.0 + i,
            "city": f"town{i}",
            "features": {"garden": i % 2 == 0, "rooms": [i, i + 1]},
        }
        input_id = monitor.log_model_input(input_data)
        prediction = 400_000.0 + i
        monitor.log_model_output(input_id, {"price": prediction, "label": "ok"})
        ids.append(int(input_id))
    st = monitor.get_status()
    assert st["running"] and st["started_agent"] and st["agent"]["instance"] == instance
    assert st["producer"]["dropped_total"] == 0, st["producer"]

    def sampled() -> bool:
        rings = monitor.get_status()["agent"]["rings"]
        return any(r["kind"] == "system" and r["written"] > 0 for r in rings)

    wait_until(sampled, 5, "a system sample")
    monitor.stop()

    assert not monitor.get_status()["running"]
    assert shm_left(instance) == []
    assert path.read_text() == before
    data = short_dir / "data"
    model = stored(data, "model")
    # No model section: the reference's numeric keys (price, confidence) are the outputs.
    outs = [r for r in model if r["kind"] == "output"]
    ins = [r for r in model if r["kind"] == "input"]
    assert sorted(r["id"] for r in outs) == sorted(ids)
    assert sorted(r["id"] for r in ins) == sorted(ids)
    by_id = {r["id"]: r for r in outs}
    assert by_id[ids[7]]["outputs"] == {"price": 400_007.0, "confidence": None}
    payload = stored(data, "payload")
    count = Counter((r["id"], r["kind"]) for r in payload)
    assert set(count) == {(i, k) for i in ids for k in ("input", "output")}
    assert max(count.values()) == 1
    p7 = {r["kind"]: r["payload"] for r in payload if r["id"] == ids[7]}
    assert p7["input"] == {
        "input_data": {
            "bedrooms": 3,
            "sqft": 1507.0,
            "city": "town7",
            "features": {"garden": False, "rooms": [7, 8]},
        }
    }
    assert p7["output"] == {"output_data": {"label": "ok"}}
    assert stored(data, "system"), "system samples were taken"


@pytest.mark.parametrize("with_model", [True, False], ids=["model-section", "seed-style"])
def test_house_price_drift_is_reported_on_price_only(
    short_dir: Path, monitors: Any, with_model: bool
) -> None:
    ref = house_reference(np.random.default_rng(1), inputs=with_model)
    extra: dict[str, Any] = {
        "storage": {"type": "sqlite"},
        "model_logging": {"buffer_size": 8192},
    }
    if with_model:
        extra["model"] = MODEL
    path = seed_config(short_dir, "seed_readme.yaml", extra, ref)
    model = HouseModel()
    with monitors(config_path=path) as monitor:
        for _ in range(2000):
            x = model.house()
            input_id = monitor.log_model_input(x)
            price, confidence = model.predict(x)
            monitor.log_model_output(input_id, {"price": price, "confidence": confidence})

        def drift_seen() -> bool:
            feats = monitor.get_status()["agent"]["workers"]["drift"]["stats"].get("features", {})
            return feats.get("price", {}).get("state") == "drift"

        wait_until(drift_seen, 20, "price drift in get_status()")
        assert monitor.get_status()["drift_results_count"] >= 1  # the seed's status key
        # The seed's DriftDetector lists the agent's drift events with its field names.
        agent_results = compat.DriftDetector(monitor.config).get_drift_results()
        assert [(r["feature_name"], r["is_drift"]) for r in agent_results] == [("price", True)]
        assert agent_results[0]["algorithm"] == "ks_test" and agent_results[0]["sample_size"] > 0
        feats = monitor.get_status()["agent"]["workers"]["drift"]["stats"]["features"]
        assert feats["confidence"]["state"] == "ok"
        if with_model:
            assert {"sqft", "age", "price", "confidence"} <= set(feats)
        else:
            assert set(feats) == {"price", "confidence"}
    events = outbox_rows(short_dir / "data", "events")
    started = {e["feature"] for e in events if e["state"] == "drift_started"}
    assert started == {"price"}
    assert shm_left(monitor.config.instance) == []


def test_sqlite_storage_keeps_everything_in_the_outbox(short_dir: Path, monitors: Any) -> None:
    path = seed_config(short_dir, "seed_sqlite.yaml", {"model": MODEL})
    before = path.read_text()
    monitor = monitors(config_path=path, device_id="edge-7")
    assert monitor.device_id == "edge-7"
    monitor.start()
    ids = set()
    for i in range(300):
        rid = monitor.log_model_input({"bedrooms": 2, "sqft": 900.0, "age": float(i), "zip": "75"})
        monitor.log_model_output(rid, {"price": 1.0 * i, "confidence": 0.5})
        ids.add(int(rid))
    # A payload larger than a payload slot is counted, not raised about.
    big = monitor.log_model_input({"age": -1.0, "blob": "x" * 5000})
    ids.add(int(big))
    assert monitor.get_status()["dropped"] == {"payload_too_large": 1}
    monitor.stop_telemetry_upload()  # seed API: flushes into the outbox, pauses uploads
    monitor.stop_system_monitoring()  # seed API: pauses the sampler; the agent runs on
    st = monitor.get_status()
    assert st["running"]
    assert st["agent"]["workers"]["sampler"]["paused"]
    assert st["agent"]["workers"]["uploader"]["paused"]
    monitor.stop()  # stops the agent this monitor started
    assert not monitor.get_status()["running"]
    assert shm_left(monitor.config.instance) == []
    monitor.stop()  # idempotent
    data = short_dir / "data"
    assert not (data / "sink").exists(), "storage.type sqlite uploads nothing"
    model = outbox_rows(data, "model")
    assert Counter(r["kind"] for r in model) == {"input": 301, "output": 300}
    assert {r["id"] for r in model} == ids
    assert {r["device_id"] for r in model} == {"edge-7"}
    r0 = next(r for r in model if r["kind"] == "input" and r["inputs"]["age"] == 0)
    assert r0["inputs"] == {"bedrooms": 2, "bathrooms": None, "sqft": 900.0, "age": 0}
    payload = outbox_rows(data, "payload")
    assert len(payload) == 300 and {r["payload"]["input_data"]["zip"] for r in payload} == {"75"}
    # The override ran on a derived copy; the user's file is untouched.
    assert path.read_text() == before
    derived = yaml.safe_load(next(data.glob("edge-monitor-*.yaml")).read_text())
    assert derived["device_id"] == "edge-7" and derived["storage"]["type"] == "sqlite"


def test_uses_a_running_agent_and_leaves_it_running(
    make_config: Any, agent: Any, short_dir: Path, monitors: Any
) -> None:
    ref_path = short_dir / "ref.json"
    ref_path.write_text(json.dumps(house_reference(np.random.default_rng(2), inputs=False)))
    cfg = make_config(
        {
            "storage": {"type": "sqlite"},
            "drift_detection": {"reference_data_path": str(ref_path)},
        }
    )
    a = agent(cfg)
    monitor = monitors(config_path=cfg)
    monitor.start_system_monitoring()
    st = monitor.get_status()
    assert st["running"] and not st["started_agent"] and st["agent"]["pid"] == a.pid
    ids = []
    for i in range(500):
        rid = monitor.log_model_input({"bedrooms": 1, "age": float(i), "tags": ["a"]})
        monitor.log_model_output(rid, {"price": 2.0, "confidence": 0.7})
        ids.append(int(rid))
    # Seed API: new reference data, merged over the file, reloads the drift worker.
    monitor.set_reference_data("confidence", np.linspace(0.1, 0.9, 50))
    assert monitor.save_reference_data() == str(ref_path)
    saved = json.loads(ref_path.read_text())
    assert len(saved["price"]) == 5000 and len(saved["confidence"]) == 50
    monitor.stop()
    assert a.proc is not None and a.proc.poll() is None, "the agent keeps running"
    assert a.request({"op": "ping"})["ok"]
    model = outbox_rows(Path(a.cfg["data_dir"]), "model")
    assert Counter(r["kind"] for r in model) == {"input": 500, "output": 500}
    assert {r["id"] for r in model} == set(ids)
    assert len(outbox_rows(Path(a.cfg["data_dir"]), "payload")) == 500
    a.wait_for(lambda s: s["workers"]["drift"]["restart_reasons"].get("requested") == 1)
    a.wait_running()
    # After stop(): counted and dropped, never raised (the seed kept logging).
    monitor.log_model_output(monitor.log_model_input({"bedrooms": 1}), {"price": 1.0})
    assert monitor.get_status()["dropped"] == {"after_stop": 2}
    assert a.stop() == 0


def test_strict_mode_raises_for_bad_input_and_after_stop(make_config: Any) -> None:
    monitor = EdgeMonitor(config_path=make_config(), strict=True)  # no agent: nothing started
    st = monitor.get_status()
    assert not st["running"] and st["agent"] is None and "no agent running" in st["error"]
    with pytest.raises(ValueError, match=r"inputs\.sqft: must be a number"):
        monitor.log_model_input({"bedrooms": 3, "sqft": "big"})
    with pytest.raises(ValueError, match=r"outputs\.price: must be a number"):
        monitor.log_model_output("1", {"price": [1.0]})
    with pytest.raises(TypeError, match="dict"):
        monitor.log_model_input([3, 2, 1500.0, 10.0])  # type: ignore[arg-type]
    assert monitor.get_status()["producer"]["written"] == 0
    # Without an agent, records are held for it (bounded), never raised about.
    monitor.log_model_input({"bedrooms": 3, "city": "Paris"})
    st = monitor.get_status()
    assert st["dropped"] == {}
    assert (st["producer"]["pending"], st["producer"]["pending_payloads"]) == (1, 1)
    monitor.stop()
    with pytest.raises(MonitorStoppedError, match="EdgeMonitor is stopped"):
        monitor.log_model_input({"bedrooms": 3})
    with pytest.raises(MonitorStoppedError):
        monitor.log_model_output("1", {"price": 1.0})


def test_no_config_file_uses_the_defaults(monkeypatch: Any, short_dir: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_dir))
    monkeypatch.chdir(short_dir)
    monitor = EdgeMonitor(device_id="box-1")
    assert monitor.config.run_dir == short_dir / "edge-actors"
    assert monitor.config.data_dir == short_dir / "var"
    assert monitor.device_id == "box-1"
    # No fields declared anywhere: everything is kept as payload (held here: no agent).
    assert monitor.log_model_input({"x": 1.5, "y": "a"})
    st = monitor.get_status()
    assert not st["running"] and st["dropped"] == {}
    assert st["producer"]["pending_payloads"] == 1
    with pytest.raises(control.ControlError):
        control.request(monitor.config.run_dir, monitor.config.instance, {"op": "ping"})
    monitor.stop()
    assert not (short_dir / "var").exists(), "nothing written without an agent"


def test_agent_that_cannot_start_names_its_log(make_config: Any, short_dir: Path) -> None:
    (short_dir / "blocker").write_text("a file where run_dir's parent should be")
    monitor = EdgeMonitor(config_path=make_config({"run_dir": str(short_dir / "blocker" / "r")}))
    with pytest.raises(AgentStartError, match=r"exited with code \d+.*edge-monitor-.*\.log"):
        monitor.start()
    assert not monitor.get_status()["started_agent"]
    monitor.stop()


#: What the ML process must never import: heavy libraries, and the agent's own
#: process code (the supervisor pulls in psutil, each worker its libraries).
AGENT_ONLY = (
    "scipy",
    "boto3",
    "botocore",
    "psutil",
    "edge_actors.supervisor",
    "edge_actors.workers",
)


def test_the_ml_process_imports_no_agent_code(short_dir: Path) -> None:
    """A seed config makes the monitor derive its fields from the reference: no supervisor."""
    ref = house_reference(np.random.default_rng(3), inputs=False)
    path = seed_config(short_dir, "seed_readme.yaml", {"storage": {"type": "sqlite"}}, ref)
    code = (
        "import sys\n"
        "from edge_actors import EdgeMonitor\n"
        f"m = EdgeMonitor(config_path={str(path)!r})\n"
        "m.log_model_output(m.log_model_input({'a': 'b'}), {'price': 1.0})\n"
        "m.stop()\n"
        "from edge_actors import compat\n"
        f"d = compat.DriftDetector(compat.load_config({str(path)!r}))\n"
        "d.set_reference_data('price', [1.0, 2.0, 3.0, 4.0])\n"
        "assert d.detect_drift('price', [5.0, 6.0, 7.0])['p_value'] < 0.1\n"
        "import edge_actors.monitor, edge_actors.producer\n"
        f"agent = {AGENT_ONLY!r}\n"
        "heavy = sorted(x for x in sys.modules if any(x == a or x.startswith(a + '.')\n"
        "                                             for a in agent))\n"
        "assert not heavy, heavy\n"
        "print(','.join(f['name'] for f in m._producer.schema()['outputs']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    # The fields were derived from the reference (the path that imported the supervisor).
    assert proc.stdout.strip() == "price,confidence"
