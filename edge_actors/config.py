"""Configuration: one YAML file loaded into typed, frozen dataclasses.

The seed project's sections (``system``, ``model_logging``, ``drift_detection``,
``telemetry``, ``storage``) keep their keys and meanings, so a seed config loads
unchanged. New sections (``model``, ``workers``, ``supervisor``) and new keys all
have defaults.

Loading validates types and ranges only (it never checks that a referenced file
exists: that is the job of the process that opens it) and reports *every* error
in the file at once, each with its key path, the bad value and what is allowed::

    configs/x.yaml: workers.drift.memory_limit_mb: must be > 0, got -5

The help text of each key sits next to its field (``metadata["doc"]``) so that
:func:`schema_rows` can generate the configuration reference.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import ipaddress
import json
import math
import os
import re
import socket
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from edge_actors.drift import defaults as _DRIFT
from edge_actors.filekind import file_kind
from edge_actors.keys import prefix_problem
from edge_actors.redact import redact_url, short_repr

__all__ = [
    "SCHEMA",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DriftConfig",
    "FieldSpec",
    "ModelConfig",
    "ModelLoggingConfig",
    "StorageConfig",
    "SupervisorConfig",
    "SystemConfig",
    "TelemetryConfig",
    "WorkerConfig",
    "WorkersConfig",
    "default_device_id",
    "default_run_dir",
    "load_config",
    "parse_config",
    "sanitize_device_id",
    "schema_rows",
]

#: Longest Unix socket path: ``sun_path`` is 108 bytes on Linux, one of them the NUL.
MAX_SOCKET_PATH_BYTES = 107
#: Most fields (inputs + outputs) a model may declare.
MAX_MODEL_FIELDS = 256
#: Name of the worker processes, in start order.
WORKER_NAMES = ("sampler", "drift", "uploader")

_INSTANCE_RE = re.compile(r"[A-Za-z0-9_]{1,16}")
_DEVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_BUCKET_CHARS_RE = re.compile(r"[a-z0-9.-]+")
# PyYAML follows YAML 1.1, where ``1e6`` (no dot) is a string; YAML 1.2 and most
# people read it as a number, so number fields accept that spelling.
_EXP_FLOAT_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?\d+")


# ---------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: the dotted key path and what is wrong."""

    path: str
    message: str

    def render(self, source: str) -> str:
        """Return the issue as ``<source>: <path>: <message>``."""
        if self.path:
            return f"{source}: {self.path}: {self.message}"
        return f"{source}: {self.message}"


class ConfigError(ValueError):
    """A config file could not be loaded; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[ConfigIssue]) -> None:
        """Build the error from the file name and all the issues found in it."""
        self.source = source
        self.errors = list(errors)
        super().__init__("\n".join(issue.render(source) for issue in self.errors))


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file does not exist: a :class:`ConfigError` that is also a ``FileNotFoundError``.

    Code written for the seed library catches ``FileNotFoundError`` for a
    missing file; code written for this one catches ``ConfigError``.
    """

    def __init__(self, source: str) -> None:
        """Build the error for the missing file ``source``."""
        super().__init__(source, [ConfigIssue("", "config file not found")])
        self.errno = errno.ENOENT
        self.strerror = "config file not found"
        self.filename = source

    # OSError's "[Errno 2] ..." form would hide the file name and issue layout.
    __str__ = ConfigError.__str__


class _Invalid(Exception):
    """Raised by a converter; the message is the part after the key path."""


# ---------------------------------------------------------------------------
# Value formatting and converters

#: Longest bad value echoed whole in a message; longer ones are cut.
_SHOWN_CHARS = 80


def _show(value: object) -> str:
    """Format a bad value the way the user wrote it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # Cut: a 10 MB bad value must not come back whole in the message.
        return short_repr(value, _SHOWN_CHARS)
    if isinstance(value, (int, float)):
        return _num(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    if len(text) > _SHOWN_CHARS:
        return f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"
    return text


def _key_text(key: object) -> str:
    """A mapping key as shown in a key path: as written when plain, else quoted and cut."""
    if isinstance(key, str):
        if key.isprintable() and len(key) <= _SHOWN_CHARS:
            return key
        return short_repr(key, _SHOWN_CHARS)
    return _show(key)


def _num(x: float) -> str:
    """Format a bound or value without a spurious ``.0`` (``10`` not ``10.0``)."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class _Ctx:
    """What converters need besides the value: the folder relative paths start from."""

    base_dir: Path


_Conv = Callable[[object, _Ctx], Any]


def _as_number(value: object) -> float:
    # bool is an int subclass in Python but never a number in a config file.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Invalid(f"must be a number, got {_show(value)}")
    if isinstance(value, str):
        if not _EXP_FLOAT_RE.fullmatch(value.strip()):
            raise _Invalid(f"must be a number, got {_show(value)}")
        result = float(value)
    else:
        result = float(value)
    if not math.isfinite(result):
        raise _Invalid(f"must be a finite number, got {_show(value)}")
    return result


