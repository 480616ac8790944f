"""Helpers for benchmarks that run a real agent: a temp config, start, status, stop."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def machine() -> dict[str, Any]:
    """Where a figure was measured."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def run_json(script: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` with ``args``; its last stdout line as JSON, or an error dict."""
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=timeout,
    )
    if res.returncode != 0:
        return {"error": res.stderr[-2000:], "returncode": res.returncode}
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


class Agent:
    """A real ``edge-actors run`` on a copy of a config with private run/data dirs."""

    def __init__(self, base: str = "configs/default.yaml", **overrides: Any) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="eab"))
        cfg = yaml.safe_load((REPO / base).read_text())
        ref = cfg.get("drift_detection", {}).get("reference_data_path")
        if ref and not os.path.isabs(ref):
            cfg["drift_detection"]["reference_data_path"] = str((REPO / base).parent / ref)
        cfg["instance"] = f"b{os.getpid() % 100000}"
        cfg["run_dir"] = str(self.dir / "run")
        cfg["data_dir"] = str(self.dir / "data")
        for key, value in overrides.items():
            section, _, leaf = key.partition("__")
            if leaf:
                cfg.setdefault(section, {})[leaf] = value
            else:
                cfg[section] = value
        self.cfg = cfg
        self.path = self.dir / "config.yaml"
        self.path.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: socket.socket | None = None

    def start(self, notify: bool = False) -> float:
        """Start; returns seconds to READY=1 (sd_notify) when ``notify``."""
        env = dict(os.environ)
        if notify:
            self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = str(self.dir / "notify.sock")
            self.notify.bind(path)
            env["NOTIFY_SOCKET"] = path
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_actors", "run", "-c", str(self.path)],
            stdout=open(self.dir / "agent.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        if notify:
            assert self.notify is not None
            self.notify.settimeout(30)
            while True:
                msg = self.notify.recv(4096).decode()
                if "READY=1" in msg.split("\n"):
                    return time.perf_counter() - t0
        self.wait(lambda s: s["state"] == "running")
        return time.perf_counter() - t0

    def status(self) -> dict[str, Any]:
        """Live status."""
        from edge_actors import control

        return control.request(self.cfg["run_dir"], self.cfg["instance"], {"op": "status"})[
            "status"
        ]

    def wait(self, pred: Any, timeout: float = 30.0, poll: float = 0.01) -> dict[str, Any]:
        """Poll status until ``pred``."""
        from edge_actors import control

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = self.status()
                if pred(st):
                    return st
            except control.ControlError:
                pass
            time.sleep(poll)
        raise TimeoutError((self.dir / "agent.log").read_text()[-3000:])

    def pids(self) -> list[int]:
        """Supervisor and worker pids."""
        assert self.proc is not None
        st = self.status()
        return [self.proc.pid] + [w["pid"] for w in st["workers"].values() if w["pid"]]

    def stop(self) -> None:
        """SIGTERM, wait, remove the temp dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
