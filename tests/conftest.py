"""Shared fixtures: config files, a real supervisor process, a real S3 endpoint on loopback."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

# CI must be reproducible: the same examples every run (a failure found locally
# by random exploration is a real bug, fixed and kept as an explicit test).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

try:  # moto is not installed in the 3.13 venv that runs only the ring tests
    from tests.s3_server import s3_bucket, s3_server  # noqa: F401
except ImportError:
    pass

from edge_actors import shm  # noqa: E402
from tests.helpers_ring import LANE_INPUTS, LANE_OUTPUTS, MakeLane, Segments  # noqa: E402
from tests.helpers_ring import PREFIX as RING_TEST_PREFIX  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
_counter = itertools.count()

#: Inputs/outputs of the small model most integration tests declare.
MODEL = {
    "name": "house",
    "inputs": ["bedrooms", "bathrooms", "sqft", "age"],
    "outputs": ["price", "confidence"],
}


def unique_instance() -> str:
    """An instance name no other test (or parallel run) uses: <= 16 chars."""
    return f"t{os.getpid() % 100000}x{next(_counter)}"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, recursively for dicts."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory path (Unix socket paths are limited to 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="ea"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_config(short_dir: Path) -> Callable[..., Path]:
    """Write a test config (fast intervals, small rings) with overrides; returns its path."""

    def make(extra: dict[str, Any] | None = None, name: str = "config.yaml") -> Path:
        base: dict[str, Any] = {
            "instance": unique_instance(),
            "device_id": "test-device",
            "run_dir": str(short_dir / "run"),
            "data_dir": str(short_dir / "data"),
            "model": MODEL,
            "system": {"sampling_interval_seconds": 0.2},
            "model_logging": {"buffer_size": 4096},
            "telemetry": {"upload_interval_seconds": 0.5, "max_batch_size": 1000},
            "storage": {"type": "local"},
            "supervisor": {
                "heartbeat_interval_seconds": 0.1,
                # Generous: at a load of 15-20 on 2 cores a busy worker's heartbeat
                # can be seconds late, and a spurious kill fails unrelated tests.
                # The heartbeat tests set their own short limit.
                "heartbeat_timeout_seconds": 15.0,
                # Tests wait on worker stats: fresh ones sooner than every 2 s.
                "stats_interval_seconds": 0.5,
                "memory_check_interval_seconds": 0.2,
                "restart_backoff_initial_seconds": 0.05,
                "restart_backoff_max_seconds": 0.5,
                "stop_grace_seconds": 1.0,
                "shutdown_timeout_seconds": 10.0,
            },
        }
        cfg = deep_merge(base, extra or {})
        path = short_dir / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def cli(
    *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edge_actors ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "edge_actors", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


class AgentProcess:
    """A real ``edge-actors run`` process for one config."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.cfg = yaml.safe_load(config.read_text())
        self.log_path = config.parent / f"agent-{next(_counter)}.log"
        self.env = {**os.environ, "EDGE_ACTORS_DEBUG": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> AgentProcess:
        """Start the supervisor; with ``wait``, until every enabled worker is running."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_actors", "run", "-c", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=REPO,
        )
        if wait:
            self.wait_running()
        return self

    @property
    def pid(self) -> int:
        """Supervisor pid."""
        assert self.proc is not None
        return self.proc.pid

    def request(self, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One control-socket request."""
        from edge_actors import control

        return control.request(self.cfg["run_dir"], self.cfg["instance"], msg, timeout)

    def status(self) -> dict[str, Any]:
        """The live status dict."""
        return self.request({"op": "status"})["status"]  # type: ignore[no-any-return]

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll status until ``pred`` holds; fail with the log on timeout."""
        from edge_actors import control

        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited {self.proc.returncode}:\n{self.log()}")
            try:
                last = self.status()
                if pred(last):
                    return last
            except control.ControlError:
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"condition not met in {timeout}s; last status:\n"
            f"{json.dumps(last, indent=1)[:4000]}\nlog:\n{self.log()}"
        )

    def wait_running(self, timeout: float = 20.0) -> dict[str, Any]:
        """Until every enabled worker has reported ready."""
        return self.wait_for(
            lambda s: (
                s["state"] == "running"
                and all(w["state"] in ("running", "disabled") for w in s["workers"].values())
            ),
            timeout,
        )

    def worker_pid(self, name: str) -> int:
        """Current pid of a worker."""
        pid = self.status()["workers"][name]["pid"]
        assert pid, f"{name} has no pid"
        return int(pid)

    def log(self) -> str:
        """Everything the supervisor printed so far."""
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            raise AssertionError(f"supervisor did not stop in {timeout}s:\n{self.log()}") from None
        self._log.close()
        return code


@pytest.fixture
def agent() -> Iterator[Callable[..., AgentProcess]]:
    """Factory of supervisor processes, all stopped (and killed if need be) at teardown."""
    started: list[AgentProcess] = []

    def make(config: Path, env: dict[str, str] | None = None, start: bool = True) -> AgentProcess:
        a = AgentProcess(config, env)
        started.append(a)
        if start:
            a.start()
        return a

    yield make
    for a in started:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        instance = a.cfg["instance"]
        for name in os.listdir("/dev/shm"):
            if name.startswith(f"ea_{instance}_"):
                os.unlink(f"/dev/shm/{name}")


@pytest.fixture
def segs() -> Iterator[Segments]:
    """Segments made by a test, unlinked after it; fails if any was left."""
    s = Segments()
    yield s
    assert s.cleanup() == []


@pytest.fixture(autouse=True, scope="module")
def _nothing_left_in_dev_shm() -> Iterator[None]:
    """Every test module cleans up the ring segments it made."""
    yield
    assert shm.list_names(RING_TEST_PREFIX) == [], "test segments left in /dev/shm"


@pytest.fixture
def lane(segs: Segments, short_dir: Path) -> Iterator[MakeLane]:
    """Factory: a producer attached (without a supervisor) to a ring made here."""
    import socket

    from edge_actors.producer import Producer
    from edge_actors.ring import Ring

    made: list[tuple[Any, Any, socket.socket]] = []

    def make(
        inputs: Any = LANE_INPUTS, outputs: Any = LANE_OUTPUTS, cap: int = 1024
    ) -> tuple[Producer, Ring]:
        p = Producer(short_dir, "t", inputs, outputs, start=False)
        ring = Ring.create(segs.new(), p.dtype, cap, 2)
        ours, theirs = socket.socketpair()
        p._attach(ours, {"lane": ring.name, **p.schema()})
        assert p.attached
        made.append((p, ring, theirs))
        return p, ring

    yield make
    for p, ring, theirs in made:
        p.close()
        ring.close()
        theirs.close()
