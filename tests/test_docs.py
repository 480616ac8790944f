"""The docs stay true: generated reference up to date, fleet queries run, links resolve."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from edge_actors.config import FieldSpec, load_config
from edge_actors.outbox import Outbox
from edge_actors.records import EVENT_DTYPE, KIND_PAIR, SYSTEM_DTYPE, model_dtype
from edge_actors.ring import Ring
from edge_actors.rows import ModelRows, event_rows, iso, system_rows
from edge_actors.sinks import deliver_batch
from edge_actors.sinks.local import LocalSink
from edge_actors.topology import capacity_for, dtype_for

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", REPO / "scripts" / "gen_config_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- configuration.md


def test_configuration_md_is_up_to_date() -> None:
    fresh = _generator().render()
    current = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert current == fresh, "docs/configuration.md is out of date: run `make docs`"


def test_configuration_md_lists_every_key() -> None:
    from edge_actors.config import schema_rows

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key, *_ in schema_rows() if f"| `{key}` |" not in text]
    assert not missing, f"keys missing from docs/configuration.md: {missing} (run `make docs`)"


def test_generator_check_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = _generator()
    out = tmp_path / "configuration.md"
    assert gen.main(["--check", "-o", str(out)]) == 1
    assert "run `make docs`" in capsys.readouterr().err
    assert gen.main(["-o", str(out)]) == 0
    assert gen.main(["--check", "-o", str(out)]) == 0


# ---------------------------------------------------------------- links


def test_relative_links_resolve() -> None:
    bad = []
    for md in sorted(DOCS.glob("*.md")):
        text = md.read_text(encoding="utf-8")
        text = re.sub(r"```.*?```", "", text, flags=re.S)  # no links inside code blocks
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                bad.append(f"{md.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{md.name}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def _anchors(md: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown file."""
    out = set()
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


# ---------------------------------------------------------------- operations.md


def test_ring_sizes_in_operations_md_match_the_code() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    cfg = load_config(REPO / "configs" / "default.yaml")
    sizes = {}
    for kind in ("system", "procs", "events", "lane", "payload"):
        _slot, sizes[kind] = Ring.layout_size(dtype_for(kind, cfg), capacity_for(kind, cfg))
    fixed = sizes["system"] + sizes["procs"] + sizes["events"]
    for value in (*sizes.values(), fixed):
        assert f"{value:,}" in text, f"operations.md should show {value:,} bytes"


def test_systemd_unit_has_the_documented_settings() -> None:
    unit = (DOCS / "edge-actors.service").read_text(encoding="utf-8")
    for setting in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartSec=",
        "KillMode=mixed",
        "MemoryMax=",
        "RuntimeDirectory=edge-actors",
        "StateDirectory=edge-actors",
    ):
        assert re.search(rf"^{re.escape(setting)}", unit, flags=re.M), setting
    for forbidden in ("PrivateDevices=", "PrivateIPC=", "RemoveIPC=", "DynamicUser="):
        assert not re.search(rf"^{forbidden}", unit, flags=re.M), forbidden


# ---------------------------------------------------------------- fleet.md


def _ns(day: int, hour: int, second: int = 0) -> int:
    t = dt.datetime(2026, 11, day, hour, 0, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=second)
    return int(t.timestamp() * 1e9)


INPUTS = [FieldSpec(n) for n in ("bedrooms", "bathrooms", "sqft", "age")]
OUTPUTS = [FieldSpec(n) for n in ("price", "confidence")]


def _model(device: str, day: int, hour: int, n: int, sqft: float) -> list[dict[str, Any]]:
    recs = np.zeros(n, dtype=model_dtype(6))
    recs["t_ns"] = [_ns(day, hour, i) for i in range(n)]
    recs["id"] = np.arange(n)
    recs["kind"] = KIND_PAIR
    recs["v"] = [3.0, 2.0, sqft, 10.0, sqft * 250.0, 0.9]
    rows = ModelRows(device, "house", INPUTS, OUTPUTS)
    return rows.rows("ea_default_l0", recs, np.arange(n, dtype=np.int64))


