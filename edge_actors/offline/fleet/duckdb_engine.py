"""The fleet summary on DuckDB, in process: one machine, up to a few thousand devices.

Registers the ``raw_*`` views of :mod:`definitions` over the selected local
files with an explicit column list (no schema inference: a field missing
from a record or a whole layout reads as ``NULL``, and ``inputs``/``outputs``
are never parsed), materializes the ``t_*`` tables (each object is read
once) and runs the shared queries.
"""

from __future__ import annotations

import logging
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


def _view(name: str, paths: Sequence[str], columns: Mapping[str, str]) -> str:
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
    while True:
        try:
            out = _run(duckdb, root, selection, window, set(skip))
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
    duckdb: Any, root: Path, selection: Selection, window: Window, skip: set[str]
) -> dict[str, list[dict[str, Any]]]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        # Its progress bar writes to the terminal, into a --format json stdout.
        con.execute("SET enable_progress_bar = false")

        def paths(rels: list[str]) -> list[str]:
            return [(root / p).as_posix() for p in rels if p not in skip]

        for stream, columns in STREAM_COLUMNS.items():
            con.execute(_view(f"raw_{stream}", paths(selection.window.get(stream, [])), columns))
        latest = paths([p for ps in selection.latest.values() for p in ps])
        con.execute(_view("raw_latest", latest, {"ts": "double"}))
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
