"""The SQLite outbox with real files: batching, crash consistency, budget, corruption, ENOSPC."""

from __future__ import annotations

import gzip
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_actors.outbox import (
    Batch,
    Cursor,
    Outbox,
    OutboxFull,
    OutboxReader,
    OutboxReadError,
    stored_ndjson,
)
from edge_actors.sinks import deliver_batch
from edge_actors.sinks.local import LocalSink

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _zero_based_seqs(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compare sequence numbers with 0..n; production starts at creation time."""
    import edge_actors.outbox

    monkeypatch.setattr(edge_actors.outbox, "DEFAULT_SEQ_BASE", 0)


def _records(n: int, start: int = 0, pad: int = 0) -> list[dict[str, Any]]:
    return [
        {"ts": 1.7e9 + i, "i": i, "v": i * 0.5, "tag": "x" * pad if pad else "t"}
        for i in range(start, start + n)
    ]


def _lines(batch: Batch) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in batch.body.splitlines()]


def _all_records(ob: Outbox, stream: str) -> list[dict[str, Any]]:
    """Every record of ``stream`` still in the outbox, read directly from SQLite."""
    conn = sqlite3.connect(ob.path)
    try:
        out: list[dict[str, Any]] = []
        for s, _first, raw in stored_ndjson(conn):
            assert raw is not None
            if s == stream:
                out.extend(orjson.loads(line) for line in raw.splitlines())
        return out
    finally:
        conn.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    ob = Outbox.open(tmp_path / "outbox.db", max_bytes=64 << 20, chunk_records=100)
    yield ob
    ob.close()


# ------------------------------------------------------------------- basics


def test_append_assigns_per_stream_sequence_and_stores_cursors(outbox: Outbox) -> None:
    outbox.append(
        {"model": _records(250), "system": _records(3)},
        {"model_ring": Cursor(7, 250), "sys_ring": Cursor(8, 3)},
    )
    outbox.append({"model": _records(10, start=250)}, {"model_ring": Cursor(7, 260)})
    assert outbox.cursors() == {"model_ring": Cursor(7, 260), "sys_ring": Cursor(8, 3)}
    got = _all_records(outbox, "model")
    assert [r["seq"] for r in got] == list(range(260))
    assert [r["i"] for r in got] == list(range(260))
    assert [r["seq"] for r in _all_records(outbox, "system")] == [0, 1, 2]
    st = outbox.stats()["streams"]
    assert st["model"]["records"] == 260
    assert st["model"]["rows"] == 4  # 100 + 100 + 50 + 10: chunked, not one row per record
    assert st["model"]["oldest_t"] == 1.7e9


def test_record_seq_field_is_replaced_and_odd_values_serialize(outbox: Outbox) -> None:
    outbox.append({"events": [{"seq": 99, "a": {1, 2}, "b": b"\x01", "c": float("nan")}, {}]}, {})
    batch = outbox.next_batch("events", 10)
    assert batch is not None
    assert _lines(batch) == [{"seq": 0, "a": [1, 2], "b": "01", "c": None}, {"seq": 1}]


def test_next_batch_is_deterministic_until_ack(outbox: Outbox) -> None:
    outbox.append({"model": _records(450)}, {})
    b1 = outbox.next_batch("model", 250)
    assert b1 is not None
    assert (b1.first_seq, b1.last_seq, b1.n) == (0, 199, 200)  # whole chunks only
    outbox.append({"model": _records(10, start=450)}, {})
    assert outbox.next_batch("model", 5000) == b1  # same range, same bytes
    outbox.ack(b1)
    b2 = outbox.next_batch("model", 250)
    assert b2 is not None and (b2.first_seq, b2.last_seq) == (200, 449)  # 100+100+50 rows
    assert [r["i"] for r in _lines(b2)] == list(range(200, 450))
    st = outbox.stats()
    assert st["streams"]["model"]["records"] == 260
    assert st["last_success"] is not None


def test_batches_split_rows_larger_than_max_records(outbox: Outbox) -> None:
    outbox.append({"model": _records(100)}, {})  # one 100-record row
    seen: list[int] = []
    while (batch := outbox.next_batch("model", 30)) is not None:
        assert batch.n <= 30
        assert outbox.next_batch("model", 30) == batch
        seen.extend(r["seq"] for r in _lines(batch))
        outbox.ack(batch)
    assert seen == list(range(100))
    assert outbox.stats()["streams"]["model"] == {
        **outbox.stats()["streams"]["model"],
        "rows": 0,
        "records": 0,
        "bytes": 0,
    }


def test_inflight_range_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox.open(path, max_bytes=1 << 20)
    ob.append({"model": _records(30)}, {})
    batch = ob.next_batch("model", 10)
    ob.close()
    ob = Outbox.open(path, max_bytes=1 << 20)
    assert ob.next_batch("model", 1000) == batch
    assert ob.inflight() == {"model": (0, 9)}
    ob.close()


def test_sequence_numbers_never_reused_after_delete(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox.open(path, max_bytes=1 << 20)
    ob.append({"events": _records(5)}, {})
    batch = ob.next_batch("events", 100)
    assert batch is not None
    ob.ack(batch)
    ob.close()
    ob = Outbox.open(path, max_bytes=1 << 20)
    ob.append({"events": _records(2)}, {})
    again = ob.next_batch("events", 100)
    assert again is not None and (again.first_seq, again.last_seq) == (5, 6)
    ob.close()


def test_open_sets_wal_incremental_vacuum_and_synchronous(tmp_path: Path) -> None:
    ob = Outbox.open(tmp_path / "o.db", max_bytes=1 << 20, synchronous="NORMAL")
    conn = ob._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    ob.close()
    with pytest.raises(ValueError, match="synchronous"):
        Outbox.open(tmp_path / "p.db", max_bytes=1 << 20, synchronous="SOMETIMES")


# -------------------------------------------------------------- crash safety


@pytest.fixture(scope="module")
def crash_writers() -> Any:
    """Processes from a fork server that loaded the crash writer's imports once."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.outbox_child"])
    return ctx


def _sink_records(sink_dir: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"system": [], "model": []}
    for f in sink_dir.rglob("*.ndjson.gz"):
        stream = f.relative_to(sink_dir).parts[0]
        out[stream].extend(
            _i(orjson.loads(x)) for x in gzip.decompress(f.read_bytes()).splitlines()
        )
    return out


def _i(row: dict[str, Any]) -> dict[str, Any]:
    """A block's record carries the test's ``i`` as its ``id``."""
    if "i" not in row:
        row["i"] = row["id"]
    return row


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rows", "blocks"])
def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, mode: str, crash_writers: Any
) -> None:
    """kill -9 at any moment: ring -> outbox -> sink exactly once, dict rows and numpy blocks."""
    from tests import outbox_child

    path = tmp_path / "o.db"
    sink_dir = tmp_path / "sink"
    rng = random.Random(1234)
    for round_ in range(30):
        ours, theirs = crash_writers.Pipe(duplex=False)
        proc = crash_writers.Process(
            target=outbox_child.run, args=(str(path), str(sink_dir), round_, mode, theirs)
        )
        proc.start()
        theirs.close()
        assert ours.poll(60) and ours.recv() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()  # SIGKILL
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        ours.close()

        ob = Outbox.open(path, max_bytes=1 << 30, chunk_records=37)
        cursor = ob.cursors().get("ring", Cursor(1, 0)).seq
        inflight = ob.inflight()
        delivered = _sink_records(sink_dir)
        seen: list[int] = []
        for stream in ("system", "model"):
            stored = [_i(r) for r in _all_records(ob, stream)]
            stored_i = [r["i"] for r in stored]
            assert len(stored_i) == len(set(stored_i)), "duplicate in the outbox"
            sent_i = [r["i"] for r in delivered[stream]]
            assert len(sent_i) == len(set(sent_i)), "duplicate in the sink"
            both = {r["seq"] for r in stored} & {r["seq"] for r in delivered[stream]}
            if both:  # killed between PUT and ack: only the in-flight range may overlap
                lo, hi = inflight[stream]
                assert all(lo <= s <= hi for s in both)
            seen.extend(set(stored_i) | set(sent_i))
            # Sequence numbers of a stream have no gap and no repeat.
            seqs = sorted({r["seq"] for r in stored} | {r["seq"] for r in delivered[stream]})
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True
        assert sorted(seen) == list(range(cursor)), f"round {round_}: cursor {cursor}"
        ob.close()

    ob = Outbox.open(path, max_bytes=1 << 30, chunk_records=37)
    cursor = ob.cursors()["ring"].seq
    assert cursor > 0
    sink = LocalSink(sink_dir)
    for stream in ("system", "model"):
        while deliver_batch(ob, sink, stream, device_id="d", max_records=50):
            pass
    delivered = _sink_records(sink_dir)
    every = [r["i"] for s in delivered.values() for r in s]
    assert sorted(every) == list(range(cursor))
    ob.close()


