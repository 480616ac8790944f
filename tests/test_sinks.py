"""Key layout, local and S3 sinks, delivery outbox -> sink, against real files and a real S3."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_actors.keys import object_key, parse_key, validate_prefix
from edge_actors.outbox import Cursor, Outbox
from edge_actors.sinks import (
    PermanentSinkError,
    SinkError,
    TransientSinkError,
    batch_key,
    deliver_batch,
    encode_body,
    make_sink,
    md5_b64,
)
from edge_actors.sinks.local import LocalSink
from edge_actors.sinks.s3 import S3Sink
from tests.s3_server import free_port, start_moto

DAY = datetime.date(2024, 5, 1)
T0 = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone.utc).timestamp()


@pytest.fixture(autouse=True)
def _zero_based_seqs(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compare sequence numbers with 0..n; production starts at creation time."""
    import edge_actors.outbox

    monkeypatch.setattr(edge_actors.outbox, "DEFAULT_SEQ_BASE", 0)


def _records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"ts": T0 + i, "i": i, "feature": float(i) / 3, "name": f"r{i}", "ok": i % 2 == 0}
        for i in range(start, start + n)
    ]


def _boto(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _list_keys(client: Any, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(keys)


def _read_s3_records(client: Any, bucket: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key in _list_keys(client, bucket):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        out.extend(orjson.loads(line) for line in gzip.decompress(body).splitlines())
    return out


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    ob = Outbox.open(tmp_path / "outbox.db", max_bytes=64 << 20, chunk_records=100)
    yield ob
    ob.close()


# ---------------------------------------------------------------------- keys


def test_object_key_layout_and_round_trip() -> None:
    key = object_key("fleet/", "model", "pi-7", DAY, 0, 4999)
    assert key == (
        "fleet/model/device=pi-7/date=2024-05-01/"
        "00000000000000000000-00000000000000004999.ndjson.gz"
    )
    assert parse_key(key) == ("fleet/", "model", "pi-7", DAY, 0, 4999)
    assert object_key("", "events", "d", DAY, 7, 7).startswith("events/device=d/")


@pytest.mark.parametrize(
    ("args", "component"),
    [
        (("../", "model", "d"), "prefix"),
        (("/abs/", "model", "d"), "prefix"),
        (("a//b/", "model", "d"), "prefix"),
        (("a\x00/", "model", "d"), "prefix"),
        (("", "mo/del", "d"), "stream"),
        (("", "..", "d"), "stream"),
        (("", "", "d"), "stream"),
        (("", "model", "a/b"), "device_id"),
        (("", "model", ".."), "device_id"),
        (("", "model", ""), "device_id"),
        (("", "model", "d\x00"), "device_id"),
        (("", "model", "d\n"), "device_id"),
        (("", "model", "d\\x"), "device_id"),
        (("p" * 1000 + "/", "model", "d"), "prefix"),
        (("p" * 200 + "/", "model", "d" * 900), "key"),
    ],
)
def test_object_key_refuses_escapes(args: tuple[str, str, str], component: str) -> None:
    with pytest.raises(ValueError, match=f"^{component}"):
        object_key(*args, DAY, 0, 1)


def test_object_key_refuses_bad_numbers_and_dates() -> None:
    with pytest.raises(ValueError, match=r"^last_seq"):
        object_key("", "model", "d", DAY, 5, 4)
    with pytest.raises(ValueError, match=r"^first_seq"):
        object_key("", "model", "d", DAY, -1, 4)
    with pytest.raises(ValueError, match=r"^date_utc"):
        object_key("", "model", "d", datetime.datetime(2024, 5, 1), 0, 4)
    assert validate_prefix("tele-") == "tele-"


def test_encode_body_is_deterministic() -> None:
    raw = b"".join(orjson.dumps(r) + b"\n" for r in _records(100))
    assert encode_body(raw) == encode_body(raw)
    assert gzip.decompress(encode_body(raw)) == raw
    assert md5_b64(b"") == "1B2M2Y8AsgTpgAmY7PhCfg=="


@pytest.mark.parametrize("isal", [True, False], ids=["isal", "zlib"])
def test_encode_body_with_and_without_isal_is_plain_gzip(
    isal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Level 1 with or without the ``fast`` extra: a gzip stream any reader opens, stable bytes."""
    from edge_actors.sinks import base

    if not isal:
        monkeypatch.setattr(base, "_igzip", None)  # the platform without an isal wheel
    elif base._igzip is None:
        pytest.skip("isal not installed")
    raw = b"".join(orjson.dumps(r) + b"\n" for r in _records(2000))
    body = encode_body(raw, 1)
    assert body == encode_body(raw, 1)
    assert gzip.decompress(body) == raw
    assert zlib.decompress(body, 31) == raw  # what S3 clients and DuckDB use
    assert len(body) < len(raw) / 3


def test_make_sink_validates() -> None:
    with pytest.raises(ValueError, match=r"storage\.local_path"):
        make_sink("local")
    with pytest.raises(ValueError, match=r"storage\.bucket"):
        make_sink("s3")
    with pytest.raises(ValueError, match=r"storage\.type"):
        make_sink("ftp")
    with pytest.raises(ValueError, match="prefix"):
        make_sink("local", local_path="/tmp/x", prefix="../")
    assert isinstance(make_sink("s3", bucket="b", prefix="p/"), S3Sink)


# ---------------------------------------------------------------- local sink


def test_local_sink_writes_atomically_and_verifies(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path / "out", prefix="p/")
    body = encode_body(b'{"a":1}\n')
    key = object_key(sink.prefix, "model", "d1", DAY, 0, 0)
    sink.put(key, body, md5_b64(body))
    path = tmp_path / "out" / key
    assert path.read_bytes() == body
    # Overwrite with new content: the same key, a whole new file, no temp left behind.
    body2 = encode_body(b'{"a":2}\n')
    sink.put(key, body2, md5_b64(body2))
    assert path.read_bytes() == body2
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    with pytest.raises(TransientSinkError, match="MD5"):
        sink.put(key, body, md5_b64(b"other"))
    assert path.read_bytes() == body2


def test_local_sink_refuses_unsafe_keys_and_reports_permanent_errors(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path / "out")
    for key in ("../x", "/abs", "a//b", "a/./b"):
        with pytest.raises(PermanentSinkError):
            sink.put(key, b"", md5_b64(b""))
    (tmp_path / "file").write_text("not a directory")
    blocked = LocalSink(tmp_path / "file")
    with pytest.raises(PermanentSinkError) as info:
        blocked.put("model/x.ndjson.gz", b"x", md5_b64(b"x"))
    assert "storage.local_path" in info.value.hint


def test_deliver_to_local_sink_and_duckdb_reads_the_tree(tmp_path: Path, outbox: Outbox) -> None:
    duckdb = pytest.importorskip("duckdb")
    sink = make_sink("local", local_path=tmp_path / "lake", prefix="fleet/")
    produced = {"model": 2345, "system": 310, "events": 7}
    for stream, n in produced.items():
        recs = _records(n)
        for start in range(0, n, 500):
            outbox.append({stream: recs[start : start + 500]}, {stream: Cursor(1, start + 500)})
    objects = 0
    for stream in produced:
        while deliver_batch(outbox, sink, stream, device_id="pi-7", max_records=1000):
            objects += 1
    assert outbox.stats()["backlog_records"] == 0
    files = sorted((tmp_path / "lake").rglob("*.ndjson.gz"))
    assert len(files) == objects
    assert not list((tmp_path / "lake").rglob(".*tmp*"))

    glob = str(tmp_path / "lake" / "fleet" / "**" / "*.ndjson.gz")
    con = duckdb.connect()
    total = con.execute(
        f"SELECT count(*) FROM read_json_auto('{glob}', hive_partitioning=true)"
    ).fetchone()[0]
    assert total == sum(produced.values())
    rows = con.execute(
        f"SELECT device, CAST(date AS VARCHAR), count(*), count(DISTINCT i) "
        f"FROM read_json_auto('{glob}', hive_partitioning=true) GROUP BY ALL"
    ).fetchall()
    assert rows == [("pi-7", "2024-05-01", sum(produced.values()), max(produced.values()))]
    seqs = con.execute(
        f"SELECT count(DISTINCT seq), min(seq), max(seq) "
        f"FROM read_json_auto('{glob}', hive_partitioning=true)"
    ).fetchone()
    assert seqs == (max(produced.values()), 0, max(produced.values()) - 1)


# ------------------------------------------------------------------- S3 sink


def test_s3_delivery_keys_contents_and_headers(
    tmp_path: Path, outbox: Outbox, s3_server: str, s3_bucket: str
) -> None:
    sink = make_sink(
        "s3", bucket=s3_bucket, prefix="edge/", endpoint_url=s3_server, region="us-east-1"
    )
    recs = _records(1234)
    outbox.append({"model": recs}, {"model": Cursor(9, 1234)})
    batches = []
    while batch := deliver_batch(outbox, sink, "model", device_id="pi-7", max_records=500):
        batches.append(batch)
    assert [(b.first_seq, b.last_seq) for b in batches] == [(0, 499), (500, 999), (1000, 1233)]
    client = _boto(s3_server)
    keys = _list_keys(client, s3_bucket)
    assert keys == sorted(batch_key(sink, "pi-7", b) for b in batches)
    assert keys[0] == (
        "edge/model/device=pi-7/date=2024-05-01/00000000000000000000-00000000000000000499.ndjson.gz"
    )
    got = _read_s3_records(client, s3_bucket)
    assert [{k: v for k, v in r.items() if k != "seq"} for r in got] == recs
    assert [r["seq"] for r in got] == list(range(1234))
    head = client.head_object(Bucket=s3_bucket, Key=keys[0])
    assert head["ContentType"] == "application/x-ndjson"
    assert head["ContentEncoding"] == "gzip"
    raw = client.get_object(Bucket=s3_bucket, Key=keys[0])["Body"].read()
    assert head["ETag"].strip('"') == hashlib.md5(raw).hexdigest()
    sink.close()


def test_s3_down_then_back_delivers_everything_once(
    tmp_path: Path, outbox: Outbox, s3_bucket: str, s3_server: str
) -> None:
    # A server of our own that we can stop and restart on the same port.
    port = free_port()
    server = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = _boto(endpoint)
        client.create_bucket(Bucket="restart")
        sink = make_sink("s3", bucket="restart", endpoint_url=endpoint, region="us-east-1")
        outbox.append({"events": _records(300)}, {})
        assert deliver_batch(outbox, sink, "events", device_id="d", max_records=100)
        server.stop()
        outbox.append({"events": _records(200, start=300)}, {})
        failures = 0
        for _ in range(5):
            with pytest.raises(TransientSinkError):
                deliver_batch(outbox, sink, "events", device_id="d", max_records=100)
            failures += 1
        assert outbox.stats()["streams"]["events"]["records"] == 400
        server = start_moto(port)
        if "restart" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
            client.create_bucket(Bucket="restart")  # moto state was reset
        while deliver_batch(outbox, sink, "events", device_id="d", max_records=100):
            pass
        keys = _list_keys(client, "restart")
        got = [r["i"] for r in _read_s3_records(client, "restart")]
        # Everything after the outage is there exactly once (the first object may be
        # gone if moto reset its memory on restart).
        assert sorted(set(got)) == got
        assert set(range(100, 500)) <= set(got)
        assert len(keys) == len(set(keys))
        assert outbox.stats()["backlog_records"] == 0
        assert failures == 5
    finally:
        server.stop()


def test_s3_crash_between_put_and_ack_overwrites_same_key(
    tmp_path: Path, s3_server: str, s3_bucket: str
) -> None:
    path = tmp_path / "o.db"
    sink = make_sink("s3", bucket=s3_bucket, endpoint_url=s3_server, region="us-east-1")
    ob = Outbox.open(path, max_bytes=16 << 20)
    ob.append({"model": _records(250)}, {})
    batch = ob.next_batch("model", 100)
    assert batch is not None
    body = encode_body(batch.body)
    sink.put(batch_key(sink, "d", batch), body, md5_b64(body))
    ob.close()  # "crash": put done, no ack

    ob = Outbox.open(path, max_bytes=16 << 20)
    # More data arrives meanwhile; the retried batch must not change.
    ob.append({"model": _records(50, start=250)}, {})
    again = ob.next_batch("model", 1000)
    assert again == batch
    while deliver_batch(ob, sink, "model", device_id="d", max_records=100):
        pass
    client = _boto(s3_server)
    keys = _list_keys(client, s3_bucket)
    assert len(keys) == 3
    got = [r["i"] for r in _read_s3_records(client, s3_bucket)]
    assert got == list(range(300))
    ob.close()


def test_s3_missing_bucket_is_permanent_with_hint(s3_server: str, s3_bucket: str) -> None:
    sink = S3Sink("no-such-bucket-here", endpoint_url=s3_server, region="us-east-1")
    with pytest.raises(PermanentSinkError) as info:
        sink.put("k", b"x", md5_b64(b"x"))
    assert "bucket 'no-such-bucket-here' does not exist" in info.value.hint
    assert "storage.bucket" in info.value.hint


def test_s3_closed_port_is_transient(s3_bucket: str) -> None:
    sink = S3Sink(s3_bucket, endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1")
    start = time.monotonic()
    with pytest.raises(TransientSinkError):
        sink.put("k", b"x", md5_b64(b"x"))
    assert time.monotonic() - start < 10  # no botocore retry storm


def test_s3_md5_mismatch_is_never_confirmed(s3_server: str, s3_bucket: str) -> None:
    # Real S3 answers BadDigest (transient); moto does not check Content-MD5,
    # so the ETag comparison is what refuses to confirm the write.
    sink = S3Sink(s3_bucket, endpoint_url=s3_server, region="us-east-1")
    with pytest.raises(SinkError, match=r"BadDigest|InvalidDigest|ETag"):
        sink.put("k", b"x", md5_b64(b"y"))


def test_s3_bad_credentials_are_permanent_with_hint(
    s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto import settings

    # Create a real (moto) IAM key while authentication is still off.

    iam = boto3.client("iam", endpoint_url=s3_server, region_name="us-east-1")
    user = f"u{os.getpid()}{time.monotonic_ns()}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
    sink = S3Sink(s3_bucket, endpoint_url=s3_server, region="us-east-1")
    with pytest.raises(PermanentSinkError) as info:
        sink.put("k", b"x", md5_b64(b"x"))
    assert "InvalidAccessKeyId" in str(info.value)
    assert "credentials" in info.value.hint

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    sink = S3Sink(s3_bucket, endpoint_url=s3_server, region="us-east-1")
    with pytest.raises(PermanentSinkError) as info:
        sink.put("k", b"x", md5_b64(b"x"))
    assert "SignatureDoesNotMatch" in str(info.value)
    assert "secret key" in info.value.hint


# --------------------------------------------- fleet queries on numpy blocks


@pytest.fixture(scope="module")
def block_fleet_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/fleet.md's devices, model records stored as the uploader stores them now."""
    import numpy as np

    from edge_actors.outbox import RecordBlock
    from edge_actors.records import KIND_PAIR, model_dtype
    from edge_actors.rows import block_spec, iso
    from tests import test_docs as td

    def model(
        device: str, day: int, hour: int, n: int, sqft: float, version: str = ""
    ) -> RecordBlock:
        recs = np.zeros(n, dtype=model_dtype(6))
        recs["t_ns"] = [td._ns(day, hour, i) for i in range(n)]
        recs["id"] = np.arange(n)
        recs["kind"] = KIND_PAIR
        recs["v"] = [3.0, 2.0, sqft, 10.0, sqft * 250.0, 0.9]
        spec = block_spec(
            "lane",
            device_id=device,
            model="house",
            model_version=version,
            lane="ea_default_l0",
            inputs=[f.name for f in td.INPUTS],
            outputs=[f.name for f in td.OUTPUTS],
            cats={},
        )
        return RecordBlock(spec, recs, np.arange(n, dtype=np.int64))

    def counter(device: str, day: int, hour: int, n: int) -> RecordBlock:
        recs = np.zeros(n, dtype=model_dtype(2))
        recs["t_ns"] = [td._ns(day, hour, i) for i in range(n)]
        recs["id"] = np.arange(n)
        recs["kind"] = KIND_PAIR
        recs["v"] = [7.0, 1.0]
        spec = block_spec(
            "lane",
            device_id=device,
            model="counter",
            model_version="2",
            lane="ea_default_l1",
            inputs=["pixels"],
            outputs=["people"],
            cats={},
        )
        return RecordBlock(spec, recs, np.arange(n, dtype=np.int64))

    base = tmp_path_factory.mktemp("blockfleet")
    root = base / "sink"
    # Outbox stream names as the uploader makes them: "model/<name>" (the model=
    # key layout); pi-00's plain "model" is an outbox of an agent before that.
    devices: dict[str, tuple[dict[str, list[RecordBlock]], dict[str, Any], dict[Any, int]]] = {
        "pi-00": (
            {"model": [model("pi-00", 26, 8, 40, 1000.0)]},
            {"events": td._events("pi-00", [(td._ns(26, 8, 10), "sqft", "drift_started")])},
            {},
        ),
        "pi-01": (
            {
                "model/house": [
                    model("pi-01", 27, 10, 300, 1500.0, "1.0"),
                    model("pi-01", 28, 9, 150, 1800.0, "1.0"),
                    model("pi-01", 28, 9, 50, 1800.0, "1.1"),
                ]
            },
            {
                "events/house": td._events(
                    "pi-01",
                    [
                        (td._ns(28, 9, 50), "sqft", "drift_started"),
                        (td._ns(28, 9, 50), "price", "drift_started"),
                        (td._ns(28, 9, 150), "price", "drift_resolved"),
                        (td._ns(28, 9, 160), "age", "check"),
                    ],
                ),
                "system": td._system("pi-01", 28, [51.0, 53.5]),
            },
            {("model", "ring_overrun"): 7},
        ),
        "pi-02": (
            {
                "model/house": [model("pi-02", 28, 11, 150, 1200.0)],
                "model/counter": [counter("pi-02", 28, 11, 30)],
            },
            {
                "events/house": td._events("pi-02", [(td._ns(28, 11, 100), "sqft", "check")]),
                "system": td._system("pi-02", 28, [60.0, 61.0, 62.5]),
            },
            {("model", "sampled"): 5},
        ),
    }
    for device, (blocks, streams, drops) in devices.items():
        with Outbox.open(base / f"{device}.db", max_bytes=16 << 20, chunk_records=50) as ob:
            ob.append(streams, drops=drops, blocks=blocks)
            ob.append_drop_report({"device_id": device, "time": iso(td._ns(28, 12))})
            sink = LocalSink(root)
            for stream in ob.stream_names():
                while deliver_batch(ob, sink, stream, device_id=device, max_records=100):
                    pass
    return root


@pytest.mark.parametrize(
    "name", ["per-device", "per-model", "open-drift", "hourly", "drops", "last-system"]
)
def test_fleet_md_queries_on_objects_built_from_numpy_blocks(
    name: str, block_fleet_tree: Path
) -> None:
    """The queries users run over the bucket give the same answers with the block storage."""
    from tests import test_docs as td

    rows = td.run_fleet_query(name, block_fleet_tree)
    assert [td._simplify(name, r) for r in rows] == td.EXPECTED[name]
