"""The uploader worker: every ring → SQLite outbox → sink (S3 or a local directory).

Two loops, two SQLite connections on one WAL database:

- The worker's own loop *ingests*: it reads each ring with ``commit=False``
  and stores the records together with every ring's cursor in one outbox
  transaction; only then does it publish the cursors to the ring headers.
  Model and payload records stay in their ring layout (numpy blocks: no
  per-record Python object; the NDJSON is built when a batch is uploaded);
  the low-rate streams (system, processes, events) become rows here. A
  transaction is written every ``COMMIT_SECONDS`` or ``COMMIT_RECORDS``
  records, whichever comes first, or at once when a ring is half full (the
  records wait in the rings meanwhile: a commit per poll cost an fsync per
  few hundred records). After a kill at any instant the next incarnation resumes at
  the outbox's cursors: nothing lost or stored twice between ring and outbox.
- A *shipper* thread uploads: batches of at most ``telemetry.max_batch_size``
  records per stream, deterministic keys, acked only after the sink confirmed.
  It runs in a thread so that a slow network never delays ingestion or the
  heartbeat (a put may legitimately take the read timeout).

``storage.type: sqlite`` keeps everything in the outbox (no shipper): the
seed's local-only mode.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_actors import procmem, spill
from edge_actors.lanemodel import LaneModel, default_model, from_label
from edge_actors.outbox import Cursor, Outbox, OutboxFull, RecordBlock
from edge_actors.records import KIND_FEEDBACK
from edge_actors.redact import redact_urls
from edge_actors.retry import RetryPolicy, RetrySchedule
from edge_actors.ring import Ring, RingConsumer, RingError
from edge_actors.rows import (
    ModelRows,
    block_spec,
    event_rows,
    iso,
    process_rows,
    system_rows,
)
from edge_actors.topology import UPLOADER, RingSpec, dtype_for, ring_name
from edge_actors.workers.base import Worker

log = logging.getLogger(__name__)

#: Records read from one ring per step: bounds one outbox transaction and the
#: worker's memory (each record becomes a dict before it is encoded; 20,000 per
#: lane pushed the uploader past its 80 MB budget at 100k records/s).
INGEST_BATCH = 5000
#: Write an outbox transaction once this many records wait in the rings ...
COMMIT_RECORDS = 5000
#: ... or once the oldest of them waited this long (seconds) ...
COMMIT_SECONDS = 0.1
#: ... or at once when a ring is this full (fraction of its capacity).
COMMIT_FILL = 0.5
#: A step (read, encode, one outbox transaction) stays under this share of the
#: heartbeat timeout, at most MAX_STEP_SECONDS: the records read per ring adapt
#: to what a step costs here. On emulated ARM (~25x slower) a full INGEST_BATCH
#: from each of two lanes took the uploader past the 10 s heartbeat timeout.
STEP_SHARE_OF_HEARTBEAT_TIMEOUT = 0.1
MAX_STEP_SECONDS = 1.0
#: Records per ring of the first step after a (re)start: what fits a slow
#: board's budget; a fast machine grows to INGEST_BATCH within a few steps.
FIRST_READ = 200
#: Fewest records read from one ring per step, whatever the measured cost.
MIN_READ = 64
#: Upload order: what matters most leaves first on a thin link.
UPLOAD_ORDER = ("events", "drops", "model", "feedback", "payload", "processes", "system")


#: Seconds between two attempts to open an outbox that could not be opened.
REOPEN_SECONDS = 5.0
#: Seconds between two drop reports (records of the "drops" stream).
DROP_REPORT_SECONDS = 10.0


def open_outbox(cfg: Any) -> Outbox:
    """The outbox of this config (one per connection user: worker loop, shipper thread)."""
    st = cfg.storage
    return Outbox.open(
        st.sqlite_path,
        max_bytes=int(st.max_sqlite_size_mb * 2**20),
        synchronous=st.synchronous,
        # A batch is built from whole chunks: a chunk must not exceed a batch.
        chunk_records=min(1000, cfg.telemetry.max_batch_size),
    )


@dataclass
class _Source:
    spec: RingSpec
    ring: Ring
    cons: RingConsumer
    #: A lane's (or payload ring's) model, from its label.
    model: LaneModel | None = None

    @property
    def stream(self) -> str:
        """The outbox stream its records go to: ``model/<name>`` for a model's lane."""
        if self.model is None:
            return self.spec.stream
        return f"{self.spec.stream}/{self.model.name}"


