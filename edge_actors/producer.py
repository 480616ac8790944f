"""The producer handle: how an ML application logs inputs and outputs.

``log`` packs one record into a scratch buffer (which validates it), then
copies it into the producer's own lane (an SPSC ring in shared memory) with a
handful of int64 stores: no system call, no lock held by another process, no
disk or network. Everything that can wait — asking the supervisor for a lane,
noticing it went away, attaching again — runs in a small background thread.

Without a supervisor the handle is *detached*: records are validated and held
in a small bounded in-process buffer (``pending_records``, config key
``model_logging.pending_records``) that is written into the lane as soon as
one arrives; only what overflows it is counted as dropped (``detached`` in
``stats()``), never raised about. It attaches by itself within a second once a
supervisor is up, and again after a supervisor restart. :func:`connect` waits
for the first attach (briefly, and only when an agent's socket exists), so an
application that logs at once loses nothing.

A lane filling faster than its readers poll wakes them through their doorbells
(``edge_actors.doorbell``), rung when the writes cross a half-lane boundary:
never a system call per record. What they lose anyway (a producer faster than
the agent can ingest) is in ``stats()["lost"]["ring_overrun"]``, read from
the uploader's ``lost`` counter in the lane header.

This module imports numpy and the ring, nothing heavy (no scipy, no boto3).
"""

from __future__ import annotations

import logging
import math
import os
import reprlib
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_actors import control
from edge_actors.doorbell import Ringer
from edge_actors.records import (
    KIND_FEEDBACK,
    KIND_INPUT,
    KIND_OUTPUT,
    KIND_PAIR,
    PAYLOAD_HEAD,
    model_dtype,
    model_struct,
    payload_dtype,
)
from edge_actors.ring import W_FLAGS, Ring, RingError, RingWriter
from edge_actors.schema import FieldSpec, signature

#: Consumer line of the uploader in a lane header (topology.UPLOADER; not imported
#: from there to keep this module's imports small).
_UPLOADER = 0

log = logging.getLogger(__name__)

_NAN = math.nan
_time_ns = time.time_ns
CLOSED_MESSAGE = "producer is closed: create a new one with connect()"
#: How often a detached producer tries to reach the supervisor.
RETRY_SECONDS = 0.2
#: Records held while detached, by default (``model_logging.pending_records``).
DEFAULT_PENDING_RECORDS = 4096
#: Payload bytes held while detached, at most (each payload is also one pending record).
PENDING_PAYLOAD_BYTES = 4 << 20
_PACK_D = struct.Struct("<d").pack


class ProducerClosedError(RuntimeError):
    """The producer was used after ``close()``."""


class _SideConverter:
    """Converts one side (inputs or outputs) of a record to a list of floats."""

    def __init__(self, label: str, fields: Sequence[FieldSpec]) -> None:
        self.label = label
        self.fields = list(fields)
        self.n = len(self.fields)
        self.names = [f.name for f in self.fields]
        self.index = {f.name: i for i, f in enumerate(self.fields)}
        self.cats: dict[int, dict[str, int]] = {
            i: {c: k for k, c in enumerate(f.categories)}
            for i, f in enumerate(self.fields)
            if f.kind == "categorical"
        }
        self.nans = [_NAN] * self.n

    def values(self, x: Any) -> list[Any] | tuple[Any, ...]:
        """The side's values in declared order; raises ValueError naming the bad field."""
        if isinstance(x, dict):
            return self._from_dict(x)
        if isinstance(x, np.ndarray):
            if x.shape != (self.n,):
                raise ValueError(
                    f"{self.label}: expected an array of shape ({self.n},) "
                    f"for fields {self.names}, got shape {x.shape}"
                )
            if x.dtype.kind not in "fiub":
                if self.cats:
                    return self._encode(list(x))
                raise ValueError(f"{self.label}: array dtype must be numeric, got {x.dtype}")
            return x.tolist()  # type: ignore[no-any-return]
        if isinstance(x, (list, tuple)):
            if len(x) != self.n:
                raise ValueError(
                    f"{self.label}: expected {self.n} values for fields {self.names}, got {len(x)}"
                )
            return self._encode(x) if self.cats else x
        if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
            raise ValueError(
                f"{self.label}: expected a dict, a sequence or a numpy array, "
                f"got {type(x).__name__}"
            )
        return self.values(list(x))

    def _from_dict(self, d: Mapping[str, Any]) -> list[Any]:
        out = self.nans.copy()
        index = self.index
        for k, v in d.items():
            i = index.get(k)
            if i is None:
                raise ValueError(
                    f"{self.label}.{k}: unknown field (declared: {', '.join(self.names) or 'none'})"
                )
            out[i] = _NAN if v is None else v
        return self._encode(out) if self.cats else out

    def _encode(self, vals: Sequence[Any]) -> list[Any]:
        out = list(vals)
        for i, table in self.cats.items():
            v = out[i]
            if isinstance(v, str):
                out[i] = float(table.get(v, -1))
        return out

    def diagnose(self, vals: Sequence[Any]) -> ValueError | None:
        """The error for the first value struct refuses to pack as a float (None: all pack)."""
        for name, v in zip(self.names, vals, strict=False):
            try:
                _PACK_D(v)
            except (struct.error, OverflowError, TypeError):
                # reprlib: a huge int or a long list must not flood the log line.
                return ValueError(
                    f"{self.label}.{name}: must be a number, "
                    f"got {reprlib.repr(v)} ({type(v).__name__})"
                )
        return None


