"""Cheap per-process memory readings: RSS every time, USS/PSS only when they matter.

The kernel builds ``/proc/PID/smaps_rollup`` by walking every page table of the
process, so one reading costs milliseconds for a worker that maps the shared
rings (psutil's ``memory_full_info`` reads the same file: the cost is the
kernel's, not the parsing). ``/proc/PID/statm`` is a few counters (µs). RSS is
an upper bound of both USS and PSS (every private page is resident, and a page
counts at most once in PSS), so a process whose RSS is within a budget is
within it by USS and PSS too and needs no walk. Between walks USS/PSS are
estimated as the last walked value moved by the RSS change since, and walked
again when RSS moved by more than a fraction, when the reading is older than
``max_age`` seconds, or when the estimate comes near the budget: the budget is
only ever decided on a walked value.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import psutil

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Memory(NamedTuple):
    """One process's memory in bytes; ``exact`` when USS/PSS were walked just now."""

    rss: int
    uss: int
    pss: int
    exact: bool


def _read(path: str, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def rss_of(pid: int) -> int:
    """Resident set size from ``/proc/PID/statm`` (psutil where there is no /proc)."""
    try:
        data = _read(f"/proc/{pid}/statm", 256)
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            raise psutil.NoSuchProcess(pid) from None
        return int(psutil.Process(pid).memory_info().rss)
    return int(data.split()[1]) * _PAGE


def full_memory_of(pid: int) -> Memory:
    """RSS, USS and PSS walked now: one read of ``smaps_rollup``, psutil otherwise."""
    try:
        data = _read(f"/proc/{pid}/smaps_rollup", 8192)
    except (FileNotFoundError, ProcessLookupError):
        # No smaps_rollup (kernel < 4.14, not Linux), or the ESRCH/ENOENT it gives
        # for some live pids: psutil falls back to /proc/PID/smaps or the OS call.
        info = psutil.Process(pid).memory_full_info()
        rss = int(info.rss)
        return Memory(rss, int(getattr(info, "uss", rss)), int(getattr(info, "pss", rss)), True)
    if not data:  # a kernel thread or a process being torn down
        raise psutil.NoSuchProcess(pid)
    rss = uss = pss = 0
    for line in data.split(b"\n"):
        if line.startswith(b"Private_"):  # Private_Clean, Private_Dirty, Private_Hugetlb
            uss += int(line.split()[1])
        elif line.startswith(b"Pss:"):
            pss = int(line.split()[1])
        elif line.startswith(b"Rss:"):
            rss = int(line.split()[1])
    return Memory(rss * 1024, uss * 1024, pss * 1024, True)


@dataclass
class _Walked:
    rss: int
    uss: int
    pss: int
    at: float


class MemoryGauge:
    """Per-pid readings that walk ``smaps_rollup`` only when RSS cannot decide."""

    def __init__(
        self,
        *,
        max_age: float = 30.0,
        rss_change: float = 1 / 16,
        near: float = 0.9,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``rss_change``: relative RSS move that forces a walk; ``near``: budget fraction."""
        self.max_age, self.rss_change, self.near = max_age, rss_change, near
        self.clock = clock
        self.walks = 0
        self._last: dict[int, _Walked] = {}

    def read(self, pid: int, budget: float = math.inf) -> Memory:
        """Memory of ``pid``; USS/PSS are walked whenever one may exceed ``budget`` bytes."""
        now = self.clock()
        rss = rss_of(pid)
        last = self._last.get(pid)
        if last is not None and now - last.at < self.max_age:
            moved = rss - last.rss
            uss = min(max(last.uss + moved, 0), rss)
            pss = min(max(last.pss + moved, 0), rss)
            fresh = abs(moved) <= self.rss_change * max(last.rss, 1)
            if fresh and (rss <= budget or max(uss, pss) < self.near * budget):
                return Memory(rss, uss, pss, False)
        mem = full_memory_of(pid)
        self.walks += 1
        # Later estimates move from statm's RSS, so remember that one, not the walk's.
        self._last[pid] = _Walked(rss, mem.uss, mem.pss, now)
        return mem

    def forget(self, live: Iterable[int]) -> None:
        """Drop the state of pids not in ``live`` (a reused pid starts over)."""
        keep = set(live)
        for pid in [p for p in self._last if p not in keep]:
            del self._last[pid]

    def drop(self, pid: int) -> None:
        """Drop the state of ``pid`` (it exited; the pid may be reused)."""
        self._last.pop(pid, None)


_malloc_trim: Callable[[int], int] | bool | None = False  # False: not looked up yet


def trim() -> bool:
    """Hand the C heap's free pages back to the kernel (glibc ``malloc_trim``); False elsewhere.

    Freed memory stays in the process otherwise: the uploader's renders and
    gzip buffers (a few MB per object) came back from the allocator's arenas
    but stayed resident, several MB of its PSS (measured: 3.8 MB of 26 MB
    USS given back after 100 k records). One call costs about a millisecond:
    once per upload cycle, not per record.
    """
    global _malloc_trim
    if _malloc_trim is False:
        _malloc_trim = None
        try:
            import ctypes

            fn = ctypes.CDLL("libc.so.6").malloc_trim
            fn.argtypes = [ctypes.c_size_t]
            fn.restype = ctypes.c_int
            _malloc_trim = fn
        except (OSError, AttributeError):
            pass  # not glibc (musl, macOS): nothing to do
    if _malloc_trim is None or _malloc_trim is True:
        return False
    _malloc_trim(0)
    return True
