"""The whole agent against a real S3 HTTP endpoint on loopback (moto's server mode)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
from collections import Counter
from typing import Any

import pytest

from edge_actors.keys import parse_key
from edge_actors.producer import Producer
from tests.conftest import MODEL, cli

pytest.importorskip("moto")


def bucket_records(endpoint: str, bucket: str, stream: str) -> list[dict[str, Any]]:
    """Every record of a stream in the bucket, checking each key parses."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"dev1/{stream}/"
    ):
        for obj in page.get("Contents", []):
            prefix, s, device, _date, first, last = parse_key(obj["Key"])
            assert (prefix, s, device) == ("dev1/", stream, "test-device")
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            recs = [json.loads(x) for x in gzip.decompress(body).splitlines() if x.strip()]
            assert [r["seq"] for r in recs] == list(range(first, last + 1))
            out += recs
    return out


def _s3_config(make_config: Any, endpoint: str, bucket: str) -> Any:
    return make_config(
        {
            "workers": {"drift": {"enabled": False}},
            "model_logging": {"buffer_size": 65536},
            "storage": {
                "type": "s3",
                "bucket": bucket,
                "prefix": "dev1/",
                "endpoint_url": endpoint,
                "region": "us-east-1",
            },
            "telemetry": {"retry_base_delay_seconds": 0.1, "retry_max_delay_seconds": 1},
            "supervisor": {"max_restarts": 100},
        }
    )


def test_records_reach_s3_once_across_uploader_kills(
    make_config, agent, s3_server, s3_bucket
) -> None:
    a = agent(_s3_config(make_config, s3_server, s3_bucket))
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    assert p.wait_attached(5)
    n = 0
    for round_ in range(4):
        for _ in range(1500):
            p.log([1, 1, 1.0, float(n)], [1.0, 1.0])
            n += 1
        time.sleep(0.3)
        if round_ < 3:
            os.kill(a.worker_pid("uploader"), signal.SIGKILL)
            a.wait_for(lambda s: s["workers"]["uploader"]["state"] == "running")
    deadline = time.monotonic() + 30
    recs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        recs = bucket_records(s3_server, s3_bucket, "model")
        if len(recs) >= n:
            break
        time.sleep(0.3)
    ages = Counter(int(r["inputs"]["age"]) for r in recs)
    assert sum(ages.values()) == n and set(ages) == set(range(n))
    assert max(ages.values()) == 1
    p.close()


def test_missing_bucket_is_reported_with_a_hint_and_nothing_is_lost(
    make_config, agent, s3_server, s3_bucket
) -> None:
    secret = "SeCrEt-should-never-be-logged-1234"
    os.environ["AWS_SECRET_ACCESS_KEY"] = secret  # monkeypatched by s3_bucket: restored after
    a = agent(_s3_config(make_config, s3_server, "no-such-bucket-here"))
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    assert p.wait_attached(5)
    for i in range(200):
        p.log([1, 1, 1.0, float(i)], [1.0, 1.0])
    st = a.wait_for(
        lambda s: (
            "does not exist" in s["workers"]["uploader"]["stats"].get("last_error", "")
            or bool(s["workers"]["uploader"]["stats"].get("last_error_hint"))
        )
    )
    up = st["workers"]["uploader"]["stats"]
    assert "no-such-bucket-here" in up["last_error"] + up["last_error_hint"]
    assert up["last_error_hint"]
    a.wait_for(
        lambda s: (
            s["workers"]["uploader"]["stats"]["outbox"]["streams"]["model/house"]["records"] == 200
        )
    )
    out = cli("status", "-c", str(a.config))
    assert "last error" in out.stdout
    json_out = cli("status", "--json", "-c", str(a.config)).stdout
    p.close()
    a.stop()
    for text in (a.log(), out.stdout, json_out):
        assert secret not in text
