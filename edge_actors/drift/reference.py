"""Reference data for drift detection: load, validate, build, save and describe.

Two on-disk forms are read by :func:`load_reference`:

* the seed's JSON, ``{"feature": [values...], ...}``: numbers (``null`` = NaN) for a
  numeric feature, strings for a categorical one;
* the native ``.npz`` written by :func:`save_reference`: per feature a sorted
  sample, exact n/min/max/NaN rate and category counts, plus a content hash, so
  no raw training data needs to sit on the device. No pickle is involved: the
  metadata is a JSON document stored as a ``uint8`` array.

:func:`build_reference` makes a reference offline from CSV, NDJSON, ``.npy`` or the
seed JSON, streaming the input and keeping a uniform reservoir sample of at most
``cap`` values per numeric feature.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import logging
import math
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, cast

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import os

    from edge_actors.config import FieldSpec, ModelConfig

__all__ = [
    "FORMAT_VERSION",
    "MAX_CATEGORIES",
    "OTHER_CATEGORY",
    "FeatureReference",
    "Reference",
    "ReferenceError",
    "build_reference",
    "describe_reference",
    "load_reference",
    "save_reference",
    "validate_against_model",
]

logger = logging.getLogger(__name__)

#: Version of the ``.npz`` layout written by :func:`save_reference`.
FORMAT_VERSION = 1
#: Distinct categories kept per categorical feature; the rest are merged.
MAX_CATEGORIES = 1000
#: Name of the bucket that collects categories beyond :data:`MAX_CATEGORIES`.
OTHER_CATEGORY = "__OTHER__"

Kind = Literal["numeric", "categorical"]
Progress = Callable[[int, int], None]

_META_KEY = "meta"
_ZIP_MAGIC = b"PK\x03\x04"
# CSV cells that mean "no value"; compared lower-cased after stripping blanks.
_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})
# Rows buffered per column before a vectorised reservoir update.
_CHUNK_ROWS = 8192
# Distinct categories counted exactly while streaming, before new ones go to OTHER.
# Larger than MAX_CATEGORIES so the final top-1000 is chosen from a wide set.
_WORKING_CATEGORIES = 10 * MAX_CATEGORIES


class ReferenceError(ValueError):
    """Reference data is missing or malformed; the message names file, feature, reason."""


def _fail(source: object, reason: str, feature: str | None = None) -> ReferenceError:
    where = f"{source}: feature {feature!r}: " if feature is not None else f"{source}: "
    return ReferenceError(where + reason)


# ---------------------------------------------------------------------------
# Data model


@dataclass(frozen=True, eq=False)
class FeatureReference:
    """Reference statistics of one feature.

    ``sorted_values`` is a read-only, sorted float64 sample without NaN (empty for a
    categorical feature). ``n`` counts the non-NaN values seen in the source, before
    any subsampling; ``min``/``max`` are exact over them (NaN for a categorical
    feature). ``nan_rate`` is the share of missing values among all values.
    """

    name: str
    kind: Kind
    sorted_values: npt.NDArray[np.float64]
    n: int
    min: float
    max: float
    nan_rate: float
    category_counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Freeze the sample: a shared reference must not change under a reader."""
        arr = np.array(self.sorted_values, dtype=np.float64, copy=True).reshape(-1)
        arr.setflags(write=False)
        object.__setattr__(self, "sorted_values", arr)

    @property
    def sample_size(self) -> int:
        """Number of values kept in ``sorted_values``."""
        return int(self.sorted_values.size)

    def __eq__(self, other: object) -> bool:
        """Compare all fields, arrays element-wise and NaN equal to NaN."""
        if not isinstance(other, FeatureReference):
            return NotImplemented
        return (
            self.name == other.name
            and self.kind == other.kind
            and self.n == other.n
            and _same_float(self.min, other.min)
            and _same_float(self.max, other.max)
            and _same_float(self.nan_rate, other.nan_rate)
            and self.category_counts == other.category_counts
            and np.array_equal(self.sorted_values, other.sorted_values)
        )

    __hash__ = None  # type: ignore[assignment]


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@dataclass(frozen=True)
class Reference:
    """A set of feature references with a content hash identifying them.

    ``content_hash`` (16 hex chars of a SHA-256 over the canonical content) goes
    into every drift event, so an event can be traced to the exact reference.
    ``source`` (where it was loaded from) is not part of equality.
    """

    features: dict[str, FeatureReference]
    content_hash: str
    format_version: int = FORMAT_VERSION
    source: str = field(default="", compare=False)

    @classmethod
    def from_features(cls, features: Iterable[FeatureReference], source: str = "") -> Reference:
        """Build a reference and compute its hash."""
        feats = {f.name: f for f in features}
        return cls(features=feats, content_hash=_content_hash(feats), source=source)


