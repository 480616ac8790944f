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
import io
import json
import logging
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, cast

import numpy as np
import numpy.typing as npt

from edge_actors.filekind import file_kind

if TYPE_CHECKING:
    from edge_actors.config import FieldSpec, ModelConfig

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_REFERENCE_BYTES",
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
#: Largest reference :func:`load_reference` accepts by default: a JSON file's size,
#: or the uncompressed size a ``.npz`` declares (``drift_detection.max_reference_mb``).
DEFAULT_MAX_REFERENCE_BYTES = 64 << 20
#: Longest line :func:`build_reference` reads from CSV/NDJSON: a single-line file of
#: gigabytes is refused after this much, not read whole into memory.
DEFAULT_MAX_LINE_BYTES = 8 << 20

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
# Deflate cannot expand data more than ~1032:1; a member declaring more lies.
_MAX_DEFLATE_RATIO = 1100
# Members of a .npz: the metadata plus one array per feature.
_MAX_NPZ_MEMBERS = 100_000
# Digits of a JSON integer beyond which it cannot be a float64 (and Python refuses
# to parse 4,300 digits at all).
_MAX_INT_DIGITS = 310


class ReferenceError(ValueError):
    """Reference data is missing or malformed; the message names file, feature, reason."""


def _fail(source: object, reason: str, feature: str | None = None) -> ReferenceError:
    where = f"{source}: feature {_shown(feature)}: " if feature is not None else f"{source}: "
    return ReferenceError(where + reason)


def _shown(text: str, limit: int = 80) -> str:
    """``repr`` of a name or value from a file: escaped (no terminal control) and cut."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _printable(text: str) -> str:
    """``text`` with every non-printable character (ESC, U+202E, U+2028...) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns


def _open_regular(path: Path) -> tuple[IO[bytes], int]:
    """Open ``path`` for reading if it is a regular file; return it and its size.

    A FIFO would block forever and ``/dev/zero`` never ends: refuse them before
    reading a byte (``O_NONBLOCK`` so that even opening a FIFO cannot hang).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _fail(path, "cannot read: Is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise _fail(path, f"not a regular file ({file_kind(st.st_mode)})")
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


class _BadNumber:
    """A JSON number no reference can hold (NaN, ±Infinity, beyond float64), for the message."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _json_int(text: str) -> int | _BadNumber:
    if len(text) > _MAX_INT_DIGITS:
        return _BadNumber(text)
    value = int(text)
    try:
        float(value)
    except OverflowError:
        return _BadNumber(text)
    return value


def _json_float(text: str) -> float | _BadNumber:
    value = float(text)
    return value if math.isfinite(value) else _BadNumber(text)


def _loads(text: str) -> Any:
    """``json.loads`` where NaN, ±Infinity and out-of-range numbers become :class:`_BadNumber`.

    Python's json accepts ``NaN``/``Infinity`` (not JSON) and turns ``1e999`` into
    inf; a reference bound of ±inf would silently disable the out-of-range check.
    """
    return json.loads(text, parse_constant=_BadNumber, parse_int=_json_int, parse_float=_json_float)


# A JSON string or one bare token (number or constant): finds the line of a bad number.
_JSON_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s,\[\]{}:"]+')


def _line_of(text: str, token: str) -> int | None:
    """Line of the first bare ``token`` in the JSON ``text`` (not inside a string)."""
    for m in _JSON_TOKEN_RE.finditer(text):
        if m.group() == token:
            return text.count("\n", 0, m.start()) + 1
    return None


def _bad_number(v: _BadNumber, text: str | None) -> str:
    """Reason for a :class:`_BadNumber`, with its line in ``text`` when known."""
    line = _line_of(text, v.text) if text is not None else None
    where = f" (line {line})" if line is not None else ""
    shown = v.text if len(v.text) <= 40 else f"{v.text[:20]}... ({len(v.text)} digits)"
    what = "is not a finite number" if v.text.lstrip("-+").isalpha() else "is out of range"
    return (
        f"{shown}{where} {what}: only finite float64 values are allowed (null marks a missing one)"
    )


