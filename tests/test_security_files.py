"""Hostile files and inputs (issue 11): config, reference files, ``-o`` targets, URLs, pipes.

Every test here is an attack or a hostile file found by trying the agent as an
attacker would; each failed on the code before the fix (a hang, a crash with a
bare Python exception, a replaced device node, a leaked secret, a traceback).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import resource
import stat
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge_actors.config import ConfigError, load_config, parse_config
from edge_actors.drift.reference import (
    FeatureReference,
    Reference,
    ReferenceError,
    build_reference,
    load_reference,
    save_reference,
)
from edge_actors.keys import validate_prefix
from edge_actors.outbox import Outbox
from edge_actors.sinks.base import SinkError, md5_b64
from edge_actors.sinks.local import LocalSink
from tests.conftest import MODEL, REPO, cli
from tests.test_report import data_dir  # noqa: F401 - the report fixture

HEADER = "edge-actors: invalid config:\n"


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value)


# ============================================================ config loading
def test_a_fifo_as_config_is_refused_without_waiting_for_a_writer(short_dir: Path) -> None:
    fifo = short_dir / "config.yaml"
    os.mkfifo(fifo)
    out = cli("check-config", str(fifo), timeout=20)  # it used to block forever
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"{HEADER}{fifo}: not a regular file (a FIFO)\n"


def test_dev_zero_as_config_is_refused_without_reading_it() -> None:
    # It used to read until memory ran out: the child gets a 1 GB address-space cap
    # so that the old behaviour fails this test instead of the machine.
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    out = subprocess.run(
        [sys.executable, "-m", "edge_actors", "check-config", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        preexec_fn=cap,
    )
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"{HEADER}/dev/zero: not a regular file (a character device)\n"


def test_a_config_larger_than_the_cap_is_refused(short_dir: Path) -> None:
    big = short_dir / "big.yaml"
    big.write_text("# padding\n" * 200_000)  # 2 MB of comments: valid YAML, absurd config
    assert config_error(big) == f"{big}: larger than 1024 KiB (2000000 bytes): not a config file"


def test_deeply_nested_yaml_names_the_key_path_not_a_recursion_error(short_dir: Path) -> None:
    deep = short_dir / "deep.yaml"
    deep.write_text("system: " + "[" * 50_000 + "]" * 50_000 + "\n")
    out = cli("check-config", str(deep))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"{HEADER}{deep}: system{'[0]' * 32}: nested deeper than 32 levels (line 1, column 41)\n"
    )


def test_a_5000_digit_integer_names_the_key_not_a_value_error(short_dir: Path) -> None:
    p = short_dir / "c.yaml"
    p.write_text("system:\n  sampling_interval_seconds: " + "9" * 5000 + "\n")
    out = cli("check-config", str(p))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"{HEADER}{p}: system.sampling_interval_seconds: integer of 5000 characters at line 2 "
        "is too long (at most 32)\n"
    )


def test_an_impossible_date_names_the_key_not_a_value_error(short_dir: Path) -> None:
    p = short_dir / "c.yaml"
    p.write_text("model:\n  name: 2024-13-45\n")
    assert config_error(p) == (
        f"{p}: model.name: invalid value at line 2, column 9: month must be in 1..12"
    )


def test_a_huge_bad_value_is_shortened_in_the_message(short_dir: Path) -> None:
    p = short_dir / "c.yaml"
    p.write_text(f"device_id: '{'x' * 500_000}'\n? {'k' * 100_000}\n: 1\n")
    lines = config_error(p).splitlines()
    assert len(lines) == 2
    assert lines[1] == (
        f"{p}: device_id: must be 1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a "
        f"letter or digit, got '{'x' * 80}'... (500000 characters)"
    )
    assert lines[0].startswith(f"{p}: '{'k' * 80}'... (100000 characters): unknown key")
    assert all(len(line) < 400 for line in lines)


def test_duplicate_keys_are_rejected_naming_both_lines(short_dir: Path) -> None:
    p = short_dir / "c.yaml"
    p.write_text(
        "instance: first\nstorage:\n  type: local\n  prefix: fleet/\n  type: s3\ninstance: second\n"
    )
    out = cli("check-config", str(p))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"{HEADER}{p}: storage.type: duplicate key at line 5 (first at line 3)\n"
        f"{p}: instance: duplicate key at line 6 (first at line 1)\n"
    )


def test_a_merge_key_override_is_not_a_duplicate(short_dir: Path) -> None:
    # `<<` is how YAML users share settings; overriding a merged key is legitimate.
    p = short_dir / "c.yaml"
    p.write_text(
        "workers:\n"
        "  sampler: &w {memory_limit_mb: 50}\n"
        "  drift:\n"
        "    <<: *w\n"
        "    memory_limit_mb: 90\n"
    )
    cfg = load_config(p)
    assert (cfg.workers.sampler.memory_limit_mb, cfg.workers.drift.memory_limit_mb) == (50, 90)


# ================================================== one prefix rule for all
BAD_PREFIXES = [
    "fleet//eu/",
    "fleet/\u0085/",
    "fleet\u2028eu/",
    "\u202efleet/",
    "a\u200bb/",
    "./fleet/",
    "fleet/./eu/",
    "fleet\\eu/",
    "\U0001f600" * 200,  # 800 bytes: the key would pass S3's 1024-byte limit
]
GOOD_PREFIXES = ["", "fleet", "fleet/eu/", "tele-", "flotte-été/"]


@pytest.mark.parametrize("prefix", BAD_PREFIXES + GOOD_PREFIXES, ids=ascii)
def test_config_and_sinks_apply_the_same_prefix_rule(prefix: str) -> None:
    try:
        validate_prefix(prefix)
        sink_ok = True
    except ValueError:
        sink_ok = False
    try:
        parse_config({"storage": {"prefix": prefix}}, Path("/tmp"), "c.yaml")
        config_ok = True
    except ConfigError:
        config_ok = False
    assert (config_ok, sink_ok) == (prefix in GOOD_PREFIXES, prefix in GOOD_PREFIXES)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("fleet//eu/", "must not contain an empty segment ('//'), got 'fleet//eu/'"),
        ("fleet/\u0085/", "must not contain NUL or control characters, got 'fleet/\\x85/'"),
        (
            "fleet\u2028/",
            "must not contain Unicode format or line/paragraph separator characters "
            "(U+2028), got 'fleet\\u2028/'",
        ),
        (
            "\u202efleet/",
            "must not contain Unicode format or line/paragraph separator characters "
            "(U+202E), got '\\u202efleet/'",
        ),
    ],
    ids=ascii,
)
def test_check_config_refuses_prefixes_the_uploader_refuses(
    short_dir: Path, prefix: str, message: str
) -> None:
    p = short_dir / "c.yaml"
    p.write_text(yaml.safe_dump({"storage": {"prefix": prefix}}, allow_unicode=False))
    out = cli("check-config", str(p))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"{HEADER}{p}: storage.prefix: {message}\n"
    with pytest.raises(ValueError) as e:
        validate_prefix(prefix)
    assert str(e.value) == f"prefix: {message}"


def _system_row() -> dict[str, Any]:
    return {"time": "2026-01-01T00:00:00.000000Z", "device_id": "dev", "cpu_percent": 1.0}


def _shipper(cfg: Any, caplog: pytest.LogCaptureFixture) -> Any:
    """Run the uploader's shipper thread on ``cfg`` until it records an error."""
    from edge_actors.workers.uploader import Shipper, open_outbox

    with open_outbox(cfg) as ob:
        ob.append({"system": [_system_row()]})
    shipper = Shipper(cfg)
    with caplog.at_level(logging.DEBUG, logger="edge_actors"):
        shipper.start()
        deadline = time.monotonic() + 20
        while not shipper.state.last_error and time.monotonic() < deadline:
            time.sleep(0.05)
        shipper.stop(5.0)
    return shipper