def _events(device: str, items: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
    recs = np.zeros(len(items), dtype=EVENT_DTYPE)
    for i, (t_ns, feature, state) in enumerate(items):
        recs[i]["t_ns"] = t_ns
        recs[i]["feature"] = feature.encode()
        recs[i]["test"] = b"ks"
        recs[i]["state"] = state.encode()
        recs[i]["statistic"] = 0.3
        recs[i]["threshold"] = 0.0836
        recs[i]["window_size"] = 1000
        recs[i]["n_ref"] = 5000
    return event_rows(device, "house", recs)


def _system(device: str, day: int, temps: list[float]) -> list[dict[str, Any]]:
    recs = np.zeros(len(temps), dtype=SYSTEM_DTYPE)
    for name in SYSTEM_DTYPE.names or ():
        if name != "t_ns":
            recs[name] = np.nan
    for i, temp in enumerate(temps):
        recs[i]["t_ns"] = _ns(day, 12, i * 10)
        recs[i]["mem_percent"] = 40.0 + i
        recs[i]["disk_percent"] = 20.0
        recs[i]["temp_max_c"] = temp
    return system_rows(device, recs)


def _device(
    root: Path, db: Path, device: str, streams: dict[str, list[dict[str, Any]]], drops: Any
) -> None:
    """One device's agent path: rows -> outbox -> deliver_batch -> local sink."""
    with Outbox.open(db, max_bytes=16 << 20, chunk_records=50) as outbox:
        outbox.append(streams, drops=drops)
        outbox.append_drop_report({"device_id": device, "time": iso(_ns(28, 12))})
        sink = LocalSink(root)
        for stream in ("model", "events", "system", "drops"):
            while deliver_batch(outbox, sink, stream, device_id=device, max_records=100):
                pass


@pytest.fixture(scope="module")
def fleet_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fleet")
    root = base / "sink"
    pi1 = {
        "model": _model("pi-01", 27, 10, 300, 1500.0) + _model("pi-01", 28, 9, 200, 1800.0),
        "events": _events(
            "pi-01",
            [
                (_ns(28, 9, 50), "sqft", "drift_started"),
                (_ns(28, 9, 50), "price", "drift_started"),
                (_ns(28, 9, 150), "price", "drift_resolved"),
                (_ns(28, 9, 160), "age", "check"),
            ],
        ),
        "system": _system("pi-01", 28, [51.0, 53.5]),
    }
    _device(root, base / "pi1.db", "pi-01", pi1, {("model", "ring_overrun"): 7})
    pi2 = {
        "model": _model("pi-02", 28, 11, 150, 1200.0),
        "events": _events("pi-02", [(_ns(28, 11, 100), "sqft", "check")]),
        "system": _system("pi-02", 28, [60.0, 61.0, 62.5]),
    }
    _device(root, base / "pi2.db", "pi-02", pi2, {("model", "sampled"): 5})
    return root


EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "per-device": [
        ("pi-01", dt.date(2026, 11, 27), 300),
        ("pi-01", dt.date(2026, 11, 28), 200),
        ("pi-02", dt.date(2026, 11, 28), 150),
    ],
    "open-drift": [("pi-01", "sqft", "ks")],
    "hourly": [(10, 300, 1500.0, 375000.0), (9, 200, 1800.0, 450000.0)],
    "drops": [("pi-01", "model", "ring_overrun", 7), ("pi-02", "model", "sampled", 5)],
    "last-system": [("pi-01", 41.0, 20.0, 53.5), ("pi-02", 42.0, 20.0, 62.5)],
}


def _duckdb_blocks() -> dict[str, str]:
    text = (DOCS / "fleet.md").read_text(encoding="utf-8")
    found = re.findall(r"<!-- test: duckdb ([\w-]+) -->\s*```sql\n(.*?)```", text, flags=re.S)
    return dict(found)


def test_fleet_md_has_the_tested_duckdb_queries() -> None:
    assert set(_duckdb_blocks()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fleet_md_duckdb_query(name: str, fleet_tree: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    sql = _duckdb_blocks()[name].replace("'sink/", f"'{fleet_tree.as_posix()}/")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    got = [_simplify(name, r) for r in rows]
    assert got == EXPECTED[name], f"fleet.md query {name!r} returned {rows}"


def _simplify(name: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Keep the columns the expectation checks, in a comparable form."""
    if name == "open-drift":
        return row[:3]
    if name == "hourly":
        return (row[0].hour, row[1], round(row[2], 6), round(row[3], 6))
    if name == "last-system":
        return (row[0], row[2], row[3], row[4])
    return tuple(row)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
