"""The producer against a real agent: bursts, losses it can see, the first records.

Each test runs a real ``edge-actors run`` and checks what reached the outbox or
the sink, not only the producer's own counters.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import edge_actors
from edge_actors.outbox import Outbox
from tests.conftest import AgentProcess
from tests.test_monitor import house_reference, seed_config, stored
from tests.test_monitor import monitors as monitors  # the fixture


def _drops(data_dir: Path) -> dict[tuple[str, str], int]:
    """Drop counts the agent stored in its outbox, by (stream, reason)."""
    ob = Outbox.open(data_dir / "outbox.db", max_bytes=2**30)
    try:
        return ob.drops()
    finally:
        ob.close()


def test_seed_loop_burst_overruns_nothing(short_dir: Path, monitors: Any) -> None:
    """The seed's example loop, unpaced, with the seed's ``buffer_size: 1000``.

    The burst (16,000 model records and 8,000 payloads) fits the floors whatever
    the uploader's speed on this machine; a 1,024-slot lane lost most of it.
    """
    ref = house_reference(np.random.default_rng(0), inputs=False)
    path = seed_config(short_dir, "seed_readme.yaml", {"storage": {"type": "local"}}, ref)
    assert yaml.safe_load(path.read_text())["model_logging"]["buffer_size"] == 1000
    monitor = monitors(config_path=str(path))
    monitor.start_system_monitoring()
    rng = np.random.default_rng(1)
    n = 8000
    for _ in range(n):
        features = {
            "bedrooms": int(rng.integers(1, 6)),
            "bathrooms": float(rng.choice([1, 1.5, 2, 2.5, 3])),
            "sqft": int(rng.integers(800, 3000)),
            "age": int(rng.integers(0, 50)),
        }
        input_id = monitor.log_model_input(features)
        prediction = {"price": 100_000 + features["sqft"] * 100.0, "confidence": 0.9}
        monitor.log_model_output(input_id, prediction)
    st = monitor.get_status()
    assert st["producer"]["written"] == 2 * n, st["producer"]
    monitor.stop()
    data = short_dir / "data"
    drops = _drops(data)
    assert not {k: v for k, v in drops.items() if k[1] == "ring_overrun"}, drops
    assert len(stored(data, "model")) == 2 * n
    assert len(stored(data, "payload")) == n  # the undeclared inputs, as JSON


def test_overrun_shows_in_stats_and_matches_the_agent(make_config: Any, agent: Any) -> None:
    """A producer far faster than the agent can ingest: the loss is counted where it looks."""
    path = make_config({"workers": {"drift": {"enabled": False}}})
    a: AgentProcess = agent(path)
    p = edge_actors.connect(path)
    try:
        assert p.attached
        rows = np.ones((50_000, 4)), np.ones((50_000, 2))
        deadline = time.monotonic() + 30
        while p.stats()["lost"]["ring_overrun"] == 0:
            assert time.monotonic() < deadline, p.stats()
            p.log_batch(*rows)  # several lanes' worth per call
            time.sleep(0.01)
        lane_name = p.stats()["lane"]

        def caught_up(st: dict[str, Any]) -> bool:
            lane = next(r for r in st["rings"] if r["name"] == lane_name)
            return bool(lane["consumers"][0]["pending"] == 0)

        a.wait_for(caught_up, 30)
        s = p.stats()
        lane = next(r for r in a.status()["rings"] if r["name"] == s["lane"])
        assert s["lost"]["ring_overrun"] == lane["consumers"][0]["lost"] > 0
        written, lost = s["written"], s["lost"]["ring_overrun"]
    finally:
        p.close()
    assert a.stop() == 0
    data = Path(a.cfg["data_dir"])
    assert len(stored(data, "model")) == written - lost
    assert _drops(data)[("model", "ring_overrun")] == lost


def test_first_records_after_connect_are_kept(make_config: Any, agent: Any) -> None:
    path = make_config()
    a: AgentProcess = agent(path)
    p = edge_actors.connect(path)
    ids = [p.log([3, 2, 1650.0 + i, 12.0], [412_000.0, 0.9]) for i in range(100)]
    s = p.stats()
    p.close()
    assert s["dropped_total"] == 0 and s["written"] == 100, s
    # The lane's readers wait on their doorbells (rung by the producer on bursts).
    run_dir = Path(a.cfg["run_dir"])
    assert sorted(x.name for x in run_dir.glob("*.bell*")) == [
        f"{a.cfg['instance']}.bell0",
        f"{a.cfg['instance']}.bell1",
    ]
    assert a.stop() == 0
    assert sorted(r["id"] for r in stored(Path(a.cfg["data_dir"]), "model")) == ids


def test_records_logged_before_the_agent_starts_arrive(make_config: Any, agent: Any) -> None:
    path = make_config({"model_logging": {"pending_records": 300}})
    p = edge_actors.connect(path)  # no agent yet: returns at once
    try:
        ids = [p.log([1, 2, 3.0, i], [5.0, 0.5]) for i in range(400)]
        s = p.stats()
        assert (s["pending"], s["dropped"]["detached"]) == (300, 100), s
        a: AgentProcess = agent(path)
        assert p.wait_attached(10.0)
        s = p.stats()
        assert (s["pending"], s["written"], s["dropped_total"]) == (0, 300, 100), s
    finally:
        p.close()
    assert a.stop() == 0
    got = sorted(r["id"] for r in stored(Path(a.cfg["data_dir"]), "model"))
    assert got == ids[:300], "the first 300 are held and delivered, the overflow counted"
