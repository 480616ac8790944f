"""Memory and idle CPU of the whole agent, start-up time, and what the producer adds to an app.

- Default config, all workers up, no producer: after ``--settle`` seconds (30),
  the sum of PSS of the supervisor and every worker, and their CPU time over
  the next ``--window`` seconds (30) as a share of one core.
  Targets: <= 80 MB total PSS, <= 1 % of one core.
- Start-up: ``edge-actors run`` to READY=1 on a notify socket (as systemd
  sees it). Target <= 1.5 s.
- Producer: USS of a fresh interpreter after ``import numpy``, then after
  ``connect()`` and 10,000 ``log`` calls. Target <= 5 MB added.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil
from agentlib import REPO, Agent, machine

PRODUCER_PROBE = r"""
import json, sys, psutil
proc = psutil.Process()
import numpy
before = proc.memory_full_info().uss
import edge_actors
p = edge_actors.connect(sys.argv[1])
p.wait_attached(5)
for i in range(10000):
    p.log([3, 2, 1500.0 + i, 20], [300000.0, 0.9])
after = proc.memory_full_info().uss
heavy = [m for m in ("scipy", "scipy.stats", "boto3", "botocore") if m in sys.modules]
print(json.dumps({"uss_numpy_mb": before / 2**20, "uss_after_mb": after / 2**20,
                  "attached": p.stats()["attached"], "heavy_modules": heavy}))
p.close()
"""


def _tree(pids: list[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return procs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settle", type=float, default=30.0)
    ap.add_argument("--window", type=float, default=30.0)
    args = ap.parse_args()

    startups = []
    for _ in range(3):
        a = Agent()
        try:
            startups.append(a.start(notify=True))
        finally:
            a.stop()

    agent = Agent()
    try:
        agent.start()
        time.sleep(args.settle)
        procs = _tree(agent.pids())
        pss = {}
        for p in procs:
            info = p.memory_full_info()
            pss[p.pid] = (p.cmdline()[-1] if p.pid == agent.proc.pid else "", info.pss, info.uss)
        st = agent.status()
        names = {w["pid"]: n for n, w in st["workers"].items() if w["pid"]}
        names[agent.proc.pid] = "supervisor"
        cpu0 = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
        t0 = time.monotonic()
        time.sleep(args.window)
        cpu1 = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
        elapsed = time.monotonic() - t0
        cpu_pct = {
            names.get(pid, str(pid)): 100 * (cpu1[pid] - cpu0[pid]) / elapsed for pid in cpu0
        }
        probe = subprocess.run(
            [sys.executable, "-c", PRODUCER_PROBE, str(agent.path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        prod = json.loads(probe.stdout) if probe.returncode == 0 else {"error": probe.stderr[-500:]}
    finally:
        agent.stop()
    total_pss = sum(v[1] for v in pss.values()) / 2**20
    out = {
        "benchmark": "footprint",
        "total_pss_mb": round(total_pss, 1),
        "pss_mb": {names.get(pid, str(pid)): round(v[1] / 2**20, 1) for pid, v in pss.items()},
        "uss_mb": {names.get(pid, str(pid)): round(v[2] / 2**20, 1) for pid, v in pss.items()},
        "idle_cpu_percent_of_one_core": round(sum(cpu_pct.values()), 2),
        "idle_cpu_by_process": {k: round(v, 2) for k, v in cpu_pct.items()},
        "startup_to_ready_s": {
            "median": round(sorted(startups)[len(startups) // 2], 3),
            "all": [round(s, 3) for s in startups],
        },
        "producer_added_uss_mb": round(prod["uss_after_mb"] - prod["uss_numpy_mb"], 2)
        if "uss_after_mb" in prod
        else None,
        "producer_probe": prod,
        "settle_s": args.settle,
        "window_s": args.window,
        "targets": {
            "total_pss_mb": 80,
            "idle_cpu_percent_of_one_core": 1.0,
            "startup_to_ready_s": 1.5,
            "producer_added_uss_mb": 5,
        },
        "machine": machine(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
