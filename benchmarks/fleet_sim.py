"""A simulated fleet in the exact sink layout, with problems planted where we know.

N devices x D days of objects written by the agent's own path (ring-layout
records -> ``edge_actors.rows`` -> SQLite ``Outbox`` -> ``deliver_batch`` ->
the local sink's layout), one upload every ``--upload-hours`` simulated
hours, so the format cannot drift from what real devices upload. Planted,
and listed in ``manifest.json``:

- ``drifting``: a ``drift_started`` on one feature, never resolved (open now);
- ``recovered``: drift that started and resolved (must NOT be reported);
- ``silent``: the device stops ``silent_hours`` before the end;
- ``losing_data``: ``ring_overrun`` and ``budget`` drops (``sampled`` drops on
  other devices are intended and must not be reported);
- ``hot``: temperature around 85 °C (others 45-60 °C).

Usage::

    python benchmarks/fleet_sim.py --devices 30 --days 2 --out /tmp/fleet
    edge-actors fleet summary --source /tmp/fleet/sink --as-of END --format json

The last line printed is one JSON object: the manifest (planted devices,
``end`` to pass as ``--as-of``, records and objects written, seconds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_actors.outbox import Outbox, RecordBlock
from edge_actors.records import EVENT_DTYPE, KIND_PAIR, SYSTEM_DTYPE, model_dtype
from edge_actors.rows import block_spec, event_rows, iso, system_rows
from edge_actors.sinks import deliver_batch

INPUTS = ("bedrooms", "bathrooms", "sqft", "age")
OUTPUTS = ("price", "confidence")
FEATURES = (*INPUTS, *OUTPUTS)
MODEL = "house"
STREAMS = ("events", "drops", "model", "system")
#: The problems, each planted on its own devices (a device has at most one).
PROBLEMS = ("drifting", "recovered", "silent", "losing_data", "hot")


class FileSink:
    """The local sink's layout without its fsyncs: a simulated fleet needs no power-cut safety.

    Keys and bodies are what ``deliver_batch`` gives any sink (``object_key``,
    ``encode_body``); only the durability of :class:`LocalSink` is skipped
    (its two fsyncs per object made 30 devices x 2 days take minutes).
    """

    prefix = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, body: bytes, md5_b64: str) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    def close(self) -> None:
        """Nothing to release."""


def _plan(n: int, rng: random.Random) -> dict[str, list[str]]:
    """Device ids per problem: about one device in ten for each, at least one."""
    names = [f"dev-{i:05d}" for i in range(n)]
    per = max(1, n // 10)
    shuffled = names[:]
    rng.shuffle(shuffled)
    plan: dict[str, list[str]] = {}
    for k, problem in enumerate(PROBLEMS):
        plan[problem] = sorted(shuffled[k * per : (k + 1) * per])
    plan["sampled"] = sorted(shuffled[len(PROBLEMS) * per : (len(PROBLEMS) + 1) * per])
    return plan


def _events(device: str, items: list[tuple[float, str, str, float]]) -> list[dict[str, Any]]:
    recs = np.zeros(len(items), dtype=EVENT_DTYPE)
    for i, (t, feature, state, stat) in enumerate(items):
        recs[i]["t_ns"] = int(t * 1e9)
        recs[i]["feature"] = feature.encode()
        recs[i]["test"] = b"ks"
        recs[i]["state"] = state.encode()
        recs[i]["correction"] = b"none"
        recs[i]["statistic"] = stat
        recs[i]["p_value"] = np.nan
        recs[i]["threshold"] = 0.08
        recs[i]["window_size"] = 1000
        recs[i]["n_ref"] = 5000
        recs[i]["n_eff"] = 1000.0
    return event_rows(device, MODEL, recs)


def _system(
    device: str, t0: float, n: int, step: float, temp: float, rng: np.random.Generator
) -> list[dict[str, Any]]:
    recs = np.zeros(n, dtype=SYSTEM_DTYPE)
    for name in SYSTEM_DTYPE.names or ():
        if name != "t_ns":
            recs[name] = np.nan
    recs["t_ns"] = (t0 + np.arange(n) * step) * 1e9
    recs["cpu_percent"] = rng.uniform(5, 40, n)
    recs["mem_percent"] = rng.uniform(30, 60, n)
    recs["temp_max_c"] = temp + rng.normal(0, 1.5, n)
    recs["mem_total"] = 4e9
    return system_rows(device, recs)


def _model_block(
    device: str, t0: float, n: int, span: float, rng: np.random.Generator, seq0: int
) -> RecordBlock:
    dtype = model_dtype(len(FEATURES))
    recs = np.zeros(n, dtype=dtype)
    recs["t_ns"] = (t0 + np.sort(rng.uniform(0, span, n))) * 1e9
    recs["id"] = np.arange(seq0, seq0 + n)
    recs["kind"] = KIND_PAIR
    recs["v"] = rng.normal(1.0, 0.2, (n, len(FEATURES)))
    spec = block_spec(
        "lane",
        device_id=device,
        model=MODEL,
        lane="ea_sim_l0",
        inputs=list(INPUTS),
        outputs=list(OUTPUTS),
        cats={},
    )
    return RecordBlock(spec, recs, np.arange(seq0, seq0 + n, dtype=np.int64))


def simulate_device(
    device: str,
    problem: str | None,
    *,
    sink: Path,
    work: Path,
    start: float,
    hours: int,
    per_hour: int,
    silent_hours: int,
    upload_hours: int,
    seed: int,
) -> tuple[int, int]:
    """Write one device's objects; ``(records, objects)``."""
    rng = np.random.default_rng(seed)
    clock = [start]
    records = objects = 0
    local = FileSink(sink)
    last_hour = hours - silent_hours if problem == "silent" else hours
    drift_hour = {"drifting": hours - 5, "recovered": hours - 20}.get(problem or "", -1)
    with Outbox.open(
        work / f"{device}.db", max_bytes=1 << 30, synchronous="OFF", clock=lambda: clock[0]
    ) as outbox:
        # One outbox transaction and one upload per period, as an agent on a
        # link that uploads every `upload_hours` (records are in time order).
        for h0 in range(0, last_hour, upload_hours):
            h1 = min(h0 + upload_hours, last_hour)
            t0, t1 = start + h0 * 3600, start + h1 * 3600
            clock[0] = t1 - 1
            temp = 85.0 if problem == "hot" else float(rng.uniform(45, 60))
            items = [(t0 + 1800, f, "check", 0.02) for f in FEATURES[:2]]
            if h0 <= drift_hour < h1:
                items.append((start + drift_hour * 3600 + 600, "sqft", "drift_started", 0.3))
            if problem == "recovered" and h0 <= drift_hour + 3 < h1:
                t = start + (drift_hour + 3) * 3600 + 600
                items.append((t, "sqft", "drift_resolved", 0.02))
            batches = {
                "system": _system(device, t0, 12 * (h1 - h0), 300.0, temp, rng),
                # Drift summaries (state 'check'), as the drift worker writes them.
                "events": _events(device, sorted(items)),
            }
            drops: dict[tuple[str, str], int] = {}
            if problem == "losing_data":
                drops = {("model", "ring_overrun"): 250, ("system", "budget"): 12}
            elif problem == "sampled":
                drops = {("model", "sampled"): 500}
            block = _model_block(device, t0, per_hour * (h1 - h0), 3600.0 * (h1 - h0), rng, records)
            records += len(block.records) + sum(len(v) for v in batches.values())
            outbox.append(batches, drops=drops, blocks={"model": [block]})
            if drops:
                outbox.append_drop_report({"device_id": device, "time": iso(int(clock[0] * 1e9))})
            for stream in STREAMS:
                while deliver_batch(outbox, local, stream, device_id=device, max_records=5000):
                    objects += 1
    return records, objects


