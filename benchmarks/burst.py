"""Bursty producers against a real agent; prints ONE JSON object.

    python benchmarks/burst.py [--quick] [--seconds S]

Two scenarios (issue: "bursty producers overrun small lanes"):

* ``seed_loop``: the seed library's example loop (``EdgeMonitor``, the seed's
  config with ``buffer_size: 1000``, four undeclared numeric inputs that go to
  the payload stream, ``price``/``confidence`` outputs), *unpaced*, for S
  seconds (10 by default). Figures: predictions/s, records written, and the
  ``ring_overrun`` the agent stored per stream (target 0). The baseline in the
  same run is the lane the seed's ``buffer_size`` alone would give (1,024
  slots): how many seconds of this loop it holds, against the lane used now.
* ``overload``: one producer (``connect()``) writing ``log_batch`` far faster
  than the agent can ingest. Figures: ms from the first record overwritten
  unread (seen in the lane header) to ``stats()["lost"]["ring_overrun"] > 0``
  (target <= 1000 ms), and once the agent drained, whether ``stats()`` equals
  the loss the agent stored and ``written == stored + lost``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.agentlib import machine  # noqa: E402
from edge_actors import topology  # noqa: E402
from edge_actors.config import load_config  # noqa: E402
from edge_actors.outbox import Outbox  # noqa: E402

SEED_CONFIG = REPO / "tests" / "data" / "seed_readme.yaml"


def _seed_config(d: Path, extra: dict[str, Any] | None = None) -> Path:
    """The seed's README config, local storage, a reference with the two outputs."""
    cfg = yaml.safe_load(SEED_CONFIG.read_text())
    cfg["instance"] = f"bb{os.getpid() % 100000}"
    cfg["run_dir"] = str(d / "run")
    cfg["data_dir"] = str(d / "data")
    cfg["storage"] = {**cfg["storage"], "type": "local", "sqlite_path": str(d / "data/outbox.db")}
    rng = np.random.default_rng(0)
    ref = {
        "price": rng.normal(300_000, 60_000, 2000).round(0).tolist(),
        "confidence": rng.uniform(0.7, 0.99, 2000).round(3).tolist(),
    }
    (d / "reference.json").write_text(json.dumps(ref))
    cfg["drift_detection"]["reference_data_path"] = str(d / "reference.json")
    for k, v in (extra or {}).items():
        cfg.setdefault(k, {}).update(v)
    path = d / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _features() -> dict[str, float]:
    # The seed example's generate_random_features().
    return {
        "bedrooms": random.randint(1, 5),
        "bathrooms": random.choice([1, 1.5, 2, 2.5, 3, 3.5, 4]),
        "sqft": random.randint(800, 3000),
        "age": random.randint(0, 50),
    }


def _predict(f: dict[str, float]) -> dict[str, float]:
    price = 100_000 + f["bedrooms"] * 20_000 + f["bathrooms"] * 15_000 + f["sqft"] * 100
    return {"price": price - f["age"] * 1000, "confidence": random.uniform(0.7, 0.99)}


def _drops(data_dir: Path) -> dict[str, int]:
    ob = Outbox.open(data_dir / "outbox.db", max_bytes=2**30)
    try:
        return {f"{s}:{r}": n for (s, r), n in sorted(ob.drops().items())}
    finally:
        ob.close()


