"""Tests for edge_actors.config: loading, defaults, seed compatibility and every error kind."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from edge_actors import config as cfgmod
from edge_actors.config import (
    Config,
    ConfigError,
    ConfigIssue,
    DriftConfig,
    FieldSpec,
    load_config,
    parse_config,
    sanitize_device_id,
    schema_rows,
)
from edge_actors.config.converters import _DEVICE_RE

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def errors_of(tmp_path: Path, text: str) -> list[str]:
    """Load ``text`` expecting failure; return the rendered lines without the file prefix."""
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    prefix = f"{p}: "
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.errors)
    assert all(line.startswith(prefix) for line in lines)
    return [line[len(prefix) :] for line in lines]


def one_error(tmp_path: Path, text: str) -> str:
    errs = errors_of(tmp_path, text)
    assert len(errs) == 1, errs
    return errs[0]


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", ["default.yaml", "s3.yaml", "tiny-device.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "configs" / name)
    assert isinstance(cfg, Config)
    assert cfg.drift_detection.seed_defaults is False


def test_default_config_values() -> None:
    cfg = load_config(REPO / "configs" / "default.yaml")
    assert cfg.data_dir == REPO / "var"
    assert cfg.storage.type == "local"
    assert cfg.storage.sqlite_path == REPO / "var" / "outbox.db"
    assert cfg.storage.local_path == REPO / "var" / "sink"
    assert cfg.drift_detection.reference_data_path == REPO / "examples" / "house_reference.json"
    assert [f.name for f in cfg.model.inputs] == ["bedrooms", "bathrooms", "sqft", "age"]
    assert [f.name for f in cfg.model.outputs] == ["price", "confidence"]
    assert all(f.kind == "numeric" for f in cfg.model.fields)
    assert cfg.system.sampling_interval_seconds == 2
    assert cfg.telemetry.upload_interval_seconds == 10
    assert cfg.telemetry.max_batch_size == 5000
    assert cfg.model_logging.buffer_size == 65536
    assert cfg.instance == "default"


def test_s3_config_values() -> None:
    cfg = load_config(REPO / "configs" / "s3.yaml")
    assert cfg.storage.type == "s3"
    assert cfg.storage.bucket == "my-telemetry-bucket"
    assert cfg.storage.prefix == "edge-fleet/"
    assert cfg.storage.region == "eu-west-1"


def test_seed_readme_example_keeps_meaning() -> None:
    cfg = load_config(DATA / "seed_readme.yaml")
    d = cfg.drift_detection
    assert d.check_frequency == 100
    assert d.window_size == 100
    assert d.seed_defaults is True
    assert d.algorithm == "ks_test"
    assert d.threshold == 0.05
    assert d.reference_data_path == Path("/path/to/reference_data.json")  # not checked
    assert cfg.system.sampling_interval_seconds == 10
    assert cfg.system.max_memory_buffer_mb == 50
    assert cfg.model_logging.buffer_size == 1000
    assert cfg.model_logging.log_level == "INFO"
    assert cfg.telemetry == cfgmod.TelemetryConfig(300, 100, 1, 60, 5, 1.0)
    s = cfg.storage
    assert (s.type, s.bucket, s.prefix) == ("s3", "your-telemetry-bucket", "edge-device-1/")
    assert s.sqlite_path == Path("/path/to/local/buffer.db")
    assert s.max_sqlite_size_mb == 100


def test_seed_sqlite_example_loads() -> None:
    cfg = load_config(DATA / "seed_sqlite.yaml")
    assert cfg.storage.type == "sqlite"
    assert cfg.storage.bucket is None
    assert cfg.drift_detection.window_size == 500
    assert cfg.drift_detection.seed_defaults


def test_none_and_empty_file_give_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a = load_config(None)
    b = load_config(write(tmp_path, ""))
    c = load_config(write(tmp_path, "# only a comment\n", "d.yaml"))
    assert a == b == c
    assert a.data_dir == tmp_path / "var"
    assert a.storage.sqlite_path == tmp_path / "var" / "outbox.db"
    assert a.drift_detection == DriftConfig()
    assert a.drift_detection.window_size == 1000
    assert a.workers.sampler.memory_limit_mb == 40
    assert a.workers.drift.memory_limit_mb == 80
    assert a.workers.uploader.memory_limit_mb == 80


def test_empty_section_means_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "system:\nsupervisor:\n"))
    assert cfg.system == cfgmod.SystemConfig()


# --------------------------------------------------------------------------- drift window rules


@pytest.mark.parametrize(
    ("text", "window", "long", "seed"),
    [
        ("drift_detection: {check_frequency: 250}", 250, 10000, True),
        ("drift_detection: {check_frequency: 5}", 10, 10000, True),
        ("drift_detection: {check_frequency: 50000}", 50000, 0, True),
        ("drift_detection: {check_frequency: 250, mode: per_check}", 1000, 10000, False),
        ("drift_detection: {window_size: 20000}", 20000, 0, False),
        ("drift_detection: {long_window_size: 0}", 1000, 0, False),
        ("system: {}", 1000, 10000, False),
    ],
)
def test_window_defaults(tmp_path: Path, text: str, window: int, long: int, seed: bool) -> None:
    d = load_config(write(tmp_path, text)).drift_detection
    assert (d.window_size, d.long_window_size, d.seed_defaults) == (window, long, seed)


# --------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    sub = tmp_path / "etc" / "agent"
    sub.mkdir(parents=True)
    p = write(
        sub,
        "data_dir: ../data\n"
        "drift_detection: {reference_data_path: ref.npz}\n"
        "storage: {local_path: sink2}\n",
    )
    cfg = load_config(p)
    assert cfg.data_dir == tmp_path / "etc" / "data"
    assert cfg.storage.sqlite_path == tmp_path / "etc" / "data" / "outbox.db"
    assert cfg.storage.local_path == sub / "sink2"
    assert cfg.drift_detection.reference_data_path == sub / "ref.npz"


def test_tilde_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(write(tmp_path, "data_dir: ~/edge\n"))
    assert cfg.data_dir == tmp_path / "home" / "edge"


def test_relative_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cfg").mkdir()
    write(tmp_path / "cfg", "data_dir: d\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("cfg/c.yaml").data_dir == tmp_path / "cfg" / "d"


def test_run_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert parse_config({}, tmp_path, "x").run_dir == Path("/run/user/1000/edge-actors")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    import os

    # /run when this user may create there (root), else /tmp (verified at start: rundir.py).
    expected = (
        "/run/edge-actors" if os.access("/run", os.W_OK) else f"/tmp/edge-actors-{os.getuid()}"
    )
    assert parse_config({}, tmp_path, "x").run_dir == Path(expected)


def test_socket_path_too_long(tmp_path: Path) -> None:
    long_dir = "/tmp/" + "d" * 100
    err = one_error(tmp_path, f"run_dir: {long_dir}\ninstance: abc\n")
    assert err == (
        f"run_dir: control socket path '{long_dir}/abc.sock' is 114 bytes, more than the "
        "107 a Unix socket allows; choose a shorter run_dir"
    )
    ok = "/tmp/" + "d" * 93  # 5 + 93 + len("/abc.sock") = 107
    assert load_config(write(tmp_path, f"run_dir: {ok}\ninstance: abc\n")).socket_path == Path(
        f"{ok}/abc.sock"
    )


# --------------------------------------------------------------------------- device id


def test_device_id_default_from_machine_id(tmp_path: Path) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    dev = cfgmod.default_device_id(mid)
    # Stable, 12 hex chars, and not the raw machine id (machine-id(5): keep it private).
    assert dev == cfgmod.default_device_id(mid)
    assert len(dev) == 12 and int(dev, 16) >= 0
    assert dev != "0123456789ab"


def test_device_id_falls_back_to_hostname(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "my host/../x")
    mid = tmp_path / "machine-id"
    mid.write_text("")  # containers often have an empty one
    assert cfgmod.default_device_id(mid) == "my-host-.-x"
    assert cfgmod.default_device_id(tmp_path / "missing") == "my-host-.-x"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("pi-kitchen.local", "pi-kitchen.local"),
        ("..evil/../../etc", "evil-.-.-etc"),
        ("héllo wörld", "h-llo-w-rld"),
        ("", "device"),
        ("///", "device"),
        ("a\0b", "a-b"),
        ("x" * 100, "x" * 64),
    ],
)
def test_sanitize_device_id(raw: str, clean: str) -> None:
    out = sanitize_device_id(raw)
    assert out == clean
    assert _DEVICE_RE.fullmatch(out) and ".." not in out


@pytest.mark.parametrize("good", ["a", "Pi-4.kitchen_1", "0" * 64])
def test_device_id_accepted(tmp_path: Path, good: str) -> None:
    assert load_config(write(tmp_path, f"device_id: '{good}'\n")).device_id == good


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "a/b",
            "must be 1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a letter or "
            "digit, got 'a/b'",
        ),
        (
            ".hidden",
            "must be 1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a letter or "
            "digit, got '.hidden'",
        ),
        ("a..b", "must not contain '..', got 'a..b'"),
    ],
)
def test_device_id_rejected(tmp_path: Path, bad: str, message: str) -> None:
    assert one_error(tmp_path, f"device_id: '{bad}'\n") == f"device_id: {message}"


def test_device_id_not_a_string(tmp_path: Path) -> None:
    assert one_error(tmp_path, "device_id: 42\n") == "device_id: must be a string, got 42"


def test_instance_rules(tmp_path: Path) -> None:
    assert one_error(tmp_path, "instance: my-agent\n") == (
        "instance: must be 1 to 16 characters from A-Z a-z 0-9 _, got 'my-agent'"
    )
    assert load_config(write(tmp_path, "instance: agent_2\n")).instance == "agent_2"


# --------------------------------------------------------------------------- error kinds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "workers: {drift: {memory_limit_mb: -5}}",
            "workers.drift.memory_limit_mb: must be > 0, got -5",
        ),
        (
            "system: {sampling_interval_seconds: fast}",
            "system.sampling_interval_seconds: must be a number, got 'fast'",
        ),
        (
            "system: {sampling_interval_seconds: true}",
            "system.sampling_interval_seconds: must be a number, got true",
        ),
        (
            "system: {sampling_interval_seconds: 0.01}",
            "system.sampling_interval_seconds: must be >= 0.05, got 0.01",
        ),
        (
            "system: {sampling_interval_seconds: .nan}",
            "system.sampling_interval_seconds: must be a finite number, got nan",
        ),
        (
            "system: {max_memory_buffer_mb: [1]}",
            "system.max_memory_buffer_mb: must be a number, got a list",
        ),
        (
            "model_logging: {buffer_size: 2.5}",
            "model_logging.buffer_size: must be an integer, got 2.5",
        ),
        ("model_logging: {buffer_size: 0}", "model_logging.buffer_size: must be >= 1, got 0"),
        (
            "model_logging: {log_level: LOUD}",
            "model_logging.log_level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
            "got 'LOUD'",
        ),
        (
            "model_logging: {payload_slot_bytes: 100}",
            "model_logging.payload_slot_bytes: must be between 256 and 65536, got 100",
        ),
        (
            "drift_detection: {threshold: 1}",
            "drift_detection.threshold: must be > 0 and < 1, got 1",
        ),
        (
            "drift_detection: {algorithm: psi}",
            "drift_detection.algorithm: must be one of ks_test, got 'psi'",
        ),
        (
            "drift_detection: {enabled: 'yes please'}",
            "drift_detection.enabled: must be true or false, got 'yes please'",
        ),
        (
            "drift_detection: {window_size: 5}",
            "drift_detection.window_size: must be >= 10, got 5",
        ),
        (
            "drift_detection: {window_size: 500, long_window_size: 400}",
            "drift_detection.long_window_size: must be 0 or > window_size (500), got 400",
        ),
        (
            "drift_detection: {confirm_m: 4, confirm_n: 3}",
            "drift_detection.confirm_m: must be <= confirm_n (3), got 4",
        ),
        (
            "drift_detection: {confirm_n: 21}",
            "drift_detection.confirm_n: must be between 1 and 20, got 21",
        ),
        (
            "drift_detection: {expected_records_to_false_alarm: 999}",
            "drift_detection.expected_records_to_false_alarm: must be >= 1000, got 999",
        ),
        (
            "drift_detection: {min_statistic: 1.5}",
            "drift_detection.min_statistic: must be between 0 and 1, got 1.5",
        ),
        (
            "drift_detection: {correction: holm}",
            "drift_detection.correction: must be one of bonferroni, bh, none, got 'holm'",
        ),
        (
            "drift_detection: {reference_data_path: 3}",
            "drift_detection.reference_data_path: must be a path string, got 3",
        ),
        (
            "telemetry: {model_sample_rate: 0}",
            "telemetry.model_sample_rate: must be > 0 and <= 1, got 0",
        ),
        (
            "telemetry: {max_batch_size: 100001}",
            "telemetry.max_batch_size: must be between 1 and 100000, got 100001",
        ),
        (
            "telemetry: {retry_base_delay_seconds: 10, retry_max_delay_seconds: 5}",
            "telemetry.retry_max_delay_seconds: must be >= retry_base_delay_seconds (10), got 5",
        ),
        (
            "storage: {type: ftp}",
            "storage.type: must be one of local, s3, sqlite, got 'ftp'",
        ),
        ("storage: {type: s3}", "storage.bucket: required when storage.type is 's3'"),
        (
            "storage: {endpoint_url: 'minio:9000'}",
            "storage.endpoint_url: must start with http:// or https://, got 'minio:9000'",
        ),
        (
            "storage: {synchronous: OFF_ISH}",
            "storage.synchronous: must be one of FULL, NORMAL, EXTRA, got 'OFF_ISH'",
        ),
        (
            "storage: {sqlite_path: ''}",
            "storage.sqlite_path: must be a non-empty path, got ''",
        ),
        (
            "supervisor: {memory_metric: vms}",
            "supervisor.memory_metric: must be one of uss, pss, rss, got 'vms'",
        ),
        (
            "supervisor: {heartbeat_interval_seconds: 2, heartbeat_timeout_seconds: 2}",
            "supervisor.heartbeat_timeout_seconds: must be > heartbeat_interval_seconds (2), got 2",
        ),
        (
            "supervisor: {restart_backoff_initial_seconds: 5, restart_backoff_max_seconds: 1}",
            "supervisor.restart_backoff_max_seconds: must be >= "
            "restart_backoff_initial_seconds (5), got 1",
        ),
        ("supervisor: {max_restarts: 0}", "supervisor.max_restarts: must be >= 1, got 0"),
        (
            "supervisor: {hard_memory_limit: 1}",
            "supervisor.hard_memory_limit: must be true or false, got 1",
        ),
        ("system: 5", "system: must be a mapping, got 5"),
        ("workers: {drift: []}", "workers.drift: must be a mapping, got a list"),
        (
            "drift_detection: {treshold: 0.1}",
            "drift_detection.treshold: unknown key (did you mean 'threshold'?)",
        ),
        ("workers: {drfit: {}}", "workers.drfit: unknown key (did you mean 'drift'?)"),
        (
            "model: {zzz: 1}",
            "model.zzz: unknown key (allowed: name, inputs, outputs, version, task, target, "
            "reference_performance, reference_data_path, drift_detection)",
        ),
        ("modles: []", "modles: unknown key (did you mean 'models'?)"),
        ("sytem: {}", "sytem: unknown key (did you mean 'system'?)"),
        (
            "supervisor: {zzz: 1}",
            "supervisor.zzz: unknown key (allowed: restart_backoff_initial_seconds, "
            "restart_backoff_max_seconds, restart_stable_seconds, max_restarts, "
            "restart_period_seconds, heartbeat_interval_seconds, heartbeat_timeout_seconds, "
            "stats_interval_seconds, memory_check_interval_seconds, memory_metric, "
            "stop_grace_seconds, shutdown_timeout_seconds, hard_memory_limit, max_clients, "
            "client_idle_timeout_seconds, shm_budget_mb)",
        ),
        (
            "performance: {zzz: 1}",
            "performance.zzz: unknown key (allowed: window_size, check_every, min_labels, "
            "expected_labels_to_false_alarm, tolerance, confirm_m, confirm_n, recover_p, "
            "prediction_index_size, truth_wait_seconds)",
        ),
        (
            "model: {outputs: [y], task: classification, reference_performance: 0.9}",
            "model.task: classification scores a categorical output; 'y' is numeric",
        ),
        (
            "model: {outputs: [y], task: regression, target: z, reference_performance: 1}",
            "model.target: must name an output (declared: y), got 'z'",
        ),
        (
            "model: {outputs: [{name: c, type: categorical, categories: [a, b]}], "
            "task: classification, reference_performance: 1.5}",
            "model.reference_performance: an accuracy must be in (0, 1], got 1.5",
        ),
        (
            "drift_detection: {seed_defaults: true}",
            "drift_detection.seed_defaults: unknown key (allowed: enabled, algorithm, "
            "threshold, reference_data_path, max_reference_mb, check_frequency, mode, window_size, "
            "long_window_size, expected_records_to_false_alarm, min_statistic, confirm_m, "
            "confirm_n, correction, nan_rate_threshold, out_of_range_threshold, "
            "min_expected_count, summary_interval_seconds, unknown_category_threshold, "
            "quality_hysteresis, worsened_factor, autocorrelation, discrete_max_values, "
            "atom_min_share, checkpoint_interval_seconds)",
        ),
    ],
)
def test_error_messages(tmp_path: Path, text: str, expected: str) -> None:
    assert one_error(tmp_path, text + "\n") == expected


def test_numbers_accept_yaml12_spellings(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "drift_detection: {expected_records_to_false_alarm: 1e6, check_frequency: 200.0}\n"
            "model_logging: {buffer_size: 1_024}\n"
            "system: {sampling_interval_seconds: 2}\n",
        )
    )
    assert cfg.drift_detection.expected_records_to_false_alarm == 1_000_000
    assert cfg.drift_detection.check_frequency == 200
    assert cfg.model_logging.buffer_size == 1024
    assert isinstance(cfg.system.sampling_interval_seconds, float)


def test_case_insensitive_words(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "model_logging: {log_level: debug}\nstorage: {type: LOCAL}\n")
    )
    assert cfg.model_logging.log_level == "DEBUG"
    assert cfg.storage.type == "local"


def test_many_errors_reported_together(tmp_path: Path) -> None:
    text = (
        "sytem: {}\n"
        "system:\n"
        "  sampling_interval_seconds: fast\n"
        "drift_detection:\n"
        "  treshold: 0.1\n"
        "  window_size: 3\n"
        "workers:\n"
        "  drift:\n"
        "    memory_limit_mb: -5\n"
        "storage:\n"
        "  type: s3\n"
        "  prefix: /abs\n"
    )
    assert errors_of(tmp_path, text) == [
        "sytem: unknown key (did you mean 'system'?)",
        "system.sampling_interval_seconds: must be a number, got 'fast'",
        "drift_detection.treshold: unknown key (did you mean 'threshold'?)",
        "drift_detection.window_size: must be >= 10, got 3",
        "workers.drift.memory_limit_mb: must be > 0, got -5",
        "storage.prefix: must not start with '/', got '/abs'",
        "storage.bucket: required when storage.type is 's3'",
    ]


def test_config_error_structure(tmp_path: Path) -> None:
    p = write(tmp_path, "workers: {drift: {memory_limit_mb: -5}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert isinstance(info.value, ValueError)
    assert info.value.errors == [
        ConfigIssue("workers.drift.memory_limit_mb", "must be > 0, got -5")
    ]
    assert str(info.value) == f"{p}: workers.drift.memory_limit_mb: must be > 0, got -5"


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == f"{p}: config file not found"


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    p = write(tmp_path, "system:\n  sampling_interval_seconds: 10\n  bad: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == (
        f"{p}: invalid YAML at line 4, column 1: while parsing a flow sequence; "
        "expected ',' or ']', but got '<stream end>'"
    )


def test_yaml_python_tag_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, "system: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 1, column 9"):
        load_config(p)


@pytest.mark.parametrize(
    ("text", "got"), [("- a\n- b\n", "a list"), ("just text\n", "'just text'")]
)
def test_top_level_not_mapping(tmp_path: Path, text: str, got: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == f"{p}: top level must be a mapping of sections, got {got}"


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(b"system: {}\n\xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == f"{p}: not valid UTF-8 (byte 11)"


# --------------------------------------------------------------------------- bucket and prefix


@pytest.mark.parametrize("good", ["abc", "my-bucket.logs", "1bucket", "a" * 63])
def test_bucket_accepted(tmp_path: Path, good: str) -> None:
    cfg = load_config(write(tmp_path, f"storage: {{type: s3, bucket: '{good}'}}\n"))
    assert cfg.storage.bucket == good


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("ab", "must be 3 to 63 characters long, got 'ab' (2)"),
        ("a" * 64, f"must be 3 to 63 characters long, got '{'a' * 64}' (64)"),
        (
            "My_Bucket",
            "may contain only lowercase letters, digits, dots and hyphens, got 'My_Bucket'",
        ),
        ("-bucket", "must start and end with a lowercase letter or digit, got '-bucket'"),
        ("bucket.", "must start and end with a lowercase letter or digit, got 'bucket.'"),
        ("my..bucket", "must not contain two adjacent dots, got 'my..bucket'"),
        ("192.168.1.10", "must not be formatted as an IP address, got '192.168.1.10'"),
        ("xn--bucket", "must not start with 'xn--' or 'sthree-', got 'xn--bucket'"),
        ("logs-s3alias", "must not end with '-s3alias' or '--ol-s3', got 'logs-s3alias'"),
    ],
)
def test_bucket_rules(tmp_path: Path, bad: str, message: str) -> None:
    err = one_error(tmp_path, f"storage: {{type: s3, bucket: '{bad}'}}\n")
    assert err == f"storage.bucket: {message}"


@pytest.mark.parametrize(
    ("prefix", "stored"),
    [("", ""), ("fleet", "fleet/"), ("a/b/", "a/b/"), ("edge-device-1/", "edge-device-1/")],
)
def test_prefix_accepted(tmp_path: Path, prefix: str, stored: str) -> None:
    cfg = load_config(write(tmp_path, f"storage: {{prefix: '{prefix}'}}\n"))
    assert cfg.storage.prefix == stored


@pytest.mark.parametrize(
    ("yaml_value", "message"),
    [
        ("'../x'", "must not contain a '..' segment, got '../x'"),
        ("'a/../../b'", "must not contain a '..' segment, got 'a/../../b'"),
        ("'a/..'", "must not contain a '..' segment, got 'a/..'"),
        ("'/abs/'", "must not start with '/', got '/abs/'"),
        ('"a\\0b"', "must not contain NUL or control characters, got 'a\\x00b'"),
        ('"a\\nb"', "must not contain NUL or control characters, got 'a\\nb'"),
        ("'" + "p" * 257 + "'", "must be at most 256 characters, got 257"),
        ("5", "must be a string, got 5"),
    ],
)
def test_prefix_rejected(tmp_path: Path, yaml_value: str, message: str) -> None:
    assert one_error(tmp_path, f"storage: {{prefix: {yaml_value}}}\n") == (
        f"storage.prefix: {message}"
    )


def test_path_with_nul_rejected(tmp_path: Path) -> None:
    assert one_error(tmp_path, 'data_dir: "a\\0b"\n') == (
        "data_dir: must not contain a NUL character, got 'a\\x00b'"
    )


# --------------------------------------------------------------------------- model schema


def test_model_fields(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "model:\n"
            "  name: house\n"
            "  inputs:\n"
            "    - sqft\n"
            "    - {name: city, type: categorical, categories: [paris, lyon]}\n"
            "  outputs: [price]\n",
        )
    )
    assert cfg.model.name == "house"
    assert cfg.model.inputs == (
        FieldSpec("sqft", "numeric", ()),
        FieldSpec("city", "categorical", ("paris", "lyon")),
    )
    assert cfg.model.outputs == (FieldSpec("price"),)
    assert cfg.to_dict()["model"]["inputs"][1] == {
        "name": "city",
        "type": "categorical",
        "categories": ["paris", "lyon"],
    }


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            "{inputs: [a, a]}",
            ["model.inputs[1].name: duplicate field name 'a' (also model.inputs[0])"],
        ),
        (
            "{inputs: [a], outputs: [a]}",
            ["model.outputs[0].name: duplicate field name 'a' (also model.inputs[0])"],
        ),
        (
            "{inputs: [1x]}",
            [
                "model.inputs[0].name: must be a letter or _ then up to 63 of "
                "A-Z a-z 0-9 _ . -, got '1x'"
            ],
        ),
        (
            "{inputs: [{name: c, type: categorical}]}",
            [
                "model.inputs[0].categories: required when type is categorical "
                "(a non-empty list of strings), got null"
            ],
        ),
        (
            "{inputs: [{name: c, type: categorical, categories: [a, 2, a]}]}",
            [
                "model.inputs[0].categories[1]: must be a string, got 2",
                "model.inputs[0].categories[2]: duplicate category 'a'",
            ],
        ),
        (
            "{inputs: [{name: c, categories: [a]}]}",
            ["model.inputs[0].categories: only allowed when type is categorical"],
        ),
        (
            "{inputs: [{name: c, type: text}]}",
            ["model.inputs[0].type: must be one of numeric, categorical, got 'text'"],
        ),
        (
            "{inputs: [{nmae: c}]}",
            [
                "model.inputs[0].nmae: unknown key (did you mean 'name'?)",
                "model.inputs[0].name: required",
            ],
        ),
        (
            "{inputs: [5]}",
            [
                "model.inputs[0]: must be a field name or a mapping with name, type, "
                "categories, got 5"
            ],
        ),
        ("{inputs: sqft}", ["model.inputs: must be a list, got 'sqft'"]),
        (
            "{name: 'a/b'}",
            [
                "model.name: must be 1 to 64 characters from A-Z a-z 0-9 . _ -, starting "
                "with a letter or digit, got 'a/b'"
            ],
        ),
        ("{inptus: []}", ["model.inptus: unknown key (did you mean 'inputs'?)"]),
    ],
)
def test_model_errors(tmp_path: Path, model: str, expected: list[str]) -> None:
    assert errors_of(tmp_path, f"model: {model}\n") == expected


def test_model_field_limit(tmp_path: Path) -> None:
    data = {
        "model": {"inputs": [f"f{i}" for i in range(200)], "outputs": [f"o{i}" for i in range(57)]}
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path, "x.yaml")
    assert str(info.value) == "x.yaml: model: at most 256 fields (inputs + outputs), got 257"
    data["model"]["outputs"] = data["model"]["outputs"][:56]
    assert len(parse_config(data, tmp_path, "x.yaml").model.fields) == 256


# --------------------------------------------------------------------------- to_dict and schema


def test_to_dict_round_trips(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "default.yaml")
    d = cfg.to_dict()
    json.dumps(d)  # plain JSON-able
    assert "seed_defaults" not in d["drift_detection"]
    again = parse_config(yaml.safe_load(yaml.safe_dump(d)), tmp_path, "again")
    assert again == cfg
    seed = load_config(DATA / "seed_readme.yaml")
    back = parse_config(seed.to_dict(), tmp_path, "again")
    assert back == dataclasses.replace(
        seed, drift_detection=dataclasses.replace(seed.drift_detection, seed_defaults=False)
    )


def test_schema_rows_cover_every_key() -> None:
    rows = schema_rows()
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys))
    assert all(r[3] for r in rows), [r for r in rows if not r[3]]
    flat: set[str] = set()

    def walk(d: dict[str, object], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat.add(f"{prefix}{k}")

    walk(Config().to_dict(), "")
    assert flat <= set(keys)
    row = dict((r[0], r) for r in rows)
    assert row["drift_detection.threshold"] == (
        "drift_detection.threshold",
        "number",
        "0.05",
        row["drift_detection.threshold"][3],
    )
    assert row["workers.sampler.memory_limit_mb"][2] == "40"
    assert row["model_logging.log_level"][2] == '"INFO"'
    assert list(cfgmod.SCHEMA) == list(cfgmod.SECTIONS)


def test_dataclasses_are_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.instance = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- worker roster


def test_workers_section_follows_the_roster(tmp_path: Path) -> None:
    """Keys, defaults, documented defaults and classes of the workers all come from one table."""
    from edge_actors.roster import ROSTER, WORKER_NAMES
    from edge_actors.workers.base import Worker

    cfg = load_config(write(tmp_path, "workers: {drift: {enabled: false}}\n"))
    rows = {r[0]: r for r in schema_rows()}
    assert [f.name for f in dataclasses.fields(cfg.workers)] == list(WORKER_NAMES)
    for spec in ROSTER:
        w = cfg.workers.get(spec.name)
        assert w.memory_limit_mb == spec.memory_limit_mb
        assert w.enabled == (spec.name != "drift")
        assert rows[f"workers.{spec.name}.memory_limit_mb"][2] == json.dumps(
            int(spec.memory_limit_mb)
        )
        cls = spec.load()
        assert issubclass(cls, Worker) and cls.name == spec.name
    with pytest.raises(KeyError):
        cfg.workers.get("nope")
    assert errors_of(tmp_path, "workers: {nope: {}}\n") == [
        f"workers.nope: unknown key (allowed: {', '.join(WORKER_NAMES)})"
    ]


# ------------------------------------------------------------------ several models

TWO_MODELS = """
models:
  - name: detector
    version: "1.4.2"
    inputs: [a, b]
    outputs: [score]
  - name: detector
    version: 2
    inputs: [a, b]
    outputs: [score]
    reference_data_path: ref2.json
    drift_detection: {threshold: 0.01, window_size: 500, long_window_size: 0}
  - name: classifier
    task: classification
    inputs: [x]
    outputs: [{name: label, type: categorical, categories: [cat, dog]}]
