"""Object key layout shared by every sink.

One batch of one stream becomes one object::

    {prefix}{stream}/device={device_id}/date=YYYY-MM-DD/{first_seq:020d}-{last_seq:020d}.ndjson.gz
    {prefix}{stream}/device={device_id}/date=YYYY-MM-DD/model={model}/{first}-{last}.ndjson.gz

The second form is for the streams of one model (``model``, ``events``,
``payload``): the outbox keeps one stream per model (``model/detector``), whose
sequence numbers are its own. ``model=`` comes after ``date=`` so that the
listings a tool makes stay one prefix each: a device's objects since a date
(``StartAfter=.../device=X/date=D``) without knowing its models first, and a
device's day. Agents before multi-model support wrote the first form for
every stream; :func:`parse_key` reads both.

The key is a pure function of the batch (stream, sequence range, date of its
oldest record), so a retried upload overwrites the same object instead of
creating a duplicate, and the ``device=``/``date=`` directories are Hive
partitions that Athena, Spark, Trino or DuckDB read directly.

Every component is validated so that no value can escape its place: a
``device_id`` of ``../x`` or ``a/b`` would otherwise write into another
device's partition, or outside the local sink's root directory.
"""

from __future__ import annotations

import datetime
import re
import unicodedata

from edge_actors.redact import short_repr

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_PREFIX_BYTES",
    "MAX_PREFIX_CHARS",
    "MAX_SEQ",
    "key_model",
    "object_key",
    "parse_key",
    "prefix_problem",
    "split_stream",
    "validate_prefix",
]

#: S3's limit on the UTF-8 length of an object key.
MAX_KEY_BYTES = 1024
#: Largest sequence number that fits the fixed-width (20 digit) key field.
MAX_SEQ = 10**20 - 1
#: Longest key prefix, in characters and in UTF-8 bytes. The bytes bound keeps
#: every key of a valid config under :data:`MAX_KEY_BYTES` (the rest of a key is
#: at most ~250 bytes), so the uploader can never meet a key it must refuse.
MAX_PREFIX_CHARS = 256
MAX_PREFIX_BYTES = 512

# Streams become directory names that ops people type into queries: keep them boring.
_STREAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# C0 controls, DEL and C1 controls: invisible in logs and consoles, refused everywhere.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY_RE = re.compile(
    r"^(?P<prefix>.*?)(?P<stream>[^/]+)/device=(?P<device>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"(?:model=(?P<model>[^/]+)/)?(?P<first>\d{20})-(?P<last>\d{20})\.ndjson\.gz$"
)


