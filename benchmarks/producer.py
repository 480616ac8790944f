"""Producer hot path and ring throughput against multiprocessing baselines; prints ONE JSON object.

    python benchmarks/producer.py [--quick] [--log-only]

Figures (same run, same machine):

* ``log_ns``: per ``Producer.log(inputs, outputs)`` call with 8 input floats and
  1 output, each call timed with ``perf_counter_ns`` minus the measured timer
  overhead, after a warm-up; p50/p99 for a list, a numpy array and a dict input.
* ``log_floor_ns``: the baseline of ``log_ns``, timed the same way: a pure-Python
  pack-and-copy of the same record (``struct.pack_into`` a scratch buffer, copy
  it into a lane slot: no lock, no stamps, no checks), the least a Python
  ``log()`` can cost; ``log_vs_floor`` is the list p50 over it. Beside it, the
  parts of ``log()`` the floor leaves out, each timed alone:
  ``lock_pair_ns`` (the in-process lock's acquire + release) and
  ``ring_put_ns`` (``RingWriter.put``, the write protocol without the packing).
* ``log_batch_records_per_s``: ``log_batch`` of 100k-row arrays.
* ``end_to_end_records_per_s``: producer → consumer *process*, records delivered
  per second, for the ring (a subprocess calling ``read()`` in a loop), a
  ``multiprocessing.Queue`` (put → get) and a ``multiprocessing.Pipe``
  (``send_bytes`` → ``recv_bytes``) of the same struct-packed record.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_actors import shm  # noqa: E402
from edge_actors.fence import fence_kind  # noqa: E402
from edge_actors.producer import Producer  # noqa: E402
from edge_actors.records import model_dtype, model_struct  # noqa: E402
from edge_actors.ring import HEADER_SIZE, Ring  # noqa: E402

N_IN = 8
INPUTS = [f"f{i}" for i in range(N_IN)]
OUTPUTS = ["score"]
TARGETS = {
    "log_p50_ns_max": 1000,
    "log_p99_ns_max": 5000,
    "log_batch_records_per_s_min": 20_000_000,
    "ring_vs_queue_min": 5.0,
}
RECORD = struct.Struct(f"<qqq{N_IN + 1}d")

RING_CONSUMER = """
import json, sys, time
from edge_actors.records import model_dtype
from edge_actors.ring import Ring
ring = Ring.attach(sys.argv[1], model_dtype(int(sys.argv[2])))
n = int(sys.argv[3])
c = ring.consumer(0)
print("ready", flush=True)
got = lost = 0
checksum = 0.0
while got + lost < n:
    b = c.read(65536)
    if len(b):
        got += len(b)
        checksum += float(b.records["v"][-1, 0])
    lost += b.lost
