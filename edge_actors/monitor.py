"""``EdgeMonitor``: the seed library's API on top of the producer handle and the agent.

Code written for the earlier single-process library (``edge_mlops_monitor``)
runs with only its import changed::

    from edge_actors import EdgeMonitor

    monitor = EdgeMonitor(config_path="config.yaml")
    monitor.start_system_monitoring()
    input_id = monitor.log_model_input({"bedrooms": 3, "sqft": 1650, "city": "Lyon"})
    monitor.log_model_output(input_id, {"price": 412_000})
    monitor.stop()

What happens underneath:

* The monitor owns a :class:`~edge_actors.producer.Producer` (with a payload
  ring). Logging never blocks and never checks drift inline: the drift worker
  of the agent does that.
* Each logged dict is split. Values of *declared* fields (the config's
  ``model`` section, or for a seed config without one the numeric keys of the
  reference file, as the agent derives them) go to the numeric record; every
  other key (undeclared names, strings, lists, nested dicts) is kept as JSON,
  ``{"input_data": {...}}`` or ``{"output_data": {...}}``, in the ``payload``
  stream under the same record id, so nothing the seed logged is lost.
* A non-number for a field the config *declares* as numeric raises
  ``ValueError`` naming the field (the seed would have stored garbage that no
  drift test can use). For fields only *derived* from a seed reference file the
  user never declared anything, so such a value goes to the payload stream
  instead and the numeric field is left empty (NaN).
* If no agent runs for the config's instance, :meth:`EdgeMonitor.start` (or
  ``start_system_monitoring`` / ``start_telemetry_upload``) starts one as a
  child process (``python -m edge_actors run -c CONFIG``) and :meth:`stop`
  stops it again; an agent that was already running is used and left running.
* Records logged while no agent is attached (before ``start()``) are counted
  as dropped by the producer (``get_status()["producer"]["dropped"]``), never
  raised about.
"""

from __future__ import annotations

import itertools
import logging
import numbers
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from edge_actors import control, topology
from edge_actors.config import Config, load_config, parse_config
from edge_actors.producer import Producer, ProducerClosedError
from edge_actors.records import KIND_INPUT, KIND_OUTPUT

__all__ = ["AgentStartError", "EdgeMonitor", "MonitorStoppedError"]

log = logging.getLogger(__name__)

#: How long ``start()`` waits for a child agent to answer on its control socket.
START_TIMEOUT = 30.0
#: How long the producer may take to get its lane once the agent answers.
ATTACH_TIMEOUT = 5.0
#: How long ``stop()`` waits for an external agent to move this monitor's records to the outbox.
FLUSH_TIMEOUT = 10.0
_PING_TIMEOUT = 2.0
_PLAIN = (float, int, bool, type(None))
_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_STOPPED_MESSAGE = "EdgeMonitor is stopped: call start() to log again, or create a new EdgeMonitor"


class AgentStartError(RuntimeError):
    """The agent child process could not be started (its log file is named)."""


class MonitorStoppedError(RuntimeError):
    """A ``log_model_*`` call came after :meth:`EdgeMonitor.stop`."""


class _Side:
    """Which keys of a logged dict go to the numeric record, for inputs or outputs."""

    def __init__(self, label: str, fields: Iterable[Mapping[str, Any]], strict: bool) -> None:
        self.label = label
        self.kinds: dict[str, str] = {str(f["name"]): str(f["kind"]) for f in fields}
        self.strict = strict

    def split(self, data: Mapping[Any, Any]) -> tuple[dict[str, Any], dict[Any, Any]]:
        """``(declared values, everything else)``; raises ValueError for a bad declared value."""
        fast: dict[str, Any] = {}
        rest: dict[Any, Any] = {}
        kinds = self.kinds
        for key, value in data.items():
            kind = kinds.get(key)
            if kind is None:
                rest[key] = value
            # Exact types first: the ABC check costs ~0.4 µs, most values are floats.
            elif (
                type(value) in _PLAIN
                or isinstance(value, numbers.Real)
                or (kind == "categorical" and isinstance(value, str))
            ):
                fast[key] = value
            elif self.strict:
                what = "a number" if kind == "numeric" else "a category name or index"
                raise ValueError(
                    f"{self.label}.{key}: must be {what} (declared {kind} in the config's "
                    f"model section), got {value!r} ({type(value).__name__})"
                )
            else:
                rest[key] = value
        return fast, rest


