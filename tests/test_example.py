"""The example model (examples/house_model.py), its reference, and ``make run``'s demo."""

from __future__ import annotations

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

from edge_actors.config import load_config
from edge_actors.drift.reference import load_reference, validate_against_model
from tests.conftest import REPO, unique_instance

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
    assert rd.status_line(3, 200, None) == "[     3s]    200 pred/s | agent not answering"
    line = rd.status_line(5, 199.6, {"state": "running", "workers": {}})
    assert line == (
        "[     5s]    200 pred/s | drift: - | outbox - rec | uploaded - obj / - rec | restarts 0"
    )
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
    assert rd.status_line(7, 10, status) == (
        "[     7s]     10 pred/s | drift: sqft, price | outbox 12 rec | "
        "uploaded 1 obj / 3 rec | restarts 3 | agent stopping"
    )
    status["workers"]["drift"]["stats"]["features"] = {"sqft": {"state": "ok"}}
    assert rd.drift_summary(status) == "no drift"
    assert rd.drift_summary({"workers": {"drift": {"state": "disabled"}}}) == "off"
    assert rd.drift_summary({"workers": {"drift": {"stats": None}}}) == "-"


def _demo_config(d: Path, instance: str, **extra: Any) -> Path:
    model = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["model"]
    cfg = {
        "instance": instance,
        "run_dir": str(d / "run"),
        "data_dir": str(d / "data"),
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


def _demo(config: Path, *args: str, timeout: float = 90) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / "run_demo.py"), "-c", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


@pytest.mark.slow
def test_run_demo_for_a_few_seconds(short_dir: Path) -> None:
    instance = unique_instance()
    config = _demo_config(short_dir, instance)
    proc = _demo(config, "--duration", "6")
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    log_path = short_dir / "data" / "agent.log"
    assert out.splitlines()[0].endswith(f"log: {log_path}")
    rates = [int(m.group(1)) for m in re.finditer(r"^\[\s*\d+s\]\s+(\d+) pred/s \| ", out, re.M)]
    assert len(rates) >= 5, out
    assert max(rates) > 0 and sum(r > 100 for r in rates) >= 4, out
    assert "drift: off" in out
    assert "agent exited with code 0" in out
    assert log_path.exists() and "supervisor pid" in log_path.read_text()
    assert _segments(instance) == []


@pytest.mark.slow
def test_run_demo_stops_cleanly_on_sigint(short_dir: Path) -> None:
    instance = unique_instance()
    config = _demo_config(short_dir, instance)
    proc = _demo(config)
    try:
        assert proc.stdout is not None
        # Wait for the first status line, then press "Ctrl-C".
        for line in proc.stdout:
            if "pred/s" in line and line.startswith("["):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert "model stopped:" in out and "agent exited with code 0" in out
    assert _segments(instance) == []


@pytest.mark.slow
def test_run_demo_reports_an_agent_that_dies(short_dir: Path) -> None:
    # run_dir below a regular file: the agent cannot open its socket and exits.
    (short_dir / "blocker").write_text("")
    instance = unique_instance()
    config = _demo_config(short_dir, instance, run_dir=str(short_dir / "blocker" / "run"))
    proc = _demo(config, "--duration", "30")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "run_demo: the agent did not open its control socket (exit code" in err
    assert "Last lines of" in err
    assert _segments(instance) == []