def _range_text(lo: float | None, lo_incl: bool, hi: float | None, hi_incl: bool) -> str:
    if lo is not None and hi is not None:
        if lo_incl and hi_incl:
            return f"must be between {_num(lo)} and {_num(hi)}"
        return (
            f"must be {'>=' if lo_incl else '>'} {_num(lo)} "
            f"and {'<=' if hi_incl else '<'} {_num(hi)}"
        )
    if lo is not None:
        return f"must be {'>=' if lo_incl else '>'} {_num(lo)}"
    assert hi is not None
    return f"must be {'<=' if hi_incl else '<'} {_num(hi)}"


def _check_range(
    x: float, raw: object, lo: float | None, lo_incl: bool, hi: float | None, hi_incl: bool
) -> None:
    bad = (lo is not None and (x < lo if lo_incl else x <= lo)) or (
        hi is not None and (x > hi if hi_incl else x >= hi)
    )
    if bad:
        raise _Invalid(f"{_range_text(lo, lo_incl, hi, hi_incl)}, got {_show(raw)}")


def _number(
    lo: float | None = None,
    *,
    lo_incl: bool = True,
    hi: float | None = None,
    hi_incl: bool = True,
) -> _Conv:
    """Converter for a float with an optional range."""

    def conv(value: object, ctx: _Ctx) -> float:
        x = _as_number(value)
        _check_range(x, value, lo, lo_incl, hi, hi_incl)
        return x

    return conv


def _positive() -> _Conv:
    return _number(0, lo_incl=False)


def _integer(lo: int | None = None, hi: int | None = None) -> _Conv:
    """Converter for an int; integral floats such as ``1e6`` or ``100.0`` are accepted."""

    def conv(value: object, ctx: _Ctx) -> int:
        if isinstance(value, bool):
            raise _Invalid(f"must be an integer, got {_show(value)}")
        if isinstance(value, int):
            result = value
        else:
            try:
                x = _as_number(value)
            except _Invalid:
                raise _Invalid(f"must be an integer, got {_show(value)}") from None
            if not x.is_integer():
                raise _Invalid(f"must be an integer, got {_show(value)}")
            result = int(x)
        _check_range(result, value, lo, True, hi, True)
        return result

    return conv


def _boolean() -> _Conv:
    def conv(value: object, ctx: _Ctx) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(f"must be true or false, got {_show(value)}")
        return value

    return conv


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {_show(value)}")
    return value


def _choice(options: tuple[str, ...], *, upper: bool = False) -> _Conv:
    """Converter for one of a few words, case-insensitive, stored in canonical case."""

    def conv(value: object, ctx: _Ctx) -> str:
        allowed = ", ".join(options)
        if not isinstance(value, str):
            raise _Invalid(f"must be one of {allowed}, got {_show(value)}")
        word = value.strip().upper() if upper else value.strip().lower()
        if word not in options:
            raise _Invalid(f"must be one of {allowed}, got {_show(value)}")
        return word

    return conv


def _text() -> _Conv:
    def conv(value: object, ctx: _Ctx) -> str:
        return _string(value)

    return conv


def _nullable(inner: _Conv) -> _Conv:
    def conv(value: object, ctx: _Ctx) -> Any:
        return None if value is None else inner(value, ctx)

    return conv


def _path() -> _Conv:
    """Converter for a path: ``~`` expanded, relative to the config file's folder."""

    def conv(value: object, ctx: _Ctx) -> Path:
        if not isinstance(value, str):
            raise _Invalid(f"must be a path string, got {_show(value)}")
        if not value.strip():
            raise _Invalid("must be a non-empty path, got ''")
        if "\0" in value:
            raise _Invalid(f"must not contain a NUL character, got {_show(value)}")
        p = Path(os.path.expanduser(value))
        # abspath normalises ``configs/../var`` so status output shows a clean path.
        return Path(os.path.abspath(ctx.base_dir / p))

    return conv


def _pattern(regex: re.Pattern[str], rule: str) -> _Conv:
    def conv(value: object, ctx: _Ctx) -> str:
        s = _string(value)
        if not regex.fullmatch(s):
            raise _Invalid(f"must be {rule}, got {_show(value)}")
        return s

    return conv


_DEVICE_RULE = "1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"


def _device_name() -> _Conv:
    """Converter for names that end up in S3 keys and file paths."""

    base = _pattern(_DEVICE_RE, _DEVICE_RULE)

    def conv(value: object, ctx: _Ctx) -> str:
        s: str = base(value, ctx)
        if ".." in s:
            raise _Invalid(f"must not contain '..', got {_show(value)}")
        return s

    return conv


