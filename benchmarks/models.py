"""Memory and CPU per additional monitored model in the agent.

A real agent runs with ``K`` models declared (``models:``, each with the house
model's six fields and reference) for ``K`` in ``--counts`` (1, 2, 4, 8); one
process holds one producer per model, each logging ``--rate`` predictions/s.
After ``--settle`` seconds, over ``--window`` seconds: the agent's memory
(PSS of supervisor and workers, and the drift worker's USS) and CPU (share
of one core, all agent processes), and the shared memory of the lanes (from
``status``). The per-model figures are the slope between the smallest and
the largest ``K``; the baseline is the one-model agent of the same run.

    python benchmarks/models.py [--counts 1 2 4 8] [--rate 200] [--window 10]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import psutil
from agentlib import Agent, machine

INPUTS = ["bedrooms", "bathrooms", "sqft", "age"]
OUTPUTS = ["price", "confidence"]


def _feed(producers: list[Any], rate: float, stop: threading.Event) -> None:
    """Every producer logs ``rate`` house predictions per second, in 10 ms ticks."""
    per_tick = max(1, round(rate / 100))
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        for p in producers:
            for _ in range(per_tick):
                p.log([3, 2, 1500.0 + (i % 500), 20], [300000.0, 0.9])
        i += 1
        next_at += 0.01
        stop.wait(max(0.0, next_at - time.monotonic()))


def _measure(k: int, rate: float, settle: float, window: float) -> dict[str, Any]:
    from edge_actors.producer import Producer

    models = [{"name": f"model{i}", "inputs": INPUTS, "outputs": OUTPUTS} for i in range(k)]
    a = Agent(model=None, models=models)
    a.cfg.pop("model", None)
    a.path.write_text(__import__("yaml").safe_dump(a.cfg))
    a.start()
    producers = []
    stop = threading.Event()
    try:
        for m in models:
            p = Producer(a.cfg["run_dir"], a.cfg["instance"], INPUTS, OUTPUTS, model=str(m["name"]))
            assert p.wait_attached(10), p.stats()
            producers.append(p)
        feeder = threading.Thread(target=_feed, args=(producers, rate, stop), daemon=True)
        feeder.start()
        time.sleep(settle)
        procs = [psutil.Process(pid) for pid in a.pids()]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
        t0 = time.monotonic()
        time.sleep(window)
        cpu = (sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0) / (time.monotonic() - t0)
        pss = sum(p.memory_full_info().pss for p in procs)
        st = a.status()
        drift_pid = st["workers"]["drift"]["pid"]
        drift_uss = psutil.Process(drift_pid).memory_full_info().uss
        from edge_actors import topology
        from edge_actors.config import load_config
        from edge_actors.ring import Ring

        cfg = load_config(a.path)
        lane_bytes = Ring.layout_size(
            topology.dtype_for("lane", cfg), topology.capacity_for("lane", cfg)
        )[1]
        lanes = [r for r in st["rings"] if r.get("kind") == "lane"]
        shm = lane_bytes * len(lanes)
        drift = st["workers"]["drift"]["stats"]
        monitored = sorted(drift.get("models", {}))
        return {
            "models": k,
            "agent_pss_mb": round(pss / 2**20, 2),
            "drift_uss_mb": round(drift_uss / 2**20, 2),
            "agent_cpu_share": round(cpu, 4),
            "lane_shm_mb": round(shm / 2**20, 3),
            "lanes": len(lanes),
            "monitored": len(monitored),
            "records_per_s": rate * k,
        }
    finally:
        stop.set()
        for p in producers:
            p.close()
        a.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--rate", type=float, default=200.0, help="predictions/s per model")
    ap.add_argument("--settle", type=float, default=8.0)
    ap.add_argument("--window", type=float, default=10.0)
    args = ap.parse_args()
    runs = [_measure(k, args.rate, args.settle, args.window) for k in args.counts]
    lo, hi = runs[0], runs[-1]
    extra = max(1, hi["models"] - lo["models"])

    def slope(key: str) -> float:
        return round((hi[key] - lo[key]) / extra, 4)

    print(
        json.dumps(
            {
                "benchmark": "models",
                "machine": machine(),
                "rate_per_model": args.rate,
                "runs": runs,
                "per_additional_model": {
                    "agent_pss_mb": slope("agent_pss_mb"),
                    "drift_uss_mb": slope("drift_uss_mb"),
                    "agent_cpu_share": slope("agent_cpu_share"),
                    "lane_shm_mb": slope("lane_shm_mb"),
                },
                "baseline_one_model": lo,
                "ratio_largest_to_one": {
                    "agent_pss": round(hi["agent_pss_mb"] / lo["agent_pss_mb"], 3),
                    "agent_cpu": round(hi["agent_cpu_share"] / max(lo["agent_cpu_share"], 1e-9), 3),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
