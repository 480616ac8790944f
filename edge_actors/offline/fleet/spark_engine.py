"""The fleet summary on Apache Spark: the same definitions, for fleets past one machine.

Two ways in:

- ``edge-actors fleet summary --engine spark``: Spark in local mode inside the
  command (what the tests run); an ``s3://`` source is fetched into a local
  cache first, as for DuckDB.
- ``spark-submit``: this file is the application; it lists the source by
  partition on the driver (boto3, no download) and lets the executors read
  the objects themselves, ``s3a://`` for an S3 source::

      spark-submit --master yarn \\
          --packages org.apache.hadoop:hadoop-aws:3.4.1 \\
          "$(python -c 'import edge_actors.offline.fleet.spark_engine as m; print(m.__file__)')" \\
          --source s3://bucket/prefix --since 24h --format json -o summary.json

  The executors run SQL only (no Python UDF), so only the driver needs
  ``edge-actors`` installed.

The engine registers the ``ea_*`` views of :mod:`.definitions` with an
explicit schema (no inference pass over the bucket; a missing field reads as
``NULL``) and runs the shared queries with the :data:`.definitions.SPARK`
dialect. Rows come back in the order DuckDB gives (see :func:`nulls_last`),
so :func:`.summary.build` writes the same JSON from either engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_actors.offline.fleet.definitions import SPARK, STREAM_COLUMNS, Window, queries, tables
from edge_actors.offline.fleet.source import Selection

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SPARK_MISSING", "main", "nulls_last", "run", "run_on", "session"]

logger = logging.getLogger(__name__)

#: What the CLI says when pyspark (or Java) is missing.
SPARK_MISSING = "the Spark engine needs pyspark and Java 17+: pip install 'edge-actors[spark]'"

_TYPES = {"string": "string", "double": "double", "bigint": "bigint"}

#: Defaults of a session this module starts (a session already running keeps its own).
#: A summary's shuffles are small (one row per device and hour at most): the default 200
#: partitions would be 200 tiny tasks per query.
LOCAL_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # Many small gzip objects: pack more of them into one task than the 4 MB default assumes.
    "spark.sql.files.openCostInBytes": "1048576",
}

#: The Spark spelling of the shared definitions. The object path (``src``) is
#: ``_metadata.file_path``, a URI: the device is percent-decoded, keeping a literal
#: '+' (``url_decode`` would read it as a space; a URI never encodes a space as '+').
DIALECT = dataclasses.replace(
    SPARK,
    device="url_decode(replace(regexp_extract({x}, '.*/device=([^/]+)/', 1), '+', '%2B'))",
)
# Hadoop expands glob characters in the paths given to a reader: escape them.
_GLOB = re.compile(r"([\\\[\]{}*?])")


def session(master: str | None = None, conf: Mapping[str, str] | None = None) -> SparkSession:
    """The active SparkSession, or a new one (``master``: e.g. ``local[2]``; None: spark-submit's).

    Raises:
        ImportError: pyspark is not installed (:data:`SPARK_MISSING`).
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("edge-actors fleet summary")
    if master is not None:
        builder = builder.master(master)
    for key, value in {**LOCAL_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def nulls_last(sql: str) -> str:
    """``sql`` with ``NULLS LAST`` on each key of its final top-level ``ORDER BY``.

    DuckDB sorts NULL last, Spark first (ascending): without this, a device
    with and without a ``model_version`` would list its rows in another order.
    """
    depth = 0
    last = -1
    upper = sql.upper()
    for i, ch in enumerate(sql):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and upper.startswith("ORDER BY", i):
            last = i
    if last < 0:
        return sql
    head, tail = sql[: last + len("ORDER BY")], sql[last + len("ORDER BY") :]
    keys, depth, start = [], 0, 0
    for i, ch in enumerate(tail):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            keys.append(tail[start:i])
            start = i + 1
    keys.append(tail[start:])
    fixed = [k.rstrip() if "NULLS" in k.upper() else k.rstrip() + " NULLS LAST" for k in keys]
    return head + ",".join(fixed)


def _schema(columns: Mapping[str, str]) -> str:
    return ", ".join(f"`{c}` {_TYPES[t]}" for c, t in columns.items())


def _view(spark: SparkSession, name: str, paths: Sequence[str], columns: Mapping[str, str]) -> None:
    """Register ``name`` over ``paths``: ``src`` (the object's path) and ``columns``."""
    df: DataFrame
    if not paths:
        # In SQL, not createDataFrame([]): that would start Python workers on the executors.
        nulls = ", ".join(f"CAST(NULL AS {_TYPES[t]}) AS `{c}`" for c, t in columns.items())
        df = spark.sql(f"SELECT CAST(NULL AS string) AS src, {nulls} WHERE false")
    else:
        raw = spark.read.schema(_schema(columns)).json([_GLOB.sub(r"\\\1", p) for p in paths])
        df = raw.selectExpr("_metadata.file_path AS src", *(f"`{c}`" for c in columns))
    df.createOrReplaceTempView(name)


def run_on(
    spark: SparkSession, root: str, selection: Selection, window: Window
) -> dict[str, list[dict[str, Any]]]:
    """Rows of every query of :func:`.definitions.queries` over ``selection`` under ``root``.

    ``root``: a local directory or a URI Spark reads (``s3a://bucket/prefix``).
    """
    from pyspark import StorageLevel

    base = root.rstrip("/") + "/"
    for stream, columns in STREAM_COLUMNS.items():
        paths = [base + p for p in selection.window.get(stream, [])]
        _view(spark, f"raw_{stream}", paths, columns)
    latest = [base + p for ps in selection.latest.values() for p in ps]
    _view(spark, "raw_latest", latest, {"ts": "double"})
    cached: list[DataFrame] = []
    try:
        for name, sql in tables(DIALECT, window).items():
            # Materialized now, in order: each object is read once (as DuckDB's temp tables).
            t0 = time.perf_counter()
            df = spark.sql(sql).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(df)
            n = df.count()
            df.createOrReplaceTempView(name)
            logger.debug("%s: %d rows in %.2f s", name, n, time.perf_counter() - t0)
        out: dict[str, list[dict[str, Any]]] = {}
        for name, sql in queries(DIALECT, window).items():
            t0 = time.perf_counter()
            out[name] = [row.asDict() for row in spark.sql(nulls_last(sql)).collect()]
            logger.debug("%s: %d rows in %.2f s", name, len(out[name]), time.perf_counter() - t0)
        # DuckDB's engine leaves out (and names) objects it cannot decode; Spark reads
        # in place on the executors and fails the job on a corrupt gzip object instead
        # (its error names the file), so a summary it writes has none.
        out["unreadable"] = []
        return out
    finally:
        for df in cached:
            df.unpersist()


def run(root: Path, selection: Selection, window: Window) -> dict[str, list[dict[str, Any]]]:
    """The engine entry of :data:`edge_actors.offline.fleet.ENGINES`: Spark in local mode.

    Reuses a session that is already running (a test's, a notebook's).
    """
    cores = os.cpu_count() or 2
    # One process: listing the objects' status in a Spark job (the default past 32
    # paths) costs a job per stream and saves nothing.
    conf = {"spark.sql.sources.parallelPartitionDiscovery.threshold": "1000000"}
    spark = session(f"local[{min(cores, 8)}]", conf)
    return run_on(spark, root.resolve().as_posix(), selection, window)


# ---------------------------------------------------------------------- spark-submit


def _parser() -> argparse.ArgumentParser:
    from edge_actors.offline.fleet.cli import add_fleet_parser

    p = argparse.ArgumentParser(
        prog="spark-submit spark_engine.py",
        description="edge-actors fleet summary as a Spark application (options as the CLI's).",
    )
    add_fleet_parser(p.add_subparsers(dest="command"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``spark-submit .../spark_engine.py --source ... [fleet summary options]``."""
    from edge_actors.offline.fleet import Thresholds
    from edge_actors.offline.fleet.cli import _render
    from edge_actors.offline.fleet.source import S3Store, SourceError, open_store, select
    from edge_actors.offline.fleet.summary import build

    args = _parser().parse_args(["fleet", "summary", *(sys.argv[1:] if argv is None else argv)])
    until = time.time() if args.as_of is None else args.as_of
    window = Window(
        since=until - args.since,
        until=until,
        drift_since=until - max(args.since, args.drift_lookback),
    )
    thresholds = Thresholds(
        silent_after_s=args.silent_after,
        hot_cpu_percent=args.hot_cpu,
        hot_mem_percent=args.hot_mem,
        hot_temp_c=args.hot_temp,
    )
    try:
        store = open_store(args.source, endpoint_url=args.endpoint_url, region=args.region)
        sel = select(store, window.since, drift_since=window.drift_since)
    except SourceError as exc:
        print(f"edge-actors: {exc}", file=sys.stderr)
        return 1
    if isinstance(store, S3Store):
        # The executors read the bucket themselves (hadoop-aws): nothing goes through the driver.
        root = f"s3a://{store.bucket}/{store.prefix}"
    else:
        root = store.root.resolve().as_posix()
    spark = session()
    try:
        rows = run_on(spark, root, sel, window)
    finally:
        spark.stop()
    summary = build(rows, source=store.uri, window=window, thresholds=thresholds)
    text = _render(summary, args.format)
    if args.output:
        from edge_actors.safe_write import write_atomic

        write_atomic(Path(args.output), text.encode())
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
