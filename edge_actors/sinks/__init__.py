"""Sinks: where batches leave the device, plus the one-batch delivery step.

- :func:`make_sink` builds a sink from plain storage settings (``local`` or
  ``s3``); the S3 sink imports boto3 only when it first uploads.
- :func:`deliver_batch` moves one batch of one stream from the outbox to a
  sink: build (or rebuild) the deterministic batch, gzip it, put it under its
  key, and only then ack it in the outbox.
"""

from __future__ import annotations

import logging
import os

from edge_actors.keys import object_key, split_stream
from edge_actors.outbox import Batch, Outbox
from edge_actors.sinks.base import (
    DEFAULT_GZIP_LEVEL,
    PermanentSinkError,
    Sink,
    SinkError,
    TransientSinkError,
    encode_body,
    md5_b64,
)

__all__ = [
    "PermanentSinkError",
    "Sink",
    "SinkError",
    "TransientSinkError",
    "batch_key",
    "deliver_batch",
    "encode_body",
    "make_sink",
    "md5_b64",
]

logger = logging.getLogger(__name__)


def make_sink(
    type: str,
    *,
    bucket: str | None = None,
    prefix: str = "",
    local_path: str | os.PathLike[str] | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> Sink:
    """Build the sink named by ``type`` (``"local"`` or ``"s3"``).

    Args:
        type: ``"local"`` (a directory; needs ``local_path``) or ``"s3"``
            (needs ``bucket``; ``endpoint_url`` for MinIO/Ceph/R2).
        bucket: S3 bucket.
        prefix: key prefix for every object (validated).
        local_path: root directory of the local sink.
        endpoint_url: S3-compatible endpoint URL.
        region: S3 region (``None``: boto3's chain).

    Raises:
        ValueError: unknown type or a missing/invalid setting, naming the key.
    """
    kind = type.strip().lower()
    if kind == "local":
        if not local_path:
            raise ValueError("storage.local_path: required when storage.type is 'local'")
        from edge_actors.sinks.local import LocalSink

        return LocalSink(local_path, prefix=prefix)
    if kind == "s3":
        if not bucket:
            raise ValueError("storage.bucket: required when storage.type is 's3'")
        from edge_actors.sinks.s3 import S3Sink

        return S3Sink(bucket, prefix=prefix, region=region, endpoint_url=endpoint_url)
    raise ValueError(f"storage.type: must be 'local' or 's3', got {type!r}")


def batch_key(sink: Sink, device_id: str, batch: Batch) -> str:
    """Object key of ``batch`` for ``device_id`` under ``sink.prefix``."""
    stream, model = split_stream(batch.stream)
    return object_key(
        sink.prefix, stream, device_id, batch.date_utc, batch.first_seq, batch.last_seq, model
    )


def deliver_batch(
    outbox: Outbox,
    sink: Sink,
    stream: str,
    *,
    device_id: str,
    max_records: int,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
) -> Batch | None:
    """Upload the next batch of ``stream`` and ack it; ``None`` if nothing is pending.

    The batch is acked only after :meth:`Sink.put` returned. If the process
    dies in between, the next call rebuilds the same batch (same bytes, same
    key) and the put overwrites the object: no duplicate.

    Raises:
        TransientSinkError: retry later with backoff (the batch stays in flight).
        PermanentSinkError: configuration problem, ``hint`` says what to fix.
        OutboxFull: the outbox cannot write its in-flight mark or the ack
            (disk full); the batch will be uploaded again later, same key.
    """
    batch = outbox.next_batch(stream, max_records)
    if batch is None:
        return None
    key = batch_key(sink, device_id, batch)
    body = encode_body(batch.body, gzip_level)
    sink.put(key, body, md5_b64(body))
    outbox.ack(batch)
    logger.debug("delivered %s (%d records, %d bytes)", key, batch.n, len(body))
    return batch