# ------------------------------------------------------------------ budget


def test_budget_drops_lowest_priority_oldest_first_and_counts(tmp_path: Path) -> None:
    max_bytes = 512 * 1024
    path = tmp_path / "o.db"
    ob = Outbox.open(path, max_bytes=max_bytes, chunk_records=20, compress_level=0)
    produced = {"system": 0, "model": 0, "events": 0}

    def add(stream: str, n: int) -> None:
        ob.append({stream: _records(n, start=produced[stream], pad=300)}, {})
        produced[stream] += n
        db, wal = ob.disk_bytes()
        assert db + wal <= max_bytes, "the budget must hold after every append"

    add("events", 100)
    add("model", 200)
    # System samples pour in until the budget is hit: only system is dropped.
    for _ in range(60):
        add("system", 100)
    drops = ob.drops()
    assert set(drops) == {("system", "budget")}
    assert [r["i"] for r in _all_records(ob, "model")] == list(range(200))
    system_left = [r["i"] for r in _all_records(ob, "system")]
    # Oldest first: what is left is the newest tail, contiguous.
    assert system_left == list(range(produced["system"] - len(system_left), produced["system"]))
    assert drops[("system", "budget")] == produced["system"] - len(system_left)

    # Protect an in-flight model range, then flood with model records.
    inflight = ob.next_batch("model", 20)
    assert inflight is not None
    for _ in range(40):
        add("model", 100)
    drops = ob.drops()
    assert drops[("system", "budget")] == produced["system"], "system goes first, entirely"
    assert ("model", "budget") in drops
    assert ("events", "budget") not in drops
    model_left = [r["i"] for r in _all_records(ob, "model")]
    assert model_left[:20] == list(range(20)), "the in-flight range is spared"
    assert drops[("model", "budget")] == produced["model"] - len(model_left)
    assert [r["i"] for r in _all_records(ob, "events")] == list(range(100))
    assert ob.next_batch("model", 20) == inflight

    # Counters persist, and the report goes out as records of the "drops" stream.
    ob.close()
    ob = Outbox.open(path, max_bytes=max_bytes, chunk_records=20, compress_level=0)
    assert ob.drops() == drops
    assert ob.append_drop_report({"device": "d"}) == 2
    assert ob.pending_drop_report() == {}
    report = {(r["stream"], r["reason"]): r for r in _all_records(ob, "drops")}
    assert report[("system", "budget")]["dropped"] == drops[("system", "budget")]
    assert report[("model", "budget")]["device"] == "d"
    assert ob.append_drop_report() == 0
    st = ob.stats()
    assert st["dropped_total"] == sum(drops.values())
    assert st["db_bytes"] + st["wal_bytes"] <= max_bytes
    ob.close()


