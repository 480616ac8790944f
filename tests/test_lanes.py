"""The lane registry on its own: real shared memory, no supervisor, no worker.

What the supervisor tests see through a whole agent (tests/test_supervisor.py,
tests/test_security.py), each step here in isolation: a lane given, retired
when its producer goes, kept until every reader has read it, adopted after a
crash, removed unread when its header is scribbled, refused past the budget.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_actors import shm, topology
from edge_actors.config import Config, load_config
from edge_actors.lanes import LaneRegistry
from edge_actors.ring import W_CAPACITY, W_PRODUCER_PID, Ring

READERS = (topology.UPLOADER, topology.DRIFT)


@dataclass
class Conn:
    """Stands in for the supervisor's control connection: all the registry needs of it."""

    lane: str | None = None


@pytest.fixture
def cfg(make_config: Callable[..., Path]) -> Config:
    return load_config(make_config())


@pytest.fixture
def registry(cfg: Config) -> Iterator[LaneRegistry[Conn]]:
    reg: LaneRegistry[Conn] = LaneRegistry(cfg, {}, READERS)
    yield reg
    reg.close(unlink=True)
    for name in shm.list_names(topology.prefix(cfg.instance)):
        shm.unlink(name)


def _segments(cfg: Config) -> list[str]:
    return sorted(shm.list_names(topology.prefix(cfg.instance)))


def _write(ring: Ring, n: int) -> None:
    writer = ring.writer()
    record = np.zeros(1, dtype=ring.record_dtype)[0]
    for _ in range(n):
        writer.write(record)


def _dead_pid() -> int:
    """A pid that existed and is gone (reaped)."""
    code = "import os; print(os.getpid())"
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(proc.stdout)


def test_give_makes_a_lane_and_its_payload_ring(cfg: Config, registry: LaneRegistry[Conn]) -> None:
    conn = Conn()
    lane, error, changed = registry.give(conn, os.getpid(), None, payload=True)
    assert error == "" and changed == "rings" and lane is not None
    assert conn.lane == lane.ring.name == topology.ring_name(cfg.instance, "lane", 0)
    assert lane.payload is not None
    assert lane.payload.name == topology.ring_name(cfg.instance, "payload", 0)
    assert _segments(cfg) == sorted([lane.ring.name, lane.payload.name])
    assert lane.ring.n_consumers == topology.consumers_for("lane")
    assert lane.payload.n_consumers == topology.consumers_for("payload")
    assert [(s.name, s.kind) for s in registry.specs()] == [
        (lane.ring.name, "lane"),
        (lane.payload.name, "payload"),
    ]
    assert registry.producers() == [
        {
            "lane": lane.ring.name,
            "pid": os.getpid(),
            "state": "active",
            "model": cfg.model.name,
            "model_version": "",
        }
    ]
    # One lane per connection; the next producer gets the next index.
    assert registry.give(conn, os.getpid(), None, payload=False) == (
        None,
        "this connection already has a lane",
        "nothing",
    )
    other, _, _ = registry.give(Conn(), os.getpid(), None, payload=False)
    assert other is not None and other.index == 1 and other.payload is None


def test_a_released_lane_stays_until_every_reader_has_read_it(
    cfg: Config, registry: LaneRegistry[Conn]
) -> None:
    conn = Conn()
    lane, _, _ = registry.give(conn, os.getpid(), None, payload=False)
    assert lane is not None
    _write(lane.ring, 3)
    registry.release(Conn(lane=lane.ring.name))  # not its owner: nothing happens
    assert lane.state == "active" and not lane.ring.retired
    registry.release(conn)
    assert lane.state == "retired" and lane.ring.retired and lane.client is None
    assert registry.producers() == []
    assert registry.sweep(0.0) == "nothing"  # nobody has read the 3 records yet
    lane.ring.consumer(topology.UPLOADER).read()
    assert not registry.drained(lane) and registry.sweep(0.0) == "nothing"
    lane.ring.consumer(topology.DRIFT).read()
    assert registry.drained(lane)
    assert registry.sweep(0.0) == "rings"
    assert len(registry) == 0 and _segments(cfg) == []


