"""The seed library's documented API (its api.md), import lines changed only.

Every documented call of ``edge_mlops_monitor`` runs here through
``edge_actors`` and ``edge_actors.compat``, on the seed's example config
layout (tests/data/seed_*.yaml), against real agent processes.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
import yaml

from edge_actors import EdgeMonitor, compat, load_config
from edge_actors.config import Config, ConfigError
from edge_actors.control import ControlError
from edge_actors.keys import parse_key
from edge_actors.monitor import CALLER_ID_BIT, _record_id, caller_record_id
from edge_actors.offline.status_view import render
from edge_actors.outbox import Outbox
from tests.conftest import MODEL, unique_instance
from tests.test_monitor import (
    house_reference,
    monitors,
    of_kind,
    outbox_rows,
    seed_config,
    wait_until,
)

__all__ = ["monitors"]  # the fixture, shared with test_monitor

DATA = Path(__file__).parent / "data"
SEED_STATUS_KEYS = (
    "prediction_count",
    "system_metrics_count",
    "pending_telemetry_batches",
    "drift_results_count",
)


def sink_rows(data_dir: Path, stream: str) -> list[dict[str, Any]]:
    """Records of ``stream`` that reached the local sink (uploaded, not just in the outbox)."""
    sink = data_dir / "sink"
    rows: list[dict[str, Any]] = []
    for path in sorted(sink.rglob("*.ndjson.gz")) if sink.exists() else []:
        if parse_key(path.relative_to(sink).as_posix())[1] == stream:
            with gzip.open(path, "rt") as fh:
                rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def fleet_caller_id_query(sink: Path) -> list[tuple[Any, ...]]:
    """docs/fleet.md's caller-id join, run with DuckDB over a real sink tree."""
    duckdb = pytest.importorskip("duckdb")
    text = (Path(__file__).parent.parent / "docs" / "fleet.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- test: compat caller-id -->\s*```sql\n(.*?)```", text, flags=re.S)
    assert found, "docs/fleet.md lost its caller-id query"
    sql = found.group(1).replace("'sink/", f"'{sink.as_posix()}/")
    con = duckdb.connect()
    try:
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    return [(r[0], r[1], r[3]) for r in rows]


# --------------------------------------------------------------------------- config
def test_missing_config_file_is_a_file_not_found_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for load in (EdgeMonitor, load_config, compat.load_config):
        with pytest.raises(FileNotFoundError) as info:
            load(str(missing))
        assert isinstance(info.value, ConfigError)  # and still the new error, with its layout
        assert str(info.value) == f"{missing}: config file not found"
        assert info.value.filename == str(missing)


@pytest.mark.parametrize("bucket", ["", "your_telemetry_bucket", "Upper"])
def test_bucket_is_checked_only_for_s3(tmp_path: Path, bucket: str) -> None:
    raw = yaml.safe_load((DATA / "seed_sqlite.yaml").read_text())
    raw["storage"]["bucket"] = bucket
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)  # type sqlite: the bucket is never used
    assert cfg["storage"]["type"] == "sqlite" and cfg["storage"]["bucket"] == bucket
    raw["storage"]["type"] = "s3"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"storage\.bucket: (must|may)"):
        load_config(path)


def test_config_reads_as_the_seed_dict_and_cannot_be_changed(short_dir: Path) -> None:
    raw = yaml.safe_load((DATA / "seed_sqlite.yaml").read_text())
    raw |= {"instance": unique_instance(), "run_dir": str(short_dir / "run")}
    path = short_dir / "seed.yaml"
    path.write_text(yaml.safe_dump(raw))
    monitor = EdgeMonitor(config_path=path)  # no agent: nothing is started
    cfg = monitor.config
    assert cfg["drift_detection"]["check_frequency"] == 500
    assert monitor.drift_check_frequency == 500
    assert cfg["drift_detection"]["reference_data_path"] == "/path/to/reference_data.json"
    assert cfg["storage"]["type"] == "sqlite" and cfg["storage"]["sqlite_path"] == (
        "/path/to/local/buffer.db"
    )
    assert dict(cfg["system"]) == {"sampling_interval_seconds": 60.0, "max_memory_buffer_mb": 10.0}
    assert {"system", "model_logging", "drift_detection", "telemetry", "storage"} <= set(cfg)
    assert cfg.get("no_such_section") is None and "storage" in cfg
    with pytest.raises(KeyError):
        cfg["no_such_section"]
    with pytest.raises(TypeError):
        cfg["drift_detection"]["check_frequency"] = 5  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg["system"] = {}  # type: ignore[index]
    monitor.stop()