def _config(short_dir: Path, storage: dict[str, Any]) -> Any:
    data = {
        "device_id": "dev",
        "data_dir": str(short_dir / "data"),
        "storage": storage,
        "telemetry": {"upload_interval_seconds": 0.1, "retry_base_delay_seconds": 0.1},
    }
    return parse_config(data, short_dir, "c.yaml")


def test_a_key_the_sink_refuses_is_a_permanent_error_in_status(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A refusal inside the shipper thread used to end the thread with a traceback
    # on stderr: status showed no error and uploads silently stopped for good.
    cfg = _config(short_dir, {"type": "local"})
    cfg = dataclasses.replace(cfg, device_id="bad/device")  # past the config's checks
    shipper = _shipper(cfg, caplog)
    assert shipper.state.last_error == (
        "upload of system failed: device_id: must be non-empty, without '/', not '.' or '..': "
        "'bad/device'"
    )
    assert not shipper.is_alive()
    with Outbox.open(cfg.storage.sqlite_path, max_bytes=1 << 20) as ob:
        assert ob.stats()["streams"]["system"]["records"] == 1  # kept, not dropped


# ============================================================ endpoint_url
CANARY_PASS = "pa55CanaryWord"
CANARY_TOKEN = "tokCanary123"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            f"http://USER:{CANARY_PASS}@127.0.0.1:9000/",
            "must not contain a user name or password; credentials belong in the AWS "
            "credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or "
            "an instance role), got 'http://***@127.0.0.1:9000/'",
        ),
        (
            f"https://s3.example.com/?X-Amz-Security-Token={CANARY_TOKEN}",
            "must not contain a query string; credentials belong in the AWS credential chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or an instance "
            "role), got 'https://s3.example.com/?***'",
        ),
        (
            f"ftp://u:{CANARY_PASS}@example.com",
            "must start with http:// or https://, got 'ftp://***@example.com'",
        ),
        ("http://:9000", "must name a host, got 'http://:9000'"),
    ],
)
def test_check_config_refuses_credentials_in_endpoint_url(
    short_dir: Path, url: str, message: str
) -> None:
    p = short_dir / "c.yaml"
    p.write_text(yaml.safe_dump({"storage": {"type": "s3", "bucket": "b-1", "endpoint_url": url}}))
    out = cli("check-config", str(p))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"{HEADER}{p}: storage.endpoint_url: {message}\n"