drift_detection: {reference_data_path: ref.json}
"""


def test_models_list_declares_models_and_versions(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, TWO_MODELS))
    assert [(m.name, m.version) for m in cfg.models] == [
        ("detector", "1.4.2"),
        ("detector", "2"),  # an integer version is taken as text
        ("classifier", None),
    ]
    assert cfg.model is cfg.models[0]  # code that knows one model sees the first
    assert cfg.models[2].task == "classification"
    # Per-model drift settings: the section with the entry's overrides and reference.
    d2 = cfg.models[1].drift(cfg.drift_detection)
    assert (d2.threshold, d2.window_size) == (0.01, 500)
    assert d2.reference_data_path == tmp_path / "ref2.json"
    d1 = cfg.models[0].drift(cfg.drift_detection)
    assert d1 == cfg.drift_detection and d1.reference_data_path == tmp_path / "ref.json"
    # A version the config does not list uses the model's last entry.
    assert cfg.find_model("detector", "3.0") is cfg.models[1]
    assert cfg.find_model("detector", "1.4.2") is cfg.models[0]
    assert cfg.find_model("classifier", "7") is cfg.models[2]
    assert cfg.find_model("nope", None) is None
    # Written back, it loads to the same config.
    again = write(tmp_path, yaml.safe_dump(cfg.to_dict()), "again.yaml")
    assert load_config(again).models == cfg.models


def test_model_shorthand_is_one_model(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "default.yaml")
    assert cfg.models == (cfg.model,)
    assert "models" not in cfg.to_dict() and "model" in cfg.to_dict()
    # Replacing the model (as the seed rule does) keeps the two in step.
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="x"))
    assert other.models == (other.model,) and other.model.name == "x"


def test_bad_models_entries_name_their_key_path(tmp_path: Path) -> None:
    errs = errors_of(
        tmp_path,
        """
models:
  - name: detector
    inputs: [a, {name: 3}]
  - name: detector
  - version: 1.4
    drift_detection: {confirm_m: 5, confirm_n: 3}
  - name: c
    task: ranking
""",
    )
    assert errs == [
        "models[0].inputs[1].name: must be a letter or _ then up to 63 of A-Z a-z 0-9 _ . -, got 3",
        "models[1]: duplicate model 'detector' (also models[0])",
        "models[2].name: required",
        "models[2].version: must be a string (quote it: '1.4'), got the number 1.4",
        "models[3].task: must be one of classification, regression, got 'ranking'",
        "models[2].drift_detection.confirm_m: must be <= confirm_n (3), got 5",
    ]


def test_duplicate_model_version_and_model_with_models_are_refused(tmp_path: Path) -> None:
    errs = errors_of(
        tmp_path,
        """
model: {name: a}
models:
  - {name: a, version: "1"}
  - {name: a, version: "1"}
""",
    )
    assert errs == [
        "models: give either `model` (one model) or `models`, not both",
        "models[1]: duplicate model 'a' version '1' (also models[0])",
    ]
    assert errors_of(tmp_path, "models: []") == [
        "models: must be a non-empty list of model entries, got an empty list"
    ]
