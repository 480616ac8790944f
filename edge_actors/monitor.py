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
* Bad data never raises inside the ML loop (the seed logged an error and went
  on): a non-dict is dropped, a non-number in a numeric field goes to the
  payload stream (the numeric field left empty), each counted by reason in
  ``get_status()["dropped"]`` and logged at most once per reason per minute.
  ``EdgeMonitor(..., strict=True)`` raises ``TypeError``/``ValueError`` instead
  (for tests and development).
* Ids: ``log_model_input`` returns the record id (digits); ``log_model_output``
  returns a new output id, ``"<input id>-out"``. An id the caller chose (any
  string, e.g. ``"request-42"``) is accepted: the output record gets a stable
  numeric id derived from it (bit 62 set) and its payload row carries the
  string as ``input_id``, so fleet queries can join on it.
* Ground truth: :meth:`EdgeMonitor.log_ground_truth` takes the same ids (ours
  or the caller's) and the true outputs, any time later; the agent joins it
  to the prediction (model performance in ``status``, ``performance_*``
  events) and uploads it as the ``feedback`` stream.
* If no agent runs for the config's instance, :meth:`EdgeMonitor.start` (or
  ``start_system_monitoring`` / ``start_telemetry_upload``) starts one as a
  child process (``python -m edge_actors run -c CONFIG``) and :meth:`stop`
  stops it again; an agent that was already running is used and left running.
  ``stop_system_monitoring`` / ``stop_telemetry_upload`` pause the agent's
  sampler / uploads (the records keep going to the outbox); the ``start_*``
  methods resume them.
* Records logged before ``start()`` go to the producer, which holds them
  (bounded) until its lane arrives; after :meth:`stop` they are counted as
  ``after_stop`` and dropped silently.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
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

from edge_actors import control, topology
from edge_actors.config import Config, load_config, parse_config
from edge_actors.jsoncompat import orjson
from edge_actors.lanemodel import resolve as resolve_model
from edge_actors.producer import Producer, ProducerClosedError
from edge_actors.records import KIND_FEEDBACK, KIND_INPUT, KIND_OUTPUT
from edge_actors.schema import with_reference_fields

__all__ = ["AgentStartError", "EdgeMonitor", "MonitorStoppedError", "caller_record_id"]

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
#: A bad-data warning per reason at most this often (the counts keep going up).
WARN_INTERVAL = 60.0
#: Record ids derived from a caller-chosen id have this bit set; producer ids stay below it.
CALLER_ID_BIT = 1 << 62


class AgentStartError(RuntimeError):
    """The agent child process could not be started (its log file is named)."""


class MonitorStoppedError(RuntimeError):
    """A ``log_model_*`` call came after :meth:`EdgeMonitor.stop` (strict mode only)."""