def test_inflight_batch_is_never_dropped_so_never_counted_twice(tmp_path: Path) -> None:
    """The shipper may be uploading the in-flight batch: dropping it would count
    records as dropped that then arrive (found by the chaos suite)."""
    path = tmp_path / "o.db"
    ob = Outbox.open(path, max_bytes=1 << 20, chunk_records=20, compress_level=0)
    ob.append({"events": _records(1000, pad=300)}, {})
    batch = ob.next_batch("events", 10_000)
    assert batch is not None and batch.n == 1000  # everything is in flight
    ob.close()
    # The budget shrank (config change): only the in-flight batch is left.
    ob = Outbox.open(path, max_bytes=256 * 1024, chunk_records=20, compress_level=0)
    assert ob.drops() == {}
    again = ob.next_batch("events", 10_000)
    assert again is not None and (again.first_seq, again.last_seq) == (0, 999)
    ob.ack(again)  # delivered: its space comes back, nothing was counted as dropped
    assert ob.drops() == {} and ob.next_batch("events", 10) is None
    ob.close()


# -------------------------------------------------------------- corruption


def test_garbage_file_is_moved_aside_and_a_fresh_outbox_starts(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(os.urandom(50_000))
    (tmp_path / "o.db-wal").write_bytes(b"junk")
    start = time.monotonic()
    ob = Outbox.open(path, max_bytes=1 << 20)
    assert time.monotonic() - start < 5
    assert ob.stats()["corrupt_recovered"] == 1
    aside = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert aside and aside[0].startswith("o.db.corrupt-")
    wal = tmp_path / "o.db-wal"
    assert not wal.exists() or wal.read_bytes() != b"junk"  # the old WAL went with it
    ob.append({"model": _records(3)}, {"r": Cursor(1, 3)})
    assert ob.cursors() == {"r": Cursor(1, 3)}
    ob.close()
    ob = Outbox.open(path, max_bytes=1 << 20)
    assert ob.stats()["corrupt_recovered"] == 1  # persisted, not recounted
    ob.close()


def test_truncated_database_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox.open(path, max_bytes=64 << 20, compress_level=0)
    for k in range(20):
        ob.append({"model": _records(500, start=500 * k, pad=50)}, {"r": Cursor(1, 500 * k)})
    ob.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    ob = Outbox.open(path, max_bytes=64 << 20)
    assert ob.stats()["corrupt_recovered"] == 1
    assert ob.cursors() == {}
    ob.append({"model": _records(1)}, {"r": Cursor(2, 1)})
    assert ob.stats()["streams"]["model"]["records"] == 1
    ob.close()


def test_corruption_found_while_running_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox.open(path, max_bytes=64 << 20, compress_level=0)
    for k in range(30):
        ob.append({"model": _records(500, start=500 * k, pad=200)}, {"r": Cursor(1, 500 * k)})
    ob._checkpoint()
    with open(path, "r+b") as f:  # a flash page goes bad under the running outbox
        f.seek(3 * 4096)
        f.write(os.urandom(20 * 4096))
    st = ob.stats()  # reads the damaged pages: recovers instead of raising
    assert st["corrupt_recovered"] == 1
    assert st["backlog_records"] == 0
    ob.append({"model": _records(5)}, {"r": Cursor(2, 5)})
    assert ob.cursors() == {"r": Cursor(2, 5)}
    batch = ob.next_batch("model", 100)
    assert batch is not None and (batch.first_seq, batch.n) == (0, 5)
    assert any(".corrupt-" in p.name for p in tmp_path.iterdir())
    ob.close()


# ------------------------------------------------------------------- ENOSPC


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_drops_then_reports_outbox_full_and_recovers(small_tmpfs: Path) -> None:
    rng = random.Random(7)
    # The budget (8 MiB) is larger than the file system: the disk fills first.
    ob = Outbox.open(small_tmpfs / "o.db", max_bytes=8 << 20, chunk_records=50)
    assert ob.stats()["reserve_bytes"] > 0
    filler = small_tmpfs / "filler"
    # Leave ~600 KiB for the outbox: other files filled the disk, not our budget.
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 600 * 1024))
    cursor = 0
    full = 0
    for k in range(120):
        # Incompressible payloads so the disk really fills.
        recs = [{"ts": 1.7e9, "i": cursor + j, "p": rng.randbytes(200).hex()} for j in range(50)]
        stream = "system" if k % 2 else "model"
        try:
            ob.append({stream: recs}, {"r": Cursor(1, cursor + 50)})
        except OutboxFull:
            full += 1  # the caller keeps the records in its ring
            continue
        cursor += 50
    drops = ob.drops()
    assert drops.get(("system", "disk_full"), 0) > 0 or full > 0
    assert set(r for _, r in drops) <= {"disk_full"}
    if ("model", "disk_full") in drops:
        assert ("system", "disk_full") in drops  # system goes before model
    assert ob.cursors()["r"].seq == cursor
    st = ob.stats()
    assert st["disk_full_events"] > 0
    assert "disk full" in (st["last_error"] or "")

    filler.unlink()  # space returns
    ob.append({"events": _records(200)}, {"r": Cursor(1, cursor + 200)})
    assert ob.cursors()["r"].seq == cursor + 200
    assert ob.stats()["streams"]["events"]["records"] == 200
    ob.close()


