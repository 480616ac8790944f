"""Durable outbox: records between the rings and the sink, in one SQLite file.

Guarantees (docs/design.md, "Guarantees"):

- **Exactly once between ring and outbox.** :meth:`Outbox.append` writes the
  new records of every stream *and* the ring consumer cursors in one
  transaction. After a kill -9 at any instant, :meth:`Outbox.cursors` returns
  the position just after the last record stored, and the caller re-reads the
  rings from there: nothing lost, nothing stored twice.
- **Deterministic batches.** :meth:`Outbox.next_batch` records the range it
  hands out in the ``inflight`` table before returning it, and hands out that
  exact range again until :meth:`Outbox.ack`. A crash between the sink's PUT
  and the ack therefore rebuilds the same bytes under the same object key:
  the retry overwrites the object, the bucket holds no duplicate.
- **Rows leave only after the sink confirmed** (:meth:`Outbox.ack`).
- **Bounded disk.** ``max_bytes`` bounds the database file plus its WAL. When
  over, the oldest chunks of the lowest-priority stream are dropped first
  (``system < payload < model < events < drops``), in-flight data only when
  nothing else is left; every dropped record is counted per (stream, reason)
  in the database and reported as records of the ``drops`` stream
  (:meth:`Outbox.append_drop_report`).
- **Disk full never crash-loops.** ``append`` drops per policy with reason
  ``disk_full`` and retries once; if the write still fails it raises
  :class:`OutboxFull`. The caller must then *not* advance its ring cursors:
  the records stay in the ring (which may overwrite and count them as lost
  if it fills) and the next ``append`` tries again; the outbox recovers by
  itself when space returns. ``OutboxFull`` is the only exception ``append``
  raises for a storage problem. A small reserve file ``<name>-reserve``
  (``max_bytes / 32``, 32 KiB..1 MiB, outside the budget) is deleted first on
  a full disk, so that SQLite has room to write the drops that make space;
  it is re-created once the file system has room again.
- **Corrupt database.** At open, ``PRAGMA quick_check``; a file that fails
  it (or is not a database) is moved aside as ``<name>.corrupt-<UTC time>``
  (with its ``-wal``/``-shm``), an error is logged, ``corrupt_recovered`` is
  counted, and a fresh outbox starts. Its cursors are then empty: the caller
  resumes from the rings' own read positions. The same happens if
  corruption is detected by ``append`` while running.

Storage layout: one row of ``chunks`` holds up to ``chunk_records``
consecutive records of one stream, in one of two forms:

- records handed in as dicts (drop reports, tests): NDJSON (each record gets
  its outbox sequence number as field ``seq``), zlib-compressed (``codec`` 1);
- records handed in as :class:`RecordBlock` (the uploader's ring records):
  their ring layout as they came out of the ring, i.e. the ring sequence
  numbers then the numpy records, zlib-compressed (``codec`` 2), with a
  ``schema_id`` naming the row of ``schemas`` that says how to render them
  (:func:`edge_actors.rows.render_block`). The NDJSON is built only when a
  batch is handed out, and it is the same bytes the dict form would give.

An outbox written before ``codec`` 2 existed (no ``schema_id`` column) gets
the column at open and its rows are read as they are: both forms mix freely,
in one stream and in one batch. Sequence numbers are per stream, persisted in
``streams.next_seq`` and never reused, even after deletes or drops.

One :class:`Outbox` (one connection, one thread) per file: it is the single
writer, which lets it cache the next sequence numbers in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import functools
import hashlib
import logging
import math
import os
import sqlite3
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from edge_actors import spill as _spill
from edge_actors.jsoncompat import orjson
from edge_actors.rows import render_block

__all__ = [
    "DEFAULT_PRIORITIES",
    "DROP_REASONS",
    "Batch",
    "Cursor",
    "Outbox",
    "OutboxError",
    "OutboxFull",
    "OutboxReadError",
    "OutboxReader",
    "StoredChunk",
    "decode_ndjson",
    "RecordBlock",
    "stored_ndjson",
]

logger = logging.getLogger(__name__)

_isal_zlib: Any
try:  # ISA-L (the ``fast`` extra): a zlib stream, compressed several times faster
    from isal import isal_zlib as _isal_zlib
except ImportError:  # e.g. no wheel for the platform: zlib
    _isal_zlib = None

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Drop order: lower drops first. Unknown streams get 0 (dropped with "system").
DEFAULT_PRIORITIES: Mapping[str, int] = {
    "system": 0,
    "payload": 1,
    "model": 2,
    "feedback": 2,
    "events": 3,
    "drops": 4,
}
#: First sequence number of a new database; None: its creation time in ns
#: (see ``Outbox._load_state``). Tests that compare sequence numbers set 0.
DEFAULT_SEQ_BASE: int | None = None

#: Reasons a record can be dropped for.
DROP_REASONS = (
    "budget",
    "disk_full",
    "ring_overrun",
    "sampled",
    "outbox_unavailable",
    "unflushed_at_stop",
)

# 2: chunks.schema_id and the schemas table (codec 2, numpy blocks).
_SCHEMA_VERSION = 2
_CODEC_RAW = 0
_CODEC_ZLIB = 1
_CODEC_BLOCK = 2
# Estimated b-tree/index cost of one chunk row beyond its body, for drop planning.
_ROW_OVERHEAD = 96
# Drop down to this fraction of the budget, so that a full outbox drops in
# bursts instead of on every append (each drop costs a checkpoint and a vacuum).
_LOW_WATER = 0.95
_SQLITE_FULL = 13
# Free bytes below which open() releases the reserve before touching the database:
# a WAL database needs its -shm (32 KiB) and a first WAL frame.
_OPEN_ROOM = 256 * 1024
# Disk-full recoveries per append (each drops about twice as much as the last).
_FULL_RETRIES = 3
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(
    key TEXT PRIMARY KEY,
    value
);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    t_min REAL NOT NULL,
    bytes INTEGER NOT NULL,
    codec INTEGER NOT NULL,
    body BLOB NOT NULL
);
-- Covering index: batching, dropping and stats never read the bodies' pages.
CREATE INDEX IF NOT EXISTS chunks_by_stream
    ON chunks(stream, first_seq, last_seq, n, t_min, bytes);
CREATE TABLE IF NOT EXISTS streams(
    stream TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    last_success REAL,
    last_error TEXT,
    last_error_at REAL
);
CREATE TABLE IF NOT EXISTS cursors(
    ring TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inflight(
    stream TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS schemas(
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS drops(
    stream TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    reported INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(stream, reason)
);
"""


class OutboxError(Exception):
    """Base class of the outbox's own errors."""


class OutboxFull(OutboxError):
    """The disk is full even after dropping per policy; nothing was written.

    The caller must not advance its ring cursors (the records stay in the
    ring) and should try again later; see the module doc.
    """


class Cursor(NamedTuple):
    """Position of a ring consumer: the ring's ``epoch`` and the next ``seq`` to read."""

    epoch: int
    seq: int


@dataclasses.dataclass(frozen=True)
class Batch:
    """A range of records of one stream, ready to upload as one object.

    Attributes:
        stream: stream name.
        first_seq: sequence number of the first record (inclusive).
        last_seq: sequence number of the last record (inclusive).
        n: number of records (``last_seq - first_seq + 1`` unless drops left gaps).
        body: the records as NDJSON, one ``\\n``-terminated line each.
        t_min: a lower bound of the records' time (seconds since the epoch),
            stable for the range: it names the ``date=`` partition.
    """

    stream: str
    first_seq: int
    last_seq: int
    n: int
    body: bytes
    t_min: float

    @property
    def date_utc(self) -> datetime.date:
        """UTC date of ``t_min``, for the object key."""
        t = self.t_min if math.isfinite(self.t_min) else 0.0
        return datetime.datetime.fromtimestamp(max(t, 0.0), tz=datetime.timezone.utc).date()


class _ChunkRow(NamedTuple):
    stream: str
    first_seq: int
    last_seq: int
    n: int
    t_min: float
    nbytes: int
    codec: int
    body: bytes
    schema_id: int | None = None


@dataclasses.dataclass(frozen=True)
class RecordBlock:
    """Ring records stored as they are (numpy), rendered to NDJSON only when uploaded.

    Attributes:
        spec: how to render them (:func:`edge_actors.rows.block_spec`): ring
            kind and names. JSON-able; stored once per distinct spec.
        records: the records, a structured array with ``t_ns`` (ns since the epoch).
        ring_seqs: their ring sequence numbers (int64, one per record).
    """

    spec: Mapping[str, Any]
    records: npt.NDArray[Any]
    ring_seqs: npt.NDArray[np.int64]


class _Schema(NamedTuple):
    spec: dict[str, Any]
    dtype: np.dtype[Any]