def _feature_meta(f: FeatureReference) -> dict[str, Any]:
    return {
        "name": f.name,
        "kind": f.kind,
        "n": f.n,
        "min": f.min,
        "max": f.max,
        "nan_rate": f.nan_rate,
        # Pairs, not an object: keeps the order and any category string intact.
        "categories": sorted(f.category_counts.items()),
    }


def _content_hash(features: Mapping[str, FeatureReference]) -> str:
    """Hash the canonical content: sorted names, metadata as JSON, samples as LE float64."""
    h = hashlib.sha256(f"edge-actors-reference\0{FORMAT_VERSION}\0".encode())
    for name in sorted(features):
        f = features[name]
        meta = json.dumps(_feature_meta(f), sort_keys=True, allow_nan=True).encode()
        data = np.ascontiguousarray(f.sorted_values, dtype="<f8").tobytes()
        for chunk in (meta, data):
            h.update(len(chunk).to_bytes(8, "little"))
            h.update(chunk)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------
# Streaming accumulators


class _Accumulator:
    """Streaming statistics of one column whose kind may only be known at the end.

    Numeric statistics (exact n/min/max/NaN count, reservoir sample) and category
    counts are both kept while every value still parses as a number, so a column
    can turn categorical at its last row without a second pass over the input.
    """

    def __init__(self, name: str, cap: int, seed: int, kind: Kind | None) -> None:
        self.name = name
        self.cap = cap
        self.kind = kind
        self.numeric_ok = kind != "categorical"
        # Seeded by the name, not the column position, so column order never
        # changes the sample.
        self.rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        self.reservoir = np.empty(min(cap, 1024), dtype=np.float64)
        self.filled = 0
        self.seen = 0
        self.missing = 0
        self.min = math.inf
        self.max = -math.inf
        self.counts: Counter[str] = Counter()
        self.overflow = 0
        self.pending: list[float] = []

    def add_missing(self) -> None:
        self.missing += 1

    def add_number(self, x: float, text: str) -> None:
        if math.isnan(x):
            self.missing += 1
            return
        if self.numeric_ok:
            self.pending.append(x)
            if len(self.pending) >= _CHUNK_ROWS:
                self.flush()
        if self.kind != "numeric":
            self._count(text)

    def add_text(self, text: str) -> None:
        self.numeric_ok = False
        self.pending.clear()
        self._count(text)

    def _count(self, text: str) -> None:
        if text in self.counts or len(self.counts) < _WORKING_CATEGORIES:
            self.counts[text] += 1
        else:
            self.overflow += 1

    def add_array(self, values: npt.NDArray[np.float64]) -> None:
        """Add a block of numeric values (NaN = missing); for ``.npy`` input."""
        nan = np.isnan(values)
        self.missing += int(nan.sum())
        self._reservoir_add(values[~nan])

    def flush(self) -> None:
        if self.pending:
            block = np.asarray(self.pending, dtype=np.float64)
            self.pending = []
            self._reservoir_add(block)

    def _reservoir_add(self, vals: npt.NDArray[np.float64]) -> None:
        """Algorithm R, vectorised over a block: an exactly uniform sample of ``cap``."""
        if vals.size == 0:
            return
        self.min = min(self.min, float(vals.min()))
        self.max = max(self.max, float(vals.max()))
        if self.filled < self.cap:
            take = min(self.cap - self.filled, vals.size)
            need = self.filled + take
            if need > self.reservoir.size:
                grown = np.empty(min(self.cap, max(need, 2 * self.reservoir.size)))
                grown[: self.filled] = self.reservoir[: self.filled]
                self.reservoir = grown
            self.reservoir[self.filled : need] = vals[:take]
            self.filled = need
            self.seen += take
            vals = vals[take:]
        if vals.size:
            # Item i (0-based over the stream) replaces slot j ~ U[0, i] when j < cap.
            idx = np.arange(self.seen, self.seen + vals.size, dtype=np.int64)
            slots = self.rng.integers(0, idx + 1)
            hit = slots < self.cap
            if hit.any():
                js, vs = slots[hit][::-1], vals[hit][::-1]
                # Within a block a later item overwrites an earlier one in the same
                # slot, as the sequential algorithm would: keep the last occurrence.
                uniq, first = np.unique(js, return_index=True)
                self.reservoir[uniq] = vs[first]
            self.seen += vals.size

    def finish(self, source: str) -> FeatureReference:
        self.flush()
        kind: Kind = self.kind or ("numeric" if self.numeric_ok else "categorical")
        if kind == "numeric":
            if self.seen == 0:
                raise _fail(source, "no values (only missing ones)", self.name)
            return FeatureReference(
                name=self.name,
                kind="numeric",
                sorted_values=np.sort(self.reservoir[: self.filled]),
                n=self.seen,
                min=self.min,
                max=self.max,
                nan_rate=self.missing / (self.seen + self.missing),
            )
        counts = _cap_categories(self.counts, self.overflow)
        n = sum(counts.values())
        if n == 0:
            raise _fail(source, "no values (only missing ones)", self.name)
        return FeatureReference(
            name=self.name,
            kind="categorical",
            sorted_values=np.empty(0),
            n=n,
            min=math.nan,
            max=math.nan,
            nan_rate=self.missing / (n + self.missing),
            category_counts=counts,
        )


