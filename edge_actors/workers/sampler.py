"""The sampler worker: system health into the system ring, agent processes into the procs ring.

Never blocks: ``cpu_percent`` is read with ``interval=None`` (usage since the
previous call) instead of sleeping inside psutil. Temperatures and CPU
frequency are sampled where the platform has them: thermal throttling is the
classic silent failure of a fanless edge box.

Degrades instead of crashing: each group of metrics comes from its own /proc
(or /sys) file, and a file can be unreadable on a real device (containers,
hardened kernels, qemu-user 7.2 fails ``open("/proc/stat")`` with ELOOP). A
group that cannot be read is recorded as NaN (``null`` in the system stream),
named with the reason under ``unavailable`` in ``status``, and logged once at
WARNING; the other groups are still collected, and the group is tried again
at every sample, so it comes back when the file does (like a node_exporter
collector that fails alone).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import psutil

from edge_actors.procmem import MemoryGauge
from edge_actors.records import MAX_CORES, PROCESS_DTYPE, SYSTEM_DTYPE, SYSTEM_FIELDS
from edge_actors.ring import Ring, RingError, RingWriter
from edge_actors.topology import RingSpec
from edge_actors.workers.base import Worker

log = logging.getLogger(__name__)
_NAN = math.nan
_T = TypeVar("_T")

_CPU = ("cpu_percent", "cpu_per_core")
_LOAD = ("load1", "load5", "load15")
_MEM = ("mem_total", "mem_available", "mem_percent")
_SWAP = ("swap_used", "swap_percent")
_DISK = ("disk_total", "disk_used", "disk_percent")
_DISK_IO = ("disk_read_bytes", "disk_write_bytes")
_NET = ("net_bytes_sent", "net_bytes_recv", "net_errin", "net_errout")
_TEMP = ("temp_max_c",)
_FREQ = ("cpu_freq_mhz", "cpu_freq_max_mhz")
_UPTIME = ("uptime_s",)
#: Per-process figures (the ``procs`` stream), when a process's files cannot be read.
_PROCS = ("processes",)
_PROC_USS = ("process_uss",)


def _reason(exc: BaseException) -> str:
    """One line naming the error and, for OSError, the file."""
    return f"{type(exc).__name__}: {exc}"


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


def _existing(path: str) -> str:
    """``path`` or its nearest existing parent: the uploader may not have made data_dir yet."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


