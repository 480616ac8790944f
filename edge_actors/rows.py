"""Ring records to the JSON rows that are stored in the outbox and uploaded.

One flat-ish object per record, with a UTC ``time`` string and ``ts``
(epoch seconds) so that Athena, Trino, Spark and DuckDB can all read the NDJSON
without a schema file. NaN becomes ``null`` (orjson does that).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_actors.records import KIND_FEEDBACK, KIND_INPUT, KIND_NAMES, KIND_OUTPUT, SYSTEM_FIELDS

OTHER = "__OTHER__"
_UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1)


def iso(t_ns: int) -> str:
    """UTC ISO-8601 with microseconds and a Z."""
    return dt.datetime.fromtimestamp(t_ns / 1e9, _UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ModelRows:
    """Decodes model lane records with the config's field names and categories."""

    def __init__(
        self,
        device_id: str,
        model: str,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
        model_version: str = "",
    ) -> None:
        self.device_id = device_id
        self.model = model
        self.model_version = model_version
        self.in_names = [f.name for f in inputs]
        self.out_names = [f.name for f in outputs]
        self.n_in = len(self.in_names)
        fields = [*inputs, *outputs]
        self.cats = {i: list(f.categories) for i, f in enumerate(fields) if f.kind == "categorical"}

    def _decode(self, vals: list[Any]) -> list[Any]:
        for i, cats in self.cats.items():
            v = vals[i]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                vals[i] = None
            else:
                k = int(v)
                vals[i] = cats[k] if 0 <= k < len(cats) else OTHER
        return vals

    def rows(
        self, lane: str, records: npt.NDArray[Any], seqs: npt.NDArray[np.int64]
    ) -> list[dict[str, Any]]:
        """One row per record of a lane."""
        out = []
        n_in = self.n_in
        in_names, out_names = self.in_names, self.out_names
        for t_ns, rid, kind, vals, seq in zip(
            records["t_ns"].tolist(),
            records["id"].tolist(),
            records["kind"].tolist(),
            records["v"].tolist(),
            seqs.tolist(),
            strict=True,
        ):
            if self.cats:
                vals = self._decode(vals)
            row: dict[str, Any] = {
                "time": iso(t_ns),
                "ts": t_ns / 1e9,
                "device_id": self.device_id,
                "model": self.model,
                "model_version": self.model_version,
                "id": rid,
                "kind": KIND_NAMES.get(kind, str(kind)),
                "lane": lane,
                "lane_seq": seq,
            }
            if kind == KIND_FEEDBACK:
                row["truth"] = dict(zip(out_names, vals[n_in : n_in + len(out_names)], strict=True))
                out.append(row)
                continue
            if kind != KIND_OUTPUT:
                row["inputs"] = dict(zip(in_names, vals[:n_in], strict=True))
            if kind != KIND_INPUT:
                row["outputs"] = dict(
                    zip(out_names, vals[n_in : n_in + len(out_names)], strict=True)
                )
            out.append(row)
        return out


def system_rows(device_id: str, records: npt.NDArray[Any]) -> list[dict[str, Any]]:
    """One row per system sample."""
    out = []
    for rec in records:
        t_ns = int(rec["t_ns"])
        row: dict[str, Any] = {"time": iso(t_ns), "ts": t_ns / 1e9, "device_id": device_id}
        for f in SYSTEM_FIELDS:
            row[f] = float(rec[f])
        cores = rec["cpu_per_core"]
        row["cpu_per_core"] = [float(c) for c in cores[~np.isnan(cores)]]
        out.append(row)
    return out


def process_rows(device_id: str, records: npt.NDArray[Any]) -> list[dict[str, Any]]:
    """One row per sampled agent or producer process."""
    return [
        {
            "time": iso(int(r["t_ns"])),
            "ts": int(r["t_ns"]) / 1e9,
            "device_id": device_id,
            "pid": int(r["pid"]),
            "role": bytes(r["role"]).decode(errors="replace"),
            "cpu_percent": float(r["cpu_percent"]),
            "uss": float(r["uss"]),
            "rss": float(r["rss"]),
            "num_threads": int(r["num_threads"]),
        }
        for r in records
    ]