def test_a_recreated_outbox_does_not_reuse_object_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequence numbers name the objects: a new database must start past the old one's."""
    import edge_actors.outbox

    monkeypatch.setattr(edge_actors.outbox, "DEFAULT_SEQ_BASE", None)
    path = tmp_path / "o.db"
    first = Outbox.open(path, max_bytes=1 << 20, clock=lambda: 1_700_000_000.0)
    first.append({"model": _records(5)})
    a = first.next_batch("model", 100)
    first.close()
    assert a is not None and a.first_seq == 1_700_000_000 * 10**9
    path.unlink()  # e.g. a corrupt file moved aside, or deleted by hand
    second = Outbox.open(path, max_bytes=1 << 20, clock=lambda: 1_700_000_001.0)
    second.append({"model": _records(5)})
    b = second.next_batch("model", 100)
    second.close()
    assert b is not None and b.first_seq > a.last_seq


# ------------------------------------------------- a really full file system


@pytest.fixture
def tmpfs8(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs root), unmounted after the test."""
    mnt = tmp_path / "mnt8"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: the full-disk tests did not run")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount an 8 MiB tmpfs: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(path: Path, leave: int = 0) -> Path:
    """Fill the file system of ``path`` with a file until ``leave`` bytes (0: none) are free."""
    filler = path / f"filler-{len(list(path.glob('filler-*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 64 << 10, 4096, 512, 1):
            while _free(path) - size >= leave:
                try:
                    os.write(fd, b"\1" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def _noise(rng: random.Random, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Incompressible records: the disk really fills."""
    return [
        {"ts": 1.7e9 + i, "i": i, "p": rng.randbytes(150).hex()} for i in range(start, start + n)
    ]


def test_uploads_continue_on_a_100_percent_full_disk(tmpfs8: Path, tmp_path: Path) -> None:
    """Nothing else may be written: the shipper still marks, uploads and acks; space returns."""
    rng = random.Random(1)
    ob = Outbox.open(tmpfs8 / "o.db", max_bytes=64 << 20, chunk_records=100)
    for k in range(20):
        ob.append({"model": _noise(rng, 500, k * 500)}, {"r": Cursor(1, (k + 1) * 500)})
    _fill(tmpfs8)
    assert _free(tmpfs8) == 0
    sink = LocalSink(tmp_path / "sink")
    uploaded = 0
    while (b := deliver_batch(ob, sink, "model", device_id="d", max_records=1000)) is not None:
        uploaded += b.n
    assert uploaded == 10_000
    assert ob.drops() == {}, "uploading must not cost records"
    # Ingestion resumes in the room the uploads freed, with the reserve back first.
    ob.append({"model": _noise(rng, 500, 10_000)}, {"r": Cursor(1, 10_500)})
    assert ob.stats()["reserve_bytes"] > 0
    assert ob.drops() == {}
    ob.close()