def _cap_categories(counts: Mapping[str, int], overflow: int = 0) -> dict[str, int]:
    """Keep the most frequent categories, merge the rest into ``__OTHER__``."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:MAX_CATEGORIES])
    other = overflow + sum(c for _, c in ranked[MAX_CATEGORIES:])
    if other:
        if OTHER_CATEGORY not in kept and len(kept) >= MAX_CATEGORIES:
            # Make room so the total count stays exact.
            last, c = ranked[MAX_CATEGORIES - 1]
            del kept[last]
            other += c
        kept[OTHER_CATEGORY] = kept.get(OTHER_CATEGORY, 0) + other
    return dict(sorted(kept.items()))


# ---------------------------------------------------------------------------
# Seed JSON


def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _fail(
            path, f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def _json_kind_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _features_from_json(
    data: object, path: Path, cap: int | None, seed: int
) -> list[FeatureReference]:
    if not isinstance(data, dict):
        raise _fail(
            path,
            "top level must be a JSON object mapping feature names to lists of values, "
            f"got {_json_kind_name(data)}",
        )
    if not data:
        raise _fail(path, "no features (empty object)")
    out = []
    for name, values in data.items():
        if not isinstance(values, list):
            raise _fail(path, f"values must be a list, got {_json_kind_name(values)}", name)
        if not values:
            raise _fail(path, "no values (empty list)", name)
        first = next((v for v in values if v is not None), None)
        categorical = isinstance(first, str)
        acc = _Accumulator(name, cap if cap is not None else len(values), seed, _kind(categorical))
        for i, v in enumerate(values):
            if v is None:
                acc.add_missing()
            elif categorical:
                if not isinstance(v, str):
                    raise _fail(
                        path,
                        f"value at index {i} is {_json_kind_name(v)} ({json.dumps(v)}), "
                        "expected a string (the feature's first value is a string)",
                        name,
                    )
                acc.add_text(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                acc.add_number(float(v), "")
            else:
                raise _fail(
                    path,
                    f"value at index {i} is not a number: {json.dumps(v)}",
                    name,
                )
        out.append(acc.finish(str(path)))
    return out


def _kind(categorical: bool) -> Kind:
    return "categorical" if categorical else "numeric"


# ---------------------------------------------------------------------------
# npz


def save_reference(ref: Reference, path: str | os.PathLike[str]) -> None:
    """Write ``ref`` as a compressed ``.npz`` (no pickle) that :func:`load_reference` reads.

    The file is written to a temporary name and renamed, so a reader never sees
    half a file.
    """
    target = Path(path)
    names = sorted(ref.features)
    meta = {
        "format_version": FORMAT_VERSION,
        "content_hash": ref.content_hash,
        "features": [_feature_meta(ref.features[n]) for n in names],
    }
    arrays: dict[str, npt.NDArray[Any]] = {
        _META_KEY: np.frombuffer(json.dumps(meta, allow_nan=True).encode(), dtype=np.uint8)
    }
    for i, name in enumerate(names):
        arrays[f"v{i}"] = np.ascontiguousarray(ref.features[name].sorted_values, dtype="<f8")
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
    tmp.replace(target)


def _load_npz(path: Path) -> Reference:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if _META_KEY not in npz.files:
                raise _fail(path, "corrupt reference file: no metadata")
            raw_meta = npz[_META_KEY]
            try:
                if not isinstance(raw_meta, np.ndarray) or raw_meta.dtype != np.uint8:
                    raise ValueError("not a uint8 array")
                meta = json.loads(raw_meta.tobytes().decode("utf-8"))
            except ValueError:
                raise _fail(path, "corrupt reference file: unreadable metadata") from None
            if not isinstance(meta, dict):
                raise _fail(path, "corrupt reference file: metadata is not an object")
            version = meta.get("format_version")
            if version != FORMAT_VERSION:
                found = "none" if version is None else json.dumps(version)
                raise _fail(
                    path,
                    f"unsupported reference format version: found {found}, "
                    f"supported {FORMAT_VERSION}",
                )
            features = []
            for i, fm in enumerate(meta["features"]):
                values = npz[f"v{i}"]
                features.append(
                    FeatureReference(
                        name=str(fm["name"]),
                        kind=_kind(fm["kind"] == "categorical"),
                        sorted_values=values,
                        n=int(fm["n"]),
                        min=float(fm["min"]),
                        max=float(fm["max"]),
                        nan_rate=float(fm["nan_rate"]),
                        category_counts={str(k): int(c) for k, c in fm["categories"]},
                    )
                )
    except ReferenceError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise _fail(path, f"corrupt reference file: {type(exc).__name__}: {exc}") from None
    ref = Reference.from_features(features, source=str(path))
    if ref.content_hash != meta.get("content_hash"):
        raise _fail(
            path,
            f"corrupt reference file: content hash {ref.content_hash} does not match "
            f"the stored {meta.get('content_hash')}",
        )
    return ref


# ---------------------------------------------------------------------------
# Public loading


def load_reference(
    path: str | os.PathLike[str], *, cap: int | None = None, seed: int = 0
) -> Reference:
    """Load a reference from the seed's JSON or a native ``.npz`` (told apart by content).

    ``cap`` optionally subsamples the numeric features of a JSON file (``n``,
    ``min``, ``max`` and the NaN rate stay exact); a ``.npz`` is already compact.
    Raises :class:`ReferenceError` naming the file, the feature and the reason.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise _fail(p, "file not found") from None
    except OSError as exc:
        raise _fail(p, f"cannot read: {exc.strerror}") from None
    if head == _ZIP_MAGIC:
        return _load_npz(p)
    if p.suffix == ".npz":
        # np.load would take it for a pickle and suggest allow_pickle=True: never.
        raise _fail(p, "corrupt reference file: not a .npz (zip) archive")
    return Reference.from_features(_features_from_json(_read_json(p), p, cap, seed), source=str(p))


