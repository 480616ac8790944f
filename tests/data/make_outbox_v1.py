"""Writes ``tests/data/outbox_v1.db`` with the code from before numpy blocks (commit fe134a4).

    git worktree add /tmp/v1 fe134a4 && cd /tmp/v1 && PYTHONPATH=. python \\
        /path/to/tests/data/make_outbox_v1.py /path/to/tests/data/outbox_v1.db

300 model records (ids 0..299) and 40 payload records as NDJSON rows, ring
cursors, a drop count, and model records 1000..1099 handed out by
``next_batch`` and never acked (in flight at the upgrade).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge_actors.config import FieldSpec
from edge_actors.outbox import Cursor, Outbox
from edge_actors.records import KIND_INPUT, KIND_PAIR, model_dtype, payload_dtype
from edge_actors.rows import ModelRows, payload_rows


def main() -> None:
    """Write the file named on the command line."""
    out = Path(sys.argv[1])
    out.unlink(missing_ok=True)
    rows = ModelRows("pi-old", "house", [FieldSpec("sqft"), FieldSpec("age")], [FieldSpec("price")])
    recs = np.zeros(300, model_dtype(3))
    recs["t_ns"] = 1_790_000_000_000_000_000 + np.arange(300) * 1_000_000_000
    recs["id"] = np.arange(300)
    recs["kind"] = KIND_PAIR
    recs["v"] = np.stack([np.arange(300) * 1.0, np.full(300, 7.0), np.arange(300) * 250.0], 1)
    pay = np.zeros(40, payload_dtype(128))
    pay["t_ns"] = recs["t_ns"][:40]
    pay["id"] = np.arange(40)
    pay["kind"] = KIND_INPUT
    for i in range(40):
        raw = b'{"input_data":{"note":"n%d"}}' % i
        pay["len"][i] = len(raw)
        pay["data"][i, : len(raw)] = np.frombuffer(raw, np.uint8)
    ob = Outbox.open(out, max_bytes=16 << 20, chunk_records=50, seq_base=1000)
    ob.append({"model": rows.rows("ea_l0", recs[:200], np.arange(200))}, {"ea_l0": Cursor(5, 200)})
    ob.append(
        {
            "model": rows.rows("ea_l0", recs[200:], np.arange(200, 300)),
            "payload": payload_rows("pi-old", "house", "ea_l0", pay),
        },
        {"ea_l0": Cursor(5, 300), "ea_p0": Cursor(6, 40)},
        {("model", "ring_overrun"): 3},
    )
    batch = ob.next_batch("model", 120)  # handed out, never acked: in flight at the upgrade
    assert batch is not None
    print(batch.first_seq, batch.last_seq)
    ob.close()
    Path(f"{out}-reserve").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