def test_outbox_opens_on_a_100_percent_full_disk(tmpfs8: Path) -> None:
    """A restart on a full disk: the outbox opens, stores by dropping old data, and uploads."""
    rng = random.Random(2)
    ob = Outbox.open(tmpfs8 / "o.db", max_bytes=64 << 20, chunk_records=100)
    for k in range(20):
        stream = "system" if k % 2 else "model"
        ob.append({stream: _noise(rng, 250, k * 250)}, {"r": Cursor(1, (k + 1) * 250)})
    ob.close()
    _fill(tmpfs8)
    assert _free(tmpfs8) == 0
    ob = Outbox.open(tmpfs8 / "o.db", max_bytes=64 << 20, chunk_records=100)
    assert ob.cursors() == {"r": Cursor(1, 5000)}
    assert not any(".corrupt-" in p.name for p in tmpfs8.iterdir()), "a full disk is no corruption"
    for k in range(6):
        ob.append({"model": _noise(rng, 250, 5000 + k * 250)}, {"r": Cursor(1, 5250 + k * 250)})
    assert ob.cursors() == {"r": Cursor(1, 6500)}
    drops = ob.drops()
    assert drops.get(("system", "disk_full"), 0) > 0, drops
    assert ("model", "disk_full") not in drops, "system goes before model"
    assert ob.next_batch("model", 1000) is not None
    ob.close()


def test_full_disk_never_refuses_while_older_data_can_go(tmpfs8: Path) -> None:
    """Other files fill the disk: every append succeeds by dropping older records, all counted."""
    rng = random.Random(3)
    ob = Outbox.open(tmpfs8 / "o.db", max_bytes=64 << 20, chunk_records=100)
    _fill(tmpfs8, leave=3 << 20)
    appended: dict[str, int] = {"system": 0, "model": 0}
    refused = 0
    for k in range(300):
        stream = "system" if k % 3 == 0 else "model"
        recs = _noise(rng, 60, appended[stream])
        try:
            ob.append({stream: recs}, {stream: Cursor(1, appended[stream] + 60)})
        except OutboxFull:
            refused += 1
            continue
        appended[stream] += 60
    assert refused == 0, f"{refused} appends refused although older records could be dropped"
    st = ob.stats()
    drops = ob.drops()
    assert set(r for _, r in drops) == {"disk_full"}
    for stream, n in appended.items():
        stored = st["streams"][stream]["records"]
        assert stored + drops.get((stream, "disk_full"), 0) == n, (stream, stored, drops)
    # System records go first: a larger share of them was dropped.
    assert drops.get(("system", "disk_full"), 0) > 0
    system_share = drops[("system", "disk_full")] / appended["system"]
    assert system_share > drops.get(("model", "disk_full"), 0) / appended["model"]
    assert st["reserve_bytes"] > 0
    ob.close()


def test_secure_delete_off_and_wal_bounded_by_the_reserve(tmp_path: Path) -> None:
    """Deleting must not rewrite the freed pages; the WAL never outgrows the reserve."""
    rng = random.Random(4)
    ob = Outbox.open(tmp_path / "o.db", max_bytes=32 << 20, chunk_records=100)
    assert ob._conn.execute("PRAGMA secure_delete").fetchone()[0] == 0
    reader = sqlite3.connect(ob.path)  # the shipper's connection reads meanwhile
    try:
        for k in range(40):
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM chunks").fetchone()
            ob.append({"model": _noise(rng, 400, k * 400)}, {"r": Cursor(1, (k + 1) * 400)})
            reader.execute("COMMIT")
            ob.append({"system": _noise(rng, 50, k * 50)})
            wal = ob.disk_bytes()[1]
            assert wal <= ob.stats()["reserve_bytes"], (k, wal, ob.stats()["reserve_bytes"])
    finally:
        reader.close()
        ob.close()


def test_spilled_drop_counts_are_folded_in_once(tmp_path: Path) -> None:
    """Counts the outbox could not take (side file) reach the drops table exactly once."""
    from edge_actors import spill

    db = tmp_path / "o.db"
    ob = Outbox.open(db, max_bytes=1 << 20)
    ob.append({"model": _records(10)}, {"lane_0": Cursor(5, 10), "sys": Cursor(6, 3)})
    ob.close()
    side = spill.spill_path(db)
    # The uploader, outbox refusing: 7 overwritten records skipped, cursor moved past them.
    spill.add(side, {("model", "ring_overrun"): 7}, {"lane_0": (5, 17)})
    # The supervisor at a clean stop: lane_0 ended at 20 (3 never read), sys at 3.
    spill.add(side, ended={"lane_0": ("model", 5, 17, 20), "sys": ("system", 6, 3, 3)})
    assert side.stat().st_mode & 0o777 == 0o600
    saved = side.read_bytes()
    ob = Outbox.open(db, max_bytes=1 << 20)
    assert not side.exists()
    want = {("model", "ring_overrun"): 7, ("model", "unflushed_at_stop"): 3}
    assert ob.drops() == want
    assert ob.cursors() == {}, "the rings that ended are forgotten: no false gap at restart"
    ob.close()
    side.write_bytes(saved)  # as if the process died between the fold's commit and the unlink
    ob = Outbox.open(db, max_bytes=1 << 20)
    assert ob.drops() == want
    assert not side.exists()
    ob.close()