# --------------------------------------------------------------------------- EdgeMonitor
def test_bad_data_is_counted_by_reason_and_logged_once_per_reason(
    make_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = EdgeMonitor(config_path=make_config())  # model section declared; no agent
    with caplog.at_level(logging.WARNING, logger="edge_actors.monitor"):
        for _ in range(3):
            assert monitor.log_model_input([3, 2, 1500.0, 10.0])  # type: ignore[arg-type]
            rid = monitor.log_model_input({"bedrooms": 3, "sqft": "big"})
            assert monitor.log_model_output(rid, {"price": [1.0]}) == f"{rid}-out"
            monitor.log_model_output(rid, "oops")  # type: ignore[arg-type]
    dropped = monitor.get_status()["dropped"]
    assert dropped["not_a_dict"] == 6 and dropped["bad_value"] == 6
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_actors.monitor"]
    per_reason = Counter(line.split("[", 1)[1].split(":")[0] for line in lines if "[" in line)
    assert per_reason == {"not_a_dict": 1, "bad_value": 1}, lines
    assert any("sqft='big'" in line for line in lines)
    caplog.clear()
    monitor.stop()
    with caplog.at_level(logging.DEBUG, logger="edge_actors.monitor"):
        out_id = monitor.log_model_output(monitor.log_model_input({"bedrooms": 1}), {"price": 1.0})
    assert out_id.endswith("-out")
    assert monitor.get_status()["dropped"]["after_stop"] == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "silent after stop"


def test_caller_ids_map_to_stable_record_ids() -> None:
    a = caller_record_id("request-42")
    assert a == caller_record_id("request-42") and a != caller_record_id("request-43")
    assert a & CALLER_ID_BIT and 0 < a < 2**63
    # Our own ids (canonical decimals below bit 62) are used as they are.
    assert _record_id("1144519036747382784") == (1144519036747382784, None)
    assert _record_id(7) == (7, None) and _record_id("0") == (0, None)
    # Anything else is the caller's string, carried along.
    for other in ("05", "+5", " 5", "²", str(CALLER_ID_BIT), "request-42", "-3"):
        assert _record_id(other) == (caller_record_id(other), other)
    assert _record_id(CALLER_ID_BIT) == (caller_record_id(str(CALLER_ID_BIT)), str(CALLER_ID_BIT))


def test_pause_holds_across_a_worker_restart(make_config: Any, agent: Any) -> None:
    a = agent(make_config())  # samples every 0.2 s

    def samples() -> int:
        rings = a.status()["rings"]
        return sum(r["written"] for r in rings if r["kind"] == "system")

    assert a.request({"op": "pause", "worker": "sampler"})["worker"] == "sampler"
    pid = a.worker_pid("sampler")
    a.request({"op": "restart", "worker": "sampler"})
    st = a.wait_for(
        lambda s: (
            s["workers"]["sampler"]["pid"] not in (None, pid)
            and s["workers"]["sampler"]["state"] == "running"
        )
    )
    assert st["workers"]["sampler"]["paused"]
    assert re.search(r"^sampler\s+\d+\s+paused ", render(st), flags=re.M), render(st)
    before = samples()
    time.sleep(1.0)  # five sampling intervals
    assert samples() <= before + 1  # one may be under way as the new sampler starts
    a.request({"op": "resume", "worker": "sampler"})
    wait_until(lambda: samples() > before + 2, 10, "sampling again")
    with pytest.raises(ControlError, match="only sampler and uploader"):
        a.request({"op": "pause", "worker": "drift"})


def test_edge_monitor_documented_api(short_dir: Path, monitors: Any) -> None:
    ref = house_reference(np.random.default_rng(5), inputs=False)
    path = seed_config(
        short_dir,
        "seed_readme.yaml",
        {
            "storage": {"type": "local"},
            "system": {"sampling_interval_seconds": 0.2},
            # Nothing ships by itself during the test: only create_telemetry_batch does.
            "telemetry": {"upload_interval_seconds": 3600},
        },
        ref,
    )
    data = short_dir / "data"
    EdgeMonitor = monitors  # the fixture's factory: a failing test still stops its agent
    monitor = EdgeMonitor(config_path=str(path), device_id="edge-1")
    monitor.start()
    in_ids, out_ids = [], []
    for i in range(50):
        input_id = monitor.log_model_input({"bedrooms": 3, "sqft": 1500.0 + i})
        output_id = monitor.log_model_output(input_id, {"price": 400_000.0 + i, "confidence": 0.9})
        in_ids.append(input_id)
        out_ids.append(output_id)
    assert len(set(out_ids)) == 50 and not set(out_ids) & set(in_ids)
    monitor.set_reference_data("confidence", np.linspace(0.5, 1.0, 11))
    saved = monitor.save_reference_data(output_path=str(short_dir / "new_ref.json"))
    assert json.loads(Path(saved).read_text())["confidence"][-1] == 1.0
    # A caller-chosen id, as the seed accepted.
    assert monitor.log_model_output("request-42", {"price": 1.5, "label": "cheap"}) != "request-42"
    # Bad data inside the ML loop: logged and counted, never raised.
    monitor.log_model_input([3, 2, 1500.0])  # type: ignore[arg-type]
    monitor.log_model_output(in_ids[0], ["not", "a", "dict"])  # type: ignore[arg-type]

    st = monitor.get_status()
    assert all(type(st[k]) is int for k in SEED_STATUS_KEYS), st
    assert st["prediction_count"] == monitor.prediction_count == 51
    assert st["dropped"] == {"not_a_dict": 2}
    wait_until(lambda: monitor.get_status()["system_metrics_count"] > 0, 10, "a system sample")

    batch_id = monitor.create_telemetry_batch(
        include_system=True, include_model=True, include_drift=True, max_records=100
    )
    assert batch_id.startswith("batch-")
    # The upload interval is an hour: only the requested batch can bring them to the sink.
    wait_until(lambda: len(sink_rows(data, "model")) == 101, 20, "the batch in the sink")
    wait_until(lambda: sink_rows(data, "system"), 20, "system samples shipped with it")
    model = sink_rows(data, "model")
    assert {r["device_id"] for r in model} == {"edge-1"}
    outs = {r["id"]: r for r in model if r["kind"] == "output"}
    assert {str(i) for i in outs} >= set(in_ids)
    # The caller's id is carried to the records and joins them.
    rid = caller_record_id("request-42")

    def caller_rows() -> list[dict[str, Any]]:
        rows = sink_rows(data, "payload")
        return [r for r in rows if r["payload"].get("input_id") == "request-42"]

    wait_until(caller_rows, 20, "the payload stream of the batch in the sink")
    pay = caller_rows()
    assert [(r["id"], r["kind"]) for r in pay] == [(rid, "output")]
    assert pay[0]["payload"]["output_data"] == {"label": "cheap"}
    assert outs[rid]["outputs"]["price"] == 1.5
    assert fleet_caller_id_query(data / "sink" / "edge-device-1") == [("request-42", "edge-1", 1.5)]
    wait_until(
        lambda: (
            monitor.get_status()["agent"]["workers"]["uploader"]["stats"].get("last_flush_id")
            == batch_id
        ),
        10,
        "the batch id in the agent's status",
    )

    # stop_telemetry_upload: records still reach the outbox, nothing ships.
    monitor.stop_telemetry_upload()
    assert monitor.get_status()["agent"]["workers"]["uploader"]["paused"]
    for i in range(10):
        monitor.log_model_output(monitor.log_model_input({"sqft": 1.0 * i}), {"price": 2.0})
    monitor.create_telemetry_batch()
    wait_until(
        lambda: monitor.get_status()["pending_telemetry_batches"] >= 1, 10, "a pending batch"
    )
    assert len(sink_rows(data, "model")) == 101
    monitor.start_telemetry_upload()
    monitor.create_telemetry_batch()
    wait_until(lambda: len(sink_rows(data, "model")) == 121, 20, "the held records shipped")

    # stop_system_monitoring pauses the sampler; start_system_monitoring resumes it.
    monitor.stop_system_monitoring()
    st = monitor.get_status()
    assert st["agent"]["workers"]["sampler"]["paused"] and st["running"]
    before = st["system_metrics_count"]
    time.sleep(1.0)  # five sampling intervals
    assert monitor.get_status()["system_metrics_count"] <= before + 1  # one may be under way
    monitor.start_system_monitoring()
    assert not monitor.get_status()["agent"]["workers"]["sampler"]["paused"]
    wait_until(
        lambda: monitor.get_status()["system_metrics_count"] > before + 1, 10, "sampling again"
    )

    monitor.stop()
    assert not monitor.get_status()["running"]
    # After stop(): the seed kept logging; here it is counted and dropped, silently.
    monitor.log_model_output(monitor.log_model_input({"sqft": 1.0}), {"price": 1.0})
    assert monitor.get_status()["dropped"]["after_stop"] == 2


def test_records_logged_before_start_are_kept(short_dir: Path, monitors: Any) -> None:
    path = seed_config(short_dir, "seed_sqlite.yaml", {"model": MODEL})
    monitor = monitors(config_path=path)
    ids = [monitor.log_model_input({"bedrooms": 1, "age": float(i)}) for i in range(20)]
    monitor.start()
    monitor.stop()
    model = outbox_rows(short_dir / "data", "model")
    assert {str(r["id"]) for r in model} == set(ids)
    assert "detached" not in monitor.get_status()["dropped"]


# --------------------------------------------------------------------------- components
def test_save_default_config_writes_the_seed_layout(tmp_path: Path) -> None:
    out = tmp_path / "config.yaml"
    compat.save_default_config(str(out))
    written = yaml.safe_load(out.read_text())
    assert set(written) == set(compat.SEED_KEYS)
    for section, keys in written.items():
        assert set(keys) <= set(compat.SEED_KEYS[section])
    cfg = compat.load_config(str(out))
    assert isinstance(cfg, dict) and isinstance(cfg.config, Config)
    assert compat.load_config()["storage"]["type"] == "local"  # no file: the defaults
    assert cfg["drift_detection"]["check_frequency"] == 100
    assert cfg["storage"]["type"] == "local"


def test_adapters_take_a_changed_config_dict(tmp_path: Path) -> None:
    config = compat.load_config(DATA / "seed_sqlite.yaml")
    assert compat.DriftDetector(config).threshold == 0.01
    config["drift_detection"]["threshold"] = 0.2  # the seed's dict could be changed in code
    detector = compat.DriftDetector(config, device_id="edge-3")
    assert detector.threshold == 0.2 and detector.check_frequency == 500
    assert detector.device_id == "edge-3"
    config["drift_detection"]["threshold"] = 2.0
    with pytest.raises(ConfigError, match=r"drift_detection\.threshold"):
        compat.DriftDetector(config)


def test_compat_components(short_dir: Path) -> None:
    path = seed_config(
        short_dir,
        "seed_readme.yaml",
        {
            "storage": {"type": "sqlite"},
            "system": {"sampling_interval_seconds": 0.2},
            "model_logging": {"buffer_size": 5},
        },
    )
    config = compat.load_config(str(path))
    assert config["drift_detection"]["check_frequency"] == 100
    db = short_dir / "data" / "logs.db"
    made: list[Any] = []
    try:
        # ModelLogger(config, device_id, db_path): starts the agent, logs into it.
        logger = compat.ModelLogger(config, device_id="edge-2", db_path=str(db))
        made.append(logger)
        ids = [logger.log_input({"x": i, "tag": f"t{i}"}) for i in range(7)]
        outs = [logger.log_output(i, {"price": 400_000.0 + k}) for k, i in enumerate(ids)]
        newest = logger.get_inputs(limit=3)
        assert [r["id"] for r in newest] == ids[:-4:-1]
        assert newest[0]["input_data"] == {"x": 6, "tag": "t6"}
        assert newest[0]["device_id"] == "edge-2" and newest[0]["timestamp"] > 0
        assert len(logger.get_inputs()) == 5, "bounded by model_logging.buffer_size"
        page = logger.get_outputs(limit=2, offset=1)
        assert [o["id"] for o in page] == [outs[5], outs[4]]
        assert page[0]["input_id"] == ids[5] and page[0]["output_data"] == {"price": 400_005.0}
        pairs = logger.get_input_output_pairs(limit=100, offset=0)
        assert [(i["id"], o["id"]) for i, o in pairs] == list(zip(ids, outs, strict=True))[:1:-1]
        logger.clear_logs()
        assert logger.get_inputs() == [] and logger.get_input_output_pairs() == []

        # SystemMonitor(config, device_id): the agent's sampler.
        system = compat.SystemMonitor(config, device_id="edge-2")
        made.append(system)
        system.start()
        wait_until(lambda: len(system.get_metrics()) > 0, 10, "system metrics")
        metrics = system.get_metrics()
        kinds = {m["metric_type"] for m in metrics}
        assert {"cpu_percent", "memory_percent", "memory_available_mb", "disk_percent"} <= kinds
        assert {m["device_id"] for m in metrics} == {"edge-2"}
        last = max(m["timestamp"] for m in metrics)
        system.clear_metrics()
        assert all(m["timestamp"] > last for m in system.get_metrics())
        system.stop()
        assert system._mon.get_status()["agent"]["workers"]["sampler"]["paused"]

        # DriftDetector(config, model_logger, device_id): on-demand KS, the seed's result keys.
        drift = compat.DriftDetector(config, logger, device_id="edge-2")
        rng = np.random.default_rng(7)
        ref = rng.normal(400_000, 50_000, 500)
        drift.set_reference_data("price", ref.tolist())
        drift.save_reference_data(str(short_dir / "ref.json"))
        other = compat.DriftDetector(config)
        other.load_reference_data(str(short_dir / "ref.json"))
        assert other.reference_data["price"] == pytest.approx(ref.tolist())
        current = rng.normal(460_000, 50_000, 80)
        result = drift.detect_drift("price", current.tolist())
        expected = scipy.stats.ks_2samp(ref, current)
        assert set(result) == set(compat.DriftResult.__annotations__)
        assert result["statistic"] == pytest.approx(expected.statistic)
        assert result["p_value"] == pytest.approx(expected.pvalue, rel=1e-6)
        assert result["is_drift"] and result["threshold"] == 0.05
        assert (result["feature_name"], result["sample_size"]) == ("price", 80)
        assert result["algorithm"] == "ks_test" and result["device_id"] == "edge-2"
        for k in range(5):
            logger.log_output(logger.log_input({"x": k}), {"price": 400_000.0 + k})
        recent = drift.check_drift_from_recent_outputs(["price"], sample_size=5)
        assert set(recent) == {"price"} and recent["price"]["sample_size"] == 5
        assert len(drift.get_drift_results()) == 2
        drift.clear_drift_results()
        assert drift.get_drift_results() == []

        # TelemetryUploader(config, device_id): the agent's uploads.
        uploader = compat.TelemetryUploader(config, device_id="edge-2")
        made.append(uploader)
        uploader.start()
        batch_id = uploader.create_batch(
            system_metrics=[], model_inputs=[], model_outputs=[], drift_results=[]
        )
        assert batch_id.startswith("batch-")
        # storage.type sqlite keeps everything: the batches stay pending.
        wait_until(lambda: uploader.get_pending_batch_count() > 0, 10, "pending batches")
        assert uploader.clear_uploaded_batches(older_than_days=7) == 0
        uploader.stop()
        assert uploader._mon.get_status()["agent"]["workers"]["uploader"]["paused"]
    finally:
        for adapter in reversed(made):
            adapter.close()
    ob = Outbox.open(db, max_bytes=2**30)  # db_path: the outbox of the agent the logger started
    try:
        (stream,) = of_kind(ob, "payload")  # one outbox stream per model: payload/<name>
        batch = ob.peek(stream, 1_000_000)
    finally:
        ob.close()
    assert batch is not None
    payload = [json.loads(x) for x in batch.body.splitlines() if x.strip()]
    assert Counter(r["kind"] for r in payload) == {"input": 12, "output": 12}
    assert {r["device_id"] for r in payload} == {"edge-2"}
