"""What the agent costs the box per record, against in-process whylogs; prints ONE JSON object.

    python benchmarks/box_cost.py [--quick] [--seconds S] [--rate R] [--records N]
        [--profile-seconds P] [--no-steady] [--no-whylogs] [--no-one-core]
        [--nice N] [--whylogs-python PY]

A real ``edge-actors run`` on ``configs/default.yaml`` (run_dir and data_dir
in a temp dir, the local sink) with the model of the other benchmarks: 8
inputs + 1 output (``f0..f7``, ``y``) and a temp JSON reference of 10,000
standard-normal values per field, so the drift worker tests every field.
Everything else is the default config (lane of 65,536 slots, check every 100
records, upload every 10 s in objects of 5,000 records, ``synchronous: FULL``).

* ``steady``: one producer process calls ``Producer.log(inputs, outputs)`` once
  per prediction, paced at ``--rate`` (10,000/s) in 10 ms ticks. After
  ``--warmup`` s, the CPU time (psutil ``cpu_times`` user + system) of the
  supervisor and of each worker over ``--seconds`` (60; 15 with ``--quick``)
  as a % of one core; the sum of their PSS (``memory_full_info().pss``) at the
  end; the producer thread's own CPU inside ``log()``; the records each lane
  reader lost in the window and its CPU per record it consumed (a reader
  that falls behind handles fewer records, so its share of a core alone
  understates its cost); the outbox backlog (does shipping keep up?). Then the producer
  closes, the uploader is asked to flush, and the records are counted:
  ``logged`` (``log()`` calls) = ``delivered`` (distinct records in the
  sink's model objects, from the object keys' sequence ranges and checked
  against the objects' lines and lane sequence numbers) + ``dropped``
  (counted by the producer, or by the agent in its drops) + ``unaccounted``
  (target 0). Target: whole agent <= 5 % of one core.
* ``whylogs``: the baseline, in the same run, after the agent stopped: the
  same stream, same pacing, in one process that collects the rows and
  profiles them with whylogs' batch API (``DatasetProfile.track(pandas=df)``
  on a DataFrame of each second's rows; one profile for the whole run, as an
  application would keep it). CPU % of one core of the profiling calls
  (thread CPU time around DataFrame + ``track``) and of the whole process,
  over the same ``--seconds``. Figures: the ratio whylogs / agent (> 1: the
  agent is cheaper) and agent / whylogs. whylogs is a benchmark-only
  dependency (``pip install -e '.[bench]'``); without it this part reports
  why and the rest still runs.
* ``one_core``: the agent pinned to CPU 0 (``sched_setaffinity`` before it
  starts: every process and thread it forks inherits it), the producer and
  this script on the other CPUs. The producer offers ``log_batch`` records
  paced in 10 ms ticks at a rate stepped up (doubling from 10,000/s, then
  bisecting between the last rate kept up with and the first not, 3 times)
  for ``--step-seconds`` (10) per step on the same agent, the lane drained
  between steps. A step is kept up with when no record is lost by either lane
  reader (uploader: ring overrun, drift: ``lost``) and neither is more than
  half a lane behind at its end (they read every ~50 ms: further behind is
  falling behind). Reported: the highest such rate, every step, and the share
  of its CPU the agent actually got (the machine is shared: the load average
  is reported too), with the rate a whole core would carry at the same cost
  per record (an estimate). ``--nice -N`` raises the agent's priority.
* ``records`` (``--records N``, off by default: 0): a fresh agent, one
  producer writing ``log_batch`` of 4,096 rows as fast as the agent ingests
  (it stays at most half a lane ahead of the slower of the two lane readers,
  read from the lane header, and waits while the outbox backlog exceeds
  500,000 records so the shipper stays within the disk budget), N records
  in pushes of 100,000; the agent's PSS (and USS per
  process) at every 10 % of N and at the end, with the delivery count as in
  ``steady``. Targets: PSS <= 64 MB at N = 10 M; no growth from 1 M to 10 M
  (<= 2 MB, read noise).
* ``--profile-seconds P`` (off by default): a fresh agent under the steady
  stream, after the warm-up, sampled for P s by ``py-spy record
  --nonblocking`` (every agent process, 100 Hz, ``--format raw``): per
  process the top functions by self time (share of the busy samples where it
  is the innermost frame, samples in select/wait/sleep set apart), with their
  callers, and by inclusive time, under ``"profile"``. Samples are of
  threads not waiting, so they include time spent runnable on a busy machine
  and in I/O such as fsync. py-spy is in the ``bench`` extra; it needs ptrace
  (root or ``kernel.yama.ptrace_scope`` 0). Never part of a timed figure.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from agentlib import REPO, Agent, machine

from edge_actors import control

INPUTS = [f"f{i}" for i in range(8)]
OUTPUTS = ["y"]
N_REF = 10_000
TARGETS = {
    "agent_cpu_percent_of_one_core": 5.0,
    "unaccounted": 0,
    "pss_mb_after_10m": 64.0,
    "pss_growth_mb_1m_to_10m": 2.0,
}
#: Records mode: records per push, and the outbox backlog above which the
#: producer waits for the shipper (~40 MB of the default 100 MB budget at ~80 B a record).
PUSH_CHUNK = 100_000
MAX_BACKLOG = 500_000
#: Lane reader lines in a lane's header (topology: uploader 0, drift 1).
READERS = {"uploader": 0, "drift": 1}

# The producer side, in its own process (the ML application). Commands on
# stdin, one JSON reply per command on stdout:
#   rate R     offer R records/s from now on (0: pause), paced in 10 ms ticks
#   mark       counters now
#   push N     write N more records as fast as both lane readers take them
#   close      close the producer (its lane is retired and drained), final counters
FEEDER = r"""
import json, os, queue, sys, threading, time
import numpy as np
from edge_actors.producer import Producer
from edge_actors.ring import Ring
run_dir, instance, mode, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = Producer(run_dir, instance, [f"f{i}" for i in range(8)], ["y"])
attached = p.wait_attached(15)
rng = np.random.default_rng(seed)
pool = rng.normal(size=(1 << 16, 9))
rows = [(r[:8].tolist(), r[8:].tolist()) for r in pool[:8192]]
lane = Ring.attach(p.stats()["lane"]) if attached else None
cmds = queue.Queue()
def reader():
    for line in sys.stdin:
        cmds.put(line.split())
    cmds.put(["close"])
