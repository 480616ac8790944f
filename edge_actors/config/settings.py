"""The settings: every config key, declared once with its default, converter and help.

Each key is a dataclass field declared with :func:`_opt` (as gunicorn declares
its settings): the default (or the factory computing it, with a sentence saying
how), the converter that checks a YAML value and the help text. The parser, the
reference documentation (:mod:`edge_actors.config.docs`) and :meth:`Config.to_dict`
all read these fields; nothing else lists keys.

The sections are the fields of :class:`Config` declared with :func:`_section`,
in file order; :data:`SECTIONS` is derived from them. The workers come from
:mod:`edge_actors.roster`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_actors.config.computed import _cwd_var, default_device_id, default_run_dir
from edge_actors.config.converters import (
    _INSTANCE_RE,
    _boolean,
    _bucket,
    _choice,
    _Conv,
    _device_name,
    _integer,
    _nullable,
    _number,
    _path,
    _pattern,
    _positive,
    _prefix,
    _text,
    _url,
    _version,
)
from edge_actors.drift import defaults as _DRIFT
from edge_actors.roster import WORKER_NAMES, worker_spec
from edge_actors.schema import FieldSpec

__all__ = [
    "SECTIONS",
    "Config",
    "DriftConfig",
    "ModelConfig",
    "ModelLoggingConfig",
    "PerformanceConfig",
    "StorageConfig",
    "SupervisorConfig",
    "SystemConfig",
    "TelemetryConfig",
    "WorkerConfig",
    "WorkersConfig",
]


def _meta(
    *,
    doc: str,
    conv: _Conv | None = None,
    type_: str = "",
    default_doc: str | None = None,
    key: bool = True,
) -> dict[str, Any]:
    """Return the field metadata read by the parser and :func:`schema_rows`."""
    return {"doc": doc, "conv": conv, "type": type_, "default_doc": default_doc, "key": key}


def _opt(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    conv: _Conv | None = None,
    type_: str = "",
    factory: Callable[[], Any] | None = None,
    default_doc: str | None = None,
    key: bool = True,
) -> Any:
    """Declare a config field with its help text and converter.

    ``key=False`` marks a derived field that is not a YAML key (e.g. ``seed_defaults``).
    A ``default_doc`` says how a computed default is chosen; such fields also accept
    ``null`` in YAML to mean "use the computed default".
    """
    meta = _meta(doc=doc, conv=conv, type_=type_, default_doc=default_doc, key=key)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type[Any], description: str) -> Any:
    """Declare a section of the file: its class (the default is all its defaults)."""
    return field(default_factory=cls, metadata={"doc": description, "section": cls})


# ---------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True)
class ModelConfig:
    """The schema of the monitored model: its name and declared inputs and outputs."""

    name: str = _opt(
        "model",
        doc="Model name, written into model, payload and drift event records.",
        conv=_device_name(),
        type_="string",
    )
    inputs: tuple[FieldSpec, ...] = _opt(
        (),
        doc=(
            "Model inputs to monitor. Each entry is a name (a numeric field) or a mapping "
            "`{name, type: numeric|categorical, categories: [...]}`; categories are required "
            "for a categorical field. Names match `[A-Za-z_][A-Za-z0-9_.-]{0,63}`, are unique "
            "across inputs and outputs, and there are at most 256 fields in all."
        ),
        type_="list",
    )
    outputs: tuple[FieldSpec, ...] = _opt(
        (),
        doc="Model outputs to monitor, in the same form as `inputs`.",
        type_="list",
    )
    version: str | None = _opt(
        None,
        doc=(
            'Model version this entry is for (e.g. `"1.4.2"`). Without it the entry '
            "covers every version of the model that has no entry of its own; a version "
            "no entry names uses that entry (or the model's last entry) and starts with "
            "fresh detectors."
        ),
        conv=_nullable(_version()),
        type_="string",
    )
    task: str | None = _opt(
        None,
        doc=(
            "What the model does, for its performance against late ground truth "
            "(`log_feedback`, `log_ground_truth`): `classification` (accuracy and macro-F1 of "
            "a categorical output) or `regression` (MAE and RMSE of a numeric output)."
        ),
        conv=_nullable(_choice(("classification", "regression"))),
        type_="string",
    )
    target: str | None = _opt(
        None,
        doc="The output whose ground truth is scored (`task`); null: the first output.",
        conv=_nullable(_text()),
        type_="string",
    )
    reference_performance: float | None = _opt(
        None,
        doc=(
            "The model's performance on the reference data: accuracy (0-1) for "
            "`classification`, MAE for `regression`. `performance_degraded` fires when the "
            "rolling window is significantly worse (section `performance`); without it "
            "no performance is tracked."
        ),
        conv=_nullable(_number(0)),
        type_="number",
    )
    reference_data_path: Path | None = _opt(
        None,
        doc=(
            "This model's (or version's) reference data; default "
            "`drift_detection.reference_data_path`. Entries of one model without their "
            "own reference share the model's."
        ),
        conv=_nullable(_path()),
        type_="path",
    )
    drift_detection: Mapping[str, Any] = _opt(
        factory=lambda: MappingProxyType({}),
        doc=(
            "Overrides of `drift_detection` keys for this model (e.g. `{threshold: 0.01, "
            "window_size: 500}`); `enabled: false` turns drift off for it."
        ),
        type_="mapping",
    )

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        """Inputs then outputs."""
        return self.inputs + self.outputs

    def drift(self, base: DriftConfig) -> DriftConfig:
        """The drift settings of this model: ``base`` with its overrides and reference."""
        values = dict(self.drift_detection)
        if self.reference_data_path is not None:
            values["reference_data_path"] = self.reference_data_path
        return dataclasses.replace(base, **values) if values else base


@dataclass(frozen=True)
class SystemConfig:
    """System-health sampling (the ``sampler`` worker)."""

    sampling_interval_seconds: float = _opt(
        10.0,
        doc="Seconds between two system-health samples (CPU, memory, disk, temperature).",
        conv=_number(0.05),
        type_="number",
    )
    max_memory_buffer_mb: float = _opt(
        50.0,
        doc=(
            "Upper bound in MB of the shared-memory ring of system samples "
            "(at most 4096 samples are kept: hours of history at the default interval)."
        ),
        conv=_positive(),
        type_="number",
    )


@dataclass(frozen=True)
class ModelLoggingConfig:
    """Model input/output logging through producer lanes."""

    buffer_size: int = _opt(
        1000,
        doc=(
            "Records each producer can have written ahead of the agent (the seed's in-process "
            "buffer): the capacity of its shared-memory lane, rounded up to a power of two. "
            "A lane is never smaller than the floor of 16384 records, the burst an "
            "application logging at full speed writes while the agent's readers wake up "
            "(so the seed default of 1000 gives 16384); larger values are kept."
        ),
        conv=_integer(1),
        type_="integer",
    )
    pending_records: int = _opt(
        4096,
        doc=(
            "Records a producer holds in its own memory while it has no lane (no agent yet, "
            "or the agent restarting) and writes into the lane once it gets one; what "
            "overflows is counted as dropped `detached`. 0 drops at once."
        ),
        conv=_integer(0, 1_000_000),
        type_="integer",
    )
    attach_timeout_seconds: float = _opt(
        0.5,
        doc=(
            "How long `edge_actors.connect()` waits for its lane when an agent is up, so "
            "that the first records go straight to it. It never waits when no agent's "
            "control socket exists; 0 returns at once (records are then held, see "
            "`pending_records`)."
        ),
        conv=_number(0, hi=10),
        type_="number",
    )
    log_level: str = _opt(
        "INFO",
        doc="Log level of the agent: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case).",
        conv=_choice(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), upper=True),
        type_="string",
    )
    payload_slot_bytes: int = _opt(
        1024,
        doc="Bytes per slot of the payload ring (raw inputs/outputs larger than this are cut).",
        conv=_integer(256, 65536),
        type_="integer",
    )
    allow_undeclared_models: bool = _opt(
        False,
        doc=(
            "Accept a producer of a model the config does not declare, with the fields it "
            "gives in code (`connect(..., model=, inputs=, outputs=)`); its records are "
            "uploaded, drift is not tested (no reference). Off: such a producer is refused."
        ),
        conv=_boolean(),
        type_="boolean",
    )
    payload_capacity: int = _opt(
        8192,
        doc=(
            "Number of slots in each payload ring, rounded up to a power of two, never "
            "fewer than 8192 (half the lane floor: the same burst, one payload per "
            "prediction)."
        ),
        conv=_integer(16),
        type_="integer",
    )


@dataclass(frozen=True)
class DriftConfig:
    """Drift detection (the ``drift`` worker); see the drift guide for the statistics."""

    enabled: bool = _opt(True, doc="Run drift detection.", conv=_boolean(), type_="boolean")
    algorithm: str = _opt(
        "ks_test",
        doc="Test for numeric features. Only `ks_test` (two-sample Kolmogorov-Smirnov).",
        conv=_choice(("ks_test",)),
        type_="string",
    )
    threshold: float = _opt(
        _DRIFT.THRESHOLD,
        doc=(
            "P-value threshold used by `per_check` mode, and the family-wise "
            "false-alarm level reported with each event."
        ),
        conv=_number(0, lo_incl=False, hi=1, hi_incl=False),
        type_="number",
    )
    reference_data_path: Path | None = _opt(
        None,
        doc=(
            'Reference data: the seed\'s JSON (`{"feature": [values...]}`) or a `.npz` '
            "built by `edge-actors reference build`. Loaded and checked by "
            "`edge-actors check-config` and by the drift worker at start."
        ),
        conv=_nullable(_path()),
        type_="path",
    )
    max_reference_mb: float = _opt(
        64.0,
        doc=(
            "Largest reference accepted: the size of a JSON file, or the uncompressed "
            "size a `.npz` declares (checked before anything is read)."
        ),
        conv=_positive(),
        type_="number",
    )
    check_frequency: int = _opt(
        _DRIFT.CHECK_FREQUENCY,
        doc="Run the drift tests every this many records.",
        conv=_integer(1),
        type_="integer",
    )
    mode: str = _opt(
        _DRIFT.MODE,
        doc=(
            "`calibrated`: thresholds set so that a stream that never drifts raises a false "
            "alarm about once per `expected_records_to_false_alarm` records; `per_check`: "
            "plain `p < threshold` at each check (the seed's behaviour)."
        ),
        conv=_choice(("calibrated", "per_check")),
        type_="string",
    )
    window_size: int = _opt(
        _DRIFT.WINDOW_SIZE,
        doc=(
            "Records in the recent window tested against the reference. When the "
            "`drift_detection` section sets none of `window_size`, `long_window_size` and "
            "`mode` (a seed config), the seed behaviour applies: the window is "
            "`check_frequency` records (at least 10)."
        ),
        conv=_integer(10),
        type_="integer",
        default_doc="1000 (seed configs: check_frequency)",
    )
    long_window_size: int = _opt(
        _DRIFT.LONG_WINDOW_SIZE,
        doc=(
            "Records in a second, longer window that catches slow drift; 0 disables it. "
            "Must be larger than `window_size`; when left at its default and not larger, "
            "it is disabled."
        ),
        conv=_integer(0),
        type_="integer",
    )
    expected_records_to_false_alarm: int = _opt(
        _DRIFT.EXPECTED_RECORDS_TO_FALSE_ALARM,
        doc="Calibrated mode: average records between two false alarms on undrifted data.",
        conv=_integer(1000),
        type_="integer",
    )
    min_statistic: float = _opt(
        _DRIFT.MIN_STATISTIC,
        doc="Effect-size floor: a KS statistic below this never counts as drift.",
        conv=_number(0, hi=1),
        type_="number",
    )
    confirm_m: int = _opt(
        _DRIFT.CONFIRM_M,
        doc="Drift starts when `confirm_m` of the last `confirm_n` checks fail.",
        conv=_integer(1, 20),
        type_="integer",
    )
    confirm_n: int = _opt(
        _DRIFT.CONFIRM_N,
        doc="Length of the m-of-n confirmation window, in checks (1..20).",
        conv=_integer(1, 20),
        type_="integer",
    )
    correction: str = _opt(
        _DRIFT.CORRECTION,
        doc=(
            "Multiple-testing correction across features: bonferroni, bh or none. "
            "`per_check` mode: applied to the p-values of each check. `calibrated` mode: "
            "`bonferroni` splits the false-alarm budget over the monitored features "
            "(`expected_records_to_false_alarm` holds for all of them together); `bh` "
            "acts as `bonferroni` there; `none` gives each feature the whole budget."
        ),
        conv=_choice(("bonferroni", "bh", "none")),
        type_="string",
    )
    nan_rate_threshold: float = _opt(
        _DRIFT.NAN_RATE_THRESHOLD,
        doc="Data-quality alarm when the NaN rate exceeds the reference's by this much.",
        conv=_number(0, hi=1),
        type_="number",
    )
    out_of_range_threshold: float = _opt(
        _DRIFT.OUT_OF_RANGE_THRESHOLD,
        doc="Data-quality alarm when this fraction of values is outside the reference min/max.",
        conv=_number(0, hi=1),
        type_="number",
    )
    min_expected_count: float = _opt(
        _DRIFT.MIN_EXPECTED_COUNT,
        doc="Chi-squared: categories expected fewer times than this are merged into OTHER.",
        conv=_positive(),
        type_="number",
    )
    summary_interval_seconds: float = _opt(
        _DRIFT.SUMMARY_INTERVAL_SECONDS,
        doc="Seconds between two drift summary records (statistics even without drift).",
        conv=_positive(),
        type_="number",
    )
    unknown_category_threshold: float = _opt(
        _DRIFT.UNKNOWN_CATEGORY_THRESHOLD,
        doc=(
            "Data-quality alarm (`unknown_category`) when this fraction of a categorical "
            "field's values is in categories the reference never saw (above the "
            "reference's own share of them)."
        ),
        conv=_number(0, hi=1),
        type_="number",
    )
    quality_hysteresis: float = _opt(
        _DRIFT.QUALITY_HYSTERESIS,
        doc=(
            "Data-quality alarms (NaN rate, out of range, unknown category) resolve only "
            "once the rate is below `threshold * (1 - quality_hysteresis)` (above the "
            "reference's rate) for `confirm_n` checks: no flapping around the threshold."
        ),
        conv=_number(0, hi=1, hi_incl=False),
        type_="number",
    )
    worsened_factor: float = _opt(
        _DRIFT.WORSENED_FACTOR,
        doc=(
            "During a drift episode, a `drift_worsened` event when the effect size (KS D, "
            "or Cohen's w for chi-squared) grows by this factor over the one last "
            "reported; 0 disables it."
        ),
        conv=_number(0),
        type_="number",
    )
    autocorrelation: bool = _opt(
        _DRIFT.AUTOCORRELATION,
        doc=(
            "Estimate each tested window's lag-1 autocorrelation and test with the "
            "effective sample size: without it, a correlated sensor stream raises false "
            "alarms (the tests assume independent records)."
        ),
        conv=_boolean(),
        type_="boolean",
    )
    discrete_max_values: int = _opt(
        _DRIFT.DISCRETE_MAX_VALUES,
        doc=(
            "Numeric fields whose reference has at most this many distinct values "
            "(counts, flags) are tested with chi-squared on those values instead of KS; "
            "0 disables it."
        ),
        conv=_integer(0, 1000),
        type_="integer",
    )
    atom_min_share: float = _opt(
        _DRIFT.ATOM_MIN_SHARE,
        doc=(
            "Other numeric fields whose most frequent reference value holds at least this "
            "share (a sensor that reads 0 most of the time) are tested in two parts: that "
            "value's share (chi-squared, events with test `atom_share`) and KS on the other "
            "values; 0 disables it."
        ),
        conv=_number(0, hi=1),
        type_="number",
    )
    checkpoint_interval_seconds: float = _opt(
        _DRIFT.CHECKPOINT_INTERVAL_SECONDS,
        doc=(
            "Seconds between two checkpoints of the drift state (in `data_dir`, next to "
            "the outbox) while records flow; also written before events and at a clean "
            "stop. A kill re-reads at most this much."
        ),
        conv=_positive(),
        type_="number",
    )
    seed_defaults: bool = _opt(
        False,
        doc="True when the seed rule set `window_size` (not a YAML key).",
        type_="boolean",
        key=False,
    )


@dataclass(frozen=True)
class PerformanceConfig:
    """Rolling model performance from late ground truth (models with a `task`)."""

    window_size: int = _opt(
        750,
        doc="Labelled predictions in the rolling window that is tested.",
        conv=_integer(10, 1_000_000),
        type_="integer",
    )
    check_every: int = _opt(
        25,
        doc="Test the window every this many new labels.",
        conv=_integer(1, 1_000_000),
        type_="integer",
    )
    min_labels: int = _opt(
        100,
        doc="Labels the window needs before it is tested.",
        conv=_integer(1),
        type_="integer",
    )
    expected_labels_to_false_alarm: int = _opt(
        100_000_000,
        doc=(
            "Labelled records per false `performance_degraded`, at least, on data at the "
            "reference performance: each check's false-alarm probability is "
            "`check_every / expected_labels_to_false_alarm` (exact binomial tail for "
            "classification, normal approximation for regression)."
        ),
        conv=_integer(100),
        type_="integer",
    )
    tolerance: float = _opt(
        0.0,
        doc=(
            "Slack before a check can fail: accuracy may drop this much (absolute), "
            "MAE may grow by this share."
        ),
        conv=_number(0),
        type_="number",
    )
    confirm_m: int = _opt(
        2,
        doc="`performance_degraded` (and `_recovered`) when `confirm_m` of the last "
        "`confirm_n` checks agree.",
        conv=_integer(1, 20),
        type_="integer",
    )
    confirm_n: int = _opt(
        3,
        doc="Length of the m-of-n confirmation, in checks.",
        conv=_integer(1, 20),
        type_="integer",
    )
    recover_p: float = _opt(
        0.05,
        doc="When degraded, a check with a p-value above this counts towards recovery.",
        conv=_number(0, hi=1),
        type_="number",
    )
    prediction_index_size: int = _opt(
        32768,
        doc=(
            "Recent predictions kept per model and version to join late truth to "
            "(about 170 bytes each in the drift worker: 5.6 MB by default); older ones "
            "without truth are counted `evicted_unlabelled`. Size it to the predictions "
            "made during the longest label delay you expect."
        ),
        conv=_integer(16, 10_000_000),
        type_="integer",
    )
    truth_wait_seconds: float = _opt(
        60.0,
        doc=(
            "Truth whose prediction is not in the index waits this long for it (the "
            "prediction may still be in another lane), then is counted `unknown_id`."
        ),
        conv=_number(0),
        type_="number",
    )


@dataclass(frozen=True)
class TelemetryConfig:
    """Upload of the outbox to the sink (the ``uploader`` worker)."""

    upload_interval_seconds: float = _opt(
        300.0,
        doc="Seconds between two upload rounds.",
        conv=_positive(),
        type_="number",
    )
    max_batch_size: int = _opt(
        100,
        doc="Records per uploaded object.",
        conv=_integer(1, 100_000),
        type_="integer",
    )
    retry_base_delay_seconds: float = _opt(
        1.0,
        doc="First retry delay after a failed upload (exponential backoff, full jitter).",
        conv=_positive(),
        type_="number",
    )
    retry_max_delay_seconds: float = _opt(
        60.0,
        doc="Cap on the retry delay; at least `retry_base_delay_seconds`.",
        conv=_positive(),
        type_="number",
    )
    retry_max_attempts: int = _opt(
        5,
        doc=(
            "Attempts within one upload round before the batch waits for the next round. "
            "Nothing is ever dropped by the retry logic."
        ),
        conv=_integer(1),
        type_="integer",
    )
    model_sample_rate: float = _opt(
        1.0,
        doc="Fraction of model records kept for upload (drift sees them all).",
        conv=_number(0, lo_incl=False, hi=1),
        type_="number",
    )


@dataclass(frozen=True)
class StorageConfig:
    """The SQLite outbox and where its batches go."""

    type: str = _opt(
        "local",
        doc=(
            "Sink: `local` (a directory), `s3` (any S3-compatible store) or `sqlite` "
            "(keep everything in the outbox, never upload)."
        ),
        conv=_choice(("local", "s3", "sqlite")),
        type_="string",
    )
    bucket: str | None = _opt(
        None,
        doc=(
            "S3 bucket; required when `type` is `s3` and then checked against S3 naming "
            "rules (ignored by the other types)."
        ),
        conv=_nullable(_bucket()),
        type_="string",
    )
    prefix: str = _opt(
        "",
        doc=(
            "Key prefix for every object (no leading `/`, no `..` segment, at most 256 "
            "characters); a `/` is appended when missing."
        ),
        conv=_prefix(),
        type_="string",
    )
    sqlite_path: Path = _opt(
        factory=lambda: _cwd_var() / "outbox.db",
        doc="The SQLite outbox file.",
        conv=_path(),
        type_="path",
        default_doc="{data_dir}/outbox.db",
    )
    max_sqlite_size_mb: float = _opt(
        100.0,
        doc="Disk budget of the outbox; past it the oldest, lowest-priority rows are dropped.",
        conv=_positive(),
        type_="number",
    )
    local_path: Path = _opt(
        factory=lambda: _cwd_var() / "sink",
        doc="Directory of the `local` sink.",
        conv=_path(),
        type_="path",
        default_doc="{data_dir}/sink",
    )
    endpoint_url: str | None = _opt(
        None,
        doc="S3 endpoint for S3-compatible stores (MinIO, Ceph...); http:// or https://.",
        conv=_nullable(_url()),
        type_="string",
    )
    region: str | None = _opt(
        None,
        doc="S3 region; unset means the SDK's default chain.",
        conv=_nullable(_text()),
        type_="string",
    )
    synchronous: str = _opt(
        "FULL",
        doc="SQLite `PRAGMA synchronous` of the outbox: FULL, NORMAL or EXTRA.",
        conv=_choice(("FULL", "NORMAL", "EXTRA"), upper=True),
        type_="string",
    )
    gzip_level: int = _opt(
        1,
        doc=(
            "gzip level of the uploaded objects, 1 (fastest) to 9 (smallest). Level 6 makes "
            "objects ~20 % smaller for ~4x the CPU of level 1."
        ),
        conv=_integer(1, 9),
        type_="integer",
    )


@dataclass(frozen=True)
class WorkerConfig:
    """One worker process: whether it runs and its memory budget."""

    enabled: bool = _opt(True, doc="Start this worker.", conv=_boolean(), type_="boolean")
    # No default here: each worker's comes from its roster row (edge_actors.roster).
    memory_limit_mb: float = field(
        kw_only=True,
        metadata=_meta(
            doc="Unique memory (USS/PSS) budget in MB; over it the worker is restarted.",
            conv=_positive(),
            type_="number",
        ),
    )


def _worker(name: str) -> Any:
    """The field of worker ``name``: default budget and help from its roster row."""
    spec = worker_spec(name)
    return field(
        default_factory=lambda: WorkerConfig(memory_limit_mb=spec.memory_limit_mb),
        metadata={"doc": spec.doc},
    )


@dataclass(frozen=True)
class WorkersConfig:
    """The worker processes, one field per row of :data:`edge_actors.roster.ROSTER`."""

    sampler: WorkerConfig = _worker("sampler")
    drift: WorkerConfig = _worker("drift")
    uploader: WorkerConfig = _worker("uploader")

    def get(self, name: str) -> WorkerConfig:
        """Return the config of the worker called ``name``; ``KeyError`` for any other name."""
        if name not in WORKER_NAMES:
            raise KeyError(name)
        result: WorkerConfig = getattr(self, name)
        return result


# The typed attributes (cfg.workers.drift) are for readers; the roster is the list.
if tuple(f.name for f in dataclasses.fields(WorkersConfig)) != WORKER_NAMES:
    raise RuntimeError("WorkersConfig must have one field per roster worker, in roster order")


@dataclass(frozen=True)
class SupervisorConfig:
    """Restart policy, heartbeats, memory checks and shutdown of the supervisor."""

    restart_backoff_initial_seconds: float = _opt(
        0.05, doc="First restart delay after a crash.", conv=_positive(), type_="number"
    )
    restart_backoff_max_seconds: float = _opt(
        30.0,
        doc="Cap on the restart delay; at least `restart_backoff_initial_seconds`.",
        conv=_positive(),
        type_="number",
    )
    restart_stable_seconds: float = _opt(
        60.0,
        doc="A worker up this long has its backoff reset.",
        conv=_positive(),
        type_="number",
    )
    max_restarts: int = _opt(
        10,
        doc="More restarts than this within `restart_period_seconds` stops the supervisor.",
        conv=_integer(1),
        type_="integer",
    )
    restart_period_seconds: float = _opt(
        60.0, doc="Window of the restart-intensity limit.", conv=_positive(), type_="number"
    )
    heartbeat_interval_seconds: float = _opt(
        1.0, doc="Seconds between two worker heartbeats.", conv=_positive(), type_="number"
    )
    heartbeat_timeout_seconds: float = _opt(
        10.0,
        doc="A worker silent this long is killed and restarted; more than the interval.",
        conv=_positive(),
        type_="number",
    )
    stats_interval_seconds: float = _opt(
        2.0,
        doc="Seconds between two worker stats reports (what `status` shows), on heartbeats.",
        conv=_positive(),
        type_="number",
    )
    memory_check_interval_seconds: float = _opt(
        2.0, doc="Seconds between two memory measurements.", conv=_positive(), type_="number"
    )
    memory_metric: str = _opt(
        "uss",
        doc="Memory measure compared to budgets: uss, pss or rss (rss counts shared rings).",
        conv=_choice(("uss", "pss", "rss")),
        type_="string",
    )
    stop_grace_seconds: float = _opt(
        5.0,
        doc="Seconds a worker has to stop after a request before SIGKILL.",
        conv=_positive(),
        type_="number",
    )
    shutdown_timeout_seconds: float = _opt(
        15.0,
        doc="Seconds each worker gets to stop during the ordered shutdown (then SIGKILL).",
        conv=_positive(),
        type_="number",
    )
    hard_memory_limit: bool = _opt(
        False,
        doc="Also set a kernel rlimit backstop on each worker, above its budget.",
        conv=_boolean(),
        type_="boolean",
    )
    max_clients: int = _opt(
        256,
        doc=(
            "Most control-socket connections at once (each producer holds one); more are "
            "refused with a reply. Lowered to fit the open-file limit."
        ),
        conv=_integer(1),
        type_="integer",
    )
    client_idle_timeout_seconds: float = _opt(
        10.0,
        doc="A control connection without a lane that sends no request for this long is closed.",
        conv=_positive(),
        type_="number",
    )
    shm_budget_mb: float = _opt(
        256.0,
        doc=(
            "Total shared memory of all rings and lanes; a producer asking for a lane past it "
            "is refused (and told why)."
        ),
        conv=_positive(),
        type_="number",
    )


@dataclass(frozen=True)
class Config:
    """The whole agent configuration."""

    instance: str = _opt(
        "default",
        doc=(
            "Instance name (1-16 of `A-Za-z0-9_`); several agents with different instances "
            "can run on one box. Used in shared-memory and socket names."
        ),
        conv=_pattern(_INSTANCE_RE, "1 to 16 characters from A-Z a-z 0-9 _"),
        type_="string",
    )
    device_id: str = _opt(
        doc="Device name in records and object keys (`[A-Za-z0-9][A-Za-z0-9._-]{0,63}`).",
        conv=_device_name(),
        type_="string",
        factory=default_device_id,
        default_doc="12 hex chars of a salted hash of /etc/machine-id, else the hostname",
    )
    run_dir: Path = _opt(
        factory=default_run_dir,
        doc="Directory of the control socket `{run_dir}/{instance}.sock` (at most 107 bytes).",
        conv=_path(),
        type_="path",
        default_doc=(
            "$XDG_RUNTIME_DIR/edge-actors, else /run/edge-actors if this user's or /run "
            "is writable, else /tmp/edge-actors-<uid>"
        ),
    )
    data_dir: Path = _opt(
        factory=_cwd_var,
        doc="Directory of durable data (outbox, local sink, calibration cache).",
        conv=_path(),
        type_="path",
        default_doc="<config file folder>/var (cwd/var without a file)",
    )
    models: tuple[ModelConfig, ...] = _opt(
        (),
        doc=(
            "Several monitored models (and versions), each entry with the keys of `model`; "
            "`(name, version)` pairs are unique. `model:` is the shorthand for one; give "
            "one of the two."
        ),
        type_="list",
        default_doc="[the `model` section]",
    )
    model: ModelConfig = _section(
        ModelConfig, "The monitored model's name and declared inputs/outputs."
    )
    system: SystemConfig = _section(SystemConfig, "System-health sampling (seed section).")
    model_logging: ModelLoggingConfig = _section(
        ModelLoggingConfig, "Producer lanes and payload ring (seed section)."
    )
    drift_detection: DriftConfig = _section(
        DriftConfig, "Drift detection (seed section, extended)."
    )
    performance: PerformanceConfig = _section(
        PerformanceConfig, "Model performance from late ground truth (models with a `task`)."
    )
    telemetry: TelemetryConfig = _section(
        TelemetryConfig, "Upload schedule and retries (seed section)."
    )
    storage: StorageConfig = _section(StorageConfig, "SQLite outbox and sink (seed section).")
    workers: WorkersConfig = _section(WorkersConfig, "Worker processes: enabled and memory budget.")
    supervisor: SupervisorConfig = _section(
        SupervisorConfig, "Restart policy, heartbeats, memory checks, shutdown."
    )

    def __post_init__(self) -> None:
        # One model: `model` is authoritative (dataclasses.replace(cfg, model=...) keeps
        # working); several: the parser sets `model` to the first, for code that
        # knows only one (the drift worker replaces it with the one it builds for).
        if len(self.models) <= 1:
            object.__setattr__(self, "models", (self.model,))

    def find_model(self, name: str, version: str | None) -> ModelConfig | None:
        """The entry of model ``name`` at ``version`` (see ``models``), or ``None``.

        An exact ``(name, version)`` entry first, then the model's entry without a
        version, then its last entry (a version the config does not list yet).
        """
        same = [m for m in self.models if m.name == name]
        exact = [m for m in same if m.version == version and version is not None]
        loose = [m for m in same if m.version is None]
        for found in (exact, loose, same[-1:]):
            if found:
                return found[0]
        return None

    @property
    def socket_path(self) -> Path:
        """The control socket path."""
        return self.run_dir / f"{self.instance}.sock"

    # Read-only mapping access with the YAML (seed) names, for code written for the
    # seed library, whose config was a dict: config["drift_detection"]["check_frequency"].
    def __getitem__(self, key: str) -> Any:
        """A top-level key: a section as a read-only mapping, or a value (paths as str)."""
        if not isinstance(key, str) or key not in _yaml_keys(type(self)):
            raise KeyError(key)
        return _frozen(_to_plain(getattr(self, key)))

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]``, or ``default`` when ``key`` is not a config key."""
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> tuple[str, ...]:
        """The top-level YAML keys, as :meth:`__getitem__` accepts them."""
        return _yaml_keys(type(self))

    def items(self) -> list[tuple[str, Any]]:
        """``(key, self[key])`` for every top-level key."""
        return [(k, self[k]) for k in self.keys()]

    def values(self) -> list[Any]:
        """``self[key]`` for every top-level key."""
        return [self[k] for k in self.keys()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in _yaml_keys(type(self))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def to_dict(self) -> dict[str, Any]:
        """Return the effective config as plain JSON-able data in the YAML schema.

        Paths become strings and model fields their mapping form, so the result can
        be written back as a config file. Derived values that are not YAML keys
        (``drift_detection.seed_defaults``) are left out.
        """
        result = _to_plain(self)
        assert isinstance(result, dict)
        # Written back, the file must give one of `model` and `models`.
        del result["models" if len(self.models) == 1 else "model"]
        return result


def _yaml_keys(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("key", True))


def _frozen(value: object) -> object:
    """Plain data made read-only: mappings as ``MappingProxyType``, lists as tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _to_plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, FieldSpec):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("key", True)
        }
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


#: The sections of the file, in file order: name -> settings class.
SECTIONS: Mapping[str, type[Any]] = MappingProxyType(
    {f.name: f.metadata["section"] for f in dataclasses.fields(Config) if "section" in f.metadata}
)
#: The top-level keys that hold a value, not a section.
TOP_KEYS: tuple[str, ...] = tuple(k for k in _yaml_keys(Config) if k not in SECTIONS)
