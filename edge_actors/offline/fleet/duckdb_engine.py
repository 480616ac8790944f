"""The fleet summary on DuckDB, in process: one machine, up to a few thousand devices.

Registers the ``raw_*`` views of :mod:`definitions` over the selected local
files with an explicit column list (no schema inference: a field missing
from a record or a whole layout reads as ``NULL``, and ``inputs``/``outputs``
are never parsed), materializes the ``t_*`` tables (each object is read
once) and runs the shared queries.
"""

from __future__ import annotations

import gzip
import logging
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_actors.offline.fleet.definitions import DUCKDB, STREAM_COLUMNS, Window, queries, tables
from edge_actors.offline.fleet.source import Selection, SourceError

logger = logging.getLogger(__name__)

#: Unreadable objects skipped before the summary gives up.
MAX_UNREADABLE = 100

__all__ = ["DUCKDB_MISSING", "MAX_UNREADABLE", "run"]

#: What the CLI says when DuckDB is not installed.
DUCKDB_MISSING = (
    "the fleet summary needs DuckDB: pip install 'edge-actors[fleet]' (or pip install duckdb)"
)

_TYPES = {"string": "VARCHAR", "double": "DOUBLE", "bigint": "BIGINT"}


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: Streams whose objects are read by DuckDB directly: large objects (up to
#: ``max_batch_size`` model records). The others come in many tiny objects
#: (a few events, a dozen system samples), where DuckDB's cost per object
#: (~5 ms on a busy 2-core box, 27 s for 4,680 event objects) dwarfs the
#: parsing: they are decoded here and handed to DuckDB as one file.
DIRECT_STREAMS: tuple[str, ...] = ("model", "payload")

_KINDS: dict[str, tuple[type, ...]] = {
    "string": (str, int, float),
    "double": (int, float),
    "bigint": (int,),
}


def _compact(
    root: Path, rels: Sequence[str], columns: Mapping[str, str], out: Path, bad: list[str]
) -> Path:
    """Write the ``columns`` (and ``src``) of every record of ``rels`` to one NDJSON file.

    An object that is not gzip, has a line that is not a JSON object or a
    value of the wrong type is left out whole and added to ``bad``, as the
    direct path does.
    """
    from edge_actors.jsoncompat import orjson
    from edge_actors.outbox import decode_ndjson

    with open(out, "wb") as f:
        for rel in rels:
            path = root / rel
            try:
                records, n_bad = decode_ndjson(gzip.decompress(path.read_bytes()))
            except (OSError, EOFError, zlib.error):
                records, n_bad = [], 1
            rows = [_project(r, columns) for r in records]
            if n_bad or None in rows:
                logger.warning("skipping an unreadable object %s", rel)
                bad.append(rel)
                continue
            src = path.as_posix()
            f.write(b"".join(orjson.dumps({"src": src, **r}) + b"\n" for r in rows if r))
    return out


def _project(record: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, Any] | None:
    """``columns`` of ``record`` (missing: null), or None when a value has the wrong type.

    A number where a string is expected (``model_version: 2``) becomes its
    text, as DuckDB's own cast would.
    """
    out: dict[str, Any] = {}
    for c, t in columns.items():
        v = record.get(c)
        if v is None:
            out[c] = None
        elif isinstance(v, bool) or not isinstance(v, _KINDS[t]):
            return None
        else:
            out[c] = str(v) if t == "string" else v
    return out


def _view(
    name: str, paths: Sequence[str], columns: Mapping[str, str], *, compacted: bool = False
) -> str:
    # records = 'true': left to 'auto', DuckDB samples every file to decide,
    # which cost ~40 ms per object (10 s for 237 objects; 1.6 s with it).
    cols = ", ".join(f"{_lit(c)}: {_lit(_TYPES[t])}" for c, t in columns.items())
    names = ", ".join(columns)
    if not paths:
        # No object at all: an empty view with the same columns.
        empty = ", ".join(f"CAST(NULL AS {_TYPES[t]}) AS {c}" for c, t in columns.items())
        return (
            f"CREATE OR REPLACE VIEW {name} AS SELECT CAST(NULL AS VARCHAR) AS src, "
            f"{empty} WHERE false"
        )
    files = "[" + ", ".join(_lit(p) for p in paths) + "]"
    if compacted:
        return (
            f"CREATE OR REPLACE VIEW {name} AS SELECT src, {names} FROM read_json({files}, "
            "format = 'newline_delimited', records = 'true', "
            f"columns = {{'src': 'VARCHAR', {cols}}})"
        )
    return (
        f"CREATE OR REPLACE VIEW {name} AS SELECT filename AS src, "
        f"{names} FROM read_json({files}, format = 'newline_delimited', records = 'true', "
        f"compression = 'gzip', columns = {{{cols}}}, filename = true)"
    )


def run(root: Path, selection: Selection, window: Window) -> dict[str, list[dict[str, Any]]]:
    """Rows of every query of :func:`definitions.queries` over ``selection`` under ``root``.

    An object DuckDB cannot read (not gzip, truncated, a malformed line) is
    left out and named in the ``unreadable`` rows, up to
    :data:`MAX_UNREADABLE`: one bad object must not hide the fleet. Any other
    error is raised as :class:`SourceError`.
    """
    import duckdb

    skip: list[str] = []
    tmp = tempfile.TemporaryDirectory(prefix="edge-actors-fleet-")
    try:
        compacted = _compact_all(root, selection, Path(tmp.name), skip)
        return _run_skipping(duckdb, root, selection, window, skip, compacted)
    finally:
        tmp.cleanup()


def _compact_all(root: Path, selection: Selection, tmp: Path, bad: list[str]) -> dict[str, Path]:
    """The compacted file of every stream not in :data:`DIRECT_STREAMS`, and of ``latest``."""
    out: dict[str, Path] = {}
    for stream, columns in STREAM_COLUMNS.items():
        if stream not in DIRECT_STREAMS:
            rels = selection.window.get(stream, [])
            out[stream] = _compact(root, rels, columns, tmp / f"{stream}.ndjson", bad)
    latest = [p for ps in selection.latest.values() for p in ps if p not in bad]
    out["latest"] = _compact(root, latest, {"ts": "double"}, tmp / "latest.ndjson", bad)
    return out


def _run_skipping(
    duckdb: Any,
    root: Path,
    selection: Selection,
    window: Window,
    skip: list[str],
    compacted: Mapping[str, Path],
) -> dict[str, list[dict[str, Any]]]:
    while True:
        try:
            out = _run(duckdb, root, selection, window, set(skip), compacted)
        except duckdb.Error as exc:
            bad = _named_object(str(exc), root, selection, skip)
            if bad is None or len(skip) >= MAX_UNREADABLE:
                raise SourceError(f"cannot read the objects under {root}: {exc}") from exc
            logger.warning("skipping an unreadable object %s: %s", bad, exc)
            skip.append(bad)
            continue
        out["unreadable"] = [{"path": p} for p in sorted(skip)]
        return out


def _named_object(message: str, root: Path, selection: Selection, skip: list[str]) -> str | None:
    """The selected object (relative path) that DuckDB's error message names."""
    for rel in selection.all_paths():
        if rel not in skip and (root / rel).as_posix() in message:
            return rel
    return None


def _run(
    duckdb: Any,
    root: Path,
    selection: Selection,
    window: Window,
    skip: set[str],
    compacted: Mapping[str, Path],
) -> dict[str, list[dict[str, Any]]]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        # Its progress bar writes to the terminal, into a --format json stdout.
        con.execute("SET enable_progress_bar = false")

        def paths(rels: list[str]) -> list[str]:
            return [(root / p).as_posix() for p in rels if p not in skip]

        for stream, columns in STREAM_COLUMNS.items():
            if stream in compacted:
                file = [compacted[stream].as_posix()]
                con.execute(_view(f"raw_{stream}", file, columns, compacted=True))
            else:
                rels = selection.window.get(stream, [])
                con.execute(_view(f"raw_{stream}", paths(rels), columns))
        file = [compacted["latest"].as_posix()]
        con.execute(_view("raw_latest", file, {"ts": "double"}, compacted=True))
        for name, sql in tables(DUCKDB, window).items():
            con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
        out: dict[str, list[dict[str, Any]]] = {}
        for name, sql in queries(DUCKDB, window).items():
            cur = con.execute(sql)
            cols = [c[0] for c in cur.description]
            out[name] = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        return out
    finally:
        con.close()
