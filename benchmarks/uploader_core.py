"""Uploader core benchmark (outbox + S3 sink); prints ONE JSON object.

Figures:

- ``append_rec_per_s``: records/s appended into the SQLite outbox (dicts of
  12 fields, one transaction per ``--txn`` records, ``synchronous=FULL``);
- ``naive_rec_per_s``: the seed's way, one INSERT + commit per record
  (``json.dumps``, default journal, ``synchronous=FULL``), measured in the
  same run on the same disk; ``speedup`` is the ratio;
- ``disk_bytes_per_record`` (bytes the process wrote through ``write()``,
  from ``/proc/self/io`` ``wchar``, so WAL + checkpoint + fsync'd pages) and
  ``device_bytes_per_record`` (``write_bytes``: what reached the block layer;
  0 on tmpfs/overlay setups that do not account it);
- ``stored_bytes_per_record`` (compressed row bodies in the outbox) and
  ``gzip_bytes_per_record`` (the uploaded objects);
- ``deliver_rec_per_s``: records/s moved outbox -> moto S3 on loopback with
  ``--batch`` records per object (build, gzip, PUT with Content-MD5, ack).

Usage: ``python benchmarks/uploader_core.py [--records N] [--naive-records N] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_actors.outbox import Cursor, Outbox
from edge_actors.sinks import deliver_batch, encode_body, make_sink


def _io_counters() -> tuple[int, int]:
    try:
        fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        return int(fields["wchar"]), int(fields["write_bytes"])
    except (OSError, KeyError, ValueError):
        return 0, 0


def _records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    t0 = time.time()
    return [
        {
            "ts": t0 + i * 0.001,
            "device": "pi-7",
            "model": "house",
            "model_version": "1.4.2",
            "bedrooms": rng.randint(1, 6),
            "bathrooms": rng.randint(1, 4),
            "sqft": round(rng.uniform(400, 4000), 1),
            "age": rng.randint(0, 120),
            "price": round(rng.uniform(5e4, 2e6), 2),
            "confidence": round(rng.random(), 4),
            "latency_ms": round(rng.uniform(0.5, 8.0), 3),
            "ring_seq": i,
        }
        for i in range(n)
    ]


def bench_append(path: Path, records: list[dict[str, Any]], txn: int) -> dict[str, float]:
    """Append ``records`` in transactions of ``txn``; rates and bytes per record."""
    ob = Outbox.open(path, max_bytes=1 << 30, chunk_records=1000)
    w0, b0 = _io_counters()
    t0 = time.perf_counter()
    for start in range(0, len(records), txn):
        ob.append({"model": records[start : start + txn]}, {"model_ring": Cursor(1, start + txn)})
    elapsed = time.perf_counter() - t0
    ob._checkpoint()  # count the checkpoint's writes as well
    w1, b1 = _io_counters()
    stored = ob.stats()["streams"]["model"]["bytes"]
    ob.close()
    n = len(records)
    return {
        "append_rec_per_s": n / elapsed,
        "disk_bytes_per_record": (w1 - w0) / n,
        "device_bytes_per_record": (b1 - b0) / n,
        "stored_bytes_per_record": stored / n,
    }


def bench_naive(path: Path, records: list[dict[str, Any]]) -> float:
    """One INSERT + commit per record, like the seed project; records/s."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY, stream TEXT, payload TEXT)"
    )
    conn.commit()
    t0 = time.perf_counter()
    for rec in records:
        conn.execute(
            "INSERT INTO outbox(stream, payload) VALUES (?, ?)", ("model", json.dumps(rec))
        )
        conn.commit()
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(records) / elapsed


def bench_deliver(path: Path, records: list[dict[str, Any]], batch: int) -> dict[str, float]:
    """Outbox -> moto S3 on loopback; records/s and gzip bytes per record."""
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ[name] = value
    # One access-log line per PUT would drown the JSON line.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        sink = make_sink("s3", bucket="bench", endpoint_url=endpoint, region="us-east-1")
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench"
        )
        ob = Outbox.open(path, max_bytes=1 << 30, chunk_records=1000)
        for start in range(0, len(records), 1000):
            ob.append({"model": records[start : start + 1000]}, {})
        gz = 0
        peek = ob.peek("model", batch)
        if peek is not None:
            gz = len(encode_body(peek.body)) // max(peek.n, 1)
        sink.put("warmup", b"", "1B2M2Y8AsgTpgAmY7PhCfg==")  # client creation, connection
        t0 = time.perf_counter()
        delivered = 0
        while (
            b := deliver_batch(ob, sink, "model", device_id="pi-7", max_records=batch)
        ) is not None:
            delivered += b.n
        elapsed = time.perf_counter() - t0
        ob.close()
        sink.close()
        return {"deliver_rec_per_s": delivered / elapsed, "gzip_bytes_per_record": float(gz)}
    finally:
        server.stop()


def main() -> None:
    """Run every figure and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--naive-records", type=int, default=2_000)
    parser.add_argument("--txn", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    args = parser.parse_args()

    records = _records(args.records)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        out: dict[str, Any] = {"records": args.records, "txn_records": args.txn}
        out.update(bench_append(Path(tmp) / "append.db", records, args.txn))
        naive = bench_naive(Path(tmp) / "naive.db", records[: args.naive_records])
        out["naive_rec_per_s"] = naive
        out["speedup"] = out["append_rec_per_s"] / naive
        out.update(bench_deliver(Path(tmp) / "deliver.db", records, args.batch))
    out["batch_records"] = args.batch
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
