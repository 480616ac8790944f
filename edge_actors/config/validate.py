"""Cross-field rules: what no single key's converter can check.

Each section rule gets the section's converted values (and the keys that
failed, so a bad key is not reported twice), builds the section and reports
what is wrong across keys with the path of the key to change. A rule never
reports a relation involving a key that already failed its own check.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from edge_actors.config.converters import _Ctx, _num
from edge_actors.config.errors import Issues
from edge_actors.config.settings import (
    Config,
    DriftConfig,
    StorageConfig,
    SupervisorConfig,
    TelemetryConfig,
)

__all__ = ["MAX_SOCKET_PATH_BYTES", "SECTION_RULES", "check_socket_path"]

#: Longest Unix socket path: ``sun_path`` is 108 bytes on Linux, one of them the NUL.
MAX_SOCKET_PATH_BYTES = 107

#: A section rule: ``(issues, raw section, converted values, failed keys, ctx)`` -> section.
SectionRule = Callable[[Issues, object, dict[str, Any], set[str], _Ctx], Any]


def _drift(
    p: Issues, raw: object, values: dict[str, Any], failed: set[str], ctx: _Ctx
) -> DriftConfig:
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


def _telemetry(
    p: Issues, raw: object, values: dict[str, Any], failed: set[str], ctx: _Ctx
) -> TelemetryConfig:
    cfg = TelemetryConfig(**values)
    keys = {"retry_base_delay_seconds", "retry_max_delay_seconds"}
    if cfg.retry_max_delay_seconds < cfg.retry_base_delay_seconds and not failed & keys:
        p.issue(
            "telemetry.retry_max_delay_seconds",
            f"must be >= retry_base_delay_seconds ({_num(cfg.retry_base_delay_seconds)}), "
            f"got {_num(cfg.retry_max_delay_seconds)}",
        )
    return cfg


def _storage(
    p: Issues, raw: object, values: dict[str, Any], failed: set[str], ctx: _Ctx
) -> StorageConfig:
    assert ctx.data_dir is not None  # the top-level keys are read first
    values.setdefault("sqlite_path", ctx.data_dir / "outbox.db")
    values.setdefault("local_path", ctx.data_dir / "sink")
    cfg = StorageConfig(**values)
    if cfg.type != "s3" and "type" not in failed:
        # The bucket is checked only when it is used, as the seed did: a seed config
        # keeping `bucket: ""` or a placeholder with `type: sqlite` loads.
        p.issues[:] = [i for i in p.issues if i.path != "storage.bucket"]
        bucket = raw.get("bucket") if isinstance(raw, Mapping) else None
        return dataclasses.replace(cfg, bucket=None if bucket is None else str(bucket))
    if cfg.type == "s3" and cfg.bucket is None and not failed & {"type", "bucket"}:
        p.issue("storage.bucket", "required when storage.type is 's3'")
    return cfg


def _supervisor(
    p: Issues, raw: object, values: dict[str, Any], failed: set[str], ctx: _Ctx
) -> SupervisorConfig:
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


#: The sections with cross-field rules; any other section is built from its values as is.
SECTION_RULES: Mapping[type[Any], SectionRule] = {
    DriftConfig: _drift,
    TelemetryConfig: _telemetry,
    StorageConfig: _storage,
    SupervisorConfig: _supervisor,
}


def check_socket_path(p: Issues, cfg: Config) -> None:
    """Report a control socket path longer than a Unix socket allows (under ``run_dir``)."""
    size = len(os.fsencode(str(cfg.socket_path)))
    if size > MAX_SOCKET_PATH_BYTES:
        p.issue(
            "run_dir",
            f"control socket path '{cfg.socket_path}' is {size} bytes, more than the "
            f"{MAX_SOCKET_PATH_BYTES} a Unix socket allows; choose a shorter run_dir",
        )
