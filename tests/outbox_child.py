"""The writer that test_outbox's crash test kills with SIGKILL at random points.

Runs in a child forked from a ``multiprocessing`` fork server that imported
this module (numpy, the outbox, the sinks) once: a round costs a fork, not a
Python start with numpy, and the child is still a separate process with its
own SQLite connection, killed for real.
"""

from __future__ import annotations

import random
from multiprocessing.connection import Connection

import numpy as np

from edge_actors.outbox import Cursor, Outbox, RecordBlock
from edge_actors.records import model_dtype
from edge_actors.rows import block_spec
from edge_actors.sinks import deliver_batch
from edge_actors.sinks.local import LocalSink


def run(path: str, sink_dir: str, seed: int, mode: str, ready: Connection) -> None:
    """Append ring-like records (and deliver some) forever; says ``ready`` once open."""
    spec = block_spec("lane", device_id="d", model="m", lane="l0", inputs=["v"], outputs=[])
    ob = Outbox.open(path, max_bytes=1 << 30, chunk_records=37)
    cur = ob.cursors().get("ring", Cursor(1, 0)).seq
    sink = LocalSink(sink_dir)
    rng = random.Random(seed)
    ready.send("ready")
    while True:
        k = rng.randint(1, 80)
        batch: dict[str, list[dict[str, float]]] = {"system": [], "model": []}
        for i in range(cur, cur + k):
            # The "ring": record i is a pure function of i, as a re-read would give.
            batch["model" if i % 3 else "system"].append({"ts": 1.7e9 + i, "i": i, "v": i / 7})
        blocks = {}
        if mode == "blocks":
            # The model records as the uploader stores them: numpy, ring layout.
            ids = np.array([r["i"] for r in batch.pop("model")], np.int64)
            recs = np.zeros(len(ids), model_dtype(1))
            recs["t_ns"], recs["id"], recs["v"][:, 0] = (1.7e9 + ids) * 1e9, ids, ids / 7
            blocks = {"model": [RecordBlock(spec, recs, ids)]}
        ob.append(batch, {"ring": Cursor(1, cur + k)}, blocks=blocks)
        cur += k
        if rng.random() < 0.3:
            for s in ("system", "model"):
                deliver_batch(ob, sink, s, device_id="d", max_records=50)