print(json.dumps({"got": got, "lost": lost}), flush=True)
"""


def _timer_overhead_ns() -> int:
    pc = time.perf_counter_ns
    samples = np.empty(200_000, np.int64)
    for i in range(len(samples)):
        t0 = pc()
        samples[i] = pc() - t0
    return int(np.median(samples))


def _percentiles(samples: np.ndarray[Any, Any], overhead: int) -> dict[str, float]:
    s = np.maximum(samples - overhead, 0)
    return {
        "p50": float(np.percentile(s, 50)),
        "p99": float(np.percentile(s, 99)),
        "mean": float(s.mean()),
    }


def _attached_producer(name: str, cap: int) -> tuple[Producer, Ring, socket.socket]:
    p = Producer(tempfile.gettempdir(), "bench", INPUTS, OUTPUTS, start=False)
    ring = Ring.create(name, p.dtype, cap, 2)
    ours, theirs = socket.socketpair()
    p._attach(ours, {"lane": name, **p.schema()})
    return p, ring, theirs


def bench_log(name: str, n: int, overhead: int) -> dict[str, Any]:
    p, ring, keep = _attached_producer(name, 1 << 14)
    pc = time.perf_counter_ns
    log = p.log
    out: dict[str, Any] = {}
    forms = {
        "list": [float(i) for i in range(N_IN)],
        "numpy": np.arange(N_IN, dtype=np.float64),
        "dict": {f: float(i) for i, f in enumerate(INPUTS)},
    }
    y = [0.5]
    for label, x in forms.items():
        for _ in range(min(n, 50_000)):  # warm-up
            log(x, y)
        samples = np.empty(n, np.int64)
        for i in range(n):
            t0 = pc()
            log(x, y)
            samples[i] = pc() - t0
        out[label] = _percentiles(samples, overhead)
    # Untimed loop: the throughput of back-to-back calls, no per-call timer.
    x = forms["list"]
    t0 = pc()
    for _ in range(n):
        log(x, y)
    out["list_loop_ns_per_call"] = (pc() - t0) / n
    assert p.stats()["dropped_total"] == 0
    p.close()
    ring.close()
    keep.close()
    shm.unlink(name)
    return out


def _time_calls(fn: Any, n: int, overhead: int) -> dict[str, float]:
    """p50/p99/mean of ``fn()`` timed one call at a time, after a warm-up."""
    pc = time.perf_counter_ns
    for _ in range(min(n, 50_000)):
        fn()
    samples = np.empty(n, np.int64)
    for i in range(n):
        t0 = pc()
        fn()
        samples[i] = pc() - t0
    return _percentiles(samples, overhead)


def bench_floor(name: str, n: int, overhead: int) -> dict[str, Any]:
    """The baseline of ``log``, and the two costs ``log`` adds to it, timed like ``log``."""
    n_values = N_IN + 1
    ring = Ring.create(name, model_dtype(n_values), 1 << 14, 2)
    st = model_struct(n_values)
    scratch = bytearray(st.size)
    pack_into, time_ns = st.pack_into, time.time_ns
    buf, mask, slot, size = ring.buf, ring.mask, ring.slot_size, st.size
    first = HEADER_SIZE + 8
    x = [float(i) for i in range(N_IN)]
    y = [0.5]
    state = [0]

    def pack_and_copy() -> None:
        # What log() cannot do without: validate-and-pack, then one copy into the slot.
        i = state[0]
        state[0] = i + 1
        pack_into(scratch, 0, time_ns(), i, 0, *x, *y)
        off = first + (i & mask) * slot
        buf[off : off + size] = scratch

    lock = threading.Lock()
    acquire, release = lock.acquire, lock.release

    def lock_pair() -> None:
        acquire()
        release()

    floor = _time_calls(pack_and_copy, n, overhead)
    locks = _time_calls(lock_pair, n, overhead)
    put = ring.writer().put
    puts = _time_calls(lambda: put(scratch), n, overhead)
    ring.close()
    shm.unlink(name)
    return {"floor": floor, "lock_pair": locks, "ring_put": puts}


def bench_log_batch(name: str, rows: int, repeats: int) -> float:
    p, ring, keep = _attached_producer(name, 1 << 17)
    xin = np.random.default_rng(0).random((rows, N_IN))
    xout = np.random.default_rng(1).random((rows, 1))
    p.log_batch(xin, xout)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        p.log_batch(xin, xout)
        best = min(best, time.perf_counter() - t0)
    p.close()
    ring.close()
    keep.close()
    shm.unlink(name)
    return rows / best


def _spawn_consumer(name: str, n: int) -> subprocess.Popen[str]:
    """The consumer process of the end-to-end runs, ready to read ``n`` records."""
    cons = subprocess.Popen(
        [sys.executable, "-c", RING_CONSUMER, name, str(N_IN + 1), str(n)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert cons.stdout is not None
    assert cons.stdout.readline().strip() == "ready"
    return cons


def _finish(cons: subprocess.Popen[str], p: Any, ring: Any, keep: Any, name: str) -> Any:
    """Wait for the consumer's tally, then release everything."""
    assert cons.stdout is not None
    res = json.loads(cons.stdout.readline())
    cons.wait()
    cons.stdout.close()
    p.close()
    ring.close()
    keep.close()
    shm.unlink(name)
    return res


