"""Tests for edge_actors.drift.reference: loading, saving, building and validating references."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_actors.config import FieldSpec, ModelConfig
from edge_actors.drift.reference import (
    FORMAT_VERSION,
    MAX_CATEGORIES,
    OTHER_CATEGORY,
    FeatureReference,
    Reference,
    ReferenceError,
    build_reference,
    describe_reference,
    load_reference,
    save_reference,
    validate_against_model,
)

SEED_JSON = {
    "bedrooms": [3, 2, 4, None, 3],
    "sqft": [1500.5, 900.0, 2100.25, 1800.0, 1200.0],
    "city": ["paris", "lyon", "paris", None, "nice"],
}


def write_json(tmp_path: Path, data: object, name: str = "ref.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(ReferenceError) as info:
        load_reference(path, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --------------------------------------------------------------------------- seed JSON


def test_load_seed_json(tmp_path: Path) -> None:
    ref = load_reference(write_json(tmp_path, SEED_JSON))
    assert set(ref.features) == {"bedrooms", "sqft", "city"}
    b = ref.features["bedrooms"]
    assert b.kind == "numeric"
    assert b.n == 4
    assert b.nan_rate == 0.2
    assert (b.min, b.max) == (2.0, 4.0)
    assert b.sorted_values.tolist() == [2.0, 3.0, 3.0, 4.0]
    assert b.sorted_values.dtype == np.float64
    assert not b.sorted_values.flags.writeable
    assert b.category_counts == {}
    c = ref.features["city"]
    assert c.kind == "categorical"
    assert c.category_counts == {"lyon": 1, "nice": 1, "paris": 2}
    assert c.n == 4 and c.nan_rate == 0.2
    assert c.sorted_values.size == 0 and math.isnan(c.min) and math.isnan(c.max)
    assert ref.format_version == FORMAT_VERSION
    assert len(ref.content_hash) == 16
    int(ref.content_hash, 16)


def test_round_trip_json_npz(tmp_path: Path) -> None:
    ref = load_reference(write_json(tmp_path, SEED_JSON))
    out = tmp_path / "ref.npz"
    save_reference(ref, out)
    again = load_reference(out)
    assert again == ref
    assert again.content_hash == ref.content_hash
    assert again.source == str(out)
    assert not (tmp_path / "ref.npz.tmp").exists()
    # The npz is pickle-free: every array loads with allow_pickle=False.
    with np.load(out, allow_pickle=False) as npz:
        assert npz["meta"].dtype == np.uint8


def test_npz_detected_by_content_not_name(tmp_path: Path) -> None:
    ref = load_reference(write_json(tmp_path, SEED_JSON))
    out = tmp_path / "reference.bin.npz"
    save_reference(ref, out)
    renamed = out.rename(tmp_path / "reference.data")
    assert load_reference(renamed) == ref


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.lists(st.one_of(finite, st.none()), min_size=1, max_size=40).filter(
            lambda xs: any(x is not None for x in xs)
        ),
        min_size=1,
        max_size=5,
    )
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, list[float | None]]
) -> None:
    d = tmp_path_factory.mktemp("rt")
    ref = load_reference(write_json(d, data))
    save_reference(ref, d / "r.npz")
    assert load_reference(d / "r.npz") == ref
    for name, values in data.items():
        present = [v for v in values if v is not None]
        f = ref.features[name]
        assert f.n == len(present)
        assert f.sorted_values.tolist() == sorted(float(v) for v in present)
        assert f.nan_rate == (len(values) - len(present)) / len(values)


def test_load_with_cap_keeps_exact_stats(tmp_path: Path) -> None:
    values = list(range(5000))
    ref = load_reference(write_json(tmp_path, {"x": values}), cap=100, seed=3)
    f = ref.features["x"]
    assert f.n == 5000 and f.sample_size == 100
    assert (f.min, f.max) == (0.0, 4999.0)


# --------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.json"
    assert error_of(p) == f"{p}: file not found"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": [1, 2,]}', "not valid JSON at line 1, column 13: Expecting value"),
        ('{\n"a": [1]\n"b": [2]}', "not valid JSON at line 3, column 1: Expecting ',' delimiter"),
        (
            "[1, 2]",
            "top level must be a JSON object mapping feature names to lists of values, got a list",
        ),
        ("{}", "no features (empty object)"),
        ('{"a": 5}', "feature 'a': values must be a list, got a number"),
        ('{"a": {"x": 1}}', "feature 'a': values must be a list, got an object"),
        ('{"a": []}', "feature 'a': no values (empty list)"),
        ('{"a": [null, null]}', "feature 'a': no values (only missing ones)"),
        ('{"a": [1, 2, "x"]}', "feature 'a': value at index 2 is not a number: \"x\""),
        ('{"a": [1, true]}', "feature 'a': value at index 1 is not a number: true"),
        ('{"a": [1, [2]]}', "feature 'a': value at index 1 is not a number: [2]"),
        (
            '{"c": ["x", 3]}',
            "feature 'c': value at index 1 is a number (3), expected a string "
            "(the feature's first value is a string)",
        ),
    ],
)
def test_bad_json(tmp_path: Path, text: str, reason: str) -> None:
    p = tmp_path / "ref.json"
    p.write_text(text)
    assert error_of(p) == f"{p}: {reason}"


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "ref.json"
    p.write_bytes(b'{"a": [1]}\xff')
    assert error_of(p) == f"{p}: not valid UTF-8 (byte 10)"


def _npz_with_meta(path: Path, meta: object) -> None:
    np.savez_compressed(
        path,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        v0=np.array([1.0, 2.0]),
    )


def test_npz_wrong_version(tmp_path: Path) -> None:
    p = tmp_path / "r.npz"
    _npz_with_meta(p, {"format_version": 99, "features": []})
    assert error_of(p) == (
        f"{p}: unsupported reference format version: found 99, supported {FORMAT_VERSION}"
    )


def test_npz_missing_version(tmp_path: Path) -> None:
    p = tmp_path / "r.npz"
    _npz_with_meta(p, {"features": []})
    assert error_of(p) == (
        f"{p}: unsupported reference format version: found none, supported {FORMAT_VERSION}"
    )


def test_npz_without_metadata(tmp_path: Path) -> None:
    p = tmp_path / "r.npz"
    np.savez_compressed(p, v0=np.array([1.0]))
    assert error_of(p) == f"{p}: corrupt reference file: no metadata"


def test_npz_truncated(tmp_path: Path) -> None:
    ref = load_reference(write_json(tmp_path, SEED_JSON))
    p = tmp_path / "r.npz"
    save_reference(ref, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert error_of(p).startswith(f"{p}: corrupt reference file: BadZipFile: ")


def test_npz_tampered_values_detected(tmp_path: Path) -> None:
    ref = load_reference(write_json(tmp_path, SEED_JSON))
    p = tmp_path / "r.npz"
    save_reference(ref, p)
    with np.load(p, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["v0"] = arrays["v0"] + 1
    np.savez_compressed(p, **arrays)
    msg = error_of(p)
    assert msg.startswith(f"{p}: corrupt reference file: content hash ")
    assert msg.endswith(f"does not match the stored {ref.content_hash}")


def test_npz_garbage_metadata(tmp_path: Path) -> None:
    p = tmp_path / "r.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("meta.npy", b"not an npy")
    assert error_of(p) == f"{p}: corrupt reference file: unreadable metadata"


# --------------------------------------------------------------------------- hash


def test_hash_is_pinned_and_stable_across_processes(tmp_path: Path) -> None:
    p = write_json(tmp_path, SEED_JSON)
    code = (
        "import sys; from edge_actors.drift.reference import load_reference; "
        "print(load_reference(sys.argv[1]).content_hash)"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code, str(p)], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert outs == {load_reference(p).content_hash}
    # Pinned: a change here changes every deployed reference's identity.
    assert load_reference(p).content_hash == PINNED_HASH


PINNED_HASH = "5011cf5b851eb312"


def test_hash_independent_of_key_order(tmp_path: Path) -> None:
    a = load_reference(write_json(tmp_path, SEED_JSON, "a.json"))
    b = load_reference(write_json(tmp_path, dict(reversed(SEED_JSON.items())), "b.json"))
    assert a.content_hash == b.content_hash


@pytest.mark.parametrize(
    "change",
    [
        {"bedrooms": [3, 2, 4, None, 3.5]},
        {"bedrooms": [3, 2, 4, 3]},
        {"city": ["paris", "lyon", "paris", None, "nice", "nice"]},
        {"extra": [1]},
    ],
)
def test_hash_changes_with_content(tmp_path: Path, change: dict[str, list[object]]) -> None:
    base = load_reference(write_json(tmp_path, SEED_JSON, "a.json"))
    changed = load_reference(write_json(tmp_path, {**SEED_JSON, **change}, "b.json"))
    assert changed.content_hash != base.content_hash


# --------------------------------------------------------------------------- validate


def test_validate_against_model(tmp_path: Path) -> None:
    ref = load_reference(write_json(tmp_path, SEED_JSON))
    ok = ModelConfig(
        inputs=(
            FieldSpec("bedrooms"),
            FieldSpec("sqft"),
            FieldSpec("city", "categorical", ("paris", "lyon", "nice")),
            FieldSpec("age"),
        )
    )
    validate_against_model(ref, ok)
    validate_against_model(ref, ModelConfig())  # nothing declared: anything goes
    validate_against_model(ref, list(ok.inputs))
    bad = ModelConfig(inputs=(FieldSpec("bedrooms"), FieldSpec("sqft", "categorical", ("a",))))
    with pytest.raises(ReferenceError) as info:
        validate_against_model(ref, bad)
    src = ref.source
    assert str(info.value).splitlines() == [
        f"{src}: feature 'sqft' is numeric in the reference but categorical in the model",
        f"{src}: feature 'city' is not declared by the model (declared: bedrooms, sqft)",
    ]


# --------------------------------------------------------------------------- build


def _csv(path: Path, rows: int) -> list[tuple[float, str, str]]:
    rng = np.random.default_rng(1)
    out = []
    with open(path, "w") as fh:
        fh.write("x,city,code\n")
        for i in range(rows):
            x = "" if i % 10 == 0 else f"{rng.normal():.6f}"
            city = ["paris", "lyon", "nice"][i % 3]
            fh.write(f"{x},{city},{i % 7}\n")
            out.append((float(x) if x else math.nan, city, str(i % 7)))
    return out


def test_build_from_csv(tmp_path: Path) -> None:
    p = tmp_path / "train.csv"
    rows = _csv(p, 30_000)
    seen: list[tuple[int, int]] = []
    ref = build_reference(p, cap=500, seed=1, progress=lambda d, t: seen.append((d, t)))
    x = ref.features["x"]
    xs = np.array([r[0] for r in rows])
    assert x.kind == "numeric"
    assert x.n == int((~np.isnan(xs)).sum())
    assert x.nan_rate == pytest.approx(0.1)
    assert x.min == np.nanmin(xs) and x.max == np.nanmax(xs)
    assert x.sample_size == 500
    assert np.all(np.diff(x.sorted_values) >= 0)
    assert set(x.sorted_values) <= set(xs[~np.isnan(xs)])
    assert ref.features["city"].category_counts == {"lyon": 10000, "nice": 10000, "paris": 10000}
    assert ref.features["code"].kind == "numeric"
    assert seen[0] == (0, p.stat().st_size) and seen[-1] == (p.stat().st_size,) * 2


def test_build_csv_kinds_override_and_gzip(tmp_path: Path) -> None:
    p = tmp_path / "train.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("zip,v\n75001,1\n69001,NA\n75001,3\n")
    ref = build_reference(p, kinds={"zip": "categorical"})
    assert ref.features["zip"].category_counts == {"69001": 1, "75001": 2}
    assert ref.features["v"].n == 2 and ref.features["v"].nan_rate == pytest.approx(1 / 3)


def test_build_csv_column_turns_categorical(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a\n1\n2\nthree\n2\n")
    f = build_reference(p).features["a"]
    assert f.kind == "categorical"
    assert f.category_counts == {"1": 1, "2": 2, "three": 1}


@pytest.mark.parametrize(
    ("text", "kwargs", "reason"),
    [
        ("", {}, "empty file (no header row)"),
        ("a,a\n1,2\n", {}, "duplicate column 'a' in the header"),
        ("a,b\n1,2\n3\n", {}, "line 3: expected 2 fields, got 1"),
        ("a,\n1,2\n", {}, "header column 2 has no name"),
        ("a\nx\n", {"kinds": {"a": "numeric"}}, "feature 'a': line 2: 'x' is not a number"),
        ("a,b\n,1\nNA,2\n", {}, "feature 'a': no values (only missing ones)"),
    ],
)
def test_build_csv_errors(
    tmp_path: Path, text: str, kwargs: dict[str, object], reason: str
) -> None:
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(ReferenceError) as info:
        build_reference(p, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == f"{p}: {reason}"


def test_build_from_ndjson(tmp_path: Path) -> None:
    p = tmp_path / "log.ndjson"
    lines = [
        {
            "timestamp": 1,
            "input_data": {"sqft": 1000, "city": "paris"},
            "output_data": {"price": 5},
        },
        {"timestamp": 2, "input_data": {"sqft": None, "city": "lyon"}, "output_data": {"price": 7}},
        {"sqft": 1200.5, "city": "paris", "price": 6},
    ]
    p.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    ref = build_reference(p)
    assert set(ref.features) == {"sqft", "city", "price"}
    assert ref.features["sqft"].sorted_values.tolist() == [1000.0, 1200.5]
    assert ref.features["sqft"].nan_rate == pytest.approx(1 / 3)
    assert ref.features["city"].category_counts == {"lyon": 1, "paris": 2}
    assert ref.features["price"].n == 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": 1}\n{"a": \n', "line 2: not valid JSON: Expecting value (column 7)"),
        ("[1]\n", "line 1: must be a JSON object, got a list"),
        (
            '{"a": [1]}\n',
            "feature 'a': line 1: value must be a number, a string or null, got a list",
        ),
        ('{"input_data": 3}\n', "line 1: input_data must be an object, got a number"),
        ("\n\n", "no records"),
    ],
)
def test_build_ndjson_errors(tmp_path: Path, text: str, reason: str) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(text)
    with pytest.raises(ReferenceError) as info:
        build_reference(p)
    assert str(info.value) == f"{p}: {reason}"


def test_build_from_npy_2d_and_structured(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20_000, 3))
    data[::100, 1] = np.nan
    p = tmp_path / "x.npy"
    np.save(p, data)
    ref = build_reference(p, names=["a", "b", "c"], cap=300)
    b = ref.features["b"]
    assert b.n == 19_800 and b.sample_size == 300
    assert b.nan_rate == pytest.approx(0.01)
    assert b.min == np.nanmin(data[:, 1]) and b.max == np.nanmax(data[:, 1])
    with pytest.raises(ReferenceError, match="needs column names"):
        build_reference(p)
    with pytest.raises(ReferenceError, match="2 names given for 3 columns"):
        build_reference(p, names=["a", "b"])

    s = np.zeros(4, dtype=[("age", "f8"), ("kind", "U5")])
    s["age"] = [1, 2, 3, np.nan]
    s["kind"] = ["a", "b", "a", "a"]
    sp = tmp_path / "s.npy"
    np.save(sp, s)
    sref = build_reference(sp)
    assert sref.features["age"].sorted_values.tolist() == [1.0, 2.0, 3.0]
    assert sref.features["kind"].category_counts == {"a": 3, "b": 1}


def test_build_from_seed_json_equals_load(tmp_path: Path) -> None:
    p = write_json(tmp_path, SEED_JSON)
    assert build_reference(p) == load_reference(p)


def test_build_unknown_extension(tmp_path: Path) -> None:
    p = tmp_path / "data.parquet"
    p.write_bytes(b"x")
    with pytest.raises(ReferenceError) as info:
        build_reference(p)
    assert str(info.value) == (
        f"{p}: cannot tell the format from the extension '.parquet': use .csv, .tsv, "
        ".ndjson, .jsonl, .npy or .json (or pass fmt)"
    )


def test_build_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    p = tmp_path / "x.npy"
    np.save(p, np.arange(50_000, dtype=np.float64).reshape(-1, 1))
    a = build_reference(p, names=["x"], cap=1000, seed=7)
    b = build_reference(p, names=["x"], cap=1000, seed=7)
    c = build_reference(p, names=["x"], cap=1000, seed=8)
    assert a == b and a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash


def test_reservoir_is_uniform_and_capped(tmp_path: Path) -> None:
    """Each of 10 equal bins of the stream should hold ~10% of the sample, every seed."""
    n, cap = 100_000, 2000
    p = tmp_path / "x.npy"
    np.save(p, np.arange(n, dtype=np.float64).reshape(-1, 1))
    inclusion = np.zeros(10)
    for seed in range(10):
        f = build_reference(p, names=["x"], cap=cap, seed=seed).features["x"]
        assert f.sample_size == cap and f.n == n
        assert len(np.unique(f.sorted_values)) == cap  # a sample without replacement
        counts, _ = np.histogram(f.sorted_values, bins=10, range=(0, n))
        # Binomial sd for 2000 draws at p=0.1 is ~13.4; 5 sd is a safe bound.
        assert np.all(np.abs(counts - cap / 10) < 67), counts
        inclusion += counts
    # Late items must not be favoured over early ones (a classic reservoir bug).
    assert abs(inclusion[0] - inclusion[-1]) < 200


def test_categories_capped_with_other(tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    with open(p, "w") as fh:
        fh.write("c\n")
        for i in range(1500):
            fh.write(f"k{i}\n")
        for _ in range(10):
            fh.write("popular\n")
    f = build_reference(p).features["c"]
    assert len(f.category_counts) == MAX_CATEGORIES
    assert f.category_counts["popular"] == 10
    assert sum(f.category_counts.values()) == f.n == 1510
    assert f.category_counts[OTHER_CATEGORY] == 1510 - 10 - (MAX_CATEGORIES - 2)


def test_build_saves_and_reloads(tmp_path: Path) -> None:
    p = tmp_path / "train.csv"
    _csv(p, 2000)
    ref = build_reference(p, cap=100)
    save_reference(ref, tmp_path / "r.npz")
    assert load_reference(tmp_path / "r.npz") == ref


# --------------------------------------------------------------------------- misc


def test_describe_reference(tmp_path: Path) -> None:
    ref = load_reference(write_json(tmp_path, SEED_JSON))
    text = describe_reference(ref)
    lines = text.splitlines()
    assert lines[0] == f"reference {ref.source}: 3 features"
    assert lines[-1] == f"hash {ref.content_hash}  format version {FORMAT_VERSION}"
    assert any("bedrooms" in ln and "numeric" in ln and "min 2  max 4" in ln for ln in lines)
    assert any("city" in ln and "paris 50.0%" in ln for ln in lines)
    assert any("sample 5" in ln and "sqft" in ln for ln in lines)


def test_feature_reference_equality_and_immutability() -> None:
    a = FeatureReference("x", "numeric", np.array([1.0, 2.0]), 2, 1.0, 2.0, 0.0)
    b = FeatureReference("x", "numeric", [1.0, 2.0], 2, 1.0, 2.0, 0.0)  # type: ignore[arg-type]
    assert a == b
    assert a != FeatureReference("x", "numeric", np.array([1.0, 3.0]), 2, 1.0, 3.0, 0.0)
    with pytest.raises(ValueError):
        a.sorted_values[0] = 5.0
    r = Reference.from_features([a])
    assert r.features == {"x": a} and len(r.content_hash) == 16
