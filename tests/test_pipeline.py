"""End to end, real processes: producer → lane → uploader → outbox → local sink; drift events."""

from __future__ import annotations

import gzip
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edge_actors.producer import Producer
from tests.conftest import MODEL


def sink_records(root: Path, stream: str) -> list[dict[str, Any]]:
    """Every record of a stream in a local sink tree."""
    out: list[dict[str, Any]] = []
    base = root / stream
    if not base.exists():
        return out
    for path in sorted(base.rglob("*.ndjson.gz")):
        with gzip.open(path, "rt") as fh:
            out += [json.loads(line) for line in fh if line.strip()]
    return out


def _producer(a: Any) -> Producer:
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    assert p.wait_attached(5), p.stats()
    return p


def _model_backlog(status: dict[str, Any]) -> int:
    streams = status["workers"]["uploader"]["stats"].get("outbox", {}).get("streams", {})
    return int(streams.get("model/house", {}).get("records", -1)) if streams else -1


def _ages(records: list[dict[str, Any]]) -> Counter[int]:
    return Counter(int(r["inputs"]["age"]) for r in records)


def test_records_reach_the_local_sink_exactly_once(make_config, agent) -> None:
    a = agent(
        make_config(
            {"workers": {"drift": {"enabled": False}}, "model_logging": {"buffer_size": 65536}}
        )
    )
    sink = Path(a.cfg["data_dir"]) / "sink"
    p = _producer(a)
    n = 5000
    for i in range(n):
        p.log([3, 2, 1500.0, float(i)], [300000.0, 0.9])
    assert p.stats()["written"] == n
    a.wait_for(lambda s: s["workers"]["uploader"]["stats"].get("uploaded_records", 0) >= n)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(sink_records(sink, "model")) < n:
        time.sleep(0.1)
    recs = sink_records(sink, "model")
    ages = _ages(recs)
    assert len(recs) == n
    assert set(ages) == set(range(n)) and max(ages.values()) == 1
    r0 = next(r for r in recs if r["inputs"]["age"] == 0)
    assert r0["outputs"] == {"price": 300000.0, "confidence": 0.9}
    assert r0["device_id"] == "test-device" and r0["kind"] == "pair"
    assert len(sink_records(sink, "system")) > 0
    p.close()
    assert a.stop() == 0


def test_sigterm_puts_every_accepted_record_in_the_outbox(make_config, agent) -> None:
    # storage.type sqlite: nothing leaves the outbox, so it must hold everything.
    cfg = make_config({"workers": {"drift": {"enabled": False}}, "storage": {"type": "sqlite"}})
    a = agent(cfg)
    p = _producer(a)
    for i in range(3000):
        p.log([1, 1, 1.0, float(i)], [1.0, 1.0])
    assert a.stop() == 0
    from edge_actors.outbox import Outbox

    ob = Outbox.open(Path(a.cfg["data_dir"]) / "outbox.db", max_bytes=2**30)
    batch = ob.next_batch("model/house", 10_000)  # one outbox stream per model
    ob.close()
    assert batch is not None and batch.n == 3000
    ages = Counter(int(json.loads(line)["inputs"]["age"]) for line in batch.body.splitlines())
    assert set(ages) == set(range(3000)) and max(ages.values()) == 1
    assert p.stats()["dropped_total"] == 0
    p.close()


