"""The uploader's real code paths: ring -> outbox ingestion, outbox -> S3 delivery; ONE JSON object.

    python benchmarks/uploader.py [--quick] [--records N] [--naive-records N] [--dir DIR]

(a) Ring -> outbox, in-process, through ``UploaderWorker``: a lane ring
    (``Ring.create`` with ``topology.dtype_for("lane", cfg)``, 8 inputs + 1
    output, 2 consumer lines) holds ``--records`` records written with
    ``RingWriter.write_batch``; an ``UploaderWorker`` (``storage.type:
    sqlite``, ``synchronous: FULL``, so no shipper thread) is set up on a
    socketpair, given the ring with ``set_rings`` and stepped until drained.
    Figure: records/s into the outbox (target >= 50,000/s). Baseline in the
    same run, same disk: the seed's way, one ``INSERT`` + ``commit`` per
    record (``json.dumps`` of the same row dicts, ``synchronous=FULL``) ->
    ``ratio``. Bytes per record: ``/proc/self/io`` ``wchar`` (what the
    process wrote: WAL, checkpoints) and ``write_bytes`` (what reached the
    block device), and the database + WAL growth on disk.
    Compressed bytes per record: every outbox batch delivered to a local
    sink directory (the real ``deliver_batch``), sum of object sizes / records.
(b) Outbox -> S3: a moto S3 server in its own process on 127.0.0.1 (like a
    remote endpoint: it does not share this process's GIL), ``storage.type:
    s3`` with ``endpoint_url``, dummy credentials; copies of the outbox from
    (a) delivered with ``edge_actors.sinks.deliver_batch`` in a loop (what the
    shipper thread does) with ``max_batch_size`` 5000 and 1000 -> records/s
    delivered (target >= 20,000/s).
(c) ``benchmarks/uploader_core.py`` (outbox append of ready dicts without
    the ring/row decoding, and an in-process moto) runs as a subprocess; its
    JSON is embedded under ``"core"``.
(d) ``benchmarks/uploader_cpu.py`` (CPU µs per record, ingest and ship, for a
    10 k/s model stream and for the seed quick-start loop's model + payload
    streams; the worker's USS) runs as a subprocess: ``"cpu"``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from agentlib import REPO, machine, run_json

from edge_actors import shm
from edge_actors.config import Config, parse_config
from edge_actors.records import KIND_PAIR
from edge_actors.ring import Ring
from edge_actors.topology import RingSpec, dtype_for
from edge_actors.workers.uploader import UploaderWorker, open_outbox

INPUTS = [f"f{i}" for i in range(8)]
OUTPUTS = ["y"]
TARGETS = {"ingest_rec_per_s_min": 50_000, "deliver_rec_per_s_min": 20_000}
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
MOTO = r"""
import logging, sys, time
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
s = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
s.start()
print("ready", flush=True)
sys.stdin.readline()
s.stop()
"""


def _io() -> tuple[int, int]:
    try:
        f = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        return int(f["wchar"]), int(f["write_bytes"])
    except (OSError, KeyError, ValueError):
        return 0, 0


def _disk(db: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(db) + suffix)
        if p.exists():
            total += p.stat().st_size
    return total


def make_config(tmp: Path, batch: int = 5000, **storage: Any) -> Config:
    data = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    data["instance"] = f"u{os.getpid() % 100000}"
    data["run_dir"] = str(tmp / "run")
    data["data_dir"] = str(tmp / "data")
    data["device_id"] = "bench-01"
    data["model"] = {"name": "bench8", "inputs": INPUTS, "outputs": OUTPUTS}
    data["drift_detection"]["reference_data_path"] = None
    data["telemetry"]["max_batch_size"] = batch
    data["storage"].update({"max_sqlite_size_mb": 2048, "synchronous": "FULL", **storage})
    return parse_config(data, tmp, "<benchmark>")


def lane_records(cfg: Config, n: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(7)
    recs = np.zeros(n, dtype_for("lane", cfg))
    recs["kind"] = KIND_PAIR
    recs["id"] = np.arange(n, dtype=np.int64) + (1 << 40)
    recs["t_ns"] = time.time_ns() + np.arange(n, dtype=np.int64) * 10_000
    v = rng.normal(size=(n, 9))
    v[:, 8] = rng.uniform(5e4, 2e6, size=n).round(2)
    recs["v"] = v.round(4)  # model-like values, not 17-digit noise
    return recs


def bench_ingest(
    tmp: Path, n: int, sink: str = "sqlite"
) -> tuple[dict[str, Any], Path, Config, list[dict[str, Any]]]:
    """(a) Ring -> outbox through UploaderWorker; also returns a sample of rows for the baseline.

    ``sink="local"`` runs the shipper thread as in the agent (local directory
    sink), so ingestion shares the process and the database with uploads.
    """
    where = tmp / f"ingest_{sink}"
    extra = {"local_path": str(where / "sink")} if sink == "local" else {}
    cfg = make_config(tmp, type=sink, sqlite_path=str(where / "outbox.db"), **extra)
    name = f"eab{os.getpid() % 100000}_up{sink[0]}"
    cap = 1 << max(10, (n - 1).bit_length())
    ring = Ring.create(name, dtype_for("lane", cfg), cap, n_consumers=2)
    ours, theirs = socket.socketpair()
    try:
        recs = lane_records(cfg, n)
        w = ring.writer()
        for start in range(0, n, 65536):
            w.write_batch(recs[start : start + 65536])
        worker = UploaderWorker(cfg, ours)
        worker.setup()
        db = Path(cfg.storage.sqlite_path)
        disk0 = _disk(db)
        worker.set_rings([RingSpec(name, "lane", 0)])
        worker.eager = True  # maximum rate: every step stores what the ring holds
        wchar0, wb0 = _io()
        t0 = time.perf_counter()
        steps = 0
        while worker.ingested < n:
            if worker.step() == 0 and worker.ingested < n:
                raise RuntimeError(f"ingestion stalled at {worker.ingested}/{n}")
            steps += 1
        elapsed = time.perf_counter() - t0
        wchar1, wb1 = _io()
        disk1 = _disk(db)
        sample = worker.model_rows.rows(name, recs[:2000], np.arange(2000, dtype=np.int64))
        ob = worker.outbox.stats()
        shipped = worker.shipper.state.uploaded_records if worker.shipper is not None else None
        worker.close()
        lost = ring.consumer_line(0)["lost"]
    finally:
        ring.close()
        shm.unlink(name)
        ours.close()
        theirs.close()
    model = ob["streams"].get("model", {})
    return (
        {
            "records": n,
            "rec_per_s": n / elapsed,
            "seconds": elapsed,
            "steps": steps,
            "ring_lost": lost,
            "synchronous": cfg.storage.synchronous,
            "process_write_bytes_per_record": (wchar1 - wchar0) / n,
            "device_write_bytes_per_record": (wb1 - wb0) / n,
            "db_wal_growth_bytes_per_record": (disk1 - disk0) / n,
            "stored_bytes_per_record": model.get("bytes", 0) / n,
            "outbox_records": model.get("records", 0),
            "shipper": worker.shipper is not None,
            "uploaded_during_ingest": shipped,
        },
        db,
        cfg,
        sample,
    )


def bench_naive(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The seed's way: one INSERT + commit per record, synchronous=FULL."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS model_logs(id INTEGER PRIMARY KEY, ts REAL, payload TEXT)"
    )
    conn.commit()
    wchar0, wb0 = _io()
    t0 = time.perf_counter()
    for row in rows:
        conn.execute(
            "INSERT INTO model_logs(ts, payload) VALUES (?, ?)", (time.time(), json.dumps(row))
        )
        conn.commit()
    elapsed = time.perf_counter() - t0
    wchar1, wb1 = _io()
    conn.close()
    n = len(rows)
    return {
        "records": n,
        "rec_per_s": n / elapsed,
        "process_write_bytes_per_record": (wchar1 - wchar0) / n,
        "device_write_bytes_per_record": (wb1 - wb0) / n,
        "db_bytes_per_record": _disk(path) / n,
    }


def _copy_db(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        p = Path(str(src) + suffix)
        if p.exists():
            shutil.copyfile(p, str(dst) + suffix)


def _deliver_all(cfg: Config, sink: Any) -> tuple[int, int, float]:
    from edge_actors.sinks import deliver_batch

    outbox = open_outbox(cfg)
    try:
        t0 = time.perf_counter()
        n = objects = 0
        while (
            b := deliver_batch(
                outbox,
                sink,
                "model",
                device_id=cfg.device_id,
                max_records=cfg.telemetry.max_batch_size,
            )
        ) is not None:
            n += b.n
            objects += 1
        return n, objects, time.perf_counter() - t0
    finally:
        outbox.close()


def bench_local(tmp: Path, db: Path) -> dict[str, Any]:
    """Compressed bytes per record: the objects a sink receives (local directory sink)."""
    from edge_actors.sinks import make_sink

    path = tmp / "local" / "outbox.db"
    _copy_db(db, path)
    sink_dir = tmp / "local" / "sink"
    cfg = make_config(tmp, type="local", sqlite_path=str(path), local_path=str(sink_dir))
    sink = make_sink("local", local_path=sink_dir)
    n, objects, elapsed = _deliver_all(cfg, sink)
    sink.close()
    size = sum(p.stat().st_size for p in sink_dir.rglob("*.ndjson.gz"))
    return {
        "records": n,
        "objects": objects,
        "object_bytes_per_record": size / max(n, 1),
        "local_sink_rec_per_s": n / elapsed if elapsed else None,
    }


def bench_s3(tmp: Path, db: Path, batches: list[int]) -> dict[str, Any]:
    """(b) Outbox -> moto S3 (own process) with deliver_batch, per max_batch_size."""
    os.environ.update(DUMMY_ENV)
    empty = tmp / "aws-none"
    empty.write_text("")
    os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(empty)
    os.environ.pop("AWS_PROFILE", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", MOTO, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("moto server did not start")
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        from edge_actors.sinks import make_sink

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        out: dict[str, Any] = {"endpoint": "moto ThreadedMotoServer, own process, loopback"}
        for batch in batches:
            bucket = f"bench-{batch}"
            client.create_bucket(Bucket=bucket)
            path = tmp / f"s3_{batch}" / "outbox.db"
            _copy_db(db, path)
            cfg = make_config(
                tmp,
                batch,
                type="s3",
                bucket=bucket,
                endpoint_url=endpoint,
                region="us-east-1",
                sqlite_path=str(path),
            )
            sink = make_sink("s3", bucket=bucket, endpoint_url=endpoint, region="us-east-1")
            sink.put("warmup", b"", "1B2M2Y8AsgTpgAmY7PhCfg==")  # client + connection set-up
            n, objects, elapsed = _deliver_all(cfg, sink)
            sink.close()
            listed = sum(
                len(p.get("Contents", []))
                for p in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix="model/"
                )
            )
            out[f"batch_{batch}"] = {
                "records": n,
                "objects": objects,
                "objects_in_bucket": listed,
                "rec_per_s": n / elapsed,
                "ms_per_object": 1000 * elapsed / max(objects, 1),
            }
        client.close()
        return out
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_core(records: int) -> dict[str, Any]:
    """(c) uploader_core.py as a subprocess; its JSON."""
    return run_json("uploader_core.py", ["--records", str(records)], 300)


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 2) if abs(x) < 1000 else round(x)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--records", type=int, default=None)
    ap.add_argument("--naive-records", type=int, default=None)
    ap.add_argument("--dir", default=None, help="directory on the disk to measure")
    ap.add_argument("--skip-core", action="store_true")
    args = ap.parse_args()
    n = args.records or (50_000 if args.quick else 200_000)
    n_naive = args.naive_records or (500 if args.quick else 2000)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eabup", dir=args.dir) as d:
        tmp = Path(d)
        ingest, db, _cfg, sample = bench_ingest(tmp, n)
        with_shipper, _, _, _ = bench_ingest(tmp, n, "local")
        rows = (sample * (n_naive // len(sample) + 1))[:n_naive]
        naive = bench_naive(tmp / "naive.db", rows)
        local = bench_local(tmp, db)
        s3 = bench_s3(tmp, db, [5000, 1000])
    core = {} if args.skip_core else run_core(50_000 if args.quick else 200_000)
    cpu = run_json("uploader_cpu.py", ["--records", str(n // 4 if args.quick else n)], 900)
    ratio = ingest["rec_per_s"] / naive["rec_per_s"]
    out = {
        "benchmark": "uploader",
        "ingest": ingest,
        "ingest_with_shipper": with_shipper,
        "naive_baseline": naive,
        "ingest_vs_naive_ratio": ratio,
        "compressed": local,
        "s3": s3,
        "core": core,
        "cpu": cpu,
        "targets": TARGETS,
        "meets_targets": {
            "ingest": ingest["rec_per_s"] >= TARGETS["ingest_rec_per_s_min"],
            "deliver_5000": s3["batch_5000"]["rec_per_s"] >= TARGETS["deliver_rec_per_s_min"],
        },
        "machine": machine(),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(_round(out)))


if __name__ == "__main__":
    main()