threading.Thread(target=reader, daemon=True).start()
logged = 0
cpu = 0.0  # this thread's CPU time inside log()/log_batch()
late = 0
pos = 0
def counters():
    st = p.stats()
    out = {"t": time.monotonic(), "logged": logged, "written": st["written"],
           "pending": st["pending"], "dropped": st["dropped"],
           "dropped_total": st["dropped_total"], "lost": st["lost"],
           "log_cpu_s": cpu, "late_ticks": late, "attached": attached}
    if lane is not None and not lane.retired:
        out["lane"] = {"name": lane.name, "capacity": lane.capacity, "write_seq": lane.write_seq,
                       "lines": [lane.consumer_line(k) for k in range(lane.n_consumers)],
                       "overrun": [lane.overrun(k) for k in range(lane.n_consumers)]}
    return out
def emit(d):
    sys.stdout.write(json.dumps(d) + "\n")
    sys.stdout.flush()
def write(k):
    global logged, pos, cpu
    c0 = time.thread_time()
    if mode == "log":
        for _ in range(k):
            i, o = rows[pos]
            p.log(i, o)
            pos = (pos + 1) & 8191
    else:
        while k > 0:
            n = min(k, 4096, len(pool) - pos)
            chunk = pool[pos:pos + n]
            p.log_batch(chunk[:, :8], chunk[:, 8:])
            pos = (pos + n) % len(pool)
            k -= n
            logged += n
        cpu += time.thread_time() - c0
        return
    cpu += time.thread_time() - c0
    logged += k
def push(n):
    cap = lane.capacity
    left = n
    while left > 0:
        seen = min(max(lane.consumer_line(k)["read_seq"], lane.consumer_line(k)["claim"])
                   for k in range(lane.n_consumers))
        room = cap // 2 - (lane.write_seq - seen)
        if room < 4096:
            time.sleep(0.002)
            continue
        k = min(left, room - room % 4096 if room >= 8192 else 4096)
        write(k)
        left -= k
rate = 0.0
t_rate = time.perf_counter()
sent_at_rate = 0
emit({"ready": attached})
while True:
    try:
        cmd = cmds.get(timeout=0.0 if rate > 0 else 0.5)
    except queue.Empty:
        cmd = None
    if cmd:
        if cmd[0] == "rate":
            rate, t_rate, sent_at_rate = float(cmd[1]), time.perf_counter(), 0
        elif cmd[0] == "mark":
            emit(counters())
        elif cmd[0] == "push":
            t0 = time.monotonic()
            push(int(cmd[1]))
            emit({**counters(), "push_s": time.monotonic() - t0})
        elif cmd[0] == "close":
            final = counters()
            p.close()
            st = p.stats()
            final.update(dropped=st["dropped"], dropped_total=st["dropped_total"],
                         pending=st["pending"])
            emit(final)
            break
        continue
    if rate <= 0:
        continue
    now = time.perf_counter() - t_rate
    due = int(rate * now) - sent_at_rate
    if due > 0:
        write(due)
        sent_at_rate += due
    tick = max(1, int(rate / 100))
    wait = (sent_at_rate + tick) / rate - (time.perf_counter() - t_rate)
    if wait > 0:
        time.sleep(wait)
    else:
        late += 1
