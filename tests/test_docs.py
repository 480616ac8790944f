"""The docs stay true: generated reference up to date, fleet queries run, links resolve."""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from edge_actors.config import FieldSpec, load_config
from edge_actors.outbox import Outbox
from edge_actors.records import EVENT_DTYPE, KIND_FEEDBACK, KIND_PAIR, SYSTEM_DTYPE, model_dtype
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


# ---------------------------------------------------------------- references


def test_no_reference_to_a_design_document_outside_the_repo() -> None:
    """Code and docs cite docs/design.md sections, not the brief it was built from."""
    bad = []
    for path in [*REPO.glob("*.md"), *DOCS.glob("*.md"), *REPO.glob("edge_actors/**/*.py")]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"DESIGN(\.md| §)", line):
                bad.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)
    cited = set()
    for path in REPO.glob("edge_actors/**/*.py"):
        cited |= set(re.findall(r'docs/design\.md, "([^"]+)"', path.read_text(encoding="utf-8")))
    headings = set(re.findall(r"^## (.+)$", (DOCS / "design.md").read_text(), flags=re.M))
    assert cited and cited <= headings, cited - headings


def test_design_md_does_not_claim_the_agent_uses_scipy() -> None:
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    assert "scipy only in drift" not in text
    assert "numpy and `scipy.special` only" not in text
    assert "no process imports scipy" in text


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


def test_docker_section_says_the_image_owns_the_volume_folders() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    docker = text[text.index("## Docker") :]
    assert "chown 1000:1000 /run/edge-actors /var/lib/edge-actors" in docker


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


def _model(
    device: str, day: int, hour: int, n: int, sqft: float, version: str | None = ""
) -> list[dict[str, Any]]:
    """House-model rows; ``version`` ``None``: as an agent before multi-model support wrote them."""
    recs = np.zeros(n, dtype=model_dtype(6))
    recs["t_ns"] = [_ns(day, hour, i) for i in range(n)]
    recs["id"] = np.arange(n)
    recs["kind"] = KIND_PAIR
    recs["v"] = [3.0, 2.0, sqft, 10.0, sqft * 250.0, 0.9]
    rows = ModelRows(device, "house", INPUTS, OUTPUTS, model_version=version or "")
    out = rows.rows("ea_default_l0", recs, np.arange(n, dtype=np.int64))
    if version is None:
        for r in out:
            del r["model_version"]
    return out


def _feedback(device: str, day: int, hour: int, ids: range, price: float) -> list[dict[str, Any]]:
    """Ground truth for the predictions ``ids`` of :func:`_model`, a minute after each."""
    n = len(ids)
    recs = np.zeros(n, dtype=model_dtype(6))
    recs["t_ns"] = [_ns(day, hour, i + 60) for i in ids]
    recs["id"] = list(ids)
    recs["kind"] = KIND_FEEDBACK
    recs["v"] = [np.nan, np.nan, np.nan, np.nan, price, np.nan]
    rows = ModelRows(device, "house", INPUTS, OUTPUTS, "1.0")
    return rows.rows("ea_default_l0", recs, np.arange(n, dtype=np.int64))


def _counter(device: str, day: int, hour: int, n: int) -> list[dict[str, Any]]:
    """A second model on the same device, with other fields."""
    recs = np.zeros(n, dtype=model_dtype(2))
    recs["t_ns"] = [_ns(day, hour, i) for i in range(n)]
    recs["id"] = np.arange(n)
    recs["kind"] = KIND_PAIR
    recs["v"] = [7.0, 1.0]
    rows = ModelRows(device, "counter", [FieldSpec("pixels")], [FieldSpec("people")], "2")
    return rows.rows("ea_default_l1", recs, np.arange(n, dtype=np.int64))


def _events(
    device: str, items: list[tuple[int, str, str]], old: bool = False
) -> list[dict[str, Any]]:
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
    rows = event_rows(device, "house", recs)
    if old:  # an agent before multi-model support wrote no version
        for r in rows:
            del r["model_version"]
    return rows


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
        # The uploader's outbox streams: "model/house" for a model's (new key layout),
        # plain "model" in an outbox an older agent wrote (old layout).
        for stream in outbox.stream_names():
            while deliver_batch(outbox, sink, stream, device_id=device, max_records=100):
                pass


@pytest.fixture(scope="module")
def fleet_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fleet")
    root = base / "sink"
    # pi-00 still runs an agent from before multi-model support: the old key layout.
    pi0 = {
        "model": _model("pi-00", 26, 8, 40, 1000.0, version=None),
        "events": _events("pi-00", [(_ns(26, 8, 10), "sqft", "drift_started")], old=True),
    }
    _device(root, base / "pi0.db", "pi-00", pi0, {})
    pi1 = {
        "model/house": _model("pi-01", 27, 10, 300, 1500.0, "1.0")
        + _model("pi-01", 28, 9, 150, 1800.0, "1.0")
        + _model("pi-01", 28, 9, 50, 1800.0, "1.1"),
        "events/house": _events(
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
        "model/house": _model("pi-02", 28, 11, 150, 1200.0),
        "feedback/house": _feedback("pi-02", 28, 11, range(50), 310_000.0),
        "model/counter": _counter("pi-02", 28, 11, 30),
        "events/house": _events("pi-02", [(_ns(28, 11, 100), "sqft", "check")]),
        "system": _system("pi-02", 28, [60.0, 61.0, 62.5]),
    }
    _device(root, base / "pi2.db", "pi-02", pi2, {("model", "sampled"): 5})
    return root


EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "per-device": [
        ("pi-00", dt.date(2026, 11, 26), 40),
        ("pi-01", dt.date(2026, 11, 27), 300),
        ("pi-01", dt.date(2026, 11, 28), 200),
        ("pi-02", dt.date(2026, 11, 28), 180),
    ],
    "per-model": [
        ("pi-00", "house", "", 40),
        ("pi-01", "house", "1.0", 450),
        ("pi-01", "house", "1.1", 50),
        ("pi-02", "counter", "2", 30),
        ("pi-02", "house", "", 150),
    ],
    "open-drift": [("pi-00", "house", "sqft", "ks"), ("pi-01", "house", "sqft", "ks")],
    "hourly": [(10, 300, 1500.0, 375000.0), (9, 200, 1800.0, 450000.0)],
    "drops": [("pi-01", "model", "ring_overrun", 7), ("pi-02", "model", "sampled", 5)],
    "last-system": [("pi-01", 41.0, 20.0, 53.5), ("pi-02", 42.0, 20.0, 62.5)],
    "ground-truth": [("pi-02", "house", 50, 10_000.0, 60.0)],
}


def _duckdb_blocks() -> dict[str, str]:
    text = (DOCS / "fleet.md").read_text(encoding="utf-8")
    found = re.findall(r"<!-- test: duckdb ([\w-]+) -->\s*```sql\n(.*?)```", text, flags=re.S)
    return dict(found)


def test_fleet_md_has_the_tested_duckdb_queries() -> None:
    assert set(_duckdb_blocks()) == set(EXPECTED)


def run_fleet_query(name: str, tree: Path) -> list[Any]:
    """The rows of fleet.md's DuckDB query ``name`` over the sink tree ``tree``."""
    duckdb = pytest.importorskip("duckdb")
    sql = _duckdb_blocks()[name].replace("'sink/", f"'{tree.as_posix()}/")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return list(con.execute(sql).fetchall())
    finally:
        con.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fleet_md_duckdb_query(name: str, fleet_tree: Path) -> None:
    rows = run_fleet_query(name, fleet_tree)
    got = [_simplify(name, r) for r in rows]
    assert got == EXPECTED[name], f"fleet.md query {name!r} returned {rows}"


def _simplify(name: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Keep the columns the expectation checks, in a comparable form."""
    if name == "open-drift":
        return row[:4]
    if name == "hourly":
        return (row[0].hour, row[1], round(row[2], 6), round(row[3], 6))
    if name == "last-system":
        return (row[0], row[2], row[3], row[4])
    return tuple(row)


def test_fleet_md_summary_is_what_it_prints(tmp_path: Path) -> None:
    """The morning command's output and the JSON excerpt: the simulated fleet they came from.

    Regenerate with ``benchmarks/fleet_sim.py --devices 10 --days 2`` and
    ``edge-actors fleet summary --source DIR/sink --as-of END`` (text and json).
    """
    pytest.importorskip("duckdb")
    sim = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "fleet_sim.py"),
            "--devices",
            "10",
            "--days",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sim.returncode == 0, sim.stderr
    manifest = json.loads(sim.stdout)
    command, *shown = _one_block_of("$ edge-actors fleet summary ").splitlines()
    source = "s3://my-telemetry-bucket/edge-fleet/"
    assert command == f"$ edge-actors fleet summary --source {source} --since 24h"
    args = [
        "fleet",
        "summary",
        "--source",
        manifest["sink"],
        "--since",
        "24h",
        "--as-of",
        manifest["end"],
    ]
    text = _cli(*args)
    assert text.returncode == 0, text.stderr
    real = text.stdout.replace(f"({manifest['sink']})", f"({source})").splitlines()
    assert real == shown
    js = _cli(*args, "--format", "json")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    excerpt = json.loads(_one_block_of('{"attention": ['))
    assert excerpt == {"attention": doc["attention"][:2], "totals": doc["totals"]}


def _one_block_of(first_line: str) -> str:
    blocks = [b for md in WALKED for _lang, b in _fenced(md) if b.startswith(first_line)]
    assert len(blocks) == 1, first_line
    return blocks[0]


# ------------------------------------------------- README and docs, block by block
#
# Every fenced block of README.md and docs/*.md (but the generated reference
# and performance pages) is either run here
# (Python snippets, commands) or compared with what the real program prints
# (the demo's lines, status, stats(), an uploaded object). A new block fails
# test_every_block_is_tested until a test below claims it.

WALKED = (
    REPO / "README.md",
    DOCS / "quickstart.md",
    DOCS / "operations.md",
    DOCS / "fleet.md",
    DOCS / "design.md",
)
DEMO_VAR = "var"


def _fenced(md: Path) -> list[tuple[str, str]]:
    """``(lang, body)`` of every fenced block of ``md``."""
    text = md.read_text(encoding="utf-8")
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)]


#: First line of each block -> the test that runs or checks it.
CLAIMS = {
    "make run     # ": "test_make_targets_do_what_the_docs_say",
    " ML application process(es)": "a diagram",
    "import numpy as np": "test_python_snippets_run",
    "from edge_actors import EdgeMonitor": "test_python_snippets_run",
    "import edge_actors": "test_python_snippets_run",
    "agent pid ": "test_demo_output_is_what_make_run_prints",
    "{'attached'": "test_python_snippets_run",
    "edge-actors run -c CONFIG": "test_command_line_block_runs",
    "$ edge-actors status": "test_status_block_is_what_status_prints",
    "var/agent.log ": "test_data_tree_is_what_the_demo_writes",
    "$ zcat ": "test_zcat_example_is_a_real_object",
    # docs/operations.md
    "run_dir: /run/edge-actors": "test_operations_md_systemd_directories_load",
    "segment bytes = 4096": "test_operations_md_segment_size_is_the_rings",
    "ShmError [Errno 28]": "test_operations_md_shm_error_is_the_real_message",
    "docker run -d --name edge-agent": "test_operations_md_docker_commands_are_consistent",
    "from edge_mlops_monitor import": "test_operations_md_upgrade_imports_work",
    # docs/fleet.md
    "$ edge-actors fleet summary ": "test_fleet_md_summary_is_what_it_prints",
    '{"attention": [': "test_fleet_md_summary_is_what_it_prints",
    "{prefix}{stream}/device=": "test_fleet_md_key_layout_is_object_key",
    "SELECT regexp_extract(filename, '/device=([^/]+)/', 1) AS device,": (
        "test_fleet_md_duckdb_query"
    ),
    "SELECT date_trunc('hour', time)": "test_fleet_md_duckdb_query",
    "SELECT m.device_id AS device, m.model, count(*)": "test_fleet_md_duckdb_query",
    "SELECT device, stream, reason": "test_fleet_md_duckdb_query",
    "SELECT device, time, mem_percent": "test_fleet_md_duckdb_query",
    "SELECT p.payload.input_id": "tests/test_compat.py (fleet_caller_id_query)",
    "CREATE EXTERNAL TABLE edge_model": "test_fleet_md_athena_tables_match_the_records",
    "SELECT device, feature, test, max(": "test_fleet_md_athena_tables_match_the_records",
    "df = (spark.read": "test_fleet_md_spark_snippet_is_consistent",
    "spark-submit --master yarn": "tests/test_fleet_spark.py (spark_submit_runs_the_module)",
    # docs/design.md
    " ML application                     edge-actors run": "a diagram",
}


def _claim(body: str) -> str | None:
    first = body.splitlines()[0] if body else ""
    return next((t for prefix, t in CLAIMS.items() if first.startswith(prefix)), None)


def test_every_block_is_tested() -> None:
    unclaimed = [
        f"{md.name}: {body.splitlines()[0] if body else '(empty)'}"
        for md in WALKED
        for _lang, body in _fenced(md)
        if _claim(body) is None
    ]
    assert not unclaimed, "blocks no test runs or checks:\n" + "\n".join(unclaimed)
    fenced = {md for md in [REPO / "README.md", *DOCS.glob("*.md")] if _fenced(md)}
    assert fenced <= set(WALKED), f"add to WALKED: {sorted(p.name for p in fenced - set(WALKED))}"


def _blocks_of(test: str) -> list[tuple[Path, str, str]]:
    return [(md, lang, body) for md in WALKED for lang, body in _fenced(md) if _claim(body) == test]


def test_make_targets_do_what_the_docs_say() -> None:
    """``make run`` and ``make test`` as the README says (dry-run: the suite runs them for real)."""
    blocks = _blocks_of("test_make_targets_do_what_the_docs_say")
    assert len(blocks) == 2
    env = {**os.environ, "MAKEFLAGS": ""}
    # -B: as from a fresh clone, every install step shown.
    run = subprocess.run(
        ["make", "-n", "-B", "run"], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    # The demo with the default config, after installing the runtime + report extra only.
    assert "examples/run_demo.py -c configs/default.yaml" in run.stdout
    assert "-e '.[report]'" in run.stdout, run.stdout
    assert "[test]" not in run.stdout and ",test]" not in run.stdout, run.stdout
    fresh0 = subprocess.run(
        ["make", "-n", "run", "FRESH=0"], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert "--keep-state" in fresh0.stdout and "--keep-state" not in run.stdout
    test = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, env=env)
    assert test.returncode == 0, test.stderr
    for part in ("lint", "test-main", "test313"):
        assert part in test.stdout


def test_readme_command_line_summary_parses() -> None:
    """The README's one-paragraph command list: each command as written is accepted."""
    from edge_actors.cli import build_parser

    text = (REPO / "README.md").read_text(encoding="utf-8")
    para = text[text.index("Command line:") :].split("\n\n")[0]
    commands = re.findall(r"`([a-z][^`]*)`", para)
    assert len(commands) >= 7, commands
    parser = build_parser()
    for command in commands:
        words = [w for w in command.replace("[--json]", "--json").split() if w != "edge-actors"]
        try:
            parser.parse_args(words)
        except SystemExit as exc:  # argparse's usage error
            raise AssertionError(f"README: `{command}` is not a valid command") from exc


@dataclass
class Demo:
    """``make run``'s demo (examples/run_demo.py) running with the default config."""

    var: Path
    proc: subprocess.Popen[str]
    lines: list[str]
    config: Path


def _demo_uploaded(line: str) -> bool:
    """A status line of a running agent (no state shown) that has uploaded records."""
    return re.search(r"drift: [\w ,+]+ \| outbox \d+ \| sent [1-9]\d* in \d+$", line) is not None


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    base = Path(tempfile.mkdtemp(prefix="ead"))
    var = base / DEMO_VAR
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples" / "run_demo.py"),
            "-c",
            str(REPO / "configs" / "default.yaml"),
            "--var",
            str(var),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=base,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any(_demo_uploaded(ln) for ln in lines):
            assert proc.poll() is None, "\n".join(lines)
            assert time.monotonic() < deadline, "no upload within 90 s:\n" + "\n".join(lines)
            time.sleep(0.2)
        yield Demo(var, proc, lines, var / "demo.yaml")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        shutil.rmtree(base, ignore_errors=True)


def _app_dir(demo: Demo, tmp_path: Path) -> Path:
    """A folder where ``configs/default.yaml`` is the demo's config (its instance, its paths)."""
    (tmp_path / "configs").mkdir()
    shutil.copy(demo.config, tmp_path / "configs" / "default.yaml")
    return tmp_path


def test_python_snippets_run(demo: Demo, tmp_path: Path) -> None:
    """Each snippet runs as written next to the demo's agent; ``print(...)  # X`` prints X."""
    cwd = _app_dir(demo, tmp_path)
    blocks = _blocks_of("test_python_snippets_run")
    snippets = [(md, body) for md, lang, body in blocks if lang == "python"]
    assert len(snippets) == 4
    for md, body in snippets:
        r = subprocess.run(
            [sys.executable, "-c", body], cwd=cwd, capture_output=True, text=True, timeout=120
        )
        where = f"{md.name} snippet {body.splitlines()[0]!r}"
        assert r.returncode == 0, f"{where}:\n{r.stderr}"
        expected = [m[1].strip() for m in re.finditer(r"^print\(.*\)\s+#\s*(.+)$", body, re.M)]
        if expected:
            assert r.stdout.splitlines() == expected, f"{where}:\n{r.stdout}"
        if "print(producer.stats())" in body:
            # The stats() shown after the snippet: same keys, the records written.
            shown = [b for _md, lang, b in blocks if b.startswith("{'attached'")]
            assert len(shown) == 1
            doc = ast.literal_eval(shown[0])
            real = ast.literal_eval(r.stdout.strip().splitlines()[-1])
            assert set(real) == set(doc) and set(real["dropped"]) == set(doc["dropped"])
            assert real["written"] == doc["written"] and real["dropped_total"] == 0, r.stdout
            assert real["attached"] is True


def _general(line: str) -> str:
    """A line with its numbers and instance name generalized, for comparing shapes."""
    line = re.sub(r"demo[0-9a-f]{8}", "INSTANCE", line)
    line = re.sub(r"\d+(\.\d+)?", "N", re.sub(r" +", " ", line))
    return re.sub(
        r"drift: [\w, +]+? \|",
        "drift: FEATURES |",
        line.replace("drift: no drift |", "drift: FEATURES |"),
    )


def test_demo_output_is_what_make_run_prints(demo: Demo) -> None:
    blocks = _blocks_of("test_demo_output_is_what_make_run_prints")
    assert len(blocks) == 1
    real = {_general(ln) for ln in demo.lines}
    # The lines of the shutdown come after this test: their shape, from run_demo's code.
    real |= {
        "model stopped: N records written",
        "stopping the agent (up to Ns)...",
        "agent exited with code N; log: var/agent.log",
    }
    real = {ln.replace(str(demo.var), DEMO_VAR) for ln in real}
    doc = [ln for ln in blocks[0][2].splitlines() if ln not in ("...", "^C")]
    odd = [ln for ln in doc if _general(ln) not in real]
    assert not odd, "lines make run does not print like this:\n" + "\n".join(odd)
    status_lines = [ln for ln in doc + demo.lines if ln.startswith("[")]
    assert status_lines and all(len(ln) <= 80 for ln in status_lines)


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_actors", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_block_is_what_status_prints(demo: Demo) -> None:
    blocks = _blocks_of("test_status_block_is_what_status_prints")
    assert len(blocks) == 1
    command, *doc = blocks[0][2].splitlines()
    assert command == "$ edge-actors status -c var/demo.yaml"
    r = _cli("status", "-c", "var/demo.yaml", cwd=demo.var.parent)
    assert r.returncode == 0, r.stderr
    real = r.stdout.splitlines()
    # Same sections and column headers, in the same order.
    heads = [ln for ln in doc if ln and not ln.startswith(" ") and not ln.startswith("ea_")]
    real_heads = [ln for ln in real if ln and not ln.startswith(" ") and not ln.startswith("ea_")]
    heads = [_general(h).split(" ")[0] for h in heads]
    assert heads == [_general(h).split(" ")[0] for h in real_heads], r.stdout
    # A drift line as status prints it (statistic / threshold, p, W1 for KS, PSI).
    num = r"[\d.e+-]+"
    tested = rf"(ks {num} / {num}, p={num}, W1 {num}|chi2 {num} / {num}, p={num}), PSI {num}"
    shape = rf"  \w+: (ok|drift) \((no data yet|{tested})\)"
    drift_doc = doc[doc.index("drift:") + 1 : doc.index("", doc.index("drift:"))]
    drift_real = real[real.index("drift:") + 1 : real.index("", real.index("drift:"))]
    assert drift_doc and all(re.fullmatch(shape, ln) for ln in drift_doc), drift_doc
    assert all(re.fullmatch(shape, ln) for ln in drift_real), drift_real
    assert "None" not in r.stdout


def test_command_line_block_runs(demo: Demo, tmp_path: Path) -> None:
    """Each command of the quick start's list, with its placeholders filled in."""
    blocks = _blocks_of("test_command_line_block_runs")
    assert len(blocks) == 1
    other = tmp_path / "other.yaml"
    cfg = yaml.safe_load(demo.config.read_text())
    cfg.update(instance=f"{cfg['instance'][:10]}b", run_dir=str(tmp_path / "run"))
    cfg["data_dir"] = str(tmp_path / "data")
    other.write_text(yaml.safe_dump(cfg))
    subst = {
        "CONFIG": str(demo.config),
        "FILE": str(demo.config),
        "INPUT": str(REPO / "examples" / "house_reference.json"),
        "reference.npz": str(tmp_path / "reference.npz"),
        "report.html": str(tmp_path / "report.html"),
    }
    seen = []
    for raw in blocks[0][2].splitlines():
        line = raw.split("#")[0].strip()
        words = line.split()
        assert words[0] == "edge-actors", raw
        variants = [words]
        if "[--json]" in words:
            plain = [w for w in words if w != "[--json]"]
            variants = [plain, [*plain, "--json"]]
        for argv in variants:
            args = [subst.get(w, w) for w in argv[1:]]
            if args[0] == "run":
                # Its own agent (the demo's runs already), stopped by `stop` below.
                args[args.index(str(demo.config))] = str(other)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edge_actors", *args],
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                seen.append("run")
                continue
            if args[0] == "stop":
                args[args.index(str(demo.config))] = str(other)
                deadline = time.monotonic() + 30
                while _cli("status", "-c", str(other)).returncode != 0:
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.2)
            r = _cli(*args)
            assert r.returncode == 0, f"{raw}: {r.stdout}{r.stderr}"
            seen.append(args[0])
    assert proc.wait(30) == 0
    assert seen == ["run", "status", "status", "stop", "check-config"] + ["reference"] * 2 + [
        "report"
    ]
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_data_tree_is_what_the_demo_writes(demo: Demo) -> None:
    blocks = _blocks_of("test_data_tree_is_what_the_demo_writes")
    assert len(blocks) == 1
    names = [ln.split()[0] for ln in blocks[0][2].splitlines() if ln.startswith("var/")]
    assert names
    missing = [n for n in names if not (demo.var.parent / n).exists()]
    assert not missing, missing
    keys = re.findall(r"^  (\w+)/device=", blocks[0][2], flags=re.M)
    real = {p.name for p in (demo.var / "sink").iterdir()}
    assert set(keys) >= real and "model" in real, real


KEY_RE = (
    r"var/sink/model/device=([\w-]+)/date=(\d{4}-\d\d-\d\d)/model=([\w.-]+)/"
    r"(\d{20})-(\d{20})\.ndjson\.gz"
)


def test_zcat_example_is_a_real_object(demo: Demo) -> None:
    blocks = _blocks_of("test_zcat_example_is_a_real_object")
    assert len(blocks) == 1
    command, line = blocks[0][2].splitlines()
    m = re.fullmatch(rf"\$ zcat ({KEY_RE}) \| head -1", command)
    assert m is not None, command
    doc = json.loads(line)
    objects = sorted((demo.var / "sink" / "model").rglob("*.ndjson.gz"))
    assert objects
    rel = objects[0].relative_to(demo.var.parent).as_posix()
    real_m = re.fullmatch(KEY_RE, rel)
    assert real_m is not None, rel
    r = subprocess.run(
        f"zcat {rel} | head -1", shell=True, cwd=demo.var.parent, capture_output=True, text=True
    )
    real = json.loads(r.stdout)
    assert list(real) == list(doc)
    # The key names the first and last seq of the object, 20 digits each.
    assert doc["seq"] == int(m[5]) and real["seq"] == int(real_m[4])
    assert doc["model"] == m[4] and real["model"] == real_m[3]
    assert len(str(doc["seq"])) == len(str(real["seq"])), (doc["seq"], real["seq"])
    assert doc["device_id"] == m[2] and real["device_id"] == real_m[1]
    assert doc["lane"].startswith("ea_demo") and real["lane"].startswith("ea_demo")


# ------------------------------------------------- operations.md, fleet.md, design.md, the unit
#
# Run here: CLI command lines (parsed by the real parser, or run against the
# demo's agent), Python snippets, the sqlite3 inspection command, systemd's
# own check of the unit. Not run here (no Docker daemon, Athena, Spark, S3):
# checked for consistency with the code, the config schema and each other.


def _one_block(test: str) -> str:
    blocks = _blocks_of(test)
    assert len(blocks) == 1, [b[0].name for b in blocks]
    return blocks[0][2]


def _unit() -> str:
    return (DOCS / "edge-actors.service").read_text(encoding="utf-8")


def _unit_setting(name: str) -> str:
    m = re.search(rf"^{name}=(.*)$", _unit(), flags=re.M)
    assert m is not None, name
    return m[1].strip()


def test_operations_md_systemd_directories_load(tmp_path: Path) -> None:
    """The run_dir/data_dir block loads as a config, and names what the unit creates."""
    block = _one_block("test_operations_md_systemd_directories_load")
    doc = yaml.safe_load(block)
    cfg_doc = {**yaml.safe_load((REPO / "configs" / "default.yaml").read_text()), **doc}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg_doc))
    cfg = load_config(tmp_path / "config.yaml")
    assert Path(cfg.run_dir) == Path("/run/edge-actors")
    assert Path(cfg.data_dir) == Path("/var/lib/edge-actors")
    # Each line's comment names the unit setting that creates that directory.
    for line in block.splitlines():
        m = re.fullmatch(r"(\w+): (\S+)\s+# (\w+=\S+)", line)
        assert m is not None, line
        key, value, setting = m.groups()
        name, _, arg = setting.partition("=")
        assert _unit_setting(name) == arg
        root = {"RuntimeDirectory": "/run", "StateDirectory": "/var/lib"}[name]
        assert value == f"{root}/{arg}"
        # The unit's own header comment says the same.
        assert re.search(rf"^#\s+{key}: {re.escape(value)}\s", _unit(), flags=re.M), key


def test_operations_md_segment_size_is_the_rings() -> None:
    block = _one_block("test_operations_md_segment_size_is_the_rings")
    assert "4096 (header) + capacity \u00d7 slot" in block
    assert "8 (stamp) + record size, rounded up to a multiple of 8" in block
    cfg = load_config(REPO / "configs" / "default.yaml")
    for kind in ("system", "procs", "events", "lane", "payload"):
        dtype, cap = dtype_for(kind, cfg), capacity_for(kind, cfg)
        slot = -(-(8 + dtype.itemsize) // 8) * 8
        assert Ring.layout_size(dtype, cap)[1] == 4096 + cap * slot, kind


def test_operations_md_shm_error_is_the_real_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message of a full /dev/shm. Filling the shared /dev/shm for real would
    hurt every other process on the box: posix_fallocate is made to fail instead."""
    import errno

    from edge_actors import shm

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    name = f"ea_doctest{os.getpid()}"
    with pytest.raises(shm.ShmError) as info:
        shm.create(name, 8192)
    assert not Path("/dev/shm", name).exists()
    real = f"{type(info.value).__name__} {info.value}"
    (doc,) = _one_block("test_operations_md_shm_error_is_the_real_message").splitlines()
    doc = re.sub(r"'ea_\w+' \(\d+ bytes\)", f"'{name}' (8192 bytes)", doc)
    assert doc == real


def _shell_lines(block: str) -> list[list[str]]:
    import shlex

    return [shlex.split(cmd) for cmd in block.replace("\\\n", " ").splitlines() if cmd.strip()]


def test_operations_md_docker_commands_are_consistent() -> None:
    """Not run (no Docker daemon here): the options exist, the two containers share
    what the bullets above say, and the agent's command line is a valid one."""
    from edge_actors.cli import build_parser

    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    agent, model = _shell_lines(_one_block("test_operations_md_docker_commands_are_consistent"))
    assert agent[:3] == model[:3] == ["docker", "run", "-d"]

    def options(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
        opts: dict[str, list[str]] = {}
        i = 3
        while argv[i].startswith("-"):
            name, eq, value = argv[i].partition("=")
            if not eq:
                i += 1
                value = argv[i]
            opts.setdefault(name, []).append(value)
            i += 1
        return opts, argv[i:]

    a_opts, a_rest = options(agent)
    m_opts, m_rest = options(model)
    name = a_opts["--name"][0]
    assert a_opts["--ipc"] == ["shareable"] and "--shm-size" in a_opts
    assert m_opts["--ipc"] == m_opts["--pid"] == [f"container:{name}"]
    assert a_opts["--user"] == m_opts["--user"] == ["1000:1000"]
    run_dir, data_dir = "/run/edge-actors", "/var/lib/edge-actors"
    a_vols = dict(v.split(":", 1) for v in a_opts["-v"])
    m_vols = dict(v.split(":", 1) for v in m_opts["-v"])
    assert a_vols["edge-run"] == m_vols["edge-run"] == run_dir  # the control socket
    assert a_vols["edge-data"] == data_dir
    assert a_opts["--stop-timeout"] == [_unit_setting("TimeoutStopSec")]
    # The image must own the volumes' folders for that uid (the bullet above the block).
    assert f"chown 1000:1000 {run_dir} {data_dir}" in text
    _image, *command = a_rest
    assert command[0] == "edge-actors"
    args = build_parser().parse_args(command[1:])
    assert args.command == "run"
    assert any(args.config.startswith(v.split(":")[1] + "/") for v in a_opts["-v"][2:])
    assert len(m_rest) == 1  # the application image runs its own entry point
    docker = shutil.which("docker")
    if docker is not None:  # the client parses options without a daemon
        helptext = subprocess.run([docker, "run", "--help"], capture_output=True, text=True)
        for opt in {*a_opts, *m_opts}:
            assert re.search(rf"(^|\s){re.escape(opt)}[\s=,]", helptext.stdout), opt


def test_operations_md_upgrade_imports_work() -> None:
    """The ``# after`` imports run (the ``# before`` ones need the seed, not installed)."""
    lines = _one_block("test_operations_md_upgrade_imports_work").splitlines()
    code = [ln.split("#")[0].strip() for ln in lines]
    after = [c for c, ln in zip(code, lines, strict=True) if "# after" in ln]
    before = [c for c, ln in zip(code, lines, strict=True) if "# before" in ln]
    assert len(after) == len(before) == 2
    # Same names, other module.
    assert [b.split(" import ")[1] for b in before] == [a.split(" import ")[1] for a in after]
    # "(also A, B, ...)": more of edge_actors.compat's exports, in the comments.
    comments = " ".join(ln.partition("#")[2] for ln in lines)
    also = re.search(r"\(also ([^)]*)\)", comments)
    assert also is not None
    names = ", ".join(" ".join(n.split()) for n in also[1].split(","))
    program = "\n".join([*after, f"from edge_actors.compat import {names}"])
    r = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert r.returncode == 0, program + "\n" + r.stderr


def test_operations_md_sqlite_inspection_runs_next_to_the_agent(demo: Demo) -> None:
    """``sqlite3 outbox.db 'select ...'`` while the agent runs (WAL lets a reader in)."""
    import shlex

    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    m = re.search(r"`(sqlite3 outbox\.db '[^`]*')`", text)
    assert m is not None
    argv = shlex.split(" ".join(m[1].split()))
    cfg = load_config(demo.config)
    assert Path(cfg.storage.sqlite_path).name == argv[1]
    if shutil.which("sqlite3") is None:
        import sqlite3

        conn = sqlite3.connect(f"file:{cfg.storage.sqlite_path}?mode=ro", uri=True)
        try:
            rows = conn.execute(argv[2]).fetchall()
        finally:
            conn.close()
    else:
        r = subprocess.run(
            ["sqlite3", cfg.storage.sqlite_path, argv[2]], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        rows = [tuple(ln.split("|")) for ln in r.stdout.splitlines()]
    # One stream per model: model/<name> (fleet.md, key layout).
    kinds = {str(row[0]).split("/")[0] for row in rows}
    assert rows and kinds >= {"model", "system"}, rows


def test_docs_command_lines_parse() -> None:
    """Every ``edge-actors ...`` in operations.md, fleet.md, design.md and the unit is valid."""
    from edge_actors.cli import build_parser

    parser = build_parser()
    found = []
    for md in (DOCS / "operations.md", DOCS / "fleet.md", DOCS / "design.md"):
        text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
        found += [(md.name, c) for c in re.findall(r"`edge-actors ([^`|]*)", text)]
    unit_cmd = _unit_setting("ExecStart").split()
    assert Path(unit_cmd[0]).name == "edge-actors"
    found.append(("edge-actors.service", " ".join(unit_cmd[1:])))
    assert len(found) >= 5, found
    commands = {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }
    for where, command in found:
        words = [{"CONFIG": "c.yaml"}.get(w, w) for w in command.split()]
        if len(words) == 1:  # a command named in the text ("run `edge-actors run` as PID 1")
            assert words[0] in commands, f"{where}: no command `edge-actors {command}`"
            continue
        try:
            parser.parse_args(words)
        except SystemExit as exc:
            raise AssertionError(f"{where}: `edge-actors {command}` is not valid") from exc


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the unit as shipped, its ExecStart pointed at this
    checkout's ``edge-actors`` (the shipped path is the installed one)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (the ExecStart line is still parsed)")
    exe = Path(sys.executable).parent / "edge-actors"
    assert exe.exists(), exe
    unit = _unit().replace("/opt/edge-actors/.venv/bin/edge-actors", str(exe), 1)
    path = tmp_path / "edge-actors.service"
    path.write_text(unit, encoding="utf-8")
    r = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too, warning on stderr.
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if str(path.name) in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def _fleet_block(test: str) -> list[str]:
    return [b for _md, _lang, b in _blocks_of(test)]


def test_fleet_md_key_layout_is_object_key() -> None:
    from edge_actors.keys import object_key
    from edge_actors.workers.uploader import UPLOAD_ORDER

    # A model's streams (model=), then the others (and every stream of an older agent).
    with_model, without = _one_block("test_fleet_md_key_layout_is_object_key").splitlines()
    for template, model in ((with_model, "house"), (without, None)):
        made = template.replace("YYYY-MM-DD", "{date}").format(
            prefix="edge-fleet/",
            stream="model",
            device_id="pi-01",
            date="2026-11-28",
            model=model,
            first_seq=5,
            last_seq=1764331091000000000,
        )
        assert made == object_key(
            "edge-fleet/", "model", "pi-01", dt.date(2026, 11, 28), 5, 1764331091000000000, model
        )
    text = (DOCS / "fleet.md").read_text(encoding="utf-8")
    line = re.search(r"^- `stream`: (.*?)\.$", text, flags=re.M | re.S)
    assert line is not None
    assert sorted(re.findall(r"`(\w+)`", line[1])) == sorted(UPLOAD_ORDER)


def test_fleet_md_drop_reasons_are_the_outbox_reasons() -> None:
    from edge_actors.outbox import DROP_REASONS

    text = (DOCS / "fleet.md").read_text(encoding="utf-8")
    m = re.search(r"\*\*`drops`\*\*: `stream`, `reason` \(([^)]*)\)", text)
    assert m is not None
    assert sorted(re.findall(r"`(\w+)`", m[1])) == sorted(DROP_REASONS)


def _athena_tables() -> dict[str, tuple[list[str], str, str]]:
    """``table -> (columns, LOCATION, storage.location.template)`` of fleet.md's DDL."""
    block = next(
        b for b in _fleet_block("test_fleet_md_athena_tables_match_the_records") if "CREATE" in b
    )
    tables = {}
    for m in re.finditer(
        r"CREATE EXTERNAL TABLE (\w+) \((.*?)\)\nPARTITIONED BY(.*?);", block, flags=re.S
    ):
        cols = re.sub(r"<[^>]*>", "", m[2])  # struct<...> bodies
        names = [c.strip().split()[0].strip("`") for c in cols.split(",") if c.strip()]
        location = re.search(r"LOCATION '([^']+)'", m[3])
        template = re.search(r"'storage.location.template' =\s*'([^']+)'", m[3])
        assert location and template
        tables[m[1]] = (names, location[1], template[1])
    return tables


def test_fleet_md_athena_tables_match_the_records(fleet_tree: Path) -> None:
    """Not run (no Athena here): the DDL's columns are the fields of real records, its
    locations follow the key layout, the example query uses columns the table has."""
    import gzip

    tables = _athena_tables()
    assert set(tables) == {"edge_model", "edge_events"}
    for table, (columns, location, template) in tables.items():
        stream = table.removeprefix("edge_")
        fields: set[str] = set()
        for path in (fleet_tree / stream).rglob("*.ndjson.gz"):
            for line in gzip.decompress(path.read_bytes()).splitlines():
                fields |= set(json.loads(line))
        assert set(columns) == fields, (table, set(columns) ^ fields)
        assert location == f"s3://my-telemetry-bucket/edge-fleet/{stream}/"
        assert template == location + "device=${device}/date=${date}/"
    block = _fleet_block("test_fleet_md_athena_tables_match_the_records")[0]
    structs = dict(re.findall(r"(inputs|outputs) struct<([^>]*)>", block))
    cfg = load_config(REPO / "configs" / "default.yaml")
    for side in ("inputs", "outputs"):
        names = [f.split(":")[0].strip() for f in structs[side].split(",")]
        assert names == [f.name for f in getattr(cfg.model, side)], side
    query = next(
        b
        for b in _fleet_block("test_fleet_md_athena_tables_match_the_records")
        if "CREATE" not in b
    )
    used = set(re.findall(r'"(\w+)"|\b(device|feature|test|state)\b', query)) - {("", "")}
    words = {a or b for a, b in used}
    assert words <= {*tables["edge_events"][0], "device", "date"}, words
    assert "FROM edge_events" in query


def test_fleet_md_spark_snippet_is_consistent() -> None:
    """Not run (no Spark or s3a here): Python that parses, reading stream prefixes of
    the same bucket as the Athena tables and the ``aws s3 sync`` line."""
    from edge_actors.workers.uploader import UPLOAD_ORDER

    block = _one_block("test_fleet_md_spark_snippet_is_consistent")
    tree = ast.parse(block)
    urls = {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and str(n.value).startswith("s3a://")
    }
    assert urls
    for url in urls:
        m = re.fullmatch(r"s3a://my-telemetry-bucket/edge-fleet/(\w+)/", url)
        assert m is not None and m[1] in UPLOAD_ORDER, url
    text = (DOCS / "fleet.md").read_text(encoding="utf-8")
    assert "`aws s3 sync s3://my-telemetry-bucket/edge-fleet/ sink/`" in text
    columns = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("groupBy", "orderBy", "select"):
                columns |= {a.value for a in node.args if isinstance(a, ast.Constant)}
            if node.func.attr == "filter":
                arg = node.args[0]
                assert isinstance(arg, ast.Constant), ast.unparse(arg)
                columns |= set(re.findall(r"^(\w+) =", str(arg.value)))
    events = _athena_tables()["edge_events"][0]
    assert columns and columns <= {*events, "device", "date"}, columns


def test_docs_put_the_drift_checkpoint_where_the_worker_writes_it() -> None:
    """In ``data_dir`` (workers/drift.py); it once was in the tmpfs ``run_dir``, and
    design.md and the unit still said so."""
    texts = {
        p.name: p.read_text(encoding="utf-8")
        for p in (*DOCS.glob("*.md"), DOCS / "edge-actors.service")
    }
    for name, text in texts.items():
        flat = " ".join(text.split())
        for sentence in re.split(r"(?<=[.;:])\s", flat):
            if "checkpoint" in sentence and "drift" in sentence:
                assert "tmpfs" not in sentence and "run_dir" not in sentence, (name, sentence)


def test_design_md_names_modules_that_exist() -> None:
    """The module and package names in design.md (``outbox.py``, ``workers/``) exist."""
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    names = set(re.findall(r"`((?:[\w]+/)*[\w]+\.py|[\w]+/)`", text))
    assert len(names) >= 10, names
    missing = [
        n
        for n in sorted(names)
        if not (REPO / "edge_actors" / n).exists() and not (REPO / n).exists()
    ]
    assert not missing, missing


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