def _check_text(component: str, value: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{component}: must be a string, got {type(value).__name__}")
    if _CONTROL_RE.search(value):
        raise ValueError(f"{component}: contains a NUL or control character: {value!r}")
    if "\\" in value:
        raise ValueError(f"{component}: contains a backslash: {value!r}")
    invisible = _invisible(value)
    if invisible is not None:
        raise ValueError(
            f"{component}: contains a Unicode format or separator character ({invisible}): "
            f"{value!r}"
        )


def _invisible(value: str) -> str | None:
    """The first format, separator or surrogate character of ``value`` as ``U+XXXX``.

    Bidirectional overrides (U+202E), line separators (U+2028) and zero-width
    characters make a prefix look like another one in a console or a bucket
    listing, and break line-oriented logs.
    """
    for c in value:
        if unicodedata.category(c) in ("Cf", "Zl", "Zp", "Cs"):
            return f"U+{ord(c):04X}"
    return None


def prefix_problem(prefix: object) -> str | None:
    """Why ``prefix`` is not a valid key prefix (``None`` when it is).

    The one rule set for ``storage.prefix``, used by the config loader (so
    ``check-config`` fails) and by every sink (so a prefix that reached it
    anyway is refused the same way). The prefix may be empty or contain
    ``/``-separated segments (``"fleet/eu/"``); a non-empty prefix normally ends
    with ``/``, one that does not is glued to the stream name (``"tele-"``).
    """
    if not isinstance(prefix, str):
        return f"must be a string, got {type(prefix).__name__}"
    if len(prefix) > MAX_PREFIX_CHARS:
        return f"must be at most {MAX_PREFIX_CHARS} characters, got {len(prefix)}"
    size = len(prefix.encode("utf-8", "surrogatepass"))
    if size > MAX_PREFIX_BYTES:
        return f"must be at most {MAX_PREFIX_BYTES} bytes in UTF-8, got {size}"
    shown = short_repr(prefix)
    if _CONTROL_RE.search(prefix):
        return f"must not contain NUL or control characters, got {shown}"
    invisible = _invisible(prefix)
    if invisible is not None:
        return (
            "must not contain Unicode format or line/paragraph separator characters "
            f"({invisible}), got {shown}"
        )
    if prefix.startswith("/"):
        return f"must not start with '/', got {shown}"
    # The local sink maps keys to paths, so '..' would escape its directory
    # (on any OS: a backslash counts as a separator here).
    segments = prefix.replace("\\", "/").split("/")
    if ".." in segments:
        return f"must not contain a '..' segment, got {shown}"
    if "\\" in prefix:
        return f"must not contain a backslash, got {shown}"
    # The last segment is empty when the prefix ends with '/', the normal case.
    if "." in segments:
        return f"must not contain a '.' segment, got {shown}"
    if "" in segments[:-1]:
        return f"must not contain an empty segment ('//'), got {shown}"
    return None


def validate_prefix(prefix: str) -> str:
    """Check a key prefix (see :func:`prefix_problem`) and return it unchanged.

    Raises:
        ValueError: ``prefix: <why>``, naming the offending value.
    """
    problem = prefix_problem(prefix)
    if problem is not None:
        raise ValueError(f"prefix: {problem}")
    return prefix


def _check_seq(component: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{component}: must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_SEQ:
        raise ValueError(f"{component}: must be in [0, {MAX_SEQ}], got {value}")


def object_key(
    prefix: str,
    stream: str,
    device_id: str,
    date_utc: datetime.date,
    first_seq: int,
    last_seq: int,
    model: str | None = None,
) -> str:
    """Return the object key of the batch ``first_seq..last_seq`` of ``stream``.

    Args:
        prefix: key prefix, see :func:`validate_prefix`.
        stream: stream name, ``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 64 characters.
        device_id: any printable text without ``/``, ``\\``, or control characters,
            not ``.`` or ``..``.
        date_utc: UTC date of the oldest record of the batch (the ``date=`` partition).
        first_seq: outbox sequence number of the first record (inclusive).
        last_seq: outbox sequence number of the last record (inclusive).
        model: the model of a model's stream (the ``model=`` partition), or ``None``.

    Raises:
        ValueError: naming the component that is invalid, or ``key`` when the
            whole key is longer than :data:`MAX_KEY_BYTES` bytes in UTF-8.
    """
    validate_prefix(prefix)
    _check_text("stream", stream)
    if not _STREAM_RE.match(stream) or stream in (".", ".."):
        raise ValueError(
            f"stream: must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 64 chars), got {stream!r}"
        )
    _check_text("device_id", device_id)
    if not device_id or device_id in (".", "..") or "/" in device_id:
        raise ValueError(
            f"device_id: must be non-empty, without '/', not '.' or '..': {device_id!r}"
        )
    # datetime is a subclass of date; its time part would be silently dropped.
    if not isinstance(date_utc, datetime.date) or isinstance(date_utc, datetime.datetime):
        raise ValueError(f"date_utc: must be a datetime.date, got {type(date_utc).__name__}")
    _check_seq("first_seq", first_seq)
    _check_seq("last_seq", last_seq)
    if last_seq < first_seq:
        raise ValueError(f"last_seq: must be >= first_seq ({first_seq}), got {last_seq}")
    part = ""
    if model is not None:
        _check_text("model", model)
        if not _STREAM_RE.match(model) or ".." in model:
            raise ValueError(f"model: must match [A-Za-z0-9][A-Za-z0-9_.-]*, got {model!r}")
        part = f"model={model}/"
    key = (
        f"{prefix}{stream}/device={device_id}/date={date_utc.isoformat()}/{part}"
        f"{first_seq:020d}-{last_seq:020d}.ndjson.gz"
    )
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"key: longer than {MAX_KEY_BYTES} bytes in UTF-8: {key[:80]!r}...")
    return key


def key_model(key: str) -> str | None:
    """The ``model=`` partition of a key made by :func:`object_key` (``None``: none)."""
    match = _KEY_RE.match(key)
    if match is None:
        raise ValueError(f"key: not an edge-actors object key: {key!r}")
    return match["model"]


def split_stream(outbox_stream: str) -> tuple[str, str | None]:
    """``("model", "detector")`` for the outbox stream ``model/detector``; ``(s, None)`` else."""
    stream, sep, model = outbox_stream.partition("/")
    return stream, (model if sep else None)


def parse_key(key: str) -> tuple[str, str, str, datetime.date, int, int]:
    """Split a key made by :func:`object_key` back into its components.

    Returns:
        ``(prefix, stream, device_id, date_utc, first_seq, last_seq)``.

    Raises:
        ValueError: if ``key`` does not have the layout of :func:`object_key`.
    """
    match = _KEY_RE.match(key)
    if match is None:
        raise ValueError(f"key: not an edge-actors object key: {key!r}")
    return (
        match["prefix"],
        match["stream"],
        match["device"],
        datetime.date.fromisoformat(match["date"]),
        int(match["first"]),
        int(match["last"]),
    )
