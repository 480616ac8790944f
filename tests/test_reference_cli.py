"""``edge-actors reference build|show``, run as a real subprocess."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_actors.drift.reference import load_reference
from edge_actors.offline.reference_cli import ProgressBar
from tests.conftest import REPO, cli

FEATURES = ("bedrooms", "bathrooms", "sqft", "age", "price", "confidence")


def write_csv(path: Path, rows: int = 500, seed: int = 1) -> Path:
    """A CSV of the house model's six columns."""
    rng = np.random.default_rng(seed)
    lines = [",".join(FEATURES)]
    for _ in range(rows):
        bed = int(rng.integers(1, 6))
        sqft = rng.normal(1800, 400)
        lines.append(
            f"{bed},{bed / 2:.1f},{sqft:.1f},{rng.uniform(0, 80):.1f},"
            f"{100 * sqft:.0f},{rng.uniform(0.7, 0.95):.4f}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_build_from_csv_and_show(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "train.csv", rows=500)
    out = tmp_path / "ref.npz"
    r = cli("reference", "build", str(src), "-o", str(out), "--cap", "100", "--seed", "7")
    assert r.returncode == 0, r.stderr
    # stderr is a pipe, not a terminal: no progress bar, no log chatter.
    assert r.stderr == ""
    assert f"wrote {out}" in r.stdout
    ref = load_reference(out)
    assert sorted(ref.features) == sorted(FEATURES)
    for f in ref.features.values():
        assert f.kind == "numeric"
        assert f.n == 500
        assert f.sample_size == 100

    shown = cli("reference", "show", str(out))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"reference {out}: 6 features"
    for name in FEATURES:
        (line,) = [ln for ln in lines if ln.split()[0] == name]
        assert "numeric" in line and "n 500" in line and "sample 100" in line
    assert lines[-1] == f"hash {ref.content_hash}  format version 1"


def test_build_is_deterministic_per_seed(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "train.csv", rows=300)
    hashes = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / f"{name}.npz"
        r = cli("reference", "build", str(src), "-o", str(out), "--cap", "50", "--seed", seed)
        assert r.returncode == 0, r.stderr
        hashes.append(load_reference(out).content_hash)
    assert hashes[0] == hashes[1] != hashes[2]


def test_build_from_seed_json_with_config(tmp_path: Path, make_config: Callable[..., Path]) -> None:
    config = make_config()
    out = tmp_path / "house.npz"
    src = REPO / "examples" / "house_reference.json"
    r = cli("reference", "build", str(src), "-o", str(out), "-c", str(config))
    assert r.returncode == 0, r.stderr
    ref = load_reference(out)
    assert sorted(ref.features) == sorted(FEATURES)
    assert all(f.n == 5000 and f.sample_size == 5000 for f in ref.features.values())
    # The built file holds the same statistics as the JSON it came from.
    assert ref.content_hash == load_reference(src).content_hash
    shown = cli("reference", "show", str(out), "-c", str(config))
    assert shown.returncode == 0, shown.stderr
    for name in FEATURES:
        assert f"  {name} " in shown.stdout


def test_config_forces_kinds(tmp_path: Path, make_config: Callable[..., Path]) -> None:
    # "zip" looks numeric but the model declares it categorical.
    config = make_config(
        {
            "model": {
                "inputs": ["sqft", {"name": "zip", "type": "categorical", "categories": ["1"]}],
                "outputs": ["price"],
            }
        }
    )
    src = tmp_path / "t.csv"
    src.write_text("sqft,zip,price\n1000,1,100\n2000,2,200\n")
    out = tmp_path / "t.npz"
    r = cli("reference", "build", str(src), "-o", str(out), "-c", str(config))
    assert r.returncode == 0, r.stderr
    ref = load_reference(out)
    assert ref.features["zip"].kind == "categorical"
    assert ref.features["zip"].category_counts == {"1": 1, "2": 1}
    assert ref.features["sqft"].kind == "numeric"


def _error_cases(tmp: Path) -> list[tuple[list[str], str]]:
    """(arguments, exact stderr) pairs; files are created under ``tmp``."""
    empty = tmp / "empty.json"
    empty.write_text('{"sqft": []}')
    ragged = tmp / "ragged.csv"
    ragged.write_text("sqft,price\n1,2\n3\n")
    odd = tmp / "data.parquet"
    odd.write_text("x")
    garbage = tmp / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04not a zip at all")
    good = write_csv(tmp / "good.csv", rows=10)
    return [
        (
            ["build", str(tmp / "missing.csv"), "-o", str(tmp / "o.npz")],
            f"edge-actors: {tmp / 'missing.csv'}: file not found\n",
        ),
        (
            ["build", str(empty), "-o", str(tmp / "o.npz")],
            f"edge-actors: {empty}: feature 'sqft': no values (empty list)\n",
        ),
        (
            ["build", str(ragged), "-o", str(tmp / "o.npz")],
            f"edge-actors: {ragged}: line 3: expected 2 fields, got 1\n",
        ),
        (
            ["build", str(odd), "-o", str(tmp / "o.npz")],
            f"edge-actors: {odd}: cannot tell the format from the extension '.parquet': "
            "use .csv, .tsv, .ndjson, .jsonl, .npy or .json (or pass fmt)\n",
        ),
        (
            ["build", str(good), "-o", str(tmp / "no" / "such" / "dir.npz")],
            f"edge-actors: {tmp / 'no' / 'such' / 'dir.npz'}: directory "
            f"{tmp / 'no' / 'such'} does not exist\n",
        ),
        (
            ["show", str(tmp / "missing.npz")],
            f"edge-actors: {tmp / 'missing.npz'}: file not found\n",
        ),
        # The exact reason comes from the zip reader: checked loosely below.
        (["show", str(garbage)], ""),
    ]


def test_bad_inputs_exit_1_with_one_line(tmp_path: Path) -> None:
    for args, expected in _error_cases(tmp_path):
        r = cli("reference", *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stdout == "", args
        if expected:
            assert r.stderr == expected, args
        else:
            assert r.stderr.startswith(f"edge-actors: {args[1]}: "), r.stderr
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o.npz").exists()


def test_model_mismatch_is_reported_per_feature(
    tmp_path: Path, make_config: Callable[..., Path]
) -> None:
    config = make_config()
    src = tmp_path / "extra.csv"
    src.write_text("sqft,zzz\n1000,1\n2000,2\n")
    out = tmp_path / "extra.npz"
    r = cli("reference", "build", str(src), "-o", str(out), "-c", str(config))
    assert r.returncode == 1
    assert r.stderr == (
        f"edge-actors: {src}: feature 'zzz' is not declared by the model "
        "(declared: bedrooms, bathrooms, sqft, age, price, confidence)\n"
    )
    assert not out.exists(), "an invalid reference must not be written"

    # A value the config's kind refuses fails while reading.
    bad = tmp_path / "bad.csv"
    bad.write_text("sqft\n1000\nbig\n")
    r = cli("reference", "build", str(bad), "-o", str(out), "-c", str(config))
    assert r.returncode == 1
    assert r.stderr == f"edge-actors: {bad}: feature 'sqft': line 3: 'big' is not a number\n"


def test_show_with_config_mismatch(tmp_path: Path, make_config: Callable[..., Path]) -> None:
    config = make_config({"model": {"inputs": ["sqft"], "outputs": ["price"]}})
    src = tmp_path / "ref.json"
    src.write_text(json.dumps({"sqft": [1, 2], "rooms": [1, 2], "city": ["a", "b"]}))
    r = cli("reference", "show", str(src), "-c", str(config))
    assert r.returncode == 1
    # One line per problem, each self-contained.
    lines = r.stderr.splitlines()
    assert len(lines) == 2
    assert all(ln.startswith(f"edge-actors: {src}: feature ") for ln in lines)


def test_invalid_config_is_bad_input(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("workers: {drift: {memory_limit_mb: -5}}\n")
    src = write_csv(tmp_path / "t.csv", rows=5)
    r = cli("reference", "build", str(src), "-o", str(tmp_path / "o.npz"), "-c", str(config))
    assert r.returncode == 1
    assert r.stderr.startswith("edge-actors: invalid config:")
    assert "workers.drift.memory_limit_mb" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["build", "x.csv", "-o", "o.npz", "--cap", "0"],
        ["build", "x.csv", "-o", "o.npz", "--cap", "many"],
        ["build", "x.csv"],
        ["show"],
        [],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    r = cli("reference", *args)
    assert r.returncode == 2, r.stderr
    assert "usage: edge-actors reference" in r.stderr


@pytest.mark.parametrize("args", [[], ["build"], ["show"]])
def test_help(args: list[str]) -> None:
    r = cli("reference", *args, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: edge-actors reference {' '.join(args)}".rstrip())
    if args == ["build"]:
        for opt in ("-o", "--cap", "--seed", "-c"):
            assert opt in r.stdout
    top = cli("--help")
    assert "reference" in top.stdout


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_tty() -> None:
    tty = _Tty()
    bar = ProgressBar("reading x.csv", tty)
    for done in (0, 1 << 19, 1 << 19, 1 << 20, 2 << 20):
        bar(done, 2 << 20)
    bar.close()
    text = tty.getvalue()
    # One redraw per new percentage (the repeated 25 % is not drawn twice).
    assert text.count("\r") == 4
    assert "\rreading x.csv:   0% (0 B / 2.0 MB)" in text
    assert "\rreading x.csv:  25% (512.0 KB / 2.0 MB)" in text
    assert text.endswith("reading x.csv: 100% (2.0 MB / 2.0 MB)\n")

    pipe = io.StringIO()
    bar = ProgressBar("reading x.csv", pipe)
    bar(1, 2)
    bar.close()
    assert pipe.getvalue() == ""