def event_rows(device_id: str, model: str, records: npt.NDArray[Any]) -> list[dict[str, Any]]:
    """One row per drift event; ``model`` for an event that names none (an older agent's)."""
    out = []
    for r in records:
        t_ns = int(r["t_ns"])
        own = bytes(r["model"]).decode(errors="replace")
        out.append(
            {
                "time": iso(t_ns),
                "ts": t_ns / 1e9,
                "device_id": device_id,
                "model": own or model,
                "model_version": bytes(r["model_version"]).decode(errors="replace"),
                "feature": bytes(r["feature"]).decode(errors="replace"),
                "test": bytes(r["test"]).decode(),
                "state": bytes(r["state"]).decode(),
                "statistic": float(r["statistic"]),
                "p_value": float(r["p_value"]),
                "threshold": float(r["threshold"]),
                "correction": bytes(r["correction"]).decode(),
                "window_size": int(r["window_size"]),
                "n_ref": int(r["n_ref"]),
                "seq_first": int(r["seq_first"]),
                "seq_last": int(r["seq_last"]),
                "n_eff": float(r["n_eff"]),
                "reference_hash": bytes(r["ref_hash"]).decode(errors="replace"),
                "coverage": float(r["coverage"]),
                "label_delay_s": float(r["label_delay_s"]),
            }
        )
    return out


def payload_rows(
    device_id: str, model: str, lane: str, records: npt.NDArray[Any], model_version: str = ""
) -> list[dict[str, Any]]:
    """One row per payload record: the non-numeric values logged with a model record."""
    from edge_actors.jsoncompat import orjson

    out = []
    for r in records:
        t_ns = int(r["t_ns"])
        n = int(r["len"])
        raw = r["data"][: max(0, min(n, len(r["data"])))].tobytes()
        try:
            value: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = {"_undecodable": raw.decode(errors="replace")}
        out.append(
            {
                "time": iso(t_ns),
                "ts": t_ns / 1e9,
                "device_id": device_id,
                "model": model,
                "model_version": model_version,
                "id": int(r["id"]),
                "kind": KIND_NAMES.get(int(r["kind"]), str(int(r["kind"]))),
                "lane": lane,
                "payload": value,
            }
        )
    return out


# ------------------------------------------------------------ block rendering
#
# The uploader stores model and payload records in their ring layout (numpy
# blocks, see edge_actors.outbox) and the NDJSON is built here only when an
# object is uploaded, column by column: every column becomes a list of JSON
# tokens in one orjson call, and the lines are the tokens interleaved with
# the constant parts of the row. No dict and no per-record Python call; the
# bytes are those ``ModelRows.rows`` / ``payload_rows`` + orjson give.


def _tokens(values: npt.NDArray[Any]) -> list[bytes]:
    """JSON tokens of a 1-D numeric array (NaN and infinities become ``null``)."""
    from edge_actors.jsoncompat import orjson

    if not len(values):
        return []
    raw = orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)
    return raw[1:-1].split(b",")


def _json(value: Any) -> bytes:
    from edge_actors.jsoncompat import orjson

    return orjson.dumps(value)


def _iso_tokens(
    t_ns: npt.NDArray[np.int64], before: bytes = b"", after: bytes = b""
) -> list[bytes]:
    """``"YYYY-MM-DDTHH:MM:SS.ffffffZ"`` tokens, rounded like :func:`iso`.

    ``before`` and ``after`` (the row's constant bytes around the token) are
    written into each token: fewer parts for :func:`_interleave` to join.

    :func:`iso` goes through ``datetime.fromtimestamp(t_ns / 1e9)``, which rounds
    the float's fraction of a second half-even to microseconds; the same here.
    The digits are computed as numbers into a byte matrix (numpy's own date
    formatting costs microseconds per value); the date part once per day.
    """
    n = len(t_ns)
    ts = t_ns / 1e9
    sec = np.floor(ts)
    total = sec.astype(np.int64) * 1_000_000 + np.round((ts - sec) * 1e6).astype(np.int64)
    days, tod = np.divmod(total, 86_400_000_000)
    b, w = len(before), len(before) + 29 + len(after)
    full = np.empty((n, w), np.uint8)
    if before:
        full[:, :b] = np.frombuffer(before, np.uint8)
    if after:
        full[:, b + 29 :] = np.frombuffer(after, np.uint8)
    out = full[:, b : b + 29]
    first, last = int(days.min()), int(days.max())
    if first == last:  # the common case: one block, one day
        out[:, :12] = np.frombuffer(_date_token(first), np.uint8)
    else:
        uniq, inverse = np.unique(days, return_inverse=True)
        dates = b"".join(_date_token(int(d)) for d in uniq)
        out[:, :12] = np.frombuffer(dates, np.uint8).reshape(-1, 12)[inverse.ravel()]
    out[:, 14] = out[:, 17] = ord(":")
    out[:, 20] = ord(".")
    out[:, 27] = ord("Z")
    out[:, 28] = ord('"')
    hh, rest = np.divmod(tod, 3_600_000_000)
    mm, rest = np.divmod(rest, 60_000_000)
    ss, us = np.divmod(rest, 1_000_000)
    # Two digits per table lookup: half the passes of a digit-by-digit divmod.
    hi, lo = np.divmod(us, 10_000)
    mid, lo = np.divmod(lo, 100)
    for value, col in ((hh, 12), (mm, 15), (ss, 18), (hi, 21), (mid, 23), (lo, 25)):
        out[:, col : col + 2] = _TWO_DIGITS[value]
    # Every token ends with '"' or ``after``'s last byte: no trailing NUL for S to strip.
    tokens: list[bytes] = full.view(f"S{w}").ravel().tolist()
    return tokens


