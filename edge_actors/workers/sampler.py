"""The sampler worker: system health into the system ring, agent processes into the procs ring.

Never blocks: ``cpu_percent`` is read with ``interval=None`` (usage since the
previous call) instead of sleeping inside psutil. Temperatures and CPU
frequency are sampled where the platform has them: thermal throttling is the
classic silent failure of a fanless edge box.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np
import psutil

from edge_actors.procmem import MemoryGauge
from edge_actors.records import MAX_CORES, PROCESS_DTYPE, SYSTEM_DTYPE
from edge_actors.ring import Ring, RingError, RingWriter
from edge_actors.topology import RingSpec
from edge_actors.workers.base import Worker

log = logging.getLogger(__name__)
_NAN = math.nan


def _disk_device(path: str) -> str | None:
    """The block device name (as in disk_io_counters) holding ``path``, if any."""
    best = None
    try:
        parts = psutil.disk_partitions(all=False)
    except OSError:
        return None
    real = os.path.realpath(path)
    for p in parts:
        mp = p.mountpoint.rstrip("/") + "/"
        if (real + "/").startswith(mp) and (best is None or len(mp) > len(best[0])):
            best = (mp, os.path.basename(p.device))
    return best[1] if best else None


class SamplerWorker(Worker):
    """Samples every ``system.sampling_interval_seconds``."""

    name = "sampler"

    def setup(self) -> None:
        """Prime psutil's CPU counters so the first sample has a real percentage."""
        self.interval = self.cfg.system.sampling_interval_seconds
        self.idle_wait = min(0.25, self.interval / 4)
        self.data_dir = str(self.cfg.data_dir)
        self.device = _disk_device(self.data_dir) if os.path.exists(self.data_dir) else None
        self.sys_writer: RingWriter | None = None
        self.proc_writer: RingWriter | None = None
        self._rings: list[Ring] = []
        self.processes: dict[str, int] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._memory = MemoryGauge()
        self.samples = 0
        self.errors = 0
        psutil.cpu_percent(None)
        psutil.cpu_percent(None, percpu=True)
        self.next_at = time.monotonic() + min(1.0, self.interval)
        self.boot = psutil.boot_time()

    def set_rings(self, specs: list[RingSpec]) -> None:
        """Attach as the producer of the system and procs rings."""
        super().set_rings(specs)
        for spec in specs:
            if spec.kind not in ("system", "procs"):
                continue
            current = self.sys_writer if spec.kind == "system" else self.proc_writer
            if current is not None and current.ring.name == spec.name:
                continue
            dtype = SYSTEM_DTYPE if spec.kind == "system" else PROCESS_DTYPE
            try:
                ring = Ring.attach(spec.name, dtype)
            except RingError as exc:
                log.error("sampler cannot attach %s: %s", spec.name, exc)
                continue
            self._rings.append(ring)
            if spec.kind == "system":
                self.sys_writer = ring.writer()
            else:
                self.proc_writer = ring.writer()

    def handle(self, msg: dict[str, Any]) -> None:
        """Also accept the supervisor's list of processes to watch."""
        if msg.get("cmd") == "processes":
            self.processes = {str(k): int(v) for k, v in msg.get("processes", {}).items()}
            return
        super().handle(msg)

    def step(self) -> int:
        """Take one sample when it is due."""
        now = time.monotonic()
        if now < self.next_at:
            self.idle_wait = min(0.5, self.next_at - now)
            return 0
        # Fixed-rate schedule without drift; skip missed slots after a stall.
        self.next_at += self.interval
        if self.next_at < now:
            self.next_at = now + self.interval
        try:
            self.sample()
        except (OSError, psutil.Error) as exc:
            self.errors += 1
            log.warning("system sample failed: %s", exc)
            return 0
        self.samples += 1
        return 1

    def sample(self) -> None:
        """Read psutil once and write one system record and one record per watched process."""
        t_ns = time.time_ns()
        rec = np.zeros(1, SYSTEM_DTYPE)[0]
        rec["t_ns"] = t_ns
        rec["cpu_percent"] = psutil.cpu_percent(None)
        cores = psutil.cpu_percent(None, percpu=True)
        per = np.full(MAX_CORES, _NAN)
        per[: min(MAX_CORES, len(cores))] = cores[:MAX_CORES]
        rec["cpu_per_core"] = per
        try:
            rec["load1"], rec["load5"], rec["load15"] = os.getloadavg()
        except OSError:
            rec["load1"] = rec["load5"] = rec["load15"] = _NAN
        vm = psutil.virtual_memory()
        rec["mem_total"], rec["mem_available"], rec["mem_percent"] = (
            vm.total,
            vm.available,
            vm.percent,
        )
        sw = psutil.swap_memory()
        rec["swap_used"], rec["swap_percent"] = sw.used, sw.percent
        try:
            du = psutil.disk_usage(self.data_dir)
            rec["disk_total"], rec["disk_used"], rec["disk_percent"] = du.total, du.used, du.percent
        except OSError:
            rec["disk_total"] = rec["disk_used"] = rec["disk_percent"] = _NAN
        rec["disk_read_bytes"] = rec["disk_write_bytes"] = _NAN
        io = psutil.disk_io_counters(perdisk=True) if self.device else None
        if io and self.device in io:
            d = io[self.device]
            rec["disk_read_bytes"], rec["disk_write_bytes"] = d.read_bytes, d.write_bytes
        net = psutil.net_io_counters()
        if net is not None:
            rec["net_bytes_sent"], rec["net_bytes_recv"] = net.bytes_sent, net.bytes_recv
            rec["net_errin"], rec["net_errout"] = net.errin, net.errout
        rec["temp_max_c"] = self._max_temperature()
        freq = psutil.cpu_freq() if hasattr(psutil, "cpu_freq") else None
        rec["cpu_freq_mhz"] = freq.current if freq else _NAN
        rec["cpu_freq_max_mhz"] = freq.max if freq and freq.max else _NAN
        rec["uptime_s"] = time.time() - self.boot
        if self.sys_writer is not None:
            self.sys_writer.write(rec)
        if self.proc_writer is not None and self.processes:
            self._sample_processes(t_ns)

    @staticmethod
    def _max_temperature() -> float:
        fn = getattr(psutil, "sensors_temperatures", None)
        if fn is None:
            return _NAN
        try:
            temps = fn()
        except (OSError, RuntimeError):
            return _NAN
        values = [t.current for entries in temps.values() for t in entries if t.current]
        return max(values) if values else _NAN

    def _sample_processes(self, t_ns: int) -> None:
        assert self.proc_writer is not None
        recs = np.zeros(len(self.processes), PROCESS_DTYPE)
        n = 0
        alive = set()
        for role, pid in self.processes.items():
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                    proc.cpu_percent(None)
                with proc.oneshot():
                    cpu = proc.cpu_percent(None)
                    threads = proc.num_threads()
                # USS/PSS walked only when RSS moved or the last walk is old (procmem).
                mem = self._memory.read(pid)
            except (psutil.Error, OSError):
                continue
            alive.add(pid)
            r = recs[n]
            r["t_ns"], r["pid"], r["role"] = t_ns, pid, role.encode()[:16]
            r["cpu_percent"], r["uss"], r["rss"] = cpu, mem.uss, mem.rss
            r["num_threads"] = threads
            n += 1
        for pid in list(self._procs):
            if pid not in alive:
                del self._procs[pid]
        self._memory.forget(alive)
        if n:
            self.proc_writer.write_batch(recs[:n])

    def stats(self) -> dict[str, Any]:
        """Samples taken, errors, and the interval."""
        return {"samples": self.samples, "errors": self.errors, "interval": self.interval}

    def close(self) -> None:
        """Unmap the rings."""
        self.sys_writer = self.proc_writer = None
        for ring in self._rings:
            ring.close()