def test_uploader_errors_never_carry_credentials_from_a_url(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The config refuses such a URL; here it is forced in, as a botocore message
    # quoting a URL would be: log, status (shipper state) and outbox stay clean.
    cfg = _config(short_dir, {"type": "s3", "bucket": "b-1", "region": "us-east-1"})
    url = f"http://USER:{CANARY_PASS}@127.0.0.1:9/?X-Amz-Security-Token={CANARY_TOKEN}"
    cfg = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, endpoint_url=url))
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAX",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        shipper = _shipper(cfg, caplog)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    state = shipper.state
    assert "127.0.0.1:9" in state.last_error, state.last_error  # still says where
    with Outbox.open(cfg.storage.sqlite_path, max_bytes=1 << 20) as ob:
        stored = json.dumps(ob.stats())
    texts = {
        "status": f"{state.last_error} {state.last_error_hint}",
        "log": caplog.text,
        "outbox": stored,
        "outbox file": cfg.storage.sqlite_path.read_bytes().decode("latin-1"),
    }
    assert state.last_error in texts["outbox"]
    for where, text in texts.items():
        for secret in (CANARY_PASS, CANARY_TOKEN):
            assert secret not in text, f"{secret} leaked into {where}"


def test_sink_errors_redact_urls() -> None:
    err = SinkError(
        f'Could not connect to "http://u:{CANARY_PASS}@h:1/b/k?X-Amz-Security-Token={CANARY_TOKEN}"',
        hint=f"check https://a:{CANARY_PASS}@h/",
    )
    assert str(err) == 'Could not connect to "http://***@h:1/b/k?***" (check https://***@h/)'


# ============================================================== -o targets
def _csv(tmp: Path) -> Path:
    p = tmp / "train.csv"
    p.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(50)))
    return p


def _hostile_targets(tmp: Path) -> list[tuple[Path, str]]:
    fifo = tmp / "fifo.out"
    os.mkfifo(fifo)
    victim = tmp / "victim"
    victim.write_text("precious")
    link = tmp / "link.out"
    link.symlink_to(victim)
    out = [(fifo, "a FIFO"), (link, "a symbolic link")]
    try:  # root may create device nodes: the /dev/full case, without touching /dev/full
        dev = tmp / "full"
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        out.append((dev, "a character device"))
    except OSError:
        pass
    return out


def _unchanged(tmp: Path, target: Path, kind: str) -> None:
    st = os.lstat(target)
    assert {
        "a FIFO": stat.S_ISFIFO,
        "a symbolic link": stat.S_ISLNK,
        "a character device": stat.S_ISCHR,
    }[kind](st.st_mode), f"{target} was replaced"
    assert (tmp / "victim").read_text() == "precious"
    assert not [p for p in tmp.iterdir() if p.name.endswith(".tmp")]


