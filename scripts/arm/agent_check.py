"""A short agent run on a (slow, emulated) board; prints ONE JSON object.

    python scripts/arm/agent_check.py [--records 10000]

Start a real ``edge-actors run`` (default config, local sink, drift on) and
time it to READY=1; two producer processes log ``--records`` records between
them (each record names its producer and sequence number); meanwhile every
worker is killed with SIGKILL once and the time until its replacement runs is
measured; once the sink holds everything, SIGTERM and time the stop; then
audit the local sink: every record delivered exactly once. Exit status 0 only
if the audit passes and the agent stopped with status 0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from agentlib import Agent  # noqa: E402

from edge_actors import control  # noqa: E402

WORKERS = ("sampler", "drift", "uploader")

PRODUCER = r"""
import json, sys, time
from edge_actors.producer import Producer
run_dir, instance, ident, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = Producer(run_dir, instance, ["bedrooms", "bathrooms", "sqft", "age"], ["price", "confidence"])
if not p.wait_attached(120):
    sys.exit("producer %d: not attached in 120 s" % ident)
for i in range(n):
    p.log([ident, 2, 1500.0, float(i)], [300000.0, 0.9])
    if i % 10 == 9:
        time.sleep(0.02)  # ~10 s of logging: the kills happen while records flow