def seed_loop(seconds: float) -> dict[str, Any]:
    """The seed example loop, unpaced, with the seed config."""
    from edge_actors import EdgeMonitor

    d = Path(tempfile.mkdtemp(prefix="eabb"))
    try:
        path = _seed_config(d)
        cfg = load_config(path)
        monitor = EdgeMonitor(config_path=str(path))
        monitor.start()
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(100):
                features = _features()
                input_id = monitor.log_model_input(features)
                monitor.log_model_output(input_id, _predict(features))
            n += 100
        elapsed = time.perf_counter() - t0
        status = monitor.get_status()
        monitor.stop()
        drops = _drops(d / "data")
        rate = n / elapsed
        lane = topology.capacity_for("lane", cfg)
        return {
            "seconds": round(elapsed, 2),
            "predictions": n,
            "predictions_per_s": round(rate),
            "model_records_written": status["producer"]["written"],
            "lane_capacity": lane,
            "payload_capacity": topology.capacity_for("payload", cfg),
            "buffer_size": cfg.model_logging.buffer_size,
            # How long a reader may sleep before this loop overruns the lane.
            "lane_seconds_at_this_rate": round(lane / (2 * rate), 3),
            "seed_lane_seconds_at_this_rate": round(1024 / (2 * rate), 3),
            "ring_overrun": {k: v for k, v in drops.items() if k.endswith(":ring_overrun")},
            "producer_dropped": status["dropped"],
            "drops": drops,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def overload(seconds: float) -> dict[str, Any]:
    """A producer much faster than the agent: how soon stats() shows the loss."""
    import signal

    import edge_actors
    from benchmarks.agentlib import Agent
    from edge_actors.ring import Ring

    agent = Agent("configs/default.yaml", workers__drift={"enabled": False}, storage__type="local")
    try:
        agent.start()
        p = edge_actors.connect(agent.path)
        cfg = load_config(agent.path)
        n_in, n_out = len(cfg.model.inputs), len(cfg.model.outputs)
        rows = np.random.default_rng(0).normal(size=(20_000, n_in)), np.ones((20_000, n_out))
        assert p.attached, p.stats()
        lane = Ring.attach(p.stats()["lane"])
        t_over = t_seen = None
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            p.log_batch(*rows)
            now = time.perf_counter()
            line = lane.consumer_line(topology.UPLOADER)
            if t_over is None and lane.write_seq - line["read_seq"] > lane.capacity:
                t_over = now  # records the uploader has not read were just overwritten
            if t_seen is None and p.stats()["lost"]["ring_overrun"] > 0:
                t_seen = now
            if t_seen is not None and now - t0 > 1.0:
                break
        # Let the uploader drain what is left, then compare.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if lane.consumer_line(topology.UPLOADER)["read_seq"] >= lane.write_seq:
                break
            time.sleep(0.05)
        line = lane.consumer_line(topology.UPLOADER)
        s = p.stats()
        lane.close()
        p.close()
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGTERM)
        agent.proc.wait(60)
        drops = _drops(Path(agent.cfg["data_dir"]))
        lost = s["lost"]["ring_overrun"]
        return {
            "seconds": round(time.perf_counter() - t0, 1),
            "written": s["written"],
            "written_per_s": round(s["written"] / max(1e-9, time.perf_counter() - t0)),
            "stats_ring_overrun": lost,
            "agent_ring_overrun": drops.get("model:ring_overrun", 0),
            "stats_equal_agent": lost == drops.get("model:ring_overrun", 0),
            # The ring's own books: every record read by the uploader or counted lost.
            "written_eq_read_plus_lost": s["written"] == line["read_seq"] and lost == line["lost"],
            "visible_after_ms": (
                None if t_seen is None or t_over is None else round((t_seen - t_over) * 1000, 1)
            ),
        }
    finally:
        agent.stop()


def main() -> None:
    quick = "--quick" in sys.argv
    seconds = 3.0 if quick else 10.0
    if "--seconds" in sys.argv:
        seconds = float(sys.argv[sys.argv.index("--seconds") + 1])
    t0 = time.perf_counter()
    seed = seed_loop(seconds)
    over = overload(3.0 if quick else 5.0)
    overrun = sum(seed["ring_overrun"].values())
    result = {
        "benchmark": "burst",
        "seed_loop": seed,
        "overload": over,
        "targets": {"seed_loop_ring_overrun": 0, "overload_visible_ms_max": 1000},
        "meets_targets": {
            "seed_loop_ring_overrun": overrun == 0,
            "overload_visible": (
                over["visible_after_ms"] is not None and over["visible_after_ms"] <= 1000
            ),
            "overload_counted": bool(
                over["stats_equal_agent"] and over["written_eq_read_plus_lost"]
            ),
        },
        "machine": machine(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