def _schema_text(spec: Mapping[str, Any], dtype: np.dtype[Any]) -> str:
    # dtype.descr: [(name, format[, shape]), ...]; ring records are flat (records.py).
    return orjson.dumps(
        {"spec": spec, "dtype": dtype.descr},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    ).decode()


def _schema_id(text: str) -> int:
    # A content hash: the id is known before the row exists, in every transaction.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _parse_schema(text: str) -> _Schema:
    doc = orjson.loads(text)
    fields = [tuple(tuple(f) if isinstance(f, list) else f for f in d) for d in doc["dtype"]]
    return _Schema(doc["spec"], np.dtype(fields))


def _block_arrays(
    body: bytes, n: int, dtype: np.dtype[Any]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    raw = zlib.decompress(body)
    seqs = np.frombuffer(raw, np.int64, n)
    records = np.frombuffer(raw, dtype, n, offset=8 * n)
    return seqs, records


def _block_body(seqs: npt.NDArray[np.int64], records: npt.NDArray[Any], level: int) -> bytes:
    """The zlib stream of a block chunk (``zlib.decompress`` reads it), by ISA-L at level 1.

    ISA-L's level 1 (where the ``fast`` extra is installed) costs ~0.3 µs per
    100-byte model record here against ~3-5 µs for zlib's (float bits barely
    compress, and zlib's level 1 still searches for matches), for about the
    same size: it was a third of the uploader's CPU at 10 k records/s. Other
    levels keep zlib's size/CPU trade-off. (The dict-row chunks of the
    low-rate streams keep zlib: their size on a full disk is what the drop
    policy was tuned with.)
    """
    data = np.ascontiguousarray(seqs, np.int64).tobytes() + np.ascontiguousarray(records).tobytes()
    level = max(1, level)
    if level == 1 and _isal_zlib is not None:
        return bytes(_isal_zlib.compress(data, 1))
    return zlib.compress(data, level)


def _json_item_or_hex(obj: Any) -> Any:
    """orjson fallback of stored records: never fails, a record must not stop the uploader.

    numpy scalars outside OPT_SERIALIZE_NUMPY's set through ``.item()``, bytes
    as hex, sets as lists, anything else (Decimal, Path, ...) as its ``str()``.
    The monitor's fallback for payloads differs (``monitor._json_num_or_str``).
    """
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def _to_seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
    t = float(value)
    if not math.isfinite(t):
        return None
    # Accept ms / µs / ns timestamps as well: anything beyond year ~5000 in seconds
    # is not seconds.
    if t > 1e17:
        return t / 1e9
    if t > 1e14:
        return t / 1e6
    if t > 1e11:
        return t / 1e3
    return t


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and not isinstance(exc, sqlite3.Error):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
        return True
    text = str(exc).lower()
    return "database or disk is full" in text or "no space left" in text


def _is_corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _decode(codec: int, body: bytes) -> bytes:
    return zlib.decompress(body) if codec == _CODEC_ZLIB else bytes(body)


def _split_lines(raw: bytes) -> list[bytes]:
    # Every line ends with b"\n"; orjson escapes newlines inside strings.
    lines = raw.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _heals(method: Callable[Concatenate[Outbox, _P], _R]) -> Callable[Concatenate[Outbox, _P], _R]:
    """Recover from corruption found while running: move the file aside, retry once."""

    @functools.wraps(method)
    def wrapper(self: Outbox, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) or not _is_corrupt(exc):
                raise
            self._recover_corrupt_runtime(exc)
            # The fresh file starts empty: an append is stored anew (with its
            # cursors), a read sees nothing, an ack has nothing left to delete.
            return method(self, *args, **kwargs)

    return wrapper


class Outbox:
    """SQLite outbox; see the module doc. Create with :meth:`Outbox.open`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        max_bytes: int,
        chunk_records: int,
        chunk_max_bytes: int,
        compress_level: int,
        time_field: str,
        priorities: Mapping[str, int],
        clock: Callable[[], float],
        synchronous: str,
        busy_timeout_ms: int,
        seq_base: int | None = None,
    ) -> None:
        """Use :meth:`Outbox.open`; this only wires an already prepared connection."""
        self._conn = conn
        self._seq_base = seq_base
        self.path = path
        self.max_bytes = max_bytes
        self.chunk_records = chunk_records
        self.chunk_max_bytes = chunk_max_bytes
        self.compress_level = compress_level
        self.time_field = time_field
        self.priorities = dict(priorities)
        self._clock = clock
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._next_seq: dict[str, int] = {}
        # schema id -> parsed schema (the schemas table only grows; ids are hashes).
        self._schemas: dict[int, _Schema] = {}
        self._schema_texts: dict[tuple[str, str], tuple[int, str]] = {}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.disk_full_events = 0
        self.corrupt_recovered = 0
        self._page_size = 4096
        self._wal_limit_bytes = 0
        # The reserve: max_bytes / 32 in 32 KiB..1 MiB, at most 1/8 of the file
        # system; grown to hold the WAL plus two of the largest appends seen.
        self._fs_cap = max(32 * 1024, _fs_bytes(path.parent) // 8)
        self._ballast_bytes = min(max(32 * 1024, min(1 << 20, max_bytes // 32)), self._fs_cap)
        # Largest append seen (bytes): the reserve must hold one more plus the WAL.
        self._max_txn_bytes = 0
        self._spill_path = _spill.spill_path(path)
        # Drop counts in the side file, not yet folded into the database.
        self._spill: _spill.Spill | None = None
        # Counts that could not even be written to the side file (retried).
        self._unsaved = _spill.Spill()
        self._load_state()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_bytes: int,
        synchronous: str = "FULL",
        chunk_records: int = 1000,
        chunk_max_bytes: int = 1 << 20,
        compress_level: int = 1,
        time_field: str = "ts",
        priorities: Mapping[str, int] | None = None,
        busy_timeout_ms: int = 5000,
        clock: Callable[[], float] = time.time,
        seq_base: int | None = None,
    ) -> Outbox:
        """Open (or create) the outbox at ``path``, recovering from corruption.

        Args:
            path: database file; its directory is created if missing.
            max_bytes: budget for the database file plus its WAL (>= 64 KiB).
            synchronous: SQLite ``synchronous`` level: ``FULL`` (default; a
                committed append survives a power cut), ``NORMAL`` (may lose
                the last transactions on power loss, never corrupts), ``OFF``.
            chunk_records: records per stored row at most. Keep it <= the
                uploader's batch size so batches are made of whole rows.
            chunk_max_bytes: uncompressed NDJSON bytes per row at most.
            compress_level: zlib level of stored rows (0 = store raw NDJSON).
            time_field: record field holding the record time (seconds, or
                ms/µs/ns since the epoch); gives the ``date=`` partition.
                Records without it use the append time.
            priorities: drop order, lower first; default :data:`DEFAULT_PRIORITIES`.
            busy_timeout_ms: SQLite busy timeout (other readers, e.g. a CLI).
            clock: wall clock, seconds since the epoch (tests inject one).
            seq_base: first sequence number of every stream of a NEW database;
                default: its creation time in nanoseconds (see ``_load_state``).
        """
        if max_bytes < 64 * 1024:
            raise ValueError(f"max_bytes: must be >= 65536, got {max_bytes}")
        sync = synchronous.upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(
                f"synchronous: must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}"
            )
        if chunk_records < 1:
            raise ValueError(f"chunk_records: must be >= 1, got {chunk_records}")
        if not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level: must be in [0, 9], got {compress_level}")
        db_path = Path(path)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        reserve = Path(f"{db_path}-reserve")
        if _free_bytes(db_path.parent) < _OPEN_ROOM and reserve.exists():
            # A (nearly) full disk: opening a WAL database creates its -shm and
            # -wal files. The reserve is for exactly this; it comes back later.
            logger.warning("outbox %s: disk full at open, reserve released", db_path)
            reserve.unlink(missing_ok=True)
        corrupt = False
        if db_path.exists() and db_path.stat().st_size > 0:
            problem = _quick_check(db_path)
            if problem is not None:
                _move_aside(db_path, problem)
                corrupt = True
        try:
            conn = _connect(db_path, sync, busy_timeout_ms)
        except sqlite3.OperationalError as exc:
            if not reserve.exists():
                raise
            logger.warning("outbox %s: cannot open (%s), reserve released", db_path, exc)
            reserve.unlink(missing_ok=True)
            conn = _connect(db_path, sync, busy_timeout_ms)
        outbox = cls(
            conn,
            db_path,
            max_bytes=max_bytes,
            chunk_records=chunk_records,
            chunk_max_bytes=chunk_max_bytes,
            compress_level=compress_level,
            time_field=time_field,
            priorities=DEFAULT_PRIORITIES if priorities is None else priorities,
            clock=clock,
            synchronous=sync,
            busy_timeout_ms=busy_timeout_ms,
            seq_base=seq_base,
        )
        if corrupt:
            outbox._count_corrupt()
        outbox._spill = _spill.load(outbox._spill_path)
        if outbox._spill is not None:
            outbox.count_drops({})  # fold what the side file holds, now if possible
        try:
            # The budget may have shrunk in the config since the last run.
            outbox._enforce_budget()
            outbox._ensure_ballast()
        except sqlite3.Error as exc:
            logger.error("outbox %s: cannot enforce the budget at open: %s", db_path, exc)
        return outbox

    def _load_state(self) -> None:
        conn = self._conn
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        # Keep the WAL small relative to the budget (it counts against it) and well
        # under the reserve file: on a full disk, releasing the reserve must leave
        # room for a checkpoint to move the whole WAL (this bound plus the last
        # transaction, see _bound_wal) into the database. journal_size_limit
        # keeps that much WAL allocated after a checkpoint: the small writes a
        # full disk still needs (in-flight mark, ack, drop) reuse it.
        wal_bytes = min(256 * self._page_size, self.max_bytes // 8, self._ballast_bytes // 2)
        wal_pages = max(4, wal_bytes // self._page_size)
        self._wal_limit_bytes = wal_pages * self._page_size
        conn.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
        conn.execute(f"PRAGMA journal_size_limit={self._wal_limit_bytes}")
        self._next_seq = {
            str(s): int(n) for s, n in conn.execute("SELECT stream, next_seq FROM streams")
        }
        # Sequence numbers name the uploaded objects. A re-created outbox (corrupt
        # file moved aside, database deleted) must not restart at 0, or its first
        # objects would overwrite the ones its predecessor uploaded that day. Each
        # new database starts its streams at its creation time in nanoseconds:
        # later than anything an older database reached unless it stored more than
        # one record per nanosecond of its life.
        row = conn.execute("SELECT value FROM meta WHERE key='seq_base'").fetchone()
        if row is None:
            base = self._seq_base if self._seq_base is not None else DEFAULT_SEQ_BASE
            if base is None:
                base = int(self._clock() * 1e9)
            with self._txn():
                conn.execute("INSERT INTO meta(key, value) VALUES('seq_base', ?)", (base,))
            row = (base,)
        self.seq_base = int(row[0])
        row = conn.execute("SELECT value FROM meta WHERE key='corrupt_recovered'").fetchone()
        self.corrupt_recovered = int(row[0]) if row else 0

    def _count_corrupt(self) -> None:
        self.corrupt_recovered += 1
        with self._txn():
            self._conn.execute(
                "INSERT INTO meta(key, value) VALUES('corrupt_recovered', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (self.corrupt_recovered,),
            )

    def close(self) -> None:
        """Close the database (SQLite checkpoints and removes the WAL)."""
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            logger.warning("closing outbox %s: %s", self.path, exc)

    def __enter__(self) -> Outbox:
        """Use as a context manager that closes on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the outbox."""
        self.close()

    # ------------------------------------------------------------- transactions

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                logger.debug("rollback failed: %s", exc)

    def _note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = self._clock()

    # ------------------------------------------------------------------ append

    def _encode(
        self, stream: str, records: Sequence[Mapping[str, Any]], now: float
    ) -> list[_ChunkRow]:
        rows: list[_ChunkRow] = []
        seq = self._next_seq.get(stream, self.seq_base)
        dumps = orjson.dumps
        time_field = self.time_field
        limit_n = self.chunk_records
        limit_bytes = self.chunk_max_bytes
        lines: list[bytes] = []
        size = 0
        first = seq
        t_min = math.inf

        def flush() -> None:
            raw = b"".join(lines)
            if self.compress_level:
                body, codec = zlib.compress(raw, self.compress_level), _CODEC_ZLIB
            else:
                body, codec = raw, _CODEC_RAW
            rows.append(
                _ChunkRow(
                    stream,
                    first,
                    seq - 1,
                    len(lines),
                    t_min if t_min != math.inf else now,
                    len(body),
                    codec,
                    body,
                )
            )

        for rec in records:
            if "seq" in rec or type(rec) is not dict:
                # The record's own "seq" (e.g. the ring's) would be ambiguous next to ours.
                data = {k: v for k, v in rec.items() if k != "seq"}
                line = (
                    b'{"seq":%d,' % seq
                    + dumps(data, default=_json_item_or_hex, option=_ORJSON_OPTS)[1:]
                )
            else:
                encoded = dumps(rec, default=_json_item_or_hex, option=_ORJSON_OPTS)
                line = b'{"seq":%d,' % seq + encoded[1:]
            if line.endswith(b",}"):  # the record was empty
                line = line[:-2] + b"}"
            t = rec.get(time_field)
            if t is not None:
                ts = _to_seconds(t)
                if ts is not None and ts < t_min:
                    t_min = ts
            lines.append(line + b"\n")
            size += len(line) + 1
            seq += 1
            if len(lines) >= limit_n or size >= limit_bytes:
                flush()
                lines, size, first, t_min = [], 0, seq, math.inf
        if lines:
            flush()
        return rows

    @_heals
    def append(
        self,
        batches: Mapping[str, Sequence[Mapping[str, Any]]],
        cursors: Mapping[str, Cursor] | None = None,
        drops: Mapping[tuple[str, str], int] | None = None,
        blocks: Mapping[str, Sequence[RecordBlock]] | None = None,
    ) -> int:
        """Store new records of every stream and the ring cursors in ONE transaction.

        Args:
            batches: stream name -> records (dicts of JSON-able values) in
                ring order. Each record is stored with its outbox sequence
                number as field ``seq`` (replacing a ``seq`` of its own).
            cursors: ring name -> position after the last record of that ring
                included in ``batches`` or ``blocks``.
            drops: ``(stream, reason)`` -> records lost before they reached
                the outbox (ring overrun, sampling), counted in the same
                transaction as the cursors that skip them, so a crash can
                neither lose nor double a count.
            blocks: stream name -> ring records kept in their numpy layout
                (:class:`RecordBlock`), stored after that stream's ``batches``
                records; uploaded as the NDJSON :func:`render_block` makes.

        Returns:
            Number of records stored.

        Raises:
            OutboxFull: disk full even after dropping per policy; nothing was
                stored, cursors not advanced. Keep the records in the ring.
        """
        now = self._clock()
        rows: list[_ChunkRow] = []
        nxt: dict[str, int] = {}
        for stream, records in batches.items():
            if records:
                rows.extend(self._encode(stream, records, now))
                nxt[stream] = rows[-1].last_seq + 1
        schemas: dict[int, str] = {}
        for stream, blist in (blocks or {}).items():
            for block in blist:
                if len(block.records):
                    start = nxt.get(stream, self._next_seq.get(stream, self.seq_base))
                    rows.extend(self._encode_block(stream, block, start, schemas))
                    nxt[stream] = rows[-1].last_seq + 1
        if not rows and not cursors and not drops:
            return 0
        return self._store(rows, cursors or {}, reported=None, drops=drops, schemas=schemas)

    def _schema_of(self, block: RecordBlock) -> tuple[int, str]:
        dtype = block.records.dtype
        key = (orjson.dumps(block.spec, option=orjson.OPT_SORT_KEYS).decode(), repr(dtype.descr))
        hit = self._schema_texts.get(key)
        if hit is None:
            text = _schema_text(block.spec, dtype)
            hit = (_schema_id(text), text)
            self._schema_texts[key] = hit
        return hit

    def _encode_block(
        self, stream: str, block: RecordBlock, seq: int, schemas: dict[int, str]
    ) -> list[_ChunkRow]:
        """Chunks of at most ``chunk_records`` ring records, stored in their ring layout."""
        sid, text = self._schema_of(block)
        schemas[sid] = text
        records, ring_seqs = block.records, block.ring_seqs
        if len(ring_seqs) != len(records):
            raise ValueError(
                f"block of {stream}: {len(records)} records but {len(ring_seqs)} ring seqs"
            )
        t_s = records["t_ns"] / 1e9
        rows: list[_ChunkRow] = []
        size = records.dtype.itemsize + 8
        step = max(1, min(self.chunk_records, self.chunk_max_bytes // size))
        for lo in range(0, len(records), step):
            hi = min(len(records), lo + step)
            body = _block_body(ring_seqs[lo:hi], records[lo:hi], self.compress_level)
            t = t_s[lo:hi]
            finite = t[np.isfinite(t)]
            t_min = float(finite.min()) if len(finite) else self._clock()
            n = hi - lo
            rows.append(
                _ChunkRow(stream, seq, seq + n - 1, n, t_min, len(body), _CODEC_BLOCK, body, sid)
            )
            seq += n
        return rows

    def _store(
        self,
        rows: list[_ChunkRow],
        cursors: Mapping[str, Cursor],
        reported: Mapping[tuple[str, str], int] | None,
        drops: Mapping[tuple[str, str], int] | None = None,
        schemas: Mapping[int, str] | None = None,
    ) -> int:
        incoming = sum(r.nbytes + _ROW_OVERHEAD for r in rows)
        self._max_txn_bytes = max(self._max_txn_bytes, incoming)
        if rows and not self._reserve_present():
            self._restore_reserve(incoming)
        for attempt in range(_FULL_RETRIES + 1):
            try:
                self._write(rows, cursors, reported, drops, schemas)
                break
            except (sqlite3.Error, OSError) as exc:
                if not _is_disk_full(exc):
                    raise
                # The room made must go to this write: the reserve is taken back
                # only after it (below), or the retry would find no room again.
                if attempt == _FULL_RETRIES or not self._recover_disk_full(
                    incoming << attempt, exc
                ):
                    self._note_error(f"disk full: {exc}")
                    raise OutboxFull(
                        f"outbox {self.path}: disk full, nothing stored; keep the records "
                        "in the ring and retry later"
                    ) from exc
        self._spill_folded()
        n = sum(r.n for r in rows)
        for row in rows:
            self._next_seq[row.stream] = row.last_seq + 1
        # The records are committed: from here on an exception would make the
        # caller keep them in the ring and store them twice. Log instead.
        try:
            self._bound_wal()
            self._enforce_budget()
            self._ensure_ballast()
        except sqlite3.DatabaseError as exc:
            if not isinstance(exc, sqlite3.OperationalError) and _is_corrupt(exc):
                raise  # _heals moves the file aside and stores the append anew
            self._note_error(f"budget enforcement: {exc}")
            logger.error("outbox %s: budget enforcement failed: %s", self.path, exc)
        return n

    def _write(
        self,
        rows: list[_ChunkRow],
        cursors: Mapping[str, Cursor],
        reported: Mapping[tuple[str, str], int] | None,
        drops: Mapping[tuple[str, str], int] | None = None,
        schemas: Mapping[int, str] | None = None,
    ) -> None:
        per_stream: dict[str, list[int]] = {}
        for row in rows:
            acc = per_stream.setdefault(row.stream, [0, 0, 0, 0])
            acc[0] = row.last_seq + 1
            acc[1] += 1
            acc[2] += row.n
            acc[3] += row.nbytes
        with self._txn() as conn:
            if schemas:
                conn.executemany(
                    "INSERT OR IGNORE INTO schemas(id, spec) VALUES (?, ?)", list(schemas.items())
                )
            conn.executemany(
                "INSERT INTO chunks(stream, first_seq, last_seq, n, t_min, bytes, codec, body, "
                "schema_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            # The bookkeeping: one row per stream per transaction, never per record.
            conn.executemany(
                "INSERT INTO streams(stream, next_seq, rows, records, bytes) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(stream) DO UPDATE SET next_seq=excluded.next_seq, "
                "rows=rows+excluded.rows, records=records+excluded.records, "
                "bytes=bytes+excluded.bytes",
                [(s, *acc) for s, acc in per_stream.items()],
            )
            if cursors:
                conn.executemany(
                    "INSERT INTO cursors(ring, epoch, seq) VALUES (?, ?, ?) "
                    "ON CONFLICT(ring) DO UPDATE SET epoch=excluded.epoch, seq=excluded.seq",
                    [(ring, int(c[0]), int(c[1])) for ring, c in cursors.items()],
                )
            if reported:
                conn.executemany(
                    "UPDATE drops SET reported=? WHERE stream=? AND reason=?",
                    [(count, s, r) for (s, r), count in reported.items()],
                )
            if drops:
                self._add_drops(conn, drops)
            if self._spill is not None:
                self._fold(conn, self._spill, cursors)
            if self._unsaved.drops or self._unsaved.cursors or self._unsaved.ended:
                self._fold(conn, self._unsaved, cursors)

    @staticmethod
    def _add_drops(conn: sqlite3.Connection, drops: Mapping[tuple[str, str], int]) -> None:
        conn.executemany(
            "INSERT INTO drops(stream, reason, count) VALUES (?, ?, ?) "
            "ON CONFLICT(stream, reason) DO UPDATE SET count=count+excluded.count",
            [(s, r, int(n)) for (s, r), n in drops.items() if n],
        )

    # ------------------------------------------------------ side-file counts

    def _fold(
        self, conn: sqlite3.Connection, sp: _spill.Spill, cursors: Mapping[str, Cursor]
    ) -> None:
        """Fold side-file counts into the open transaction (see :mod:`edge_actors.spill`)."""
        if sp.token:
            row = conn.execute("SELECT value FROM meta WHERE key='spill_token'").fetchone()
            if row is not None and row[0] == sp.token:
                return  # folded before a crash prevented the unlink
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('spill_token', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (sp.token,),
            )
        stored = {
            str(r): Cursor(int(e), int(q))
            for r, e, q in conn.execute("SELECT ring, epoch, seq FROM cursors")
        }
        drops: dict[tuple[str, str], int] = dict(sp.drops)
        for ring, (stream, epoch, read_seq, write_seq) in sp.ended.items():
            # Everything before the furthest known position is stored or counted.
            start = read_seq
            c = stored.get(ring)
            if c is not None and c.epoch == epoch:
                start = max(start, c.seq)
            sc = sp.cursors.get(ring)
            if sc is not None and sc[0] == epoch:
                start = max(start, sc[1])
            if write_seq > start:
                key = (stream, "unflushed_at_stop")
                drops[key] = drops.get(key, 0) + write_seq - start
            # The ring is gone and fully accounted: forget its cursor, so that the
            # ring of the same name created at the next start is no "gap".
            conn.execute("DELETE FROM cursors WHERE ring=? AND epoch=?", (ring, epoch))
        for ring, (epoch, seq) in sp.cursors.items():
            if ring in cursors or ring in sp.ended:
                continue  # the transaction's own cursor is newer
            c = stored.get(ring)
            if c is not None and c.epoch == epoch and c.seq >= seq:
                continue
            conn.execute(
                "INSERT INTO cursors(ring, epoch, seq) VALUES (?, ?, ?) "
                "ON CONFLICT(ring) DO UPDATE SET epoch=excluded.epoch, seq=excluded.seq",
                (ring, epoch, seq),
            )
        if drops:
            self._add_drops(conn, drops)

    def _spill_folded(self) -> None:
        """After a commit that folded the side file: remove it."""
        if self._spill is not None:
            self._spill_path.unlink(missing_ok=True)
            self._spill = None
        if self._unsaved.drops or self._unsaved.cursors or self._unsaved.ended:
            self._unsaved = _spill.Spill()

    @_heals
    def count_drops(
        self,
        drops: Mapping[tuple[str, str], int],
        cursors: Mapping[str, Cursor] | None = None,
    ) -> bool:
        """Persist drop counts now, with the ring cursors that skip the dropped records.

        For losses the caller learns of while the outbox may refuse writes
        (records overwritten in a ring while the disk is full, records given
        up at shutdown). Written to the database if it takes the small
        transaction, else to the side file (:mod:`edge_actors.spill`) that the
        next open or successful append folds in. Never raises for a storage
        problem.

        Returns:
            True if the counts are in the database, False if in the side file
            (or, if even that failed, only in memory and logged; retried on the
            next call).
        """
        try:
            self._write([], cursors or {}, None, drops)
        except (sqlite3.Error, OSError) as exc:
            corrupt = not isinstance(exc, sqlite3.OperationalError) and _is_corrupt(exc)
            if isinstance(exc, sqlite3.DatabaseError) and corrupt:
                raise  # _heals moves the file aside and counts anew
            self._note_error(f"cannot count drops in the database: {exc}")
            self._to_side_file(drops, cursors or {})
            return False
        self._spill_folded()
        return True

    def ring_ended(self, ring: str, stream: str, end: Cursor) -> None:
        """A ring was removed after its records up to ``end`` were stored: forget its cursor.

        A ring created later under the same name is then new, not a gap.
        Written to the side file if the database cannot take it.
        """
        ended = {ring: (stream, end.epoch, end.seq, end.seq)}
        try:
            with self._txn() as conn:
                self._fold(conn, _spill.Spill(ended=ended), {})
        except (sqlite3.Error, OSError):
            self._to_side_file({}, {}, ended)

    def _to_side_file(
        self,
        drops: Mapping[tuple[str, str], int],
        cursors: Mapping[str, Cursor],
        ended: Mapping[str, _spill.Ended] | None = None,
    ) -> None:
        self._unsaved.merge(drops, {r: (c.epoch, c.seq) for r, c in cursors.items()}, ended)
        u = self._unsaved
        if _spill.write_or_log(
            self._spill_path, u.drops, u.cursors, u.ended, reserve=self._ballast_path()
        ):
            self._spill = _spill.load(self._spill_path)
            self._unsaved = _spill.Spill()

    def pending_side_drops(self) -> dict[tuple[str, str], int]:
        """Drop counts waiting in the side file (or in memory) to be folded in."""
        out: dict[tuple[str, str], int] = {}
        for sp in (self._spill, self._unsaved):
            for key, n in (sp.drops if sp is not None else {}).items():
                out[key] = out.get(key, 0) + n
        return out

    @_heals
    def cursors(self) -> dict[str, Cursor]:
        """Ring name -> stored cursor (the position after the last stored record)."""
        return {
            str(ring): Cursor(int(epoch), int(seq))
            for ring, epoch, seq in self._conn.execute("SELECT ring, epoch, seq FROM cursors")
        }

    # --------------------------------------------------------------- batching

    def _chunks_in(
        self, stream: str, first: int, last: int, with_body: bool
    ) -> list[tuple[Any, ...]]:
        cols = "id, first_seq, last_seq, n, t_min, bytes" + (
            ", codec, body, schema_id" if with_body else ""
        )
        return self._conn.execute(
            f"SELECT {cols} FROM chunks WHERE stream=? AND first_seq<=? AND last_seq>=? "
            "ORDER BY first_seq",
            (stream, last, first),
        ).fetchall()

    def _plan(self, stream: str, max_records: int) -> tuple[int, int] | None:
        metas = self._conn.execute(
            "SELECT first_seq, last_seq, n FROM chunks WHERE stream=? ORDER BY first_seq LIMIT ?",
            (stream, max_records),
        ).fetchall()
        if not metas:
            return None
        first = int(metas[0][0])
        last = first
        total = 0
        for c_first, c_last, c_n in metas:
            if total + c_n <= max_records:
                total += c_n
                last = int(c_last)
            else:
                if total == 0:
                    # A row bigger than a batch (chunk_records > max_records): split it.
                    last = int(c_first) + max_records - 1
                break
        return first, last

    def _build(self, stream: str, first: int, last: int) -> Batch | None:
        chunks = self._chunks_in(stream, first, last, with_body=True)
        if not chunks:
            return None
        parts: list[bytes] = []
        n = 0
        t_min = math.inf
        for _id, c_first, c_last, c_n, c_tmin, _bytes, codec, body, sid in chunks:
            t_min = min(t_min, float(c_tmin))
            if codec == _CODEC_BLOCK:
                lo = max(first, c_first) - c_first
                hi = min(last, c_last) - c_first + 1
                if hi > lo:
                    parts.append(self._render(sid, body, c_n, c_first, lo, hi))
                n += max(0, hi - lo)
                continue
            raw = _decode(codec, body)
            if c_first >= first and c_last <= last:
                parts.append(raw)
                n += c_n
            else:
                lines = _split_lines(raw)
                lo = max(first, c_first) - c_first
                hi = min(last, c_last) - c_first + 1
                if hi > lo:
                    parts.append(b"\n".join(lines[lo:hi]) + b"\n")
                n += hi - lo
        return Batch(stream, first, last, n, b"".join(parts), t_min)

    def _schema(self, sid: int) -> _Schema:
        hit = self._schemas.get(sid)
        if hit is None:
            row = self._conn.execute("SELECT spec FROM schemas WHERE id=?", (sid,)).fetchone()
            if row is None:
                raise sqlite3.DatabaseError(f"outbox {self.path}: schema {sid} missing (malformed)")
            hit = self._schemas[sid] = _parse_schema(str(row[0]))
        return hit

    def _render(self, sid: int, body: bytes, n: int, first: int, lo: int, hi: int) -> bytes:
        """NDJSON of records ``lo:hi`` of a block chunk whose first record has seq ``first``."""
        schema = self._schema(sid)
        seqs, records = _block_arrays(body, n, schema.dtype)
        return render_block(schema.spec, records[lo:hi], seqs[lo:hi], first + lo)

    @_heals
    def next_batch(self, stream: str, max_records: int) -> Batch | None:
        """The oldest records of ``stream`` (at most ``max_records``), or ``None``.

        Deterministic: the range is recorded as in flight before it is
        returned, and the same range (same bytes, same key) is returned again
        until :meth:`ack`, also after a crash and reopen. Raises
        :class:`OutboxFull` if even that small write fails on a full disk.
        """
        if max_records < 1:
            raise ValueError(f"max_records: must be >= 1, got {max_records}")
        row = self._conn.execute(
            "SELECT first_seq, last_seq FROM inflight WHERE stream=?", (stream,)
        ).fetchone()
        if row is not None:
            batch = self._build(stream, int(row[0]), int(row[1]))
            if batch is not None:
                return batch
            # Everything in the range was dropped: forget it, plan a new one.
            self._guarded(self._clear_inflight, stream)
        plan = self._plan(stream, max_records)
        if plan is None:
            return None
        self._guarded(self._set_inflight, stream, plan[0], plan[1])
        return self._build(stream, plan[0], plan[1])

    @_heals
    def peek(self, stream: str, max_records: int) -> Batch | None:
        """Like :meth:`next_batch` but read-only: nothing is marked in flight."""
        row = self._conn.execute(
            "SELECT first_seq, last_seq FROM inflight WHERE stream=?", (stream,)
        ).fetchone()
        plan = (int(row[0]), int(row[1])) if row else self._plan(stream, max_records)
        return None if plan is None else self._build(stream, plan[0], plan[1])

    @_heals
    def inflight(self) -> dict[str, tuple[int, int]]:
        """Stream -> ``(first_seq, last_seq)`` handed out and not yet acked."""
        return self._inflight()

    def _inflight(self) -> dict[str, tuple[int, int]]:
        return {
            str(s): (int(a), int(b))
            for s, a, b in self._conn.execute("SELECT stream, first_seq, last_seq FROM inflight")
        }

    def _set_inflight(self, stream: str, first: int, last: int) -> None:
        with self._txn() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO inflight(stream, first_seq, last_seq) VALUES (?, ?, ?)",
                (stream, first, last),
            )

    def _clear_inflight(self, stream: str) -> None:
        with self._txn() as conn:
            conn.execute("DELETE FROM inflight WHERE stream=?", (stream,))

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a small write (in-flight mark, ack); on a full disk make room, else OutboxFull.

        These writes free space (an ack deletes rows) or precede a write that
        does: the reserve exists for them. It is released first, which costs
        no record; only if that is not enough are records dropped per policy.
        The ingest path re-creates the reserve once there is room.
        """
        try:
            fn(*args)
            return
        except (sqlite3.Error, OSError) as exc:
            if not _is_disk_full(exc):
                raise
            self._rollback()
            first: BaseException = exc
        if self._release_ballast():
            logger.warning("outbox %s: disk full, reserve released for an upload", self.path)
            self._checkpoint()
            try:
                fn(*args)
                return
            except (sqlite3.Error, OSError) as exc:
                if not _is_disk_full(exc):
                    raise
                first = exc
        self._recover_disk_full(0, first)
        try:
            fn(*args)
        except (sqlite3.Error, OSError) as exc2:
            if not _is_disk_full(exc2):
                raise
            self._note_error(f"disk full: {exc2}")
            raise OutboxFull(f"outbox {self.path}: disk full") from exc2

    @_heals
    def ack(self, batch: Batch) -> None:
        """The sink confirmed ``batch``: delete its records and its in-flight mark.

        Raises :class:`OutboxFull` if the delete cannot be written (disk
        full); the batch is then simply uploaded again later, to the same key.
        """
        self._guarded(self._ack, batch)

    def _ack(self, batch: Batch) -> None:
        stream, first, last = batch.stream, batch.first_seq, batch.last_seq
        now = self._clock()
        with self._txn() as conn:
            chunks = self._chunks_in(stream, first, last, with_body=True)
            d_rows = d_records = d_bytes = 0
            for cid, c_first, c_last, c_n, _tmin, c_bytes, codec, body, sid in chunks:
                if c_first >= first and c_last <= last:
                    conn.execute("DELETE FROM chunks WHERE id=?", (cid,))
                    d_rows += 1
                    d_records += c_n
                    d_bytes += c_bytes
                    continue
                if codec == _CODEC_BLOCK:
                    kept = self._split_block(
                        conn, stream, cid, c_first, c_n, _tmin, body, sid, first, last
                    )
                    d_rows += 1 - kept[0]
                    d_records += c_n - kept[1]
                    d_bytes += c_bytes - kept[2]
                    continue
                # Partly acked row: keep the records outside the range. Its t_min
                # stays (a lower bound), so later keys stay deterministic.
                lines = _split_lines(_decode(codec, body))
                keep_before = lines[: max(0, first - c_first)]
                keep_after = lines[max(0, last + 1 - c_first) :]
                conn.execute("DELETE FROM chunks WHERE id=?", (cid,))
                d_rows += 1
                d_records += c_n
                d_bytes += c_bytes
                for seg_first, seg in ((c_first, keep_before), (last + 1, keep_after)):
                    if not seg:
                        continue
                    raw = b"".join(line + b"\n" for line in seg)
                    body2 = zlib.compress(raw, self.compress_level) if codec == _CODEC_ZLIB else raw
                    conn.execute(
                        "INSERT INTO chunks(stream, first_seq, last_seq, n, t_min, bytes, codec, "
                        "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            stream,
                            seg_first,
                            seg_first + len(seg) - 1,
                            len(seg),
                            _tmin,
                            len(body2),
                            codec,
                            body2,
                        ),
                    )
                    d_rows -= 1
                    d_records -= len(seg)
                    d_bytes -= len(body2)
            conn.execute(
                "DELETE FROM inflight WHERE stream=? AND first_seq=? AND last_seq=?",
                (stream, first, last),
            )
            conn.execute(
                "UPDATE streams SET rows=rows-?, records=records-?, bytes=bytes-?, "
                "last_success=? WHERE stream=?",
                (d_rows, d_records, d_bytes, now, stream),
            )

    def _split_block(
        self,
        conn: sqlite3.Connection,
        stream: str,
        cid: int,
        c_first: int,
        c_n: int,
        t_min: float,
        body: bytes,
        sid: int,
        first: int,
        last: int,
    ) -> tuple[int, int, int]:
        """Partly acked block chunk: keep the records outside ``first..last``.

        Returns ``(rows, records, bytes)`` of what is kept. Its ``t_min`` stays
        (a lower bound), so later keys stay deterministic.
        """
        schema = self._schema(sid)
        seqs, records = _block_arrays(body, c_n, schema.dtype)
        conn.execute("DELETE FROM chunks WHERE id=?", (cid,))
        lo, hi = max(0, first - c_first), max(0, last + 1 - c_first)
        kept = [0, 0, 0]
        for a, b in ((0, min(lo, c_n)), (min(hi, c_n), c_n)):
            if b <= a:
                continue
            body2 = _block_body(seqs[a:b], records[a:b], self.compress_level)
            conn.execute(
                "INSERT INTO chunks(stream, first_seq, last_seq, n, t_min, bytes, codec, body, "
                "schema_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stream,
                    c_first + a,
                    c_first + b - 1,
                    b - a,
                    t_min,
                    len(body2),
                    _CODEC_BLOCK,
                    body2,
                    sid,
                ),
            )
            kept[0] += 1
            kept[1] += b - a
            kept[2] += len(body2)
        return kept[0], kept[1], kept[2]

    def record_error(self, stream: str | None, message: str) -> None:
        """Remember an upload error for :meth:`stats` (persisted per stream)."""
        self._note_error(message)
        if stream is None:
            return
        try:
            with self._txn() as conn:
                conn.execute(
                    "INSERT INTO streams(stream, last_error, last_error_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(stream) DO UPDATE SET last_error=excluded.last_error, "
                    "last_error_at=excluded.last_error_at",
                    (stream, message[:1000], self.last_error_at),
                )
        except sqlite3.Error as exc:
            # Error bookkeeping must not become an error path of its own.
            logger.debug("cannot persist last_error: %s", exc)

    # ----------------------------------------------------------------- budget

    def disk_bytes(self) -> tuple[int, int]:
        """``(database file bytes, WAL bytes)`` as on disk now."""
        db = wal = 0
        try:
            db = os.stat(self.path).st_size
        except FileNotFoundError:
            pass
        try:
            wal = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            pass
        return db, wal

    def _checkpoint(self, mode: str = "RESTART") -> bool:
        """Copy the WAL into the database; True if it completed.

        RESTART, not TRUNCATE: the next writer starts the WAL over and
        ``journal_size_limit`` trims it to the WAL bound, so that much WAL
        stays allocated. On a 100 % full disk the small writes that free space
        (drop, ack, in-flight mark) then still have room to be written.
        """
        try:
            row = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:
            logger.warning("outbox %s: checkpoint(%s) failed: %s", self.path, mode, exc)
            return False
        return row is None or not row[0]

    def _bound_wal(self) -> None:
        """Checkpoint when the WAL outgrew its bound (a reader held back the autocheckpoint).

        Waits at most 0.2 s for readers (the shipper's are short): ingestion is
        never held up for long, and the next append tries again.
        """
        if self.disk_bytes()[1] <= self._wal_limit_bytes:
            return
        conn = self._conn
        conn.execute("PRAGMA busy_timeout=200")
        try:
            self._checkpoint()
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")

    def _vacuum(self, *, full_disk: bool = True) -> None:
        """Hand the free pages back to the file system.

        One unbounded ``incremental_vacuum`` writes every moved page to the WAL
        before any of it is checkpointed: on a nearly full disk it fails and
        frees nothing. There (``full_disk``), steps of half the WAL bound, each
        checkpointed (which truncates the database file), shrink the same file
        on the same disk. With room on the disk (budget enforcement) one pass
        is cheaper; it falls back to steps if the disk turns out to be full.
        """
        conn = self._conn
        if not full_disk:
            try:
                conn.executescript("PRAGMA incremental_vacuum;")
                return
            except sqlite3.Error as exc:
                self._rollback()
                if not _is_disk_full(exc):
                    logger.warning("outbox %s: incremental_vacuum failed: %s", self.path, exc)
                    return
        step = max(8, self._wal_limit_bytes // self._page_size // 2)
        while True:
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            if free == 0:
                return
            try:
                # execute() steps a statement once, and each step frees a single
                # page; executescript() runs it to completion.
                conn.executescript(f"PRAGMA incremental_vacuum({min(step, free)});")
            except sqlite3.Error as exc:
                logger.warning(
                    "outbox %s: incremental_vacuum failed (%d free pages kept): %s",
                    self.path,
                    free,
                    exc,
                )
                return
            self._checkpoint()
            if int(conn.execute("PRAGMA freelist_count").fetchone()[0]) >= free:
                logger.warning("outbox %s: incremental_vacuum made no progress", self.path)
                return

    def _live_bytes(self) -> int:
        conn = self._conn
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self._page_size

    def _enforce_budget(self) -> None:
        if sum(self.disk_bytes()) <= self.max_bytes:
            return
        # The WAL counts against the budget: give it back first (the disk is not full).
        self._checkpoint("TRUNCATE")
        if sum(self.disk_bytes()) <= self.max_bytes:
            return
        # Room for the WAL to regrow before the next checkpoint, plus hysteresis.
        target = max(0, int(self.max_bytes * _LOW_WATER) - self._wal_limit_bytes)
        for _ in range(8):
            need = self._live_bytes() - target
            freed = 0
            if need > 0:
                try:
                    with self._txn():
                        freed, dropped = self._drop(need, "budget")
                except sqlite3.Error as exc:
                    if not _is_disk_full(exc):
                        raise
                    self._recover_disk_full(0, exc)
                else:
                    self._log_drops(dropped, "budget")
            self._vacuum(full_disk=False)
            self._checkpoint("TRUNCATE")
            if sum(self.disk_bytes()) <= self.max_bytes or freed == 0:
                break
        total = sum(self.disk_bytes())
        if total > self.max_bytes:
            logger.warning(
                "outbox %s: %d bytes on disk, over its budget of %d even after dropping",
                self.path,
                total,
                self.max_bytes,
            )

    def _drop_order(self) -> list[str]:
        streams = [
            str(s) for (s,) in self._conn.execute("SELECT stream FROM streams WHERE rows > 0")
        ]
        # A model's stream ("model/detector") drops with its kind ("model").
        return sorted(streams, key=lambda s: (self.priorities.get(s.split("/")[0], 0), s))

    def stream_names(self) -> list[str]:
        """Every stream this outbox has records of, or had (``model/detector``...)."""
        return [str(s) for (s,) in self._conn.execute("SELECT stream FROM streams")]

    def _drop(self, need: int, reason: str) -> tuple[int, dict[str, list[int]]]:
        """Delete chunks until ``need`` bytes are freed; call inside a transaction.

        Returns:
            ``(bytes freed (estimate), {stream: [rows, records, stored bytes]})``.
        """
        conn = self._conn
        freed = 0
        dropped: dict[str, list[int]] = {}
        inflight = self._inflight()
        order = self._drop_order()
        # The in-flight batch is never dropped: the shipper may be uploading it
        # right now, and a batch both delivered and counted as dropped would
        # break the accounting. Its ack frees the space; until then the budget
        # can be exceeded by at most one batch.
        for take_inflight in (False,):
            for stream in order:
                if freed >= need:
                    break
                infl = inflight.get(stream)
                after = -1
                while freed < need:
                    cands = conn.execute(
                        "SELECT id, first_seq, last_seq, n, bytes FROM chunks "
                        "WHERE stream=? AND first_seq>? ORDER BY first_seq LIMIT 256",
                        (stream, after),
                    ).fetchall()
                    if not cands:
                        break
                    victims: list[tuple[int]] = []
                    for cid, c_first, c_last, c_n, c_bytes in cands:
                        if freed >= need:
                            break
                        after = int(c_first)
                        hits_inflight = (
                            infl is not None and c_first <= infl[1] and c_last >= infl[0]
                        )
                        if hits_inflight and not take_inflight:
                            continue
                        if hits_inflight:
                            # The range can no longer be rebuilt as it was handed out.
                            conn.execute("DELETE FROM inflight WHERE stream=?", (stream,))
                            infl = None
                            inflight.pop(stream, None)
                        victims.append((int(cid),))
                        acc = dropped.setdefault(stream, [0, 0, 0])
                        acc[0] += 1
                        acc[1] += int(c_n)
                        acc[2] += int(c_bytes)
                        freed += int(c_bytes) + _ROW_OVERHEAD
                    conn.executemany("DELETE FROM chunks WHERE id=?", victims)
            if freed >= need:
                break
        for stream, (rows, records, nbytes) in dropped.items():
            conn.execute(
                "UPDATE streams SET rows=rows-?, records=records-?, bytes=bytes-? WHERE stream=?",
                (rows, records, nbytes, stream),
            )
            # Counted by kind: a model's stream ("model/detector") drops as "model".
            conn.execute(
                "INSERT INTO drops(stream, reason, count) VALUES (?, ?, ?) "
                "ON CONFLICT(stream, reason) DO UPDATE SET count=count+excluded.count",
                (stream.split("/")[0], reason, records),
            )
        return freed, dropped

    def _log_drops(self, dropped: Mapping[str, list[int]], reason: str) -> None:
        for stream, (_rows, records, nbytes) in dropped.items():
            logger.warning(
                "outbox %s: dropped %d %s records (%d bytes stored), reason %s",
                self.path,
                records,
                stream,
                nbytes,
                reason,
            )

    # A few hundred KiB of ballast next to the database. On a full disk it is
    # deleted first, which gives SQLite room to write the drop, checkpoint and
    # vacuum that make space; with zero free bytes none of those could run.
    def _ballast_path(self) -> Path:
        return Path(f"{self.path}-reserve")

    def _reserve_target(self) -> int:
        """Reserve size: room for the whole WAL plus two of the largest appends seen."""
        want = max(self._ballast_bytes, self._wal_limit_bytes + 2 * self._max_txn_bytes + 65536)
        return min(want, max(self._ballast_bytes, self._fs_cap))

    def _reserve_present(self) -> bool:
        return self._ballast_path().exists()

    def _ensure_ballast(self) -> None:
        """Create (or grow) the reserve file if the file system has room for it."""
        path = self._ballast_path()
        size = self._reserve_target()
        try:
            have = path.stat().st_size
        except FileNotFoundError:
            have = 0
        if have >= size:
            return
        if _free_bytes(path.parent) < size - have + 64 * 1024:
            return  # not now: the space is better used by records
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            logger.warning("cannot create the reserve file %s: %s", path, exc)
            return
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except (AttributeError, OSError):
                os.pwrite(fd, b"\0" * (size - have), have)
            os.fsync(fd)
        except OSError as exc:
            # Keep what the reserve had; never lose it trying to grow it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, have)
            if have == 0:
                path.unlink(missing_ok=True)
            logger.warning("cannot grow the reserve file %s: %s", path, exc)
        finally:
            os.close(fd)

    def _release_ballast(self) -> bool:
        path = self._ballast_path()
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.error("cannot remove the reserve file %s: %s", path, exc)
            return False
        return True

    def _recover_disk_full(self, incoming: int, exc: BaseException) -> bool:
        """Make room on a full disk for a write of ``incoming`` bytes; True if any was made.

        The room goes to the retried write: the reserve is re-created only
        after it succeeded (``_store``), never before.
        """
        self.disk_full_events += 1
        self._note_error(f"disk full: {exc}")
        self._rollback()
        free_before = _free_bytes(self.path.parent)
        released = self._release_ballast()
        logger.error(
            "outbox %s: disk full (%s); %sdropping per policy to make room",
            self.path,
            exc,
            "reserve released, " if released else "",
        )
        # With the reserve gone the database can absorb the WAL (bounded by it).
        self._checkpoint()
        # Room for the append, and for a new reserve after it.
        need = max(2 * incoming, 64 * 1024, self._live_bytes() // 20) + self._reserve_target()
        dropped: dict[str, list[int]] = {}
        try:
            with self._txn():
                _freed, dropped = self._drop(need, "disk_full")
        except sqlite3.Error as exc2:
            logger.error("outbox %s: cannot drop to make room: %s", self.path, exc2)
        else:
            self._log_drops(dropped, "disk_full")
        self._vacuum()
        self._checkpoint()
        return released or bool(dropped) or _free_bytes(self.path.parent) > free_before

    def _restore_reserve(self, incoming: int) -> None:
        """On a disk this outbox filled, get the reserve back before storing more.

        Without it, new records would take every byte a drop or an ack frees,
        and the next disk-full event could not even write the drop that makes
        room: the outbox would wedge. Free pages inside the database go back
        to the file system first (no record lost); only if that is not enough
        are the oldest records dropped per policy. If the reserve still cannot
        be made, the append is tried anyway (and refused only if it fails).
        """
        self._ensure_ballast()
        if self._reserve_present():
            return
        self._vacuum()
        self._checkpoint()
        self._ensure_ballast()
        if self._reserve_present():
            return
        need = self._reserve_target() + incoming + 64 * 1024 - _free_bytes(self.path.parent)
        if need > 0:
            try:
                with self._txn():
                    _freed, dropped = self._drop(need, "disk_full")
            except sqlite3.Error as exc:
                self._note_error(f"disk full: {exc}")
            else:
                if dropped:
                    self.disk_full_events += 1
                    self._note_error("disk full: records dropped to re-create the reserve")
                self._log_drops(dropped, "disk_full")
                self._vacuum()
                self._checkpoint()
        self._ensure_ballast()

    def _recover_corrupt_runtime(self, exc: BaseException) -> None:
        logger.error("outbox %s: database corrupt while running (%s)", self.path, exc)
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        _move_aside(self.path, str(exc))
        self._conn = _connect(self.path, self._synchronous, self._busy_timeout_ms)
        self._load_state()
        self._count_corrupt()

    # -------------------------------------------------------------- reporting

    @_heals
    def drops(self) -> dict[tuple[str, str], int]:
        """``(stream, reason)`` -> records dropped, ever (persistent)."""
        return {
            (str(s), str(r)): int(c)
            for s, r, c in self._conn.execute("SELECT stream, reason, count FROM drops")
        }

    @_heals
    def pending_drop_report(self) -> dict[tuple[str, str], int]:
        """``(stream, reason)`` -> drops not yet reported (see :meth:`append_drop_report`)."""
        return {
            (str(s), str(r)): int(c) - int(rep)
            for s, r, c, rep in self._conn.execute(
                "SELECT stream, reason, count, reported FROM drops WHERE count > reported"
            )
        }

    @_heals
    def append_drop_report(
        self, extra: Mapping[str, Any] | None = None, *, stream: str = "drops"
    ) -> int:
        """Store pending drop counts as records of ``stream`` and mark them reported.

        Both happen in one transaction, so a crash neither loses nor repeats a
        report. One record per (stream, reason)::

            {"ts": now, "stream": "system", "reason": "budget",
             "dropped": 1200, "total": 5400, **extra}

        Returns:
            Number of report records stored (0 if nothing pending).

        Raises:
            OutboxFull: as :meth:`append`; the counts stay pending.
        """
        pending = self.pending_drop_report()
        if not pending:
            return 0
        totals = self.drops()
        now = self._clock()
        records = [
            {
                **(extra or {}),
                self.time_field: now,
                "stream": s,
                "reason": r,
                "dropped": n,
                "total": totals[(s, r)],
            }
            for (s, r), n in sorted(pending.items())
        ]
        rows = self._encode(stream, records, now)
        reported = {key: totals[key] for key in pending}
        return self._store(rows, {}, reported=reported)

    @_heals
    def stats(self) -> dict[str, Any]:
        """Backlog, errors, drops and disk use, cheap enough for every heartbeat.

        Keys: ``streams`` (per stream: ``rows``, ``records``, ``bytes``,
        ``oldest_t`` (t_min of the oldest row, epoch seconds), ``next_seq``,
        ``last_success``, ``last_error``, ``last_error_at``, ``inflight``),
        ``backlog_records``, ``backlog_bytes``, ``last_success``,
        ``last_error``, ``last_error_at``, ``drops`` (``"stream/reason"`` ->
        count), ``dropped_total``, ``db_bytes``, ``wal_bytes``, ``reserve_bytes``, ``max_bytes``,
        ``corrupt_recovered``, ``disk_full_events``.
        """
        conn = self._conn
        inflight = self._inflight()
        streams: dict[str, dict[str, Any]] = {}
        for s, next_seq, rows, records, nbytes, last_ok, last_err, last_err_at in conn.execute(
            "SELECT stream, next_seq, rows, records, bytes, last_success, last_error, "
            "last_error_at FROM streams ORDER BY stream"
        ):
            oldest = conn.execute(
                "SELECT t_min FROM chunks WHERE stream=? ORDER BY first_seq LIMIT 1", (s,)
            ).fetchone()
            streams[str(s)] = {
                "rows": int(rows),
                "records": int(records),
                "bytes": int(nbytes),
                "oldest_t": float(oldest[0]) if oldest else None,
                "next_seq": int(next_seq),
                "last_success": last_ok,
                "last_error": last_err,
                "last_error_at": last_err_at,
                "inflight": inflight.get(str(s)),
            }
        successes = [v["last_success"] for v in streams.values() if v["last_success"] is not None]
        drops = self.drops()
        for key, n in self.pending_side_drops().items():
            drops[key] = drops.get(key, 0) + n
        db, wal = self.disk_bytes()
        return {
            "streams": streams,
            "backlog_records": sum(v["records"] for v in streams.values()),
            "backlog_bytes": sum(v["bytes"] for v in streams.values()),
            "last_success": max(successes) if successes else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "drops": {f"{s}/{r}": n for (s, r), n in sorted(drops.items())},
            "dropped_total": sum(drops.values()),
            "db_bytes": db,
            "wal_bytes": wal,
            "reserve_bytes": _file_bytes(self._ballast_path()),
            "max_bytes": self.max_bytes,
            "corrupt_recovered": self.corrupt_recovered,
            "disk_full_events": self.disk_full_events,
        }


# ------------------------------------------------------------------- helpers


def _connect(path: Path, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    try:
        # auto_vacuum only takes effect before the first table exists, i.e. on creation.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # On by default in some builds: deleting rows would overwrite the freed
        # pages with zeros, so that freeing space writes as much as it frees.
        conn.execute("PRAGMA secure_delete=0")
        # A small page cache: the outbox is write-mostly and devices are small.
        conn.execute("PRAGMA cache_size=-2048")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        _migrate(conn)
        conn.execute(
            "INSERT INTO meta(key, value) VALUES('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (_SCHEMA_VERSION,),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _has_schema_id(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "schema_id" for row in conn.execute("PRAGMA table_info(chunks)"))


def _migrate(conn: sqlite3.Connection) -> None:
    """An outbox of schema 1 (NDJSON rows only) gains ``chunks.schema_id``; its rows stay."""
    if not _has_schema_id(conn):
        # Adds a column to the table's definition only: no row is rewritten.
        conn.execute("ALTER TABLE chunks ADD COLUMN schema_id INTEGER")


def stored_ndjson(conn: sqlite3.Connection) -> Iterator[tuple[str, int, bytes | None]]:
    """Every stored record as NDJSON, read-only: ``(stream, first_seq, lines)`` per chunk.

    In stream then sequence order, the same lines an upload would carry. Works
    on a read-only connection (``mode=ro``/``immutable``) and on an outbox of
    either storage form. A chunk that cannot be decoded comes as ``None``
    (logged), so one bad row never hides the rest.
    """
    for stream, first, _last, lines in _stored_chunks(conn):
        yield stream, first, lines


def _stored_chunks(conn: sqlite3.Connection) -> Iterator[tuple[str, int, int, bytes | None]]:
    """``stored_ndjson`` with each chunk's last sequence number too."""
    with_sid = _has_schema_id(conn)
    cols = "stream, first_seq, last_seq, n, codec, body" + (", schema_id" if with_sid else ", NULL")
    schemas: dict[int, _Schema] = {}
    for stream, first, last, n, codec, body, sid in conn.execute(
        f"SELECT {cols} FROM chunks ORDER BY stream, first_seq"
    ):
        try:
            if codec == _CODEC_BLOCK:
                schema = schemas.get(sid)
                if schema is None:
                    row = conn.execute("SELECT spec FROM schemas WHERE id=?", (sid,)).fetchone()
                    if row is None:
                        raise ValueError(f"schema {sid} missing")
                    schema = schemas[sid] = _parse_schema(str(row[0]))
                seqs, records = _block_arrays(body, int(n), schema.dtype)
                lines = render_block(schema.spec, records, seqs, int(first))
            elif codec in (_CODEC_RAW, _CODEC_ZLIB):
                lines = _decode(int(codec), body)
            else:
                raise ValueError(f"unknown codec {codec}")
        except (ValueError, zlib.error, KeyError, TypeError) as exc:
            logger.warning("outbox chunk %s/%s unreadable: %s", stream, first, exc)
            yield str(stream), int(first), int(last), None
            continue
        yield str(stream), int(first), int(last), lines


def _quick_check(path: Path) -> str | None:
    """``None`` if the file is a healthy SQLite database, else what is wrong."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            return "; ".join(str(r[0]) for r in rows[:5])
        return None
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and not _is_corrupt(exc):
            # Not corruption (disk full, I/O error, locked): never move a good
            # file aside for it; the caller's open fails and is retried.
            raise
        return str(exc)
    finally:
        conn.close()


def _free_bytes(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _fs_bytes(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return 1 << 40
    return st.f_blocks * st.f_frsize


def _file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _move_aside(path: Path, problem: str) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if not src.exists():
            continue
        dst = src.with_name(f"{path.name}.corrupt-{stamp}{suffix}")
        try:
            os.replace(src, dst)
        except OSError as exc:
            logger.error("cannot move corrupt %s aside (%s); removing it", src, exc)
            src.unlink(missing_ok=True)
    logger.error(
        "outbox %s is corrupt (%s): moved aside as %s.corrupt-%s, starting a fresh outbox",
        path,
        problem,
        path.name,
        stamp,
    )


# --------------------------------------------------------------- reading back
#
# The read-only contract of offline tools (``edge-actors report``): they read an
# outbox through these names only, never through its tables or codecs, so that
# the storage format can change behind them. A new storage format re-implements
# OutboxReader (same signatures, same StoredChunk values) and nothing else.


class OutboxReadError(OutboxError):
    """The file cannot be read as an outbox; the message names the file and why."""


@dataclasses.dataclass(frozen=True)
class StoredChunk:
    """The records of one stored chunk, decoded, as :meth:`OutboxReader.chunks` yields them.

    Attributes:
        stream: stream name.
        first_seq: outbox sequence number of the chunk's first record.
        last_seq: outbox sequence number of its last record.
        records: the records that could be decoded, in sequence order; each
            dict holds the record's fields and its outbox sequence number ``seq``.
        unreadable: what could not be decoded: the number of bad records, or 1
            (and no ``records``) when the chunk's body as a whole cannot be.
    """

    stream: str
    first_seq: int
    last_seq: int
    records: tuple[dict[str, Any], ...]
    unreadable: int


class OutboxReader:
    """Read an outbox without writing to it, while its agent runs or not.

    ::

        with OutboxReader(path) as reader:
            for chunk in reader.chunks():
                ...

    With a ``-wal`` file present (the agent is running, or was killed) the
    database is opened ``mode=ro`` so that SQLite reads the WAL too. Without
    one (a clean shutdown checkpointed everything) it is opened ``immutable``:
    then SQLite creates no ``-wal``/``-shm`` file either, which could otherwise
    be left behind owned by the wrong user (the reader is often root or another
    account than the agent's).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open ``path`` read-only.

        Raises:
            OutboxReadError: the file cannot be opened.
        """
        self.path = Path(path)
        wal = self.path.with_name(self.path.name + "-wal")
        uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?mode=ro"
        if not wal.exists():
            uri += "&immutable=1"
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise OutboxReadError(f"cannot open the outbox {self.path}: {exc}") from exc

    def chunks(self) -> Iterator[StoredChunk]:
        """Every stored chunk, by stream name, then sequence number.

        Records already uploaded have left the outbox (they are in the sink).

        Raises:
            OutboxReadError: the file is not an outbox, or unreadable as a whole.
        """
        try:
            for stream, first, last, lines in _stored_chunks(self._conn):
                yield _read_chunk(stream, first, last, lines)
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "no such table" in text:
                text = "not an edge-actors outbox (no chunks table)"
            raise OutboxReadError(f"cannot read the outbox {self.path}: {text}") from exc

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> OutboxReader:
        """Return the reader itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the reader."""
        self.close()


def _read_chunk(stream: str, first: int, last: int, raw: bytes | None) -> StoredChunk:
    if raw is None:
        return StoredChunk(stream, first, last, (), 1)
    records, bad = decode_ndjson(raw)
    return StoredChunk(stream, first, last, tuple(records), bad)


def decode_ndjson(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of NDJSON lines, and how many lines were not a JSON object.

    For tools reading what the agent wrote (outbox chunks, uploaded objects).
    """
    records: list[dict[str, Any]] = []
    bad = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad
