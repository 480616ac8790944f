"""The docs stay true: generated reference up to date, fleet queries run, links resolve."""

from __future__ import annotations

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


# ------------------------------------------------- README and quick start, block by block
#
# Every fenced block of README.md and docs/quickstart.md is either run here
# (Python snippets, commands) or compared with what the real program prints
# (the demo's lines, status, stats(), an uploaded object). A new block fails
# test_every_block_is_tested until a test below claims it.

WALKED = (REPO / "README.md", DOCS / "quickstart.md")
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


KEY_RE = r"var/sink/model/device=([\w-]+)/date=(\d{4}-\d\d-\d\d)/(\d{20})-(\d{20})\.ndjson\.gz"


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
    assert doc["seq"] == int(m[4]) and real["seq"] == int(real_m[3])
    assert len(str(doc["seq"])) == len(str(real["seq"])), (doc["seq"], real["seq"])
    assert doc["device_id"] == m[2] and real["device_id"] == real_m[1]
    assert doc["lane"].startswith("ea_demo") and real["lane"].startswith("ea_demo")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
