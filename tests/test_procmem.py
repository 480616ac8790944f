"""Memory readings of real processes: the gauge agrees with psutil, never misses a budget."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from edge_actors.procmem import MemoryGauge, full_memory_of, rss_of

MB = 2**20
# A process that holds N more MB of touched private memory per line "N" it reads.
_GROWER = """
import sys
held = []
print("ready", flush=True)
for line in sys.stdin:
    held.append(bytearray(b"\\x01") * (int(line) << 20))
    print("ok", flush=True)
"""


class Grower:
    """A child process whose unique memory grows on demand."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _GROWER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def grow(self, mb: int) -> None:
        """Hold ``mb`` more MB, touched."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{mb}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"


@pytest.fixture
def grower() -> Iterator[Grower]:
    g = Grower()
    try:
        yield g
    finally:
        g.proc.kill()
        g.proc.wait()


def test_readings_match_psutil(grower: Grower) -> None:
    grower.grow(24)
    ours = full_memory_of(grower.pid)
    theirs = psutil.Process(grower.pid).memory_full_info()
    # The process is idle, so both walks see the same pages; allow for page-cache noise.
    assert abs(ours.uss - theirs.uss) < 1 * MB
    assert abs(ours.pss - theirs.pss) < 1 * MB
    assert abs(ours.rss - theirs.rss) < 1 * MB
    assert abs(rss_of(grower.pid) - theirs.rss) < 1 * MB
    assert ours.uss > 24 * MB


def test_a_process_within_budget_by_rss_is_not_walked_every_time(grower: Grower) -> None:
    gauge = MemoryGauge(max_age=3600)
    first = gauge.read(grower.pid, 500 * MB)
    assert first.exact
    for _ in range(10):
        mem = gauge.read(grower.pid, 500 * MB)
        assert not mem.exact
        assert abs(mem.uss - first.uss) < 1 * MB
    assert gauge.walks == 1


def test_growth_past_the_budget_is_seen_on_the_next_reading(grower: Grower) -> None:
    gauge = MemoryGauge(max_age=3600)
    base = gauge.read(grower.pid, 1e12)
    budget = base.uss + 40 * MB
    for _ in range(3):
        assert gauge.read(grower.pid, budget).uss < budget
    grower.grow(60)
    mem = gauge.read(grower.pid, budget)
    assert mem.exact
    assert mem.uss > budget
    assert abs(mem.uss - psutil.Process(grower.pid).memory_full_info().uss) < 1 * MB


def test_a_dead_pid_raises_what_callers_catch(grower: Grower) -> None:
    pid = grower.pid
    grower.proc.kill()
    grower.proc.wait()
    gauge = MemoryGauge()
    with pytest.raises((psutil.Error, OSError)):
        gauge.read(pid)