"""

# The baseline: the same stream profiled in-process by whylogs' batch API.
WHYLOGS = r"""
import json, sys, time
import numpy as np
import psutil
rate, warmup, seconds, batch_s, seed = (float(sys.argv[1]), float(sys.argv[2]),
                                       float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
t_imp = time.perf_counter()
import pandas as pd
from whylogs.core import DatasetProfile
import whylogs
import_s = time.perf_counter() - t_imp
cols = [f"f{i}" for i in range(8)] + ["y"]
rng = np.random.default_rng(seed)
pool = rng.normal(size=(8192, 9))
rows_pool = [(r[:8].tolist(), r[8:].tolist()) for r in pool]
profile = DatasetProfile()
proc = psutil.Process()
buf = []
pos = 0
sent = 0
prof_cpu = 0.0
collect_cpu = 0.0
batches = 0
late = 0
mark = None
t0 = time.perf_counter()
t_batch = t0
end = warmup + seconds
while True:
    now = time.perf_counter() - t0
    if mark is None and now >= warmup:
        mark = (now, sum(proc.cpu_times()[:2]), prof_cpu, collect_cpu, sent)
    if now >= end:
        break
    due = int(rate * now) - sent
    if due > 0:
        c0 = time.thread_time()
        for _ in range(due):
            i, o = rows_pool[pos]
            buf.append(i + o)  # what an application keeps until it profiles the batch
            pos = (pos + 1) & 8191
        collect_cpu += time.thread_time() - c0
        sent += due
    if time.perf_counter() - t_batch >= batch_s and buf:
        c0 = time.thread_time()
        profile.track(pandas=pd.DataFrame(buf, columns=cols))
        prof_cpu += time.thread_time() - c0
        buf = []
        batches += 1
        t_batch = time.perf_counter()
    tick = max(1, int(rate / 100))
    wait = (sent + tick) / rate - (time.perf_counter() - t0)
    if wait > 0:
        time.sleep(wait)
    else:
        late += 1
now = time.perf_counter() - t0
cpu = sum(proc.cpu_times()[:2])
w = now - mark[0]
if buf:  # the last partial batch, after the window
    profile.track(pandas=pd.DataFrame(buf, columns=cols))
view = profile.view()
count = view.get_column("f0").get_metric("counts").n.value
print(json.dumps({
    "whylogs_version": whylogs.__version__, "import_s": round(import_s, 2),
    "window_s": round(w, 2), "records_in_window": sent - mark[4], "records_sent": sent,
    "records_profiled": int(count),
    "batches": batches, "batch_seconds": batch_s,
    "profile_cpu_percent_of_one_core": round(100 * (prof_cpu - mark[2]) / w, 2),
    "collect_cpu_percent_of_one_core": round(100 * (collect_cpu - mark[3]) / w, 2),
    "process_cpu_percent_of_one_core": round(100 * (cpu - mark[1]) / w, 2),
    "profile_us_per_record": round(1e6 * (prof_cpu - mark[2]) / max(1, sent - mark[4]), 2),
    "late_ticks": late, "uss_mb": round(proc.memory_full_info().uss / 2**20, 1),
}))
"""


# --------------------------------------------------------------- the agent
def write_reference(path: Path) -> None:
    """10,000 standard-normal values per field (what the feeder sends: no drift)."""
    rng = np.random.default_rng(12345)
    ref = {name: rng.normal(size=N_REF).round(6).tolist() for name in INPUTS + OUTPUTS}
    path.write_text(json.dumps(ref))


def new_agent(ref: Path) -> Agent:
    """The default config with the 8 + 1 model and its reference."""
    return Agent(
        model={"name": "bench8", "inputs": INPUTS, "outputs": OUTPUTS},
        drift_detection__reference_data_path=str(ref),
    )


def agent_procs(agent: Agent) -> dict[str, psutil.Process]:
    """Role -> process: the supervisor and each running worker."""
    assert agent.proc is not None
    st = agent.status()
    procs = {"supervisor": psutil.Process(agent.proc.pid)}
    for name, w in st["workers"].items():
        if w.get("pid"):
            procs[name] = psutil.Process(w["pid"])
    return procs


def cpu_s(p: psutil.Process) -> float:
    """User + system CPU seconds; NaN if the process is gone (a restart: see ``restarts``)."""
    try:
        t = p.cpu_times()
    except psutil.NoSuchProcess:
        return float("nan")
    return float(t.user + t.system)


def memory(procs: dict[str, psutil.Process]) -> dict[str, Any]:
    """PSS and USS per process and the PSS total, in MB."""
    pss: dict[str, float] = {}
    uss: dict[str, float] = {}
    for name, p in procs.items():
        try:
            m = p.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        pss[name], uss[name] = round(m.pss / 2**20, 1), round(m.uss / 2**20, 1)
    return {"total_pss_mb": round(sum(pss.values()), 1), "pss_mb": pss, "uss_mb": uss}


def restarts(agent: Agent) -> dict[str, int]:
    """Restarts per worker so far."""
    return {n: int(w.get("restarts", 0)) for n, w in agent.status()["workers"].items()}


def log_problems(agent: Agent) -> list[str]:
    """The agent's WARNING / ERROR lines (why a worker restarted, say), the last 20."""
    try:
        text = (agent.dir / "agent.log").read_text(errors="replace")
    except OSError:
        return []
    return [ln[:300] for ln in text.splitlines() if "WARNING" in ln or "ERROR" in ln][-20:]


class Feeder:
    """The producer process (``FEEDER``), driven line by line."""

    def __init__(self, agent: Agent, mode: str, cpus: set[int] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FEEDER,
                agent.cfg["run_dir"],
                agent.cfg["instance"],
                mode,
                "7",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        hello = self._reply()
        if not hello.get("ready"):
            raise RuntimeError(f"the producer did not attach: {hello}")

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the producer exited ({self.proc.wait()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def send(self, *cmd: Any) -> None:
        """A command without a reply (``rate``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(str(c) for c in cmd) + "\n")
        self.proc.stdin.flush()

    def ask(self, *cmd: Any) -> dict[str, Any]:
        """A command and its reply."""
        self.send(*cmd)
        return self._reply()

    def close(self) -> dict[str, Any]:
        """Close the producer; its final counters."""
        out = self.ask("close")
        self.proc.wait(15)
        return out

    def kill(self) -> None:
        """Make sure the process is gone."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- delivery
_KEY = re.compile(r"^(\d{20})-(\d{20})\.ndjson\.gz$")
_LANE_SEQ = re.compile(rb'"lane_seq":\s*(\d+)')


def sink_objects(agent: Agent, stream: str) -> list[Path]:
    """The objects of ``stream`` in the local sink."""
    root = Path(agent.cfg["data_dir"]) / "sink" / stream
    return sorted(p for p in root.rglob("*.ndjson.gz") if _KEY.match(p.name))


def delivered_by_key(agent: Agent) -> int:
    """Model records in the sink, from the keys' sequence ranges (cheap)."""
    n = 0
    for p in sink_objects(agent, "model"):
        m = _KEY.match(p.name)
        assert m is not None
        n += int(m.group(2)) - int(m.group(1)) + 1
    return n


def check_objects(agent: Agent) -> dict[str, Any]:
    """Read every model object: lines, and distinct ``lane_seq`` values (duplicates show)."""
    lines = 0
    seqs: list[np.ndarray[Any, Any]] = []
    for p in sink_objects(agent, "model"):
        data = gzip.decompress(p.read_bytes())
        lines += data.count(b"\n")
        seqs.append(np.array(_LANE_SEQ.findall(data), dtype=np.int64))
    allseq = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    return {"lines": lines, "distinct_lane_seq": int(np.unique(allseq).size)}


def uploader_stats(agent: Agent) -> dict[str, Any]:
    """The uploader's stats in ``status`` (ingested, uploaded, backlog...)."""
    out: dict[str, Any] = agent.status()["workers"]["uploader"].get("stats", {}) or {}
    return out


def _delta(a: dict[str, Any], b: dict[str, Any], key: str) -> int | None:
    if a.get(key) is None or b.get(key) is None:
        return None
    return int(b[key]) - int(a[key])


def agent_drops(agent: Agent) -> dict[str, int]:
    """The drops the agent counted for the model stream (status, uploader stats)."""
    drops = agent.status()["workers"]["uploader"].get("stats", {}).get("drops", {}) or {}
    return {k: int(v) for k, v in drops.items() if str(k).startswith("model/")}


def wait_delivered(agent: Agent, written: int, timeout: float) -> tuple[int, float | None]:
    """Ask for flushes until the sink holds every written record the agent did not drop.

    Returns (records in the sink, seconds it took or None on timeout).
    """
    t0 = time.monotonic()
    n = 0
    last_flush = 0.0
    while time.monotonic() - t0 < timeout:
        n = delivered_by_key(agent)
        with contextlib.suppress(control.ControlError, OSError):
            if n >= written - sum(agent_drops(agent).values()):
                return n, round(time.monotonic() - t0, 1)
        if time.monotonic() - last_flush > 2.0:
            with contextlib.suppress(control.ControlError, OSError):
                control.request(agent.cfg["run_dir"], agent.cfg["instance"], {"op": "flush"})
            last_flush = time.monotonic()
        time.sleep(0.5)
    return n, None


def account(
    agent: Agent, final: dict[str, Any], read_objects: bool, timeout: float = 120.0
) -> dict[str, Any]:
    """logged = delivered + dropped (producer and agent) + unaccounted."""
    # Ring overruns are counted twice, in the producer's ``lost`` and in the
    # agent's ``model/ring_overrun``: the agent's figure is the one in the
    # data (the drops stream), the producer's is shown beside it.
    written, logged = int(final["written"]), int(final["logged"])
    prod_dropped = int(final["dropped_total"])
    delivered, took = wait_delivered(agent, written, timeout=timeout)
    if delivered < written:
        time.sleep(2.5)  # the uploader's stats ride on heartbeats, every 2 s
    drops = agent_drops(agent)
    out: dict[str, Any] = {
        "logged": logged,
        "written": written,
        "delivered": delivered,
        "dropped_by_producer": prod_dropped,
        "dropped_by_producer_reasons": {k: v for k, v in final["dropped"].items() if v},
        "dropped_by_agent": sum(drops.values()),
        "dropped_by_agent_reasons": drops,
        "producer_lost_ring_overrun": final["lost"].get("ring_overrun"),
        "still_held_by_producer": int(final.get("pending", 0)),
        "unaccounted": logged - delivered - prod_dropped - sum(drops.values()),
        "delivery_wait_s": took,
    }
    if read_objects:
        out["objects"] = check_objects(agent)
    return out


# ------------------------------------------------------------------ phases
def steady(ref: Path, rate: float, warmup: float, seconds: float) -> dict[str, Any]:
    """The agent under a steady ``rate`` of single ``log()`` calls."""
    agent = new_agent(ref)
    feeder: Feeder | None = None
    try:
        agent.start()
        agent.wait(lambda s: all(w["state"] == "running" for w in s["workers"].values()))
        feeder = Feeder(agent, "log")
        procs = agent_procs(agent)
        r0 = restarts(agent)
        feeder.send("rate", rate)
        time.sleep(warmup)
        u0 = uploader_stats(agent)
        m0 = feeder.ask("mark")
        c0 = {n: cpu_s(p) for n, p in procs.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        c1 = {n: cpu_s(p) for n, p in procs.items()}
        elapsed = time.monotonic() - t0
        m1 = feeder.ask("mark")
        mem = memory(procs)
        u1 = uploader_stats(agent)
        cpu = {n: round(100 * (c1[n] - c0[n]) / elapsed, 2) for n in procs}
        feeder.send("rate", 0)
        final = feeder.close()
        acc = account(agent, final, read_objects=True)
        r1 = restarts(agent)
        recs = m1["logged"] - m0["logged"]
        total = round(sum(cpu.values()), 2)
        # A reader that falls behind (or is restarted) handles fewer records than
        # were logged: its cost per record it consumed is the comparable figure.
        p0, p1 = lane_position(m0), lane_position(m1)
        per_consumed = {
            name: round(
                1e6
                * (c1[name] - c0[name])
                / max(
                    1,
                    (p1[name]["seen"] - p0[name]["seen"]) - (p1[name]["lost"] - p0[name]["lost"]),
                ),
                2,
            )
            for name in READERS
            if name in p0 and name in p1 and name in c1
        }
        out: dict[str, Any] = {
            "rate_target": rate,
            "rate_achieved": round(recs / (m1["t"] - m0["t"])),
            "window_s": round(elapsed, 1),
            "warmup_s": warmup,
            "records_in_window": recs,
            "agent_cpu_percent_of_one_core": total,
            "cpu_percent_by_process": cpu,
            "agent_cpu_us_per_record": round(1e6 * total / 100 * elapsed / max(1, recs), 2),
            "reader_cpu_us_per_record_consumed": per_consumed,
            "producer_log_cpu_percent_of_one_core": round(
                100 * (m1["log_cpu_s"] - m0["log_cpu_s"]) / (m1["t"] - m0["t"]), 2
            ),
            "producer_log_us_per_record": round(
                1e6 * (m1["log_cpu_s"] - m0["log_cpu_s"]) / max(1, recs), 3
            ),
            "producer_late_ticks": m1["late_ticks"] - m0["late_ticks"],
            **{
                f"{name}_lost_in_window": lane_position(m1)[name]["lost"]
                - lane_position(m0)[name]["lost"]
                for name in READERS
                if name in lane_position(m0) and name in lane_position(m1)
            },
            # Does shipping keep up? (stats ride on heartbeats: up to 2 s old)
            "uploader_ingested_in_window": _delta(u0, u1, "ingested"),
            "uploader_shipped_in_window": _delta(u0, u1, "uploaded_records"),
            "outbox_backlog_records_at_start": u0.get("backlog_records"),
            "outbox_backlog_records_at_end": u1.get("backlog_records"),
            **mem,
            "records": acc,
            "worker_restarts": {n: r1[n] - r0.get(n, 0) for n in r1},
            "agent_log_problems": log_problems(agent),
        }
        return out
    finally:
        if feeder is not None:
            feeder.kill()
        agent.stop()


def lane_position(m: dict[str, Any]) -> dict[str, Any]:
    """Lane written, and each reader's consumed / lost, from a feeder mark."""
    lane = m.get("lane") or {}
    lines, over = lane.get("lines", []), lane.get("overrun", [])
    out: dict[str, Any] = {"write_seq": lane.get("write_seq", 0), "capacity": lane.get("capacity")}
    for name, k in READERS.items():
        if k < len(lines):
            line = lines[k]
            out[name] = {"seen": max(line["read_seq"], line["claim"]), "lost": over[k]}
    return out


def one_core(
    ref: Path, step_s: float, max_rate: float, bisect: int, nice: int = 0
) -> dict[str, Any]:
    """The highest rate the agent pinned to one CPU ingests with no loss."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {"error": f"needs 2 CPUs, this process may use {cpus}"}
    agent_cpu, rest = {cpus[0]}, set(cpus[1:])
    agent = new_agent(ref)
    feeder: Feeder | None = None
    mine = os.sched_getaffinity(0)
    try:
        # The agent inherits the affinity at fork: supervisor, workers, threads.
        os.sched_setaffinity(0, agent_cpu)
        nice0 = os.getpriority(os.PRIO_PROCESS, 0)
        try:
            if nice:
                os.setpriority(os.PRIO_PROCESS, 0, nice)  # inherited too
            agent.start()
        finally:
            os.sched_setaffinity(0, rest)
            if nice:
                os.setpriority(os.PRIO_PROCESS, 0, nice0)
        agent.wait(lambda s: all(w["state"] == "running" for w in s["workers"].values()))
        procs = agent_procs(agent)
        pinned = {n: sorted(p.cpu_affinity()) for n, p in procs.items()}
        feeder = Feeder(agent, "batch", rest)
        steps: list[dict[str, Any]] = []

        def run_step(rate: float) -> bool:
            assert feeder is not None
            load0 = os.getloadavg()[0]
            c0 = {n: cpu_s(p) for n, p in procs.items()}
            a = lane_position(feeder.ask("mark"))
            feeder.send("rate", rate)
            t0 = time.monotonic()
            time.sleep(step_s)
            b = lane_position(feeder.ask("mark"))
            elapsed = time.monotonic() - t0
            feeder.send("rate", 0)
            c1 = {n: cpu_s(p) for n, p in procs.items()}
            offered = b["write_seq"] - a["write_seq"]
            step: dict[str, Any] = {
                "rate_target": rate,
                "offered_per_s": round(offered / elapsed),
                "seconds": round(elapsed, 1),
                "load_avg_1m": round(load0, 2),
                "agent_cpu_percent_of_one_core": round(
                    100 * sum(c1[n] - c0[n] for n in procs) / elapsed, 1
                ),
            }
            ok = offered >= 0.9 * rate * elapsed
            cap = int(b.get("capacity") or 0)
            for name in READERS:
                if name not in a or name not in b:
                    continue
                lost = b[name]["lost"] - a[name]["lost"]
                behind = b["write_seq"] - b[name]["seen"]
                step[f"{name}_lost"] = lost
                step[f"{name}_behind_at_end"] = behind
                # Readers take what is there every 50 ms or so: more than half a
                # lane behind at the end (the doorbell's mark) is falling behind.
                ok = ok and lost == 0 and (not cap or behind <= cap // 2)
            step["kept_up"] = ok
            steps.append(step)
            # Let the readers drain before the next step (a backlog would count against it).
            t_drain = time.monotonic()
            deadline = t_drain + max(20.0, 2 * step_s)
            while time.monotonic() < deadline:
                pos = lane_position(feeder.ask("mark"))
                if all(pos["write_seq"] - pos[n]["seen"] <= 5000 for n in READERS if n in pos):
                    break
                time.sleep(0.1)
            step["drain_s"] = round(time.monotonic() - t_drain, 1)
            return ok

        good, bad = 0.0, 0.0
        rate = 10_000.0
        while rate <= max_rate:
            if run_step(rate):
                good = rate
                rate *= 2
            else:
                bad = rate
                break
        for _ in range(bisect if bad else 0):
            mid = round((good + bad) / 2, -3)
            if mid in (good, bad):
                break
            if run_step(mid):
                good = mid
            else:
                bad = mid
        feeder.close()
        best = [x for x in steps if x["kept_up"] and x["rate_target"] == good]
        share = best[-1]["agent_cpu_percent_of_one_core"] / 100 if best else None
        return {
            "agent_cpus": sorted(agent_cpu),
            "producer_cpus": sorted(rest),
            "agent_nice": nice,
            "affinity_seen": pinned,
            "max_rate_no_loss": good,
            # At that rate the agent used this share of its core (the rest went to
            # other processes on a shared machine): the rate a whole core would
            # carry at the same cost per record, an estimate (fixed costs ignored).
            "agent_core_share_at_max": share,
            "max_rate_per_full_core_estimate": round(good / share) if share else None,
            "first_rate_not_kept_up": bad or None,
            "step_seconds": step_s,
            "steps": steps,
            "worker_restarts": restarts(agent),
            "agent_log_problems": log_problems(agent),
        }
    finally:
        os.sched_setaffinity(0, mine)
        if feeder is not None:
            feeder.kill()
        agent.stop()


def many_records(ref: Path, n: int) -> dict[str, Any]:
    """``n`` records as fast as the agent takes them; PSS along the way."""
    agent = new_agent(ref)
    feeder: Feeder | None = None
    try:
        agent.start()
        agent.wait(lambda s: all(w["state"] == "running" for w in s["workers"].values()))
        feeder = Feeder(agent, "batch")
        procs = agent_procs(agent)
        samples: list[dict[str, Any]] = [{"records": 0, **memory(procs)}]
        every = max(4096, n // 10)
        t0 = time.monotonic()
        c0 = {k: cpu_s(p) for k, p in procs.items()}
        done = 0
        gated = 0.0
        backlog_max = 0
        while done < n:
            k = min(PUSH_CHUNK, n - done, every - done % every)
            feeder.ask("push", k)
            done += k
            if done % every == 0 or done == n:
                samples.append({"records": done, "seconds": round(time.monotonic() - t0, 1)})
                samples[-1].update(memory(procs))
            # The lane readers gate the producer; the shipper does not: hold back
            # while the outbox backlog is large, so it stays within its disk budget.
            t_gate = time.monotonic()
            while True:
                backlog = int(uploader_stats(agent).get("backlog_records") or 0)
                backlog_max = max(backlog_max, backlog)
                if backlog <= MAX_BACKLOG or time.monotonic() - t_gate > 120:
                    break
                time.sleep(0.5)
            gated += time.monotonic() - t_gate
        elapsed = time.monotonic() - t0
        cpu = {k: round(100 * (cpu_s(p) - c0[k]) / elapsed, 1) for k, p in procs.items()}
        final = feeder.close()
        acc = account(agent, final, read_objects=False, timeout=600.0)
        at_1m = min(samples, key=lambda s: abs(s["records"] - 1_000_000))
        end = samples[-1]
        return {
            "records": n,
            "seconds": round(elapsed, 1),
            "rate_per_s": round(n / elapsed),
            "seconds_held_back_for_shipping": round(gated, 1),
            "outbox_backlog_records_max": backlog_max,
            "cpu_percent_by_process": cpu,
            "pss_mb_at_1m": at_1m["total_pss_mb"],
            "pss_mb_at_1m_records": at_1m["records"],
            "pss_mb_at_end": end["total_pss_mb"],
            "pss_growth_mb_1m_to_end": round(end["total_pss_mb"] - at_1m["total_pss_mb"], 1),
            "samples": samples,
            "delivery": acc,
            "worker_restarts": restarts(agent),
            "agent_log_problems": log_problems(agent),
        }
    finally:
        if feeder is not None:
            feeder.kill()
        agent.stop()


def whylogs_baseline(
    rate: float, warmup: float, seconds: float, python: str | None = None
) -> dict[str, Any]:
    """The WHYLOGS script in a subprocess (of ``python``); its JSON or why it could not run."""
    python = python or sys.executable
    probe = subprocess.run(
        [python, "-c", "import whylogs, pandas"], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"whylogs is not installed ({why}): pip install -e '.[bench]'"}
    res = subprocess.run(
        [python, "-c", WHYLOGS, str(rate), str(warmup), str(seconds), "1.0", "7"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=seconds + warmup + 120,
        env={**os.environ, "WHYLOGS_NO_ANALYTICS": "True"},
    )
    if res.returncode != 0:
        return {"error": res.stderr[-2000:]}
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------- profiling
def profile_run(ref: Path, rate: float, warmup: float, seconds: float) -> dict[str, Any]:
    """A fresh agent under the steady stream, sampled by py-spy (not a timed figure)."""
    agent = new_agent(ref)
    feeder: Feeder | None = None
    try:
        agent.start()
        agent.wait(lambda s: all(w["state"] == "running" for w in s["workers"].values()))
        feeder = Feeder(agent, "log")
        procs = agent_procs(agent)
        feeder.send("rate", rate)
        time.sleep(warmup)
        a = lane_position(feeder.ask("mark"))
        out = profile(procs, seconds)
        b = lane_position(feeder.ask("mark"))
        out["lost_while_sampled"] = {
            n: b[n]["lost"] - a[n]["lost"] for n in READERS if n in a and n in b
        }
        return out
    finally:
        if feeder is not None:
            feeder.kill()
        agent.stop()


#: Innermost frames where a thread waits (py-spy's idle test is not reliable
#: with --nonblocking): counted apart from the CPU samples.
IDLE = re.compile(
    r"^(select|poll|epoll|wait|_wait_for_tstate_lock|sleep|recv|recvfrom|accept|"
    r"EpollSelector\.select|Worker\._poll|Event\.wait|Condition\.wait|Thread\.join) "
)


def _frame(f: str) -> str:
    """``func (path/file.py:123)`` -> ``func (file.py)``."""
    m = re.match(r"^(.*) \((.*?):\d+\)$", f)
    if not m:
        return f
    return f"{m.group(1)} ({Path(m.group(2)).name})"


#: Frames every stack of a process shares (start-up, the worker loop): left out
#: of the inclusive list.
BOILERPLATE = re.compile(
    r"\((cli\.py|<frozen runpy>|__main__\.py|supervisor\.py)\)$|"
    r"^(Worker\.run|child_main|Thread\._bootstrap(_inner)?|Thread\.run) "
)


def profile(procs: dict[str, psutil.Process], seconds: float) -> dict[str, Any]:
    """py-spy on every agent process at once for ``seconds``; top self time per process."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy is not installed: pip install -e '.[bench]'"}
    tmp = Path(tempfile.mkdtemp(prefix="eaprof"))
    rate = 100
    runs = {}
    try:
        for name, p in procs.items():
            out = tmp / f"{name}.txt"
            cmd = [spy, "record", "--pid", str(p.pid), "--duration", str(int(seconds))]
            cmd += ["--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out)]
            runs[name] = (
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
                out,
            )
        result: dict[str, Any] = {"seconds": seconds, "rate_hz": rate}
        for name, (proc, out) in runs.items():
            _, err = proc.communicate(timeout=seconds + 60)
            if not out.exists():
                result[name] = {"error": err[-500:]}
                continue
            self_n: Counter[str] = Counter()
            incl: Counter[str] = Counter()
            pair: Counter[str] = Counter()
            total = idle = 0
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                frames = [_frame(f) for f in stack.split(";")]
                c = int(count)
                if IDLE.match(frames[-1]):
                    idle += c
                    continue
                total += c
                self_n[frames[-1]] += c
                pair[" <- ".join(frames[-1:-4:-1])] += c
                for f in set(frames):
                    if not BOILERPLATE.search(f):
                        incl[f] += c
            result[name] = {
                "samples_busy": total,
                "samples_waiting": idle,
                "busy_share_of_one_core": round(total / (rate * seconds), 3),
                "top_self": [
                    {"function": f, "self_share": round(c / max(1, total), 3)}
                    for f, c in self_n.most_common(15)
                ],
                "top_self_with_callers": [
                    {"stack": f, "self_share": round(c / max(1, total), 3)}
                    for f, c in pair.most_common(12)
                ],
                "top_inclusive": [
                    {"function": f, "share": round(c / max(1, total), 3)}
                    for f, c in incl.most_common(20)
                ],
            }
        return result
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------- main
def git_commit() -> str:
    """The commit measured (with ``+dirty`` when the tree has changes)."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=REPO,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="15 s windows, 5 s steps")
    ap.add_argument("--rate", type=float, default=10_000.0, help="predictions/s (steady)")
    ap.add_argument("--seconds", type=float, default=None, help="steady window (60)")
    ap.add_argument("--warmup", type=float, default=None, help="before the window (5)")
    ap.add_argument("--records", type=int, default=0, help="records mode: N records (0: off)")
    ap.add_argument("--step-seconds", type=float, default=None, help="one-core step (10)")
    ap.add_argument("--max-rate", type=float, default=640_000.0, help="one-core search cap")
    ap.add_argument(
        "--nice", type=int, default=0, help="one-core: the agent's nice value (negative: root)"
    )
    ap.add_argument(
        "--whylogs-python", default=None, help="interpreter with whylogs (default: this one)"
    )
    ap.add_argument("--no-steady", action="store_true")
    ap.add_argument("--no-whylogs", action="store_true")
    ap.add_argument("--no-one-core", action="store_true")
    ap.add_argument("--profile-seconds", type=float, default=0.0, help="py-spy (0: off)")
    args = ap.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    warmup = args.warmup if args.warmup is not None else (3.0 if args.quick else 5.0)
    step_s = args.step_seconds or (5.0 if args.quick else 10.0)

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="eabox") as tmp:
        ref = Path(tmp) / "reference.json"
        write_reference(ref)
        st = (
            {"skipped": "--no-steady"}
            if args.no_steady
            else steady(ref, args.rate, warmup, seconds)
        )
        prof = (
            profile_run(ref, args.rate, warmup, args.profile_seconds)
            if args.profile_seconds > 0
            else None
        )
        wl = (
            {"skipped": "--no-whylogs"}
            if args.no_whylogs
            else whylogs_baseline(args.rate, warmup, seconds, args.whylogs_python)
        )
        oc = (
            {"skipped": "--no-one-core"}
            if args.no_one_core
            else one_core(ref, step_s, args.max_rate, 2 if args.quick else 3, args.nice)
        )
        many = many_records(ref, args.records) if args.records > 0 else None

    agent_cpu = st.get("agent_cpu_percent_of_one_core")
    wl_cpu = wl.get("profile_cpu_percent_of_one_core")
    meets: dict[str, bool] = {}
    if agent_cpu is not None:
        meets["agent_cpu"] = agent_cpu <= TARGETS["agent_cpu_percent_of_one_core"]
        meets["unaccounted"] = st["records"]["unaccounted"] == 0
    out: dict[str, Any] = {
        "benchmark": "box_cost",
        "commit": git_commit(),
        "features": {"inputs": INPUTS, "outputs": OUTPUTS, "n_ref": N_REF},
        "steady": st,
        "whylogs": wl,
        "whylogs_over_agent": round(wl_cpu / agent_cpu, 2) if wl_cpu and agent_cpu else None,
        "agent_over_whylogs": round(agent_cpu / wl_cpu, 2) if wl_cpu and agent_cpu else None,
        "one_core": oc,
        "targets": TARGETS,
        "meets_targets": meets,
        "load_avg_at_start": [round(x, 2) for x in load0],
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if prof is not None:
        out["profile"] = prof
    if many is not None:
        out["many_records"] = many
        if args.records >= 10_000_000:
            out["meets_targets"]["pss_after_10m"] = (
                many["pss_mb_at_end"] <= TARGETS["pss_mb_after_10m"]
            )
            out["meets_targets"]["no_growth_1m_to_10m"] = (
                many["pss_growth_mb_1m_to_end"] <= TARGETS["pss_growth_mb_1m_to_10m"]
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