print(json.dumps(p.stats()), flush=True)
p.close()
"""


#: The oldest heartbeat seen per worker while polling status: how close a slow board
#: comes to ``supervisor.heartbeat_timeout_seconds``.
MAX_HB_AGE: dict[str, float] = {}


def status(agent: Agent) -> dict[str, Any]:
    reply = control.request(agent.cfg["run_dir"], agent.cfg["instance"], {"op": "status"})
    st = dict(reply["status"])
    for name, w in st["workers"].items():
        if w.get("heartbeat_age_s") is not None and w.get("state") == "running":
            MAX_HB_AGE[name] = max(MAX_HB_AGE.get(name, 0.0), float(w["heartbeat_age_s"]))
    return st


def wait(agent: Agent, pred: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = status(agent)
            if pred(st):
                return st
        except control.ControlError:
            pass
        time.sleep(0.05)
    raise TimeoutError((agent.dir / "agent.log").read_text()[-3000:])


def _drain(sock: socket.socket) -> None:
    sock.settimeout(None)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def sink_records(sink: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted((sink / "model").rglob("*.ndjson.gz")) if (sink / "model").exists() else []:
        with gzip.open(path, "rt") as fh:
            out += [json.loads(line) for line in fh if line.strip()]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--timeout", type=float, default=900.0, help="for each wait")
    ap.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=0.0,
        help="supervisor.heartbeat_timeout_seconds (0: the config's default, 10 s). Drift "
        "steps are bounded by time and heartbeat between slices, so a slow board must "
        "survive the default",
    )
    args = ap.parse_args()
    sup: dict[str, Any] = {"max_restarts": 100}
    if args.heartbeat_timeout:
        sup["heartbeat_timeout_seconds"] = args.heartbeat_timeout
    agent = Agent(telemetry={"upload_interval_seconds": 2, "max_batch_size": 5000}, supervisor=sup)
    out: dict[str, Any] = {"records": args.records}
    out["heartbeat_timeout_s"] = args.heartbeat_timeout or "default"
    sink = Path(agent.cfg["data_dir"]) / "sink"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(agent.dir / "notify.sock"))
    notify.settimeout(args.timeout)
    env = {**os.environ, "NOTIFY_SOCKET": str(agent.dir / "notify.sock"), "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    agent.proc = subprocess.Popen(
        [sys.executable, "-m", "edge_actors", "run", "-c", str(agent.path)],
        stdout=open(agent.dir / "agent.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    producers: list[subprocess.Popen[str]] = []
    try:
        while "READY=1" not in notify.recv(4096).decode().split("\n"):
            pass
        out["ready_s"] = round(time.perf_counter() - t0, 2)
        # Keep reading like systemd does: a queue left full (10 datagrams, STATUS
        # every 10 s) is what hung the supervisor before sd_notify stopped blocking.
        threading.Thread(target=_drain, args=(notify,), daemon=True).start()
        st = wait(agent, lambda s: all(s["workers"][w]["state"] == "running" for w in WORKERS), 60)
        out["all_running_s"] = round(time.perf_counter() - t0, 2)
        per = args.records // 2
        counts = [per, args.records - per]
        for ident, n in enumerate(counts, start=1):
            cmd = [sys.executable, "-c", PRODUCER, agent.cfg["run_dir"], agent.cfg["instance"]]
            producers.append(
                subprocess.Popen(
                    [*cmd, str(ident), str(n)], stdout=subprocess.PIPE, text=True, env=env
                )
            )
        # Kill while both producers are logging (their lanes appear when attached).
        wait(agent, lambda s: sum(r["kind"] == "lane" for r in s["rings"]) >= 2, args.timeout)
        restart: dict[str, float] = {}
        for name in WORKERS:
            old = status(agent)["workers"][name]["pid"]
            t1 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            wait(
                agent,
                lambda s, n=name, o=old: (
                    s["workers"][n]["pid"] not in (None, o)
                    and s["workers"][n]["state"] == "running"
                ),
                args.timeout,
            )
            restart[name] = round(time.perf_counter() - t1, 2)
        out["restart_s"] = restart
        stats = []
        for p in producers:
            text, _ = p.communicate(timeout=args.timeout)
            stats.append(json.loads(text.strip().splitlines()[-1]) if p.returncode == 0 else None)
        out["producer_written"] = [s and s["written"] for s in stats]
        out["producer_dropped"] = [s and s["dropped_total"] for s in stats]
        t2 = time.perf_counter()
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and len(sink_records(sink)) < args.records:
            time.sleep(0.5)
        out["drain_s"] = round(time.perf_counter() - t2, 2)
        st = status(agent)
        out["restarts"] = {w: st["workers"][w]["restarts"] for w in WORKERS}
        out["restart_reasons"] = {w: st["workers"][w]["restart_reasons"] for w in WORKERS}
        drift = st["workers"]["drift"].get("stats") or {}
        # The drift worker's own figures: its longest step (bounded by time), how
        # far it got, and the check cadence it stretched to when behind.
        out["drift"] = {
            k: drift.get(k)
            for k in (
                "max_step_seconds",
                "records",
                "configured_check_frequency",
                "effective_check_frequency",
            )
        }
        upl = st["workers"]["uploader"].get("stats") or {}
        out["uploader"] = {k: upl.get(k) for k in ("max_step_seconds", "read_limit")}
        out["sampler_unavailable"] = sorted(
            (st["workers"]["sampler"].get("stats") or {}).get("unavailable") or {}
        )
        out["max_heartbeat_age_s"] = {k: round(v, 2) for k, v in MAX_HB_AGE.items()}
        t3 = time.perf_counter()
        agent.proc.send_signal(signal.SIGTERM)
        out["stop_rc"] = agent.proc.wait(args.timeout)
        out["stop_s"] = round(time.perf_counter() - t3, 2)
    finally:
        for p in producers:
            if p.poll() is None:
                p.kill()
        if agent.proc.poll() is None:
            agent.proc.kill()
    recs = sink_records(sink)
    seen = Counter((int(r["inputs"]["bedrooms"]), int(r["inputs"]["age"])) for r in recs)
    expected = {(ident, i) for ident, n in enumerate(counts, start=1) for i in range(n)}
    out["delivered"] = len(set(seen) & expected)
    out["missing"] = len(expected - set(seen))
    out["duplicates"] = sum(c - 1 for c in seen.values())
    out["ok"] = (
        out["missing"] == 0
        and out["duplicates"] == 0
        and len(seen) == len(expected)
        and out["stop_rc"] == 0
        and all(r.get("signal", 0) >= 1 for r in out["restart_reasons"].values())
    )
    # Restarts for anything but our SIGKILLs (heartbeat, memory) are what a slow
    # board hits: reported, and the log lines that say why.
    out["extra_restarts"] = {
        w: {k: v - (k == "signal") for k, v in r.items() if v - (k == "signal")}
        for w, r in out["restart_reasons"].items()
        if sum(r.values()) > 1
    }
    if not out["ok"] or out["extra_restarts"]:
        log = (agent.dir / "agent.log").read_text().splitlines()
        out["log"] = [ln for ln in log if "ERROR" in ln or "WARNING" in ln][-30:] or log[-30:]
    print(json.dumps(out))
    agent.stop()
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
