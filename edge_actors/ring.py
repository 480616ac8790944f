"""Shared-memory ring buffer: one producer, several pre-registered consumers.

Layout (docs/design.md, "Rings"): a 4096-byte header of int64 words, each writer on its own
128-byte line, then ``capacity`` fixed-size slots. A slot is an int64 *stamp*
followed by one record of the ring's numpy dtype.

Write: stamp = BUSY, payload, stamp = seq, ``write_seq = seq + 1``.
Read: ``write_seq``, stamps, copy, stamps again; a slot is delivered only if
both stamp reads equal the expected sequence number, so a torn or overwritten
slot is never delivered. The producer never waits: it overwrites the oldest
slot, and each consumer counts exactly what it lost, so
``written == consumed + lost + pending`` holds for every consumer at every moment.

Memory ordering. x86 keeps stores in order and loads in order, so there the
steps above are enough; a weakly ordered CPU (ARM) may make a core's stores
visible, or satisfy its loads, in another order, so a fence (``fence.py``:
``dmb ish`` on ARM, a no-op call never made on x86) goes between each pair of
steps whose order a reader relies on. Three message-passing pairs, each a
writer fence matched by a reader fence:

- stamp = BUSY | fence | payload, against copy | fence | second stamp load:
  a reader whose copy saw any byte of a later lap sees BUSY or a later stamp
  on its second load, so an overwritten record is counted lost, never torn.
- payload | fence | stamp = seq, against first stamp load | fence | copy: a
  reader whose first stamp load saw ``seq`` copies the whole payload.
- stamp = seq | fence | ``write_seq = seq + 1``, against ``write_seq`` load |
  fence | first stamp load: a reader that sees the new ``write_seq`` sees the
  stamp ``seq`` (or a later one). Without this pair a reader could find the
  previous lap's stamp in a slot ``write_seq`` says is written and count a
  written record as lost (never deliver it torn: the stamp check holds anyway).

So a write costs three fences and a read batch three (on ARM, ~100 ns each);
``write_batch`` pays its three once per chunk.

Cursors live in the header so that a restarted consumer resumes where it was;
``epoch`` is random and new at every creation, so a consumer whose saved cursor
names another epoch knows the ring was re-created and can count the gap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_actors import shm
from edge_actors.fence import get_fence
from edge_actors.records import dtype_fingerprint

MAGIC = 0x4547_4552_494E_4731  # "EGERING1"
LAYOUT_VERSION = 1
HEADER_SIZE = 4096
LINE_WORDS = 16  # 128 bytes: one writer per line, no false sharing
BUSY = -1

# Line 0: immutable after creation (plus flags).
W_MAGIC, W_VERSION, W_CAPACITY, W_SLOT_SIZE, W_DTYPE, W_EPOCH = 0, 1, 2, 3, 4, 5
W_NCONS, W_CREATED_NS, W_OWNER_PID, W_FLAGS = 6, 7, 8, 9
# Line 1: the producer's.
W_WRITE_SEQ, W_PRODUCER_PID, W_PRODUCER_HB_NS, W_PRODUCER_ATTACHES = 16, 17, 18, 19
# Line 2+k: consumer k's.
_C0 = 2 * LINE_WORDS
C_READ_SEQ, C_PID, C_LOST, C_INCARNATION, C_HEARTBEAT_NS = 0, 1, 2, 3, 4
#: The position a consumer has copied up to but not yet committed (a consumer that
#: stores its cursor elsewhere commits after its own transaction): slots below it
#: are not lost when overwritten, slots above it and below ``write_seq - capacity``
#: are. Lets the producer see a loss the moment it happens (see ``overrun``).
C_CLAIM = 5
MAX_CONSUMERS = HEADER_SIZE // 8 // LINE_WORDS - 2
#: The label: the second half of the header (lines 16..31, free in a ring of at
#: most 14 consumers), a length word then bytes. The supervisor writes what a lane
#: is for (its model and version) before anyone else attaches; a reader that
#: attaches later, or a supervisor that adopts the lane after a restart, reads it.
LABEL_OFFSET = HEADER_SIZE // 2
LABEL_MAX = HEADER_SIZE - LABEL_OFFSET - 8

#: Flag bit: the producer is gone for good; consumers drain it, the owner unlinks it.
FLAG_RETIRED = 1


class RingError(RuntimeError):
    """A ring could not be created or attached as asked; the message says why."""


def _new_epoch() -> int:
    return int.from_bytes(os.urandom(8), "little") & 0x7FFF_FFFF_FFFF_FFFF or 1


def round_capacity(n: int, floor: int = 2) -> int:
    """Smallest power of two >= max(n, floor)."""
    n = max(int(n), floor)
    return 1 << (n - 1).bit_length()


def _geometry_problem(capacity: int, slot_size: int, n_consumers: int, seg_size: int) -> str:
    """Why a header's geometry cannot be a ring of ``seg_size`` bytes ('' if it can)."""
    if not 1 <= n_consumers <= MAX_CONSUMERS:
        return f"consumer count {n_consumers} (1..{MAX_CONSUMERS})"
    if capacity < 2 or capacity & (capacity - 1):
        return f"capacity {capacity} is not a power of two >= 2"
    if slot_size < 16 or slot_size % 8:
        return f"slot size {slot_size} (a multiple of 8, at least 16)"
    if HEADER_SIZE + capacity * slot_size > seg_size:
        return f"{capacity} slots of {slot_size} bytes do not fit in the segment ({seg_size} bytes)"
    return ""


