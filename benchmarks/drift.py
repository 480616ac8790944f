"""The drift worker under sustained load, in a real agent; prints ONE JSON object.

    python benchmarks/drift.py [--quick] [--seconds S] [--records N]

A real ``edge-actors run`` (supervisor + workers) on a temp config with
8 input features + 1 output (``f0..f7``, ``y``), a temp JSON reference of
10,000 standard-normal samples per field, ``model_logging.buffer_size``
262144. Feeder processes (``Producer.log_batch`` of 2-D numpy arrays, paced
every 10 ms) write stationary normal records at

* 20,000 records/s (one feeder): target ``effective_check_frequency ==
  configured_check_frequency`` (100) throughout the load;
* 100,000 records/s (two feeders of 50,000/s): target ring ``lost == 0`` for
  the drift consumer line (``consumers[1]``) of every lane: every record
  consumed; the effective cadence stretches (shown).

for ``--seconds`` (20) each, on a fresh agent each. Reported from
``status``: ``workers.drift.stats`` (``records``, effective / configured
cadence, ``lost`` per lane) and the lane rings' consumer lines (drift =
``consumers[1]``, uploader = ``consumers[0]``: the uploader also reads the
lanes, its own loss is shown but is not the drift target), plus the drift
worker's USS (psutil ``memory_full_info().uss``, sampled every second under
load; target <= 40 MB) and CPU % of one core (and the uploader's).

Then ``benchmarks/drift_stats.py`` runs as a subprocess and its JSON is
embedded under ``"stats"``: KS check cost vs ``scipy.stats.ks_2samp``, false
alarms over ``--records`` stationary records (calibrated, target <= 15) vs
per_check mode, median detection delays for 0.5 sd (<= 2,000 records) and
0.2 sd (<= 10,000). ``--quick``: 8 s phases, 2,000,000 records, 10 seeds.

Then ``benchmarks/drift_cases.py`` (``--quick`` too) is embedded under
``"cases"``: false starts per million and delays on AR(1), small categorical
references, new categories, ties and NaN rates, river's KSWIN/ADWIN and naive
``ks_2samp`` as peers, and the worst drift-worker step with 50 features
drifting at once against the heartbeat interval.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from agentlib import REPO, Agent, machine, run_json

INPUTS = [f"f{i}" for i in range(8)]
OUTPUTS = ["y"]
N_REF = 10_000
TARGETS = {
    "uss_mb_max": 40.0,
    "effective_cadence_at_20k": 100,
    "drift_lost_at_100k": 0,
    "false_alarms_calibrated_max": 15,
    "median_delay_0.5sd_max": 2000,
    "median_delay_0.2sd_max": 10000,
}

FEEDER = r"""
import json, sys, time
import numpy as np
from edge_actors.producer import Producer
run_dir, instance, rate, seconds, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), \
    float(sys.argv[4]), int(sys.argv[5])
inputs = [f"f{i}" for i in range(8)]
p = Producer(run_dir, instance, inputs, ["y"])
attached = p.wait_attached(10)
rng = np.random.default_rng(seed)
pool = rng.normal(size=(1 << 16, 9))
print("ready", flush=True)
sys.stdin.readline()  # go
t0 = time.perf_counter()
sent = 0
pos = 0
late = 0
while True:
    now = time.perf_counter() - t0
    if now >= seconds:
        break
    due = int(rate * now) - sent
    while due > 0:
        k = min(due, 4096, len(pool) - pos)
        chunk = pool[pos : pos + k]
        p.log_batch(chunk[:, :8], chunk[:, 8:])
        sent += k
        due -= k
        pos = (pos + k) % len(pool)
    nxt = (sent + max(1, int(rate / 100))) / rate
    wait = nxt - (time.perf_counter() - t0)
    if wait > 0:
        time.sleep(wait)
    else:
        late += 1
elapsed = time.perf_counter() - t0
st = p.stats()
print(json.dumps({"attached": attached, "sent": sent, "seconds": elapsed,
                  "rate": sent / elapsed, "written": st["written"],
                  "dropped_total": st["dropped_total"], "late_ticks": late}), flush=True)
