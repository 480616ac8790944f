"""Record layouts of every ring, as numpy structured dtypes, declared in one place.

All fields are 8-byte aligned and 8 bytes wide (or byte strings padded to a
multiple of 8) so a slot never has hidden padding and the producer can write a
whole record with one ``struct.pack_into``.
"""

from __future__ import annotations

import struct

import numpy as np

#: Model record kinds: one record may carry inputs and outputs, or only one side.
KIND_PAIR = 0
KIND_INPUT = 1
KIND_OUTPUT = 2
#: Ground truth for an earlier prediction: ``id`` is the prediction's, the
#: output slots hold the true values (inputs NaN); see ``Producer.log_feedback``.
KIND_FEEDBACK = 3
KIND_NAMES = {
    KIND_PAIR: "pair",
    KIND_INPUT: "input",
    KIND_OUTPUT: "output",
    KIND_FEEDBACK: "feedback",
}

MODEL_HEAD: list[tuple[str, str]] = [("t_ns", "<i8"), ("id", "<i8"), ("kind", "<i8")]


def model_dtype(n_values: int) -> np.dtype[np.void]:
    """A model lane record: time, id, kind, then inputs followed by outputs as float64.

    Categorical fields carry their category index as a float (-1 = not in the
    declared categories); missing values are NaN.
    """
    if n_values < 1:
        raise ValueError("a model record needs at least one value")
    return np.dtype([*MODEL_HEAD, ("v", "<f8", (n_values,))])


def model_struct(n_values: int) -> struct.Struct:
    """The :func:`model_dtype` record as a ``struct`` (what the producer packs into).

    ``pack_into(buf, 0, t_ns, id, kind, *values)`` writes exactly the bytes of
    one ``model_dtype(n_values)`` record, and validates every value as it goes.
    """
    if n_values < 1:
        raise ValueError("a model record needs at least one value")
    return struct.Struct(f"<qqq{n_values}d")


#: Scalar system metrics, in record order. NaN where the platform lacks one.
SYSTEM_FIELDS: tuple[str, ...] = (
    "cpu_percent",
    "load1",
    "load5",
    "load15",
    "mem_total",
    "mem_available",
    "mem_percent",
    "swap_used",
    "swap_percent",
    "disk_total",
    "disk_used",
    "disk_percent",
    "disk_read_bytes",
    "disk_write_bytes",
    "net_bytes_sent",
    "net_bytes_recv",
    "net_errin",
    "net_errout",
    "temp_max_c",
    "cpu_freq_mhz",
    "cpu_freq_max_mhz",
    "uptime_s",
)
#: Per-core CPU percentages kept per sample; more cores are folded into the total only.
MAX_CORES = 16

SYSTEM_DTYPE = np.dtype(
    [("t_ns", "<i8"), *[(f, "<f8") for f in SYSTEM_FIELDS], ("cpu_per_core", "<f8", (MAX_CORES,))]
)

#: One agent or producer process, sampled with the system record.
PROCESS_DTYPE = np.dtype(
    [
        ("t_ns", "<i8"),
        ("pid", "<i8"),
        ("role", "S16"),
        ("cpu_percent", "<f8"),
        ("uss", "<f8"),
        ("rss", "<f8"),
        ("num_threads", "<i8"),
    ]
)

#: Drift states and checks (docs/design.md, "Drift worker").
EVENT_DTYPE = np.dtype(
    [
        ("t_ns", "<i8"),
        ("feature", "S64"),
        ("test", "S16"),
        # 24: ``performance_recovered`` (21 characters) must fit.
        ("state", "S24"),
        ("correction", "S16"),
        ("ref_hash", "S16"),
        ("statistic", "<f8"),
        ("p_value", "<f8"),
        ("threshold", "<f8"),
        ("window_size", "<i8"),
        ("n_ref", "<i8"),
        ("seq_first", "<i8"),
        ("seq_last", "<i8"),
        # Effective sample size of the tested window (dependence and NaNs removed).
        ("n_eff", "<f8"),
        # The model and version the event is about (empty in a ring of an older agent).
        ("model", "S64"),
        ("model_version", "S64"),
        # Performance events: share of predictions with truth, median label delay (s).
        ("coverage", "<f8"),
        ("label_delay_s", "<f8"),
    ]
)


#: The head of a payload record (:func:`payload_dtype`): t_ns, id, kind, len; the
#: JSON bytes follow it.
PAYLOAD_HEAD = struct.Struct("<qqqq")


def payload_dtype(slot_bytes: int) -> np.dtype[np.void]:
    """A payload record: the JSON (orjson) of non-numeric values logged with a model record."""
    data = max(8, slot_bytes - PAYLOAD_HEAD.size)
    data += (-data) % 8
    return np.dtype(
        [("t_ns", "<i8"), ("id", "<i8"), ("kind", "<i8"), ("len", "<i8"), ("data", "u1", (data,))]
    )


def dtype_fingerprint(dtype: np.dtype[np.void]) -> int:
    """A stable signed 64-bit hash of a dtype's layout, stored in ring headers."""
    from edge_actors.hashing import sha256_digest

    digest = sha256_digest(repr(dtype.descr).encode())
    return int.from_bytes(digest[:8], "little", signed=True)