def test_uploader_killed_repeatedly_loses_and_duplicates_nothing(make_config, agent) -> None:
    cfg = make_config(
        {
            "workers": {"drift": {"enabled": False}},
            "model_logging": {"buffer_size": 65536},
            "supervisor": {"max_restarts": 100},
        }
    )
    a = agent(cfg)
    sink = Path(a.cfg["data_dir"]) / "sink"
    p = _producer(a)
    stop = threading.Event()
    sent = [0]

    def feed() -> None:
        i = 0
        while not stop.is_set() and i < 20000:
            p.log([1, 1, 1.0, float(i)], [1.0, 1.0])
            i += 1
            if i % 100 == 0:
                time.sleep(0.005)
        sent[0] = i

    t = threading.Thread(target=feed)
    t.start()
    rng = np.random.default_rng(7)
    kills = 0
    while t.is_alive() and kills < 8:
        time.sleep(float(rng.uniform(0.2, 0.6)))
        pid = a.status()["workers"]["uploader"]["pid"]
        if pid:
            os.kill(pid, signal.SIGKILL)
            kills += 1
    t.join()
    n = sent[0]
    a.wait_for(
        lambda s: (
            s["workers"]["uploader"]["state"] == "running"
            and _model_backlog(s) == 0
            and any(r["kind"] == "lane" and r["consumers"][0]["pending"] == 0 for r in s["rings"])
        ),
        timeout=30,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(sink_records(sink, "model")) < n:
        time.sleep(0.2)
    ages = _ages(sink_records(sink, "model"))
    assert kills >= 3
    assert sum(ages.values()) == n, f"{sum(ages.values())} delivered of {n}"
    assert max(ages.values()) == 1, "no duplicates"
    lane = next(r for r in a.status()["rings"] if r["kind"] == "lane")
    assert lane["consumers"][0]["lost"] == 0
    p.close()


def _drift_config(make_config: Any, tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    ref = {
        "bedrooms": rng.integers(1, 6, 5000).tolist(),
        "bathrooms": rng.integers(1, 4, 5000).tolist(),
        "sqft": rng.normal(1800, 400, 5000).round(1).tolist(),
        "age": rng.uniform(0, 80, 5000).round(2).tolist(),
        "price": rng.normal(400_000, 50_000, 5000).round(0).tolist(),
        "confidence": rng.uniform(0.8, 1.0, 5000).round(4).tolist(),
    }
    ref_path = tmp / "reference.json"
    ref_path.write_text(json.dumps(ref))
    return make_config(
        {
            "drift_detection": {
                "reference_data_path": str(ref_path),
                "check_frequency": 100,
                "window_size": 1000,
                "long_window_size": 5000,
                "summary_interval_seconds": 1,
            },
            "model_logging": {"buffer_size": 65536},
        }
    )


def _feed(p: Producer, n: int, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        p.log(
            [
                float(rng.integers(1, 6)),
                float(rng.integers(1, 4)),
                float(rng.normal(1800, 400)),
                float(rng.uniform(0, 80)),
            ],
            [float(rng.normal(400_000 + shift * 50_000, 50_000)), float(rng.uniform(0.8, 1.0))],
        )


def test_drift_on_price_is_reported_and_uploaded(make_config, agent, short_dir) -> None:
    a = agent(_drift_config(make_config, short_dir))
    sink = Path(a.cfg["data_dir"]) / "sink"
    p = _producer(a)
    _feed(p, 3000, 0.0, 1)
    _feed(p, 4000, 1.0, 2)
    st = a.wait_for(
        lambda s: (
            s["workers"]["drift"]["stats"].get("features", {}).get("price", {}).get("state")
            == "drift"
        ),
        timeout=20,
    )
    feats = st["workers"]["drift"]["stats"]["features"]
    assert feats["confidence"]["state"] == "ok"
    a.wait_for(
        lambda s: any(
            e["state"] == "drift_started" and e["feature"] == "price"
            for e in sink_records(sink, "events")
        ),
        timeout=20,
    )
    events = sink_records(sink, "events")
    started = [e for e in events if e["state"] == "drift_started"]
    assert {e["feature"] for e in started} == {"price"}
    e = started[0]
    assert e["test"] == "ks" and e["statistic"] >= e["threshold"] > 0
    assert e["device_id"] == "test-device" and e["model"] == "house"
    assert e["reference_hash"] and e["n_ref"] == 5000
    # Summaries follow every summary_interval_seconds (1 s here): the drift may be
    # found and uploaded before the first one.
    a.wait_for(
        lambda s: any(e["state"] == "check" for e in sink_records(sink, "events")), timeout=20
    )
    p.close()


def test_drift_worker_kill_keeps_the_episode_once(make_config, agent, short_dir) -> None:
    a = agent(_drift_config(make_config, short_dir))
    sink = Path(a.cfg["data_dir"]) / "sink"
    p = _producer(a)
    _feed(p, 3000, 0.0, 1)
    _feed(p, 1500, 1.0, 2)
    a.wait_for(
        lambda s: (
            s["workers"]["drift"]["stats"].get("features", {}).get("price", {}).get("state")
            == "drift"
        ),
        timeout=20,
    )
    for _ in range(2):
        pid = a.worker_pid("drift")
        os.kill(pid, signal.SIGKILL)
        a.wait_for(
            lambda s, old=pid: (
                s["workers"]["drift"]["pid"] not in (None, old)
                and s["workers"]["drift"]["state"] == "running"
            )
        )
        _feed(p, 1000, 1.0, 3)
    # A deadline, not a speed check: two restarts re-read the reference and the
    # time-bounded steps crawl on a loaded 2-core box (6,200 of 6,500 at 20 s seen).
    a.wait_for(lambda s: s["workers"]["drift"]["stats"].get("records", 0) >= 6500, timeout=90)
    st = a.wait_for(
        lambda s: (
            s["workers"]["drift"]["stats"].get("features", {}).get("price", {}).get("state")
            == "drift"
        )
    )
    assert st["workers"]["drift"]["restarts"] == 2
    assert a.stop() == 0
    events = sink_records(sink, "events")
    from edge_actors.outbox import Outbox

    ob = Outbox.open(Path(a.cfg["data_dir"]) / "outbox.db", max_bytes=2**30)
    batch = ob.next_batch("events", 100_000)
    ob.close()
    if batch is not None:
        events += [json.loads(line) for line in batch.body.splitlines()]
    started = [e for e in events if e["state"] == "drift_started" and e["feature"] == "price"]
    assert len(started) == 1, started
    p.close()


def test_ring_overrun_is_counted_as_dropped_and_counts_add_up(make_config, agent) -> None:
    a = agent(make_config({"workers": {"drift": {"enabled": False}}}))
    sink = Path(a.cfg["data_dir"]) / "sink"
    p = _producer(a)
    n = 200_000  # a burst far larger than the 16384-slot lane: most are overwritten
    # The uploader keeps up with one producer's full speed now: freeze it (a real
    # SIGSTOP, like a stalled process) so the burst really overruns the lane.
    uploader = a.worker_pid("uploader")
    os.kill(uploader, signal.SIGSTOP)
    try:
        for i in range(n):
            p.log([3, 2, 1500.0, float(i)], [300000.0, 0.9])
    finally:
        os.kill(uploader, signal.SIGCONT)

    def drained(s: dict[str, Any]) -> bool:
        # Worker stats ride heartbeats (up to 2 s old): wait until they agree with
        # the live lane header, read to the end.
        lane = next(r for r in s["rings"] if r["kind"] == "lane")["consumers"][0]
        drops = s["workers"]["uploader"]["stats"].get("drops", {}).get("model/ring_overrun", 0)
        return bool(lane["pending"] == 0 and 0 < lane["lost"] == drops and _model_backlog(s) == 0)

    st = a.wait_for(drained, timeout=30)
    dropped = st["workers"]["uploader"]["stats"]["drops"]["model/ring_overrun"]
    assert p.stats()["lost"]["ring_overrun"] == dropped  # the application sees it too
    delivered = len(sink_records(sink, "model"))
    assert delivered + dropped == n
    assert max(_ages(sink_records(sink, "model")).values()) == 1
    p.close()


def test_payload_ring_carries_non_numeric_values_to_the_sink(make_config, agent) -> None:
    a = agent(make_config({"workers": {"drift": {"enabled": False}}}))
    sink = Path(a.cfg["data_dir"]) / "sink"
    p = Producer(
        a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"], payload=True
    )
    assert p.wait_attached(5)
    deadline = time.monotonic() + 5
    while p._payload_writer is None and time.monotonic() < deadline:
        time.sleep(0.01)
    ids = []
    for i in range(50):
        rid = p.log([1, 1, 1.0, float(i)], [1.0, 1.0])
        assert p.log_payload(rid, 0, json.dumps({"city": f"town{i}", "tags": [i]}).encode())
        ids.append(rid)
    assert not p.log_payload(ids[0], 0, b"x" * 5000)
    assert p.stats()["dropped"]["payload_too_large"] == 1
    a.wait_for(lambda s: len(sink_records(sink, "payload")) >= 50, timeout=15)
    payloads = {r["id"]: r["payload"] for r in sink_records(sink, "payload")}
    assert payloads[ids[7]] == {"city": "town7", "tags": [7]}
    assert set(payloads) == set(ids)
    p.close()


def test_model_sample_rate_uploads_a_share_and_counts_the_rest(make_config, agent) -> None:
    a = agent(
        make_config(
            {
                "workers": {"drift": {"enabled": False}},
                "model_logging": {"buffer_size": 65536},
                "telemetry": {"model_sample_rate": 0.25},
            }
        )
    )
    sink = Path(a.cfg["data_dir"]) / "sink"
    p = _producer(a)
    n = 4000
    for i in range(n):
        p.log([3, 2, 1500.0, float(i)], [300000.0, 0.9])
    st = a.wait_for(
        lambda s: (
            _model_backlog(s) == 0
            and any(r["kind"] == "lane" and r["consumers"][0]["pending"] == 0 for r in s["rings"])
            and s["workers"]["uploader"]["stats"].get("drops", {}).get("model/sampled", 0) > 0
        )
    )
    sampled_out = st["workers"]["uploader"]["stats"]["drops"]["model/sampled"]
    delivered = len(sink_records(sink, "model"))
    assert delivered + sampled_out == n
    assert 0.15 * n < delivered < 0.35 * n
    p.close()


def test_a_clean_restart_reports_no_gap(make_config, agent) -> None:
    """Stop, start again: the rings are new, but nothing was lost, so nothing is warned."""
    cfg = make_config({"workers": {"drift": {"enabled": False}}})
    a = agent(cfg)
    p = _producer(a)
    for i in range(200):
        p.log([1, 1, 1.0, float(i)], [1.0, 1.0])
    a.wait_for(lambda s: s["workers"]["uploader"]["stats"].get("uploaded_records", 0) >= 200)
    p.close()
    assert a.stop() == 0
    b = agent(cfg)
    p = _producer(b)  # a lane of the same name, a new epoch
    p.log([1, 1, 1.0, 0.0], [1.0, 1.0])
    b.wait_for(lambda s: s["workers"]["uploader"]["stats"].get("ingested", 0) >= 1)
    p.close()
    assert b.stop() == 0
    assert "re-created" not in b.log(), b.log()
    from edge_actors.outbox import Outbox

    with Outbox.open(Path(b.cfg["data_dir"]) / "outbox.db", max_bytes=2**30) as ob:
        assert ob.drops() == {}


def test_records_left_in_a_ring_at_stop_are_counted(make_config, agent) -> None:
    """An uploader that cannot drain at stop: what stays in the lane is counted, not just logged."""
    cfg = make_config(
        {
            "workers": {"drift": {"enabled": False}},
            "storage": {"type": "sqlite"},
            "model_logging": {"buffer_size": 65536},
            "supervisor": {"heartbeat_timeout_seconds": 60, "shutdown_timeout_seconds": 1.0},
        }
    )
    a = agent(cfg)
    p = _producer(a)
    os.kill(a.worker_pid("uploader"), signal.SIGSTOP)  # it will never drain again
    for i in range(500):
        p.log([1, 1, 1.0, float(i)], [1.0, 1.0])
    assert p.stats()["written"] == 500
    assert a.stop() == 0
    p.close()
    assert "unflushed_at_stop" in a.log()
    b = agent(cfg)  # the next start folds the count into the drops stream
    assert b.stop() == 0
    from edge_actors.outbox import Outbox

    with Outbox.open(Path(a.cfg["data_dir"]) / "outbox.db", max_bytes=2**30) as ob:
        stored = ob.stats()["streams"].get("model/house", {}).get("records", 0)
        drops = ob.drops()
        assert stored + drops.get(("model", "unflushed_at_stop"), 0) == 500, (stored, drops)
        assert drops.get(("model", "unflushed_at_stop"), 0) > 0
        report = ob.peek("drops", 100)
    assert report is not None and b"unflushed_at_stop" in report.body


def test_uploader_commits_by_time_and_size_not_per_poll(make_config) -> None:
    """A trickle waits in the ring up to COMMIT_SECONDS; a half-full ring or a flush: at once."""
    import socket

    from edge_actors import shm
    from edge_actors.config import load_config
    from edge_actors.records import KIND_PAIR
    from edge_actors.ring import Ring
    from edge_actors.topology import RingSpec, dtype_for
    from edge_actors.workers import uploader as up

    cfg = load_config(make_config({"storage": {"type": "sqlite"}}))
    name = f"{cfg.instance}_l0"
    ring = Ring.create(name, dtype_for("lane", cfg), 1024, n_consumers=2)
    ours, theirs = socket.socketpair()
    worker = up.UploaderWorker(cfg, ours)
    try:
        worker.setup()
        assert worker.outbox is not None
        worker.set_rings([RingSpec(name, "lane", 0)])
        writer = ring.writer()

        def write(n: int) -> None:
            recs = np.zeros(n, ring.slots["rec"].dtype)
            recs["t_ns"], recs["kind"] = time.time_ns(), KIND_PAIR
            writer.write_batch(recs)

        def stored() -> int:
            assert worker.outbox is not None
            return int(worker.outbox.stats()["backlog_records"])

        write(10)
        assert worker.step() == 0  # seen now; the transaction waits for more or for time
        assert stored() == 0 and ring.consumer_line(up.UPLOADER)["read_seq"] == 0
        assert 0 < worker.idle_wait <= up.COMMIT_SECONDS + 1e-6
        time.sleep(up.COMMIT_SECONDS * 1.5)
        assert worker.step() == 10 and stored() == 10
        write(512)  # half the ring: no waiting, a burst must not overrun it
        got = 0
        while got < 512:  # in steps of the adaptive read size (FIRST_READ after a start)
            k = worker.step()
            assert k > 0, "a half-full ring waited"
            got += k
        assert got == 512 and stored() == 522
        write(3)
        worker.handle({"cmd": "flush"})  # a flush stores what the rings hold now
        assert stored() == 525
        assert ring.consumer_line(up.UPLOADER)["read_seq"] == 525
    finally:
        worker.close()
        ring.close()
        shm.unlink(name)
        ours.close()
        theirs.close()