def _short_json(v: object) -> str:
    try:
        text = json.dumps(v, default=lambda o: getattr(o, "text", str(o)))
    except (RecursionError, ValueError):
        return "a deeply nested value"
    return text if len(text) <= 60 else f"{text[:60]}... ({len(text)} characters)"


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


def _read_json(path: Path, max_bytes: int | None = None) -> tuple[Any, str]:
    """Parse the JSON file ``path``; return the data and its text (for line numbers)."""
    fh, size = _open_regular(path)
    with fh:
        if max_bytes is not None and size > max_bytes:
            raise _fail(
                path,
                f"{_human(size)}, more than the {_human(max_bytes)} allowed "
                "(drift_detection.max_reference_mb)",
            )
        try:
            raw = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        except OSError as exc:
            raise _fail(path, f"cannot read: {exc.strerror}") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise _fail(path, f"grew past {_human(max_bytes)} while being read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not valid UTF-8 (byte {exc.start})") from None
    try:
        return _loads(text), text
    except json.JSONDecodeError as exc:
        raise _fail(
            path, f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise _fail(path, "not a reference: JSON nested too deeply") from None


def _json_kind_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, _BadNumber)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _features_from_json(
    data: object, path: Path, cap: int | None, seed: int, text: str | None = None
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
            elif isinstance(v, _BadNumber):
                raise _fail(path, f"value at index {i}: {_bad_number(v, text)}", name)
            elif categorical:
                if not isinstance(v, str):
                    raise _fail(
                        path,
                        f"value at index {i} is {_json_kind_name(v)} ({_short_json(v)}), "
                        "expected a string (the feature's first value is a string)",
                        name,
                    )
                acc.add_text(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                acc.add_number(float(v), "")
            else:
                raise _fail(
                    path,
                    f"value at index {i} is not a number: {_short_json(v)}",
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

    Written through :func:`edge_actors.safe_write.write_atomic`: a private
    temporary file next to the target, renamed over it, so a reader never sees
    half a file; a target that is not a regular file (a device, a FIFO, a
    symlink) is refused. A new file is 0600: a reference holds a training sample.
    """
    from edge_actors.safe_write import write_atomic

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

    def write(fh: IO[bytes]) -> None:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]

    write_atomic(Path(path), write)


def _check_members(path: Path, zf: zipfile.ZipFile, file_size: int, max_bytes: int) -> None:
    """Refuse an archive whose declared sizes are impossible or too large, before reading.

    Each member's declared (uncompressed) size bounds what reading it can
    produce, so checking the declarations is enough to bound memory: a zip bomb
    declaring 8 GiB in an 8 MB file fails here, having allocated nothing.
    """
    infos = zf.infolist()
    if len(infos) > _MAX_NPZ_MEMBERS:
        raise _fail(path, f"corrupt reference file: {len(infos)} members")
    total = 0
    for info in infos:
        name = _shown(info.filename)
        if info.compress_size > file_size:
            raise _fail(
                path,
                f"corrupt reference file: member {name} declares {info.compress_size} "
                f"compressed bytes in a file of {file_size}",
            )
        limit = (
            info.compress_size
            if info.compress_type == zipfile.ZIP_STORED
            else info.compress_size * _MAX_DEFLATE_RATIO + 1024
        )
        if info.file_size > limit:
            raise _fail(
                path,
                f"corrupt reference file: member {name} declares {_human(info.file_size)} "
                f"from {info.compress_size} compressed bytes, more than compression allows",
            )
        total += info.file_size
    if total > max_bytes:
        raise _fail(
            path,
            f"declares {_human(total)} of uncompressed data, more than the {_human(max_bytes)} "
            "allowed (drift_detection.max_reference_mb)",
        )


class _PickleRefused(ValueError):
    """An object array (it would need a pickle); worded as ``np.load`` words it."""


def _read_member(path: Path, zf: zipfile.ZipFile, name: str) -> npt.NDArray[Any]:
    """Read one ``.npy`` member; its array header must match the member's size exactly."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise _fail(path, f"corrupt reference file: no member {name}") from None
    with zf.open(info) as member:
        data = member.read(info.file_size + 1)
    fmt = np.lib.format
    buf = io.BytesIO(data)
    version = fmt.read_magic(buf)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(buf)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(buf)
    else:
        raise ValueError(f"{name}: unsupported .npy version {version}")
    if dtype.hasobject:
        raise _PickleRefused("Object arrays cannot be loaded when allow_pickle=False")
    count = math.prod(shape)
    declared = count * dtype.itemsize
    held = len(data) - buf.tell()
    if declared != held:
        raise ValueError(
            f"{name}: its header declares {_human(declared)}, the member holds {_human(held)}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=buf.tell())
    return arr.reshape(shape, order="F" if fortran else "C")


def _meta_float(fm: Mapping[str, Any], key: str) -> float:
    value = fm[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} is not a number")
    return float(value)


def _feature_from_meta(
    path: Path, fm: object, values: npt.NDArray[Any], known: set[str]
) -> FeatureReference:
    """Check one feature's metadata and sample: finite bounds and values, sane counts."""
    if not isinstance(fm, dict) or not isinstance(fm.get("name"), str):
        raise _fail(path, "corrupt reference file: feature metadata without a name")
    name: str = fm["name"]
    if name in known:
        raise _fail(path, "corrupt reference file: feature listed twice", name)
    kind = fm.get("kind")
    if kind not in ("numeric", "categorical"):
        raise _fail(path, f"corrupt reference file: unknown kind {_short_json(kind)}", name)
    n = fm["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise _fail(path, f"corrupt reference file: n is {_short_json(n)}", name)
    nan_rate = _meta_float(fm, "nan_rate")
    if not 0.0 <= nan_rate <= 1.0:
        raise _fail(path, f"corrupt reference file: nan_rate {nan_rate} is not in [0, 1]", name)
    lo, hi = _meta_float(fm, "min"), _meta_float(fm, "max")
    if values.dtype != np.dtype("<f8") or values.ndim != 1:
        raise _fail(path, f"corrupt reference file: sample is {values.dtype} {values.shape}", name)
    if kind == "numeric":
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise _fail(
                path, f"min {lo} / max {hi} must be finite: a bound of ±inf disables checks", name
            )
        if values.size == 0 or not np.isfinite(values).all():
            raise _fail(path, "sample holds no values, or non-finite ones (NaN, ±inf)", name)
    categories = fm.get("categories")
    if not isinstance(categories, list):
        raise _fail(path, "corrupt reference file: categories is not a list", name)
    counts: dict[str, int] = {}
    for pair in categories:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not isinstance(pair[0], str)
            or isinstance(pair[1], bool)
            or not isinstance(pair[1], int)
            or pair[1] < 0
        ):
            raise _fail(path, f"corrupt reference file: category {_short_json(pair)}", name)
        counts[pair[0]] = pair[1]
    return FeatureReference(
        name=name,
        kind=_kind(kind == "categorical"),
        sorted_values=values,
        n=n,
        min=lo,
        max=hi,
        nan_rate=nan_rate,
        category_counts=counts,
    )


def _load_npz(path: Path, fh: IO[bytes], file_size: int, max_bytes: int) -> Reference:
    try:
        with zipfile.ZipFile(fh) as zf:
            _check_members(path, zf, file_size, max_bytes)
            if f"{_META_KEY}.npy" not in zf.namelist():
                raise _fail(path, "corrupt reference file: no metadata")
            try:
                raw_meta = _read_member(path, zf, f"{_META_KEY}.npy")
                if raw_meta.dtype != np.uint8:
                    raise ValueError("not a uint8 array")
                # NaN is legitimate here: the min/max of a categorical feature.
                meta = json.loads(raw_meta.tobytes().decode("utf-8"))
            except _PickleRefused:
                raise
            except (ValueError, RecursionError):
                raise _fail(path, "corrupt reference file: unreadable metadata") from None
            if not isinstance(meta, dict):
                raise _fail(path, "corrupt reference file: metadata is not an object")
            version = meta.get("format_version")
            if version != FORMAT_VERSION:
                found = "none" if version is None else _short_json(version)
                raise _fail(
                    path,
                    f"unsupported reference format version: found {found}, "
                    f"supported {FORMAT_VERSION}",
                )
            listed = meta["features"]
            if not isinstance(listed, list):
                raise TypeError("features is not a list")
            features: list[FeatureReference] = []
            known: set[str] = set()
            for i, fm in enumerate(listed):
                values = _read_member(path, zf, f"v{i}.npy")
                feat = _feature_from_meta(path, fm, values, known)
                known.add(feat.name)
                features.append(feat)
    except ReferenceError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        IndexError,
        OverflowError,
        struct.error,
        NotImplementedError,  # an unsupported zip feature (version, compression)
        RuntimeError,  # an encrypted member
    ) as exc:
        kind = "ValueError" if isinstance(exc, _PickleRefused) else type(exc).__name__
        raise _fail(path, f"corrupt reference file: {kind}: {exc}") from None
    ref = Reference.from_features(features, source=str(path))
    if ref.content_hash != meta.get("content_hash"):
        raise _fail(
            path,
            f"corrupt reference file: content hash {ref.content_hash} does not match "
            f"the stored {_printable(str(meta.get('content_hash')))[:80]}",
        )
    return ref


# ---------------------------------------------------------------------------
# Public loading


def load_reference(
    path: str | os.PathLike[str],
    *,
    cap: int | None = None,
    seed: int = 0,
    max_bytes: int = DEFAULT_MAX_REFERENCE_BYTES,
) -> Reference:
    """Load a reference from the seed's JSON or a native ``.npz`` (told apart by content).

    ``cap`` optionally subsamples the numeric features of a JSON file (``n``,
    ``min``, ``max`` and the NaN rate stay exact); a ``.npz`` is already compact.
    The file must be a regular file; a JSON file may be at most ``max_bytes``
    long, a ``.npz`` may declare at most ``max_bytes`` of uncompressed data.
    Values must be finite (NaN, ±Infinity are refused with the feature and line).
    Raises :class:`ReferenceError` naming the file, the feature and the reason.
    """
    p = Path(path)
    fh, size = _open_regular(p)
    with fh:
        try:
            head = fh.read(4)
        except OSError as exc:
            raise _fail(p, f"cannot read: {exc.strerror}") from None
        if head == _ZIP_MAGIC:
            fh.seek(0)
            return _load_npz(p, fh, size, max_bytes)
    if p.suffix == ".npz":
        # np.load would take it for a pickle and suggest allow_pickle=True: never.
        raise _fail(p, "corrupt reference file: not a .npz (zip) archive")
    data, text = _read_json(p, max_bytes)
    return Reference.from_features(_features_from_json(data, p, cap, seed, text), source=str(p))


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


def _text_lines(path: Path, progress: Progress | None, max_line: int) -> Iterator[str]:
    """Yield decoded lines of ``path`` (gzip when it ends in ``.gz``), streaming.

    A line longer than ``max_line`` bytes is refused once that much is read: a
    2 GB file without a newline must not be read whole into memory.
    """
    total = path.stat().st_size
    with open(path, "rb") as raw:
        counter = _ByteCounter(raw, total, progress)
        stream: IO[bytes] = (
            cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if path.suffix == ".gz" else raw
        )
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        lineno = 0
        while line := stream.readline(max_line + 1):
            lineno += 1
            if len(line) > max_line:
                raise _fail(
                    path,
                    f"line {lineno} is longer than {_human(max_line)}: not line-oriented "
                    "training data",
                )
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
    max_line: int,
) -> list[FeatureReference]:
    reader = csv.reader(_text_lines(path, progress, max_line), delimiter=delimiter)
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
                    if math.isinf(x):
                        raise _fail(
                            path,
                            f"line {reader.line_num}: {_shown(text)} is not a finite number "
                            "(leave the cell empty for a missing value)",
                            acc.name,
                        )
                    acc.add_number(x, text)
    except csv.Error as exc:
        raise _fail(path, f"line {reader.line_num}: {exc}") from None
    return [a.finish(str(path)) for a in accs]


def _build_ndjson(
    path: Path,
    cap: int,
    seed: int,
    kinds: Mapping[str, Kind],
    progress: Progress | None,
    max_line: int,
) -> list[FeatureReference]:
    accs: dict[str, _Accumulator] = {}
    for lineno, line in enumerate(_text_lines(path, progress, max_line), start=1):
        if not line.strip():
            continue
        try:
            obj = _loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            raise _fail(
                path, f"line {lineno}: not valid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        except RecursionError:
            raise _fail(path, f"line {lineno}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise _fail(path, f"line {lineno}: must be a JSON object, got {_json_kind_name(obj)}")
        record = _flatten(obj, path, lineno)
        for name, v in record.items():
            acc = accs.get(name)
            if acc is None:
                acc = accs[name] = _Accumulator(name, cap, seed, kinds.get(name))
            if v is None:
                acc.add_missing()
            elif isinstance(v, _BadNumber):
                raise _fail(path, f"line {lineno}: {_bad_number(v, None)}", name)
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
                values = col.astype(np.float64)
                inf = np.flatnonzero(np.isinf(values))
                if inf.size:
                    raise _fail(
                        path,
                        f"row {start + int(inf[0])} is {values[inf[0]]}: not a finite number",
                        acc.name,
                    )
                acc.add_array(values)
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
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
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
    as ``progress(bytes_done, bytes_total)`` now and then. A CSV/NDJSON line longer
    than ``max_line_bytes`` is refused; NaN/±Infinity numbers are refused (an empty
    cell or ``null`` marks a missing value).
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
        delimiter = "," if fmt == "csv" else "\t"
        feats = _build_csv(p, cap, seed, kinds, progress, delimiter, max_line_bytes)
    elif fmt == "ndjson":
        feats = _build_ndjson(p, cap, seed, kinds, progress, max_line_bytes)
    elif fmt == "npy":
        feats = _build_npy(p, cap, seed, names, kinds, progress)
    else:
        data, text = _read_json(p)
        feats = _features_from_json(data, p, cap, seed, text)
        if progress is not None:
            progress(size, size)
    logger.info("built reference from %s: %d features", p, len(feats))
    return Reference.from_features(feats, source=str(p))


# ---------------------------------------------------------------------------
# Describing


def describe_reference(ref: Reference) -> str:
    """Return a human summary: one line per feature, then the hash and version."""
    # Names and categories come from a file: escaped, so none can rewrite the terminal.
    source = _printable(ref.source) or "(in memory)"
    lines = [f"reference {source}: {len(ref.features)} features"]
    shown = {name: _printable(name) for name in ref.features}
    width = max((len(n) for n in shown.values()), default=0)
    for name in sorted(ref.features):
        f = ref.features[name]
        if f.kind == "numeric":
            detail = f"min {f.min:.6g}  max {f.max:.6g}  sample {f.sample_size}"
        else:
            top = sorted(f.category_counts.items(), key=lambda kv: (-kv[1], kv[0]))
            cats = ", ".join(f"{_printable(k)} {c / f.n:.1%}" for k, c in top[:3])
            more = f" (+{len(top) - 3} more)" if len(top) > 3 else ""
            detail = f"{len(top)} categories: {cats}{more}"
        lines.append(
            f"  {shown[name]:<{width}}  {f.kind:<11}  n {f.n:<8}  nan {f.nan_rate:.2%}  {detail}"
        )
    lines.append(f"hash {ref.content_hash}  format version {ref.format_version}")
    return "\n".join(lines)