def caller_record_id(input_id: str) -> int:
    """The numeric record id of a caller-chosen id: stable, with :data:`CALLER_ID_BIT` set.

    The same string gives the same id on every device and in every process, so
    records logged with it can be found again (its payload row carries the string).
    """
    digest = hashlib.blake2b(input_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return CALLER_ID_BIT | (int.from_bytes(digest, "little") & (CALLER_ID_BIT - 1))


def _record_id(input_id: object) -> tuple[int, str | None]:
    """``(record id, caller id or None)`` for an id given to ``log_model_output``."""
    if type(input_id) is int and 0 <= input_id < CALLER_ID_BIT:
        return input_id, None
    text = input_id if isinstance(input_id, str) else str(input_id)
    # Our own ids are canonical decimals; "+5", "05" or "5 " are the caller's strings.
    if (
        text.isdigit()
        and text.isascii()
        and len(text) < 20
        and (text[0] != "0" or len(text) == 1)
        and (rid := int(text)) < CALLER_ID_BIT
    ):
        return rid, None
    return caller_record_id(text), text


class _FieldSplit:
    """Splits a logged dict by the declared fields of one side (inputs or outputs).

    Declared fields with a usable value go to the numeric record, the rest to
    the payload.
    """

    def __init__(self, label: str, fields: Iterable[Mapping[str, Any]], strict: bool) -> None:
        self.label = label
        self.kinds: dict[str, str] = {str(f["name"]): str(f["kind"]) for f in fields}
        self.strict = strict

    def split(self, data: Mapping[Any, Any]) -> tuple[dict[str, Any], dict[Any, Any], list[str]]:
        """``(field values, everything else, fields whose value was no number)``.

        A bad field value goes to "everything else"; in strict mode it raises
        ValueError naming the field instead.
        """
        fast: dict[str, Any] = {}
        rest: dict[Any, Any] = {}
        bad: list[str] = []
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
                bad.append(key)
        return fast, rest, bad


def _is_mapping(data: object) -> bool:
    # Exact type first: the ABC check costs ~0.3 µs, most callers pass a dict.
    return type(data) is dict or isinstance(data, Mapping)


def _json_num_or_str(obj: Any) -> Any:
    """orjson fallback of payload values and saved references.

    Any ``numbers.Real`` (numpy scalars, ``Fraction``) as a number, sets as
    lists, anything else (bytes included: ``"b'...'"``) as its ``str()``. The
    outbox has another fallback (``outbox._json_item_or_hex``: bytes as hex);
    the two never meet, a payload reaches the outbox as decoded JSON.
    """
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
        strict: raise ``TypeError``/``ValueError`` for bad data (and
            :class:`MonitorStoppedError` after :meth:`stop`) instead of
            counting and dropping it. Off by default: inside the ML loop the
            monitor never raises for bad data.
        config: an already loaded :class:`~edge_actors.config.Config` instead
            of ``config_path`` (an agent started for it runs on a copy written
            under ``data_dir``).
        model, model_version: which of the config's ``models`` this monitor
            logs (``None``: the only one) and its version (``None``: the
            entry's). A model the config does not declare raises ``ValueError``.

    Thread-safe: the ``log_model_*`` methods may be called from several threads.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None = None,
        device_id: str = "",
        *,
        strict: bool = False,
        config: Config | None = None,
        model: str | None = None,
        model_version: str | None = None,
    ) -> None:
        self.config_path = Path(config_path) if config_path is not None else None
        if config is not None:
            if config_path is not None:
                raise ValueError("give config_path or config, not both")
            self._raw = config.to_dict()
            cfg = config
        else:
            self._raw = self._read_raw()
            cfg = load_config(self.config_path)
        self._device_override = bool(device_id) or config is not None
        if device_id:
            # Validate the id with the config's own rules (it ends up in object keys).
            base = (
                Path(os.path.abspath(self.config_path)).parent if self.config_path else Path.cwd()
            )
            source = os.fspath(self.config_path) if self.config_path else "<defaults>"
            cfg = parse_config({**self._raw, "device_id": device_id}, base, source)
        #: The loaded configuration (with the ``device_id`` override applied).
        self.config: Config = cfg
        self.strict = strict
        # Only explicit model fields can raise (strict mode); fields derived from a
        # seed reference file never do (see the module docstring).
        # Which of the config's models this monitor logs (refused here if undeclared).
        found = resolve_model(cfg, model, model_version)
        if isinstance(found, str):
            raise ValueError(found)
        self._model = found
        self._declared = bool(found.inputs or found.outputs)
        # The agent derives a seed config's fields the same way: deriving them here too
        # lets the producer validate (and keep) records before it ever talked to it.
        fields_cfg = cfg if self._declared else with_reference_fields(cfg)
        if self._declared:
            self._fields = (found.inputs, found.outputs)
        else:
            self._fields = (fields_cfg.model.inputs, fields_cfg.model.outputs)
        self._in = self._out = _FieldSplit("inputs", (), False)
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
        self._count_lock = threading.Lock()
        self._rejected: dict[str, int] = {}
        self._warned: dict[str, tuple[float, int]] = {}
        self._predictions = 0
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

    def _new_producer(self) -> Producer:
        cfg = self.config
        # Records logged before start() wait in the producer's bounded buffer.
        p = Producer(
            cfg.run_dir,
            cfg.instance,
            self._fields[0],
            self._fields[1],
            payload=True,
            pending_records=cfg.model_logging.pending_records,
            model=self._model.name,
            version=self._model.version or None,
        )
        self._refresh_sides(p)
        return p

    def _refresh_sides(self, p: Producer) -> None:
        """Learn the declared fields from the producer (it may learn them from the agent)."""
        schema = p.schema()
        raising = self.strict and self._declared
        self._in = _FieldSplit("inputs", schema["inputs"], raising)
        self._out = _FieldSplit("outputs", schema["outputs"], raising)
        self._no_fields = not (schema["inputs"] or schema["outputs"])

    @property
    def device_id(self) -> str:
        """The device id records carry (when this monitor starts the agent)."""
        return self.config.device_id

    @property
    def prediction_count(self) -> int:
        """Seed API: outputs logged through this monitor (``log_model_output`` calls kept)."""
        return self._predictions

    @property
    def drift_check_frequency(self) -> int:
        """Seed API: ``drift_detection.check_frequency`` (the agent's drift worker uses it)."""
        return self.config.drift_detection.check_frequency

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
        raw["instance"] = cfg.instance
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

        from edge_actors.safe_write import write_atomic

        path = Path(cfg.data_dir) / f"edge-monitor-{cfg.instance}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp-based: a fixed "<name>.tmp" would follow a symlink planted there.
        write_atomic(
            path,
            (
                "# Written by EdgeMonitor (device_id override or a loaded config); the user's "
                "config is "
                f"{self.config_path or 'the defaults'}.\n" + yaml.safe_dump(raw, sort_keys=False)
            ).encode("utf-8"),
        )
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
        """Make sure an agent runs for this config, samples, uploads, and this monitor logs into it.

        Starts one as a child process if none answers on the control socket;
        raises :class:`AgentStartError` (naming its log file) if that fails.
        Resumes a sampler or uploads paused by ``stop_system_monitoring`` /
        ``stop_telemetry_upload``. After :meth:`stop`, ``start()`` makes the
        monitor usable again.
        """
        self._ensure_agent()
        self._resume("sampler", "uploader")

    def _ensure_agent(self) -> None:
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

    def _resume(self, *workers: str) -> None:
        """Resume the given workers of the agent where they are paused."""
        try:
            st = self._request({"op": "status"})["status"]
            for name in workers:
                if st["workers"].get(name, {}).get("paused"):
                    self._request({"op": "resume", "worker": name})
                    log.info("%s of instance %r resumed", name, self.config.instance)
        except control.ControlError as exc:
            log.warning("cannot resume %s: %s", "/".join(workers), exc)

    def _pause(self, worker: str) -> bool:
        try:
            self._request({"op": "pause", "worker": worker})
        except control.ControlError as exc:
            log.info("%s not paused: %s", worker, exc)
            return False
        log.info("%s of instance %r paused", worker, self.config.instance)
        return True

    def start_system_monitoring(self) -> None:
        """Seed API: make sure the agent runs (see :meth:`start`) and its sampler samples."""
        self._ensure_agent()
        self._resume("sampler")

    def start_telemetry_upload(self) -> None:
        """Seed API: make sure the agent runs (see :meth:`start`) and its uploads run."""
        self._ensure_agent()
        self._resume("uploader")

    def stop_system_monitoring(self) -> None:
        """Seed API: pause the agent's system sampler (model logging and uploads go on).

        The pause holds until a ``start*`` call or a restart of the agent. An
        agent shared with other processes stops sampling for them too.
        """
        self._pause("sampler")

    def stop_telemetry_upload(self) -> None:
        """Seed API: move this monitor's records into the outbox, then pause uploads.

        The agent keeps moving records into the outbox (nothing is lost; the
        outbox's disk budget applies); ``start_telemetry_upload`` (or
        :meth:`start`) ships them.
        """
        with self._lock:
            if not self._stopped:
                self._flush(FLUSH_TIMEOUT)
        self._pause("uploader")

    def create_telemetry_batch(
        self,
        include_system: bool = True,
        include_model: bool = True,
        include_drift: bool = True,
        max_records: int = 100,
    ) -> str:
        """Seed API: ship what the agent holds as soon as possible; returns a batch id.

        The agent's uploader moves every ring into the outbox at once and
        starts an upload round without waiting for
        ``telemetry.upload_interval_seconds`` (paused uploads stay paused). The
        id names the request in the agent's log and status
        (``uploader.stats.last_flush_id``). All streams ship: the ``include_*``
        flags and ``max_records`` are accepted for compatibility (objects hold
        up to ``telemetry.max_batch_size`` records). Never raises; without an
        agent it logs a warning and the records ship at the next round.
        """
        batch_id = f"batch-{int(time.time())}-{secrets.token_hex(4)}"
        try:
            self._request({"op": "flush", "batch_id": batch_id})
        except control.ControlError as exc:
            log.warning("telemetry batch %s not shipped now: %s", batch_id, exc)
        return batch_id

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
    def _reject(self, reason: str, what: str) -> None:
        """Count bad data by reason; warn at most once per reason per :data:`WARN_INTERVAL`."""
        with self._count_lock:
            total = self._rejected.get(reason, 0) + 1
            self._rejected[reason] = total
            now = time.monotonic()
            last, seen = self._warned.get(reason, (-math.inf, 0))
            if now - last < WARN_INTERVAL:
                return
            self._warned[reason] = (now, total)
        more = total - seen - 1
        log.warning(
            "%s [%s: %d so far%s; next warning for this in %.0f s at the earliest]",
            what,
            reason,
            total,
            f", {more} since the last warning" if more > 0 else "",
            WARN_INTERVAL,
        )

    def _after_stop(self) -> None:
        """A record logged after :meth:`stop`: counted, dropped (raises in strict mode)."""
        if self.strict:
            raise MonitorStoppedError(_STOPPED_MESSAGE)
        with self._count_lock:
            self._rejected["after_stop"] = self._rejected.get("after_stop", 0) + 1

    def _producer_now(self) -> Producer:
        p = self._producer
        if self._no_fields and p.attached:
            self._refresh_sides(p)  # the agent may have told the producer its fields
        return p

    def _encode(self, label: str, doc: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(doc, default=_json_num_or_str, option=_ORJSON_OPTS)
        except (orjson.JSONEncodeError, TypeError) as exc:
            if self.strict:
                raise ValueError(f"{label}: cannot be stored as JSON: {exc}") from None
            self._reject("unserializable", f"{label}: non-numeric values not kept ({exc})")
            return b""

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

    def _bad(self, kind: str, side: _FieldSplit, bad: list[str], data: Mapping[Any, Any]) -> None:
        shown = ", ".join(f"{k}={data[k]!r:.40}" for k in bad[:3])
        self._reject(
            "bad_value",
            f"{kind}: {side.label} {shown}: not a number; kept in the payload stream, "
            "the numeric field left empty",
        )

    def log_model_input(self, input_data: Mapping[str, Any]) -> str:
        """Log a model input; returns its id (a string) for :meth:`log_model_output`.

        Never blocks and never raises for bad data (see the module docstring;
        ``strict=True`` raises ``TypeError`` for a non-dict and ``ValueError``
        for a non-number in a declared field).
        """
        if self._stopped:
            self._after_stop()
            return str(next(self._own_ids))
        if not _is_mapping(input_data):
            what = f"input_data: expected a dict, got {type(input_data).__name__}"
            if self.strict:
                raise TypeError(what)
            self._reject("not_a_dict", f"log_model_input: {what}; record dropped")
            return str(next(self._own_ids))
        p = self._producer_now()
        fast, rest, bad = self._in.split(input_data)
        if bad:
            self._bad("log_model_input", self._in, bad, input_data)
        data = self._encode("input_data", {"input_data": rest}) if rest else b""
        try:
            rid = next(self._own_ids) if self._no_fields else p.log_input(fast)
            if data:
                self._payload(p, rid, KIND_INPUT, data)
        except ProducerClosedError:
            self._after_stop()  # stop() ran in another thread
            return str(next(self._own_ids))
        except (ValueError, TypeError) as exc:
            if self.strict:
                raise
            self._reject("invalid", f"log_model_input: {exc}; record dropped")
            return str(next(self._own_ids))
        return str(rid)

    def log_model_output(self, input_id: str | int, output_data: Mapping[str, Any]) -> str:
        """Log the output for ``input_id``; returns a new output id, ``"<input_id>-out"``.

        ``input_id`` is an id from :meth:`log_model_input` (the output record
        carries it) or any id the caller chose (see the module docstring).
        Never raises for bad data (``strict=True`` raises as
        :meth:`log_model_input` does).
        """
        output_id = f"{input_id}-out"
        if self._stopped:
            self._after_stop()
            return output_id
        if not _is_mapping(output_data):
            what = f"output_data: expected a dict, got {type(output_data).__name__}"
            if self.strict:
                raise TypeError(what)
            self._reject("not_a_dict", f"log_model_output: {what}; record dropped")
            return output_id
        rid, caller_id = _record_id(input_id)
        p = self._producer_now()
        fast, rest, bad = self._out.split(output_data)
        if bad:
            self._bad("log_model_output", self._out, bad, output_data)
        doc: dict[str, Any] = {}
        if rest:
            doc["output_data"] = rest
        if caller_id is not None:
            doc["input_id"] = caller_id
        data = self._encode("output_data", doc) if doc else b""
        try:
            if not self._no_fields:
                p.log_output(rid, fast)
            if data:
                self._payload(p, rid, KIND_OUTPUT, data)
        except ProducerClosedError:
            self._after_stop()
            return output_id
        except (ValueError, TypeError) as exc:
            if self.strict:
                raise
            self._reject("invalid", f"log_model_output: {exc}; record dropped")
            return output_id
        self._predictions += 1
        return output_id

    def log_ground_truth(self, input_id: str | int, truth: Any) -> str:
        """Log the true outcome of the prediction ``input_id`` (any time later); returns the id.

        ``input_id`` is an id from :meth:`log_model_input` or the caller's own
        id given to :meth:`log_model_output` (the same string joins them).
        ``truth`` is a dict of output fields (as ``output_data``) or a bare
        value when the model declares one output. The agent joins it to the
        prediction for the rolling performance (``status``) and uploads it as
        the ``feedback`` stream. Never raises for bad data (``strict=True``
        raises as :meth:`log_model_output` does).
        """
        truth_id = f"{input_id}-truth"
        if self._stopped:
            self._after_stop()
            return truth_id
        rid, caller_id = _record_id(input_id)
        p = self._producer_now()
        if _is_mapping(truth):
            fast, rest, bad = self._out.split(truth)
            if bad:
                self._bad("log_ground_truth", self._out, bad, truth)
        else:
            fast, rest = truth, {}
        doc: dict[str, Any] = {}
        if rest:
            doc["truth_data"] = rest
        if caller_id is not None:
            doc["input_id"] = caller_id
        data = self._encode("truth_data", doc) if doc else b""
        try:
            if not self._no_fields:
                p.log_feedback(rid, fast)
            if data:
                self._payload(p, rid, KIND_FEEDBACK, data)
        except ProducerClosedError:
            self._after_stop()
            return truth_id
        except (ValueError, TypeError) as exc:
            if self.strict:
                raise
            self._reject("invalid", f"log_ground_truth: {exc}; record dropped")
            return truth_id
        return truth_id

    # ------------------------------------------------------------ status
    def get_status(self) -> dict[str, Any]:
        """The agent's status, this monitor's counters; never raises.

        ``{"running", "agent", "producer", "dropped", "started_agent", "instance",
        "device_id", "stopped"}``; ``agent`` is the supervisor's status dict, or
        ``None`` with an ``error`` saying why when no agent answers. ``dropped``:
        what this monitor and its producer dropped, by reason.

        The seed's keys, with their meaning: ``prediction_count`` (outputs
        logged through this monitor), ``system_metrics_count`` (system samples
        the agent took since it started; one sample holds every metric),
        ``pending_telemetry_batches`` (objects waiting in the outbox, at
        ``telemetry.max_batch_size`` records each), ``drift_results_count``
        (drift events the agent wrote: state changes and periodic checks).
        """
        with self._count_lock:
            rejected = {k: v for k, v in self._rejected.items() if v}
        out: dict[str, Any] = {
            "instance": self.config.instance,
            "device_id": self.config.device_id,
            "started_agent": False,
            "stopped": self._stopped,
            "running": False,
            "agent": None,
            "producer": None,
            "dropped": dict(rejected),
            "prediction_count": self._predictions,
            "system_metrics_count": 0,
            "pending_telemetry_batches": 0,
            "drift_results_count": 0,
        }
        try:
            out["started_agent"] = self.started_agent
            stats = self._producer.stats()
            out["producer"] = stats
            # Records never written and records overwritten before upload, by reason.
            both = {**stats["dropped"], **stats["lost"]}
            out["dropped"] = {k: v for k, v in both.items() if v} | rejected
            agent = self._request({"op": "status"})["status"]
            out["agent"] = agent
            out["running"] = True
            out.update(self._seed_counts(agent))
        except control.ControlError as exc:
            out["error"] = f"no agent running: {exc}"
        except Exception as exc:  # status must never take the application down
            out["error"] = f"{type(exc).__name__}: {exc}"
        return out

    def _seed_counts(self, agent: Mapping[str, Any]) -> dict[str, int]:
        """The seed's status counters, from the agent's status."""
        workers = agent.get("workers", {})
        streams = workers.get("uploader", {}).get("stats", {}).get("outbox", {}).get("streams", {})
        size = self.config.telemetry.max_batch_size
        return {
            "system_metrics_count": sum(
                int(r.get("written", 0))
                for r in agent.get("rings", ())
                if r.get("kind") == "system"
            ),
            "pending_telemetry_batches": sum(
                math.ceil(int(st.get("records", 0)) / size) for st in streams.values()
            ),
            "drift_results_count": int(workers.get("drift", {}).get("stats", {}).get("events", 0)),
        }

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
            data = orjson.dumps(self._reference, default=_json_num_or_str, option=_ORJSON_OPTS)
        from edge_actors.safe_write import write_atomic

        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)  # refuses a device, FIFO or symlink at target
        if configured is not None and target.resolve() == Path(configured).resolve():
            try:
                self._request({"op": "restart", "worker": "drift"})
                log.info("drift worker restarted to load %s", target)
            except control.ControlError as exc:
                log.debug("drift worker not restarted: %s", exc)
        return os.fspath(target)
