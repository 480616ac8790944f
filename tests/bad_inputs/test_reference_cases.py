"""Bad reference files: ``edge-actors reference show FILE`` and ``load_reference``.

Both paths must give the same one-line reason naming the file (and the
feature): the CLI prefixes it with ``edge-actors:`` and exits 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_actors.drift.reference import ReferenceError, load_reference, save_reference
from tests.bad_inputs import CASES
from tests.conftest import REPO, cli

REF_CASES = sorted(p for p in (CASES / "reference").iterdir() if p.suffix != ".expected")
WITH_EXPECTED = [p for p in REF_CASES if p.with_suffix(".expected").exists()]


def rel(path: Path) -> str:
    return os.path.relpath(path, REPO)


def check(path: Path | str, reason: str) -> None:
    """CLI and library agree on ``{path}: {reason}``."""
    want = f"{path}: {reason}"
    with pytest.raises(ReferenceError) as e:
        load_reference(path)
    assert str(e.value) == want
    out = cli("reference", "show", str(path))
    assert (out.returncode, out.stdout) == (1, ""), out.stdout
    assert out.stderr == f"edge-actors: {want}\n"


@pytest.mark.parametrize("case", WITH_EXPECTED, ids=[c.stem for c in WITH_EXPECTED])
def test_reference_file_cases(case: Path) -> None:
    arg = rel(case)
    want = case.with_suffix(".expected").read_text().replace("{file}", arg)
    out = cli("reference", "show", arg)
    assert (out.returncode, out.stdout, out.stderr) == (1, "", want)
    with pytest.raises(ReferenceError) as e:
        load_reference(REPO / arg)
    assert f"edge-actors: {e.value}\n".replace(str(REPO / arg), arg) == want


def test_missing_file(short_dir: Path) -> None:
    check(short_dir / "nope.json", "file not found")


def test_a_directory(short_dir: Path) -> None:
    check(short_dir, "cannot read: Is a directory")


def test_feature_the_model_does_not_declare() -> None:
    ref = rel(CASES / "reference" / "undeclared_feature.json")
    config = rel(CASES / "reference_model.yaml")
    assert cli("reference", "show", ref).returncode == 0  # fine without a model
    out = cli("reference", "show", ref, "-c", config)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"edge-actors: {ref}: feature 'price' is not declared by the model "
        "(declared: colour, bedrooms, price_estimate)\n"
        f"edge-actors: {ref}: feature 'colour' is categorical in the reference "
        "but numeric in the model\n"
    )


# ------------------------------------------------------------------------ npz
@pytest.fixture
def good_npz(short_dir: Path) -> Path:
    path = short_dir / "good.npz"
    save_reference(load_reference(CASES / "reference" / "undeclared_feature.json"), path)
    return path


def rewrite(src: Path, dst: Path, change: Callable[[dict[str, np.ndarray]], None]) -> Path:
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(dst, **arrays)
    return dst


def set_meta(key: str, value: object) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        meta = json.loads(arrays["meta"].tobytes())
        if value is None:
            del meta[key]
        else:
            meta[key] = value
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    return change


def test_npz_wrong_version(good_npz: Path) -> None:
    bad = rewrite(good_npz, good_npz.with_name("v99.npz"), set_meta("format_version", 99))
    check(bad, "unsupported reference format version: found 99, supported 1")


def test_npz_without_version(good_npz: Path) -> None:
    bad = rewrite(good_npz, good_npz.with_name("v0.npz"), set_meta("format_version", None))
    check(bad, "unsupported reference format version: found none, supported 1")


def test_npz_truncated(good_npz: Path) -> None:
    raw = good_npz.read_bytes()
    bad = good_npz.with_name("half.npz")
    bad.write_bytes(raw[: len(raw) // 2])
    check(bad, "corrupt reference file: BadZipFile: File is not a zip file")


def test_npz_empty_file(short_dir: Path) -> None:
    bad = short_dir / "empty.npz"
    bad.write_bytes(b"")
    check(bad, "corrupt reference file: not a .npz (zip) archive")


def test_npz_without_metadata(short_dir: Path) -> None:
    bad = short_dir / "nometa.npz"
    np.savez(bad, v0=np.zeros(3))
    check(bad, "corrupt reference file: no metadata")


def test_npz_with_a_pickled_array_is_refused(short_dir: Path) -> None:
    bad = short_dir / "pickled.npz"
    np.savez(bad, meta=np.array([{"x": 1}], dtype=object))
    check(
        bad,
        "corrupt reference file: ValueError: "
        "Object arrays cannot be loaded when allow_pickle=False",
    )


def test_npz_tampered_values(good_npz: Path) -> None:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays["v0"] = arrays["v0"] + 1

    bad = rewrite(good_npz, good_npz.with_name("tampered.npz"), change)
    with pytest.raises(ReferenceError) as e:
        load_reference(bad)
    assert str(e.value).startswith(f"{bad}: corrupt reference file: content hash ")
    assert str(e.value).endswith(" does not match the stored " + _stored_hash(good_npz))


def _stored_hash(path: Path) -> str:
    with np.load(path) as z:
        return str(json.loads(z["meta"].tobytes())["content_hash"])