_TWO_DIGITS = np.array([[48 + i // 10, 48 + i % 10] for i in range(100)], np.uint8)


def _date_token(day: int) -> bytes:
    """``"YYYY-MM-DDT`` of a day number since the epoch."""
    return (_EPOCH + dt.timedelta(days=day)).strftime('"%Y-%m-%dT').encode()


def _interleave(columns: Sequence[list[bytes] | bytes], n: int) -> bytes:
    """Concatenate row ``i`` of every column, for every row: constant bytes or per-row tokens."""
    merged: list[list[bytes] | bytes] = []
    for col in columns:  # adjacent constants join once, not once per row
        if isinstance(col, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += col
        else:
            merged.append(col)
    k = len(merged)
    # The constants are laid by repeating one row's template; only the tokens are placed.
    parts: list[bytes] = [col if isinstance(col, bytes) else b"" for col in merged] * n
    for j, col in enumerate(merged):
        if not isinstance(col, bytes):
            parts[j::k] = col
    return b"".join(parts)


def _masked(tokens: list[bytes], keep: npt.NDArray[np.bool_] | None) -> list[bytes]:
    if keep is None:
        return tokens
    arr = np.array(tokens, dtype=object)
    arr[~keep] = b""
    out: list[bytes] = arr.tolist()
    return out


def _const(text: bytes, n: int, keep: npt.NDArray[np.bool_] | None) -> list[bytes] | bytes:
    if keep is None:
        return text
    arr = np.full(n, text, dtype=object)
    arr[~keep] = b""
    out: list[bytes] = arr.tolist()
    return out


def block_spec(kind: str, **fields: Any) -> dict[str, Any]:
    """The render parameters of a block: ``kind`` (``lane``, ``feedback`` or ``payload``) and names.

    ``lane``: ``device_id``, ``model``, ``model_version``, ``lane``, ``inputs``,
    ``outputs`` (names), ``cats`` (``{index: [category, ...]}``). ``feedback``
    (lane records of kind feedback): the same; the output slots render as
    ``truth``. ``payload``: ``device_id``, ``model``, ``model_version``,
    ``lane``. A spec stored by an older agent has no ``model_version``:
    rendered as ``""``. Stored with the blocks, so a batch rebuilt after a
    config change renders the same bytes.
    """
    if kind not in ("lane", "payload", "feedback"):
        raise ValueError(f"block kind: must be 'lane', 'feedback' or 'payload', got {kind!r}")
    return {"kind": kind, **fields}


def render_block(
    spec: Mapping[str, Any],
    records: npt.NDArray[Any],
    ring_seqs: npt.NDArray[np.int64],
    first_seq: int,
) -> bytes:
    """NDJSON of a block: one ``\\n``-terminated line per record, ``seq`` from ``first_seq``."""
    n = len(records)
    if n == 0:
        return b""
    seqs = _tokens(np.arange(first_seq, first_seq + n, dtype=np.int64))
    t_ns = records["t_ns"]
    head: list[list[bytes] | bytes] = [
        b'{"seq":',
        seqs,
        _iso_tokens(t_ns, b',"time":', b',"ts":'),
        _tokens(t_ns / 1e9),
        b',"device_id":'
        + _json(spec["device_id"])
        + b',"model":'
        + _json(spec["model"])
        + b',"model_version":'
        + _json(spec.get("model_version", ""))
        + b',"id":',
        _tokens(records["id"]),
        b',"kind":',
    ]
    kinds = records["kind"]
    kind_tok = {k: _json(name) for k, name in KIND_NAMES.items()}
    if spec["kind"] == "payload":
        return _interleave(
            [
                *head,
                _kind_tokens(kinds, kind_tok),
                b',"lane":' + _json(spec["lane"]) + b',"payload":',
                _payload_tokens(records),
                b"}\n",
            ],
            n,
        )
    cols: list[list[bytes] | bytes] = [
        *head,
        _kind_tokens(kinds, kind_tok),
        b',"lane":' + _json(spec["lane"]) + b',"lane_seq":',
        _tokens(ring_seqs),
    ]
    inputs, outputs = list(spec["inputs"]), list(spec["outputs"])
    cats = {int(i): list(c) for i, c in spec.get("cats", {}).items()}
    vals = records["v"]
    has_in = None if not np.any(kinds == KIND_OUTPUT) else kinds != KIND_OUTPUT
    has_out = None if not np.any(kinds == KIND_INPUT) else kinds != KIND_INPUT
    sides: tuple[tuple[str, list[Any], int, npt.NDArray[np.bool_] | None], ...] = (
        ("inputs", inputs, 0, has_in),
        ("outputs", outputs, len(inputs), has_out),
    )
    if spec["kind"] == "feedback":
        sides = (("truth", outputs, len(inputs), None),)
    for side, names, offset, keep in sides:
        if keep is not None and not keep.any():
            continue
        if not names:
            cols.append(_const(b',"' + side.encode() + b'":{}', n, keep))
            continue
        for j, name in enumerate(names):
            lead = b',"' + side.encode() + b'":{' if j == 0 else b","
            cols.append(_const(lead + _json(name) + b":", n, keep))
            i = offset + j
            column = vals[:, i]
            toks = _cat_tokens(column, cats[i]) if i in cats else _tokens(column)
            cols.append(_masked(toks, keep))
        cols.append(_const(b"}", n, keep))
    cols.append(b"}\n")
    return _interleave(cols, n)


def _kind_tokens(kinds: npt.NDArray[np.int64], names: Mapping[int, bytes]) -> list[bytes] | bytes:
    if int(kinds.min()) == int(kinds.max()):
        # One kind in the block (the common case): a constant, which _interleave
        # joins with its neighbours once instead of once per row.
        k = int(kinds[0])
        return names.get(k, _json(str(k)))
    uniq = np.unique(kinds)
    table = np.array([names.get(int(k), _json(str(int(k)))) for k in uniq], dtype=object)
    out: list[bytes] = table[np.searchsorted(uniq, kinds)].tolist()
    return out


def _cat_tokens(column: npt.NDArray[np.float64], cats: list[Any]) -> list[bytes]:
    """Category index -> JSON of the category (``OTHER`` out of range, ``null`` for NaN)."""
    table = np.array([_json(c) for c in cats] + [_json(OTHER), b"null"], dtype=object)
    nan = np.isnan(column)
    idx = np.where(nan, 0, column).astype(np.int64)
    idx = np.where((idx < 0) | (idx >= len(cats)), len(cats), idx)
    idx[nan] = len(cats) + 1
    out: list[bytes] = table[idx].tolist()
    return out


def _payload_tokens(records: npt.NDArray[Any]) -> list[bytes]:
    """Each record's JSON as stored by the producer; checked, never re-encoded.

    The producer writes orjson output, which holds no NUL byte, so the
    record's bytes up to its ``len`` are its bytes up to the first trailing NUL
    (what an ``S`` view returns). A record that is not valid JSON (or whose
    ``len`` disagrees) becomes ``{"_undecodable": text}``, as in ``payload_rows``.
    """
    from edge_actors.jsoncompat import orjson

    data = np.ascontiguousarray(records["data"])
    width = data.shape[1]
    view = data.view(f"S{width}").ravel()
    raws: list[bytes] = view.tolist()
    ok = len(raws) > 0 and bool(np.all(records["len"] == np.char.str_len(view)))
    if ok:
        try:
            # One parse of all of them: n values back means n whole JSON values.
            ok = len(orjson.loads(b"[" + b",".join(raws) + b"]")) == len(raws)
        except orjson.JSONDecodeError:
            ok = False
    if ok:
        return raws
    out: list[bytes] = []
    for r in records:
        n = int(r["len"])
        raw = r["data"][: max(0, min(n, len(r["data"])))].tobytes()
        try:
            out.append(orjson.dumps(orjson.loads(raw)))
        except orjson.JSONDecodeError:
            out.append(orjson.dumps({"_undecodable": raw.decode(errors="replace")}))
    return out