def validate_against_model(ref: Reference, model: ModelConfig | Iterable[FieldSpec]) -> None:
    """Check ``ref`` against the fields the model declares; raise :class:`ReferenceError`.

    A reference feature the model does not declare is an error only when the model
    declares fields at all (an undeclared schema means "monitor what the reference
    has"). A kind mismatch is always an error. Every problem is listed, one per line.
    Model fields without reference data are simply not tested for drift.
    """
    fields = tuple(model.fields) if hasattr(model, "fields") else tuple(model)
    if not fields:
        return
    declared = {f.name: f for f in fields}
    problems = []
    for name, feat in ref.features.items():
        spec = declared.get(name)
        if spec is None:
            problems.append(
                f"{ref.source}: feature {name!r} is not declared by the model "
                f"(declared: {', '.join(declared)})"
            )
        elif spec.kind != feat.kind:
            problems.append(
                f"{ref.source}: feature {name!r} is {feat.kind} in the reference "
                f"but {spec.kind} in the model"
            )
        elif spec.kind == "categorical" and spec.categories:
            unknown = set(feat.category_counts) - set(spec.categories) - {OTHER_CATEGORY}
            if unknown:
                # Not fatal: the chi-squared test folds them into OTHER.
                logger.warning(
                    "reference feature %r has categories the model does not declare: %s",
                    name,
                    ", ".join(sorted(unknown)[:10]),
                )
    if problems:
        raise ReferenceError("\n".join(problems))


