"""The uploader's CPU cost per record, ingest and ship; prints ONE JSON object.

    python benchmarks/uploader_cpu.py [--records N] [--profile ingest|ship] [--stream model|payload]

A real ``UploaderWorker`` (``storage.type: sqlite``: no shipper thread, the
ship path is driven by hand so that its cost is measured apart) drains rings
filled the way the agent's producers fill them:

- ``model``: a lane of 8 inputs + 1 output, one ``pair`` record per prediction
  (what ``Producer.log(x, y)`` writes at 10 k predictions/s);
- ``payload``: the seed quick-start loop's traffic (``EdgeMonitor`` with four
  undeclared inputs): an ``input`` record, its payload record (the dict as
  JSON) and an ``output`` record per prediction.

Each scenario is ingested in steps of what a 10 k/s stream leaves in a ring in
100 ms (so the per-step costs weigh as in the agent), then every batch is
delivered to a local-directory sink with the real ``deliver_batch``. Figures:
``process_time`` µs per record for ingest, ship and their sum, the worker's
USS at the end (``--records`` large: growth), records/s. ``--profile``
prints a cProfile summary of that path to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_actors import shm  # noqa: E402
from edge_actors.config import Config, parse_config  # noqa: E402
from edge_actors.records import KIND_INPUT, KIND_OUTPUT, KIND_PAIR  # noqa: E402
from edge_actors.ring import Ring  # noqa: E402
from edge_actors.topology import RingSpec, dtype_for, ring_name  # noqa: E402
from edge_actors.workers.uploader import UploaderWorker  # noqa: E402

INPUTS = [f"f{i}" for i in range(8)]


def _uss() -> int:
    """USS without the ring segments this benchmark created (the agent's are the supervisor's)."""
    import psutil

    proc = psutil.Process()
    shm_bytes = sum(
        m.private_clean + m.private_dirty
        for m in proc.memory_maps(grouped=True)
        if m.path.startswith("/dev/shm/")
    )
    return int(proc.memory_full_info().uss) - shm_bytes


def make_config(tmp: Path, stream: str, batch: int) -> Config:
    data = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    data["instance"] = f"uc{os.getpid() % 100000}"
    data["run_dir"] = str(tmp / "run")
    data["data_dir"] = str(tmp / "data")
    data["device_id"] = "bench-01"
    if stream == "model":
        data["model"] = {"name": "bench8", "inputs": INPUTS, "outputs": ["y"]}
    else:  # the seed loop: undeclared inputs, two declared outputs
        data["model"] = {"name": "seed", "inputs": [], "outputs": ["price", "confidence"]}
    data["drift_detection"]["reference_data_path"] = None
    data["telemetry"]["max_batch_size"] = batch
    data["storage"].update(
        {
            # No shipper thread: the ship path is driven by hand, measured apart.
            "type": "sqlite",
            "sqlite_path": str(tmp / "data" / "outbox.db"),
            "max_sqlite_size_mb": 4096,
        }
    )
    return parse_config(data, tmp, "<benchmark>")


def _model_block(cfg: Config, start: int, n: int, rng: np.random.Generator) -> Any:
    recs = np.zeros(n, dtype_for("lane", cfg))
    recs["kind"] = KIND_PAIR
    recs["id"] = np.arange(start, start + n, dtype=np.int64) + (1 << 40)
    recs["t_ns"] = time.time_ns() + np.arange(n, dtype=np.int64) * 100_000
    v = rng.normal(size=(n, 9))
    v[:, 8] = rng.uniform(5e4, 2e6, size=n).round(2)
    recs["v"] = v.round(4)
    return recs


def _seed_blocks(cfg: Config, start: int, n: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """n predictions: 2n lane records (input, output) and n payload records."""
    lane = np.zeros(2 * n, dtype_for("lane", cfg))
    ids = np.arange(start, start + n, dtype=np.int64) + (1 << 40)
    t = time.time_ns() + np.arange(n, dtype=np.int64) * 100_000
    lane["id"] = np.repeat(ids, 2)
    lane["t_ns"] = np.repeat(t, 2)
    lane["kind"][0::2] = KIND_INPUT
    lane["kind"][1::2] = KIND_OUTPUT
    lane["v"] = np.nan
    lane["v"][1::2, 0] = rng.uniform(2e5, 5e5, n).round(0)
    lane["v"][1::2, 1] = rng.uniform(0.7, 0.99, n)
    pay = np.zeros(n, dtype_for("payload", cfg))
    pay["id"], pay["t_ns"], pay["kind"] = ids, t, KIND_INPUT
    width = pay["data"].shape[1]
    for i in range(n):
        doc = {
            "input_data": {
                "bedrooms": int(rng.integers(1, 6)),
                "bathrooms": float(rng.choice([1, 1.5, 2, 2.5])),
                "sqft": int(rng.integers(800, 3000)),
                "age": int(rng.integers(0, 50)),
            }
        }
        raw = orjson.dumps(doc)[:width]
        pay["len"][i] = len(raw)
        pay["data"][i, : len(raw)] = np.frombuffer(raw, np.uint8)
    return lane, pay


def run(stream: str, n: int, step: int, batch: int, profile: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="eaucpu") as d:
        tmp = Path(d)
        cfg = make_config(tmp, stream, batch)
        pid = os.getpid() % 100000
        names = {"lane": f"eauc{pid}_l0", "payload": f"eauc{pid}_p0"}
        kinds = ["lane"] if stream == "model" else ["lane", "payload"]
        rings = {k: Ring.create(names[k], dtype_for(k, cfg), 1 << 16, n_consumers=2) for k in kinds}
        ours, theirs = socket.socketpair()
        rng = np.random.default_rng(7)
        # CPU time, not wall: on a shared machine waits (fsync, other processes) would dominate.
        prof = cProfile.Profile(time.process_time) if profile else None
        try:
            worker = UploaderWorker(cfg, ours)
            worker.setup()
            assert worker.outbox is not None
            specs = [RingSpec(names[k], k, 0) for k in kinds]
            # The worker names payload rows after the lane of the same index.
            assert ring_name(cfg.instance, "lane", 0)
            worker.set_rings(specs)
            writers = {k: r.writer() for k, r in rings.items()}
            uss0 = _uss()
            ingest_cpu = 0.0
            ingested = 0
            done = 0
            chunk = step if stream == "model" else step // 3
            uss_mid = None
            wall0 = time.perf_counter()
            while done < n:
                k = min(chunk, n - done)
                if stream == "model":
                    writers["lane"].write_batch(_model_block(cfg, done, k, rng))
                else:
                    lane, pay = _seed_blocks(cfg, done, k, rng)
                    writers["lane"].write_batch(lane)
                    writers["payload"].write_batch(pay)
                done += k
                c0 = time.process_time()
                if prof and profile == "ingest":
                    prof.enable()
                while True:
                    got = worker.step()
                    ingested += got
                    if got == 0:
                        break
                if prof and profile == "ingest":
                    prof.disable()
                ingest_cpu += time.process_time() - c0
                if uss_mid is None and done >= n // 10:
                    uss_mid = _uss()
            # The tail, below the commit cadence's size threshold: as a flush does.
            c0 = time.process_time()
            worker.eager = True
            while (got := worker.step()) > 0:
                ingested += got
            worker.eager = False
            ingest_cpu += time.process_time() - c0
            ingest_wall = time.perf_counter() - wall0
            uss_ingest = _uss()
            import edge_actors.outbox as outbox_mod
            import edge_actors.sinks as sinks_mod
            from edge_actors.sinks import deliver_batch, make_sink

            sink = make_sink("local", local_path=tmp / "sink")
            # The ship path's two big parts, timed where the uploader calls them.
            split = {"render": 0.0, "gzip": 0.0}
            real_render, real_encode = outbox_mod.render_block, sinks_mod.encode_body

            def timed(part: str, fn: Any) -> Any:
                def call(*a: Any) -> Any:
                    t = time.process_time()
                    try:
                        return fn(*a)
                    finally:
                        split[part] += time.process_time() - t

                return call

            outbox_mod.render_block = timed("render", real_render)  # type: ignore[assignment]
            sinks_mod.encode_body = timed("gzip", real_encode)  # type: ignore[assignment]
            c0 = time.process_time()
            if prof and profile == "ship":
                prof.enable()
            shipped = objects = 0
            for s in ("model", "payload"):
                while (
                    b := deliver_batch(
                        worker.outbox, sink, s, device_id=cfg.device_id, max_records=batch
                    )
                ) is not None:
                    shipped += b.n
                    objects += 1
            if prof and profile == "ship":
                prof.disable()
            ship_cpu = time.process_time() - c0
            outbox_mod.render_block, sinks_mod.encode_body = real_render, real_encode
            uss_ship = _uss()
            sink.close()
            gz = sum(p.stat().st_size for p in (tmp / "sink").rglob("*.ndjson.gz"))
            drops = worker.outbox.drops()
            backlog = worker.outbox.stats()["backlog_records"]
            worker.close()
        finally:
            for name, r in rings.items():
                r.close()
                shm.unlink(names[name])
            ours.close()
            theirs.close()
        if prof is not None:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(35)
            out2 = io.StringIO()
            pstats.Stats(prof, stream=out2).sort_stats("tottime").print_stats(25)
            print(out.getvalue(), out2.getvalue(), file=sys.stderr)
        return {
            "stream": stream,
            "records": ingested,
            "predictions": n,
            "ingest_us_per_record": round(1e6 * ingest_cpu / max(ingested, 1), 2),
            "ship_us_per_record": round(1e6 * ship_cpu / max(shipped, 1), 2),
            "ship_render_us_per_record": round(1e6 * split["render"] / max(shipped, 1), 2),
            "ship_gzip_us_per_record": round(1e6 * split["gzip"] / max(shipped, 1), 2),
            "total_us_per_record": round(1e6 * (ingest_cpu + ship_cpu) / max(ingested, 1), 2),
            "ingest_rec_per_s_cpu": round(ingested / max(ingest_cpu, 1e-9)),
            "ingest_wall_s": round(ingest_wall, 2),
            "shipped": shipped,
            "objects": objects,
            "gzip_bytes_per_record": round(gz / max(shipped, 1), 1),
            "drops": {f"{s}/{r}": v for (s, r), v in drops.items()},
            "backlog_after_ship": backlog,
            "uss_start_mb": round(uss0 / 2**20, 1),
            "uss_10pct_mb": round((uss_mid or 0) / 2**20, 1),
            "uss_after_ingest_mb": round(uss_ingest / 2**20, 1),
            "uss_after_ship_mb": round(uss_ship / 2**20, 1),
        }


def main() -> None:
    """Run the chosen scenarios and print one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000, help="predictions per scenario")
    ap.add_argument("--step", type=int, default=1000, help="records written between steps")
    ap.add_argument("--batch", type=int, default=5000, help="telemetry.max_batch_size")
    ap.add_argument("--stream", choices=["model", "payload", "both"], default="both")
    ap.add_argument("--profile", choices=["ingest", "ship"], default=None)
    args = ap.parse_args()
    gc.collect()
    streams = ["model", "payload"] if args.stream == "both" else [args.stream]
    out = {s: run(s, args.records, args.step, args.batch, args.profile) for s in streams}
    print(json.dumps({"benchmark": "uploader_cpu", **out}))


if __name__ == "__main__":
    main()
