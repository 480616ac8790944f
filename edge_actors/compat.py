"""The seed library's components (``edge_mlops_monitor``), as thin adapters over the agent.

Code that used the seed's components directly keeps working with its import
lines changed::

    from edge_actors.compat import (
        DriftDetector, ModelLogger, SystemMonitor, TelemetryUploader,
        load_config, save_default_config,
    )

Each adapter keeps the seed's names, signatures and result shapes (plain dicts
with the seed's keys) and does its work through the agent:

* :class:`SystemMonitor` pauses/resumes the agent's sampler and reads the
  samples back from the agent's system ring (bounded by the ring).
* :class:`ModelLogger` logs through an :class:`~edge_actors.monitor.EdgeMonitor`
  (records go to the agent's outbox) and keeps a bounded in-process view of
  what it logged (``model_logging.buffer_size`` inputs and outputs, as the
  seed's FIFO buffer) for ``get_inputs`` and friends.
* :class:`DriftDetector` runs the seed's on-demand KS test in-process (with the
  agent's KS code, no scipy) and lists the agent's drift events next to its
  own results.
* :class:`TelemetryUploader` pauses/resumes the agent's uploads and asks it to
  ship now.

The adapters that need an agent start one as a child process when none runs
for the config's instance (as :meth:`EdgeMonitor.start` does); ``close()``
stops what they started. docs/operations.md ("Upgrading from the seed
library") lists what still differs and why.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

from edge_actors import config as _config
from edge_actors import control, topology
from edge_actors.monitor import EdgeMonitor

__all__ = [
    "DriftDetector",
    "DriftResult",
    "ModelInput",
    "ModelLogger",
    "ModelOutput",
    "SeedConfig",
    "SystemMetric",
    "SystemMonitor",
    "TelemetryBatch",
    "TelemetryUploader",
    "load_config",
    "save_default_config",
]

log = logging.getLogger(__name__)

#: The seed's config layout: its sections and their keys (``save_default_config`` writes these).
SEED_KEYS: dict[str, tuple[str, ...]] = {
    "system": ("sampling_interval_seconds", "max_memory_buffer_mb"),
    "model_logging": ("buffer_size", "log_level"),
    "drift_detection": ("algorithm", "threshold", "reference_data_path", "check_frequency"),
    "telemetry": (
        "upload_interval_seconds",
        "max_batch_size",
        "retry_base_delay_seconds",
        "retry_max_delay_seconds",
        "retry_max_attempts",
    ),
    "storage": ("type", "bucket", "prefix", "sqlite_path", "max_sqlite_size_mb"),
}
#: In-process drift results kept by :class:`DriftDetector` (the seed kept them all).
MAX_DRIFT_RESULTS = 10_000
_MB = 1024 * 1024


# --------------------------------------------------------------------------- data types
class SystemMetric(TypedDict):
    """One system metric value (the seed's shape)."""

    timestamp: float
    metric_type: str
    value: float
    device_id: str


class ModelInput(TypedDict):
    """A logged model input (the seed's shape)."""

    id: str
    timestamp: float
    input_data: dict[str, Any]
    device_id: str


class ModelOutput(TypedDict):
    """A logged model output (the seed's shape)."""

    id: str
    input_id: str
    timestamp: float
    output_data: dict[str, Any]
    device_id: str


class DriftResult(TypedDict):
    """One drift test result (the seed's shape)."""

    timestamp: float
    algorithm: str
    feature_name: str
    statistic: float
    p_value: float
    threshold: float
    is_drift: bool
    sample_size: int
    device_id: str


class TelemetryBatch(TypedDict):
    """The seed's batch layout (kept for type annotations in old code)."""

    batch_id: str
    timestamp: float
    device_id: str
    system_metrics: list[SystemMetric]
    model_inputs: list[ModelInput]
    model_outputs: list[ModelOutput]
    drift_results: list[DriftResult]


# --------------------------------------------------------------------------- config
class SeedConfig(dict[str, Any]):
    """The config as the seed's dict (sections of plain values), plus the loaded :attr:`config`.

    A plain ``dict``: old code reads and may change it; the adapters validate it
    again when they are given it.
    """

    def __init__(self, cfg: _config.Config) -> None:
        super().__init__(cfg.to_dict())
        #: The validated configuration this dict was made from.
        self.config = cfg


def load_config(config_path: str | os.PathLike[str] | None = None) -> SeedConfig:
    """Seed API: load and validate a YAML config; returns it as a dict (see :class:`SeedConfig`).

    Raises :class:`~edge_actors.config.ConfigError` (a ``ValueError``) listing
    every problem; for a missing file it is also a ``FileNotFoundError``, as
    the seed raised.
    """
    return SeedConfig(_config.load_config(config_path))


def save_default_config(output_path: str | os.PathLike[str] = "config.yaml") -> None:
    """Seed API: write the default configuration, in the seed's layout, as YAML.

    Only the seed's sections and keys are written, with this agent's defaults
    (storage ``local``: the seed's default ``s3`` needed a bucket to load).
    Paths derived from the file's folder and unset keys are left out.
    """
    import yaml

    plain = _config.parse_config({}, Path.cwd(), "<defaults>").to_dict()
    doc: dict[str, dict[str, Any]] = {}
    for section, keys in SEED_KEYS.items():
        values = plain[section]
        doc[section] = {
            k: values[k]
            for k in keys
            if values.get(k) is not None and k not in ("sqlite_path", "local_path")
        }
    path = Path(output_path)
    path.write_text(
        "# edge-actors defaults in the seed library's layout; see docs/configuration.md.\n"
        + yaml.safe_dump(doc, sort_keys=False),
        encoding="utf-8",
    )


def _as_config(config: Any) -> _config.Config:
    """A :class:`Config` from what the seed's components were given (dict, Config or path)."""
    if isinstance(config, _config.Config):
        return config
    if isinstance(config, SeedConfig) and dict(config) == config.config.to_dict():
        return config.config
    if isinstance(config, Mapping):
        return _config.parse_config(dict(config), Path.cwd(), "<config dict>")
    if config is None or isinstance(config, (str, os.PathLike)):
        return _config.load_config(config)
    raise TypeError(f"config: expected the dict from load_config, got {type(config).__name__}")


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip, as the seed stored and read back logged data."""
    result: dict[str, Any] = json.loads(json.dumps(dict(data), default=str))
    return result


# --------------------------------------------------------------------------- rings
def _read_ring(
    cfg: _config.Config, kind: str, after_seq: int
) -> tuple[npt.NDArray[Any], int] | None:
    """Records of one of the agent's rings written at or after ``after_seq``, and ``write_seq``.

    A reader that moves no cursor (the agent's consumers are not disturbed);
    records overwritten while copied are left out. ``None`` without an agent.
    """
    from edge_actors.fence import get_fence
    from edge_actors.ring import Ring, RingError

    try:
        ring = Ring.attach(topology.ring_name(cfg.instance, kind), topology.dtype_for(kind, cfg))
    except (RingError, OSError, ValueError):
        return None
    try:
        w = ring.write_seq
        seqs = np.arange(max(after_seq, w - ring.capacity, 0), w, dtype=np.int64)
        idx = seqs & ring.mask
        fence = get_fence()
        before = ring.stamps[idx]
        if fence is not None:
            fence()
        data = ring.slots[idx]
        if fence is not None:
            fence()
        ok = (before == seqs) & (ring.stamps[idx] == seqs)
        return data["rec"][ok], w
    finally:
        ring.close()


def _ring_end(cfg: _config.Config, kind: str) -> int:
    """The ring's current ``write_seq`` (0 without an agent)."""
    got = _read_ring(cfg, kind, 1 << 62)
    return 0 if got is None else got[1]


class _Adapter:
    """An :class:`EdgeMonitor` for the config, plus the seed's common attributes."""

    def __init__(self, config: Any, device_id: str, cfg: _config.Config | None = None) -> None:
        #: The config as given (old code reads it as a dict).
        self.config = config
        self._mon = EdgeMonitor(config=cfg or _as_config(config), device_id=device_id)
        self._cfg = self._mon.config
        #: The device id records carry.
        self.device_id: str = self._mon.device_id

    def close(self) -> None:
        """Stop what this adapter started (an agent it started stops; records are kept)."""
        self._mon.stop()


# --------------------------------------------------------------------------- system
def _metrics(row: Mapping[str, Any], device_id: str) -> list[SystemMetric]:
    """One agent system sample as the seed's metric list (its names first, then the rest)."""
    ts = float(row["ts"])

    def metric(name: str, value: Any) -> SystemMetric:
        return {"timestamp": ts, "metric_type": name, "value": float(value), "device_id": device_id}

    out = [metric("cpu_percent", row["cpu_percent"])] if row.get("cpu_percent") is not None else []
    out += [
        metric(f"cpu_percent_core_{i}", v)
        for i, v in enumerate(row.get("cpu_per_core") or ())
        if v is not None
    ]
    seed = {
        "memory_percent": row.get("mem_percent"),
        "memory_available_mb": None
        if row.get("mem_available") is None
        else row["mem_available"] / _MB,
        "disk_percent": row.get("disk_percent"),
        "disk_free_mb": None
        if row.get("disk_total") is None or row.get("disk_used") is None
        else (row["disk_total"] - row["disk_used"]) / _MB,
    }
    out += [metric(k, v) for k, v in seed.items() if v is not None]
    skip = {"time", "ts", "device_id", "cpu_percent", "cpu_per_core"}
    out += [
        metric(k, v)
        for k, v in row.items()
        if k not in skip and isinstance(v, (int, float)) and not np.isnan(v)
    ]
    return out


class SystemMonitor(_Adapter):
    """Seed API: system health metrics, sampled by the agent's sampler worker.

    Args:
        config: the dict from :func:`load_config` (or a ``Config``).
        device_id: overrides the config's ``device_id`` for an agent this starts.
    """

    def __init__(self, config: Any, device_id: str = "") -> None:
        super().__init__(config, device_id)
        self.sampling_interval = self._cfg.system.sampling_interval_seconds
        self._cleared = 0

    def start(self) -> None:
        """Start sampling: make sure the agent runs and its sampler is not paused."""
        self._mon.start_system_monitoring()

    def stop(self) -> None:
        """Stop sampling: pause the agent's sampler (until ``start``)."""
        self._mon.stop_system_monitoring()

    def get_metrics(self) -> list[SystemMetric]:
        """The samples the agent's system ring holds (since ``clear_metrics``), oldest first."""
        from edge_actors.rows import system_rows

        got = _read_ring(self._cfg, "system", self._cleared)
        if got is None:
            return []
        dev = self.device_id
        return [m for row in system_rows(dev, got[0]) for m in _metrics(row, dev)]

    def clear_metrics(self) -> None:
        """Forget the samples taken so far (they stay in the outbox for upload)."""
        self._cleared = _ring_end(self._cfg, "system")


# --------------------------------------------------------------------------- model logging
class ModelLogger(_Adapter):
    """Seed API: model input/output logging into the agent, with a bounded read-back view.

    Starts the agent if none runs. Records go to the agent's outbox (and
    upload); ``get_*`` read the last ``model_logging.buffer_size`` inputs and
    outputs this logger logged, from memory.

    Args:
        config: the dict from :func:`load_config` (or a ``Config``).
        device_id: overrides the config's ``device_id`` for an agent this starts.
        db_path: the outbox file for an agent this starts (``storage.sqlite_path``).
    """

    def __init__(
        self, config: Any, device_id: str = "", db_path: str | os.PathLike[str] | None = None
    ) -> None:
        cfg = _as_config(config)
        if db_path is not None:
            cfg = replace(
                cfg, storage=replace(cfg.storage, sqlite_path=Path(os.path.abspath(db_path)))
            )
        super().__init__(config, device_id, cfg)
        self.db_path = str(self._cfg.storage.sqlite_path)
        self.buffer_size = self._cfg.model_logging.buffer_size
        self._inputs: deque[ModelInput] = deque(maxlen=self.buffer_size)
        self._outputs: deque[ModelOutput] = deque(maxlen=self.buffer_size)
        self._mon.start()

    def log_input(self, input_data: dict[str, Any]) -> str:
        """Log a model input; returns its id. Never raises for bad data (see EdgeMonitor)."""
        input_id = self._mon.log_model_input(input_data)
        if isinstance(input_data, Mapping):
            self._inputs.append(
                {
                    "id": input_id,
                    "timestamp": time.time(),
                    "input_data": _plain(input_data),
                    "device_id": self.device_id,
                }
            )
        return input_id

    def log_output(self, input_id: str, output_data: dict[str, Any]) -> str:
        """Log a model output for ``input_id``; returns the new output id."""
        output_id = self._mon.log_model_output(input_id, output_data)
        if isinstance(output_data, Mapping):
            self._outputs.append(
                {
                    "id": output_id,
                    "input_id": str(input_id),
                    "timestamp": time.time(),
                    "output_data": _plain(output_data),
                    "device_id": self.device_id,
                }
            )
        return output_id

    def get_inputs(self, limit: int = 100, offset: int = 0) -> list[ModelInput]:
        """Logged inputs, newest first (``limit``/``offset`` paginate)."""
        return copy.deepcopy(list(reversed(self._inputs))[offset : offset + limit])

    def get_outputs(self, limit: int = 100, offset: int = 0) -> list[ModelOutput]:
        """Logged outputs, newest first (``limit``/``offset`` paginate)."""
        return copy.deepcopy(list(reversed(self._outputs))[offset : offset + limit])

    def get_input_output_pairs(
        self, limit: int = 100, offset: int = 0
    ) -> list[tuple[ModelInput, ModelOutput]]:
        """``(input, output)`` pairs joined on the input id, newest output first."""
        inputs = {i["id"]: i for i in self._inputs}
        pairs = [
            (inputs[o["input_id"]], o) for o in reversed(self._outputs) if o["input_id"] in inputs
        ]
        return copy.deepcopy(pairs[offset : offset + limit])

    def clear_logs(self) -> None:
        """Empty the read-back view (what was logged stays in the outbox for upload)."""
        self._inputs.clear()
        self._outputs.clear()


# --------------------------------------------------------------------------- drift
class DriftDetector:
    """Seed API: on-demand KS drift tests, plus the agent's drift events.

    ``detect_drift`` runs the seed's test in this process (two-sample KS,
    drift when ``p < threshold``), with the agent's KS code (p-values as
    ``scipy.stats.ks_2samp``; scipy is not imported). The agent's drift worker
    tests the logged records continuously; its ``drift_started`` /
    ``drift_resolved`` events are listed by :meth:`get_drift_results` too.

    Args:
        config: the dict from :func:`load_config` (or a ``Config``).
        model_logger: a :class:`ModelLogger`, for ``check_drift_from_recent_outputs``.
        device_id: the device id put in results (default: the config's).
    """

    def __init__(
        self, config: Any, model_logger: ModelLogger | None = None, device_id: str = ""
    ) -> None:
        cfg = _as_config(config)
        self.config = config
        self._cfg = cfg
        self.model_logger = model_logger
        self.device_id = device_id or cfg.device_id
        dd = cfg.drift_detection
        self.algorithm = dd.algorithm
        self.threshold = dd.threshold
        self.check_frequency = dd.check_frequency
        self.reference_data_path = (
            None if dd.reference_data_path is None else str(dd.reference_data_path)
        )
        self.reference_data: dict[str, list[float]] = {}
        self._results: deque[DriftResult] = deque(maxlen=MAX_DRIFT_RESULTS)
        self._events_from = 0
        if self.reference_data_path and Path(self.reference_data_path).is_file():
            self.load_reference_data()

    # ------------------------------------------------------------ reference
    def load_reference_data(self, path: str | os.PathLike[str] | None = None) -> None:
        """Load seed JSON reference data (``{"feature": [values...]}``); logs errors only."""
        source = path if path is not None else self.reference_data_path
        if not source:
            log.error("no reference data path given or configured")
            return
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("reference data must be a JSON object of lists")
        except (OSError, ValueError) as exc:
            log.error("cannot load reference data %s: %s", source, exc)
            return
        for name, values in data.items():
            try:
                self.reference_data[str(name)] = [float(v) for v in values]
            except (TypeError, ValueError):
                log.warning("reference data of %r are not all numbers: skipped", name)
        log.info("loaded reference data for %d features", len(self.reference_data))

    def set_reference_data(self, feature_name: str, values: Iterable[float]) -> None:
        """Set one feature's reference values."""
        tolist = getattr(values, "tolist", None)
        self.reference_data[feature_name] = list(tolist() if callable(tolist) else values)

    def save_reference_data(self, output_path: str | os.PathLike[str] | None = None) -> None:
        """Write the reference data as seed JSON; logs errors, never raises.

        Written to the configured ``reference_data_path``, a running agent's
        drift worker is restarted to load it.
        """
        target = output_path if output_path is not None else self.reference_data_path
        if not target:
            log.error("no output path specified for reference data")
            return
        path = Path(target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.reference_data), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.error("cannot save reference data to %s: %s", path, exc)
            return
        configured = self._cfg.drift_detection.reference_data_path
        if configured is not None and path.resolve() == Path(configured).resolve():
            try:
                control.request(
                    self._cfg.run_dir, self._cfg.instance, {"op": "restart", "worker": "drift"}
                )
            except control.ControlError as exc:
                log.debug("drift worker not restarted: %s", exc)

    # ------------------------------------------------------------ tests
    def _result(self, feature: str, stat: float, p: float, n: int) -> DriftResult:
        return {
            "timestamp": time.time(),
            "algorithm": self.algorithm,
            "feature_name": feature,
            "statistic": stat,
            "p_value": p,
            "threshold": self.threshold,
            "is_drift": p < self.threshold,
            "sample_size": n,
            "device_id": self.device_id,
        }

    def detect_drift(self, feature_name: str, current_values: Sequence[float]) -> DriftResult:
        """Two-sample KS of ``current_values`` against the feature's reference.

        Without reference data or with fewer than two values on a side, the
        result says no drift (p-value 1) and is not stored, as in the seed.
        """
        from edge_actors.drift.ks import KSReference, ks_pvalue, ks_statistic

        try:
            cur = np.asarray(current_values, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            log.error("values of %r are not all numbers: no drift test", feature_name)
            return self._result(feature_name, 0.0, 1.0, len(current_values))
        cur = np.sort(cur[~np.isnan(cur)])
        ref_values = self.reference_data.get(feature_name)
        if ref_values is None:
            log.warning("no reference data for feature %r", feature_name)
            return self._result(feature_name, 0.0, 1.0, len(current_values))
        ref_arr = np.asarray(ref_values, dtype=np.float64)
        if np.count_nonzero(~np.isnan(ref_arr)) < 2 or cur.size < 2:
            log.warning("not enough data for a drift test of %r", feature_name)
            return self._result(feature_name, 0.0, 1.0, len(current_values))
        ref = KSReference(ref_arr)
        stat = ks_statistic(cur, ref)
        p = ks_pvalue(stat, int(cur.size), ref.n)
        result = self._result(feature_name, float(stat), float(p), len(current_values))
        self._results.append(result)
        if result["is_drift"]:
            log.warning(
                "drift detected for %r: p-value=%.4g, threshold=%s", feature_name, p, self.threshold
            )
        return copy.deepcopy(result)

    def check_drift_from_recent_outputs(
        self, feature_names: Sequence[str], sample_size: int = 100
    ) -> dict[str, DriftResult]:
        """:meth:`detect_drift` on the last ``sample_size`` outputs of the model logger."""
        if self.model_logger is None:
            log.warning("no model logger given: no recent outputs to test")
            return {}
        outputs = self.model_logger.get_outputs(limit=sample_size)
        if not outputs:
            log.warning("no recent outputs available for drift detection")
            return {}
        results: dict[str, DriftResult] = {}
        for name in feature_names:
            values: list[float] = []
            for out in outputs:
                if name in out["output_data"]:
                    try:
                        values.append(float(out["output_data"][name]))
                    except (TypeError, ValueError):
                        log.warning("output value of %r is not a number", name)
            if values:
                results[name] = self.detect_drift(name, values)
        return results

    def _agent_results(self) -> list[DriftResult]:
        from edge_actors.rows import event_rows

        got = _read_ring(self._cfg, "events", self._events_from)
        if got is None:
            return []
        out: list[DriftResult] = []
        for row in event_rows(self.device_id, self._cfg.model.name, got[0]):
            if row["state"] not in ("drift_started", "drift_resolved"):
                continue
            out.append(
                {
                    "timestamp": row["ts"],
                    "algorithm": "ks_test" if row["test"] == "ks" else row["test"],
                    "feature_name": row["feature"],
                    "statistic": row["statistic"],
                    "p_value": row["p_value"],
                    "threshold": row["threshold"],
                    "is_drift": row["state"] == "drift_started",
                    "sample_size": row["window_size"],
                    "device_id": self.device_id,
                }
            )
        return out

    def get_drift_results(self) -> list[DriftResult]:
        """Results of :meth:`detect_drift` and the agent's drift state changes, by time."""
        results = list(copy.deepcopy(self._results)) + self._agent_results()
        return sorted(results, key=lambda r: r["timestamp"])

    def clear_drift_results(self) -> None:
        """Forget the results so far (the agent's events stay in the outbox for upload)."""
        self._results.clear()
        self._events_from = _ring_end(self._cfg, "events")


# --------------------------------------------------------------------------- upload
class TelemetryUploader(_Adapter):
    """Seed API: the agent's uploads (pause, resume, ship now, backlog).

    Args:
        config: the dict from :func:`load_config` (or a ``Config``).
        device_id: overrides the config's ``device_id`` for an agent this starts.
        s3_client: accepted for compatibility and not used (the agent's
            uploader makes its own client from ``storage``).
    """

    def __init__(self, config: Any, device_id: str = "", s3_client: Any = None) -> None:
        super().__init__(config, device_id)
        if s3_client is not None:
            log.warning("s3_client is not used: the agent's uploader builds its own client")

    def start(self) -> None:
        """Make sure the agent runs and its uploads are not paused."""
        self._mon.start_telemetry_upload()

    def stop(self) -> None:
        """Pause the agent's uploads (records keep going to the outbox)."""
        self._mon.stop_telemetry_upload()

    def create_batch(
        self,
        system_metrics: Sequence[Any] = (),
        model_inputs: Sequence[Any] = (),
        model_outputs: Sequence[Any] = (),
        drift_results: Sequence[Any] = (),
    ) -> str:
        """Ask the agent to ship what it holds now; returns a batch id.

        The lists are not sent again: they were read from the agent, whose
        outbox already holds those records (see ``EdgeMonitor.create_telemetry_batch``).
        """
        given = len(system_metrics) + len(model_inputs) + len(model_outputs) + len(drift_results)
        if given:
            log.debug("create_batch: %d records given; the agent ships its own copies", given)
        return self._mon.create_telemetry_batch()

    def get_pending_batch_count(self) -> int:
        """Objects waiting in the outbox (``telemetry.max_batch_size`` records each)."""
        return int(self._mon.get_status()["pending_telemetry_batches"])

    def clear_uploaded_batches(self, older_than_days: int = 7) -> int:
        """Always 0: the outbox deletes a batch as soon as the sink confirmed it."""
        return 0
