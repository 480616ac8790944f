"""Sink protocol, error classes and body encoding shared by every sink.

A sink stores one object per call of :meth:`Sink.put` under a key made by
:func:`edge_actors.keys.object_key`. It either confirms the write (returns)
or raises one of two errors, which the uploader treats differently:

- :class:`TransientSinkError`: network down, timeout, throttling, 5xx, disk
  briefly full. Retry with backoff.
- :class:`PermanentSinkError`: the configuration is wrong (missing bucket, bad
  credentials, read-only directory). Retrying soon will not help; the ``hint``
  says what to fix, and the uploader retries on a slow cadence.

Nothing here imports boto3.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from types import ModuleType
from typing import Protocol, runtime_checkable

from edge_actors.redact import redact_urls

_igzip: ModuleType | None
try:  # ISA-L's gzip (the ``fast`` extra): ~3.5x zlib's level 1 speed, and smaller.
    from isal import igzip as _isal_igzip

    _igzip = _isal_igzip
except ImportError:  # e.g. no wheel for the platform: zlib, same format
    _igzip = None

__all__ = [
    "DEFAULT_GZIP_LEVEL",
    "PermanentSinkError",
    "Sink",
    "SinkError",
    "TransientSinkError",
    "encode_body",
    "md5_b64",
]


class SinkError(Exception):
    """Base class of the errors a sink raises from :meth:`Sink.put`."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        """Keep ``hint``: what an operator should do about it (may be empty).

        URLs in both are redacted (user-info, query string): the text goes to the
        log, ``status`` and the outbox.
        """
        super().__init__(redact_urls(message))
        self.hint = redact_urls(hint)

    def __str__(self) -> str:
        """Message followed by the hint, so a plain log line carries both."""
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class TransientSinkError(SinkError):
    """A failure that may go away by itself; retry with backoff."""


class PermanentSinkError(SinkError):
    """A failure that needs an operator (``hint`` says what); retry slowly."""


@runtime_checkable
class Sink(Protocol):
    """Where batches go. Implementations: local directory, S3."""

    #: Key prefix the uploader must put in front of every key (validated).
    prefix: str

    def put(self, key: str, body: bytes, md5_b64: str) -> None:
        """Store ``body`` under ``key``, overwriting an existing object.

        Returns only once the object is durably stored and its content was
        verified against ``md5_b64`` (base64 of the MD5 digest of ``body``).

        Raises:
            TransientSinkError: retry later.
            PermanentSinkError: configuration problem; see ``hint``.
        """
        ...

    def close(self) -> None:
        """Release connections; the sink is not used afterwards."""
        ...


#: gzip level of uploaded objects unless configured (``storage.gzip_level``):
#: compressing is most of the cost of shipping a record, and level 1 costs a
#: quarter of level 6 for objects ~20 % larger.
DEFAULT_GZIP_LEVEL = 1


def encode_body(ndjson: bytes, level: int = DEFAULT_GZIP_LEVEL) -> bytes:
    """Gzip ``ndjson`` deterministically: same batch and level, same bytes, same ETag.

    ``mtime=0`` removes the only varying header field, so a retried upload
    produces an identical object. Level 1 (fastest) uses ISA-L's level 1 where
    the ``isal`` package is installed: a standard gzip stream, faster and
    smaller than zlib's; other levels keep zlib's size/CPU trade-off.
    """
    if level == 1 and _igzip is not None:
        return bytes(_igzip.compress(ndjson, 1, mtime=0))
    return gzip.compress(ndjson, compresslevel=level, mtime=0)


def md5_b64(body: bytes) -> str:
    """Base64 of the MD5 digest of ``body``: the ``Content-MD5`` header value."""
    # MD5 here is an integrity check S3 understands, not a security control.
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


def md5_hex_from_b64(md5: str) -> str:
    """Hex form of a base64 MD5 digest (what S3 returns as the ETag)."""
    return base64.b64decode(md5).hex()