def upload_order(streams: list[str]) -> list[str]:
    """The outbox's streams in :data:`UPLOAD_ORDER` of their kind (``model/x`` is a ``model``)."""
    rank = {kind: i for i, kind in enumerate(UPLOAD_ORDER)}
    known = [s for s in streams if s.split("/")[0] in rank]
    return sorted(known, key=lambda s: (rank[s.split("/")[0]], s))


@dataclass
class ShipperState:
    """Figures the shipper thread publishes for ``status`` (written by it, read by the worker)."""

    uploaded_records: int = 0
    uploaded_objects: int = 0
    last_success: float | None = None
    last_error: str = ""
    last_error_hint: str = ""
    attempts: int = 0
    next_attempt_in: float = 0.0
    per_stream: dict[str, int] = field(default_factory=dict)


class Shipper(threading.Thread):
    """Uploads outbox batches to the sink, with backoff; never drops anything."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(name="edge-actors-shipper", daemon=True)
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.state = ShipperState()
        #: Set by a flush request: the next cycle starts now, not after the interval.
        self.asap = False
        #: Set while uploads are paused: batches wait in the outbox.
        self.hold = False
        tm = cfg.telemetry
        self.backoff = RetrySchedule(
            RetryPolicy(
                base=tm.retry_base_delay_seconds,
                max_delay=tm.retry_max_delay_seconds,
                max_attempts=tm.retry_max_attempts,
                cycle_interval=tm.upload_interval_seconds,
            )
        )

    def run(self) -> None:
        """Upload cycle every ``upload_interval_seconds`` (or when woken), until stopped."""
        from edge_actors.sinks import (
            PermanentSinkError,
            TransientSinkError,
            deliver_batch,
            make_sink,
        )

        st = self.cfg.storage
        try:
            outbox = open_outbox(self.cfg)
            sink = make_sink(
                st.type,
                bucket=st.bucket,
                prefix=st.prefix,
                local_path=st.local_path,
                endpoint_url=st.endpoint_url,
                region=st.region,
            )
        except (OSError, ValueError) as exc:
            # Permanent until the config is fixed: say so in status, not only in the log.
            self.state.last_error = redact_urls(f"cannot start uploads: {exc}")
            self.state.last_error_hint = "fix the storage settings and restart the agent"
            log.error("%s", self.state.last_error)
            return
        interval = self.cfg.telemetry.upload_interval_seconds
        max_records = self.cfg.telemetry.max_batch_size
        device = self.cfg.device_id
        next_cycle = time.monotonic()
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if self.hold:
                    self.state.next_attempt_in = 0.0
                    self.wake.wait(1.0)
                    self.wake.clear()
                    continue
                if self.asap:
                    self.asap = False
                    next_cycle = min(next_cycle, now)
                wait = max(next_cycle, self.backoff.next_attempt_at(now)) - now
                self.state.next_attempt_in = max(0.0, wait)
                if wait > 0:
                    self.wake.wait(min(wait, 1.0))
                    self.wake.clear()
                    continue
                failed = False
                for stream in upload_order(outbox.stream_names()):
                    while not self.stop_event.is_set():
                        try:
                            batch = deliver_batch(
                                outbox,
                                sink,
                                stream,
                                device_id=device,
                                max_records=max_records,
                                gzip_level=st.gzip_level,
                            )
                        except PermanentSinkError as exc:
                            self._failed(outbox, stream, exc, permanent=True)
                            failed = True
                            break
                        except (TransientSinkError, OutboxFull) as exc:
                            self._failed(outbox, stream, exc, permanent=False)
                            failed = True
                            break
                        except ValueError as exc:
                            # A key the sink refuses (keys.object_key): retrying cannot
                            # help, and letting it out would end this thread unseen.
                            self._failed(outbox, stream, exc, permanent=True)
                            failed = True
                            break
                        if batch is None:
                            break
                        self.backoff.on_success()
                        s = self.state
                        s.uploaded_records += batch.n
                        s.uploaded_objects += 1
                        s.per_stream[stream] = s.per_stream.get(stream, 0) + batch.n
                        s.last_success = time.time()
                        s.last_error = s.last_error_hint = ""
                    if failed:
                        break
                if not failed:
                    next_cycle = time.monotonic() + interval
                # The cycle's renders and gzip buffers are freed; hand their pages back.
                procmem.trim()
        finally:
            sink.close()
            outbox.close()

    def _failed(self, outbox: Outbox, stream: str, exc: Exception, *, permanent: bool) -> None:
        now = time.monotonic()
        self.backoff.on_failure(now, permanent=permanent)
        hint = redact_urls(str(getattr(exc, "hint", "") or ""))
        msg = redact_urls(f"upload of {stream} failed: {exc}")
        self.state.attempts += 1
        if msg != self.state.last_error:
            (log.error if permanent else log.warning)("%s%s", msg, f" ({hint})" if hint else "")
        self.state.last_error, self.state.last_error_hint = msg, hint
        try:
            outbox.record_error(stream, msg)
        except Exception:
            pass

    def stop(self, timeout: float) -> None:
        """Ask the thread to finish its current put and exit."""
        self.stop_event.set()
        self.wake.set()
        self.join(timeout)


class UploaderWorker(Worker):
    """Drains all rings into the outbox; the shipper thread forwards it."""

    name = "uploader"
    bell_consumer = UPLOADER  # a filling lane wakes the uploader at once (doorbell.py)

    def setup(self) -> None:
        """Open the outbox and start the shipper (or wait for the outbox to become possible)."""
        self.outbox: Outbox | None = None
        self.error = ""
        self._next_open = 0.0
        self.saved: dict[str, Cursor] = {}
        self.sources: dict[str, _Source] = {}
        m = self.cfg.model
        self.model_rows = ModelRows(self.cfg.device_id, m.name, m.inputs, m.outputs)
        self._model_fields = (m.inputs, m.outputs)
        self.sample_rate = self.cfg.telemetry.model_sample_rate
        self.rng = np.random.default_rng()
        # Ground-truth blocks split off the lanes in the current step (see _block).
        self._feedback: list[tuple[str, RecordBlock]] = []
        # When records were first seen waiting in the rings (None: none waiting).
        self._waiting_since: float | None = None
        #: Read and store whatever the rings hold now (flush): no commit cadence.
        self.eager = False
        self.ingested = 0
        self.full_events = 0
        self._refusing = False  # the last append was refused (disk full)
        self._drops: dict[tuple[str, str], int] = {}
        # Rings removed after the uploader drained them: ring -> final cursor.
        self._ended: dict[str, Cursor] = {}
        self._next_drop_report = time.monotonic() + DROP_REPORT_SECONDS
        self.shipper: Shipper | None = None
        self.hold = False
        self.flush_requests = 0
        self.last_flush_id = ""
        self.step_budget = min(
            MAX_STEP_SECONDS,
            STEP_SHARE_OF_HEARTBEAT_TIMEOUT * self.cfg.supervisor.heartbeat_timeout_seconds,
        )
        self.read_limit = FIRST_READ
        self._draining = False
        self.max_step_seconds = 0.0
        self._try_open()

    def _measured(self, limit: int, full: bool, seconds: float) -> None:
        """Adapt the read size: shrink at once past the budget, grow while well under it.

        Adapts the size itself, not a cost per record: a step has a fixed part
        (the outbox transaction) that a per-record estimate from small reads
        would inflate, shrinking the reads further (they fell to the minimum on
        emulated ARM).
        """
        self.max_step_seconds = max(self.max_step_seconds, seconds)
        if seconds > self.step_budget:
            self.read_limit = max(MIN_READ, int(limit * self.step_budget / seconds))
        elif full and seconds < self.step_budget / 2:
            self.read_limit = min(INGEST_BATCH, int(limit * 1.5) + 1)

    def _try_open(self) -> None:
        """Open the outbox; on failure stay up and retry (a crash loop would stop the agent).

        Until it opens, records wait in the rings; what the rings overwrite by
        then is counted at once as ``outbox_unavailable`` (in the side file).
        """
        try:
            self.outbox = open_outbox(self.cfg)
        except (OSError, sqlite3.Error, ValueError) as exc:
            msg = f"cannot open the outbox {self.cfg.storage.sqlite_path}: {exc}"
            if msg != self.error:
                log.error(
                    "%s; records wait in the rings, retrying every %.0fs", msg, REOPEN_SECONDS
                )
            self.error = msg
            self._next_open = time.monotonic() + REOPEN_SECONDS
            return
        if self.error:
            log.info("outbox %s open", self.cfg.storage.sqlite_path)
        self.error = ""
        self.saved = self.outbox.cursors()
        for src in self.sources.values():
            self._resume(src)
        if self.cfg.storage.type != "sqlite" and self.shipper is None:
            self.shipper = Shipper(self.cfg)
            self.shipper.hold = self.hold
            self.shipper.start()

    def handle(self, msg: dict[str, Any]) -> None:
        """``flush``: outbox now, ship now; ``pause``: stop shipping, keep filling the outbox."""
        cmd = msg.get("cmd")
        if cmd == "flush":
            self.flush_requests += 1
            self.last_flush_id = str(msg.get("batch_id") or "")
            self._drain(None)
            if self.shipper is not None:
                self.shipper.asap = True
                self.shipper.wake.set()
            log.info("flush requested (batch %s)", self.last_flush_id or "-")
        elif cmd in ("pause", "resume"):
            # Pausing the ring drain would let the rings overwrite records: only shipping stops.
            self.hold = cmd == "pause"
            if self.shipper is not None:
                self.shipper.hold = self.hold
                self.shipper.wake.set()
            log.info("uploads %s", "paused" if self.hold else "resumed")
        else:
            super().handle(msg)

    # ----------------------------------------------------------------- rings
    def set_rings(self, specs: list[RingSpec]) -> None:
        """Attach every ring as the uploader consumer, resuming at the outbox's cursor."""
        super().set_rings(specs)
        wanted = {s.name for s in specs}
        for name in list(self.sources):
            if name not in wanted:
                src = self.sources.pop(name)
                # The supervisor removes a ring once this consumer drained it: a
                # ring of the same name created later is a new ring, not a gap.
                end = Cursor(src.ring.epoch, src.cons.pos)
                if src.cons.pos == src.ring.write_seq:
                    self._ended[name] = end
                    if self.outbox is not None:
                        self.outbox.ring_ended(name, src.spec.stream, end)
                self.saved[name] = end
                src.ring.close()
        for spec in specs:
            if spec.name in self.sources:
                continue
            try:
                ring = Ring.attach(spec.name, dtype_for(spec.kind, self.cfg))
            except RingError as exc:
                log.error("uploader cannot attach %s: %s", spec.name, exc)
                continue
            src = _Source(spec, ring, ring.consumer(UPLOADER))
            if spec.kind in ("lane", "payload"):
                src.model = from_label(self.cfg, ring.label()) or default_model(self.cfg)
            self._resume(src)
            self.sources[spec.name] = src

    def _resume(self, src: _Source) -> None:
        """Continue a ring at the outbox's cursor (the outbox, not the header, is the truth)."""
        saved = self.saved.get(src.spec.name)
        ring, cons = src.ring, src.cons
        if saved is not None and saved.epoch == ring.epoch:
            if saved.seq <= ring.write_seq:
                cons.seek(saved.seq)
        elif saved is not None and self._ended.get(ring.name) == saved:
            log.debug("ring %s is new; the old one was drained", ring.name)
        elif saved is not None:
            # A clean stop forgets the cursors of the rings it removed (their
            # losses counted as unflushed_at_stop); a cursor of another epoch
            # means the old ring vanished without one (reboot, /dev/shm wiped).
            log.warning(
                "ring %s was re-created (epoch changed) without a clean stop: records the "
                "old ring held after the outbox cursor %d are gone, how many is unknown",
                ring.name,
                saved.seq,
            )

    def _block(self, src: _Source, records: Any, seqs: Any) -> RecordBlock | None:
        """Model and payload records as a numpy block (see the module doc); else None."""
        kind = src.spec.kind
        mr = self.model_rows
        lm = src.model or default_model(self.cfg)
        if (lm.name, lm.inputs, lm.outputs) != (mr.model, *self._model_fields):
            mr = ModelRows(mr.device_id, lm.name, lm.inputs, lm.outputs)
        if kind == "lane":
            fb = records["kind"] == KIND_FEEDBACK
            if fb.any():
                # Ground truth is its own stream, never sampled away (few, and precious).
                # One stream per model, as the model stream: feedback/<name>.
                stream = "feedback" + src.stream[len(src.spec.stream) :]
                self._feedback.append(
                    (
                        stream,
                        RecordBlock(
                            self._lane_spec("feedback", src, mr, lm), records[fb], seqs[fb]
                        ),
                    )
                )
                records, seqs = records[~fb], seqs[~fb]
            if self.sample_rate < 1.0:
                keep = self.rng.random(len(records)) < self.sample_rate
                key = ("model", "sampled")
                self._drops[key] = self._drops.get(key, 0) + len(records) - int(keep.sum())
                records, seqs = records[keep], seqs[keep]
            return RecordBlock(self._lane_spec("lane", src, mr, lm), records, seqs)
        if kind == "payload":
            lane = ring_name(self.cfg.instance, "lane", src.spec.index)
            spec = block_spec(
                "payload",
                device_id=mr.device_id,
                model=mr.model,
                model_version=lm.version,
                lane=lane,
            )
            return RecordBlock(spec, records, seqs)
        return None

    def _lane_spec(self, kind: str, src: _Source, mr: ModelRows, lm: LaneModel) -> dict[str, Any]:
        """Render spec of a lane's model (``lane``) or ground-truth (``feedback``) block."""
        return block_spec(
            kind,
            device_id=mr.device_id,
            model=mr.model,
            model_version=lm.version,
            lane=src.ring.name,
            inputs=mr.in_names,
            outputs=mr.out_names,
            cats={str(i): c for i, c in mr.cats.items()},
        )

    def _rows(self, src: _Source, records: Any, seqs: Any) -> list[dict[str, Any]]:
        kind = src.spec.kind
        dev = self.cfg.device_id
        if kind == "system":
            return system_rows(dev, records)
        if kind == "procs":
            return process_rows(dev, records)
        if kind == "events":
            return event_rows(dev, self.cfg.model.name, records)
        return []

    def _due(self) -> bool:
        """Whether to write a transaction now (see the module doc), else when to look again."""
        if self.eager or self._draining:
            # The last step stopped at its read size with more behind: no waiting
            # for a trickle's COMMIT_SECONDS in the middle of a burst.
            return True
        waiting = 0
        for src in self.sources.values():
            pending = src.cons.pending
            if pending >= COMMIT_FILL * src.ring.capacity:
                return True
            waiting += pending
        now = time.monotonic()
        if waiting == 0:
            self._waiting_since = None
            return False
        if waiting >= COMMIT_RECORDS:
            return True
        if self._waiting_since is None:
            self._waiting_since = now
        left = self._waiting_since + COMMIT_SECONDS - now
        if left <= 0:
            return True
        self.idle_wait = max(0.005, left)
        return False

    # ------------------------------------------------------------------ work
    def step(self) -> int:
        """One outbox transaction with the new records of every ring."""
        if self.outbox is None:
            if time.monotonic() >= self._next_open:
                self._try_open()
            if self.outbox is None:
                self._count_overwritten("outbox_unavailable")
                self.idle_wait = 1.0
                return 0
        if not self._due():
            if self._waiting_since is None:
                self.idle_wait = 0.2
                self._report_drops()
            return 0
        self._waiting_since = None
        batches: dict[str, list[dict[str, Any]]] = {}
        blocks: dict[str, list[RecordBlock]] = {}
        cursors: dict[str, Cursor] = {}
        self._drops = {}
        rollback: list[tuple[_Source, int, int]] = []
        reads: list[int] = []
        n = 0
        t_start = time.monotonic()
        limit = self.read_limit
        full = False
        for src in self.sources.values():
            before = (src.cons.pos, src.cons.lost)
            b = src.cons.read(limit, commit=False)
            full = full or len(b) == limit
            if not len(b) and not b.lost:
                continue
            rollback.append((src, *before))
            reads.append(b.first_seq)
            if b.lost:
                key = (src.spec.stream, "ring_overrun")
                self._drops[key] = self._drops.get(key, 0) + b.lost
            if len(b):
                block = self._block(src, b.records, b.seqs)
                if block is not None:
                    blocks.setdefault(src.stream, []).append(block)
                elif src.spec.kind == "events":
                    # One outbox stream per model: each object holds one model's events.
                    for row in self._rows(src, b.records, b.seqs):
                        batches.setdefault(f"events/{row['model']}", []).append(row)
                else:
                    batches.setdefault(src.spec.stream, []).extend(
                        self._rows(src, b.records, b.seqs)
                    )
            cursors[src.ring.name] = Cursor(src.ring.epoch, src.cons.pos)
            n += len(b)
        for stream, fblock in self._feedback:
            blocks.setdefault(stream, []).append(fblock)
        self._feedback = []
        if not cursors:
            # Idle: poll the rings less often (records wait in the ring, not lost).
            self._draining = False
            self.idle_wait = 0.2
            self._report_drops()
            return 0
        try:
            self.outbox.append(batches, cursors, self._drops, blocks)
        except OutboxFull as exc:
            # Keep the records in the rings; try again next step.
            self.full_events += 1
            if self.full_events == 1 or self.full_events % 100 == 0:
                log.error("outbox full, records stay in the rings: %s", exc)
            self._refusing = True
            self._draining = False
            self._refused(rollback, reads)
            self.idle_wait = 1.0
            return 0
        self._refusing = False
        for src, _pos, _lost in rollback:
            src.cons.commit()
        for (stream, reason), k in self._drops.items():
            if k and reason == "ring_overrun":
                log.warning("%d %s records were overwritten in their ring before upload", k, stream)
        self.ingested += n
        self._draining = full
        self._measured(limit, full, time.monotonic() - t_start)
        self._report_drops()
        self.idle_wait = 0.05
        if self.shipper is not None and n >= self.cfg.telemetry.max_batch_size:
            self.shipper.wake.set()
        return n

    def _refused(self, rollback: list[tuple[_Source, int, int]], firsts: list[int]) -> None:
        """The outbox refused a step: seek back, but count what the rings overwrote now.

        The records read stay in the rings for the next try. Those the ring
        had already overwritten (before the read's first record) are counted
        ``ring_overrun`` at once, with cursors past them: they are known lost
        now, and a later success must not be needed to say so.
        """
        drops: dict[tuple[str, str], int] = {}
        cursors: dict[str, Cursor] = {}
        for (src, pos, lost), first in zip(rollback, firsts, strict=True):
            skipped = max(0, first - pos)
            src.cons.seek(first if skipped else pos, lost + skipped)
            if skipped:
                key = (src.spec.stream, "ring_overrun")
                drops[key] = drops.get(key, 0) + skipped
                cursors[src.ring.name] = Cursor(src.ring.epoch, first)
        if drops:
            self._persist_drops(drops, cursors)

    def _count_overwritten(self, reason: str) -> None:
        """Without an outbox: count what the rings overwrite, as it happens (side file)."""
        drops: dict[tuple[str, str], int] = {}
        cursors: dict[str, Cursor] = {}
        for src in self.sources.values():
            ring, cons = src.ring, src.cons
            start = ring.write_seq - ring.capacity
            if cons.pos < start:
                key = (src.spec.stream, reason)
                drops[key] = drops.get(key, 0) + start - cons.pos
                cons.seek(start, cons.lost + start - cons.pos)
                cursors[ring.name] = Cursor(ring.epoch, start)
        if drops:
            self._persist_drops(drops, cursors)

    def _persist_drops(self, drops: dict[tuple[str, str], int], cursors: dict[str, Cursor]) -> None:
        """Counts to the outbox (side file if it cannot write), then the ring cursors."""
        for (stream, reason), k in sorted(drops.items()):
            log.warning("%d %s records lost (%s)", k, stream, reason)
        if self.outbox is not None:
            self.outbox.count_drops(drops, cursors)
        else:
            db = Path(self.cfg.storage.sqlite_path)
            spill.write_or_log(
                spill.spill_path(db),
                drops,
                {r: (c.epoch, c.seq) for r, c in cursors.items()},
                reserve=Path(f"{db}-reserve"),
            )
        for src in self.sources.values():
            if src.ring.name in cursors:
                src.cons.commit()

    def _give_up_pending(self) -> None:
        """At stop: count what stays in the rings (they are removed) and skip it."""
        if self.outbox is None:
            reason = "outbox_unavailable"
        else:
            reason = "disk_full" if self._refusing else "unflushed_at_stop"
        self._count_overwritten("ring_overrun" if self.outbox is not None else reason)
        drops: dict[tuple[str, str], int] = {}
        cursors: dict[str, Cursor] = {}
        for src in self.sources.values():
            left = src.ring.write_seq - src.cons.pos
            if left > 0:
                key = (src.spec.stream, reason)
                drops[key] = drops.get(key, 0) + left
                src.cons.seek(src.ring.write_seq)
                cursors[src.ring.name] = Cursor(src.ring.epoch, src.cons.pos)
        if drops:
            self._persist_drops(drops, cursors)

    def _report_drops(self) -> None:
        """Every few seconds, store pending drop counts as records of the drops stream."""
        now = time.monotonic()
        if now < self._next_drop_report or self.outbox is None:
            return
        self._next_drop_report = now + DROP_REPORT_SECONDS
        try:
            self.outbox.append_drop_report(
                {"device_id": self.cfg.device_id, "time": iso(time.time_ns())}
            )
        except OutboxFull:
            pass  # the counts stay pending in the database

    def flush(self) -> None:
        """Drain every ring into the outbox before exiting.

        What cannot be stored (no outbox: ``outbox_unavailable``; the outbox
        refuses: ``disk_full``) is counted, since the rings are removed after
        the stop.
        """
        # Within the supervisor's stop timeout, so that what is left is counted
        # here, with the outbox's cursors, and the shipper still stops cleanly.
        deadline = time.monotonic() + 0.4 * self.cfg.supervisor.shutdown_timeout_seconds
        if self.outbox is not None:
            self._drain(deadline)
        self._give_up_pending()
        if self.outbox is not None:
            self._next_drop_report = 0.0
            self._report_drops()

    def _drain(self, deadline: float | None) -> None:
        """Store what the rings hold now, without waiting for the commit cadence."""
        self.eager = True
        try:
            for _ in range(1000):
                if self.step() == 0 or (deadline is not None and time.monotonic() > deadline):
                    break
        finally:
            self.eager = False

    def stats(self) -> dict[str, Any]:
        """Outbox backlog and drops, uploads, last error."""
        if self.outbox is None:
            return {
                "error": self.error,
                "ingested": self.ingested,
                "summary_lines": [f"error: {self.error}"],
            }
        ob = self.outbox.stats()
        sh = self.shipper.state if self.shipper is not None else ShipperState()
        backlog = sum(int(s.get("records", 0)) for s in ob.get("streams", {}).values())
        return {
            "ingested": self.ingested,
            "backlog_records": backlog,
            "outbox": ob,
            "uploaded_records": sh.uploaded_records,
            "uploaded_objects": sh.uploaded_objects,
            "last_success": sh.last_success,
            "last_error": sh.last_error,
            "last_error_hint": sh.last_error_hint,
            "next_attempt_in": round(sh.next_attempt_in, 1),
            "drops": ob.get("drops", {}),
            "dropped_total": ob.get("dropped_total", 0),
            "outbox_full_events": self.full_events,
            "uploads_paused": self.hold,
            "flush_requests": self.flush_requests,
            "last_flush_id": self.last_flush_id,
            "max_step_seconds": round(self.max_step_seconds, 4),
            "read_limit": self.read_limit,
            "summary_lines": _summary_lines(ob, sh, backlog),
        }

    def close(self) -> None:
        """Stop the shipper, close the outbox and rings."""
        if self.shipper is not None:
            # A put or a write of the shipper cut short by the exit is safe (the
            # batch stays in flight); the stop timeout is not.
            self.shipper.stop(timeout=min(5.0, 0.2 * self.cfg.supervisor.shutdown_timeout_seconds))
        if self.outbox is not None:
            self.outbox.close()
        for src in self.sources.values():
            src.ring.close()
        self.sources.clear()


def _summary_lines(ob: dict[str, Any], sh: ShipperState, backlog: int) -> list[str]:
    """Human lines for ``edge-actors status``: backlog per stream, uploads, errors, drops."""
    now = time.time()
    lines = [
        f"outbox: {backlog} records, {ob.get('db_bytes', 0) + ob.get('wal_bytes', 0)} bytes "
        f"of {ob.get('max_bytes', 0)} budget"
    ]
    for name, st in sorted(ob.get("streams", {}).items()):
        if not st.get("records"):
            continue
        oldest = st.get("oldest_t")
        age = f", oldest {now - oldest:.0f}s old" if oldest else ""
        lines.append(f"  {name}: {st['records']} records, {st['bytes']} bytes{age}")
    last = f"{now - sh.last_success:.0f}s ago" if sh.last_success else "never"
    lines.append(
        f"uploaded {sh.uploaded_records} records in {sh.uploaded_objects} objects; "
        f"last success {last}"
    )
    if sh.last_error:
        hint = f" (fix: {sh.last_error_hint})" if sh.last_error_hint else ""
        lines.append(f"last error: {sh.last_error}{hint}; next try in {sh.next_attempt_in:.0f}s")
    drops = ob.get("drops", {})
    if drops:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
    return lines