def bench_ring_e2e_batch(name: str, n: int, rows: int = 1000) -> float:
    """Records/s through the ring to a consumer process when the app logs with log_batch."""
    p, ring, keep = _attached_producer(name, 1 << 18)
    cons = _spawn_consumer(name, n)
    xin = np.ones((rows, N_IN))
    xout = np.ones((rows, 1))
    t0 = time.perf_counter()
    for _ in range(n // rows):
        p.log_batch(xin, xout)
        # Pace to the consumer: this measures delivery, not overwriting.
        while ring.write_seq - ring.consumer_line(0)["read_seq"] > (1 << 17):
            time.sleep(0)
    res = _finish(cons, p, ring, keep, name)
    elapsed = time.perf_counter() - t0
    return float(res["got"] / elapsed)


def bench_ring_e2e(name: str, n: int) -> dict[str, Any]:
    p, ring, keep = _attached_producer(name, 1 << 18)
    cons = _spawn_consumer(name, n)
    x = [float(i) for i in range(N_IN)]
    y = [0.5]
    log = p.log
    t0 = time.perf_counter()
    for _ in range(n):
        log(x, y)
    t_write = time.perf_counter() - t0
    res = _finish(cons, p, ring, keep, name)
    elapsed = time.perf_counter() - t0
    return {
        "records_per_s": res["got"] / elapsed,
        "delivered": res["got"],
        "lost": res["lost"],
        "producer_only_records_per_s": n / t_write,
    }


def _queue_consumer(q: Any, n: int, done: Any) -> None:
    for _ in range(n):
        q.get()
    done.put(n)


def _pipe_consumer(conn: Any, n: int) -> None:
    for _ in range(n):
        conn.recv_bytes()
    conn.send_bytes(b"done")


def _record_bytes(i: int) -> bytes:
    return RECORD.pack(time.time_ns(), i, 0, *([float(i)] * (N_IN + 1)))


def bench_queue(n: int) -> float:
    ctx = mp.get_context("fork")
    q, done = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_queue_consumer, args=(q, n, done))
    proc.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    for i in range(n):
        q.put(_record_bytes(i))
    done.get()
    elapsed = time.perf_counter() - t0
    proc.join()
    return n / elapsed


def bench_pipe(n: int) -> float:
    ctx = mp.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_pipe_consumer, args=(theirs, n))
    proc.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    for i in range(n):
        ours.send_bytes(_record_bytes(i))
    ours.recv_bytes()
    elapsed = time.perf_counter() - t0
    proc.join()
    return n / elapsed


def main() -> None:
    quick = "--quick" in sys.argv
    n_log = 50_000 if quick else 200_000
    n_e2e = 200_000 if quick else 1_000_000
    n_q = 50_000 if quick else 200_000
    base = f"eab{os.getpid() % 100000}_"
    t_start = time.perf_counter()
    overhead = _timer_overhead_ns()
    if "--log-only" in sys.argv:
        # The hot path alone, with its baseline (a quick before/after check).
        try:
            log_ns = bench_log(base + "log", n_log, overhead)
            parts = bench_floor(base + "floor", n_log, overhead)
        finally:
            for name in shm.list_names(base):
                shm.unlink(name)
        print(json.dumps(_log_result(log_ns, parts, overhead, t_start)))
        return
    try:
        log_ns = bench_log(base + "log", n_log, overhead)
        parts = bench_floor(base + "floor", n_log, overhead)
        batch = bench_log_batch(base + "batch", 100_000, 5)
        ring = bench_ring_e2e(base + "e2e", n_e2e)
        ring_batch = bench_ring_e2e_batch(base + "e2eb", n_e2e * 4)
        queue = bench_queue(n_q)
        pipe = bench_pipe(n_q)
    finally:
        for name in shm.list_names(base):
            shm.unlink(name)
    ratio = ring["records_per_s"] / queue
    result = {
        **_log_result(log_ns, parts, overhead, t_start),
        "log_batch_records_per_s": batch,
        "end_to_end_records_per_s": {
            "ring": ring["records_per_s"],
            "mp_queue": queue,
            "mp_pipe": pipe,
        },
        "ring_detail": ring,
        "ring_vs_queue": ratio,
        "ring_batch_records_per_s": ring_batch,
        "ring_batch_vs_queue": ring_batch / queue,
        "ring_vs_pipe": ring["records_per_s"] / pipe,
        "targets": TARGETS,
        "meets_targets": {
            "log_p50": log_ns["list"]["p50"] <= TARGETS["log_p50_ns_max"],
            "log_p99": log_ns["list"]["p99"] <= TARGETS["log_p99_ns_max"],
            "log_batch": batch >= TARGETS["log_batch_records_per_s_min"],
            "ring_vs_queue": ratio >= TARGETS["ring_vs_queue_min"],
        },
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(result))


def _log_result(
    log_ns: dict[str, Any], parts: dict[str, Any], overhead: int, t_start: float
) -> dict[str, Any]:
    """The ``log`` figures with their same-run baseline."""
    return {
        "benchmark": "producer",
        "timer_overhead_ns": overhead,
        "fence": fence_kind(),
        "log_ns": log_ns,
        "log_floor_ns": parts["floor"],
        "log_vs_floor": log_ns["list"]["p50"] / max(parts["floor"]["p50"], 1.0),
        "lock_pair_ns": parts["lock_pair"],
        "ring_put_ns": parts["ring_put"],
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "seconds": round(time.perf_counter() - t_start, 1),
    }


if __name__ == "__main__":
    main()
