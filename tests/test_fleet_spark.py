"""The fleet summary on Spark (local mode): the same planted problems, the same JSON as DuckDB.

One SparkSession (``local[2]``, 2 shuffle partitions) serves every test here:
a JVM start costs seconds, and CI has 2 cores. The fleet is written by
``benchmarks/fleet_sim.py`` through the agent's own writer; a few devices are
copied under ids that a URI must escape, and into the ``model=`` layout with
a ``model_version``, where the engines' NULL ordering and path handling differ.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_actors.offline.fleet import summarize
from edge_actors.offline.fleet.definitions import Window
from edge_actors.offline.fleet.source import LocalStore, select
from tests.test_fleet import _relayout

pytest.importorskip("duckdb")
pytest.importorskip("pyspark")

REPO = Path(__file__).resolve().parent.parent
SIM = REPO / "benchmarks" / "fleet_sim.py"
#: Device ids that are legal in a key (keys.object_key) but not as they are in a URI.
ODD_IDS = ("pi 01+a%b", "gw-ü", "rack[2]")

if shutil.which("java") is None:
    pytest.skip("no Java here (Spark needs Java 17+)", allow_module_level=True)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """The one SparkSession of the test session."""
    from edge_actors.offline.fleet.spark_engine import session

    s = session(
        "local[2]",
        {
            "spark.sql.shuffle.partitions": "2",
            "spark.sql.sources.parallelPartitionDiscovery.threshold": "1000000",
        },
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """12 devices x 2 days with the problems planted; odd ids and a second layout added."""
    out = tmp_path_factory.mktemp("fleet-spark")
    r = subprocess.run(
        [sys.executable, str(SIM), "--devices", "12", "--days", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    manifest: dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
    sink = Path(manifest["sink"])
    # The drifting device again under odd ids: each must be found drifting, under its own id.
    drifting = manifest["planted"]["drifting"][0]
    for odd in ODD_IDS:
        for stream_dir in sink.iterdir():
            src = stream_dir / f"device={drifting}"
            if src.is_dir():
                shutil.copytree(src, stream_dir / f"device={odd}")
    # One healthy device moved to the model= layout, version 2.0 (others have none).
    healthy = sorted(
        {f"dev-{i:05d}" for i in range(12)}
        - {d for ds in manifest["planted"].values() for d in ds}
        - set(manifest["intended_drops"])
    )[0]
    copy = out / "orig"
    shutil.copytree(sink, copy)
    for stream_dir in sink.iterdir():
        shutil.rmtree(stream_dir / f"device={healthy}", ignore_errors=True)
    _relayout(copy, sink, {healthy: "2.0"})
    manifest["odd"] = list(ODD_IDS)
    manifest["moved"] = healthy
    return manifest


def _end(fleet: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(fleet["end"].replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(1200)
def test_both_engines_write_identical_json_with_the_planted_problems(
    spark: Any, fleet: dict[str, Any]
) -> None:
    docs = {
        engine: summarize(fleet["sink"], as_of=_end(fleet), engine=engine)
        for engine in ("duckdb", "spark")
    }
    text = {k: json.dumps(v, indent=1, sort_keys=False) for k, v in docs.items()}
    assert text["spark"] == text["duckdb"]
    doc = docs["spark"]
    flagged = {
        r: sorted(a["device"] for a in doc["attention"] if a["reason"] == r)
        for r in ("drifting", "silent", "losing_data", "hot")
    }
    planted = fleet["planted"]
    assert flagged["drifting"] == sorted([*planted["drifting"], *ODD_IDS])
    for reason in ("silent", "losing_data", "hot"):
        assert flagged[reason] == planted[reason], reason
    names = {d["device"] for d in doc["devices"]}
    assert set(ODD_IDS) <= names
    moved = next(d for d in doc["devices"] if d["device"] == fleet["moved"])
    assert [m["model_version"] for m in moved["models"]] == ["2.0"]


def _rounded(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    def r(v: Any) -> Any:
        if isinstance(v, float) and math.isfinite(v):
            return float(f"{v:.12g}")
        return v

    return {q: [{k: r(v) for k, v in row.items()} for row in rs] for q, rs in rows.items()}


@pytest.mark.timeout(1200)
def test_engines_return_the_same_rows_in_the_same_order(
    spark: Any, fleet: dict[str, Any], tmp_path: Path
) -> None:
    """The engine contract under the JSON: every query's rows, order included.

    The ``models`` rows of a device with and without ``model_version`` differ in
    order unless NULLs sort last on Spark as on DuckDB.
    """
    from edge_actors.offline.fleet import duckdb_engine, spark_engine

    sink = Path(fleet["sink"])
    # A device that ran an unversioned model, then version 2.0: both in the window.
    dev = sink / "model" / f"device={fleet['moved']}"
    orig = sink.parent / "orig" / "model"
    for src in sorted(orig.glob(f"device={fleet['moved']}/date=*/*.ndjson.gz"))[-2:]:
        target = dev / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    end = _end(fleet)
    window = Window(since=end - 86400, until=end, drift_since=end - 7 * 86400)
    store = LocalStore(sink)
    sel = select(store, window.since, drift_since=window.drift_since)
    duck = _rounded(duckdb_engine.run(sink, sel, window))
    sprk = _rounded(spark_engine.run(sink, sel, window))
    assert list(sprk) == list(duck)
    for name in duck:
        assert sprk[name] == duck[name], name
    versions = [r["model_version"] for r in duck["models"] if r["device"] == fleet["moved"]]
    assert versions == ["2.0", None]


def test_nulls_last_rewrites_only_the_final_order_by() -> None:
    from edge_actors.offline.fleet.spark_engine import nulls_last

    sql = (
        "SELECT a FROM (SELECT a, row_number() OVER (ORDER BY ts DESC) AS rn FROM t) AS x "
        "ORDER BY a, f(b, c), d DESC"
    )
    assert nulls_last(sql).endswith("ORDER BY a NULLS LAST, f(b, c) NULLS LAST, d DESC NULLS LAST")
    assert "(ORDER BY ts DESC)" in nulls_last(sql)
    assert nulls_last("SELECT 1") == "SELECT 1"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_spark_submit_runs_the_module_as_documented(
    fleet: dict[str, Any], tmp_path: Path, spark: Any
) -> None:
    """``spark-submit spark_engine.py --source DIR ...`` (docs/fleet.md) writes the same JSON."""
    from edge_actors.offline.fleet import spark_engine

    docs = (REPO / "docs" / "fleet.md").read_text()
    block = docs[docs.index("spark-submit --master yarn") :].split("```")[0]
    # The documented command runs this very file, with the CLI's options.
    assert "import edge_actors.offline.fleet.spark_engine as m; print(m.__file__)" in block
    assert "--source s3://" in block and "--format json -o summary.json" in block
    submit = Path(sys.executable).parent / "spark-submit"
    if not submit.exists():
        pytest.skip("pyspark's spark-submit is not next to this Python")
    out = tmp_path / "summary.json"
    r = subprocess.run(
        [
            str(submit),
            "--master",
            "local[1]",
            "--conf",
            "spark.sql.shuffle.partitions=2",
            spark_engine.__file__,
            "--source",
            fleet["sink"],
            "--as-of",
            fleet["end"],
            "--format",
            "json",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1100,
        env={
            **os.environ,
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        },
    )
    assert r.returncode == 0, r.stderr[-3000:]
    expected = summarize(fleet["sink"], as_of=_end(fleet), engine="duckdb")
    assert json.loads(out.read_text()) == expected
