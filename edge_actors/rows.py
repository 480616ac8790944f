"""Ring records to the JSON rows that are stored in the outbox and uploaded.

One flat-ish object per record, with a UTC ``time`` string and ``ts``
(epoch seconds) so that Athena, Trino, Spark and DuckDB can all read the NDJSON
without a schema file. NaN becomes ``null`` (orjson does that).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_actors.records import KIND_INPUT, KIND_NAMES, KIND_OUTPUT, SYSTEM_FIELDS

OTHER = "__OTHER__"
_UTC = dt.timezone.utc


def iso(t_ns: int) -> str:
    """UTC ISO-8601 with microseconds and a Z."""
    return dt.datetime.fromtimestamp(t_ns / 1e9, _UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ModelRows:
    """Decodes model lane records with the config's field names and categories."""

    def __init__(
        self, device_id: str, model: str, inputs: Sequence[Any], outputs: Sequence[Any]
    ) -> None:
        self.device_id = device_id
        self.model = model
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
                "id": rid,
                "kind": KIND_NAMES.get(kind, str(kind)),
                "lane": lane,
                "lane_seq": seq,
            }
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
    """One row per drift event."""
    out = []
    for r in records:
        t_ns = int(r["t_ns"])
        out.append(
            {
                "time": iso(t_ns),
                "ts": t_ns / 1e9,
                "device_id": device_id,
                "model": model,
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
            }
        )
    return out


def payload_rows(
    device_id: str, model: str, lane: str, records: npt.NDArray[Any]
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
                "id": int(r["id"]),
                "kind": KIND_NAMES.get(int(r["kind"]), str(int(r["kind"]))),
                "lane": lane,
                "payload": value,
            }
        )
    return out