def _bucket() -> _Conv:
    """Converter applying the S3 bucket naming rules, reporting the first broken one."""

    def conv(value: object, ctx: _Ctx) -> str:
        s = _string(value)
        shown = _show(value)
        if not 3 <= len(s) <= 63:
            raise _Invalid(f"must be 3 to 63 characters long, got {shown} ({len(s)})")
        if not _BUCKET_CHARS_RE.fullmatch(s):
            raise _Invalid(
                f"may contain only lowercase letters, digits, dots and hyphens, got {shown}"
            )
        if not (s[0].isalnum() and s[-1].isalnum()):
            raise _Invalid(f"must start and end with a lowercase letter or digit, got {shown}")
        if ".." in s:
            raise _Invalid(f"must not contain two adjacent dots, got {shown}")
        try:
            ipaddress.IPv4Address(s)
        except ValueError:
            pass
        else:
            raise _Invalid(f"must not be formatted as an IP address, got {shown}")
        if s.startswith(("xn--", "sthree-")):
            raise _Invalid(f"must not start with 'xn--' or 'sthree-', got {shown}")
        if s.endswith(("-s3alias", "--ol-s3")):
            raise _Invalid(f"must not end with '-s3alias' or '--ol-s3', got {shown}")
        return s

    return conv


def _prefix() -> _Conv:
    """Converter for the object key prefix: the sinks' own rules, then a ``/`` appended."""

    def conv(value: object, ctx: _Ctx) -> str:
        if value is None:
            return ""
        s = _string(value)
        # The very function every sink applies: what loads here is never refused later.
        problem = prefix_problem(s)
        if problem is not None:
            raise _Invalid(problem)
        if s and not s.endswith("/"):
            s += "/"
        return s

    return conv


_CREDENTIALS_CHAIN = (
    "credentials belong in the AWS credential chain (AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or an instance role)"
)


def _url() -> _Conv:
    """Converter for an endpoint URL: http(s), a host, and no credentials in it.

    A user name, password or query string (``?X-Amz-Security-Token=...``) in the
    URL would travel into every log line, ``status`` and the outbox; messages
    here show the URL redacted.
    """

    def conv(value: object, ctx: _Ctx) -> str:
        s = _string(value)
        shown = short_repr(redact_url(s))
        try:
            parts = urlsplit(s)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise _Invalid(f"must be a valid URL ({exc}), got {shown}") from None
        if parts.scheme not in ("http", "https") or not s.startswith(("http://", "https://")):
            raise _Invalid(f"must start with http:// or https://, got {shown}")
        if "@" in parts.netloc:
            raise _Invalid(
                f"must not contain a user name or password; {_CREDENTIALS_CHAIN}, got {shown}"
            )
        if parts.query or "?" in s:
            raise _Invalid(f"must not contain a query string; {_CREDENTIALS_CHAIN}, got {shown}")
        if parts.fragment or "#" in s:
            raise _Invalid(f"must not contain a '#' fragment, got {shown}")
        if not parts.hostname:
            raise _Invalid(f"must name a host, got {shown}")
        if any(ord(c) <= 32 or ord(c) == 127 for c in s):
            raise _Invalid(f"must not contain blanks or control characters, got {shown}")
        return s

    return conv


# ---------------------------------------------------------------------------
# Computed defaults


def sanitize_device_id(raw: str) -> str:
    """Turn any string (a hostname, say) into a valid ``device_id``.

    Characters outside ``A-Za-z0-9._-`` become ``-``, runs of dots collapse to one
    (``..`` would be a path traversal in the local sink), leading characters that
    are not a letter or digit are dropped, and the result is cut to 64 characters.
    An empty result becomes ``"device"``.
    """
    s = re.sub(r"[^A-Za-z0-9._-]", "-", raw)
    s = re.sub(r"\.{2,}", ".", s)
    s = re.sub(r"^[^A-Za-z0-9]+", "", s)[:64]
    return s or "device"


def default_device_id(machine_id_path: Path = Path("/etc/machine-id")) -> str:
    """Return the default ``device_id``: 12 hex chars from the machine id, else the hostname.

    The machine id is stable across reboots and hostname changes; containers often
    have an empty one, hence the hostname fallback. machine-id(5) asks that the
    id not be exposed as is, so it is hashed (with an application-specific salt,
    as sd_id128_get_machine_app_specific does) before it goes into object keys.
    """
    try:
        text = machine_id_path.read_text(encoding="ascii", errors="replace").strip().lower()
    except OSError:
        text = ""
    if len(text) >= 12 and re.fullmatch(r"[0-9a-f]+", text):
        from edge_actors.hashing import sha256_digest

        return sha256_digest(b"edge-actors:" + text.encode()).hex()[:12]
    return sanitize_device_id(socket.gethostname())