class SamplerWorker(Worker):
    """Samples every ``system.sampling_interval_seconds``."""

    name = "sampler"

    def setup(self) -> None:
        """Prime psutil's CPU counters so the first sample has a real percentage."""
        self.interval = self.cfg.system.sampling_interval_seconds
        self.idle_wait = min(0.25, self.interval / 4)
        self.data_dir = str(self.cfg.data_dir)
        self.device = _disk_device(_existing(self.data_dir))
        self.sys_writer: RingWriter | None = None
        self.proc_writer: RingWriter | None = None
        self._rings: list[Ring] = []
        self.processes: dict[str, int] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._memory = MemoryGauge()
        self.samples = 0
        self.errors = 0
        #: Metric name -> why it is not collected (``status``: sampler ``unavailable``).
        self.unavailable: dict[str, str] = {}
        self._warned: set[tuple[str, ...]] = set()
        self._read(_CPU, self._cpu)  # primes psutil: the first sample has a real percentage
        self.next_at = time.monotonic() + min(1.0, self.interval)
        self._boot: float | None = None

    def _read(
        self,
        fields: tuple[str, ...],
        fn: Callable[[], _T],
        gone: type[BaseException] | tuple[type[BaseException], ...] = (),
    ) -> _T | None:
        """``fn()``, or None with ``fields`` marked unavailable (WARNING once per group).

        Any exception: what psutil raises for an unreadable or oddly formatted
        /proc file ranges from OSError to ValueError and IndexError, and one
        group must never stop the others; the reason is logged and in status.
        ``gone`` exceptions (a process that exited) are not failures: re-raised.
        """
        try:
            value = fn()
        except gone:
            raise
        except Exception as exc:
            reason = _reason(exc)
            for f in fields:
                self.unavailable[f] = reason
            if fields not in self._warned:
                self._warned.add(fields)
                log.warning(
                    "sampler: %s unavailable (%s); recorded as null, retried every sample",
                    ", ".join(fields),
                    reason,
                )
            return None
        if fields[0] in self.unavailable:
            for f in fields:
                self.unavailable.pop(f, None)
            log.info("sampler: %s readable again", ", ".join(fields))
        return value

    @staticmethod
    def _cpu() -> tuple[float, list[float]]:
        return psutil.cpu_percent(None), psutil.cpu_percent(None, percpu=True)

    def _uptime(self) -> float:
        """Seconds since boot: CLOCK_BOOTTIME needs no /proc file (boot_time reads /proc/stat)."""
        clock = getattr(time, "CLOCK_BOOTTIME", None)
        if clock is not None:
            try:
                return time.clock_gettime(clock)
            except OSError:
                pass
        if self._boot is None:
            self._boot = psutil.boot_time()
        return time.time() - self._boot

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
        """Read psutil once and write one system record and one record per watched process.

        Each group of metrics is read on its own (see :meth:`_read`): a group
        that fails is NaN in the record, the others are still collected.
        """
        t_ns = time.time_ns()
        rec = np.zeros(1, SYSTEM_DTYPE)[0]
        for f in SYSTEM_FIELDS:
            rec[f] = _NAN
        rec["t_ns"] = t_ns
        per = np.full(MAX_CORES, _NAN)
        cpu = self._read(_CPU, self._cpu)
        if cpu is not None:
            rec["cpu_percent"], cores = cpu
            per[: min(MAX_CORES, len(cores))] = cores[:MAX_CORES]
        rec["cpu_per_core"] = per
        load = self._read(_LOAD, os.getloadavg)
        if load is not None:
            rec["load1"], rec["load5"], rec["load15"] = load
        vm = self._read(_MEM, psutil.virtual_memory)
        if vm is not None:
            rec["mem_total"], rec["mem_available"] = vm.total, vm.available
            rec["mem_percent"] = vm.percent
        sw = self._read(_SWAP, psutil.swap_memory)
        if sw is not None:
            rec["swap_used"], rec["swap_percent"] = sw.used, sw.percent
        du = self._read(_DISK, lambda: psutil.disk_usage(_existing(self.data_dir)))
        if du is not None:
            rec["disk_total"], rec["disk_used"], rec["disk_percent"] = du.total, du.used, du.percent
        if self.device:
            io = self._read(_DISK_IO, lambda: psutil.disk_io_counters(perdisk=True))
            if io and self.device in io:
                d = io[self.device]
                rec["disk_read_bytes"], rec["disk_write_bytes"] = d.read_bytes, d.write_bytes
        net = self._read(_NET, psutil.net_io_counters)
        if net is not None:
            rec["net_bytes_sent"], rec["net_bytes_recv"] = net.bytes_sent, net.bytes_recv
            rec["net_errin"], rec["net_errout"] = net.errin, net.errout
        temp = self._read(_TEMP, self._max_temperature)
        rec["temp_max_c"] = _NAN if temp is None else temp
        if hasattr(psutil, "cpu_freq"):
            freq = self._read(_FREQ, psutil.cpu_freq)
            if freq:
                rec["cpu_freq_mhz"] = freq.current
                rec["cpu_freq_max_mhz"] = freq.max if freq.max else _NAN
        up = self._read(_UPTIME, self._uptime)
        if up is not None:
            rec["uptime_s"] = up
        if self.sys_writer is not None:
            self.sys_writer.write(rec)
        if self.proc_writer is not None and self.processes:
            self._sample_processes(t_ns)

    @staticmethod
    def _max_temperature() -> float:
        """The hottest sensor; NaN where the platform has none (not an error)."""
        fn = getattr(psutil, "sensors_temperatures", None)
        if fn is None:
            return _NAN
        temps = fn()
        values = [t.current for entries in temps.values() for t in entries if t.current]
        return max(values) if values else _NAN

    def _sample_processes(self, t_ns: int) -> None:
        assert self.proc_writer is not None
        recs = np.zeros(len(self.processes), PROCESS_DTYPE)
        n = 0
        alive = set()
        for role, pid in self.processes.items():
            got = self._read(_PROCS, functools.partial(self._read_process, pid))
            if got is None:
                continue
            alive.add(pid)
            r = recs[n]
            r["t_ns"], r["pid"], r["role"] = t_ns, pid, role.encode()[:16]
            r["cpu_percent"], r["uss"], r["rss"], r["num_threads"] = got
            n += 1
        for pid in list(self._procs):
            if pid not in alive:
                del self._procs[pid]
        self._memory.forget(alive)
        if n:
            self.proc_writer.write_batch(recs[:n])

    def _read_process(self, pid: int) -> tuple[float, float, float, int] | None:
        """CPU %, USS, RSS and threads of one process; None once it is gone.

        USS needs /proc/PID/smaps, which hardened kernels and some containers
        refuse while /proc/PID/stat is readable: then RSS alone, USS NaN.
        """
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = psutil.Process(pid)
                proc.cpu_percent(None)
                self._procs[pid] = proc
            with proc.oneshot():
                cpu = proc.cpu_percent(None)
                threads = proc.num_threads()
            # USS/PSS walked only when RSS moved or the last walk is old (procmem).
            mem = self._read(
                _PROC_USS, functools.partial(self._memory.read, pid), gone=psutil.NoSuchProcess
            )
            rss = mem.rss if mem is not None else proc.memory_info().rss
        except psutil.NoSuchProcess:  # exited (ZombieProcess is one too): not an error
            return None
        return cpu, float(mem.uss) if mem is not None else _NAN, float(rss), threads

    def stats(self) -> dict[str, Any]:
        """Samples taken, errors, the interval, and the metrics not collected and why."""
        by_reason: dict[str, list[str]] = {}
        for field, reason in self.unavailable.items():
            by_reason.setdefault(reason, []).append(field)
        return {
            "samples": self.samples,
            "errors": self.errors,
            "interval": self.interval,
            "unavailable": dict(self.unavailable),
            "summary_lines": [
                f"unavailable: {', '.join(fields)} ({reason})"
                for reason, fields in by_reason.items()
            ],
        }

    def close(self) -> None:
        """Unmap the rings."""
        self.sys_writer = self.proc_writer = None
        for ring in self._rings:
            ring.close()