class Producer:
    """Logs model records into this process's lane; see the module docstring.

    Thread-safe: threads sharing one producer take turns on an in-process lock
    (never one held by another process). Create one per process (or per thread
    for no contention at all) with :func:`connect`.
    """

    def __init__(
        self,
        run_dir: Path | str,
        instance: str = "default",
        inputs: Sequence[Any] = (),
        outputs: Sequence[Any] = (),
        *,
        start: bool = True,
        payload: bool = False,
        pending_records: int = DEFAULT_PENDING_RECORDS,
        attach_timeout: float = 0.0,
        model: str | None = None,
        version: str | None = None,
    ) -> None:
        """Args (besides the supervisor's ``run_dir`` / ``instance`` and the model fields):

        start: run the background attach thread (tests attach by hand).
        payload: ask for a payload ring with the lane (see :meth:`log_payload`).
        pending_records: records held while detached and written once a lane
            arrives (0: drop at once); what overflows is counted ``detached``.
        attach_timeout: with ``start``, wait up to this long for the first
            attach attempt to finish, so records logged right after the
            constructor reach the lane; returns at once when no agent's
            socket exists or the agent refuses.
        model, version: the model this producer logs (``None``: the config's
            only one) and its version (``None``: the one the config gives);
            the agent refuses a model its config does not declare unless
            ``model_logging.allow_undeclared_models`` is set.
        """
        if pending_records < 0:
            raise ValueError(f"pending_records must be >= 0, got {pending_records}")
        self.run_dir = Path(run_dir)
        #: The model this producer logs and its version, as the agent resolved them
        #: once attached (before: as asked, ``None`` for "the config's").
        self.model = model
        self.model_version = version
        #: Ask for a payload ring with the lane (for non-numeric values, see log_payload).
        self.want_payload = payload
        self._payload_ring: Ring | None = None
        self._payload_writer: RingWriter | None = None
        self._payload_scratch = bytearray()
        self.instance = instance
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._closed = False
        self._writer: RingWriter | None = None
        # Set on attach, None while detached: the writer's fast path, and the
        # lane's header words (log() checks the retired flag in them).
        self._write: Callable[[Any], int] | None = None
        self._q: memoryview | None = None
        self._ring: Ring | None = None
        self._sock: socket.socket | None = None
        self._next_id = (int.from_bytes(os.urandom(3), "little") & 0x3FFFFF) << 40
        # Records written into lanes this producer left; the current lane's are
        # its writer's seq minus ``_lane_first`` (no counter on the hot path).
        self._written = 0
        self._lane_first = 0
        self._dropped: dict[str, int] = {
            "detached": 0,
            "retired": 0,
            "schema_mismatch": 0,
            "lane_lost": 0,
            "payload_too_large": 0,
            "payload_detached": 0,
            "pending_at_close": 0,
        }
        # Records held while detached: packed records back to back (see _hold).
        self._pending = bytearray()
        self._pending_n = 0
        self._pending_max = int(pending_records)
        self._pending_payloads: list[tuple[int, int, int, bytes]] = []  # (t_ns, id, kind, data)
        self._pending_payload_bytes = 0
        # Uploader losses of lanes this producer left (the header of the current one has the rest).
        self._overrun_base = 0
        self._payload_overrun_base = 0
        # Highest loss seen on the current lane / payload ring (the header figure
        # can dip for an instant while the uploader commits: stats never go back).
        self._overrun_seen = 0
        self._payload_overrun_seen = 0
        self._ringer = Ringer(self.run_dir, instance)
        # Doorbell cadence: ring when the sequence crosses a multiple of half the lane.
        self._half = 0
        self._payload_half = 0
        self._orphan_seq = 0
        self._attaches = 0
        self._last_error = ""
        self._schema_known = False
        self._set_schema(
            [FieldSpec.from_any(f) for f in inputs], [FieldSpec.from_any(f) for f in outputs]
        )
        self._stop = threading.Event()
        self._tried = threading.Event()  # set after each attach attempt, success or not
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _register_fork_handler(self)
        if start:
            self._start_thread()
            if attach_timeout > 0:
                self.wait_first_attempt(attach_timeout)

    # ----------------------------------------------------------------- schema
    def _set_schema(self, inputs: list[FieldSpec], outputs: list[FieldSpec]) -> None:
        self._in = _SideConverter("inputs", inputs)
        self._out = _SideConverter("outputs", outputs)
        n = self._in.n + self._out.n
        self._schema_known = n > 0
        self._n_values = max(n, 1)
        self.dtype = model_dtype(self._n_values)
        self._struct = model_struct(self._n_values)
        self._scratch = bytearray(self._struct.size)
        self._pack_into = self._struct.pack_into
        self._nan_in = (_NAN,) * self._in.n
        self._nan_out = (_NAN,) * self._out.n
        # Length a plain list/tuple must have to take the fast path (-1: never).
        self._in_plain = self._in.n if not self._in.cats else -1
        self._out_plain = self._out.n if not self._out.cats else -1

    def _set_width(self, width: int) -> None:
        """Records of ``width`` value slots (the agent's lanes; lock held).

        The struct still packs this model's values at the front of the scratch
        record; the slots after them (a wider model's) stay NaN. Held records
        are widened the same way.
        """
        if width == self.dtype["v"].shape[0] or width < self._n_values:
            return
        wide = model_dtype(width)
        if self._pending_n:
            old = np.frombuffer(bytes(self._pending), dtype=self.dtype)
            new = np.zeros(len(old), dtype=wide)
            for name in ("t_ns", "id", "kind"):
                new[name] = old[name]
            new["v"][:] = _NAN
            new["v"][:, : old["v"].shape[1]] = old["v"]
            self._pending = bytearray(new.tobytes())
        self.dtype = wide
        scratch = np.zeros(1, dtype=wide)
        scratch["v"][:] = _NAN
        self._scratch = bytearray(scratch.tobytes())

    def schema(self) -> dict[str, list[dict[str, Any]]]:
        """The declared fields, as the supervisor sees them."""
        return {
            "inputs": [f.to_wire() for f in self._in.fields],
            "outputs": [f.to_wire() for f in self._out.fields],
        }

    # ---------------------------------------------------------------- logging
    def log(self, inputs: Any, outputs: Any) -> int:
        """Log one prediction (inputs and outputs); returns the record id.

        Raises ValueError (naming the field) for wrong shapes, unknown keys or
        non-numeric values, before anything is written. Never raises for a
        transport problem: without a lane the record is held (``pending_records``)
        and written once one arrives; only what overflows that is counted dropped.
        """
        # Plain lists/tuples of the right length skip the generic conversion:
        # struct validates their values while packing.
        t = type(inputs)
        if not ((t is list or t is tuple) and self._in_plain == len(inputs)):
            if not self._schema_known:
                return self._drop_unknown_schema()
            inputs = self._in.values(inputs)
        t = type(outputs)
        if not ((t is list or t is tuple) and self._out_plain == len(outputs)):
            if not self._schema_known:
                return self._drop_unknown_schema()
            outputs = self._out.values(outputs)
        # _put's body for a new record, inlined: a Python call costs ~60 ns here.
        self._acquire()
        try:
            rid = self._next_id
            self._next_id = rid + 1
            scratch = self._scratch
            try:
                self._pack_into(scratch, 0, _time_ns(), rid, KIND_PAIR, *inputs, *outputs)
            except struct.error:
                return self._pack_failed(KIND_PAIR, rid, inputs, outputs)
            q = self._q
            if q is None or q[W_FLAGS]:
                return self._not_attached(rid)
            seq = self._write(scratch)  # type: ignore[misc]
            if not seq & self._half:
                self._ringer.ring()  # crossed a half lane: wake sleeping readers
            return rid
        finally:
            self._release()

    def _lane_seq(self) -> int:
        """The current lane's ``write_seq`` as this producer wrote it (0 without one)."""
        return self._writer.seq if self._writer is not None else 0

    def _drop_unknown_schema(self) -> int:
        """No config declared fields and no supervisor told us yet: count, cannot validate."""
        with self._lock:
            if self._closed:
                raise ProducerClosedError(CLOSED_MESSAGE)
            rid = self._next_id
            self._next_id = rid + 1
            self._dropped["detached"] += 1
            return rid

    def log_input(self, inputs: Any) -> int:
        """Log inputs alone (outputs follow with :meth:`log_output`); returns the id."""
        return self._put(KIND_INPUT, -1, self._in.values(inputs), self._nan_out)

    def log_output(self, input_id: int, outputs: Any) -> int:
        """Log the outputs of an earlier :meth:`log_input`; the record carries ``input_id``."""
        return self._put(KIND_OUTPUT, int(input_id), self._nan_in, self._out.values(outputs))

    def log_feedback(self, record_id: int, truth: Any) -> int:
        """Log the ground truth of an earlier prediction (seconds or hours later); returns its id.

        ``record_id`` is the id :meth:`log` (or :meth:`log_output`) returned;
        ``truth`` has the outputs' form (a dict, a sequence, an array), or is a
        bare value when the model declares one output. The record goes into
        the lane like any other (a few stores, no system call), kind
        ``feedback``, the truth in the output slots: the uploader ships it as
        the ``feedback`` stream, joinable on ``id``; the drift worker joins it
        to the prediction for the rolling performance. Raises ValueError
        (naming the field) for bad values, as :meth:`log` does.
        """
        rid = int(record_id)
        if rid < 0:
            raise ValueError(f"record_id: must be an id returned by log(), got {record_id!r}")
        if self._out.n == 0 and self._schema_known:
            raise ValueError("log_feedback: the model declares no outputs to give the truth of")
        if self._out.n == 1 and (
            isinstance(truth, (str, bytes, int, float, np.generic)) or truth is None
        ):
            truth = [_NAN if truth is None else truth]
        return self._put(KIND_FEEDBACK, rid, self._nan_in, self._out.values(truth))

    def _put(self, kind: int, rid: int, vin: Any, vout: Any) -> int:
        """Write one record (the general path; :meth:`log` inlines the same steps)."""
        self._acquire()
        try:
            if rid < 0:
                rid = self._next_id
                self._next_id = rid + 1
            try:
                self._pack_into(self._scratch, 0, _time_ns(), rid, kind, *vin, *vout)
            except struct.error:
                return self._pack_failed(kind, rid, vin, vout)
            q = self._q
            if q is None or q[W_FLAGS]:
                return self._not_attached(rid)
            seq = self._write(self._scratch)  # type: ignore[misc]
            if not seq & self._half:
                self._ringer.ring()
            return rid
        finally:
            self._release()

    def _pack_failed(self, kind: int, rid: int, vin: Any, vout: Any) -> int:
        """A value struct would not pack: say which field, or drop if no schema is known yet."""
        if self._closed:
            raise ProducerClosedError(CLOSED_MESSAGE) from None
        if not self._schema_known:
            self._dropped["detached"] += 1
            return rid
        bad = self._in.diagnose(vin) if kind != KIND_OUTPUT else None
        bad = bad or self._out.diagnose(vout)
        raise (bad or ValueError("values must be numbers")) from None

    def _not_attached(self, rid: int) -> int:
        """Hold the record packed in the scratch buffer: it has no lane to go to (lock held)."""
        if self._closed:
            raise ProducerClosedError(CLOSED_MESSAGE)
        reason = "detached"
        if self._q is not None:
            # The supervisor retired the lane (it is shutting down): writing
            # now would vanish unseen, so hold it for the next lane.
            self._detach_locked("lane retired by the supervisor")
            reason = "retired"
        self._hold(self._scratch, 1, reason)
        return rid

    def _hold(self, packed: Any, n: int, reason: str = "detached") -> None:
        """Keep ``n`` packed records for the next lane; count what does not fit (lock held).

        Like a bounded queue that drops the newest (Vector's ``when_full:
        drop_newest``, OpenTelemetry's batch processor): what is held stays a
        contiguous run of the earliest records.
        """
        keep = max(0, min(n, self._pending_max - self._pending_n))
        if keep:
            self._pending += packed[: keep * self.dtype.itemsize]
            self._pending_n += keep
        if n > keep:
            self._dropped[reason] += n - keep

    def _flush_pending(self) -> None:
        """Write the held records (and payloads) into the new lane (lock held, attached)."""
        w = self._writer
        if w is None:
            return
        if self._pending_n:
            recs = np.frombuffer(bytes(self._pending), dtype=self.dtype)
            old = w.seq
            w.write_batch(recs)
            if (old ^ w.seq) > self._half:
                self._ringer.ring()
        self._pending = bytearray()
        self._pending_n = 0
        held, self._pending_payloads = self._pending_payloads, []
        self._pending_payload_bytes = 0
        for t_ns, rid, kind, data in held:
            self._write_payload(rid, kind, data, t_ns)

    def log_batch(self, inputs_2d: Any, outputs_2d: Any) -> int:
        """Log many predictions at once (numeric arrays, one row per record); returns the first id.

        Categorical columns carry category indices here.
        """
        xin = _asarray("inputs", inputs_2d)
        xout = _asarray("outputs", outputs_2d)
        n = _check_2d("inputs", xin, self._in)
        m = _check_2d("outputs", xout, self._out)
        if n != m:
            raise ValueError(f"inputs has {n} rows but outputs has {m}")
        recs = np.empty(n, dtype=self.dtype)
        recs["kind"] = KIND_PAIR
        if recs["v"].shape[1] > self._n_values:
            recs["v"][:, self._n_values :] = _NAN  # a wider model's slots
        with self._lock:
            if self._closed:
                raise ProducerClosedError(CLOSED_MESSAGE)
            first = self._next_id
            self._next_id += n
            recs["id"] = np.arange(first, first + n, dtype=np.int64)
            recs["t_ns"] = time.time_ns()
            if self._in.n:
                recs["v"][:, : self._in.n] = xin
            if self._out.n:
                recs["v"][:, self._in.n :] = xout
            w = self._writer
            if w is None:
                self._hold(recs.tobytes(), n)
                return first
            if self._q is not None and self._q[W_FLAGS]:
                self._detach_locked("lane retired by the supervisor")
                self._hold(recs.tobytes(), n, "retired")
                return first
            old = w.seq
            w.write_batch(recs)
            if (old ^ w.seq) > self._half:
                self._ringer.ring()
        return first

    # ------------------------------------------------------------ attachment
    def _start_thread(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._attach_loop, name="edge-actors-producer", daemon=True
        )
        self._thread.start()

    def _attach_loop(self) -> None:
        """Keep a lane: connect, ask for one, wait for the connection to end, repeat.

        When the supervisor dies (kill -9) the lane segment survives and its
        successor re-adopts it, so the producer keeps writing into it and asks
        the new supervisor for that same lane back: nothing is lost across a
        supervisor restart. After a clean shutdown the lane is marked retired
        and the producer stops writing into it (see ``_not_attached``).
        """
        while not self._stop.is_set():
            sock = None
            try:
                sock, reply = self._request_lane()
                self._attach(sock, reply)
            except (OSError, ValueError, RingError, control.ControlError) as exc:
                if sock is not None:
                    sock.close()
                self._last_error = str(exc)
                self._tried.set()
                self._stop.wait(RETRY_SECONDS)
                continue
            self._tried.set()
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            with self._lock:
                if self._sock is sock:
                    self._sock = None
                    self._orphan_seq = self._lane_seq()
                    self._last_error = "supervisor connection closed; reconnecting"
            sock.close()
            if not self._stop.is_set():
                self._stop.wait(RETRY_SECONDS / 4)

    def _request_lane(self) -> tuple[socket.socket, dict[str, Any]]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        prefer = self._ring.name if self._ring is not None else None
        try:
            path = control.socket_path(self.run_dir, self.instance)
            sock.connect(os.fspath(path))
            # Before a byte is sent: a socket swapped in by another user gets nothing.
            control.check_server(sock, path)
            sock.sendall(
                control.encode(
                    {
                        "op": "lane",
                        "pid": os.getpid(),
                        "prefer": prefer,
                        "payload": self.want_payload,
                        "model": self.model,
                        "version": self.model_version,
                        **self.schema(),
                    }
                )
            )
            reader = control.LineReader()
            while True:
                data = sock.recv(65536)
                if not data:
                    raise control.ControlError("supervisor closed the connection")
                lines = reader.feed(data)
                if lines:
                    reply = control.decode(lines[0])
                    break
        except BaseException:
            sock.close()
            raise
        if not reply.get("ok"):
            sock.close()
            raise control.ControlError(str(reply.get("error", "lane refused")))
        sock.settimeout(None)
        return sock, reply

    def _attach(self, sock: socket.socket, reply: dict[str, Any]) -> None:
        theirs_in = [FieldSpec.from_any(f) for f in reply.get("inputs", [])]
        theirs_out = [FieldSpec.from_any(f) for f in reply.get("outputs", [])]
        with self._lock:
            if not self._schema_known:
                self._set_schema(theirs_in, theirs_out)
            if isinstance(reply.get("model"), str):
                self.model = reply["model"]
                self.model_version = str(reply.get("version") or "")
            elif signature(theirs_in, theirs_out) != signature(self._in.fields, self._out.fields):
                # Neither what was dropped nor what is held can ever go to this agent.
                self._dropped["schema_mismatch"] += self._dropped["detached"] + self._pending_n
                self._dropped["detached"] = 0
                self._pending, self._pending_n = bytearray(), 0
                raise ValueError(
                    "the supervisor's model schema differs from this producer's config "
                    f"(supervisor: {signature(theirs_in, theirs_out)}, "
                    f"producer: {signature(self._in.fields, self._out.fields)})"
                )
            old = self._ring
            if (
                old is not None
                and self._q is not None
                and old.name == reply["lane"]
                and old.epoch == reply.get("epoch", old.epoch)
            ):
                # The new supervisor adopted our lane: carry on, nothing lost.
                self._sock = sock
                self._attaches += 1
                self._last_error = ""
                self._attach_payload(reply)
                self._flush_pending()
                return
            if old is not None and self._q is not None:
                # Our lane was not given back: what we wrote since the
                # supervisor vanished went into a ring nobody reads.
                self._dropped["lane_lost"] += self._lane_seq() - self._orphan_seq
                self._detach_locked("lane not adopted by the new supervisor")
            self._set_width(int(reply.get("width") or self._n_values))
            ring = Ring.attach(str(reply["lane"]), self.dtype)
            self._ring = ring
            w = self._writer = ring.writer()
            self._write = w.put
            self._lane_first = w.seq
            self._half = max(ring.capacity // 2, 1) - 1
            self._q = ring.q
            self._sock = sock
            self._attaches += 1
            self._last_error = ""
            self._attach_payload(reply)
            # Before any new record: the held ones keep their order.
            self._flush_pending()
        log.debug("attached to lane %s", reply["lane"])

    def _attach_payload(self, reply: dict[str, Any]) -> None:
        """Attach the payload ring named in a lane reply (lock held)."""
        name = reply.get("payload")
        if not name:
            return
        if self._payload_ring is not None and self._payload_ring.name == name:
            return
        self._close_payload()
        slot = int(reply.get("payload_slot_bytes") or 1024)
        ring = Ring.attach(str(name), payload_dtype(slot))
        self._payload_ring = ring
        self._payload_writer = ring.writer()
        self._payload_scratch = bytearray(ring.record_dtype.itemsize)
        self._payload_half = max(ring.capacity // 2, 1) - 1

    def _close_payload(self) -> None:
        if self._payload_ring is not None:
            self._payload_overrun_base += self._payload_overrun()
            self._payload_overrun_seen = 0
            self._payload_writer = None
            self._payload_ring.close()
            self._payload_ring = None

    def log_payload(self, record_id: int, kind: int, data: bytes) -> bool:
        """Write JSON bytes that belong to a model record into the payload ring.

        For values that are not declared numeric fields (strings, nested
        objects): the uploader stores them with the record's id. Returns False
        (and counts it) when the payload is too large for a slot or there is no
        payload ring to write to. While detached the payload is held with the
        records (bounded, see ``pending_records``) and True returned. Never blocks.
        """
        with self._lock:
            if self._closed:
                raise ProducerClosedError(CLOSED_MESSAGE)
            if self._q is None and self.want_payload:
                if (
                    len(self._pending_payloads) < self._pending_max
                    and self._pending_payload_bytes + len(data) <= PENDING_PAYLOAD_BYTES
                ):
                    self._pending_payloads.append(
                        (_time_ns(), int(record_id), int(kind), bytes(data))
                    )
                    self._pending_payload_bytes += len(data)
                    return True
                self._dropped["payload_detached"] += 1
                return False
            return self._write_payload(record_id, kind, data)

    def _write_payload(self, record_id: int, kind: int, data: bytes, t_ns: int = 0) -> bool:
        """One payload into the payload ring, or counted (lock held); ``t_ns`` 0: now."""
        w = self._payload_writer
        if w is None or self._q is None:
            self._dropped["payload_detached"] += 1
            return False
        scratch = self._payload_scratch
        head = PAYLOAD_HEAD.size
        if len(data) > len(scratch) - head:
            self._dropped["payload_too_large"] += 1
            return False
        PAYLOAD_HEAD.pack_into(scratch, 0, t_ns or _time_ns(), record_id, kind, len(data))
        scratch[head : head + len(data)] = data
        seq = w.put(scratch)
        if not seq & self._payload_half:
            self._ringer.ring()
        return True

    def _detach_locked(self, reason: str) -> None:
        if self._writer is None:
            return
        if self._ring is not None:
            self._overrun_base += self._overrun()
            self._overrun_seen = 0
        self._written += self._writer.seq - self._lane_first
        self._lane_first = 0
        self._writer = None
        self._write = None
        self._q = None
        self._close_payload()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._last_error = reason
        log.debug("detached: %s", reason)

    # ----------------------------------------------------------------- state
    @property
    def attached(self) -> bool:
        """True while records go to a lane."""
        return self._writer is not None

    def wait_first_attempt(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the first attach attempt succeeded or failed.

        Returns at once when no agent's control socket exists. True if attached.
        """
        if not control.socket_path(self.run_dir, self.instance).exists():
            return self._writer is not None
        self._tried.wait(timeout)
        return self._writer is not None

    def wait_attached(self, timeout: float = 5.0) -> bool:
        """Block until attached (start-up code and tests; never on the inference path).

        Checked under the lock: the attach sets the writer, then writes the held
        records, all while holding it; True means those are in the lane too
        (on a slow board the gap was long enough to see).
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._writer is not None:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _overrun(self) -> int:
        """Uploader losses on the current lane so far (lock held)."""
        if self._ring is not None:
            self._overrun_seen = max(self._overrun_seen, _uploader_lost(self._ring))
        return self._overrun_seen

    def _payload_overrun(self) -> int:
        """Uploader losses on the current payload ring so far (lock held)."""
        if self._payload_ring is not None:
            self._payload_overrun_seen = max(
                self._payload_overrun_seen, _uploader_lost(self._payload_ring)
            )
        return self._payload_overrun_seen

    def stats(self) -> dict[str, Any]:
        """Counters: written, held, dropped and lost by reason, attaches, lane, last error.

        Every record logged is ``written`` (into a lane), ``pending`` (held
        for the next one, as are ``pending_payloads``) or in ``dropped``
        (never reached a lane, by reason).
        ``lost["ring_overrun"]`` (``payload_ring_overrun``) counts *written*
        records overwritten in this producer's lane (payload ring) before the
        uploader read them: logged faster than the agent could take them. It
        is read from the lane header (the uploader's ``lost`` counter and
        cursor), so it shows the moment a record is overwritten unread.
        """
        with self._lock:
            dropped = dict(self._dropped)
            lost = {
                "ring_overrun": self._overrun_base + self._overrun(),
                "payload_ring_overrun": self._payload_overrun_base + self._payload_overrun(),
            }
            return {
                "attached": self._writer is not None,
                "connected": self._sock is not None,
                "lane": self._ring.name if self._ring is not None else None,
                "written": self._written + self._lane_seq() - self._lane_first,
                "pending": self._pending_n,
                "pending_payloads": len(self._pending_payloads),
                "dropped": dropped,
                "dropped_total": sum(dropped.values()),
                "lost": lost,
                "lost_total": sum(lost.values()),
                "attaches": self._attaches,
                "last_error": self._last_error,
            }

    def close(self) -> None:
        """Detach and stop the background thread. Logging afterwards raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            # Held records that never found a lane: counted, not silently gone.
            self._dropped["pending_at_close"] += self._pending_n
            self._dropped["payload_detached"] += len(self._pending_payloads)
            self._pending, self._pending_n, self._pending_payloads = bytearray(), 0, []
            self._detach_locked("closed")
            self._ringer.close()
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        # The child shares the parent's lane mapping but must not write into it
        # (a lane has exactly one producer): it gets a lane of its own, and
        # until then holds its records like any detached producer. Whether its
        # attach thread or its first log() runs first then changes nothing.
        # Every lock and event is new: the parent's threads may have held one
        # at the instant of the fork, and nobody would ever release it here.
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._stop = threading.Event()
        self._tried = threading.Event()
        self._writer = None
        self._write = None
        self._q = None
        self._ring = None
        self._payload_ring = None
        self._payload_writer = None
        if self._sock is not None:
            # Close our copy only (no shutdown): the supervisor must still see
            # the parent's connection, and see it end when the parent ends.
            self._sock.close()
        self._sock = None
        # The parent's counters and held records are the parent's.
        self._pending, self._pending_n = bytearray(), 0
        self._pending_payloads, self._pending_payload_bytes = [], 0
        self._written = self._attaches = self._lane_first = 0
        self._overrun_base = self._payload_overrun_base = 0
        self._overrun_seen = self._payload_overrun_seen = 0
        self._dropped = dict.fromkeys(self._dropped, 0)
        self._ringer = Ringer(self.run_dir, self.instance)
        self._pid = os.getpid()
        if not self._closed:
            self._start_thread()


def _uploader_lost(ring: Ring) -> int:
    """Records of ``ring`` overwritten before the uploader read them (from the header)."""
    try:
        return ring.overrun(_UPLOADER)
    except IndexError:
        return 0


def _asarray(label: str, x: Any) -> npt.NDArray[Any]:
    try:
        return np.asarray(x)
    except ValueError:  # ragged rows: numpy's own message names neither side nor field
        raise ValueError(f"{label}: rows must all have the same length") from None


def _check_2d(label: str, x: npt.NDArray[Any], side: _SideConverter) -> int:
    if x.ndim != 2 or x.shape[1] != side.n:
        raise ValueError(
            f"{label}: expected a 2-D array of shape (n, {side.n}) for fields {side.names}, "
            f"got shape {x.shape}"
        )
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{label}: array dtype must be numeric, got {x.dtype}")
    return int(x.shape[0])


#: Process-global: every live Producer of this process (weakly held, so an
#: unreferenced producer is not kept alive by it), for the fork handler. A forked
#: child inherits the set: ``_after_fork`` runs in the child, right after fork,
#: and turns each inherited producer into a detached one of the child's own
#: (new lock, no lane, no socket, counters and held records cleared, its own
#: attach thread), so a child never writes into its parent's lane.
_PRODUCERS: weakref.WeakSet[Producer] = weakref.WeakSet()
#: Process-global: the fork handler is registered once per process (a child
#: inherits the registration with the rest of the interpreter).
_FORK_HOOKED = False


def _register_fork_handler(p: Producer) -> None:
    global _FORK_HOOKED
    _PRODUCERS.add(p)
    if not _FORK_HOOKED and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork)
        _FORK_HOOKED = True


def _after_fork() -> None:
    for p in list(_PRODUCERS):
        p._after_fork_in_child()


def connect(
    config_path: str | os.PathLike[str] | None = None,
    instance: str | None = None,
    *,
    attach_timeout: float | None = None,
    pending_records: int | None = None,
    model: str | None = None,
    version: str | None = None,
    inputs: Sequence[Any] | None = None,
    outputs: Sequence[Any] | None = None,
) -> Producer:
    """A producer for the supervisor of ``instance`` (from the config, default ``default``).

    When that agent is up, returns attached (it waits for the lane at most
    ``attach_timeout`` seconds, default ``model_logging.attach_timeout_seconds``);
    when no agent is reachable it returns at once, and records logged until
    one comes up are held (``pending_records``, default
    ``model_logging.pending_records``) and written to it: see :class:`Producer`.

    ``model`` / ``version``: which of the config's ``models`` this process logs
    (``None``: the only one) and its version (``None``: the entry's). A model
    the config does not declare raises ``ValueError`` here, unless
    ``model_logging.allow_undeclared_models`` is set and ``inputs``/``outputs``
    give its fields.
    """
    from edge_actors.config import load_config
    from edge_actors.lanemodel import resolve

    cfg = load_config(config_path)
    ml = cfg.model_logging
    found = resolve(cfg, model, version, inputs or (), outputs or ())
    if isinstance(found, str):
        raise ValueError(found)
    return Producer(
        cfg.run_dir,
        instance or cfg.instance,
        found.inputs,
        found.outputs,
        pending_records=ml.pending_records if pending_records is None else pending_records,
        attach_timeout=ml.attach_timeout_seconds if attach_timeout is None else attach_timeout,
        model=found.name,
        version=found.version if version is not None or found.version else None,
    )
