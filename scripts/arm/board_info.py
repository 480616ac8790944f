"""What a board (or an emulated root) is, and what its slow steps cost; prints ONE JSON object.

    python scripts/arm/board_info.py

The fence row chosen for this interpreter and its kind; the time to import the
producer (what the ML app pays); the drift worker's set-up (reference load and
calibrated thresholds, default config) and the cost of a drift step: 2,000
records through both detectors (a check every ``check_frequency``), scaled to
a full lane read (``READ_BATCH``), what the worker does between two heartbeats.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def timed_import(module: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=REPO)
    return time.perf_counter() - t0


def main() -> None:
    import numpy as np
    import yaml

    from edge_actors import fence
    from edge_actors.config import parse_config
    from edge_actors.workers import drift as drift_worker

    out: dict[str, Any] = {
        "machine": platform.machine(),
        "at_platform": fence._at_platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fence_isa": fence.fence_isa(),
        "fence_kind": fence.fence_kind(),
        "fence_asm": fence.FENCES[fence.fence_isa()].asm
        if fence.fence_isa() in fence.FENCES
        else "",
    }
    out["import_python_s"] = round(timed_import("sys"), 2)
    out["import_producer_s"] = round(timed_import("edge_actors.producer"), 2)
    data = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        data["data_dir"] = tmp
        data["run_dir"] = tmp
        cfg = parse_config(data, REPO / "configs", "default.yaml")
        a, b = socket.socketpair()
        w = drift_worker.DriftWorker(cfg, a)
        t0, c0 = time.perf_counter(), time.process_time()
        w.setup()
        out["drift_setup_s"] = round(time.perf_counter() - t0, 2)
        # CPU seconds too: on a shared host the wall time is mostly waiting for a core.
        out["drift_setup_cpu_s"] = round(time.process_time() - c0, 2)
        assert not w.error, w.error
        rng = np.random.default_rng(0)
        # 2,000 records (20 checks at the default cadence): the per-check cost; a
        # full step is READ_BATCH records per lane, READ_BATCH / check_frequency checks.
        n = 2_000
        rows = np.column_stack(
            [
                rng.integers(1, 6, n),
                rng.integers(1, 4, n),
                rng.normal(1800, 400, n),
                rng.uniform(0, 80, n),
                rng.normal(400_000, 50_000, n),
                rng.uniform(0.8, 1.0, n),
            ]
        ).astype(np.float64)
        t0, c0 = time.perf_counter(), time.process_time()
        for g in w.groups:
            g.det.update(rows[:, g.cols], 0, budget=10.0)
        step = time.perf_counter() - t0
        cpu = time.process_time() - c0
        out["drift_step_cpu_s"] = round(cpu, 3)
        checks = n // cfg.drift_detection.check_frequency
        out["drift_check_cpu_ms"] = round(cpu / checks * 1000, 2)
        out["drift_step_records"] = n
        out["drift_step_s"] = round(step, 3)
        out["drift_check_ms"] = round(step / checks * 1000, 2)
        out["drift_full_step_s"] = round(step * drift_worker.READ_BATCH / n, 1)
        a.close()
        b.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