@dataclass(frozen=True)
class ReadBatch:
    """Records one ``read`` delivered, with their sequence numbers.

    ``lost`` is how many sequence numbers in ``[first_seq, end_seq)`` were
    overwritten before this consumer could copy them.
    """

    records: npt.NDArray[Any]
    seqs: npt.NDArray[np.int64]
    first_seq: int
    end_seq: int
    lost: int

    def __len__(self) -> int:
        return len(self.records)


class Ring:
    """A mapped ring segment; create it (owner) or attach to it (anyone of the same uid)."""

    def __init__(self, segment: shm.Segment, record_dtype: np.dtype[Any], adopted: bool = False):
        self.segment = segment
        self.name = segment.name
        self.adopted = adopted
        self.record_dtype = record_dtype
        buf = segment.buf
        self.words: npt.NDArray[np.int64] = np.frombuffer(
            buf, dtype=np.int64, count=HEADER_SIZE // 8
        )
        self.capacity = int(self.words[W_CAPACITY])
        self.slot_size = int(self.words[W_SLOT_SIZE])
        # Header words fixed at creation, kept as read at attach: indexing uses
        # these copies, never a live value another process could have scribbled.
        self._n_consumers = int(self.words[W_NCONS])
        self._fixed = self.words[: W_NCONS + 1].copy()
        self._fixed_bytes = self._fixed.tobytes()
        self.mask = self.capacity - 1
        self.slot_dtype = np.dtype(
            {
                "names": ["stamp", "rec"],
                "formats": ["<i8", record_dtype],
                "offsets": [0, 8],
                "itemsize": self.slot_size,
            }
        )
        self.slots: npt.NDArray[Any] = np.frombuffer(
            buf, dtype=self.slot_dtype, count=self.capacity, offset=HEADER_SIZE
        )
        self.stamps: npt.NDArray[np.int64] = self.slots["stamp"]
        # int64 word view of the whole segment: scalar stores through a memoryview
        # are several times cheaper than numpy scalar assignment on the hot path.
        self.q = buf.cast("q")
        #: Byte view of the whole segment (the writer copies records through it).
        self.buf = buf

    # ----------------------------------------------------------------- lifecycle
    @staticmethod
    def layout_size(record_dtype: np.dtype[Any], capacity: int) -> tuple[int, int]:
        """(slot size, total segment size) for a dtype and capacity."""
        slot = 8 + record_dtype.itemsize
        slot += (-slot) % 8
        return slot, HEADER_SIZE + slot * capacity

    @classmethod
    def create(
        cls,
        name: str,
        record_dtype: np.dtype[Any],
        capacity: int,
        n_consumers: int = 2,
        *,
        adopt: bool = False,
    ) -> Ring:
        """Create the ring segment (mode 0600).

        With ``adopt`` an existing segment of the same layout is kept as it is
        (records, cursors and epoch survive a supervisor restart); a segment of
        another layout is replaced.
        """
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two >= 2, got {capacity}")
        if not 1 <= n_consumers <= MAX_CONSUMERS:
            raise ValueError(f"a ring has 1..{MAX_CONSUMERS} consumers, got {n_consumers}")
        slot, size = cls.layout_size(record_dtype, capacity)
        fp = dtype_fingerprint(record_dtype)
        if shm.exists(name):
            if adopt:
                try:
                    ring = cls.attach(name, record_dtype)
                except RingError:
                    ring = None
                if (
                    ring is not None
                    and ring.capacity == capacity
                    and int(ring.words[W_NCONS]) == n_consumers
                    and ring.segment.size == size
                ):
                    ring.adopted = True
                    ring.words[W_OWNER_PID] = os.getpid()
                    return ring
                if ring is not None:
                    ring.close()
            shm.unlink(name)
        seg = shm.create(name, size)
        words = np.frombuffer(seg.buf, dtype=np.int64, count=HEADER_SIZE // 8)
        words[:] = 0
        words[W_CAPACITY] = capacity
        words[W_SLOT_SIZE] = slot
        words[W_DTYPE] = fp
        words[W_EPOCH] = _new_epoch()
        words[W_NCONS] = n_consumers
        words[W_CREATED_NS] = time.time_ns()
        words[W_OWNER_PID] = os.getpid()
        words[W_VERSION] = LAYOUT_VERSION
        del words
        ring = cls(seg, record_dtype)
        ring.stamps[:] = BUSY  # slot 0 must not look like seq 0 before it is written
        # Magic last: an attacher that sees it sees a complete header.
        ring.words[W_MAGIC] = MAGIC
        ring._fixed[W_MAGIC] = MAGIC
        ring._fixed_bytes = ring._fixed.tobytes()
        return ring

    @classmethod
    def attach(cls, name: str, record_dtype: np.dtype[Any] | None = None) -> Ring:
        """Attach to an existing ring; checks magic, version and (if given) the dtype."""
        try:
            seg = shm.attach(name)
        except FileNotFoundError as exc:
            raise RingError(f"ring {name!r} does not exist") from exc
        except OSError as exc:
            raise RingError(f"cannot attach ring {name!r}: {exc}") from exc
        if seg.size < HEADER_SIZE:
            seg.close()
            raise RingError(f"ring {name!r} is too small to be a ring ({seg.size} bytes)")
        head = np.frombuffer(seg.buf, dtype=np.int64, count=LINE_WORDS).copy()
        problem = ""
        if head[W_MAGIC] != MAGIC:
            problem = "not an edge-actors ring (bad magic)"
        elif head[W_VERSION] != LAYOUT_VERSION:
            problem = f"layout version {head[W_VERSION]}, this code reads {LAYOUT_VERSION}"
        elif record_dtype is not None and head[W_DTYPE] != dtype_fingerprint(record_dtype):
            problem = "record layout differs from this code's (different model schema?)"
        else:
            # Every value read from the segment is bounded before anything indexes with it.
            problem = _geometry_problem(
                int(head[W_CAPACITY]), int(head[W_SLOT_SIZE]), int(head[W_NCONS]), seg.size
            )
        if not problem and record_dtype is not None:
            slot, _size = cls.layout_size(record_dtype, int(head[W_CAPACITY]))
            if slot != head[W_SLOT_SIZE]:
                problem = "slot size does not match the record layout"
        if problem:
            seg.close()
            raise RingError(f"ring {name!r}: {problem}")
        if record_dtype is None:
            # Opaque attach (status tools): expose slots as raw bytes.
            record_dtype = np.dtype((np.void, int(head[W_SLOT_SIZE]) - 8))
        return cls(seg, record_dtype)

    def close(self) -> None:
        """Unmap this process's view; the segment stays for the others."""
        if self.segment.closed:
            return
        self.q.release()
        del self.words, self.slots, self.stamps
        self.segment.close()

    def unlink(self) -> None:
        """Remove the segment name (owner only); existing mappings stay valid."""
        shm.unlink(self.name)

    # ------------------------------------------------------------------ header
    @property
    def epoch(self) -> int:
        """Random id of this ring's creation."""
        return int(self.words[W_EPOCH])

    @property
    def write_seq(self) -> int:
        """Number of records ever written to this ring (this epoch)."""
        return int(self.words[W_WRITE_SEQ])

    @property
    def n_consumers(self) -> int:
        """Number of pre-registered consumer lines (as validated at attach)."""
        return self._n_consumers

    def header_problem(self) -> str:
        """Why the header's fixed words no longer match what was attached ('' if they do).

        A ring whose geometry, layout or epoch changed under us was written by
        something that is not a well-behaved producer: do not trust it.
        """
        # One bytes compare (well under a microsecond): every lane, every tick.
        if self.words[: W_NCONS + 1].tobytes() == self._fixed_bytes:
            return ""
        now = self.words[: W_NCONS + 1]
        labels = {
            W_MAGIC: "magic",
            W_VERSION: "layout version",
            W_CAPACITY: "capacity",
            W_SLOT_SIZE: "slot size",
            W_DTYPE: "record layout hash",
            W_EPOCH: "epoch",
            W_NCONS: "consumer count",
        }
        diffs = [
            f"{labels[i]} {int(now[i])}, expected {int(self._fixed[i])}"
            for i in labels
            if now[i] != self._fixed[i]
        ]
        return "header changed under the supervisor: " + "; ".join(diffs)

    def set_label(self, data: bytes) -> None:
        """Write the ring's label (at most :data:`LABEL_MAX` bytes); before it is shared."""
        if len(data) > LABEL_MAX:
            raise ValueError(f"ring label: at most {LABEL_MAX} bytes, got {len(data)}")
        if int(self.words[W_NCONS]) > (LABEL_OFFSET // 8 - 2 * LINE_WORDS) // LINE_WORDS:
            raise ValueError("ring label: this ring's consumer lines use the label's space")
        end = LABEL_OFFSET + 8 + len(data)
        self.buf[LABEL_OFFSET + 8 : end] = data
        self.q[LABEL_OFFSET // 8] = len(data)

    def label(self) -> bytes:
        """The ring's label (``b""`` if none was written)."""
        n = int(self.q[LABEL_OFFSET // 8])
        if not 0 < n <= LABEL_MAX:
            return b""
        return bytes(self.buf[LABEL_OFFSET + 8 : LABEL_OFFSET + 8 + n])

    @property
    def producer_pid(self) -> int:
        """Pid of the last producer that attached (0 if none)."""
        return int(self.words[W_PRODUCER_PID])

    @property
    def retired(self) -> bool:
        """True once the owner marked the ring as having no producer any more."""
        return bool(int(self.words[W_FLAGS]) & FLAG_RETIRED)

    def retire(self) -> None:
        """Mark the ring as producer-less (owner only)."""
        self.words[W_FLAGS] = int(self.words[W_FLAGS]) | FLAG_RETIRED

    def consumer_line(self, k: int) -> dict[str, int]:
        """Snapshot of consumer ``k``'s header line."""
        if not 0 <= k < self.n_consumers:
            raise IndexError(f"ring {self.name!r} has consumers 0..{self.n_consumers - 1}")
        b = _C0 + k * LINE_WORDS
        w = self.words
        return {
            "read_seq": int(w[b + C_READ_SEQ]),
            "pid": int(w[b + C_PID]),
            "lost": int(w[b + C_LOST]),
            "incarnation": int(w[b + C_INCARNATION]),
            "heartbeat_ns": int(w[b + C_HEARTBEAT_NS]),
            "claim": int(w[b + C_CLAIM]),
        }

    def overrun(self, k: int) -> int:
        """Records consumer ``k`` lost so far, including those overwritten but not yet counted.

        The consumer counts a loss when it next reads (and publishes it when it
        commits); this adds what the producer has already overwritten beyond
        the consumer's cursor and claim, so the figure is current even while the
        consumer is busy or its store refuses. Never more than the consumer will
        count (a lower bound while a commit is in progress).
        """
        if not 0 <= k < self.n_consumers:
            raise IndexError(f"ring {self.name!r} has consumers 0..{self.n_consumers - 1}")
        b = _C0 + k * LINE_WORDS
        w = self.words
        # LOST first: the consumer stores CLAIM before it stores LOST, so a LOST
        # that already includes a loss comes with the claim that excludes it.
        lost = int(w[b + C_LOST])
        seen = max(int(w[b + C_READ_SEQ]), int(w[b + C_CLAIM]))
        return lost + max(0, self.write_seq - self.capacity - seen)

    def stats(self) -> dict[str, Any]:
        """Fill and loss per consumer, for ``status``."""
        written = self.write_seq
        cons = []
        for k in range(self.n_consumers):
            line = self.consumer_line(k)
            backlog = written - line["read_seq"]
            cons.append(
                {
                    "read_seq": line["read_seq"],
                    "lost": line["lost"],
                    "pending": backlog,
                    "fill": min(1.0, backlog / self.capacity),
                    "pid": line["pid"],
                }
            )
        return {
            "name": self.name,
            "capacity": self.capacity,
            "written": written,
            "epoch": self.epoch,
            "producer_pid": self.producer_pid,
            "retired": self.retired,
            "consumers": cons,
        }

    # ----------------------------------------------------------------- roles
    def writer(self) -> RingWriter:
        """The producer side (one per ring at a time)."""
        return RingWriter(self)

    def consumer(self, k: int) -> RingConsumer:
        """Consumer ``k``'s side, resuming at its header cursor."""
        return RingConsumer(self, k)


class RingWriter:
    """Writes records; never blocks, overwrites the oldest slot when full.

    :attr:`put` is the single-record write protocol, as one function with its
    state bound in: the producer calls it on its hot path (a bound closure costs
    no more than the steps written inline, and the protocol lives only here).
    """

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self._fence: Callable[[], None] | None = get_fence()
        # The next record's sequence number, in a list the fast path shares.
        self._state = [ring.write_seq]
        ring.words[W_PRODUCER_PID] = os.getpid()
        ring.words[W_PRODUCER_ATTACHES] += 1
        #: Write one record given as its raw bytes (exactly the dtype's itemsize,
        #: any buffer); returns the new ``write_seq`` (the record's seq + 1).
        self.put: Callable[[Any], int] = self._bind()

    def _bind(self) -> Callable[[Any], int]:
        # Everything the protocol touches, as closure cells: the hot path reads
        # no attribute but the sequence number.
        q = self.ring.q
        buf = self.ring.buf
        mask = self.ring.mask
        slot_words = self.ring.slot_size // 8
        rec_size = self.ring.record_dtype.itemsize
        slot0 = HEADER_SIZE // 8
        fence = self._fence
        state = self._state

        def put(payload: Any) -> int:
            seq = state[0]
            qi = slot0 + (seq & mask) * slot_words
            q[qi] = BUSY
            if fence is not None:
                fence()
            off = qi * 8 + 8
            buf[off : off + rec_size] = payload
            if fence is not None:
                fence()
            q[qi] = seq
            if fence is not None:
                fence()  # the stamp before write_seq: see the module docstring
            seq += 1
            q[W_WRITE_SEQ] = seq
            state[0] = seq
            return seq

        return put

    @property
    def seq(self) -> int:
        """Sequence number the next record gets (== the ring's ``write_seq``)."""
        return self._state[0]

    @seq.setter
    def seq(self, value: int) -> None:
        self._state[0] = value

    def write_bytes(self, payload: Any) -> int:
        """Write one record given as its raw bytes (the dtype's itemsize); returns its seq."""
        return self.put(payload) - 1

    def write(self, record: Any) -> int:
        """Write one record (a tuple or ``np.void`` of the ring's dtype); returns its seq."""
        arr = np.asarray([record], dtype=self.ring.record_dtype)
        return self.write_bytes(arr.data.cast("B"))

    def write_batch(self, records: npt.NDArray[Any]) -> int:
        """Write many records with one fence pair per chunk; returns the first seq.

        More records than the capacity are written in capacity-sized chunks, so
        consumers count the ones overwritten at once as lost, as for any overrun.
        """
        ring = self.ring
        if records.dtype != ring.record_dtype:
            records = records.astype(ring.record_dtype)
        first = self.seq
        n = len(records)
        cap = ring.capacity
        pos = 0
        while pos < n:
            k = min(cap, n - pos)
            seq = self.seq
            start = seq & ring.mask
            # Up to two contiguous runs of slots: [start, end) and [0, rest).
            end = min(cap, start + k)
            rest = k - (end - start)
            stamps, slots = ring.stamps, ring.slots
            stamps[start:end] = BUSY
            if rest:
                stamps[:rest] = BUSY
            if self._fence is not None:
                self._fence()
            slots["rec"][start:end] = records[pos : pos + end - start]
            if rest:
                slots["rec"][:rest] = records[pos + end - start : pos + k]
            if self._fence is not None:
                self._fence()
            stamps[start:end] = np.arange(seq, seq + end - start, dtype=np.int64)
            if rest:
                stamps[:rest] = np.arange(seq + end - start, seq + k, dtype=np.int64)
            if self._fence is not None:
                self._fence()
            ring.q[W_WRITE_SEQ] = seq + k
            self.seq = seq + k
            pos += k
        return first

    def heartbeat(self) -> None:
        """Record that the producer is alive (cheap; call it from idle paths, not per record)."""
        self.ring.words[W_PRODUCER_HB_NS] = time.time_ns()


class RingConsumer:
    """Reads records in order; counts what the producer overwrote before it could read."""

    def __init__(self, ring: Ring, k: int) -> None:
        if not 0 <= k < ring.n_consumers:
            raise IndexError(f"ring {ring.name!r} has consumers 0..{ring.n_consumers - 1}")
        self.ring = ring
        self.index = k
        self._base = _C0 + k * LINE_WORDS
        w = ring.words
        self.pos = int(w[self._base + C_READ_SEQ])
        self.lost = int(w[self._base + C_LOST])
        self.epoch = ring.epoch
        self._fence: Callable[[], None] | None = get_fence()
        w[self._base + C_PID] = os.getpid()
        w[self._base + C_INCARNATION] += 1
        w[self._base + C_CLAIM] = self.pos  # a dead predecessor's claim means nothing now

    @property
    def pending(self) -> int:
        """Records written but not yet read by this consumer."""
        return self.ring.write_seq - self.pos

    def seek(self, pos: int, lost: int | None = None) -> None:
        """Continue from ``pos`` (a cursor saved elsewhere, e.g. with the outbox)."""
        w = self.ring.write_seq
        if pos > w:
            raise RingError(
                f"ring {self.ring.name!r}: cursor {pos} is past write_seq {w} (ring re-created?)"
            )
        self.pos = pos
        self.ring.words[self._base + C_CLAIM] = pos
        if lost is not None:
            self.lost = lost

    def read(self, max_records: int = 65536, *, commit: bool = True) -> ReadBatch:
        """Copy up to ``max_records`` records in sequence order.

        With ``commit`` the header cursor advances at once; a consumer that stores
        its cursor elsewhere (the uploader, with the outbox) passes ``False`` and
        calls :meth:`commit` after its own transaction.
        """
        ring = self.ring
        cap = ring.capacity
        fence = self._fence
        w = ring.write_seq
        if fence is not None:
            fence()  # write_seq before the stamps: see the module docstring
        r = self.pos
        lost = 0
        if w - r > cap:
            lost = w - cap - r
            r = w - cap
        n = min(w - r, max_records)
        # Claim before copying: overwritten from now on, these are this read's to count.
        ring.words[self._base + C_CLAIM] = r + max(n, 0)
        if n <= 0:
            if lost:
                self.lost += lost
                self.pos = r
                if commit:
                    self.commit()
            return ReadBatch(ring.slots["rec"][:0].copy(), np.empty(0, np.int64), r, r, lost)
        start = r & ring.mask
        end = min(cap, start + n)
        rest = n - (end - start)
        if rest:
            s1 = np.concatenate((ring.stamps[start:end], ring.stamps[:rest]))
            if fence is not None:
                fence()
            data = np.concatenate((ring.slots[start:end], ring.slots[:rest]))
            if fence is not None:
                fence()
            s2 = np.concatenate((ring.stamps[start:end], ring.stamps[:rest]))
        else:
            s1 = ring.stamps[start:end].copy()
            if fence is not None:
                fence()
            data = ring.slots[start:end].copy()
            if fence is not None:
                fence()
            s2 = ring.stamps[start:end]
        expected = np.arange(r, r + n, dtype=np.int64)
        ok = (s1 == expected) & (s2 == expected)
        n_ok = int(np.count_nonzero(ok))
        if n_ok == n:
            records, seqs = data["rec"], expected
        else:
            # Overwritten (or being overwritten) while we copied: those are lost.
            lost += n - n_ok
            records, seqs = data["rec"][ok], expected[ok]
        self.pos = r + n
        self.lost += lost
        if commit:
            self.commit()
        return ReadBatch(records, seqs, r, r + n, lost)

    def commit(self, pos: int | None = None, lost: int | None = None) -> None:
        """Publish the cursor (and loss count) to the ring header."""
        w = self.ring.words
        w[self._base + C_LOST] = self.lost if lost is None else lost
        w[self._base + C_READ_SEQ] = self.pos if pos is None else pos
        w[self._base + C_HEARTBEAT_NS] = time.time_ns()