# --------------------------------------------------------- read-only reader


def test_reader_returns_the_stored_records_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    with Outbox.open(db, max_bytes=64 << 20, chunk_records=100) as ob:
        ob.append({"model": _records(250), "system": _records(3)}, {})
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with OutboxReader(db) as reader:
        chunks = list(reader.chunks())
    # Read-only: no -wal/-shm left behind (an admin's report must not leave
    # root-owned files next to the agent's database), nothing modified.
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert [(c.stream, c.first_seq, c.last_seq) for c in chunks] == [
        ("model", 0, 99),
        ("model", 100, 199),
        ("model", 200, 249),
        ("system", 0, 2),
    ]
    model = [r for c in chunks if c.stream == "model" for r in c.records]
    assert model == [{"seq": i, **r} for i, r in enumerate(_records(250))]
    assert all(c.unreadable == 0 for c in chunks)


def test_reader_sees_what_a_running_writer_committed(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    with Outbox.open(db, max_bytes=64 << 20, compress_level=0) as ob:
        ob.append({"events": _records(2)}, {})
        assert Path(f"{db}-wal").exists()
        with OutboxReader(db) as reader:
            (chunk,) = reader.chunks()
        ob.append({"events": _records(1, start=2)}, {})  # the writer is not blocked
    assert [r["i"] for r in chunk.records] == [0, 1]


def test_reader_counts_undecodable_records_and_refuses_other_files(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    with Outbox.open(db, max_bytes=64 << 20, compress_level=0) as ob:
        ob.append({"events": _records(3)}, {})
    conn = sqlite3.connect(db)
    (body,) = conn.execute("SELECT body FROM chunks").fetchone()
    conn.execute("UPDATE chunks SET body = ?", (bytes(body) + b"[1]\nx{\n",))
    conn.commit()
    conn.close()
    with OutboxReader(db) as reader:
        (chunk,) = reader.chunks()
    assert [r["i"] for r in chunk.records] == [0, 1, 2]
    assert chunk.unreadable == 2  # a JSON array and a broken line

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.close()
    with OutboxReader(other) as reader, pytest.raises(OutboxReadError, match="no chunks table"):
        list(reader.chunks())
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with OutboxReader(garbage) as reader, pytest.raises(OutboxReadError, match="not a database"):
        list(reader.chunks())


# ------------------------------------------------------------ numpy blocks


def _lane_block(n: int, start: int = 0) -> tuple[Any, Any, Any]:
    """Lane records of every shape the renderer handles, with their ring seqs and row maker."""
    import numpy as np

    from edge_actors.config import FieldSpec
    from edge_actors.records import KIND_INPUT, KIND_OUTPUT, KIND_PAIR, model_dtype
    from edge_actors.rows import ModelRows

    inputs = [FieldSpec("sqft"), FieldSpec("room", kind="categorical", categories=["a", "b"])]
    rows = ModelRows("pi-7", "house", inputs, [FieldSpec("price")])
    rng = np.random.default_rng(start)
    recs = np.zeros(n, model_dtype(3))
    recs["t_ns"] = 1_795_000_000_123_456_789 + (np.arange(n) + start) * 1_234_567
    recs["id"] = np.arange(start, start + n) + (1 << 62)
    recs["kind"] = np.array([KIND_PAIR, KIND_INPUT, KIND_OUTPUT, 7])[np.arange(n) % 4]
    recs["v"][:, 0] = rng.normal(size=n).round(3)
    recs["v"][:, 1] = np.array([0.0, 1.0, 5.0, -1.0, np.nan])[np.arange(n) % 5]
    recs["v"][:, 2] = rng.uniform(1e4, 1e6, n)
    recs["v"][::7, 0] = np.nan
    recs["v"][::11, 2] = np.inf
    seqs = np.arange(start, start + n, dtype=np.int64) * 2
    return recs, seqs, rows


def _lane_spec(rows: Any) -> dict[str, Any]:
    from edge_actors.rows import block_spec

    return block_spec(
        "lane",
        device_id=rows.device_id,
        model=rows.model,
        lane="ea_l0",
        inputs=rows.in_names,
        outputs=rows.out_names,
        cats={str(i): c for i, c in rows.cats.items()},
    )


def test_block_objects_carry_the_bytes_the_row_form_gives(tmp_path: Path) -> None:
    """The uploaded NDJSON of numpy blocks equals the dict rows' (same fields, same values)."""
    import numpy as np

    from edge_actors.outbox import RecordBlock
    from edge_actors.records import payload_dtype
    from edge_actors.rows import block_spec, payload_rows

    recs, seqs, rows = _lane_block(400)
    pay = np.zeros(6, payload_dtype(96))
    pay["t_ns"], pay["id"], pay["kind"] = recs["t_ns"][:6], np.arange(6), 1
    docs = [b'{"input_data":{"a":[1,2.5,null]}}', b'{"x":"\\u00e9,]"}', b"{bad", b"", b"7", b"{}"]
    for i, raw in enumerate(docs):
        pay["len"][i] = len(raw)
        pay["data"][i, : len(raw)] = np.frombuffer(raw, np.uint8)
    pay["len"][5] = 99  # longer than the slot: the row form reads what is there
    for form in ("rows", "blocks"):
        with Outbox.open(tmp_path / f"{form}.db", max_bytes=1 << 26, chunk_records=64) as ob:
            if form == "rows":
                ob.append(
                    {
                        "model": rows.rows("ea_l0", recs, seqs),
                        "payload": payload_rows("pi-7", "house", "ea_l0", pay),
                    }
                )
            else:
                spec = block_spec("payload", device_id="pi-7", model="house", lane="ea_l0")
                ob.append(
                    {},
                    blocks={
                        "model": [
                            RecordBlock(_lane_spec(rows), recs[:150], seqs[:150]),
                            RecordBlock(_lane_spec(rows), recs[150:], seqs[150:]),
                        ],
                        "payload": [RecordBlock(spec, pay, np.arange(6))],
                    },
                )
            got = {s: ob.peek(s, 10_000) for s in ("model", "payload")}
            if form == "rows":
                want = got
    for s in ("model", "payload"):
        assert got[s] is not None and want[s] is not None
        assert got[s].body == want[s].body, s
        assert (got[s].first_seq, got[s].last_seq, got[s].t_min) == (
            want[s].first_seq,
            want[s].last_seq,
            want[s].t_min,
        )
    first = orjson.loads(got["payload"].body.splitlines()[2])
    assert first["payload"] == {"_undecodable": "{bad"}


@pytest.mark.parametrize("kinds", ["one kind", "mixed"])
def test_block_objects_match_the_row_form_across_midnight(tmp_path: Path, kinds: str) -> None:
    """A block of one kind (rendered as a constant) spanning two UTC days renders like rows."""
    import numpy as np

    from edge_actors.outbox import RecordBlock
    from edge_actors.records import KIND_PAIR

    recs, seqs, rows = _lane_block(300)
    midnight = 1_795_046_400 * 10**9  # 2026-11-19T00:00:00Z
    recs["t_ns"] = midnight - 150 * 997_001 + np.arange(300) * 997_001
    if kinds == "one kind":
        recs["kind"] = KIND_PAIR
    bodies = []
    for form in ("rows", "blocks"):
        with Outbox.open(tmp_path / f"{form}{kinds}.db", max_bytes=1 << 26) as ob:
            if form == "rows":
                ob.append({"model": rows.rows("ea_l0", recs, seqs)})
            else:
                ob.append({}, blocks={"model": [RecordBlock(_lane_spec(rows), recs, seqs)]})
            batch = ob.peek("model", 10_000)
            assert batch is not None
            bodies.append(batch.body)
    assert bodies[0] == bodies[1]
    assert b'"2026-11-18T23:59:59.' in bodies[1] and b'"2026-11-19T00:00:00.' in bodies[1]


def test_block_batches_are_deterministic_and_split_chunks_exactly_once(tmp_path: Path) -> None:
    """Batches cutting through block chunks: same bytes until acked, every record once."""
    from edge_actors.outbox import RecordBlock

    recs, seqs, rows = _lane_block(250)
    path = tmp_path / "o.db"
    sink = LocalSink(tmp_path / "sink")
    with Outbox.open(path, max_bytes=1 << 26, chunk_records=100) as ob:
        ob.append(
            {},
            {"ea_l0": Cursor(1, 250)},
            blocks={"model": [RecordBlock(_lane_spec(rows), recs, seqs)]},
        )
        b1 = ob.next_batch("model", 60)
        assert b1 is not None and (b1.first_seq, b1.last_seq, b1.n) == (0, 59, 60)
        assert ob.next_batch("model", 60) == b1
    with Outbox.open(path, max_bytes=1 << 26, chunk_records=100) as ob:
        assert ob.next_batch("model", 999) == b1  # in flight across a reopen
        ob.ack(b1)
        assert ob.stats()["streams"]["model"]["records"] == 190
        while deliver_batch(ob, sink, "model", device_id="pi-7", max_records=70):
            pass
        assert ob.stats()["backlog_records"] == 0
    lines = [orjson.loads(x) for x in b1.body.splitlines()]
    for f in sorted((tmp_path / "sink").rglob("*.ndjson.gz")):
        lines.extend(orjson.loads(x) for x in gzip.decompress(f.read_bytes()).splitlines())
    assert [r["seq"] for r in lines] == list(range(250))
    assert [r["lane_seq"] for r in lines] == [int(s) for s in seqs]
    assert lines == [orjson.loads(x) for x in _rows_ndjson(rows, recs, seqs)]


def _rows_ndjson(rows: Any, recs: Any, seqs: Any) -> list[bytes]:
    import numpy as np

    out = []
    for i, row in enumerate(rows.rows("ea_l0", recs, seqs)):
        out.append(orjson.dumps({"seq": i, **row}, option=orjson.OPT_SERIALIZE_NUMPY))
    assert len(out) == len(np.asarray(seqs))
    return out


V1_OUTBOX = REPO / "tests" / "data" / "outbox_v1.db"


def test_outbox_of_the_previous_format_still_ships(tmp_path: Path) -> None:
    """A device upgraded with records (and an in-flight batch) in the old NDJSON form.

    ``tests/data/outbox_v1.db`` was written by the code before numpy blocks
    (commit fe134a4, ``tests/data/make_outbox_v1.py``): 300 model and
    40 payload records as NDJSON rows, records 1000..1099 of ``model`` handed
    out and never acked. After the upgrade the in-flight range goes first,
    under the key it had, then the rest, then new block records: each once.
    """
    import shutil

    import numpy as np

    from edge_actors.outbox import RecordBlock

    path = tmp_path / "outbox.db"
    shutil.copyfile(V1_OUTBOX, path)
    sink = LocalSink(tmp_path / "sink")
    with Outbox.open(path, max_bytes=1 << 26, chunk_records=50) as ob:
        assert ob.inflight() == {"model": (1000, 1099)}
        assert ob.cursors() == {"ea_l0": Cursor(5, 300), "ea_p0": Cursor(6, 40)}
        assert ob.drops() == {("model", "ring_overrun"): 3}
        first = deliver_batch(ob, sink, "model", device_id="pi-old", max_records=5000)
        assert first is not None and (first.first_seq, first.last_seq) == (1000, 1099)
        recs, seqs, rows = _lane_block(30, start=300)
        ob.append(
            {},
            {"ea_l0": Cursor(5, 330)},
            blocks={"model": [RecordBlock(_lane_spec(rows), recs, seqs)]},
        )
        for stream in ("model", "payload"):
            while deliver_batch(ob, sink, stream, device_id="pi-old", max_records=5000):
                pass
        assert ob.stats()["backlog_records"] == 0
    got: dict[str, list[dict[str, Any]]] = {"model": [], "payload": []}
    keys = sorted(p.name for p in (tmp_path / "sink").rglob("*.ndjson.gz"))
    assert "00000000000000001000-00000000000000001099.ndjson.gz" in keys
    for f in (tmp_path / "sink").rglob("*.ndjson.gz"):
        stream = f.relative_to(tmp_path / "sink").parts[0]
        got[stream].extend(orjson.loads(x) for x in gzip.decompress(f.read_bytes()).splitlines())
    model = sorted(got["model"], key=lambda r: r["seq"])
    assert [r["seq"] for r in model] == list(range(1000, 1330))
    assert [r["id"] for r in model[:300]] == list(range(300))
    assert model[299]["inputs"] == {"sqft": 299.0, "age": 7.0}
    assert [r["id"] - (1 << 62) for r in model[300:]] == list(range(300, 330))
    assert sorted(r["payload"]["input_data"]["note"] for r in got["payload"]) == sorted(
        f"n{i}" for i in range(40)
    )
    assert np.all(np.diff([r["seq"] for r in sorted(got["payload"], key=lambda r: r["seq"])]) == 1)


def test_stored_ndjson_reads_both_forms_read_only(tmp_path: Path) -> None:
    """The read-only view report.py uses: old rows and blocks, on a read-only connection."""
    import shutil
    import urllib.parse

    from edge_actors.outbox import RecordBlock

    path = tmp_path / "outbox.db"
    shutil.copyfile(V1_OUTBOX, path)
    uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    old = [(s, f, raw) for s, f, raw in stored_ndjson(conn)]  # schema 1: no schema_id column
    conn.close()
    assert sum(len(raw.splitlines()) for _s, _f, raw in old if raw) == 340
    recs, seqs, rows = _lane_block(20)
    with Outbox.open(path, max_bytes=1 << 26, chunk_records=50) as ob:
        ob.append({}, blocks={"model": [RecordBlock(_lane_spec(rows), recs, seqs)]})
    conn = sqlite3.connect("file:" + urllib.parse.quote(str(path)) + "?mode=ro", uri=True)
    try:
        lines = [
            x
            for s, _f, raw in stored_ndjson(conn)
            if s == "model" and raw
            for x in raw.splitlines()
        ]
    finally:
        conn.close()
    assert len(lines) == 320
    assert orjson.loads(lines[-1])["lane_seq"] == int(seqs[-1])
