"""CPU per memory check of one worker-like process: psutil's walk against the gauge.

The supervisor checks every worker's USS every 2 s and the sampler reads every
watched process's memory per sample. The process measured here maps a 64 MB
shared segment (like a worker mapping the rings) and holds 32 MB of its own, within its budget, so
``smaps_rollup`` has real page tables to walk. Prints one JSON object: CPU µs
(user + system of this process) per reading for psutil's ``memory_full_info``
(the previous way), the gauge within budget (steady state) and one walk.

Usage: ``python benchmarks/memory_check.py [--reads 300]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import psutil

from edge_actors.procmem import MemoryGauge, full_memory_of

_WORKER = """
import sys
import numpy as np
from multiprocessing import shared_memory
seg = shared_memory.SharedMemory(create=True, size=64 << 20)
np.ndarray((64 << 20,), np.uint8, seg.buf)[:] = 1
own = np.ones(32 << 20, np.uint8)
print("ready", flush=True)
sys.stdin.readline()
seg.close()
seg.unlink()
"""


def _cpu_us_per_call(fn: Callable[[], object], n: int) -> float:
    t0 = os.times()
    for _ in range(n):
        fn()
    t1 = os.times()
    return (t1.user - t0.user + t1.system - t0.system) / n * 1e6


def main() -> None:
    """Measure and print one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reads", type=int, default=300)
    args = ap.parse_args()
    child = subprocess.Popen(
        [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        pid = child.pid
        proc = psutil.Process(pid)
        # A budget the worker is within (as a healthy worker is): RSS decides.
        budget = 2 * full_memory_of(pid).rss
        gauge = MemoryGauge(max_age=30.0)
        gauge.read(pid, budget)
        walks0 = gauge.walks
        t0 = time.monotonic()
        psutil_us = _cpu_us_per_call(proc.memory_full_info, args.reads)
        gauge_us = _cpu_us_per_call(lambda: gauge.read(pid, budget), args.reads)
        walk_us = _cpu_us_per_call(lambda: full_memory_of(pid), args.reads)
        mem = full_memory_of(pid)
        out = {
            "benchmark": "memory_check",
            "reads": args.reads,
            "process_rss_mb": round(mem.rss / 2**20, 1),
            "process_uss_mb": round(mem.uss / 2**20, 1),
            "psutil_memory_full_info_us": round(psutil_us, 1),
            "own_smaps_rollup_walk_us": round(walk_us, 1),
            "gauge_within_budget_us": round(gauge_us, 1),
            "gauge_walks": gauge.walks - walks0,
            "seconds": round(time.monotonic() - t0, 2),
            "speedup": round(psutil_us / max(gauge_us, 0.01), 1),
        }
        print(json.dumps(out))
    finally:
        if child.stdin is not None:
            child.stdin.write("\n")
            child.stdin.flush()
        child.wait(10)


if __name__ == "__main__":
    main()