def _json_default(obj: Any) -> Any:
    """orjson fallback: numpy scalars as numbers, sets as lists, anything else as its str."""
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _stop_child(proc: subprocess.Popen[bytes], producer: Producer | None, timeout: float) -> int:
    """Close the producer, SIGTERM the agent and wait for its ordered shutdown; the exit code.

    A module-level function (not a method) so that ``weakref.finalize`` can call
    it at interpreter exit without keeping the monitor alive.
    """
    if producer is not None:
        producer.close()
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.error("the agent (pid %d) did not stop within %.0f s: SIGKILL", proc.pid, timeout)
        proc.kill()
        return proc.wait()


class EdgeMonitor:
    """Seed-compatible monitor: logs model inputs/outputs and runs (or uses) the agent.

    Args:
        config_path: the YAML config (a seed config loads unchanged); ``None``
            uses the defaults.
        device_id: when non-empty, overrides the config's ``device_id``. The
            agent this monitor starts then runs on a derived copy of the config
            written under ``data_dir`` (the user's file is never edited); an
            agent that is already running keeps its own device id.

    Thread-safe: the ``log_model_*`` methods may be called from several threads.
    """

    def __init__(
        self, config_path: str | os.PathLike[str] | None = None, device_id: str = ""
    ) -> None:
        self.config_path = Path(config_path) if config_path is not None else None
        self._raw = self._read_raw()
        cfg = load_config(self.config_path)
        self._device_override = bool(device_id)
        if device_id:
            # Validate the id with the config's own rules (it ends up in object keys).
            base = (
                Path(os.path.abspath(self.config_path)).parent if self.config_path else Path.cwd()
            )
            source = os.fspath(self.config_path) if self.config_path else "<defaults>"
            cfg = parse_config({**self._raw, "device_id": device_id}, base, source)
        #: The loaded configuration (with the ``device_id`` override applied).
        self.config: Config = cfg
        # Explicit model fields are validated strictly; fields derived from a seed
        # reference file are not (see the module docstring).
        self._strict = bool(cfg.model.inputs or cfg.model.outputs)
        fields_cfg = cfg if self._strict else self._derived_config(cfg)
        self._fields = (fields_cfg.model.inputs, fields_cfg.model.outputs)
        self._in = self._out = _Side("inputs", (), False)
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._log_path = Path(cfg.data_dir) / f"edge-monitor-{cfg.instance}.log"
        # Ids for records without any numeric field (no schema at all): same shape
        # as the producer's (random high bits, then a counter), so they do not collide.
        self._own_ids = itertools.count(secrets.randbits(22) << 40)
        self._payload_warned = 0
        self._reference: dict[str, list[Any]] | None = None
        self._no_fields = False
        self._stopped = False
        self._producer = self._new_producer()
        if self._ping():
            # An agent is already up: get the lane now, so the first records are kept.
            self._producer.wait_attached(ATTACH_TIMEOUT)

    # ------------------------------------------------------------ set-up
    def _read_raw(self) -> dict[str, Any]:
        """The user's YAML mapping, as written (for the derived config)."""
        if self.config_path is None:
            return {}
        import yaml

        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return {}  # load_config reports the problem properly
        return dict(data) if isinstance(data, Mapping) else {}

    @staticmethod
    def _derived_config(cfg: Config) -> Config:
        """The agent's view of a seed config: the reference's numeric keys as outputs.

        Computed here too, so that the producer validates (and the records are
        kept) from the first call, before it ever talked to the agent.
        """
        dd = cfg.drift_detection
        if not dd.enabled or dd.reference_data_path is None:
            return cfg
        # Lazy: the supervisor module pulls in psutil, which a model-only process
        # with a full schema never needs.
        from edge_actors.supervisor import effective_config

        return effective_config(cfg)

    def _new_producer(self) -> Producer:
        cfg = self.config
        p = Producer(cfg.run_dir, cfg.instance, self._fields[0], self._fields[1], payload=True)
        self._refresh_sides(p)
        return p

    def _refresh_sides(self, p: Producer) -> None:
        """Learn the declared fields from the producer (it may learn them from the agent)."""
        schema = p.schema()
        self._in = _Side("inputs", schema["inputs"], self._strict)
        self._out = _Side("outputs", schema["outputs"], self._strict)
        self._no_fields = not (schema["inputs"] or schema["outputs"])

    @property
    def device_id(self) -> str:
        """The device id records carry (when this monitor starts the agent)."""
        return self.config.device_id

    # ------------------------------------------------------------ agent
    def _ping(self) -> bool:
        try:
            control.request(
                self.config.run_dir, self.config.instance, {"op": "ping"}, _PING_TIMEOUT
            )
        except control.ControlError:
            return False
        return True

    def _request(self, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        return control.request(self.config.run_dir, self.config.instance, msg, timeout)

    @property
    def started_agent(self) -> bool:
        """True while an agent this monitor started is running."""
        return self._proc is not None and self._proc.poll() is None

    def _child_config(self) -> Path | None:
        """The config file the child agent runs on (a derived one for a device_id override)."""
        if not self._device_override:
            return self.config_path
        cfg = self.config
        raw: dict[str, Any] = dict(self._raw)
        raw["device_id"] = cfg.device_id
        # The copy lives in another folder: make every path absolute, as loaded.
        raw["run_dir"] = str(cfg.run_dir)
        raw["data_dir"] = str(cfg.data_dir)
        storage = raw.get("storage")
        if isinstance(storage, Mapping):
            storage = dict(storage)
            for key in ("sqlite_path", "local_path"):
                if storage.get(key) is not None:
                    storage[key] = str(getattr(cfg.storage, key))
            raw["storage"] = storage
        drift = raw.get("drift_detection")
        if isinstance(drift, Mapping) and cfg.drift_detection.reference_data_path is not None:
            raw["drift_detection"] = {
                **drift,
                "reference_data_path": str(cfg.drift_detection.reference_data_path),
            }
        import yaml

        path = Path(cfg.data_dir) / f"edge-monitor-{cfg.instance}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(
            "# Written by EdgeMonitor (device_id override); the user's config is "
            f"{self.config_path or 'the defaults'}.\n" + yaml.safe_dump(raw, sort_keys=False),
            encoding="utf-8",
        )
        os.replace(tmp, path)
        return path

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _start_agent(self) -> None:
        """Start the agent as a child process and wait until it serves this producer."""
        cfg = self.config
        Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
        child_cfg = self._child_config()
        cmd = [sys.executable, "-m", "edge_actors", "run"]
        if child_cfg is not None:
            cmd += ["-c", os.fspath(child_cfg)]
        with open(self._log_path, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        log.info("started the edge-actors agent (pid %d); log %s", proc.pid, self._log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ping():
            code = proc.poll()
            if code is not None:
                if self._ping():  # another process started the same instance first
                    log.info("instance %r was started by another process", cfg.instance)
                    self._use_external()
                    return
                raise AgentStartError(
                    f"the edge-actors agent exited with code {code} while starting; "
                    f"see its log {self._log_path}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                _stop_child(proc, None, 10.0)
                raise AgentStartError(
                    f"the edge-actors agent did not answer on {cfg.socket_path} within "
                    f"{START_TIMEOUT:.0f} s; see its log {self._log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.05)
        self._proc = proc
        timeout = cfg.supervisor.shutdown_timeout_seconds * 4 + 10.0
        self._finalizer = weakref.finalize(self, _stop_child, proc, self._producer, timeout)
        if not self._producer.wait_attached(max(ATTACH_TIMEOUT, deadline - time.monotonic())):
            raise AgentStartError(
                f"the agent is up but gave this process no lane "
                f"({self._producer.stats()['last_error']}); see its log {self._log_path}"
            )
        # Best effort: get_status() right after start() then shows every worker.
        while time.monotonic() < deadline:
            try:
                if self._request({"op": "status"})["status"]["state"] == "running":
                    break
            except control.ControlError:
                pass
            time.sleep(0.05)
        else:
            log.warning("the agent's workers are not all running yet; see %s", self._log_path)

    def start(self) -> None:
        """Make sure an agent runs for this config and this monitor logs into it.

        Starts one as a child process if none answers on the control socket;
        raises :class:`AgentStartError` (naming its log file) if that fails.
        After :meth:`stop`, ``start()`` makes the monitor usable again.
        """
        with self._lock:
            if self._stopped:
                self._stopped = False
                self._producer = self._new_producer()
            if self.started_agent:
                return
            self._proc = None
            if self._finalizer is not None:  # an agent we started died: forget it
                self._finalizer.detach()
                self._finalizer = None
            if self._ping():
                self._use_external()
                return
            self._start_agent()
            self._refresh_sides(self._producer)

    def _use_external(self) -> None:
        """Log into an agent someone else started (it keeps its own config)."""
        self._producer.wait_attached(ATTACH_TIMEOUT)
        if not self._device_override:
            return
        try:
            theirs = self._request({"op": "status"})["status"].get("device_id")
        except control.ControlError:
            return
        if theirs != self.config.device_id:
            log.warning(
                "instance %r is already running with device_id %r: device_id=%r is not applied",
                self.config.instance,
                theirs,
                self.config.device_id,
            )

    def start_system_monitoring(self) -> None:
        """Seed API: system sampling is a worker of the agent, so this is :meth:`start`."""
        self.start()

    def start_telemetry_upload(self) -> None:
        """Seed API: uploading is a worker of the agent, so this is :meth:`start`."""
        self.start()

    def stop_system_monitoring(self) -> None:
        """Seed API: stops the agent if this monitor started it (as :meth:`stop` does).

        An agent started by someone else (systemd, ``edge-actors run``) keeps
        sampling: it serves other processes too. Only logs in that case.
        """
        with self._lock:
            if self.started_agent:
                self.stop()
            else:
                log.info("system sampling belongs to an agent this monitor did not start: kept")

    def stop_telemetry_upload(self) -> None:
        """Seed API: moves this monitor's records into the agent's outbox, then returns.

        The uploader worker keeps shipping the outbox while the agent runs (set
        ``storage.type: sqlite`` to keep everything on the device).
        """
        with self._lock:
            if not self._stopped:
                self._flush(FLUSH_TIMEOUT)

    def _flush(self, timeout: float) -> bool:
        """Wait until the agent's uploader has read everything in this producer's rings."""
        p = self._producer
        lane = p.stats()["lane"]
        if lane is None:
            return True  # nothing of ours is in a ring
        names = [lane]
        parsed = topology.parse_name(self.config.instance, lane)
        if parsed is not None:
            names.append(topology.ring_name(self.config.instance, "payload", parsed[1]))
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = self._request({"op": "status"})["status"]
            except control.ControlError as exc:
                log.warning("cannot confirm the flush of lane %s: %s", lane, exc)
                return False
            if st["workers"].get("uploader", {}).get("state") == "disabled":
                return False
            rings = {r["name"]: r for r in st["rings"]}
            pending = [
                n
                for n in names
                if n in rings
                and rings[n]["consumers"][topology.UPLOADER]["read_seq"] < rings[n]["written"]
            ]
            if not pending:
                return True
            if time.monotonic() > deadline:
                log.warning(
                    "records of %s were not all in the outbox after %.0f s", pending, timeout
                )
                return False
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop what this monitor started; every record logged before is in the outbox.

        If this monitor started the agent: the producer is closed and the agent
        gets SIGTERM; its ordered shutdown drains every ring into the outbox
        before it exits, and ``stop()`` waits for that. If the agent was already
        running: waits (at most :data:`FLUSH_TIMEOUT` s) until its uploader has
        moved this monitor's records into the outbox, closes the producer and
        leaves the agent running. Idempotent.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            proc, self._proc = self._proc, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            if proc is not None and proc.poll() is None:
                timeout = self.config.supervisor.shutdown_timeout_seconds * 4 + 10.0
                code = _stop_child(proc, self._producer, timeout)
                if code != 0:
                    log.warning("the agent exited with code %d; see %s", code, self._log_path)
            else:
                if self._producer.attached:
                    self._flush(FLUSH_TIMEOUT)
                self._producer.close()

    def __enter__(self) -> EdgeMonitor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------- logging
    def _live(self) -> Producer:
        if self._stopped:
            raise MonitorStoppedError(_STOPPED_MESSAGE)
        p = self._producer
        if self._no_fields and p.attached:
            self._refresh_sides(p)  # the agent may have told the producer its fields
        return p

    def _encode(self, label: str, rest: dict[Any, Any]) -> bytes:
        try:
            return orjson.dumps({label: rest}, default=_json_default, option=_ORJSON_OPTS)
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise ValueError(f"{label}: cannot be stored as JSON: {exc}") from None

    def _payload(self, p: Producer, rid: int, kind: int, data: bytes) -> None:
        if p.log_payload(rid, kind, data):
            return
        # Counted by the producer either way; say why once in a while, never raise.
        self._payload_warned += 1
        if self._payload_warned in (1, 10, 100) or self._payload_warned % 1000 == 0:
            dropped = p.stats()["dropped"]
            log.warning(
                "non-numeric values of record %d not kept (%d bytes; dropped so far: %d too "
                "large for model_logging.payload_slot_bytes, %d without an agent)",
                rid,
                len(data),
                dropped["payload_too_large"],
                dropped["payload_detached"],
            )

    def log_model_input(self, input_data: Mapping[str, Any]) -> str:
        """Log a model input; returns its id (a string) for :meth:`log_model_output`.

        Never blocks. Raises ``TypeError`` if ``input_data`` is not a dict,
        ``ValueError`` for a non-number in a declared numeric field, and
        :class:`MonitorStoppedError` after :meth:`stop`.
        """
        if type(input_data) is not dict and not isinstance(input_data, Mapping):
            raise TypeError(f"input_data: expected a dict, got {type(input_data).__name__}")
        p = self._live()
        fast, rest = self._in.split(input_data)
        data = self._encode("input_data", rest) if rest else b""
        try:
            rid = next(self._own_ids) if self._no_fields else p.log_input(fast)
            if data:
                self._payload(p, rid, KIND_INPUT, data)
        except ProducerClosedError:
            raise MonitorStoppedError(_STOPPED_MESSAGE) from None
        return str(rid)

    def log_model_output(self, input_id: str | int, output_data: Mapping[str, Any]) -> str:
        """Log the output for ``input_id`` (from :meth:`log_model_input`); returns the id.

        The output record carries the input's id, so the returned id is
        ``input_id`` itself. Same errors as :meth:`log_model_input`, plus
        ``ValueError`` for an id that did not come from it.
        """
        try:
            rid = int(input_id)
        except (TypeError, ValueError):
            raise ValueError(
                f"input_id: expected an id returned by log_model_input, got {input_id!r}"
            ) from None
        if type(output_data) is not dict and not isinstance(output_data, Mapping):
            raise TypeError(f"output_data: expected a dict, got {type(output_data).__name__}")
        p = self._live()
        fast, rest = self._out.split(output_data)
        data = self._encode("output_data", rest) if rest else b""
        try:
            if not self._no_fields:
                p.log_output(rid, fast)
            if data:
                self._payload(p, rid, KIND_OUTPUT, data)
        except ProducerClosedError:
            raise MonitorStoppedError(_STOPPED_MESSAGE) from None
        return str(rid)

    # ------------------------------------------------------------ status
    def get_status(self) -> dict[str, Any]:
        """The agent's status, this monitor's producer counters; never raises.

        ``{"running", "agent", "producer", "dropped", "started_agent", "instance",
        "device_id", "stopped"}``; ``agent`` is the supervisor's status dict, or
        ``None`` with an ``error`` saying why when no agent answers.
        """
        out: dict[str, Any] = {
            "instance": self.config.instance,
            "device_id": self.config.device_id,
            "started_agent": False,
            "stopped": self._stopped,
            "running": False,
            "agent": None,
            "producer": None,
            "dropped": {},
        }
        try:
            out["started_agent"] = self.started_agent
            stats = self._producer.stats()
            out["producer"] = stats
            # Records never written and records overwritten before upload, by reason.
            both = {**stats["dropped"], **stats["lost"]}
            out["dropped"] = {k: v for k, v in both.items() if v}
            out["agent"] = self._request({"op": "status"})["status"]
            out["running"] = True
        except control.ControlError as exc:
            out["error"] = f"no agent running: {exc}"
        except Exception as exc:  # status must never take the application down
            out["error"] = f"{type(exc).__name__}: {exc}"
        return out

    # --------------------------------------------------------- reference
    def _load_reference(self) -> dict[str, list[Any]]:
        """The configured reference file's values, if it is a seed JSON file."""
        path = self.config.drift_detection.reference_data_path
        if path is None or not Path(path).is_file():
            return {}
        if Path(path).suffix == ".npz":
            log.warning("%s is a built reference (.npz): not merged with set_reference_data", path)
            return {}
        try:
            data = orjson.loads(Path(path).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("cannot read the reference %s (%s): starting empty", path, exc)
            return {}
        if not isinstance(data, dict):
            log.warning("reference %s is not a JSON object: starting empty", path)
            return {}
        return {str(k): list(v) for k, v in data.items() if isinstance(v, list)}

    def set_reference_data(self, feature_name: str, values: Iterable[Any]) -> None:
        """Set one feature's reference values (kept in memory until :meth:`save_reference_data`).

        Merged over the configured reference file (seed JSON) when it exists.
        """
        if not isinstance(feature_name, str) or not feature_name:
            raise ValueError(f"feature_name: must be a non-empty string, got {feature_name!r}")
        tolist = getattr(values, "tolist", None)
        vals = tolist() if callable(tolist) else list(values)
        with self._lock:
            if self._reference is None:
                self._reference = self._load_reference()
            self._reference[feature_name] = list(vals)

    def save_reference_data(self, output_path: str | os.PathLike[str] | None = None) -> str:
        """Write the reference as seed JSON (``{"name": [values...]}``); returns the path.

        ``None`` writes to the config's ``drift_detection.reference_data_path``.
        When that is the file written and an agent is running, its drift worker
        is restarted to load it (it reads the reference at start). A seed config
        whose fields are derived from the reference keeps the fields the agent
        derived when it started.
        """
        configured = self.config.drift_detection.reference_data_path
        target = Path(output_path) if output_path is not None else configured
        if target is None:
            raise ValueError(
                "save_reference_data: no output_path given and the config sets no "
                "drift_detection.reference_data_path"
            )
        if target.suffix == ".npz":
            raise ValueError(
                f"{target}: save_reference_data writes seed JSON; use a .json path "
                "(build .npz files with `edge-actors reference build`)"
            )
        with self._lock:
            if self._reference is None:
                self._reference = self._load_reference()
            data = orjson.dumps(self._reference, default=_json_default, option=_ORJSON_OPTS)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        if configured is not None and target.resolve() == Path(configured).resolve():
            try:
                self._request({"op": "restart", "worker": "drift"})
                log.info("drift worker restarted to load %s", target)
            except control.ControlError as exc:
                log.debug("drift worker not restarted: %s", exc)
        return os.fspath(target)
