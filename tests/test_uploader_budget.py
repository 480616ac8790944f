"""The uploader's step is bounded by time: on a slow board it reads less per step.

Emulated ARM (about 25x slower than this machine) showed the symptom: the
uploader read a full batch from each of two lanes in one step, went silent
past the 10 s heartbeat timeout and was killed, again after every restart.
A slow board is given here as a step budget this machine cannot meet (every
step is over it, as on the slow board); the records, ring, outbox and SQLite
are real.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_actors.config import load_config
from edge_actors.ring import Ring
from edge_actors.topology import RingSpec, dtype_for
from edge_actors.workers import uploader as up
from tests.helpers_ring import Segments


def test_slow_board_reads_what_fits_the_step_budget_then_speeds_up(
    make_config: Callable[..., Path], segs: Segments
) -> None:
    cfg = load_config(make_config({"workers": {"drift": {"enabled": False}}}))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    w = up.UploaderWorker(cfg, ours)
    w.setup()
    n = 20_000
    ring = Ring.create(segs.new(), dtype_for("lane", cfg), 1 << 15, 2)
    recs = np.zeros(n, dtype_for("lane", cfg))
    recs["t_ns"] = 1_700_000_000 * 10**9 + np.arange(n)
    recs["v"][:, 3] = np.arange(n)
    ring.writer().write_batch(recs)
    try:
        w.set_rings([RingSpec(ring.name, "lane")])
        w.step_budget = 1e-9  # the slow board: every step is over budget
        # A (re)started uploader starts small, not with a full batch per ring...
        first = w.step()
        assert first == up.FIRST_READ < up.INGEST_BATCH
        # ... and over budget it shrinks to the minimum at once.
        assert w.step() == up.MIN_READ
        total = up.FIRST_READ + up.MIN_READ
        # A board that meets its budget by far (a generous one, so that a loaded
        # test machine is not a slow board): the reads grow, nothing is lost.
        w.step_budget = 60.0
        reads = []
        idle = 0
        while total < n:
            got = w.step()
            if got == 0:
                # Fewer than COMMIT_RECORDS wait: the uploader holds them for up to
                # COMMIT_SECONDS to write one larger transaction.
                idle += 1
                assert idle < 50, "records left waiting in the ring"
                time.sleep(up.COMMIT_SECONDS)
                continue
            total += got
            reads.append(got)
        assert total == n and max(reads) == up.INGEST_BATCH
        assert w.stats()["ingested"] == n and w.stats()["max_step_seconds"] > 0
    finally:
        w.close()
        ours.close()
        theirs.close()
        ring.close()
