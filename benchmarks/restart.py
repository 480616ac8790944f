"""SIGKILL of a worker → replacement heartbeating and consuming again; median over 20 kills.

Runs the default config with a producer logging ~2,000 records/s. Each kill
waits until the worker has run longer than ``restart_stable_seconds`` so the
backoff is reset: this measures the restart path itself, not the backoff.
Target: median <= 300 ms.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time

from agentlib import Agent, machine

KILLS = 20
WORKERS = ("uploader", "drift", "sampler")


def main() -> None:
    agent = Agent(
        supervisor={
            "heartbeat_interval_seconds": 0.02,
            "restart_stable_seconds": 0.5,
            "max_restarts": 1000,
        },
    )
    try:
        agent.start()
        from edge_actors.producer import Producer

        m = agent.cfg["model"]
        prod = Producer(agent.cfg["run_dir"], agent.cfg["instance"], m["inputs"], m["outputs"])
        prod.wait_attached(5)
        stop = threading.Event()

        def feed() -> None:
            i = 0
            while not stop.is_set():
                prod.log([3, 2, 1500.0 + i % 300, 20], [300000.0, 0.9])
                i += 1
                time.sleep(0.0005)

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        time.sleep(1.0)
        ready: dict[str, list[float]] = {w: [] for w in WORKERS}
        consuming: dict[str, list[float]] = {w: [] for w in WORKERS}
        for k in range(KILLS):
            name = WORKERS[k % len(WORKERS)]
            old = agent.status()["workers"][name]["pid"]
            t0 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            agent.wait(
                lambda s, n=name, o=old: (
                    s["workers"][n]["pid"] not in (None, o)
                    and s["workers"][n]["state"] == "running"
                ),
                poll=0.002,
            )
            ready[name].append(time.perf_counter() - t0)
            if name != "sampler":
                agent.wait(
                    lambda s, n=name, o=old: (
                        s["workers"][n]["pid"] not in (None, o) and s["workers"][n]["progress"] > 0
                    ),
                    poll=0.002,
                )
                consuming[name].append(time.perf_counter() - t0)
            time.sleep(0.7)
        stop.set()
        t.join()
        prod.close()
        all_ready = [x for v in ready.values() for x in v]
        all_cons = [x for v in consuming.values() for x in v]
        out = {
            "benchmark": "restart",
            "kills": KILLS,
            "median_ms_to_heartbeating": round(statistics.median(all_ready) * 1000, 1),
            "median_ms_to_consuming": round(statistics.median(all_cons) * 1000, 1),
            "max_ms_to_consuming": round(max(all_cons) * 1000, 1),
            "per_worker_median_ms_ready": {
                w: round(statistics.median(v) * 1000, 1) for w, v in ready.items() if v
            },
            "per_worker_median_ms_consuming": {
                w: round(statistics.median(v) * 1000, 1) for w, v in consuming.items() if v
            },
            "target_ms": 300,
            "status_poll_ms": 2,
            "heartbeat_interval_ms": 20,
            "machine": machine(),
        }
        print(json.dumps(out))
    finally:
        agent.stop()


if __name__ == "__main__":
    main()