sys.stdin.readline()  # keep the lane until the benchmark has read the ring lines
p.close()
"""


def write_reference(path: Path) -> None:
    rng = np.random.default_rng(12345)
    ref = {name: rng.normal(size=N_REF).round(6).tolist() for name in INPUTS + OUTPUTS}
    path.write_text(json.dumps(ref))


def _lanes(st: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in st["rings"] if r["kind"] == "lane"]


def _cpu(p: psutil.Process) -> float:
    """CPU seconds of a worker; NaN if it was restarted meanwhile (see its restarts)."""
    try:
        t = p.cpu_times()
    except psutil.NoSuchProcess:
        return float("nan")
    return float(t.user + t.system)


def run_phase(
    ref: Path, rate: float, feeders: int, seconds: float, **overrides: Any
) -> dict[str, Any]:
    """One fresh agent, ``feeders`` processes at ``rate`` records/s in total."""
    agent = Agent(
        **overrides,
        model={"name": "bench8", "inputs": INPUTS, "outputs": OUTPUTS},
        model_logging__buffer_size=262144,
        drift_detection__reference_data_path=str(ref),
        # Stats ride on heartbeats (every 2 s at most): a 0.5 s heartbeat keeps them fresh.
        supervisor__heartbeat_interval_seconds=0.5,
    )
    procs: list[subprocess.Popen[str]] = []
    try:
        agent.start()
        st = agent.wait(lambda s: s["workers"]["drift"]["state"] == "running")
        drift_pid = st["workers"]["drift"]["pid"]
        up_pid = st["workers"]["uploader"]["pid"]
        dproc, uproc = psutil.Process(drift_pid), psutil.Process(up_pid)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for k in range(feeders):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        FEEDER,
                        agent.cfg["run_dir"],
                        agent.cfg["instance"],
                        str(rate / feeders),
                        str(seconds),
                        str(100 + k),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=REPO,
                    env=env,
                )
            )
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"feeder failed to start: {line!r}")
        agent.wait(lambda s: len(_lanes(s)) >= feeders)
        uss0 = dproc.memory_full_info().uss
        cpu_d0, cpu_u0 = _cpu(dproc), _cpu(uproc)
        t0 = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        uss: list[int] = []
        eff: list[int] = []
        pend: list[int] = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            try:
                uss.append(dproc.memory_full_info().uss)
                s = agent.status()
                e = s["workers"]["drift"]["stats"].get("effective_check_frequency")
                if e is not None:
                    eff.append(int(e))
                pend.append(sum(r["consumers"][1]["pending"] for r in _lanes(s)))
            except (psutil.NoSuchProcess, OSError):
                pass
        fed = []
        for p in procs:
            assert p.stdout is not None
            fed.append(json.loads(p.stdout.readline()))
        t_load = time.monotonic() - t0
        cpu_d = 100 * (_cpu(dproc) - cpu_d0) / t_load
        cpu_u = 100 * (_cpu(uproc) - cpu_u0) / t_load
        sent = sum(f["sent"] for f in fed)
        # Lanes stay open (feeders wait): let the drift worker finish what is
        # pending and checkpoint (it commits its ring cursor with the checkpoint,
        # every 2 s) before reading the consumer lines.
        t_drain = time.monotonic()

        def drained(s: dict[str, Any]) -> bool:
            lanes = _lanes(s)
            return (
                s["workers"]["drift"]["stats"].get("records", 0) >= sent
                and sum(r["written"] for r in lanes) >= sent
                and all(r["consumers"][1]["pending"] == 0 for r in lanes)
            )

        try:
            st = agent.wait(drained, timeout=30, poll=0.25)
            drain_s: float | None = time.monotonic() - t_drain
        except TimeoutError:
            st = agent.status()
            drain_s = None
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("exit\n")
            p.stdin.flush()
        dstats = st["workers"]["drift"]["stats"]
        lanes = _lanes(st)
        drift_lines = [r["consumers"][1] for r in lanes]
        up_lines = [r["consumers"][0] for r in lanes]
        written = sum(r["written"] for r in lanes)
        ustats = st["workers"]["uploader"]["stats"]
        return {
            "rate_target": rate,
            "feeders": feeders,
            "seconds": round(t_load, 1),
            "records_sent": sent,
            "rate_achieved": round(sum(f["rate"] for f in fed)),
            "producer_dropped": sum(f["dropped_total"] for f in fed),
            "lane_written": written,
            "drift_records": dstats.get("records"),
            "drift_error": dstats.get("error"),
            "configured_check_frequency": dstats.get("configured_check_frequency"),
            "effective_check_frequency_final": dstats.get("effective_check_frequency"),
            "effective_check_frequency_under_load": {
                "min": min(eff) if eff else None,
                "max": max(eff) if eff else None,
                "samples": eff,
            },
            "feeder_late_ticks": sum(f["late_ticks"] for f in fed),
            "drift_lost_per_lane": dstats.get("lost"),
            "drift_ring_lost": sum(x["lost"] for x in drift_lines),
            "drift_ring_pending": sum(x["pending"] for x in drift_lines),
            "drift_ring_pending_max_under_load": max(pend) if pend else None,
            "drift_drain_s": None if drain_s is None else round(drain_s, 2),
            "drift_events": dstats.get("events"),
            "drift_uss_mb": {
                "idle": round(uss0 / 2**20, 1),
                "max": round(max(uss) / 2**20, 1) if uss else None,
                "median": round(float(np.median(uss)) / 2**20, 1) if uss else None,
            },
            "drift_cpu_percent_of_one_core": round(cpu_d, 1),
            "drift_memory_mb_supervisor_view": st["workers"]["drift"]["memory_mb"],
            "drift_restarts": st["workers"]["drift"]["restarts"],
            "uploader_ring_lost": sum(x["lost"] for x in up_lines),
            "uploader_ring_pending": sum(x["pending"] for x in up_lines),
            "uploader_ingested": ustats.get("ingested"),
            "uploader_cpu_percent_of_one_core": round(cpu_u, 1),
        }
    finally:
        for p in procs:
            try:
                if p.stdin is not None:
                    p.stdin.close()
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        agent.stop()


def run_cases(quick: bool) -> dict[str, Any]:
    """``benchmarks/drift_cases.py`` (real-data cases, peers, worst step) as a subprocess."""
    t0 = time.perf_counter()
    out = run_json("drift_cases.py", ["--quick"] if quick else [], 3600)
    if "error" not in out:
        out["seconds_wall"] = round(time.perf_counter() - t0, 1)
    return out


def run_stats(records: int, seeds: int) -> dict[str, Any]:
    """``benchmarks/drift_stats.py`` as a subprocess; its JSON."""
    t0 = time.perf_counter()
    out = run_json("drift_stats.py", ["--records", str(records), "--seeds", str(seeds)], 600)
    if "error" not in out:
        out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--records", type=int, default=None, help="stationary records (drift_stats)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--skip-stats", action="store_true")
    ap.add_argument("--skip-cases", action="store_true")
    args = ap.parse_args()
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    records = args.records or (2_000_000 if args.quick else 10_000_000)
    seeds = args.seeds or (10 if args.quick else 20)

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eabref") as tmp:
        ref = Path(tmp) / "reference.json"
        write_reference(ref)
        low = run_phase(ref, 20_000, 1, seconds)
        high = run_phase(ref, 100_000, 2, seconds)
    stats = {} if args.skip_stats else run_stats(records, seeds)
    cases = {} if args.skip_cases else run_cases(args.quick)

    uss_max = max(x for x in (low["drift_uss_mb"]["max"], high["drift_uss_mb"]["max"]) if x)
    eff_low = low["effective_check_frequency_under_load"]["max"]
    out: dict[str, Any] = {
        "benchmark": "drift",
        "features": {"inputs": INPUTS, "outputs": OUTPUTS, "n_ref": N_REF},
        "sustained_20k": low,
        "sustained_100k": high,
        "drift_uss_mb_max": uss_max,
        "stats": stats,
        "cases": cases,
        "targets": TARGETS,
        "meets_targets": {
            "uss": uss_max <= TARGETS["uss_mb_max"],
            "cadence_at_20k": eff_low == low["configured_check_frequency"]
            and low["effective_check_frequency_final"] == low["configured_check_frequency"],
            "all_consumed_at_100k": high["drift_ring_lost"] == 0
            and high["drift_records"] == high["records_sent"],
            "false_alarms": stats.get("false_drift_started_calibrated", 1 << 30)
            <= TARGETS["false_alarms_calibrated_max"],
            "delay_0.5sd": (stats.get("median_delay_records_0.5sd") or 1 << 30)
            <= TARGETS["median_delay_0.5sd_max"],
            "delay_0.2sd": (stats.get("median_delay_records_0.2sd") or 1 << 30)
            <= TARGETS["median_delay_0.2sd_max"],
            **{f"cases_{k}": v for k, v in cases.get("meets_goals", {}).items()},
            "step_within_heartbeat": (
                cases.get("worst_step", {}).get("longest_heartbeat_gap_over_heartbeat", 1e9) <= 1.5
            ),
        },
        "machine": machine(),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
