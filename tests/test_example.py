"""The example model (examples/house_model.py), its reference, and ``make run``'s demo."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from edge_actors import control
from edge_actors.config import ConfigError, load_config
from edge_actors.drift.reference import load_reference, validate_against_model
from tests.conftest import REPO
from tests.s3_server import DUMMY_ENV

EXAMPLES = REPO / "examples"


def _module(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (examples/ is not a package)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


hm = _module("house_model")


# ------------------------------------------------------------------ the model


def test_sqft_scale_ramps_gradually() -> None:
    assert hm.sqft_scale(0) == 1.0
    assert hm.sqft_scale(2999) == 1.0
    assert hm.sqft_scale(3000) == 1.0
    assert hm.sqft_scale(4000) == pytest.approx(1.2)
    assert hm.sqft_scale(5000) == pytest.approx(1.4)
    assert hm.sqft_scale(10**6) == pytest.approx(1.4)
    assert hm.sqft_scale(150, drift_after=100, ramp=100, magnitude=1.0) == pytest.approx(1.5)


def test_predict_is_pure_and_confidence_ignores_size() -> None:
    assert hm.predict(3, 2, 1500, 20) == hm.predict(3, 2, 1500, 20)
    small, big = hm.predict(3, 2, 1500, 20), hm.predict(3, 2, 2100, 20)
    assert big[0] > small[0]
    assert big[1] == small[1]
    assert all(isinstance(v, float) for v in small)


def test_stream_is_deterministic_per_seed() -> None:
    a = hm.simulate(200, seed=5)
    assert a == hm.simulate(200, seed=5)
    assert a != hm.simulate(200, seed=6)
    # simulate(start=...) is the tail of the same stream.
    assert hm.simulate(50, seed=5, start=150) == (a[0][150:], a[1][150:])


def test_drift_moves_price_not_confidence() -> None:
    houses, outputs = hm.simulate(8000, seed=0)
    x = np.array(houses)
    y = np.array(outputs)
    before, after = slice(0, 3000), slice(5000, 8000)  # after: the ramp is complete
    sqft = hm.INPUTS.index("sqft")
    assert x[after, sqft].mean() / x[before, sqft].mean() == pytest.approx(1.4, rel=0.03)
    # The other inputs do not drift.
    for j, name in enumerate(hm.INPUTS):
        if name != "sqft":
            assert x[after, j].mean() == pytest.approx(x[before, j].mean(), rel=0.05), name
    price_before, price_after = y[before, 0].mean(), y[after, 0].mean()
    assert price_after > 1.2 * price_before
    conf_before, conf_after = y[before, 1], y[after, 1]
    assert abs(conf_after.mean() - conf_before.mean()) < 0.003
    assert abs(conf_after.std() - conf_before.std()) < 0.003
    # Same distribution, not just the same mean: quantiles agree closely.
    q = [0.1, 0.25, 0.5, 0.75, 0.9]
    np.testing.assert_allclose(np.quantile(conf_after, q), np.quantile(conf_before, q), atol=0.005)


class _FakeProducer:
    def __init__(self) -> None:
        self.records: list[tuple[Any, Any]] = []

    def log(self, inputs: Any, outputs: Any) -> int:
        self.records.append((inputs, outputs))
        return len(self.records)


def test_run_paces_and_logs_model_values() -> None:
    p = _FakeProducer()
    t0 = time.monotonic()
    n = hm.run(p, rate=500, duration=0.4, seed=3)
    elapsed = time.monotonic() - t0
    assert 0.35 < elapsed < 1.0
    assert 150 <= n <= 210 and n == len(p.records)
    houses, outputs = hm.simulate(n, seed=3)
    assert [r[0] for r in p.records] == houses
    assert [r[1] for r in p.records] == outputs


# --------------------------------------------------------------- the reference


def test_committed_reference_is_reproducible(tmp_path: Path) -> None:
    out = tmp_path / "ref.json"
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_reference.py"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    committed = EXAMPLES / "house_reference.json"
    assert out.read_text() == committed.read_text(), "re-run examples/make_reference.py"
    assert committed.stat().st_size < 300 * 1024


def test_reference_matches_default_config() -> None:
    cfg = load_config(REPO / "configs" / "default.yaml")
    assert cfg.drift_detection.reference_data_path == EXAMPLES / "house_reference.json"
    ref = load_reference(cfg.drift_detection.reference_data_path)
    validate_against_model(ref, cfg.model)
    assert sorted(ref.features) == sorted(hm.INPUTS + hm.OUTPUTS)
    assert all(f.n == 5000 for f in ref.features.values())
    # Pre-drift: the live model's first 3000 predictions look like the reference.
    houses, _ = hm.simulate(3000, seed=0)
    sqft = np.array(houses)[:, hm.INPUTS.index("sqft")]
    assert np.median(sqft) == pytest.approx(np.median(ref.features["sqft"].sorted_values), rel=0.03)


# ------------------------------------------------------------------- the demo


rd = _module("run_demo")


def test_status_line_is_defensive() -> None:
    assert rd.status_line(3, 200, None) == "[   3s] 200/s | agent not answering"
    line = rd.status_line(5, 199.6, {"state": "running", "workers": {}})
    assert line == "[   5s] 200/s | drift: - | outbox - | sent - in -"
    status: dict[str, Any] = {
        "state": "stopping",
        "workers": {
            "sampler": {"restarts": 2, "stats": {}},
            "drift": {
                "state": "running",
                "restarts": 1,
                "stats": {
                    "features": {
                        "sqft": {"state": "drift", "p_value": 0.0},
                        "price": {"state": "drift"},
                        "age": {"state": "ok"},
                    }
                },
            },
            "uploader": {
                "restarts": 0,
                "stats": {"backlog_records": 12, "uploaded_records": 3, "uploaded_objects": 1},
            },
        },
    }
    # 80 columns at most: the drift list gives way first, counted.
    assert rd.status_line(7, 10, status) == (
        "[   7s]  10/s | drift: +2 | outbox 12 | sent 3 in 1 | restarts 3 | stopping"
    )
    status["state"] = "running"
    assert rd.status_line(7, 10, status) == (
        "[   7s]  10/s | drift: sqft, price | outbox 12 | sent 3 in 1 | restarts 3"
    )
    for w in status["workers"].values():
        w["restarts"] = 0
    assert rd.status_line(7, 10, status) == (
        "[   7s]  10/s | drift: sqft, price | outbox 12 | sent 3 in 1"
    )
    status["workers"]["drift"]["stats"]["features"] = {"sqft": {"state": "ok"}}
    assert rd.drift_summary(status) == "no drift"
    assert rd.drift_summary({"workers": {"drift": {"state": "disabled"}}}) == "off"
    assert rd.drift_summary({"workers": {"drift": {"stats": None}}}) == "-"


def test_status_line_fits_an_80_column_terminal() -> None:
    features = {f"feature_{i}": {"state": "drift"} for i in range(12)}
    status: dict[str, Any] = {
        "state": "running",
        "workers": {
            "drift": {"restarts": 0, "stats": {"features": features}},
            "uploader": {
                "restarts": 10,
                # A day at 200 predictions a second.
                "stats": {
                    "backlog_records": 1_234,
                    "uploaded_records": 17_279_800,
                    "uploaded_objects": 8_640,
                },
            },
        },
    }
    line = rd.status_line(86_399, 200, status)
    assert len(line) <= 80, line
    # A cut drift list says how many features it leaves out.
    assert re.search(r"drift: (feature_0, )?\+1[12] \|", line), line
    assert line.endswith("| restarts 10"), line  # restarts are never cut
    status["workers"]["drift"]["stats"]["features"] = {
        "sqft": {"state": "drift"},
        "price": {"state": "drift"},
    }
    # A few minutes in, as the quick start shows it.
    status["workers"]["uploader"].update(restarts=0)
    status["workers"]["uploader"]["stats"].update(
        backlog_records=1_904, uploaded_records=64_611, uploaded_objects=129
    )
    line = rd.status_line(374, 200, status)
    assert len(line) <= 80 and "drift: sqft, price |" in line, line


def _demo_config(d: Path, **extra: Any) -> Path:
    model = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["model"]
    cfg = {
        "model": model,
        # Fast shutdown for a test; the rest is the shipped default.
        "supervisor": {"stop_grace_seconds": 2, "shutdown_timeout_seconds": 10},
        "workers": {"drift": {"enabled": False}, "uploader": {"enabled": False}},
        **extra,
    }
    path = d / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _segments(instance: str) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"ea_{instance}_"))


def _demo(
    config: Path, var: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "run_demo.py"),
            "-c",
            str(config),
            "--var",
            str(var),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if re.match(r"^\[\s*\d+s\]", ln)]


@pytest.mark.slow
def test_run_demo_for_a_few_seconds(short_dir: Path) -> None:
    var = short_dir / "var"
    proc = _demo(_demo_config(short_dir), var, "--duration", "3")
    out, err = _finish(proc)
    assert proc.returncode == 0, out + err
    log_path = var / "agent.log"
    assert out.splitlines()[0].endswith(f"log: {log_path}")
    rates = [int(m.group(1)) for m in re.finditer(r"^\[\s*\d+s\]\s+(\d+)/s \| ", out, re.M)]
    assert len(rates) >= 3, out
    assert sum(r > 100 for r in rates) >= 2, out
    assert all(len(ln) <= 80 for ln in _lines(out)), out
    assert "drift: off" in out
    assert "agent exited with code 0" in out
    assert log_path.exists() and "supervisor pid" in log_path.read_text()
    assert _segments(rd.instance_for(var)) == []


@pytest.mark.slow
def test_run_demo_stops_cleanly_on_sigint(short_dir: Path) -> None:
    var = short_dir / "var"
    proc = _demo(_demo_config(short_dir), var)
    try:
        assert proc.stdout is not None
        # Wait for the first status line, then press "Ctrl-C".
        for line in proc.stdout:
            if "/s |" in line and line.startswith("["):
                break
        proc.send_signal(signal.SIGINT)
    finally:
        out, err = _finish(proc, 60)
    assert proc.returncode == 0, out + err
    assert "model stopped:" in out and "agent exited with code 0" in out
    assert _segments(rd.instance_for(var)) == []


@pytest.mark.slow
def test_run_demo_reports_an_agent_that_dies(short_dir: Path) -> None:
    var = short_dir / "var"
    # The run folder is a regular file: the agent cannot open its socket and exits.
    var.mkdir()
    proc = _demo(_demo_config(short_dir), var, "--duration", "30", "--keep-state")
    (var / "run").write_text("")
    _out, err = _finish(proc, 60)
    assert proc.returncode != 0
    assert "run_demo: the agent did not open its control socket (exit code" in err
    assert "Last lines of" in err
    assert _segments(rd.instance_for(var)) == []


# ------------------------------------------------------- the demo is self-contained


def test_demo_instance_and_paths_are_per_checkout(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "var", tmp_path / "b" / "var"
    assert rd.instance_for(a) != rd.instance_for(b)
    assert rd.instance_for(a) == rd.instance_for(a)
    config = REPO / "configs" / "default.yaml"
    a.mkdir(parents=True)
    derived = load_config(rd.demo_config(config, load_config(config), a, None))
    assert derived.instance == rd.instance_for(a)
    assert derived.run_dir == a / "run"
    assert derived.data_dir == a
    assert Path(derived.storage.sqlite_path).parent == a
    assert Path(derived.storage.local_path) == a / "sink"
    # Relative paths of the source config still point where they did.
    assert derived.drift_detection.reference_data_path == EXAMPLES / "house_reference.json"


@pytest.mark.slow
def test_two_checkouts_run_their_demos_side_by_side(short_dir: Path) -> None:
    config = REPO / "configs" / "default.yaml"
    vars_ = [short_dir / "one" / "var", short_dir / "two" / "var"]
    procs = [_demo(config, v, "--duration", "60") for v in vars_]
    try:
        producers = []
        for v in vars_:
            demo_cfg = v / "demo.yaml"
            deadline = time.monotonic() + 60
            status: dict[str, Any] = {}
            while time.monotonic() < deadline:
                if demo_cfg.exists():
                    try:
                        cfg = load_config(demo_cfg)
                        status = control.request(cfg.run_dir, cfg.instance, {"op": "status"})[
                            "status"
                        ]
                        # Running (every worker ready) with the model attached.
                        if status.get("producers") and status.get("state") == "running":
                            break
                    except (control.ControlError, ConfigError):
                        pass
                time.sleep(0.2)
            producers.append(status.get("producers"))
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        outs = [_finish(p, 60) for p in procs]
    # Each agent sees its own model only, and both stop cleanly.
    assert [len(p or []) for p in producers] == [1, 1], producers
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err
        assert "ERROR" not in err
    for v in vars_:
        assert "ERROR" not in (v / "agent.log").read_text()
        assert (v / "outbox.db").exists()


def _drift_run(config: Path, var: Path, *args: str) -> str:
    proc = _demo(config, var, *args)
    out, err = _finish(proc)
    assert proc.returncode == 0, out + err
    return out


@pytest.mark.slow
def test_demo_starts_fresh_unless_told_to_keep_state(short_dir: Path) -> None:
    config = _demo_config(
        short_dir,
        workers={"uploader": {"enabled": False}},
        drift_detection={
            "reference_data_path": str(EXAMPLES / "house_reference.json"),
            "long_window_size": 0,
        },
    )
    var = short_dir / "var"
    # A first run that drifts at once (fast, so the detector sees thousands of records),
    # stopped with Ctrl-C once the drift shows.
    proc = _demo(config, var, "--rate", "2000", "--drift-after", "0")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "drift: sqft" in line:
                break
        proc.send_signal(signal.SIGINT)
    finally:
        out, err = _finish(proc, 60)
    assert proc.returncode == 0 and "drift: sqft" in line, line + out + err
    # --keep-state: the drift state of the last run carries over (the checkpoint).
    out = _drift_run(config, var, "--duration", "3", "--keep-state")
    assert "drift: sqft" in _lines(out)[0], out
    # By default the next demo starts fresh: no drift carried over from the last one.
    out = _drift_run(config, var, "--duration", "3")
    assert _lines(out) and not any("drift: sqft" in ln for ln in _lines(out)), out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_starts_with_make_run(
    name: str, short_dir: Path, s3_server: str
) -> None:
    config = REPO / "configs" / name
    first = config.read_text().splitlines()[0]
    assert first.startswith(f"# make run CONFIG=configs/{name}"), first
    var = short_dir / "var"
    # The S3 config talks to the loopback S3 (never to AWS) and its bucket exists there.
    (short_dir / "aws").write_text("")
    env = {
        **DUMMY_ENV,
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_CONFIG_FILE": str(short_dir / "aws"),
        "AWS_SHARED_CREDENTIALS_FILE": str(short_dir / "aws"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    bucket = load_config(config).storage.bucket
    if bucket:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=s3_server,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
    proc = _demo(config, var, "--duration", "4", env=env)
    out, err = _finish(proc)
    assert proc.returncode == 0, out + err
    assert len(_lines(out)) >= 3, out
    log = (var / "agent.log").read_text()
    assert " ERROR " not in log, log
    assert "drift detection is off" not in log, log
