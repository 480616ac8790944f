"""``edge-actors fleet summary``: the planted problems of a simulated fleet, and nothing else.

The fleet is written by ``benchmarks/fleet_sim.py`` through the agent's own
writer (rows -> outbox -> deliver_batch), read back through the CLI as a
user runs it, from a local sink tree and from S3 (moto's server).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_actors.offline.fleet.source import LocalStore, S3Store, select

pytest.importorskip("duckdb")

REPO = Path(__file__).resolve().parent.parent
SIM = REPO / "benchmarks" / "fleet_sim.py"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def summary(source: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``fleet summary --format json`` through the CLI, parsed."""
    r = _run(
        "-m",
        "edge_actors",
        "fleet",
        "summary",
        "--source",
        source,
        "--format",
        "json",
        *args,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """30 devices x 2 days, one problem planted per few devices; the manifest."""
    out = tmp_path_factory.mktemp("fleet")
    r = _run(str(SIM), "--devices", "30", "--days", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    manifest: dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
    assert manifest == json.loads((out / "manifest.json").read_text())
    return manifest


@pytest.fixture(scope="module")
def default(fleet: dict[str, Any]) -> dict[str, Any]:
    """The summary of the last 24 h (the default window) at the simulated end."""
    return summary(fleet["sink"], "--as-of", fleet["end"])


def _flagged(doc: dict[str, Any], reason: str) -> list[str]:
    return sorted(a["device"] for a in doc["attention"] if a["reason"] == reason)


def test_summary_finds_exactly_the_planted_problems(
    fleet: dict[str, Any], default: dict[str, Any]
) -> None:
    doc = default
    planted = fleet["planted"]
    for reason in ("drifting", "silent", "losing_data", "hot"):
        assert _flagged(doc, reason) == planted[reason], reason
    # Planted but not a problem: a resolved episode, intended (sampled) drops.
    flagged = {a["device"] for a in doc["attention"]}
    assert not flagged & set(planted["recovered"])
    assert not flagged & set(fleet["intended_drops"])
    # The list comes first, in the order of the reasons.
    assert list(doc)[:7] == [
        "schema",
        "source",
        "as_of",
        "since",
        "drift_since",
        "thresholds",
        "attention",
    ]
    reasons = [a["reason"] for a in doc["attention"]]
    assert reasons == sorted(reasons, key=["drifting", "silent", "losing_data", "hot"].index)
    t = doc["totals"]
    assert t["devices"] == fleet["devices"] == len(doc["devices"])
    assert (t["drifting"], t["silent"], t["losing_data"], t["hot"]) == tuple(
        len(planted[r]) for r in ("drifting", "silent", "losing_data", "hot")
    )


def test_what_the_summary_says_about_a_device(
    fleet: dict[str, Any], default: dict[str, Any]
) -> None:
    doc = default
    devices = {d["device"]: d for d in doc["devices"]}
    end = dt.datetime.fromisoformat(fleet["end"].replace("Z", "+00:00"))
    # Drifting: the feature, the test, when it began (5 h before the end, +10 min).
    d = devices[fleet["planted"]["drifting"][0]]
    assert [(e["model"], e["feature"], e["test"], e["state"]) for e in d["drift_open"]] == [
        ("house", "sqft", "ks", "drift_started")
    ]
    began = end - dt.timedelta(hours=5) + dt.timedelta(minutes=10)
    assert d["drift_open"][0]["began"] == began.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    # Silent: last seen just before it stopped, records only until then.
    s = devices[fleet["planted"]["silent"][0]]
    assert fleet["silent_since"][:13] > s["last_seen"][:13] >= "2026-11-28T01"
    assert s["silent_for_s"] > 6 * 3600 - 600
    # Losing data: drops by stream and reason, intended ones apart.
    lost = devices[fleet["planted"]["losing_data"][0]]
    assert lost["drops"] == {"model": {"ring_overrun": 1000}, "system": {"budget": 48}}
    assert lost["lost"] == 1048
    sampled = devices[fleet["intended_drops"][0]]
    assert sampled["drops"] == {"model": {"sampled": 2000}} and sampled["lost"] == 0
    # Health percentiles; model records per hour; the model and its (unset) version.
    hot = devices[fleet["planted"]["hot"][0]]
    assert hot["health"]["temp_max_c"]["p95"] > 85 > hot["health"]["temp_max_c"]["p50"] > 80
    assert hot["health"]["samples"] == 24 * 12
    assert hot["records"]["model"] == 24 * fleet["per_hour"]
    assert hot["records_per_hour"]["model"] == fleet["per_hour"]
    assert len(hot["hourly"]["model"]) == 24
    assert sum(n for _h, n in hot["hourly"]["model"]) == hot["records"]["model"]
    assert hot["models"] == [
        {
            "model": "house",
            "model_version": None,
            "records": 24 * fleet["per_hour"],
            "first_seen": hot["models"][0]["first_seen"],
            "last_seen": hot["models"][0]["last_seen"],
        }
    ]
    assert doc["totals"]["model_versions"] == [
        {"model": "house", "model_version": None, "devices": fleet["devices"]}
    ]


def test_a_short_window_still_lists_silent_devices_and_older_open_drift(
    fleet: dict[str, Any],
) -> None:
    """--since 1h: silent devices have no record in it, the drift began 5 h ago."""
    doc = summary(fleet["sink"], "--as-of", fleet["end"], "--since", "1h")
    planted = fleet["planted"]
    assert _flagged(doc, "silent") == planted["silent"]
    assert _flagged(doc, "drifting") == planted["drifting"]
    assert doc["totals"]["devices"] == fleet["devices"]
    assert doc["totals"]["reporting"] == fleet["devices"] - len(planted["silent"])
    silent = next(d for d in doc["devices"] if d["device"] == planted["silent"][0])
    assert silent["last_seen"] is not None and not any(silent["records"].values())


def test_text_output_puts_attention_first(fleet: dict[str, Any]) -> None:
    r = _run(
        "-m", "edge_actors", "fleet", "summary", "--source", fleet["sink"], "--as-of", fleet["end"]
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    n = sum(len(fleet["planted"][k]) for k in ("drifting", "silent", "losing_data", "hot"))
    assert lines[2] == f"needs attention: {n}"
    flagged = lines[3 : 3 + n]
    assert all(line.split()[0] in str(fleet["planted"]) for line in flagged)
    assert any("drifting" in ln and "house/sqft (ks)" in ln for ln in flagged)


def test_since_reads_only_the_dates_it_needs(fleet: dict[str, Any]) -> None:
    """Listing stops at the date= level for the days before the window (minus one)."""
    store = LocalStore(fleet["sink"])
    listed: list[str] = []
    real = store.list_dir

    def spy(rel: str) -> tuple[list[str], list[str]]:
        listed.append(rel)
        return real(rel)

    store.list_dir = spy  # type: ignore[method-assign]
    end = dt.datetime.fromisoformat(fleet["end"].replace("Z", "+00:00")).timestamp()
    # A window starting 3 days after the last data: no object in it, and of
    # each device only the newest date= directory is listed (for last seen).
    sel = select(store, end + 86400 * 3)
    assert all(not p for p in sel.window.values())
    dates = [r for r in listed if "date=" in r]
    assert len(dates) == len({r.rsplit("/date=", 1)[0] for r in dates})
    assert not [r for r in dates if "date=2026-11-26" in r]
    # Still one newest object per device and stream, for last seen.
    assert len(sel.latest["model"]) == fleet["devices"]
    assert any(p.startswith("model/device=dev-00001/date=2026-11-28/") for p in sel.latest["model"])


def test_summary_reads_s3_by_partition(
    tmp_path: Path, fleet: dict[str, Any], s3_server: str, s3_bucket: str
) -> None:
    """Part of the fleet uploaded to S3 under a prefix: the summary of the same directory."""
    import boto3

    planted = fleet["planted"]
    chosen = sorted(planted[r][0] for r in ("drifting", "silent", "losing_data", "hot"))
    chosen.append(fleet["intended_drops"][0])
    sink = tmp_path / "sink"
    for path in sorted(Path(fleet["sink"]).rglob("*.ndjson.gz")):
        rel = path.relative_to(fleet["sink"])
        if rel.parts[1].split("=", 1)[1] in chosen:
            (sink / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, sink / rel)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    for path in sorted(sink.rglob("*.ndjson.gz")):
        client.put_object(
            Bucket=s3_bucket,
            Key="edge-fleet/" + path.relative_to(sink).as_posix(),
            Body=path.read_bytes(),
        )
    local = summary(str(sink), "--as-of", fleet["end"])
    remote = summary(
        f"s3://{s3_bucket}/edge-fleet", "--as-of", fleet["end"], "--endpoint-url", s3_server
    )
    assert remote["source"] == f"s3://{s3_bucket}/edge-fleet/"
    assert {**remote, "source": None} == {**local, "source": None}
    assert sorted(a["device"] for a in remote["attention"]) == sorted(chosen[:4])
    # Listing by level: a 1 h window fetches no object of the first day.
    store = S3Store(f"s3://{s3_bucket}/edge-fleet/", endpoint_url=s3_server)
    end = dt.datetime.fromisoformat(fleet["end"].replace("Z", "+00:00")).timestamp()
    sel = select(store, end - 3600)
    paths = sel.all_paths()
    assert paths and not [p for p in paths if "date=2026-11-26" in p]
    assert sel.devices == set(chosen)
    store.close()


def _relayout(src: Path, dst: Path, version_for: dict[str, str]) -> None:
    """Copy a sink tree into the ``model=`` layout, stamping ``model_version`` per device."""
    for path in sorted(src.rglob("*.ndjson.gz")):
        rel = path.relative_to(src).parts
        stream, device = rel[0], rel[1].split("=", 1)[1]
        if device not in version_for:
            continue
        lines = gzip.decompress(path.read_bytes()).splitlines()
        if stream in ("model", "events", "payload"):
            recs = [json.loads(ln) for ln in lines]
            for rec in recs:
                rec["model_version"] = version_for[device]
            lines = [json.dumps(r).encode() for r in recs]
            target = dst / stream / rel[1] / "model=house" / rel[2] / rel[3]
        else:
            target = dst.joinpath(*rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))


def test_both_key_layouts_in_one_source(
    tmp_path: Path, fleet: dict[str, Any], default: dict[str, Any]
) -> None:
    """Devices on the ``model=`` layout with ``model_version`` next to older ones without."""
    src = Path(fleet["sink"])
    mixed = tmp_path / "sink"
    shutil.copytree(src, mixed)
    drifting = fleet["planted"]["drifting"][0]
    moved = {drifting: "1.4.2", "dev-00003": "1.5.0"}
    for device in moved:
        for stream_dir in mixed.iterdir():
            shutil.rmtree(stream_dir / f"device={device}", ignore_errors=True)
    _relayout(src, mixed, moved)
    doc = summary(str(mixed), "--as-of", fleet["end"])
    before = default
    assert [(a["device"], a["reason"]) for a in doc["attention"]] == [
        (a["device"], a["reason"]) for a in before["attention"]
    ]
    devices = {d["device"]: d for d in doc["devices"]}
    assert [m["model_version"] for m in devices[drifting]["models"]] == ["1.4.2"]
    assert devices[drifting]["drift_open"][0]["model_version"] == "1.4.2"
    assert [m["model_version"] for m in devices["dev-00004"]["models"]] == [None]
    assert doc["totals"]["model_versions"] == [
        {"model": "house", "model_version": None, "devices": fleet["devices"] - 2},
        {"model": "house", "model_version": "1.4.2", "devices": 1},
        {"model": "house", "model_version": "1.5.0", "devices": 1},
    ]
    assert "house@1.4.2/sqft (ks)" in str(doc["attention"])


def test_missing_duckdb_says_how_to_install(fleet: dict[str, Any], tmp_path: Path) -> None:
    """Without DuckDB: exit 1 and the pip command, no traceback."""
    (tmp_path / "duckdb.py").write_text("raise ImportError('No module named duckdb')\n")
    r = _run(
        "-m",
        "edge_actors",
        "fleet",
        "summary",
        "--source",
        fleet["sink"],
        env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"},
    )
    assert r.returncode == 1
    assert "pip install 'edge-actors[fleet]'" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "/nonexistent/sink"], "--source /nonexistent/sink: not a directory"),
        (["--source", "gs://bucket/x"], "only s3:// URLs and local directories"),
    ],
)
def test_bad_source_is_one_clear_line(args: list[str], message: str) -> None:
    r = _run("-m", "edge_actors", "fleet", "summary", *args)
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr


def test_bad_durations_are_refused_by_the_parser() -> None:
    r = _run("-m", "edge_actors", "fleet", "summary", "--source", ".", "--since", "yesterday")
    assert r.returncode == 2
    assert "expected a positive duration like 30m, 24h or 7d" in r.stderr


def test_an_unreadable_object_is_left_out_and_named(
    tmp_path: Path, fleet: dict[str, Any], default: dict[str, Any]
) -> None:
    """Not gzip, or a malformed line: the rest of the fleet is still summarized."""
    sink = tmp_path / "sink"
    shutil.copytree(fleet["sink"], sink)
    healthy = "dev-00004"
    events = sorted((sink / "events" / f"device={healthy}").rglob("*.ndjson.gz"))
    system = sorted((sink / "system" / f"device={healthy}").rglob("*.ndjson.gz"))
    events[-1].write_bytes(b"not gzip")
    system[-1].write_bytes(gzip.compress(b'{"ts": 1795766000.0}\n{broken\n'))
    out = tmp_path / "summary.json"
    r = _run(
        "-m",
        "edge_actors",
        "fleet",
        "summary",
        "--source",
        str(sink),
        "--as-of",
        fleet["end"],
        "--format",
        "json",
        "-o",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    doc = json.loads(out.read_text())
    rel = sorted(p.relative_to(sink).as_posix() for p in (events[-1], system[-1]))
    assert doc["unreadable"] == rel
    for p in rel:
        assert p in r.stderr  # the warning names it
    assert [(a["device"], a["reason"]) for a in doc["attention"]] == [
        (a["device"], a["reason"]) for a in default["attention"]
    ]


def test_the_definitions_are_sql_both_engines_read() -> None:
    """No DuckDB-only syntax in the shared SQL; engine differences only through the dialect."""
    from edge_actors.offline.fleet.definitions import DUCKDB, SPARK, Window, queries, tables

    w = Window(since=1.0e9, until=1.0e9 + 86400, drift_since=1.0e9 - 86400)
    for dialect in (DUCKDB, SPARK):
        for name, sql in {**tables(dialect, w), **queries(dialect, w)}.items():
            upper = sql.upper()
            for construct in ("QUALIFY", "::", " FILTER (", "EPOCH(", "TO_TIMESTAMP", "LIST("):
                assert construct not in upper, (dialect.name, name, construct)
    duck = {**tables(DUCKDB, w), **queries(DUCKDB, w)}
    spark = {**tables(SPARK, w), **queries(SPARK, w)}
    assert duck["health"] != spark["health"] and "quantile_cont" in duck["health"]
    assert "percentile(" in spark["health"] and "percentile_approx" not in spark["health"]
    differ = [k for k in duck if duck[k] != spark[k]]
    assert differ == ["health"], differ