def test_reference_build_refuses_a_target_that_is_not_a_regular_file(tmp_path: Path) -> None:
    src = _csv(tmp_path)
    for target, kind in _hostile_targets(tmp_path):
        out = cli("reference", "build", str(src), "-o", str(target))
        assert (out.returncode, out.stdout) == (1, ""), (kind, out.stdout)
        assert out.stderr == (
            f"edge-actors: {target}: exists and is {kind}, not a regular file: refusing to "
            "replace it (remove it or choose another output path)\n"
        )
        _unchanged(tmp_path, target, kind)


def test_report_refuses_a_target_that_is_not_a_regular_file(
    data_dir: Path,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    for target, kind in _hostile_targets(tmp_path):
        out = cli("report", "--from", str(data_dir / "tree"), "-o", str(target), timeout=120)
        assert (out.returncode, out.stdout) == (1, ""), (kind, out.stdout)
        assert out.stderr == (
            f"edge-actors: -o {target}: exists and is {kind}, not a regular file: refusing to "
            "replace it (remove it or choose another output path)\n"
        )
        _unchanged(tmp_path, target, kind)


def test_report_output_is_private_and_keeps_an_existing_mode(
    data_dir: Path,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    new, shared = tmp_path / "new.html", tmp_path / "shared.html"
    shared.write_text("old")
    shared.chmod(0o644)
    for target in (new, shared):
        out = cli("report", "--from", str(data_dir / "tree"), "-o", str(target), timeout=120)
        assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    assert shared.read_text().startswith("<!DOCTYPE html>")


def test_save_reference_never_follows_a_planted_temporary_name(tmp_path: Path) -> None:
    # The old fixed temporary name "<target>.tmp" was opened with O_CREAT|O_TRUNC:
    # a symlink planted there truncated whatever it pointed to.
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "ref.npz"
    (tmp_path / "ref.npz.tmp").symlink_to(victim)
    out = cli("reference", "build", str(_csv(tmp_path)), "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert victim.read_text() == "precious"
    assert (tmp_path / "ref.npz.tmp").is_symlink()  # left alone
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(load_reference(target).features) == ["a", "b"]


def test_local_sink_objects_are_private(short_dir: Path) -> None:
    os.umask(0o022)
    sink = LocalSink(short_dir / "sink")
    body = b"x"
    sink.put("model/device=d/date=2026-01-01/a.ndjson.gz", body, md5_b64(body))
    made = [short_dir / "sink", *(short_dir / "sink").rglob("*")]
    modes = {str(p.relative_to(short_dir)): stat.S_IMODE(p.stat().st_mode) for p in made}
    assert modes == {
        "sink": 0o700,
        "sink/model": 0o700,
        "sink/model/device=d": 0o700,
        "sink/model/device=d/date=2026-01-01": 0o700,
        "sink/model/device=d/date=2026-01-01/a.ndjson.gz": 0o600,
    }


# ======================================================== reference files
def _npz_with(members: dict[str, bytes | Callable[[Any], None]], path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            if isinstance(data, bytes):
                zf.writestr(name, data)
            else:
                with zf.open(name, "w", force_zip64=True) as fh:
                    data(fh)
    return path


def _npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _good_meta() -> bytes:
    """Metadata of one numeric feature ``x`` (array ``v0``); the hash is never reached."""
    feature = {"name": "x", "kind": "numeric", "n": 10, "min": 0, "max": 9, "nan_rate": 0}
    meta = {
        "format_version": 1,
        "content_hash": "0" * 16,
        "features": [feature | {"categories": []}],
    }
    return _npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def test_a_zip_bomb_npz_is_refused_before_allocating(tmp_path: Path) -> None:
    count = 25 << 20  # 200 MiB of float64 zeros, ~200 KB compressed

    def zeros(fh: Any) -> None:
        fh.write(_npy_header((count,)))
        block = bytes(1 << 20)
        for _ in range(count * 8 >> 20):
            fh.write(block)

    bomb = _npz_with({"meta.npy": _good_meta(), "v0.npy": zeros}, tmp_path / "bomb.npz")
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ReferenceError) as e:
            load_reference(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(e.value) == (
        f"{bomb}: declares 200.0 MiB of uncompressed data, more than the 64.0 MiB allowed "
        "(drift_detection.max_reference_mb)"
    )
    assert peak < 8 << 20, f"peak {peak} bytes"


def test_a_declared_size_the_file_cannot_hold_is_refused(tmp_path: Path) -> None:
    p = _npz_with({"meta.npy": _good_meta(), "v0.npy": _npy(np.arange(10.0))}, tmp_path / "r.npz")
    raw = bytearray(p.read_bytes())
    # Central directory entry of v0.npy: uncompressed size at offset 24 of the record.
    cd = raw.rindex(b"PK\x01\x02")
    struct.pack_into("<I", raw, cd + 24, 0xFFFFFF00)
    p.write_bytes(bytes(raw))
    with pytest.raises(ReferenceError) as e:
        load_reference(p, max_bytes=1 << 40)
    assert str(e.value).startswith(f"{p}: corrupt reference file: member 'v0.npy' declares 4.0 GiB")
    assert str(e.value).endswith("more than compression allows")


def test_an_npy_header_larger_than_its_member_is_refused(tmp_path: Path) -> None:
    lying = _npy_header((10**9,)) + bytes(80)
    p = _npz_with({"meta.npy": _good_meta(), "v0.npy": lying}, tmp_path / "r.npz")
    with pytest.raises(ReferenceError) as e:
        load_reference(p)
    assert str(e.value) == (
        f"{p}: corrupt reference file: ValueError: v0.npy: its header declares 7.5 GiB, "
        "the member holds 80 bytes"
    )


def test_non_finite_values_in_an_npz_are_refused(tmp_path: Path) -> None:
    feat = FeatureReference("x", "numeric", np.array([0.0, 1.0, np.inf]), 3, 0.0, np.inf, 0.0)
    p = tmp_path / "r.npz"
    save_reference(Reference.from_features([feat]), p)
    with pytest.raises(ReferenceError) as e:
        load_reference(p)
    assert str(e.value) == (
        f"{p}: feature 'x': min 0.0 / max inf must be finite: a bound of ±inf disables checks"
    )


def test_a_single_line_csv_is_streamed_with_a_line_limit(tmp_path: Path) -> None:
    p = tmp_path / "one-line.csv"
    p.write_bytes(b"a," * (2 << 20))  # 4 MiB, no newline
    tracemalloc.start()
    try:
        with pytest.raises(ReferenceError) as e:
            build_reference(p, max_line_bytes=64 << 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(e.value) == (f"{p}: line 1 is longer than 64.0 KiB: not line-oriented training data")
    assert peak < 1 << 20, f"peak {peak} bytes"


def test_reference_build_refuses_a_line_past_the_default_limit(tmp_path: Path) -> None:
    p = tmp_path / "one-line.csv"
    p.write_bytes(b"a" * (9 << 20))
    out = cli("reference", "build", str(p), "-o", str(tmp_path / "r.npz"))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"edge-actors: {p}: line 1 is longer than 8.0 MiB: not line-oriented training data\n"
    )


def test_reference_build_refuses_infinity_in_a_csv(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a\n1\n2\ninf\n")
    with pytest.raises(ReferenceError) as e:
        build_reference(p)
    assert str(e.value) == (
        f"{p}: feature 'a': line 4: 'inf' is not a finite number "
        "(leave the cell empty for a missing value)"
    )


def test_reference_show_escapes_control_characters_in_names(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"a\x1b[2Jb\u202ec": [1, 2, 3], "k": ["x\x07", "y"]}))
    out = cli("reference", "show", str(p))
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\u202e" not in out.stdout and "\x07" not in out.stdout
    assert "  a\\x1b[2Jb\\u202ec  numeric" in out.stdout
    assert "x\\x07 50.0%" in out.stdout


# ===================================================== check-config + reference
def _config_with_reference(short_dir: Path, ref: Path) -> Path:
    p = short_dir / "c.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "model": MODEL,
                "drift_detection": {"reference_data_path": str(ref)},
                "run_dir": str(short_dir / "run"),
                "data_dir": str(short_dir / "data"),
            }
        )
    )
    return p