def simulate(
    out: Path,
    *,
    devices: int,
    days: int,
    per_hour: int = 60,
    silent_hours: int = 6,
    upload_hours: int = 6,
    end: dt.datetime | None = None,
    seed: int = 1,
) -> dict[str, Any]:
    """Write the fleet to ``out/sink`` and ``out/manifest.json``; return the manifest."""
    t_start = time.perf_counter()
    end = end or dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.timezone.utc)
    hours = days * 24
    start = end.timestamp() - hours * 3600
    plan = _plan(devices, random.Random(seed))
    problem_of = {d: p for p, ds in plan.items() for d in ds}
    sink = out / "sink"
    sink.mkdir(parents=True, exist_ok=True)
    # The devices' outboxes are scratch: on tmpfs when there is one, where
    # SQLite's few fsyncs per device cost nothing (they dominated on a busy disk).
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="fleet-sim-", dir=shm if shm.is_dir() else None))
    records = objects = 0
    try:
        for i in range(devices):
            device = f"dev-{i:05d}"
            r, o = simulate_device(
                device,
                problem_of.get(device),
                sink=sink,
                work=work,
                start=start,
                hours=hours,
                per_hour=per_hour,
                silent_hours=silent_hours,
                upload_hours=upload_hours,
                seed=seed * 100_003 + i,
            )
            records += r
            objects += o
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest = {
        "devices": devices,
        "days": days,
        "per_hour": per_hour,
        "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "silent_since": (end - dt.timedelta(hours=silent_hours)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "planted": {p: plan[p] for p in PROBLEMS},
        "intended_drops": plan["sampled"],
        "records": records,
        "objects": objects,
        "seconds": round(time.perf_counter() - t_start, 3),
        "sink": str(sink),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module doc."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=30)
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--per-hour", type=int, default=60, help="model records per device and hour")
    p.add_argument("--silent-hours", type=int, default=6)
    p.add_argument("--upload-hours", type=int, default=6, help="hours between two uploads")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--end", help="end of the simulated time, ISO-8601 UTC")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    end = (
        dt.datetime.fromisoformat(args.end.replace("Z", "+00:00")).astimezone(dt.timezone.utc)
        if args.end
        else None
    )
    manifest = simulate(
        args.out,
        devices=args.devices,
        days=args.days,
        per_hour=args.per_hour,
        silent_hours=args.silent_hours,
        upload_hours=args.upload_hours,
        end=end,
        seed=args.seed,
    )
    sys.stdout.write(json.dumps(manifest) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