# ---------------------------------------------------------------------------
# Building


class _ByteCounter:
    """Wraps a binary file to report how many bytes were read, for progress."""

    def __init__(self, raw: IO[bytes], total: int, progress: Progress | None) -> None:
        self.raw = raw
        self.total = total
        self.progress = progress
        self.last = 0

    def tick(self, force: bool = False) -> None:
        if self.progress is None:
            return
        done = self.raw.tell()
        # Report every 1 MiB or so: a callback per line would dominate the runtime.
        if force or done - self.last >= 1 << 20:
            self.last = done
            self.progress(done, self.total)


def _text_lines(path: Path, progress: Progress | None) -> Iterator[str]:
    """Yield decoded lines of ``path`` (gzip when it ends in ``.gz``), streaming."""
    total = path.stat().st_size
    with open(path, "rb") as raw:
        counter = _ByteCounter(raw, total, progress)
        stream: IO[bytes] = (
            cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if path.suffix == ".gz" else raw
        )
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        for lineno, line in enumerate(stream, start=1):
            try:
                yield decoder.decode(line)
            except UnicodeDecodeError as exc:
                raise _fail(path, f"line {lineno}: not valid UTF-8 (byte {exc.start})") from None
            counter.tick()
        counter.tick(force=True)


def _build_csv(
    path: Path,
    cap: int,
    seed: int,
    kinds: Mapping[str, Kind],
    progress: Progress | None,
    delimiter: str,
) -> list[FeatureReference]:
    reader = csv.reader(_text_lines(path, progress), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise _fail(path, "empty file (no header row)") from None
    except csv.Error as exc:
        raise _fail(path, f"line 1: {exc}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise _fail(path, "empty header row")
    for i, h in enumerate(header):
        if not h:
            raise _fail(path, f"header column {i + 1} has no name")
        if h in header[:i]:
            raise _fail(path, f"duplicate column {h!r} in the header")
    accs = [_Accumulator(h, cap, seed, kinds.get(h)) for h in header]
    width = len(header)
    try:
        for row in reader:
            if not row:
                continue  # blank line
            if len(row) != width:
                raise _fail(
                    path, f"line {reader.line_num}: expected {width} fields, got {len(row)}"
                )
            for acc, cell in zip(accs, row, strict=True):
                text = cell.strip()
                if text.lower() in _MISSING:
                    acc.add_missing()
                    continue
                if acc.kind == "categorical" or not acc.numeric_ok:
                    acc.add_text(text)
                    continue
                try:
                    x = float(text)
                except ValueError:
                    if acc.kind == "numeric":
                        raise _fail(
                            path,
                            f"line {reader.line_num}: {text!r} is not a number",
                            acc.name,
                        ) from None
                    acc.add_text(text)
                else:
                    acc.add_number(x, text)
    except csv.Error as exc:
        raise _fail(path, f"line {reader.line_num}: {exc}") from None
    return [a.finish(str(path)) for a in accs]


def _build_ndjson(
    path: Path, cap: int, seed: int, kinds: Mapping[str, Kind], progress: Progress | None
) -> list[FeatureReference]:
    accs: dict[str, _Accumulator] = {}
    for lineno, line in enumerate(_text_lines(path, progress), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            raise _fail(
                path, f"line {lineno}: not valid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise _fail(path, f"line {lineno}: must be a JSON object, got {_json_kind_name(obj)}")
        record = _flatten(obj, path, lineno)
        for name, v in record.items():
            acc = accs.get(name)
            if acc is None:
                acc = accs[name] = _Accumulator(name, cap, seed, kinds.get(name))
            if v is None:
                acc.add_missing()
            elif isinstance(v, str):
                if acc.kind == "numeric":
                    raise _fail(path, f"line {lineno}: {v!r} is not a number", name)
                acc.add_text(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                if acc.numeric_ok and acc.kind != "categorical":
                    acc.add_number(float(v), json.dumps(v))
                else:
                    acc.add_text(json.dumps(v))
            else:
                raise _fail(
                    path,
                    f"line {lineno}: value must be a number, a string or null, "
                    f"got {_json_kind_name(v)}",
                    name,
                )
    if not accs:
        raise _fail(path, "no records")
    return [a.finish(str(path)) for a in accs.values()]


def _flatten(obj: dict[str, Any], path: Path, lineno: int) -> dict[str, Any]:
    """Return the features of one NDJSON line.

    A seed log line (``{"input_data": {...}, "output_data": {...}, "timestamp": ...}``)
    gives the keys of its input/output objects; other keys such as timestamps are
    not features. Any other line gives its own keys.
    """
    parts = [k for k in ("input_data", "output_data") if k in obj]
    if not parts:
        return obj
    out: dict[str, Any] = {}
    for k in parts:
        sub = obj[k]
        if not isinstance(sub, dict):
            raise _fail(path, f"line {lineno}: {k} must be an object, got {_json_kind_name(sub)}")
        out.update(sub)
    return out


def _build_npy(
    path: Path,
    cap: int,
    seed: int,
    names: Iterable[str] | None,
    kinds: Mapping[str, Kind],
    progress: Progress | None,
) -> list[FeatureReference]:
    try:
        # mmap: a large array is read block by block, never all at once.
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise _fail(path, f"not a readable .npy file: {exc}") from None
    total = path.stat().st_size
    if arr.dtype.names:
        columns = list(arr.dtype.names)
        if names is not None:
            raise _fail(path, "a structured array names its own fields; do not pass names")
        rows = arr.shape[0] if arr.ndim else 1
    else:
        if names is None:
            raise _fail(path, "a plain .npy array needs column names (names=...)")
        columns = list(names)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise _fail(path, f"expected a 2-D array, got {arr.ndim}-D")
        if arr.shape[1] != len(columns):
            raise _fail(path, f"{len(columns)} names given for {arr.shape[1]} columns")
        if len(set(columns)) != len(columns):
            raise _fail(path, "duplicate column names")
        rows = arr.shape[0]
    accs = [_Accumulator(c, cap, seed, kinds.get(c)) for c in columns]
    block = max(1, (1 << 22) // max(1, arr.itemsize * (1 if arr.dtype.names else arr.shape[1])))
    for start in range(0, rows, block):
        chunk = np.asarray(arr[start : start + block])
        for j, acc in enumerate(accs):
            col = chunk[columns[j]] if arr.dtype.names else chunk[:, j]
            if col.dtype.kind in "biuf" and acc.kind != "categorical":
                acc.add_array(col.astype(np.float64))
            elif col.dtype.kind in "USO" or acc.kind == "categorical":
                for v in col.tolist():
                    text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    if text.strip().lower() in _MISSING:
                        acc.add_missing()
                    else:
                        acc.add_text(text)
            else:
                raise _fail(path, f"unsupported column dtype {col.dtype}", acc.name)
        if progress is not None:
            progress(int(total * min(rows, start + block) / max(rows, 1)), total)
    if rows == 0:
        raise _fail(path, "no rows")
    return [a.finish(str(path)) for a in accs]


def build_reference(
    input_path: str | os.PathLike[str],
    *,
    cap: int = 10_000,
    seed: int = 0,
    progress: Progress | None = None,
    names: Iterable[str] | None = None,
    kinds: Mapping[str, Kind] | None = None,
    fmt: Literal["csv", "tsv", "ndjson", "npy", "json"] | None = None,
) -> Reference:
    """Build a reference from training data, streaming it.

    Formats, by extension unless ``fmt`` is given: ``.csv``/``.tsv`` (header row;
    a column is numeric when every non-missing cell parses as a number),
    ``.ndjson``/``.jsonl`` (one object per line; seed log lines with
    ``input_data``/``output_data`` are flattened), ``.npy`` (2-D with ``names``, or
    a structured array) and ``.json`` (the seed format). CSV and NDJSON may be
    gzip-compressed (``.csv.gz``). ``kinds`` forces a feature's kind.

    Per numeric feature a uniform sample of at most ``cap`` values is kept by
    reservoir sampling (deterministic for a given ``seed`` and input); n, min, max
    and the NaN rate are exact. Categorical counts are exact for the 1000 most
    frequent categories, the rest summed as ``__OTHER__``. ``progress`` is called
    as ``progress(bytes_done, bytes_total)`` now and then.
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    p = Path(input_path)
    if not p.exists():
        raise _fail(p, "file not found")
    if fmt is None:
        suffixes = [s.lower() for s in p.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes = suffixes[:-1]
        ext = suffixes[-1] if suffixes else ""
        formats: dict[str, Literal["csv", "tsv", "ndjson", "npy", "json"]] = {
            ".csv": "csv",
            ".tsv": "tsv",
            ".ndjson": "ndjson",
            ".jsonl": "ndjson",
            ".npy": "npy",
            ".json": "json",
        }
        if ext not in formats:
            raise _fail(
                p,
                f"cannot tell the format from the extension {ext or '(none)'!r}: "
                "use .csv, .tsv, .ndjson, .jsonl, .npy or .json (or pass fmt)",
            )
        fmt = formats[ext]
    kinds = dict(kinds or {})
    size = p.stat().st_size
    if progress is not None:
        progress(0, size)
    if fmt in ("csv", "tsv"):
        feats = _build_csv(p, cap, seed, kinds, progress, "," if fmt == "csv" else "\t")
    elif fmt == "ndjson":
        feats = _build_ndjson(p, cap, seed, kinds, progress)
    elif fmt == "npy":
        feats = _build_npy(p, cap, seed, names, kinds, progress)
    else:
        feats = _features_from_json(_read_json(p), p, cap, seed)
        if progress is not None:
            progress(size, size)
    logger.info("built reference from %s: %d features", p, len(feats))
    return Reference.from_features(feats, source=str(p))


# ---------------------------------------------------------------------------
# Describing


def describe_reference(ref: Reference) -> str:
    """Return a human summary: one line per feature, then the hash and version."""
    lines = [f"reference {ref.source or '(in memory)'}: {len(ref.features)} features"]
    width = max((len(n) for n in ref.features), default=0)
    for name in sorted(ref.features):
        f = ref.features[name]
        if f.kind == "numeric":
            detail = f"min {f.min:.6g}  max {f.max:.6g}  sample {f.sample_size}"
        else:
            top = sorted(f.category_counts.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{k} {c / f.n:.1%}" for k, c in top[:3])
            more = f" (+{len(top) - 3} more)" if len(top) > 3 else ""
            detail = f"{len(top)} categories: {shown}{more}"
        lines.append(f"  {name:<{width}}  {f.kind:<11}  n {f.n:<8}  nan {f.nan_rate:.2%}  {detail}")
    lines.append(f"hash {ref.content_hash}  format version {ref.format_version}")
    return "\n".join(lines)
