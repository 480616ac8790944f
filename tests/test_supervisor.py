"""The supervisor with real worker processes: restarts, budgets, heartbeats, adoption, shutdown."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from edge_actors.producer import Producer
from edge_actors.ring import Ring
from tests.conftest import MODEL, cli

ONLY_SAMPLER = {"workers": {"drift": {"enabled": False}, "uploader": {"enabled": False}}}


def _segments(instance: str) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"ea_{instance}_")]


def _sys_written(status: dict[str, Any]) -> int:
    return next(r["written"] for r in status["rings"] if r["kind"] == "system")


def test_start_status_and_clean_sigterm(make_config, agent) -> None:
    a = agent(make_config(ONLY_SAMPLER))
    st = a.wait_for(lambda s: _sys_written(s) >= 2)
    assert st["workers"]["sampler"]["state"] == "running"
    assert st["workers"]["drift"]["state"] == "disabled"
    inst = a.cfg["instance"]
    assert _segments(inst), "rings exist while running"
    out = cli("status", "-c", str(a.config))
    assert out.returncode == 0, out.stderr
    assert "sampler" in out.stdout and "running" in out.stdout
    assert a.stop() == 0
    assert _segments(inst) == []
    run_dir = Path(a.cfg["run_dir"])
    assert list(run_dir.iterdir()) == [], "socket and pid file removed"
    out = cli("status", "-c", str(a.config))
    assert out.returncode == 4
    assert "not running" in out.stdout


def test_drift_worker_yields_the_cpu_to_the_uploader(make_config, agent) -> None:
    # When both want more CPU than the box has, a late drift check costs nothing
    # and a late ring read loses records: the drift worker runs 5 nicer.
    a = agent(make_config())
    a.wait_for(lambda s: all(s["workers"][w]["state"] == "running" for w in ("drift", "uploader")))
    sup = psutil.Process(a.proc.pid).nice()
    assert psutil.Process(a.worker_pid("drift")).nice() == min(sup + 5, 19)
    assert psutil.Process(a.worker_pid("uploader")).nice() == sup
    assert psutil.Process(a.worker_pid("sampler")).nice() == sup


def test_sigkill_worker_is_restarted_and_ring_survives(make_config, agent) -> None:
    a = agent(make_config(ONLY_SAMPLER))
    before = a.wait_for(lambda s: _sys_written(s) >= 3)
    old = a.worker_pid("sampler")
    os.kill(old, signal.SIGKILL)
    st = a.wait_for(
        lambda s: (
            s["workers"]["sampler"]["pid"] not in (None, old)
            and s["workers"]["sampler"]["state"] == "running"
        )
    )
    w = st["workers"]["sampler"]
    assert w["restarts"] == 1
    assert w["restart_reasons"] == {"signal": 1}
    assert "SIGKILL" in w["last_exit"]
    # The ring outlived the worker: its count continues from where it was.
    after = a.wait_for(lambda s: _sys_written(s) > _sys_written(before) + 2)
    assert _sys_written(after) > _sys_written(before)
    assert "restart #1" in a.log()


def test_memory_budget_kills_only_the_leaker(make_config, agent) -> None:
    cfg = make_config(
        {
            "workers": {
                "sampler": {"memory_limit_mb": 60},
                "drift": {"enabled": False},
                "uploader": {"enabled": False},
            }
        }
    )
    a = agent(cfg)
    st = a.wait_for(lambda s: s["workers"]["sampler"]["memory_mb"] is not None)
    assert st["workers"]["sampler"]["memory_mb"] < 60
    old = a.worker_pid("sampler")
    a.request({"op": "debug", "worker": "sampler", "action": "alloc", "mb": 100})
    t0 = time.monotonic()
    st = a.wait_for(
        lambda s: (
            s["workers"]["sampler"]["restart_reasons"].get("memory") == 1
            and s["workers"]["sampler"]["state"] == "running"
        ),
        timeout=15,
    )
    # One check interval (0.2 s) plus the grace period (1 s), with slack for a busy box.
    assert time.monotonic() - t0 < 6
    assert st["workers"]["sampler"]["pid"] != old
    assert "over its 60 MB budget" in a.log()


def test_memory_budget_leaves_other_workers_alone(make_config, agent) -> None:
    # Two live workers: the sampler leaks, the uploader must keep its pid.
    pytest.importorskip("edge_actors.workers.uploader")
    cfg = make_config(
        {"workers": {"sampler": {"memory_limit_mb": 60}, "drift": {"enabled": False}}}
    )
    a = agent(cfg)
    up = a.worker_pid("uploader")
    a.request({"op": "debug", "worker": "sampler", "action": "alloc", "mb": 100})
    a.wait_for(lambda s: s["workers"]["sampler"]["restart_reasons"].get("memory") == 1)
    assert a.worker_pid("uploader") == up


#: A short heartbeat limit, for the tests of what happens past it.
SHORT_HEARTBEAT = {"supervisor": {"heartbeat_timeout_seconds": 2.0}}


def test_sigstop_is_killed_after_heartbeat_timeout(make_config, agent) -> None:
    a = agent(make_config({**ONLY_SAMPLER, **SHORT_HEARTBEAT}))
    old = a.worker_pid("sampler")
    os.kill(old, signal.SIGSTOP)
    # ">= 1": on a loaded machine its successor may be late too; what counts is
    # that the stopped one was killed for its silence and a new one runs.
    st = a.wait_for(
        lambda s: (
            s["workers"]["sampler"]["restart_reasons"].get("heartbeat", 0) >= 1
            and s["workers"]["sampler"]["state"] == "running"
        ),
        timeout=15,
    )
    assert st["workers"]["sampler"]["pid"] != old
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    assert f"sampler (pid {old}) silent for" in a.log()


def test_crash_loop_makes_the_supervisor_give_up(make_config, agent) -> None:
    cfg = make_config(
        {**ONLY_SAMPLER, "supervisor": {"max_restarts": 3, "restart_period_seconds": 30}}
    )
    a = agent(cfg)
    a.request({"op": "debug", "worker": "sampler", "action": "crash_on_start"})
    a.request({"op": "debug", "worker": "sampler", "action": "crash"})
    assert a.proc is not None
    code = a.proc.wait(30)
    assert code == 3
    log = a.log()
    assert "giving up: more than 3 restarts" in log
    assert "sampler" in log.split("giving up")[-1]
    assert _segments(a.cfg["instance"]) == []


def test_supervisor_kill9_no_orphans_and_readoption(make_config, agent) -> None:
    cfg = make_config(ONLY_SAMPLER)
    a = agent(cfg)
    st = a.wait_for(lambda s: _sys_written(s) >= 2)
    workers = [w["pid"] for w in st["workers"].values() if w["pid"]]
    run_dir, inst = a.cfg["run_dir"], a.cfg["instance"]
    p = Producer(run_dir, inst, MODEL["inputs"], MODEL["outputs"])
    try:
        assert p.wait_attached(5)
        for i in range(100):
            p.log([1, 2, 3, float(i)], [100.0, 0.5])
        lane = p.stats()["lane"]
        ring = Ring.attach(lane)
        epoch = ring.epoch
        ring.close()
        os.kill(a.pid, signal.SIGKILL)
        a.proc.wait(5)  # type: ignore[union-attr]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(psutil.pid_exists(w) for w in workers):
            time.sleep(0.05)
        alive = [
            w for w in workers if psutil.pid_exists(w) and psutil.Process(w).status() != "zombie"
        ]
        assert alive == [], "workers died with their supervisor"
        # The producer keeps writing while no supervisor runs...
        for i in range(100, 150):
            p.log([1, 2, 3, float(i)], [100.0, 0.5])
        # ...and a new supervisor re-adopts rings and lane; the producer re-attaches.
        b = agent(cfg)
        st2 = b.wait_for(lambda s: any(pr["lane"] == lane for pr in s["producers"]))
        lane_ring = next(r for r in st2["rings"] if r["name"] == lane)
        assert lane_ring["epoch"] == epoch
        assert lane_ring["written"] == 150
        assert _sys_written(st2) >= 2
        assert p.stats()["dropped_total"] == 0
        p.log([1, 2, 3, 4.0], [1.0, 1.0])
        assert b.wait_for(
            lambda s: next(r for r in s["rings"] if r["name"] == lane)["written"] == 151
        )
    finally:
        p.close()


def test_stop_command_and_lane_reclaimed(make_config, agent) -> None:
    a = agent(make_config(ONLY_SAMPLER))
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    assert p.wait_attached(5)
    p.log([1, 2, 3, 4], [5, 6])
    st = a.status()
    assert len(st["producers"]) == 1 and st["producers"][0]["pid"] == os.getpid()
    p.close()
    # No consumer is enabled, so the retired lane counts as drained at once.
    a.wait_for(lambda s: not any(r["kind"] == "lane" for r in s["rings"]))
    out = cli("stop", "-c", str(a.config))
    assert out.returncode == 0, out.stderr
    assert a.proc is not None and a.proc.wait(10) == 0


def test_second_supervisor_for_same_instance_is_refused(make_config, agent) -> None:
    cfg = make_config(ONLY_SAMPLER)
    agent(cfg)
    out = cli("run", "-c", str(cfg), timeout=20)
    assert out.returncode == 4
    assert "already running" in out.stderr


def test_hard_memory_limit_turns_a_runaway_into_a_restart(make_config, agent) -> None:
    cfg = make_config(
        {
            "workers": {
                "sampler": {"memory_limit_mb": 50},
                "drift": {"enabled": False},
                "uploader": {"enabled": False},
            },
            "supervisor": {"hard_memory_limit": True, "memory_check_interval_seconds": 30},
        }
    )
    a = agent(cfg)
    old = a.worker_pid("sampler")
    # 400 MB at once: far past budget + margin; the periodic check is 30 s away.
    a.request({"op": "debug", "worker": "sampler", "action": "alloc", "mb": 400})
    st = a.wait_for(
        lambda s: (
            s["workers"]["sampler"]["pid"] not in (None, old)
            and s["workers"]["sampler"]["state"] == "running"
        ),
        timeout=10,
    )
    assert st["workers"]["sampler"]["restart_reasons"] == {"exit": 1}
    assert "MemoryError" in a.log() or "crashed" in a.log()


def test_systemd_notify_ready_watchdog_and_status(make_config, agent, short_dir) -> None:
    import socket as _socket

    path = str(short_dir / "notify")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    try:
        agent(
            make_config(ONLY_SAMPLER),
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"},
            start=False,
        ).start(wait=False)
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            any("READY=1" in m for m in seen) and sum("WATCHDOG=1" in m for m in seen) >= 2
        ):
            seen.append(sock.recv(4096).decode())
    finally:
        sock.close()
    ready = next(m for m in seen if "READY=1" in m)
    assert "STATUS=" in ready and "sampler=running" in ready
    assert sum("WATCHDOG=1" in m for m in seen) >= 2


def test_producer_attaches_by_itself_once_a_supervisor_starts(make_config, agent) -> None:
    cfg = make_config(ONLY_SAMPLER)
    import yaml

    c = yaml.safe_load(cfg.read_text())
    p = Producer(c["run_dir"], c["instance"], MODEL["inputs"], MODEL["outputs"])
    try:
        p.log([1, 2, 3, 4], [5, 6])
        assert p.stats()["pending"] == 1  # no supervisor yet: held, no raise
        a = agent(cfg)
        t0 = time.monotonic()
        assert p.wait_attached(5)
        # It retries every 0.2 s: well within a second of the supervisor being up.
        assert time.monotonic() - t0 < 2.0
        p.log([1, 2, 3, 4], [5, 6])
        # The held record went first, then the new one.
        a.wait_for(lambda s: any(r["kind"] == "lane" and r["written"] == 2 for r in s["rings"]))
    finally:
        p.close()


def test_bad_reference_keeps_the_other_workers_running(make_config, agent, short_dir) -> None:
    bad = short_dir / "ref.json"
    bad.write_text('{"price": [1, 2, "three"]}')
    a = agent(make_config({"drift_detection": {"reference_data_path": str(bad)}}))
    st = a.wait_for(lambda s: s["workers"]["drift"]["stats"].get("error"))
    err = st["workers"]["drift"]["stats"]["error"]
    assert "ref.json" in err and "price" in err
    assert all(w["state"] == "running" for w in st["workers"].values())
    out = cli("status", "-c", str(a.config))
    assert "error:" in out.stdout and "price" in out.stdout


def test_connect_imports_neither_scipy_nor_boto3(make_config) -> None:
    import subprocess
    import sys

    cfg = make_config(ONLY_SAMPLER)
    code = (
        "import sys, edge_actors\n"
        f"p = edge_actors.connect({str(cfg)!r})\n"
        "p.log([1, 2, 3, 4], [5, 6])\n"
        "heavy = [m for m in ('scipy', 'boto3', 'botocore', 'pandas') if m in sys.modules]\n"
        "print(heavy, p.stats()['pending'])\n"
        "p.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] 1"


def test_a_stopped_worker_never_blocks_the_supervisor(make_config, agent) -> None:
    # The app flushes each telemetry batch (EdgeMonitor.send_telemetry_batch)
    # while the uploader has stopped reading its channel (SIGSTOP'd, hung):
    # the channel's queue fills after a few hundred commands. The supervisor
    # must keep answering, and still kill and restart the silent worker on time.
    import socket as _socket

    from edge_actors import control

    a = agent(make_config({"workers": {"drift": {"enabled": False}}, **SHORT_HEARTBEAT}))
    old = a.worker_pid("uploader")
    os.kill(old, signal.SIGSTOP)
    n = 1000
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(control.socket_path(a.cfg["run_dir"], a.cfg["instance"])))
        s.sendall(b"".join(control.encode({"op": "flush", "batch_id": f"b{i}"}) for i in range(n)))
        replies = b""
        try:
            while replies.count(b"\n") < n:
                chunk = s.recv(65536)
                assert chunk, "the supervisor closed the connection"
                replies += chunk
        except TimeoutError:
            got = replies.count(b"\n")
            raise AssertionError(f"the supervisor stopped answering after {got} of {n}") from None
    assert all(control.decode(line)["ok"] for line in replies.splitlines())
    st = a.wait_for(
        lambda s: (
            s["workers"]["uploader"]["restart_reasons"].get("heartbeat", 0) >= 1
            and s["workers"]["uploader"]["state"] == "running"
        ),
        timeout=15,
    )
    assert st["workers"]["uploader"]["pid"] != old
    # Pending flushes were superseded by the latest one, not queued behind it.
    assert st["workers"]["uploader"]["commands_dropped"] > 0
    assert a.log().count(f"uploader (pid {old}) silent for") == 1, "logged once per kill"
