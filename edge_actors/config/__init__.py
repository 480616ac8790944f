"""Configuration: one YAML file loaded into typed, frozen dataclasses.

The seed project's sections (``system``, ``model_logging``, ``drift_detection``,
``telemetry``, ``storage``) keep their keys and meanings, so a seed config loads
unchanged. New sections (``model``, ``workers``, ``supervisor``) and new keys all
have defaults.

Loading validates types and ranges only (it never checks that a referenced file
exists: that is the job of the process that opens it) and reports *every* error
in the file at once, each with its key path, the bad value and what is allowed::

    configs/x.yaml: workers.drift.memory_limit_mb: must be > 0, got -5

Where things are (import them from here; the modules are the package's own):

- :mod:`~edge_actors.config.settings`: every key with its default, converter and
  help; the section classes and :class:`Config`; :data:`SECTIONS`.
- :mod:`~edge_actors.config.converters`: checking one value.
- :mod:`~edge_actors.config.computed`: defaults computed at load time.
- :mod:`~edge_actors.config.validate`: rules across keys.
- :mod:`~edge_actors.config.parser`: :func:`parse_config` (data to ``Config``).
- :mod:`~edge_actors.config.loader`: :func:`load_config` (file to data, limits).
- :mod:`~edge_actors.config.docs`: :func:`schema_rows` for docs/configuration.md.
- :mod:`~edge_actors.config.errors`: :class:`ConfigError` and its issues.
"""

from __future__ import annotations

from edge_actors.config.computed import default_device_id, default_run_dir, sanitize_device_id
from edge_actors.config.docs import SCHEMA, schema_rows
from edge_actors.config.errors import ConfigError, ConfigFileNotFoundError, ConfigIssue
from edge_actors.config.loader import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_INT_CHARS,
    load_config,
)
from edge_actors.config.parser import parse_config
from edge_actors.config.settings import (
    SECTIONS,
    Config,
    DriftConfig,
    ModelConfig,
    ModelLoggingConfig,
    StorageConfig,
    SupervisorConfig,
    SystemConfig,
    TelemetryConfig,
    WorkerConfig,
    WorkersConfig,
)
from edge_actors.config.validate import MAX_SOCKET_PATH_BYTES
from edge_actors.roster import WORKER_NAMES
from edge_actors.schema import MAX_MODEL_FIELDS, FieldSpec

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_INT_CHARS",
    "MAX_MODEL_FIELDS",
    "MAX_SOCKET_PATH_BYTES",
    "SCHEMA",
    "SECTIONS",
    "WORKER_NAMES",
    "Config",
    "ConfigError",
    "ConfigFileNotFoundError",
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