def test_check_config_loads_and_validates_the_reference(short_dir: Path) -> None:
    ref = short_dir / "ref.json"
    cfg = _config_with_reference(short_dir, ref)
    ref.write_text('{"sqft": [1200, 1500,\n NaN, 900]}')
    out = cli("check-config", str(cfg))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"edge-actors: invalid reference:\n{ref}: feature 'sqft': value at index 2: NaN "
        "(line 2) is not a finite number: only finite float64 values are allowed (null marks "
        "a missing one)\n"
    )
    ref.write_text('{"colour": [1, 2]}')
    out = cli("check-config", str(cfg))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.startswith(
        f"edge-actors: invalid reference:\n{ref}: feature 'colour' is not declared by the model"
    )
    ref.write_text('{"sqft": [1200, 1500, 900]}')
    out = cli("check-config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert f"  reference {ref}: 1 features, hash " in out.stdout


# ============================================================== broken pipe
@pytest.mark.parametrize(
    "args",
    [
        ["check-config", "{cfg}"],
        ["reference", "show", "{ref}"],
        ["status", "-c", "{cfg}"],
        ["status", "-c", "{cfg}", "--json"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_reader_that_goes_away_ends_the_command_quietly(short_dir: Path, args: list[str]) -> None:
    ref = short_dir / "ref.json"
    ref.write_text('{"sqft": [1200, 1500, 900]}')
    cfg = _config_with_reference(short_dir, ref)
    argv = [a.format(cfg=cfg, ref=ref) for a in args]
    # `edge-actors status | head -0`: the reader is gone before anything is written.
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_actors", *argv],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    finally:
        os.close(w)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_max_reference_mb_caps_a_json_reference(short_dir: Path) -> None:
    ref = short_dir / "ref.json"
    ref.write_text(json.dumps({"sqft": list(range(1000))}))  # 4.9 KB
    cfg = _config_with_reference(short_dir, ref)
    data = yaml.safe_load(cfg.read_text())
    data["drift_detection"]["max_reference_mb"] = 0.001  # 1 KiB
    cfg.write_text(yaml.safe_dump(data))
    out = cli("check-config", str(cfg))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"edge-actors: invalid reference:\n{ref}: 4.8 KiB, more than the 1.0 KiB allowed "
        "(drift_detection.max_reference_mb)\n"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another uid")
def test_a_planted_world_writable_output_does_not_lend_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "ref.npz"
    target.write_text("planted")
    target.chmod(0o666)
    os.chown(target, 65534, 65534)  # nobody's file in a shared directory
    out = cli("reference", "build", str(_csv(tmp_path)), "-o", str(target))
    assert out.returncode == 0, out.stderr
    st = target.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)


def test_any_corrupt_reference_is_a_reference_error(tmp_path: Path) -> None:
    # Seeded byte flips, cuts and insertions of a good .npz and JSON: every
    # failure must be a ReferenceError naming the file (zlib.error and
    # NotImplementedError from the zip reader used to escape and crash).
    import random

    feats = [
        FeatureReference("a", "numeric", np.arange(50.0), 50, 0.0, 49.0, 0.0),
        FeatureReference("c", "categorical", np.empty(0), 10, np.nan, np.nan, 0.1, {"x": 4}),
    ]
    save_reference(Reference.from_features(feats), tmp_path / "good.npz")
    sources = {
        ".npz": (tmp_path / "good.npz").read_bytes(),
        ".json": json.dumps({"a": [1, 2, 3, None, 4.5], "c": ["x", "y", None]}).encode(),
    }
    rng = random.Random(11)
    escaped: dict[str, str] = {}
    for i in range(1500):
        suffix = ".json" if i % 3 == 0 else ".npz"
        b = bytearray(sources[suffix])
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(b))
            op = rng.random()
            if op < 0.6:
                b[pos] = rng.randrange(256)
            elif op < 0.8:
                del b[pos : pos + rng.randint(1, 20)]
            else:
                b[pos:pos] = rng.randbytes(rng.randint(1, 10))
        p = tmp_path / f"mutant{suffix}"
        p.write_bytes(bytes(b))
        try:
            load_reference(p)
        except ReferenceError as exc:
            assert str(exc).startswith(f"{p}: "), exc
        except Exception as exc:
            escaped.setdefault(type(exc).__name__, str(exc))
    assert escaped == {}


def test_a_control_character_in_the_config_is_one_line_with_its_place(short_dir: Path) -> None:
    p = short_dir / "c.yaml"
    p.write_bytes(b"instance: edge\ndevice_id: a\x1bb\n")
    assert config_error(p) == (
        f"{p}: invalid YAML at line 2, column 13: control character U+001B is not allowed"
    )
