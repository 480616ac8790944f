"""The producer handle: input forms, error messages, detached counting, threads, fork, lanes.

A lane here is a ring the test creates itself; the control-socket side is a
fake supervisor (tests/helpers_ring.py), never the real one.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_actors.producer import CLOSED_MESSAGE, Producer, ProducerClosedError
from edge_actors.records import KIND_INPUT, KIND_OUTPUT, KIND_PAIR, model_dtype
from edge_actors.ring import Ring
from tests.helpers_ring import (  # noqa: F401
    LANE_INPUTS,
    LANE_OUTPUTS,
    PREFIX,
    FakeSupervisor,
    MakeLane,
    Segments,
    python_env,
)

IN = list(LANE_INPUTS)
OUT = list(LANE_OUTPUTS)
NAMES = "['a', 'b', 'c', 'd']"


@pytest.fixture
def run_dir() -> Iterator[Path]:
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="eap"))  # short: Unix socket paths <= 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True)
    )


# --------------------------------------------------------------- input forms
def test_every_input_form(lane: MakeLane) -> None:
    p, ring = lane()
    forms: list[tuple[Any, Any, list[float]]] = [
        ([1, 2, 3, 4], [5], [1, 2, 3, 4, 5]),
        ((1.5, 2, 3, 4), (5.5,), [1.5, 2, 3, 4, 5.5]),
        (np.array([1.0, 2, 3, 4]), np.array([9.0]), [1, 2, 3, 4, 9]),
        (np.array([1, 2, 3, 4], dtype=np.int32), np.array([7], dtype=np.uint8), [1, 2, 3, 4, 7]),
        (np.array([True, False, True, True]), [0], [1, 0, 1, 1, 0]),
        ({"a": 1, "b": 2, "c": 3, "d": 4}, {"y": 6}, [1, 2, 3, 4, 6]),
        ({"c": 3}, {}, [math.nan, math.nan, 3, math.nan, math.nan]),
        ({"a": None, "b": 2, "c": 3, "d": 4}, {"y": None}, [math.nan, 2, 3, 4, math.nan]),
        (range(4), [np.float32(0.5)], [0, 1, 2, 3, 0.5]),
        ([np.float64(1), np.int64(2), 3, 4], [1e300], [1, 2, 3, 4, 1e300]),
        ([math.inf, -math.inf, math.nan, 0], [-0.0], [math.inf, -math.inf, math.nan, 0, 0]),
    ]
    ids = [p.log(x, y) for x, y, _ in forms]
    assert ids == list(range(ids[0], ids[0] + len(forms)))
    got = ring.consumer(1).read()
    assert got.records["id"].tolist() == ids
    assert set(got.records["kind"].tolist()) == {KIND_PAIR}
    for row, (_, _, want) in zip(got.records["v"].tolist(), forms, strict=True):
        assert same(row, [float(v) for v in want]), (row, want)
    assert p.stats()["written"] == len(forms) == ring.write_seq


def test_log_input_then_log_output(lane: MakeLane) -> None:
    p, ring = lane()
    rid = p.log_input({"a": 1, "b": 2, "c": 3, "d": 4})
    oid = p.log_output(rid, [0.75])
    assert oid == rid
    r = ring.consumer(1).read().records
    assert r["kind"].tolist() == [KIND_INPUT, KIND_OUTPUT]
    assert r["id"].tolist() == [rid, rid]
    assert same(r["v"][0].tolist(), [1, 2, 3, 4, math.nan])
    assert same(r["v"][1].tolist(), [math.nan] * 4 + [0.75])
    assert p.log([0, 0, 0, 0], [0]) == rid + 1


def test_categorical_fields(lane: MakeLane) -> None:
    color = {"name": "color", "kind": "categorical", "categories": ["red", "green"]}
    p, ring = lane(["x", color], ["y"])
    p.log([1.0, "green"], [0])
    p.log({"color": "blue", "x": 2}, [0])  # not a declared category: -1
    p.log(np.array([3.0, "red"], dtype=object), [0])
    p.log([4.0, 1], [0])  # already an index
    p.log_input((5.0, "red"))
    r = ring.consumer(1).read().records["v"][:, :2].tolist()
    assert r == [[1, 1], [2, -1], [3, 0], [4, 1], [5, 0]]


# ------------------------------------------------------------------- errors
ERRORS: list[tuple[str, tuple[Any, Any], str]] = [
    ("short list", ([1, 2, 3], [0]), f"inputs: expected 4 values for fields {NAMES}, got 3"),
    ("long tuple", ((1, 2, 3, 4, 5), [0]), f"inputs: expected 4 values for fields {NAMES}, got 5"),
    (
        "array shape",
        (np.zeros(3), [0]),
        f"inputs: expected an array of shape (4,) for fields {NAMES}, got shape (3,)",
    ),
    (
        "2-d array",
        (np.zeros((1, 4)), [0]),
        f"inputs: expected an array of shape (4,) for fields {NAMES}, got shape (1, 4)",
    ),
    (
        "string array",
        (np.array(["1", "2", "3", "4"]), [0]),
        "inputs: array dtype must be numeric, got <U1",
    ),
    ("unknown key", ({"a": 1, "zz": 2}, [0]), "inputs.zz: unknown field (declared: a, b, c, d)"),
    ("string value", ([1, "x", 3, 4], [0]), "inputs.b: must be a number, got 'x' (str)"),
    ("None in list", ([1, 2, None, 4], [0]), "inputs.c: must be a number, got None (NoneType)"),
    ("dict string", ({"d": "4"}, [0]), "inputs.d: must be a number, got '4' (str)"),
    ("bool before bad", ([True, "x", 3, 4], [0]), "inputs.b: must be a number, got 'x' (str)"),
    ("complex", ([1, 2, 3, 1j], [0]), "inputs.d: must be a number, got 1j (complex)"),
    ("str inputs", ("abcd", [0]), "inputs: expected a dict, a sequence or a numpy array, got str"),
    ("int inputs", (5, [0]), "inputs: expected a dict, a sequence or a numpy array, got int"),
    (
        "generator",
        ((x for x in range(4)), [0]),
        "inputs: expected a dict, a sequence or a numpy array, got generator",
    ),
    (
        "bare output",
        ([1, 2, 3, 4], 0.5),
        "outputs: expected a dict, a sequence or a numpy array, got float",
    ),
    (
        "outputs length",
        ([1, 2, 3, 4], [1, 2]),
        "outputs: expected 1 values for fields ['y'], got 2",
    ),
    ("output value", ([1, 2, 3, 4], ["high"]), "outputs.y: must be a number, got 'high' (str)"),
    ("output key", ([1, 2, 3, 4], {"z": 1}), "outputs.z: unknown field (declared: y)"),
]


@pytest.mark.parametrize("call", ERRORS, ids=[e[0] for e in ERRORS])
def test_log_error_messages_and_nothing_written(
    lane: MakeLane, call: tuple[str, tuple[Any, Any], str]
) -> None:
    _, (x, y), msg = call
    p, ring = lane()
    p.log([0, 0, 0, 0], [0])
    with pytest.raises(ValueError) as e:
        p.log(x, y)
    assert str(e.value) == msg
    assert ring.write_seq == 1 and p.stats()["written"] == 1
    assert p.stats()["dropped_total"] == 0
    p.log([0, 0, 0, 0], [0])  # the handle is still fine
    assert ring.write_seq == 2


def test_log_input_and_output_errors(lane: MakeLane) -> None:
    p, ring = lane()
    with pytest.raises(ValueError) as e:
        p.log_input([1, 2, "x", 4])
    assert str(e.value) == "inputs.c: must be a number, got 'x' (str)"
    with pytest.raises(ValueError) as e:
        p.log_output(1, ["x"])
    assert str(e.value) == "outputs.y: must be a number, got 'x' (str)"
    with pytest.raises(ValueError) as e:
        p.log_output(1, [1, 2])
    assert str(e.value) == "outputs: expected 1 values for fields ['y'], got 2"
    assert ring.write_seq == 0


def test_closed_producer_raises(lane: MakeLane) -> None:
    p, ring = lane()
    p.log([1, 2, 3, 4], [5])
    with p:
        pass  # __exit__ closes
    p.close()  # idempotent
    calls: list[Callable[[], Any]] = [
        lambda: p.log([1, 2, 3, 4], [5]),
        lambda: p.log({"a": 1}, {}),
        lambda: p.log_input([1, 2, 3, 4]),
        lambda: p.log_output(3, [1]),
        lambda: p.log_batch(np.zeros((2, 4)), np.zeros((2, 1))),
        lambda: p.log([1, "bad", 3, 4], [5]),
    ]
    for call in calls:
        with pytest.raises(ProducerClosedError) as e:
            call()
        assert str(e.value) == CLOSED_MESSAGE
    assert ring.write_seq == 1
    assert not p.attached and p.stats()["lane"] is None


# ----------------------------------------------------------------- detached
def test_detached_counts_and_never_raises(run_dir: Path) -> None:
    p = Producer(run_dir, "nobody", IN, OUT, start=False, pending_records=0)
    assert not p.attached
    ids = [p.log([1, 2, 3, 4], [5]) for _ in range(3)]
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    p.log_input({"a": 1})
    p.log_output(ids[0], [1])
    first = p.log_batch(np.zeros((10, 4)), np.zeros((10, 1)))
    assert first == ids[0] + 4
    s = p.stats()
    assert s["dropped"] == {
        "detached": 15,
        "retired": 0,
        "schema_mismatch": 0,
        "lane_lost": 0,
        "payload_too_large": 0,
        "payload_detached": 0,
        "pending_at_close": 0,
    }
    assert s["lost"] == {"ring_overrun": 0, "payload_ring_overrun": 0}
    assert s["dropped_total"] == 15 and s["written"] == 0 and s["pending"] == 0
    assert (s["attached"], s["connected"], s["lane"], s["attaches"]) == (False, False, None, 0)
    with pytest.raises(ValueError):  # validation still applies
        p.log([1, 2], [5])
    assert p.stats()["dropped_total"] == 15
    p.close()


def test_detached_with_thread_retries_quietly(run_dir: Path) -> None:
    with Producer(run_dir, "nobody", IN, OUT) as p:
        time.sleep(0.3)
        p.log([1, 2, 3, 4], [5])
        assert not p.attached and p.stats()["pending"] == 1
        assert p.stats()["dropped_total"] == 0
        assert p.stats()["last_error"]
    assert p._thread is not None and not p._thread.is_alive()
    # Closing with records still held counts them: nothing vanishes uncounted.
    assert p.stats()["dropped"]["pending_at_close"] == 1 and p.stats()["pending"] == 0


def test_records_logged_while_detached_reach_the_lane_once_it_arrives(
    segs: Segments, run_dir: Path
) -> None:
    p = Producer(run_dir, "hold", IN, OUT, start=False, pending_records=6)
    ring = Ring.create(segs.new(), p.dtype, 64, 2)
    server = None
    try:
        ids = [p.log([i, i, i, i], [i]) for i in range(3)]
        ids.append(p.log_input([3, 3, 3, 3]))
        ids.append(p.log_batch(np.full((4, 4), 4.0), np.full((4, 1), 4.0)))
        s = p.stats()
        # 3 + 1 + 4 = 8 records: the first 6 held, the 2 that overflow counted.
        assert (s["pending"], s["dropped"]["detached"], s["written"]) == (6, 2, 0)
        server = FakeSupervisor(run_dir, "hold", [ring], p.schema())
        p._start_thread()
        assert p.wait_attached(5.0)
        nine = p.log([9, 9, 9, 9], [9])
        b = ring.consumer(0).read()
        assert b.records["id"].tolist() == [*ids[:4], ids[4], ids[4] + 1, nine]
        assert b.records["v"][:, 0].tolist() == [0, 1, 2, 3, 4, 4, 9]
        s = p.stats()
        assert (s["pending"], s["dropped_total"], s["written"]) == (0, 2, 7)
    finally:
        p.close()
        if server is not None:
            server.stop()
        ring.close()


def test_worker_wait_wakes_on_the_doorbell(run_dir: Path) -> None:
    import dataclasses
    import socket as socketlib

    from edge_actors.config import load_config
    from edge_actors.doorbell import Ringer
    from edge_actors.workers.base import Worker

    cfg = dataclasses.replace(load_config(None), run_dir=run_dir, instance="wk")
    ours, theirs = socketlib.socketpair(socketlib.AF_UNIX, socketlib.SOCK_SEQPACKET)

    class Reader(Worker):
        bell_consumer = 0

    w = Reader(cfg, ours)
    w.setup()
    w._open_bell()
    ringer = Ringer(run_dir, "wk")
    try:
        ringer.ring()
        t0 = time.monotonic()
        w._poll(30.0)  # the idle wait of a lane reader, cut short by the ring
        assert time.monotonic() - t0 < 10.0
        assert not w.stopping
    finally:
        ringer.close()
        w._close_bell()
        ours.close()
        theirs.close()
    assert not list(run_dir.glob("*.bell*")), "the doorbell is removed on exit"


def test_payloads_logged_while_detached_follow_their_records(segs: Segments, run_dir: Path) -> None:
    import socket as socketlib

    from edge_actors.records import payload_dtype

    p = Producer(run_dir, "pl", IN, OUT, start=False, payload=True, pending_records=3)
    lane_ring = Ring.create(segs.new(), p.dtype, 64, 2)
    pay = Ring.create(segs.new(), payload_dtype(256), 16, 1)
    ours, theirs = socketlib.socketpair()
    try:
        ids = [p.log([i, i, i, i], [i]) for i in range(4)]
        held = [p.log_payload(rid, KIND_PAIR, b'{"n": %d}' % k) for k, rid in enumerate(ids)]
        assert held == [True, True, True, False]
        s = p.stats()
        assert (s["pending"], s["dropped"]["detached"], s["dropped"]["payload_detached"]) == (
            3,
            1,
            1,
        )
        reply = {"lane": lane_ring.name, "payload": pay.name, "payload_slot_bytes": 256}
        p._attach(ours, {**reply, **p.schema()})
        assert lane_ring.consumer(0).read().records["id"].tolist() == ids[:3]
        got = pay.consumer(0).read().records
        assert got["id"].tolist() == ids[:3]
        assert [bytes(r["data"][: r["len"]]) for r in got] == [b'{"n": %d}' % k for k in range(3)]
        assert p.log_payload(ids[0], KIND_PAIR, b"{}") and pay.write_seq == 4
    finally:
        p.close()
        lane_ring.close()
        pay.close()
        theirs.close()


def _write_config(run_dir: Path, instance: str, **model_logging: Any) -> Path:
    import yaml

    path = run_dir / f"{instance}.yaml"
    cfg = {
        "instance": instance,
        "run_dir": str(run_dir),
        "data_dir": str(run_dir / "data"),
        "model": {"inputs": IN, "outputs": OUT},
        "model_logging": model_logging,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_connect_attaches_before_returning(segs: Segments, run_dir: Path) -> None:
    from edge_actors import connect

    probe = Producer(run_dir, "x", IN, OUT, start=False)
    ring = Ring.create(segs.new(), probe.dtype, 64, 2)
    server = FakeSupervisor(run_dir, "ca", [ring], probe.schema())
    p = connect(_write_config(run_dir, "ca"))
    try:
        # No wait_attached(): what an application logs right away is kept.
        ids = [p.log([1, 2, 3, 4], [i]) for i in range(5)]
        assert ring.consumer(0).read().records["id"].tolist() == ids
        s = p.stats()
        assert s["attached"] and s["written"] == 5 and s["dropped_total"] == 0
    finally:
        p.close()
        probe.close()
        server.stop()
        ring.close()


def test_connect_never_waits_for_an_agent_that_is_not_there(run_dir: Path) -> None:
    import socket as socketlib

    from edge_actors import connect

    # The longest allowed wait: returning well before it proves connect() did not wait.
    missing = _write_config(run_dir, "gone", attach_timeout_seconds=10)
    t0 = time.monotonic()
    p = connect(missing)
    assert time.monotonic() - t0 < 5.0
    assert not p.attached
    p.close()
    # A socket file left by a killed agent: connection refused, no wait either.
    stale = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    stale.bind(str(run_dir / "stale.sock"))
    stale.close()
    t0 = time.monotonic()
    p = connect(_write_config(run_dir, "stale", attach_timeout_seconds=10))
    assert time.monotonic() - t0 < 5.0
    assert not p.attached and p.stats()["last_error"]
    p.close()


def test_stats_report_records_the_uploader_lost(lane: MakeLane) -> None:
    p, ring = lane(cap=64)
    for i in range(100):
        p.log([i, i, i, i], [i])
    # Overwritten unread: shown at once, before the uploader even looks.
    assert p.stats()["lost"]["ring_overrun"] == 36
    up = ring.consumer(0)  # the uploader's line
    b = up.read(commit=False)  # as the uploader does: commit after its own transaction
    assert b.lost == 36 and len(b) == 64
    assert p.stats()["lost"]["ring_overrun"] == 36  # not counted twice, never goes back
    up.commit()
    s = p.stats()
    assert s["lost"]["ring_overrun"] == 36 and s["lost_total"] == 36
    assert s["written"] == 100 and s["dropped_total"] == 0  # written, then overwritten
    for i in range(64):  # fills the slots the uploader already copied: no loss
        p.log([i, i, i, i], [i])
    assert p.stats()["lost"]["ring_overrun"] == 36
    p.log([1, 2, 3, 4], [5])
    assert p.stats()["lost"]["ring_overrun"] == 37
    ring.consumer(1).read()  # the drift worker skipping records is not a loss of data
    assert p.stats()["lost"]["ring_overrun"] == 37
    assert up.read().lost == 1 and p.stats()["lost"]["ring_overrun"] == 37


def test_doorbell_rings_once_per_half_lane(lane: MakeLane, short_dir: Path) -> None:
    from edge_actors.doorbell import Bell, bell_path

    bells = [Bell(bell_path(short_dir, "t", k)) for k in (0, 1)]
    p, ring = lane(cap=64)
    try:
        for i in range(31):
            p.log([i, i, i, i], [i])
        assert [b.drain() for b in bells] == [0, 0]
        p.log_input([1, 2, 3, 4])  # the 32nd record fills half the lane
        assert [b.drain() for b in bells] == [1, 1]
        p.log_batch(np.zeros((40, 4)), np.zeros((40, 1)))  # 72: crosses 64
        assert [b.drain() for b in bells] == [1, 1]
        for i in range(23):
            p.log([i, i, i, i], [i])
        assert [b.drain() for b in bells] == [0, 0]
        p.log([1, 2, 3, 4], [5])  # 96
        assert [b.drain() for b in bells] == [1, 1]
        assert ring.write_seq == 96
    finally:
        for b in bells:
            b.close()


# ------------------------------------------------------------------- batches
def test_log_batch_shapes_and_content(lane: MakeLane) -> None:
    p, ring = lane(cap=64)
    xin = np.arange(12, dtype=np.float64).reshape(3, 4)
    first = p.log_batch(xin, [[10], [11], [12]])
    p.log_batch(np.ones((2, 4), dtype=np.int16), np.zeros((2, 1), dtype=bool))
    p.log_batch(np.zeros((0, 4)), np.zeros((0, 1)))
    r = ring.consumer(1).read().records
    assert r["id"].tolist() == list(range(first, first + 5))
    assert r["v"].tolist() == [
        [0, 1, 2, 3, 10],
        [4, 5, 6, 7, 11],
        [8, 9, 10, 11, 12],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],
    ]
    assert set(r["kind"].tolist()) == {KIND_PAIR}
    assert p.log([0, 0, 0, 0], [0]) == first + 5
    # More rows than the lane holds: written in chunks, the overwritten ones lost.
    p.log_batch(np.zeros((150, 4)), np.zeros((150, 1)))
    b = ring.consumer(1).read()
    assert len(b) == 64 and b.lost == 150 + 1 - 64
    assert ring.write_seq == 156 == p.stats()["written"]


BATCH_ERRORS: list[tuple[Any, Any, str]] = [
    (
        np.zeros(4),
        np.zeros((1, 1)),
        f"inputs: expected a 2-D array of shape (n, 4) for fields {NAMES}, got shape (4,)",
    ),
    (
        np.zeros((2, 3)),
        np.zeros((2, 1)),
        f"inputs: expected a 2-D array of shape (n, 4) for fields {NAMES}, got shape (2, 3)",
    ),
    (
        np.zeros((2, 4)),
        np.zeros(2),
        "outputs: expected a 2-D array of shape (n, 1) for fields ['y'], got shape (2,)",
    ),
    (np.zeros((2, 4)), np.zeros((3, 1)), "inputs has 2 rows but outputs has 3"),
    (np.full((1, 4), "x"), np.zeros((1, 1)), "inputs: array dtype must be numeric, got <U1"),
    ([[1, 2, 3, 4]], [["x"]], "outputs: array dtype must be numeric, got <U1"),
]


@pytest.mark.parametrize("xin,xout,msg", BATCH_ERRORS)
def test_log_batch_errors(lane: MakeLane, xin: Any, xout: Any, msg: str) -> None:
    p, ring = lane()
    with pytest.raises(ValueError) as e:
        p.log_batch(xin, xout)
    assert str(e.value) == msg
    assert ring.write_seq == 0


# ------------------------------------------------------------------ threads
def test_four_threads_share_one_producer(lane: MakeLane) -> None:
    p, ring = lane(cap=65536)
    per = 10_000
    ids: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def work(t: int) -> None:
        start.wait()
        out = ids[t]
        for i in range(per):
            if i % 3 == 0:
                out.append(p.log([t, i, 0, 0], [t]))
            elif i % 3 == 1:
                out.append(p.log({"a": t, "b": i}, {"y": t}))
            else:
                out.append(p.log_input(np.array([t, i, 0, 0.0])))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert ring.write_seq == 4 * per == p.stats()["written"]
    r = ring.consumer(1).read(10**6).records
    assert len(r) == 4 * per
    all_ids = r["id"].tolist()
    assert len(set(all_ids)) == 4 * per
    assert sorted(all_ids) == sorted(i for chunk in ids for i in chunk)
    # Each thread's records are in its own order, with its own values.
    for t in range(4):
        mine = r[r["v"][:, 0] == t]
        assert mine["v"][:, 1].tolist() == list(range(per))
        assert mine["id"].tolist() == ids[t]


# --------------------------------------------------------------------- fork
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_does_not_write_into_parents_lane(segs: Segments, run_dir: Path) -> None:
    p = Producer(run_dir, "fk", IN, OUT, start=False)
    ring = Ring.create(segs.new(), p.dtype, 64, 2)
    other = Ring.create(segs.new(), p.dtype, 64, 2)
    server = FakeSupervisor(run_dir, "fk", [ring, other], p.schema())
    try:
        p._start_thread()
        assert p.wait_attached(2.0) and p.stats()["lane"] == ring.name
        p.log([1, 2, 3, 4], [5])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report, never return into pytest
            code = 1
            try:
                os.close(r)
                p.log([9, 9, 9, 9], [9])
                detached = p.stats()["dropped"]["detached"]
                ok = p.wait_attached(2.0)
                p.log([7, 7, 7, 7], [7])
                lane_name, written = p.stats()["lane"], p.stats()["written"]
                p.close()
                os.write(w, f"{detached} {ok} {lane_name} {written}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            report = f.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The child's first record is held until its own lane arrives, whether
        # its attach thread or its first log() ran first: nothing dropped.
        assert report == f"0 True {other.name} 2"
        assert ring.write_seq == 1, "the child wrote into the parent's lane"
        assert other.consumer(0).read().records["v"].tolist() == [[9] * 5, [7] * 5]
        reqs = server.wait_requests(2)
        assert reqs[0]["pid"] == os.getpid() and reqs[0]["prefer"] is None
        assert reqs[1]["pid"] == pid and reqs[1]["prefer"] is None
        p.log([2, 2, 2, 2], [2])  # the parent keeps its lane
        assert ring.write_seq == 2 == p.stats()["written"]
    finally:
        p.close()
        server.stop()
        ring.close()
        other.close()


# ------------------------------------------------ against a fake supervisor
def test_attaches_by_itself_once_a_supervisor_is_up(segs: Segments, run_dir: Path) -> None:
    p = Producer(run_dir, "up", IN, OUT)
    ring = Ring.create(segs.new(), p.dtype, 64, 2)
    server = None
    try:
        time.sleep(0.3)
        p.log([1, 2, 3, 4], [5])
        assert p.stats()["pending"] == 1
        server = FakeSupervisor(run_dir, "up", [ring], p.schema())
        t0 = time.monotonic()
        assert p.wait_attached(1.0), p.stats()
        assert time.monotonic() - t0 <= 1.0
        assert ring.write_seq == 1  # the held record
        p.log([1, 2, 3, 4], [5])
        assert ring.write_seq == 2
        s = p.stats()
        assert (s["attached"], s["connected"], s["lane"], s["attaches"]) == (
            True,
            True,
            ring.name,
            1,
        )
        req = server.requests[0]
        assert {k: req[k] for k in ("op", "pid", "prefer", "payload", "model", "version")} == {
            "op": "lane",
            "pid": os.getpid(),
            "prefer": None,
            "payload": False,
            "model": None,  # the config's only model
            "version": None,
        }
        # The fields it logs go along: the agent checks them, or takes them for an
        # undeclared model (model_logging.allow_undeclared_models).
        assert [f["name"] for f in req["inputs"]] == ["a", "b", "c", "d"]
    finally:
        p.close()
        if server is not None:
            server.stop()
        ring.close()


def test_supervisor_gone_keeps_the_lane_and_asks_for_it_back(segs: Segments, run_dir: Path) -> None:
    p = Producer(run_dir, "rc", IN, OUT, start=False)
    ring = Ring.create(segs.new(), p.dtype, 64, 2)
    server = FakeSupervisor(run_dir, "rc", [ring], p.schema())
    try:
        p._start_thread()
        assert p.wait_attached(2.0)
        p.log([1, 2, 3, 4], [5])
        server.drop_connections()  # the supervisor died (its segments survive)
        deadline = time.monotonic() + 2
        while p.stats()["connected"] and time.monotonic() < deadline:
            time.sleep(0.005)
        for _ in range(10):
            p.log([1, 2, 3, 4], [5])  # still into the lane: nothing dropped
        assert ring.write_seq == 11
        reqs = server.wait_requests(2)  # the same server answers the re-request
        assert reqs[1]["prefer"] == ring.name
        deadline = time.monotonic() + 2
        while not p.stats()["connected"] and time.monotonic() < deadline:
            time.sleep(0.005)
        s = p.stats()
        assert s["attaches"] == 2 and s["connected"] and s["lane"] == ring.name
        assert s["dropped_total"] == 0 and s["written"] == 11
    finally:
        p.close()
        server.stop()
        ring.close()


def test_retired_lane_stops_writing_and_counts(segs: Segments, run_dir: Path) -> None:
    p = Producer(run_dir, "rt", IN, OUT, start=False)
    ring = Ring.create(segs.new(), p.dtype, 64, 2)
    fresh = Ring.create(segs.new(), p.dtype, 64, 2)
    server = FakeSupervisor(run_dir, "rt", [ring, fresh], p.schema())
    try:
        p._start_thread()
        assert p.wait_attached(2.0)
        p.log([1, 2, 3, 4], [5])
        ring.retire()
        p.log([1, 2, 3, 4], [6])
        assert ring.write_seq == 1
        # Held, not dropped: it goes to the next lane.
        assert p.stats()["dropped"]["retired"] == 0
        # It asks for a new lane (not the retired one) and carries on there.
        assert p.wait_attached(2.0)
        deadline = time.monotonic() + 2
        while p.stats()["lane"] != fresh.name and time.monotonic() < deadline:
            time.sleep(0.005)
        assert server.wait_requests(2)[1]["prefer"] is None
        p.log([1, 2, 3, 4], [7])
        assert fresh.write_seq == 2 and ring.write_seq == 1
        assert fresh.consumer(0).read().records["v"][:, 4].tolist() == [6, 7]
        assert p.stats()["dropped_total"] == 0
    finally:
        p.close()
        server.stop()
        ring.close()
        fresh.close()


def test_retired_lane_log_batch_and_log_input(lane: MakeLane) -> None:
    p, ring = lane()
    p._pending_max = 3  # as if pending_records=3
    ring.retire()
    p.log_batch(np.zeros((5, 4)), np.zeros((5, 1)))
    assert ring.write_seq == 0 and p.stats()["dropped"]["retired"] == 2
    assert p.stats()["pending"] == 3
    p.log_input([1, 2, 3, 4])  # detached now (no supervisor thread here)
    assert ring.write_seq == 0 and p.stats()["dropped"]["detached"] == 1


def test_schema_mismatch_refuses_the_lane(segs: Segments, run_dir: Path) -> None:
    p = Producer(run_dir, "sm", IN, OUT, start=False)
    ring = Ring.create(segs.new(), p.dtype, 64, 2)
    theirs = {"inputs": [{"name": "q"}] * 4, "outputs": [{"name": "y"}]}
    server = FakeSupervisor(run_dir, "sm", [ring], theirs)
    try:
        p.log([1, 2, 3, 4], [5])
        p._start_thread()
        server.wait_requests(2)
        assert not p.attached
        s = p.stats()
        assert s["dropped"]["schema_mismatch"] == 1 and s["dropped"]["detached"] == 0
        assert "model schema differs" in s["last_error"]
    finally:
        p.close()
        server.stop()
        ring.close()


def test_schema_from_the_supervisor_when_none_declared(segs: Segments, run_dir: Path) -> None:
    probe = Producer(run_dir, "x", IN, OUT, start=False)
    ring = Ring.create(segs.new(), probe.dtype, 64, 2)
    server = FakeSupervisor(run_dir, "ns", [ring], probe.schema())
    p = Producer(run_dir, "ns")
    try:
        assert p.wait_attached(2.0)
        assert p.schema() == probe.schema()
        p.log({"a": 1}, [2])
        assert ring.consumer(0).read().records["v"][0, [0, 4]].tolist() == [1, 2]
    finally:
        p.close()
        probe.close()
        server.stop()
        ring.close()


def test_schemaless_detached_producer_counts_instead_of_raising(run_dir: Path) -> None:
    p = Producer(run_dir, "nobody", start=False)
    try:
        p.log([1, 2, 3, 4], [5])
        assert p.stats()["dropped"]["detached"] == 1
    finally:
        p.close()


# ----------------------------------------------------------------- imports
IMPORTS = textwrap.dedent(
    """
    import sys
    import edge_actors
    assert "edge_actors.producer" not in sys.modules  # lazy
    P = edge_actors.Producer
    import edge_actors.producer
    assert P is edge_actors.producer.Producer
    import edge_actors.monitor
    agent = ("scipy", "boto3", "botocore", "psutil")
    agent += ("edge_actors.supervisor", "edge_actors.workers")
    heavy = sorted(m for m in sys.modules if any(m == a or m.startswith(a + ".") for a in agent))
    print(heavy)
    """
)


def test_producer_imports_nothing_heavy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS],
        capture_output=True,
        text=True,
        timeout=300,  # slow boards: importing takes tens of seconds
        env=python_env(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# The connect() path (config loading included) is checked in
# tests/test_supervisor.py::test_connect_imports_neither_scipy_nor_boto3.


def test_packed_record_and_payload_head_are_the_ring_layouts() -> None:
    """The struct the producer packs is the lane record byte for byte; the payload head too."""
    from edge_actors.records import PAYLOAD_HEAD, model_struct, payload_dtype

    st = model_struct(3)
    raw = st.pack(123, 7, 2, 1.5, -2.0, 3.25)
    rec = np.frombuffer(raw, dtype=model_dtype(3))[0]
    assert (int(rec["t_ns"]), int(rec["id"]), int(rec["kind"])) == (123, 7, 2)
    assert rec["v"].tolist() == [1.5, -2.0, 3.25]
    dt = payload_dtype(64)
    buf = bytearray(dt.itemsize)
    PAYLOAD_HEAD.pack_into(buf, 0, 9, 8, 1, 2)
    buf[PAYLOAD_HEAD.size : PAYLOAD_HEAD.size + 2] = b"{}"
    p = np.frombuffer(bytes(buf), dtype=dt)[0]
    assert [int(p[k]) for k in ("t_ns", "id", "kind", "len")] == [9, 8, 1, 2]
    assert bytes(p["data"][:2]) == b"{}"