def default_run_dir() -> Path:
    """Return the default ``run_dir``: a place other users cannot have prepared.

    ``$XDG_RUNTIME_DIR/edge-actors`` when that variable is set (a per-user
    tmpfs, 0700, cleaned at logout); else ``/run/edge-actors`` when it is
    this user's already (systemd ``RuntimeDirectory=``) or ``/run`` is writable
    (root); else ``/tmp/edge-actors-<uid>``, where anyone could have created
    the directory first: the supervisor verifies its owner and mode whatever
    the choice (edge_actors.rundir), so a planted one is refused, not used.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "edge-actors"
    run = Path("/run/edge-actors")
    try:
        if run.stat().st_uid == os.geteuid():
            return run
    except OSError:
        if os.access("/run", os.W_OK):
            return run
    return Path(f"/tmp/edge-actors-{os.getuid()}")


def _cwd_var() -> Path:
    return Path.cwd() / "var"


# ---------------------------------------------------------------------------
# Field declaration helper


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


# ---------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True)
class FieldSpec:
    """One monitored model input or output: its name and kind (and categories)."""

    name: str
    kind: Literal["numeric", "categorical"] = "numeric"
    categories: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the field in the YAML mapping form."""
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        return out


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

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        """Inputs then outputs."""
        return self.inputs + self.outputs


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
    reference_data_path: Path | None = field(
        default=None,
        metadata=_meta(
            doc=(
                'Reference data: the seed\'s JSON (`{"feature": [values...]}`) or a `.npz` '
                "built by `edge-actors reference build`. Loaded and checked by "
                "`edge-actors check-config` and by the drift worker at start."
            ),
            conv=_nullable(_path()),
            type_="path",
        ),
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
    sqlite_path: Path = field(
        default_factory=lambda: _cwd_var() / "outbox.db",
        metadata=_meta(
            doc="The SQLite outbox file.",
            conv=_path(),
            type_="path",
            default_doc="{data_dir}/outbox.db",
        ),
    )
    max_sqlite_size_mb: float = _opt(
        100.0,
        doc="Disk budget of the outbox; past it the oldest, lowest-priority rows are dropped.",
        conv=_positive(),
        type_="number",
    )
    local_path: Path = field(
        default_factory=lambda: _cwd_var() / "sink",
        metadata=_meta(
            doc="Directory of the `local` sink.",
            conv=_path(),
            type_="path",
            default_doc="{data_dir}/sink",
        ),
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
    memory_limit_mb: float = _opt(
        80.0,
        doc="Unique memory (USS/PSS) budget in MB; over it the worker is restarted.",
        conv=_positive(),
        type_="number",
    )


_WORKER_DEFAULT_MB = {"sampler": 40.0, "drift": 80.0, "uploader": 80.0}


@dataclass(frozen=True)
class WorkersConfig:
    """The three worker processes."""

    sampler: WorkerConfig = field(
        default_factory=lambda: WorkerConfig(memory_limit_mb=40.0),
        metadata={"doc": "System-health sampler."},
    )
    drift: WorkerConfig = field(
        default_factory=lambda: WorkerConfig(memory_limit_mb=80.0),
        metadata={"doc": "Drift detector."},
    )
    uploader: WorkerConfig = field(
        default_factory=lambda: WorkerConfig(memory_limit_mb=80.0),
        metadata={"doc": "Outbox writer and uploader."},
    )

    def get(self, name: str) -> WorkerConfig:
        """Return the config of the worker called ``name``."""
        if name not in WORKER_NAMES:
            raise KeyError(name)
        result: WorkerConfig = getattr(self, name)
        return result


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
    run_dir: Path = field(
        default_factory=default_run_dir,
        metadata=_meta(
            doc="Directory of the control socket `{run_dir}/{instance}.sock` (at most 107 bytes).",
            conv=_path(),
            type_="path",
            default_doc=(
                "$XDG_RUNTIME_DIR/edge-actors, else /run/edge-actors if this user's or /run "
                "is writable, else /tmp/edge-actors-<uid>"
            ),
        ),
    )
    data_dir: Path = field(
        default_factory=_cwd_var,
        metadata=_meta(
            doc="Directory of durable data (outbox, local sink, calibration cache).",
            conv=_path(),
            type_="path",
            default_doc="<config file folder>/var (cwd/var without a file)",
        ),
    )
    model: ModelConfig = field(
        default_factory=ModelConfig, metadata={"doc": "The monitored model."}
    )
    system: SystemConfig = field(
        default_factory=SystemConfig, metadata={"doc": "System-health sampling."}
    )
    model_logging: ModelLoggingConfig = field(
        default_factory=ModelLoggingConfig, metadata={"doc": "Model logging."}
    )
    drift_detection: DriftConfig = field(
        default_factory=DriftConfig, metadata={"doc": "Drift detection."}
    )
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig, metadata={"doc": "Upload."})
    storage: StorageConfig = field(
        default_factory=StorageConfig, metadata={"doc": "Outbox and sink."}
    )
    workers: WorkersConfig = field(
        default_factory=WorkersConfig, metadata={"doc": "Worker processes."}
    )
    supervisor: SupervisorConfig = field(
        default_factory=SupervisorConfig, metadata={"doc": "Supervision."}
    )

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


# ---------------------------------------------------------------------------
# Parsing


class _Parser:
    """Collects every issue while converting a YAML mapping into dataclasses."""

    def __init__(self, base_dir: Path) -> None:
        self.ctx = _Ctx(base_dir=base_dir)
        self.issues: list[ConfigIssue] = []

    def issue(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(path, message))

    def unknown(self, path: str, key: object, allowed: list[str]) -> None:
        name = _key_text(key)
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        where = f"{path}.{name}" if path else name
        if close:
            self.issue(where, f"unknown key (did you mean '{close[0]}'?)")
        else:
            self.issue(where, f"unknown key (allowed: {', '.join(allowed)})")

    def mapping(self, value: object, path: str) -> Mapping[object, object] | None:
        """Return ``value`` as a mapping (``None`` for an empty section), or report it."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.issue(path, f"must be a mapping, got {_show(value)}")
            return None
        return value

    def section(self, cls: type[Any], value: object, path: str) -> tuple[dict[str, Any], set[str]]:
        """Convert the keys of one section; return given values and the keys that failed.

        Keys are handled in file order so that errors come out in the order the
        user reads them.
        """
        data = self.mapping(value, path)
        keys = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("key", True)}
        values: dict[str, Any] = {}
        failed: set[str] = set()
        if data is None:
            return values, set(keys)
        for key, raw in data.items():
            f = keys.get(key) if isinstance(key, str) else None
            if f is None:
                self.unknown(path, key, list(keys))
                continue
            assert isinstance(key, str)
            where = f"{path}.{key}" if path else key
            conv = f.metadata.get("conv")
            if conv is None:
                continue
            if raw is None and f.metadata.get("default_doc") is not None:
                continue  # null means "the computed default"
            try:
                values[key] = conv(raw, self.ctx)
            except _Invalid as exc:
                self.issue(where, str(exc))
                failed.add(key)
        return values, failed


def _field_spec(p: _Parser, raw: object, where: str) -> FieldSpec | None:
    allowed = ["name", "type", "categories"]
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        p.issue(
            where,
            f"must be a field name or a mapping with name, type, categories, got {_show(raw)}",
        )
        return None
    ok = True
    for key in raw:
        if key not in allowed:
            p.unknown(where, key, allowed)
            ok = False
    name = raw.get("name")
    if name is None:
        p.issue(f"{where}.name", "required")
        ok = False
    elif not isinstance(name, str) or not _FIELD_NAME_RE.fullmatch(name):
        p.issue(
            f"{where}.name",
            f"must be a letter or _ then up to 63 of A-Z a-z 0-9 _ . -, got {_show(name)}",
        )
        ok = False
    kind: object = raw.get("type", "numeric")
    if kind not in ("numeric", "categorical"):
        p.issue(f"{where}.type", f"must be one of numeric, categorical, got {_show(kind)}")
        return None
    cats_raw = raw.get("categories")
    categories: list[str] = []
    if kind == "numeric":
        if cats_raw is not None:
            p.issue(f"{where}.categories", "only allowed when type is categorical")
            ok = False
    elif not isinstance(cats_raw, list) or not cats_raw:
        p.issue(
            f"{where}.categories",
            "required when type is categorical (a non-empty list of strings), "
            f"got {_show(cats_raw)}",
        )
        ok = False
    else:
        for i, c in enumerate(cats_raw):
            if not isinstance(c, str):
                p.issue(f"{where}.categories[{i}]", f"must be a string, got {_show(c)}")
                ok = False
            elif c in categories:
                p.issue(f"{where}.categories[{i}]", f"duplicate category {_show(c)}")
                ok = False
            else:
                categories.append(c)
    if not ok:
        return None
    assert isinstance(name, str)
    return FieldSpec(name, "categorical" if kind == "categorical" else "numeric", tuple(categories))


def _parse_model(p: _Parser, raw: object) -> ModelConfig:
    values, _ = p.section(ModelConfig, _strip_keys(raw, ("inputs", "outputs")), "model")
    data = raw if isinstance(raw, Mapping) else {}
    lists: dict[str, tuple[FieldSpec, ...]] = {}
    seen: dict[str, str] = {}
    total = 0
    for which in ("inputs", "outputs"):
        items = data.get(which)
        specs: list[FieldSpec] = []
        if items is not None and not isinstance(items, list):
            p.issue(f"model.{which}", f"must be a list, got {_show(items)}")
            items = None
        for i, item in enumerate(items or []):
            where = f"model.{which}[{i}]"
            total += 1
            spec = _field_spec(p, item, where)
            if spec is None:
                continue
            if spec.name in seen:
                p.issue(
                    f"{where}.name", f"duplicate field name {spec.name!r} (also {seen[spec.name]})"
                )
                continue
            seen[spec.name] = where
            specs.append(spec)
        lists[which] = tuple(specs)
    if total > MAX_MODEL_FIELDS:
        p.issue("model", f"at most {MAX_MODEL_FIELDS} fields (inputs + outputs), got {total}")
    return ModelConfig(**values, inputs=lists["inputs"], outputs=lists["outputs"])


def _strip_keys(raw: object, keys: tuple[str, ...]) -> object:
    """Drop the keys handled by hand so the generic section parser skips them."""
    if isinstance(raw, Mapping):
        return {k: v for k, v in raw.items() if k not in keys}
    return raw


def _parse_drift(p: _Parser, raw: object) -> DriftConfig:
    values, failed = p.section(DriftConfig, raw, "drift_detection")
    given = set(raw) if isinstance(raw, Mapping) else set()
    # A seed config (a drift section without any of the new window keys) keeps the
    # seed's behaviour of testing the last check_frequency records. Without a drift
    # section the seed never ran drift detection (no reference), so new defaults apply.
    seed = isinstance(raw, Mapping) and not given & {"window_size", "long_window_size", "mode"}
    cfg = DriftConfig(**values)
    if seed:
        cfg = dataclasses.replace(cfg, window_size=max(10, cfg.check_frequency), seed_defaults=True)
    if cfg.long_window_size and cfg.long_window_size <= cfg.window_size:
        if "long_window_size" in values and not failed & {"window_size"}:
            p.issue(
                "drift_detection.long_window_size",
                f"must be 0 or > window_size ({cfg.window_size}), got {cfg.long_window_size}",
            )
        else:
            cfg = dataclasses.replace(cfg, long_window_size=0)
    if cfg.confirm_m > cfg.confirm_n and not failed & {"confirm_m", "confirm_n"}:
        p.issue(
            "drift_detection.confirm_m",
            f"must be <= confirm_n ({cfg.confirm_n}), got {cfg.confirm_m}",
        )
    return cfg


def _parse_telemetry(p: _Parser, raw: object) -> TelemetryConfig:
    values, failed = p.section(TelemetryConfig, raw, "telemetry")
    cfg = TelemetryConfig(**values)
    keys = {"retry_base_delay_seconds", "retry_max_delay_seconds"}
    if cfg.retry_max_delay_seconds < cfg.retry_base_delay_seconds and not failed & keys:
        p.issue(
            "telemetry.retry_max_delay_seconds",
            f"must be >= retry_base_delay_seconds ({_num(cfg.retry_base_delay_seconds)}), "
            f"got {_num(cfg.retry_max_delay_seconds)}",
        )
    return cfg


def _parse_storage(p: _Parser, raw: object, data_dir: Path) -> StorageConfig:
    first_issue = len(p.issues)
    values, failed = p.section(StorageConfig, raw, "storage")
    values.setdefault("sqlite_path", data_dir / "outbox.db")
    values.setdefault("local_path", data_dir / "sink")
    cfg = StorageConfig(**values)
    if cfg.type != "s3" and "type" not in failed:
        # The bucket is checked only when it is used, as the seed did: a seed config
        # keeping `bucket: ""` or a placeholder with `type: sqlite` loads.
        mine = p.issues[first_issue:]
        p.issues[first_issue:] = [i for i in mine if i.path != "storage.bucket"]
        bucket = raw.get("bucket") if isinstance(raw, Mapping) else None
        return dataclasses.replace(cfg, bucket=None if bucket is None else str(bucket))
    if cfg.type == "s3" and cfg.bucket is None and not failed & {"type", "bucket"}:
        p.issue("storage.bucket", "required when storage.type is 's3'")
    return cfg


def _parse_workers(p: _Parser, raw: object) -> WorkersConfig:
    data = p.mapping(raw, "workers")
    out: dict[str, WorkerConfig] = {}
    for key, value in (data or {}).items():
        if key not in WORKER_NAMES:
            p.unknown("workers", key, list(WORKER_NAMES))
            continue
        assert isinstance(key, str)
        values, _ = p.section(WorkerConfig, value, f"workers.{key}")
        values.setdefault("memory_limit_mb", _WORKER_DEFAULT_MB[key])
        out[key] = WorkerConfig(**values)
    return WorkersConfig(**out)


def _parse_supervisor(p: _Parser, raw: object) -> SupervisorConfig:
    values, failed = p.section(SupervisorConfig, raw, "supervisor")
    cfg = SupervisorConfig(**values)
    pairs = (
        ("restart_backoff_max_seconds", "restart_backoff_initial_seconds", False),
        ("heartbeat_timeout_seconds", "heartbeat_interval_seconds", True),
    )
    for big, small, strict in pairs:
        b, s = getattr(cfg, big), getattr(cfg, small)
        if (b <= s if strict else b < s) and not failed & {big, small}:
            p.issue(
                f"supervisor.{big}",
                f"must be {'>' if strict else '>='} {small} ({_num(s)}), got {_num(b)}",
            )
    return cfg


_SECTIONS = (
    "model",
    "system",
    "model_logging",
    "drift_detection",
    "telemetry",
    "storage",
    "workers",
    "supervisor",
)
_TOP_SCALARS = ("instance", "device_id", "run_dir", "data_dir")


def parse_config(data: object, base_dir: Path, source: str) -> Config:
    """Validate already-parsed YAML ``data`` (normally a mapping) and return the :class:`Config`.

    ``base_dir`` is the folder relative paths start from; ``source`` names the file
    in error messages. Raises :class:`ConfigError` listing every problem found.
    """
    p = _Parser(Path(os.path.abspath(base_dir)))
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        p.issue("", f"top level must be a mapping of sections, got {_show(data)}")
        raise ConfigError(source, p.issues)
    allowed = list(_TOP_SCALARS + _SECTIONS)
    for key in data:
        if key not in allowed:
            p.unknown("", key, allowed)
    top_raw = {k: v for k, v in data.items() if k in _TOP_SCALARS}
    top, failed = p.section(Config, top_raw, "")
    data_dir: Path = top.get("data_dir", p.ctx.base_dir / "var")
    top["data_dir"] = data_dir

    parsers: dict[str, Callable[[object], Any]] = {
        "model": lambda raw: _parse_model(p, raw),
        "system": lambda raw: SystemConfig(**p.section(SystemConfig, raw, "system")[0]),
        "model_logging": lambda raw: ModelLoggingConfig(
            **p.section(ModelLoggingConfig, raw, "model_logging")[0]
        ),
        "drift_detection": lambda raw: _parse_drift(p, raw),
        "telemetry": lambda raw: _parse_telemetry(p, raw),
        "storage": lambda raw: _parse_storage(p, raw, data_dir),
        "workers": lambda raw: _parse_workers(p, raw),
        "supervisor": lambda raw: _parse_supervisor(p, raw),
    }
    # Sections present in the file first, in file order, so errors read top to bottom.
    order = [k for k in data if k in parsers] + [k for k in _SECTIONS if k not in data]
    sections: dict[str, Any] = {name: parsers[name](data.get(name)) for name in order}

    cfg = Config(**top, **sections)
    if not failed & {"run_dir", "instance"}:
        size = len(os.fsencode(str(cfg.socket_path)))
        if size > MAX_SOCKET_PATH_BYTES:
            p.issue(
                "run_dir",
                f"control socket path '{cfg.socket_path}' is {size} bytes, more than the "
                f"{MAX_SOCKET_PATH_BYTES} a Unix socket allows; choose a shorter run_dir",
            )
    if p.issues:
        raise ConfigError(source, p.issues)
    return cfg


#: Largest config file read. A config is a few KB: this stops ``/dev/zero``-like input.
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of YAML mappings and lists (a valid config needs 5).
MAX_CONFIG_DEPTH = 32
#: Most characters of an integer in the file (Python refuses to parse 4,300 digits).
MAX_INT_CHARS = 32

_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _path_text(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out += part if part.startswith("[") or not out else f".{part}"
    return out


class _TooDeep(Exception):
    def __init__(self, path: str, mark: yaml.Mark) -> None:
        super().__init__(path)
        self.path = path
        self.mark = mark


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting, rejects duplicate keys and over-long integers.

    While composing it knows the key path of every node, so each of these
    problems (and a value the constructor cannot build) is reported with its
    key path and line, and all duplicate keys / long integers at once.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.key_path: list[str] = []
        self.node_paths: dict[int, str] = {}
        self.found: list[ConfigIssue] = []

    # The stubs type these hooks loosely (index is a node, an int or None).
    def compose_node(self, parent: Any, index: Any) -> Any:
        if parent is None:
            return super().compose_node(parent, index)
        if isinstance(index, int):
            part = f"[{index}]"
        elif isinstance(index, yaml.ScalarNode):
            part = _key_text(index.value)
        elif index is None:
            part = "(key)"  # a mapping key being composed
        else:
            part = "(complex key)"
        self.key_path.append(part)
        try:
            if len(self.key_path) > MAX_CONFIG_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _TooDeep(_path_text(self.key_path), event.start_mark)
            node = super().compose_node(parent, index)
            self.node_paths.setdefault(id(node), _path_text(self.key_path))
            return node
        finally:
            self.key_path.pop()

    def compose_scalar_node(self, anchor: Any) -> Any:
        node = super().compose_scalar_node(anchor)
        if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
            self.found.append(
                ConfigIssue(
                    _path_text(self.key_path),
                    f"integer of {len(node.value)} characters at line {node.start_mark.line + 1} "
                    f"is too long (at most {MAX_INT_CHARS})",
                )
            )
        return node

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, _value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            seen = first.setdefault((key.tag, key.value), key)
            if seen is not key:
                self.found.append(
                    ConfigIssue(
                        _path_text([*self.key_path, _key_text(key.value)]),
                        f"duplicate key at line {key.start_mark.line + 1} "
                        f"(first at line {seen.start_mark.line + 1})",
                    )
                )
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, OverflowError, TypeError) as exc:
            # e.g. a date 2024-13-45: PyYAML lets the bare ValueError out.
            raise _BadValue(self.node_paths.get(id(node), ""), node.start_mark, exc) from None


class _BadValue(Exception):
    def __init__(self, path: str, mark: yaml.Mark, exc: Exception) -> None:
        super().__init__(path)
        self.path = path
        self.mark = mark
        self.exc = exc


def _read_config(source: str) -> bytes:
    """The bytes of the config file: a regular file of at most :data:`MAX_CONFIG_BYTES`."""

    def fail(message: str) -> ConfigError:
        return ConfigError(source, [ConfigIssue("", message)])

    try:
        # O_NONBLOCK: opening a FIFO must not wait forever for a writer.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigFileNotFoundError(source) from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise fail("cannot read: Is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"not a regular file ({file_kind(st.st_mode)})")
        too_big = fail(
            f"larger than {MAX_CONFIG_BYTES // 1024} KiB ({st.st_size} bytes): not a config file"
        )
        if st.st_size > MAX_CONFIG_BYTES:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CONFIG_BYTES:  # it grew while being read
                raise too_big
        return b"".join(chunks)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _parse_yaml(text: str, source: str) -> object:
    """YAML ``text`` as Python data, or :class:`ConfigError` with key path and line."""

    def fail(path: str, message: str) -> ConfigError:
        return ConfigError(source, [ConfigIssue(path, message)])

    try:
        # The reader checks every character here already.
        loader = _ConfigLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise fail(
            "",
            f"invalid YAML at line {line}, column {column}: "
            f"control character U+{exc.character:04X} is not allowed",
        ) from None
    try:
        node = loader.get_single_node()
        if loader.found:
            raise ConfigError(source, loader.found)
        return None if node is None else loader.construct_document(node)
    except _TooDeep as exc:
        raise fail(
            exc.path,
            f"nested deeper than {MAX_CONFIG_DEPTH} levels "
            f"(line {exc.mark.line + 1}, column {exc.mark.column + 1})",
        ) from None
    except _BadValue as exc:
        raise fail(
            exc.path,
            f"invalid value at line {exc.mark.line + 1}, column {exc.mark.column + 1}: "
            f"{str(exc.exc)[:_SHOWN_CHARS]}",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(x for x in (exc.context, exc.problem) if x) or "syntax error"
        raise fail("", f"invalid YAML{where}: {what}") from None
    except yaml.YAMLError as exc:
        raise fail("", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate the YAML config at ``path``; ``None`` gives all defaults.

    Relative paths in the file resolve against the file's folder (the current
    directory when ``path`` is ``None``). An empty file gives all defaults.
    The file must be a regular file of at most :data:`MAX_CONFIG_BYTES`; nesting,
    duplicate keys and integer lengths are checked before any value is built.
    Raises :class:`ConfigError` listing every problem found.
    """
    if path is None:
        return parse_config({}, Path.cwd(), "<defaults>")
    source = os.fspath(path)
    file = Path(source)
    raw = _read_config(source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source, [ConfigIssue("", f"not valid UTF-8 (byte {exc.start})")]
        ) from None
    data = _parse_yaml(text, source)
    return parse_config(data, Path(os.path.abspath(file)).parent, source)


# ---------------------------------------------------------------------------
# Schema description (for docs/configuration.md)


def _default_text(f: dataclasses.Field[Any]) -> str:
    doc = f.metadata.get("default_doc")
    if doc:
        return str(doc)
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return json.dumps(value)
    return ""


def schema_rows() -> list[tuple[str, str, str, str]]:
    """Return ``(key path, type, default, description)`` for every config key.

    Defaults are shown as JSON literals (``"INFO"``, ``true``, ``null``) or, for a
    computed default, as a sentence saying how it is chosen.
    """
    rows: list[tuple[str, str, str, str]] = []

    def walk(cls: type[Any], prefix: str) -> None:
        for f in dataclasses.fields(cls):
            if not f.metadata.get("key", True):
                continue
            path = f"{prefix}{f.name}"
            if cls is Config and f.name in _SECTIONS:
                section_cls = _SECTION_CLASSES[f.name]
                if section_cls is WorkersConfig:
                    for w in WORKER_NAMES:
                        for wf in dataclasses.fields(WorkerConfig):
                            default = (
                                json.dumps(int(_WORKER_DEFAULT_MB[w]))
                                if wf.name == "memory_limit_mb"
                                else _default_text(wf)
                            )
                            rows.append(
                                (
                                    f"workers.{w}.{wf.name}",
                                    wf.metadata["type"],
                                    default,
                                    wf.metadata["doc"],
                                )
                            )
                else:
                    walk(section_cls, f"{path}.")
                continue
            rows.append((path, f.metadata["type"], _default_text(f), f.metadata["doc"]))
            if cls is ModelConfig and f.name in ("inputs", "outputs"):
                rows.extend(
                    [
                        (f"{path}[].name", "string", "", "Field name."),
                        (
                            f"{path}[].type",
                            "string",
                            '"numeric"',
                            "`numeric` or `categorical`.",
                        ),
                        (
                            f"{path}[].categories",
                            "list",
                            "",
                            "Categories of a categorical field (required for it).",
                        ),
                    ]
                )

    walk(Config, "")
    return rows


_SECTION_CLASSES: dict[str, type[Any]] = {
    "model": ModelConfig,
    "system": SystemConfig,
    "model_logging": ModelLoggingConfig,
    "drift_detection": DriftConfig,
    "telemetry": TelemetryConfig,
    "storage": StorageConfig,
    "workers": WorkersConfig,
    "supervisor": SupervisorConfig,
}

#: Section name -> one-line description, in file order (for docs generation).
SCHEMA: dict[str, str] = {
    "model": "The monitored model's name and declared inputs/outputs.",
    "system": "System-health sampling (seed section).",
    "model_logging": "Producer lanes and payload ring (seed section).",
    "drift_detection": "Drift detection (seed section, extended).",
    "telemetry": "Upload schedule and retries (seed section).",
    "storage": "SQLite outbox and sink (seed section).",
    "workers": "Worker processes: enabled and memory budget.",
    "supervisor": "Restart policy, heartbeats, memory checks, shutdown.",
}