def test_a_disabled_reader_does_not_hold_a_lane(cfg: Config) -> None:
    registry: LaneRegistry[Conn] = LaneRegistry(cfg, {}, [topology.UPLOADER])
    try:
        lane, _, _ = registry.give(Conn(), os.getpid(), None, payload=False)
        assert lane is not None
        _write(lane.ring, 2)
        registry.retire(lane, "test")
        lane.ring.consumer(topology.UPLOADER).read()
        assert registry.sweep(0.0) == "rings" and _segments(cfg) == []
    finally:
        registry.close(unlink=True)


def test_lanes_left_by_a_crash_are_adopted_and_reclaimed(
    cfg: Config, registry: LaneRegistry[Conn]
) -> None:
    first, _, _ = registry.give(Conn(), os.getpid(), None, payload=True)
    gone, _, _ = registry.give(Conn(), os.getpid(), None, payload=False)
    assert first is not None and gone is not None
    _write(first.ring, 5)
    gone.ring.words[W_PRODUCER_PID] = _dead_pid()
    registry.close(unlink=False)  # the supervisor was killed: segments stay
    assert len(_segments(cfg)) == 3

    after: LaneRegistry[Conn] = LaneRegistry(cfg, {}, READERS)
    try:
        after.adopt()
        assert {n: ln.state for n, ln in after.lanes.items()} == {
            first.ring.name: "orphaned",
            gone.ring.name: "orphaned",
        }
        adopted = after.lanes[first.ring.name]
        assert adopted.pid == os.getpid() and adopted.ring.write_seq == 5
        assert adopted.payload is not None  # found with its lane
        # Its producer asks for it back: the same lane, records kept.
        conn = Conn()
        lane, error, changed = after.give(conn, os.getpid(), first.ring.name, payload=True)
        assert (lane, error, changed) == (adopted, "", "producers")
        assert lane.state == "active" and conn.lane == first.ring.name
        # The other one's producer is dead: retired, and removed once read (it is empty).
        assert after.sweep(0.0) == "rings"
        assert list(after.lanes) == [first.ring.name]
        assert gone.ring.name not in _segments(cfg)
    finally:
        after.close(unlink=True)


def test_a_payload_ring_without_its_lane_is_removed_on_adoption(
    cfg: Config, registry: LaneRegistry[Conn]
) -> None:
    lane, _, _ = registry.give(Conn(), os.getpid(), None, payload=True)
    assert lane is not None and lane.payload is not None
    registry.close(unlink=False)
    shm.unlink(lane.ring.name)
    after: LaneRegistry[Conn] = LaneRegistry(cfg, {}, READERS)
    after.adopt()
    assert len(after) == 0 and _segments(cfg) == []


def test_a_scribbled_header_removes_the_lane_unread(
    cfg: Config, registry: LaneRegistry[Conn]
) -> None:
    conn = Conn()
    lane, _, _ = registry.give(conn, 4242, None, payload=False)
    assert lane is not None
    _write(lane.ring, 4)
    assert registry.invalidate_scribbled() == []
    lane.ring.words[W_CAPACITY] += 1
    assert registry.invalidate_scribbled() == [lane] and lane.client is conn
    assert len(registry) == 0 and _segments(cfg) == []
    (entry,) = registry.invalid
    assert entry["lane"] == lane.ring.name and entry["pid"] == 4242
    assert "capacity" in entry["problem"]


def test_a_lane_past_the_shm_budget_is_refused(cfg: Config) -> None:
    one = LaneRegistry[Conn](cfg, {}, READERS).segment_size("lane")
    budget_mb = 1.5 * one / 2**20
    tight = dataclasses.replace(
        cfg, supervisor=dataclasses.replace(cfg.supervisor, shm_budget_mb=budget_mb)
    )
    registry: LaneRegistry[Conn] = LaneRegistry(tight, {}, READERS)
    try:
        first, error, _ = registry.give(Conn(), os.getpid(), None, payload=False)
        assert first is not None and error == ""
        lane, error, changed = registry.give(Conn(), os.getpid(), None, payload=False)
        assert lane is None and changed == "nothing"
        assert error.startswith("shared-memory budget exhausted: a new lane needs ")
        assert len(_segments(tight)) == 1
    finally:
        registry.close(unlink=True)
