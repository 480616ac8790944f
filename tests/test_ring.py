"""The shared-memory ring: a model-checked state machine, real unrelated processes, SIGKILL.

Every test uses its own segment names (prefix ``eat<pid>_<n>_``) and removes
them; the last check of the module is that nothing of ours is left in /dev/shm.
"""

from __future__ import annotations

import os
import platform
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from edge_actors import fence, shm
from edge_actors import ring as ring_module
from edge_actors.records import model_dtype
from edge_actors.ring import (
    BUSY,
    MAX_CONSUMERS,
    W_WRITE_SEQ,
    Ring,
    RingError,
    round_capacity,
)
from tests.helpers_ring import (  # noqa: F401
    PREFIX,
    Segments,
    Zygote,
    check_records,
    kill,
    python_env,
    read_frames,
    spawn,
    stream_dtype,
    wait_line,
)

DT = model_dtype(2)


@pytest.fixture(params=["0", "1"], ids=["nofence", "fence"])
def fence_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the fence path off and forced on (EDGE_ACTORS_FENCE)."""
    monkeypatch.setenv("EDGE_ACTORS_FENCE", request.param)
    return str(request.param)


def rec(seq: int, a: float = 0.0) -> tuple[int, int, int, list[float]]:
    return (seq * 10, seq, 0, [float(seq), a])


# ------------------------------------------------------------------ basics
def test_create_rejects_bad_capacity_and_consumers(segs: Segments) -> None:
    name = segs.new()
    with pytest.raises(ValueError) as e:
        Ring.create(name, DT, 12, 1)
    assert str(e.value) == "ring capacity must be a power of two >= 2, got 12"
    with pytest.raises(ValueError) as e:
        Ring.create(name, DT, 1, 1)
    assert str(e.value) == "ring capacity must be a power of two >= 2, got 1"
    for n in (0, MAX_CONSUMERS + 1):
        with pytest.raises(ValueError) as e:
            Ring.create(name, DT, 8, n)
        assert str(e.value) == f"a ring has 1..{MAX_CONSUMERS} consumers, got {n}"
    assert not shm.exists(name)
    assert round_capacity(5) == 8 and round_capacity(1) == 2 and round_capacity(64) == 64


def test_attach_errors_name_the_problem(segs: Segments) -> None:
    missing = segs.new()
    with pytest.raises(RingError) as e:
        Ring.attach(missing, DT)
    assert str(e.value) == f"ring {missing!r} does not exist"

    name = segs.new()
    ring = Ring.create(name, DT, 8, 1)
    with pytest.raises(RingError) as e:
        Ring.attach(name, model_dtype(3))
    assert str(e.value) == (
        f"ring {name!r}: record layout differs from this code's (different model schema?)"
    )
    raw = Ring.attach(name)  # opaque: slots as raw bytes
    assert raw.capacity == 8 and raw.record_dtype.itemsize == ring.slot_size - 8
    raw.close()
    ring.close()

    small = segs.new()
    shm.create(small, 100).close()
    with pytest.raises(RingError) as e:
        Ring.attach(small, DT)
    assert str(e.value) == f"ring {small!r} is too small to be a ring (100 bytes)"

    junk = segs.new()
    shm.create(junk, 8192).close()
    with pytest.raises(RingError) as e:
        Ring.attach(junk, DT)
    assert str(e.value) == f"ring {junk!r}: not an edge-actors ring (bad magic)"


def test_write_read_stats_and_header_lines(segs: Segments, fence_mode: str) -> None:
    ring = Ring.create(segs.new(), DT, 8, 2)
    w = ring.writer()
    assert [w.write(rec(i)) for i in range(5)] == [0, 1, 2, 3, 4]
    assert ring.write_seq == 5 and ring.producer_pid == os.getpid()
    c0, c1 = ring.consumer(0), ring.consumer(1)
    b = c0.read(3)
    assert b.seqs.tolist() == [0, 1, 2] and (b.first_seq, b.end_seq, b.lost) == (0, 3, 0)
    assert b.records["id"].tolist() == [0, 1, 2] and b.records["v"][:, 0].tolist() == [0, 1, 2]
    assert len(b) == 3
    assert ring.consumer_line(0)["read_seq"] == 3
    assert ring.consumer_line(0)["pid"] == os.getpid()
    assert ring.consumer_line(0)["incarnation"] == 1
    st_ = ring.stats()
    assert st_["written"] == 5 and st_["capacity"] == 8 and not st_["retired"]
    assert [c["pending"] for c in st_["consumers"]] == [2, 5]
    assert st_["consumers"][1]["fill"] == 5 / 8
    # Uncommitted read: the header cursor stays, a restarted consumer gets it again.
    b = c1.read(10, commit=False)
    assert b.seqs.tolist() == [0, 1, 2, 3, 4]
    assert ring.consumer_line(1)["read_seq"] == 0
    again = ring.consumer(1).read(10)
    assert again.seqs.tolist() == [0, 1, 2, 3, 4]
    assert ring.consumer_line(1)["incarnation"] == 2
    with pytest.raises(IndexError) as e:
        ring.consumer(2)
    assert str(e.value) == f"ring {ring.name!r} has consumers 0..1"
    with pytest.raises(IndexError):
        ring.consumer_line(-1)
    ring.close()
    ring.close()  # idempotent


def test_overrun_counts_lost_exactly(segs: Segments, fence_mode: str) -> None:
    ring = Ring.create(segs.new(), DT, 8, 1)
    w, c = ring.writer(), ring.consumer(0)
    for i in range(20):
        w.write(rec(i))
    b = c.read(100)
    assert b.lost == 12 and b.seqs.tolist() == list(range(12, 20)) and c.lost == 12
    # A batch bigger than the ring: the overwritten part is lost at once.
    recs = np.zeros(19, DT)
    recs["id"] = np.arange(20, 39)
    assert w.write_batch(recs) == 20
    b = c.read(0)  # nothing delivered, but the loss is counted and committed
    assert (len(b), b.lost, b.first_seq, b.end_seq) == (0, 11, 31, 31)
    line = ring.consumer_line(0)
    assert (line["read_seq"], line["lost"]) == (31, 23)
    b = c.read()
    assert b.records["id"].tolist() == list(range(31, 39))
    assert ring.write_seq == 39 == len(range(12, 20)) + 8 + c.lost


def test_seek_and_retire(segs: Segments) -> None:
    ring = Ring.create(segs.new(), DT, 8, 1)
    w, c = ring.writer(), ring.consumer(0)
    for i in range(4):
        w.write(rec(i))
    assert c.read().seqs.tolist() == [0, 1, 2, 3]
    c.seek(1)
    assert c.read().seqs.tolist() == [1, 2, 3]
    with pytest.raises(RingError) as e:
        c.seek(5)
    assert str(e.value) == f"ring {ring.name!r}: cursor 5 is past write_seq 4 (ring re-created?)"
    c.seek(0, lost=7)
    assert c.lost == 7 and c.pending == 4
    assert not ring.stats()["retired"]
    ring.retire()
    assert ring.retired and ring.stats()["retired"]
    # Retiring is a flag for producers; consumers still drain.
    assert c.read().seqs.tolist() == [0, 1, 2, 3]


def test_adopt_keeps_records_cursors_and_epoch(segs: Segments) -> None:
    name = segs.new()
    ring = Ring.create(name, DT, 8, 2)
    epoch = ring.epoch
    w = ring.writer()
    for i in range(5):
        w.write(rec(i))
    ring.consumer(0).read(2)
    ring.close()
    again = Ring.create(name, DT, 8, 2, adopt=True)
    assert again.adopted and again.epoch == epoch and again.write_seq == 5
    assert again.consumer(0).read().seqs.tolist() == [2, 3, 4]
    again.close()
    # Another layout cannot be adopted: replaced, new epoch, empty.
    other = Ring.create(name, DT, 16, 2, adopt=True)
    assert not other.adopted and other.epoch != epoch and other.write_seq == 0
    e2 = other.epoch
    other.close()
    # Without adopt the segment is always replaced.
    fresh = Ring.create(name, DT, 16, 2)
    assert fresh.epoch not in (epoch, e2) and fresh.write_seq == 0
    assert len(fresh.consumer(0).read()) == 0
    fresh.close()


def test_slot_zero_is_not_seq_zero_before_it_is_written(segs: Segments) -> None:
    ring = Ring.create(segs.new(), DT, 4, 1)
    assert (ring.stamps == BUSY).all()
    # A reader that raced ahead of write_seq (impossible through the API) finds nothing.
    ring.words[W_WRITE_SEQ] = 1
    b = ring.consumer(0).read()
    assert (len(b), b.lost) == (0, 1)


# ------------------------------------------------------------ state machine
class RingMachine(RuleBasedStateMachine):
    """Writes, batches, overruns, reads, commits and consumer restarts against a model.

    The model knows which seq each slot holds; a read must deliver exactly the
    seqs from the consumer's cursor that are still in their slot, in order, with
    the content written for them, and count every other one as lost.
    """

    segs: Segments

    def __init__(self) -> None:
        super().__init__()
        self.ring: Ring | None = None

    @initialize(cap=st.sampled_from([2, 4, 8]), n_cons=st.integers(1, 3))
    def setup(self, cap: int, n_cons: int) -> None:
        self.ring = Ring.create(self.segs.new(), DT, cap, n_cons)
        self.cap = cap
        self.w = self.ring.writer()
        assert (self.w._fence is None) == (os.environ["EDGE_ACTORS_FENCE"] == "0")
        self.cons = [self.ring.consumer(k) for k in range(n_cons)]
        self.written = 0
        self.content: dict[int, bytes] = {}
        self.slot_seq: list[int] = [-1] * cap
        n = n_cons
        self.pos, self.lost = [0] * n, [0] * n
        self.cpos, self.clost = [0] * n, [0] * n  # committed to the header
        self.delivered: list[list[int]] = [[] for _ in range(n)]

    def teardown(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring.unlink()

    def _record(self, seq: int, x: float) -> Any:
        r = np.zeros(1, DT)[0]
        r["t_ns"], r["id"], r["kind"] = seq, seq * 7 + 1, seq % 3
        r["v"] = [x, -float(seq)]
        return r

    def _wrote(self, seq: int, r: Any) -> None:
        assert seq == self.written
        self.content[seq] = r.tobytes()
        self.slot_seq[seq % self.cap] = seq
        self.written += 1

    @rule(x=st.floats(allow_nan=True, width=64), raw=st.booleans())
    def write(self, x: float, raw: bool) -> None:
        r = self._record(self.written, x)
        seq = self.w.write_bytes(r.tobytes()) if raw else self.w.write(r)
        self._wrote(seq, r)

    @rule(n=st.integers(0, 20), x=st.floats(-1e6, 1e6))
    def write_batch(self, n: int, x: float) -> None:
        recs = np.zeros(n, DT)
        for i in range(n):
            recs[i] = self._record(self.written + i, x + i)
        first = self.w.write_batch(recs)
        assert first == self.written
        for i in range(n):
            self._wrote(first + i, recs[i])

    @rule(extra=st.integers(1, 9))
    def overrun(self, extra: int) -> None:
        for _ in range(self.cap + extra):
            r = self._record(self.written, 0.5)
            self._wrote(self.w.write(r), r)

    @rule(data=st.data(), max_records=st.integers(0, 12), commit=st.booleans())
    def read(self, data: st.DataObject, max_records: int, commit: bool) -> None:
        k = data.draw(st.integers(0, len(self.cons) - 1))
        pos = self.pos[k]
        present = [s for s in range(pos, self.written) if self.slot_seq[s % self.cap] == s]
        want = present[:max_records]
        new_pos = want[-1] + 1 if want else present[0] if present else self.written
        want_lost = (new_pos - pos) - len(want)
        b = self.cons[k].read(max_records, commit=commit)
        assert b.seqs.tolist() == want
        assert [r.tobytes() for r in b.records] == [self.content[s] for s in want]
        assert (b.first_seq, b.end_seq, b.lost) == (new_pos - len(want), new_pos, want_lost)
        prev = self.delivered[k][-1] if self.delivered[k] else -1
        assert all(s > prev for s in want)
        self.delivered[k].extend(want)
        self.pos[k], self.lost[k] = new_pos, self.lost[k] + want_lost
        if commit and (want or want_lost):
            # An empty read publishes nothing (not even an older uncommitted cursor).
            self.cpos[k], self.clost[k] = self.pos[k], self.lost[k]

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        k = data.draw(st.integers(0, len(self.cons) - 1))
        self.cons[k].commit()
        self.cpos[k], self.clost[k] = self.pos[k], self.lost[k]

    @rule(data=st.data())
    def restart_consumer(self, data: st.DataObject) -> None:
        """A new incarnation resumes at the header cursor: uncommitted reads come again."""
        k = data.draw(st.integers(0, len(self.cons) - 1))
        self.cons[k] = self.ring.consumer(k)  # type: ignore[union-attr]
        self.pos[k], self.lost[k] = self.cpos[k], self.clost[k]
        self.delivered[k] = [s for s in self.delivered[k] if s < self.cpos[k]]

    @invariant()
    def accounting(self) -> None:
        if self.ring is None:
            return
        assert self.ring.write_seq == self.written == self.w.seq
        for k, c in enumerate(self.cons):
            d = self.delivered[k]
            assert len(set(d)) == len(d) and d == sorted(d)
            assert (c.pos, c.lost) == (self.pos[k], self.lost[k])
            assert self.written == len(d) + c.lost + c.pending
            line = self.ring.consumer_line(k)
            assert (line["read_seq"], line["lost"]) == (self.cpos[k], self.clost[k])
            # What the producer sees (Ring.overrun): never more than the consumer has
            # lost or will count for what is already overwritten; exact once committed.
            gone = sum(
                1 for q in range(self.pos[k], self.written) if self.slot_seq[q % self.cap] != q
            )
            seen = self.ring.overrun(k)
            assert seen <= self.lost[k] + gone
            if (self.cpos[k], self.clost[k]) == (self.pos[k], self.lost[k]):
                assert seen == self.lost[k] + gone


@pytest.mark.parametrize("fence_env", ["0", "1"], ids=["nofence", "fence"])
def test_ring_state_machine(
    fence_env: str, segs: Segments, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_ACTORS_FENCE", fence_env)
    RingMachine.segs = segs
    run_state_machine_as_test(
        RingMachine,
        settings=settings(max_examples=150, stateful_step_count=40, deadline=None),
    )


# -------------------------------------------------------------------- fence
def test_fence_forced_is_native_on_x86(monkeypatch: pytest.MonkeyPatch) -> None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the native-fence assertion is for x86-64")
    monkeypatch.setenv("EDGE_ACTORS_FENCE", "1")
    assert fence.fence_required()
    assert fence.fence_kind() == "native"
    f = fence.get_fence()
    assert f is not None
    f()
    monkeypatch.setenv("EDGE_ACTORS_FENCE", "0")
    assert fence.get_fence() is None and fence.fence_kind() == "none"
    monkeypatch.delenv("EDGE_ACTORS_FENCE")
    assert not fence.fence_required()  # x86 keeps store order: no fence by default


def test_lock_fence_fallback(segs: Segments, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no executable page can be made, the lock fence is used and the ring still works."""
    monkeypatch.setenv("EDGE_ACTORS_FENCE", "1")
    monkeypatch.setattr(fence, "_native_fence", lambda: None)
    monkeypatch.setattr(fence, "_FENCE", None)
    monkeypatch.setattr(fence, "_FENCE_KIND", "")
    assert fence.fence_kind() == "lock"
    ring = Ring.create(segs.new(), DT, 4, 1)
    w, c = ring.writer(), ring.consumer(0)
    assert w._fence is fence._FENCE and c._fence is fence._FENCE
    for i in range(6):
        w.write(rec(i))
    w.write_batch(np.zeros(3, DT))
    b = c.read()
    assert b.seqs.tolist() == [5, 6, 7, 8] and b.lost == 5
    ring.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_lock_fence_works_in_a_child_forked_while_another_thread_was_inside_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process-global fence survives fork: the child's lock fence is never stuck.

    Holding the fence's lock in the parent stands for another thread being
    inside the fence at the instant of the fork: the child inherits a locked
    lock that no thread of its own will ever release. Its first ring write
    must not hang on it (SIGALRM after 5 s says it did).
    """
    monkeypatch.setenv("EDGE_ACTORS_FENCE", "1")
    monkeypatch.setattr(fence, "_native_fence", lambda: None)
    monkeypatch.setattr(fence, "_FENCE", None)
    monkeypatch.setattr(fence, "_FENCE_KIND", "")
    f = fence.get_fence()
    assert fence.fence_kind() == "lock"
    lock = f.lock  # type: ignore[union-attr]
    lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                signal.alarm(5)
                fence.get_fence()()  # type: ignore[misc]
                code = 0
            finally:
                os._exit(code)
    finally:
        lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child hung in the inherited fence lock"


# ---------------------------------------------------- fence placement (issue 14)
class _Trace:
    """The order of a ring's stores, loads and fences, as one list of events.

    x86 never reorders stores with stores or loads with loads, and QEMU on x86
    inherits that, so no test here can watch a misplaced fence let a reader see
    a new ``write_seq`` before the slot's stamp. What can be tested is the
    program order the memory-model argument (ring module docstring) relies on:
    every shared-memory access of the writer and the reader goes through a
    recording proxy, and the fence is a function that records its calls.
    """

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.events: list[str] = []
        self.storing = False
        self.stamp_words = {
            ring_module.HEADER_SIZE // 8 + k * (ring.slot_size // 8): k
            for k in range(ring.capacity)
        }

    def fence(self) -> None:
        self.events.append("fence")

    def word(self, i: int) -> str:
        if i == W_WRITE_SEQ:
            return "write_seq"
        if i in self.stamp_words:
            return "stamp"
        return f"word{i}"


class _TracedWords:
    """Stands in for ``Ring.q`` (int64 words) or ``Ring.buf`` (bytes): records every access."""

    def __init__(self, trace: _Trace, real: memoryview, words: bool) -> None:
        self.trace, self.real, self.words = trace, real, words

    def __getitem__(self, i: Any) -> Any:
        if self.words:
            self.trace.events.append("load " + self.trace.word(i))
        return self.real[i]

    def __setitem__(self, i: Any, v: Any) -> None:
        if self.words:
            self.trace.events.append("store " + self.trace.word(i))
        else:
            self.trace.events.append("store record")
        self.real[i] = v

    def __getattr__(self, name: str) -> Any:  # release(), cast(), ...
        return getattr(self.real, name)


def _traced_array(trace: _Trace, arr: Any, what: str) -> Any:
    """A view of ``arr`` whose element reads and writes (and those of its views) are recorded."""

    def name(k: Any) -> str:
        if what == "header":
            return "write_seq" if k == W_WRITE_SEQ else "header"
        return what

    class Traced(np.ndarray):  # type: ignore[type-arg]
        def __getitem__(self, k: Any) -> Any:
            # slots["rec"] only names a field; numpy's own __setitem__ indexes too.
            if not isinstance(k, str) and not trace.storing:
                trace.events.append("load " + name(k))
            return super().__getitem__(k)

        def __setitem__(self, k: Any, v: Any) -> None:
            trace.events.append("store " + ("record" if what == "slots" else name(k)))
            trace.storing = True
            try:
                super().__setitem__(k, v)
            finally:
                trace.storing = False

    return arr.view(Traced)


class _TracedRing:
    """Make ``ring``'s next writer and consumer record their accesses (see :class:`_Trace`)."""

    def __init__(self, ring: Ring, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trace = t = _Trace(ring)
        monkeypatch.setattr(ring_module, "get_fence", lambda: t.fence)
        ring.q = _TracedWords(t, ring.q, words=True)  # type: ignore[assignment]
        ring.buf = _TracedWords(t, ring.buf, words=False)  # type: ignore[assignment]
        ring.words = _traced_array(t, ring.words, "header")
        ring.stamps = _traced_array(t, ring.stamps, "stamps")
        ring.slots = _traced_array(t, ring.slots, "slots")

    def take(self) -> list[str]:
        """The events since the last call; header words other than ``write_seq`` left out."""
        out = [e for e in self.trace.events if not e.endswith(" header")]
        self.trace.events.clear()
        return out


def test_writer_fences_the_stamp_before_write_seq(
    segs: Segments, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that sees the new ``write_seq`` sees the slot's stamp: one fence between them.

    Program order checked with an instrumented fence (x86 cannot show the
    reordering itself): stamp = BUSY | fence | record | fence | stamp = seq |
    fence | write_seq, for a single write and for a batch.
    """
    ring = Ring.create(segs.new(), DT, 4, 1)
    traced = _TracedRing(ring, monkeypatch)
    w = ring.writer()
    traced.take()
    w.write(rec(0))
    assert traced.take() == [
        "store stamp",  # BUSY
        "fence",
        "store record",
        "fence",
        "store stamp",  # seq
        "fence",
        "store write_seq",
    ]
    w.write_batch(np.zeros(2, DT))
    assert traced.take() == [
        "store stamps",  # BUSY
        "fence",
        "store record",
        "fence",
        "store stamps",  # seqs
        "fence",
        "store write_seq",
    ]
    reader = Ring.attach(ring.name, DT)
    assert reader.consumer(0).read().seqs.tolist() == [0, 1, 2]
    reader.close()
    ring.close()


def test_reader_fences_write_seq_before_the_stamps(
    segs: Segments, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader loads ``write_seq``, fences, then the stamps: it never sees an older stamp.

    Without that fence a weakly ordered CPU may satisfy the stamp loads before
    the ``write_seq`` load, find a slot's stamp from before the write that
    ``write_seq`` announces, and count a written record as lost. Program order
    checked with an instrumented fence (x86 cannot show the reordering).
    """
    ring = Ring.create(segs.new(), DT, 8, 1)
    w = ring.writer()
    for i in range(3):
        w.write(rec(i))
    traced = _TracedRing(ring, monkeypatch)
    c = ring.consumer(0)
    traced.take()
    b = c.read()
    assert b.seqs.tolist() == [0, 1, 2] and b.lost == 0
    assert traced.take()[:7] == [
        "load write_seq",
        "fence",
        "load stamps",
        "fence",
        "load slots",
        "fence",
        "load stamps",
    ]
    ring.close()


# ------------------------------------------------------- unrelated processes
ATTACH_CHILD = textwrap.dedent(
    """
    import json, sys
    from edge_actors.records import model_dtype
    from edge_actors.ring import Ring
    ring = Ring.attach(sys.argv[1], model_dtype(2))
    b = ring.consumer(1).read()
    w = ring.writer()
    w.write((0, 1000, 0, [1000.0, 1.0]))
    from multiprocessing import resource_tracker as rt
    tracker = getattr(rt, "_resource_tracker", None)
    print(json.dumps({
        "seqs": b.seqs.tolist(),
        "v": b.records["v"][:, 0].tolist(),
        "tracker_started": getattr(tracker, "_pid", None) is not None,
    }))
    if sys.argv[2] == "raise":
        raise SystemExit(3)
    """
)


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_unrelated_process_attach_leaves_ring_intact(
    segs: Segments, fence_mode: str, how: str
) -> None:
    """CPython gh-82300: an attaching process must not unlink the segment when it exits."""
    import json

    name = segs.new()
    ring = Ring.create(name, DT, 8, 2)
    w = ring.writer()
    for i in range(3):
        w.write(rec(i, 0.25))
    for _ in range(2):  # twice: the second child must find what the first one left
        out = subprocess.run(
            [sys.executable, "-c", ATTACH_CHILD, name, how],
            capture_output=True,
            text=True,
            timeout=300,  # a child importing numpy: tens of seconds on a slow board
            env=python_env(),
        )
        assert out.returncode == (3 if how == "raise" else 0), out.stderr
        assert "leaked" not in out.stderr and "resource_tracker" not in out.stderr
        got = json.loads(out.stdout)
        assert not got["tracker_started"]
        assert shm.exists(name)
    assert got["seqs"] == [3]  # the first child's write, read by the second
    assert ring.write_seq == 5
    b = ring.consumer(0).read()
    assert b.seqs.tolist() == [0, 1, 2, 3, 4]
    assert b.records["v"][:, 0].tolist() == [0.0, 1.0, 2.0, 1000.0, 1000.0]
    assert ring.consumer_line(1)["read_seq"] == 4
    ring.close()
    # ... and a new attach from here still works.
    again = Ring.attach(name, DT)
    assert again.write_seq == 5
    again.close()


def test_stdlib_attach_would_unlink_control(segs: Segments) -> None:
    """Control for the test above: the stdlib's tracked attach does remove the segment.

    This proves the child-process check would catch gh-82300 if ``shm.attach``
    went through ``SharedMemory`` (3.13: ``track=True`` is still the default).
    """
    name = segs.new()
    shm.create(name, 4096).close()
    code = (
        "import sys\n"
        "from multiprocessing import shared_memory\n"
        "s = shared_memory.SharedMemory(sys.argv[1])\n"
        "s.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, name], capture_output=True, timeout=300)
    assert not shm.exists(name)


# --------------------------------------------------------------- SIGKILL
def _delivered(frames: list[Any]) -> np.ndarray[Any, Any]:
    return np.concatenate(frames) if frames else np.empty(0, np.int64)


def _kill_consumer_loop(
    segs: Segments, tmp_path: Path, mode: str, kills: int
) -> tuple[np.ndarray[Any, Any], Ring, int]:
    """A paced writer process; a consumer process SIGKILLed ``kills`` times, then drained.

    Most incarnations are forked from a pre-imported zygote (a restart costs
    ~5 ms instead of ~150 ms); every 10th is a fresh interpreter.
    """
    n_values, cap, per_ms = 4, 8192, 60
    name = segs.new()
    ring = Ring.create(name, stream_dtype(n_values), cap, 1)
    out, done = tmp_path / f"{mode}.frames", tmp_path / f"{mode}.done"
    writer = spawn("paced_writer", name, str(n_values), str(10**9), str(per_ms))
    zygote = Zygote()
    rng = random.Random(1234)
    args = ("consumer", name, "0", str(out), mode, str(n_values), str(done))
    try:
        wait_line(writer, "ready")
        for i in range(kills):
            if i % 10 == 5:
                fresh = spawn(*args)
                wait_line(fresh, "ready")
                time.sleep(rng.uniform(0.0, 0.03))
                kill(fresh)
            else:
                pid, _ = zygote.start(*args)
                time.sleep(rng.uniform(0.0, 0.03))
                zygote.kill(pid)
            if i % 10 == 9:
                time.sleep(0.25)  # down long enough for the writer to lap it
        kill(writer)
        done.touch()
        last = spawn(*args)
        assert last.wait(timeout=30) == 0, last.stderr.read() if last.stderr else ""
        for f in (last.stdout, last.stderr):
            if f is not None:
                f.close()
    finally:
        zygote.close()
        if writer.poll() is None:
            kill(writer)
    assert not (tmp_path / f"{mode}.frames.bad").exists(), "a delivered record was torn"
    frames, _, _ = read_frames(out)
    return _delivered(frames), ring, ring.write_seq


def test_sigkill_consumer_exactly_once_with_cursor_in_output(
    segs: Segments, tmp_path: Path
) -> None:
    """read(commit=False) + cursor stored atomically with the output: exactly once.

    100 SIGKILLs at random moments: no seq twice, every seq delivered or lost,
    and ``lost`` is exactly the number of seqs never delivered.
    """
    got, ring, written = _kill_consumer_loop(segs, tmp_path, "exact", 100)
    assert len(np.unique(got)) == len(got), "a seq was delivered twice"
    assert (np.diff(got) > 0).all()
    assert got[-1] == written - 1
    _, pos, lost = read_frames(tmp_path / "exact.frames")
    assert pos == written
    assert lost > 0, "the test should make the writer lap the consumer"
    assert len(got) + lost == written
    line = ring.consumer_line(0)
    assert (line["read_seq"], line["lost"]) == (pos, lost)
    assert line["incarnation"] == 101
    ring.close()


def test_sigkill_consumer_commit_in_read_is_at_most_once(segs: Segments, tmp_path: Path) -> None:
    """read(commit=True) publishes the cursor before the caller stored the batch.

    Never a duplicate; but a kill between ``read`` and the caller's own write
    loses that batch without counting it in ``lost`` (at-most-once). Consumers
    that must not lose (the uploader) use ``commit=False`` as above.
    """
    got, ring, written = _kill_consumer_loop(segs, tmp_path, "commit", 100)
    assert len(np.unique(got)) == len(got), "a seq was delivered twice"
    assert (np.diff(got) > 0).all()
    line = ring.consumer_line(0)
    assert line["read_seq"] == written
    uncounted = written - len(got) - line["lost"]
    assert uncounted >= 0
    print(f"commit=True: {uncounted} of {written} seqs neither delivered nor counted lost")
    ring.close()


def test_commit_window_semantics_in_process(segs: Segments) -> None:
    """The window the SIGKILL tests probe, made deterministic: 'crash' = drop the batch."""
    ring = Ring.create(segs.new(), DT, 8, 2)
    w = ring.writer()
    for i in range(4):
        w.write(rec(i))
    # commit=True: the batch is committed before the caller could store it.
    assert len(ring.consumer(0).read(2)) == 2  # ... and the process dies here
    c0 = ring.consumer(0)
    assert c0.read().seqs.tolist() == [2, 3] and c0.lost == 0  # 0, 1: gone, not counted
    # commit=False + commit after storing: the dropped batch comes again.
    assert len(ring.consumer(1).read(2, commit=False)) == 2  # dies before storing
    c1 = ring.consumer(1)
    assert c1.read().seqs.tolist() == [0, 1, 2, 3]
    ring.close()


def test_sigkill_writer_never_tears_a_record(segs: Segments) -> None:
    """SIGKILL the writing process at random moments; no torn record is ever delivered.

    Writers alternate between ``write_bytes``, ``write_batch``, ``Producer.log``
    and ``Producer.log_batch``, half of them with the fence forced; every 10th
    is a fresh interpreter, the others are forked from a zygote. Each new one
    continues from ``write_seq``. The consumer here reads concurrently.
    """
    kills, n_values, cap = 120, 32, 256
    name = segs.new()
    ring = Ring.create(name, stream_dtype(n_values), cap, 1)
    cons = ring.consumer(0)
    rng = random.Random(99)
    modes = ["bytes", "batch", "producer", "producer_batch"]
    delivered = 0
    last = -1
    busy_at_kill = 0
    bad: list[int] = []

    def drain() -> None:
        nonlocal delivered, last
        while True:
            b = cons.read(4096)
            if not len(b) and not b.lost:
                return
            bad.extend(check_records(b.records, b.seqs))
            if len(b):
                assert b.seqs[0] > last
                last = int(b.seqs[-1])
            delivered += len(b)

    zygote = Zygote()
    try:
        for i in range(kills):
            fence_env = "1" if i % 2 else "0"
            args = ("writer", name, str(n_values), modes[i % 4], "-1")
            before = ring.write_seq
            fresh = None
            if i % 10 == 3:
                fresh = spawn(*args, env=python_env(EDGE_ACTORS_FENCE=fence_env))
                start = int(wait_line(fresh, "ready").split()[2])
            else:
                pid, rest = zygote.start(*args, fence=fence_env)
                start = int(rest[0])
            assert start == before, "a new writer must continue from write_seq"
            deadline = time.monotonic() + rng.uniform(0.0005, 0.02)
            while time.monotonic() < deadline:
                drain()
            if fresh is not None:
                kill(fresh)
            else:
                zygote.kill(pid)
            if ring.write_seq >= cap and ring.stamps[ring.write_seq & ring.mask] == BUSY:
                busy_at_kill += 1  # killed inside a write: that slot is torn
            drain()
    finally:
        zygote.close()
    assert not bad, f"torn records delivered: {bad[:10]}"
    assert ring.write_seq > kills
    assert delivered + cons.lost == ring.write_seq
    assert ring.stats()["consumers"][0]["pending"] == 0
    print(f"writer killed inside a write {busy_at_kill}/{kills} times")
    ring.close()
