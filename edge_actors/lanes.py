"""The lane registry: each producer's ring and payload ring, from creation to removal.

A lane is made for a producer that asks (:meth:`LaneRegistry.give`) or
adopted from a killed predecessor (:meth:`LaneRegistry.adopt`: ``orphaned``
until its producer asks for it again, retired if it never does). A lane is
retired when its producer goes away (the producer sees the flag and stops
writing; the readers finish it) and removed once every enabled reader has read
all of it (:meth:`LaneRegistry.sweep`). A lane whose header changed under us
is removed at once, unread (:meth:`LaneRegistry.invalidate_scribbled`).

The registry owns the segments and decides; it talks to no process. A call
that changes what the workers must attach or the sampler must watch returns
a :data:`Changed` for the supervisor to act on. Single-threaded, like the
supervisor that holds it.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from edge_actors import shm, topology
from edge_actors.config import Config
from edge_actors.lanemodel import LaneModel, default_model, from_label
from edge_actors.loglimit import LogLimiter
from edge_actors.ring import Ring, RingError
from edge_actors.topology import RingSpec

log = logging.getLogger(__name__)

#: An adopted lane nobody claims within this time is drained and removed.
ORPHAN_CLAIM_SECONDS = 30.0
#: Highest pid Linux can hand out (PID_MAX_LIMIT); a larger value in a header is junk.
PID_MAX = 1 << 22
#: Invalid lanes remembered for ``status``.
INVALID_LANES_KEPT = 16

#: ``active``: its producer holds it; ``orphaned``: adopted, waiting for its
#: producer to ask again; ``retired``: read to the end, then removed.
LaneState = Literal["active", "orphaned", "retired"]
#: What a registry call changed: ``rings`` (the workers must attach or let go
#: of a ring; the producers changed too), ``producers`` (only the pids the
#: sampler watches), or ``nothing``.
Changed = Literal["nothing", "producers", "rings"]
LaneKind = Literal["lane", "payload"]


class Owner(Protocol):
    """A control connection that can hold a lane (the supervisor's client)."""

    lane: str | None


OwnerT = TypeVar("OwnerT", bound=Owner)


@dataclass
class Lane(Generic[OwnerT]):
    """A producer's ring."""

    ring: Ring
    index: int
    state: LaneState
    client: OwnerT | None = None
    pid: int = 0
    since: float = 0.0
    #: Its payload ring (non-numeric values as JSON), created on request.
    payload: Ring | None = None
    #: The model (and version) its producer logs; ``None`` until known.
    model: LaneModel | None = None

    def rings(self) -> list[Ring]:
        """The lane and its payload ring, if any."""
        return [self.ring] if self.payload is None else [self.ring, self.payload]


class LaneRegistry(Generic[OwnerT]):
    """Every lane of one instance, and the shared-memory budget they draw from.

    ``fixed`` is the supervisor's own rings (counted against the budget, never
    touched here); ``readers`` the consumer lines of the enabled lane readers,
    whose progress decides when a retired lane is drained.
    """

    def __init__(self, cfg: Config, fixed: Mapping[str, Ring], readers: Sequence[int]) -> None:
        self.cfg = cfg
        self.instance = cfg.instance
        self.lanes: dict[str, Lane[OwnerT]] = {}
        self.invalid: deque[dict[str, Any]] = deque(maxlen=INVALID_LANES_KEPT)
        self._fixed = fixed
        self._readers = tuple(readers)
        self._limited = LogLimiter(log)

    def __len__(self) -> int:
        """How many lanes exist (retired ones included until removed)."""
        return len(self.lanes)

    # ---------------------------------------------------- shared-memory budget
    def segment_size(self, kind: str) -> int:
        """Bytes of one segment of a ring kind under this config."""
        dtype, cap = topology.dtype_for(kind, self.cfg), topology.capacity_for(kind, self.cfg)
        return Ring.layout_size(dtype, cap)[1]

    def shm_budget(self) -> int:
        """``supervisor.shm_budget_mb`` in bytes."""
        return int(self.cfg.supervisor.shm_budget_mb * 2**20)

    def shm_in_use(self) -> int:
        """Bytes of every segment the supervisor holds (retired lanes until removed)."""
        rings = [*self._fixed.values(), *(r for ln in self.lanes.values() for r in ln.rings())]
        return sum(r.segment.size for r in rings)

    def _over_budget(self, need: int) -> str:
        """The refusal for ``need`` more bytes of shared memory past the budget, or ''."""
        used, budget = self.shm_in_use(), self.shm_budget()
        if used + need <= budget:
            return ""
        error = (
            f"shared-memory budget exhausted: a new lane needs {need / 2**20:.1f} MB, "
            f"{used / 2**20:.1f} MB of supervisor.shm_budget_mb = "
            f"{self.cfg.supervisor.shm_budget_mb:g} MB in use"
        )
        self._limited.log("shm_budget", logging.WARNING, "%s", error)
        return error

    # ------------------------------------------------------------- lifecycle
    def adopt(self) -> None:
        """Adopt the lanes (and their payload rings) a killed predecessor left.

        A lane that cannot be attached, or has the wrong number of consumers,
        and a payload ring without its lane, are removed.
        """
        for name in shm.list_names(topology.prefix(self.instance)):
            parsed = topology.parse_name(self.instance, name)
            if parsed is None or parsed[0] != "lane":
                continue
            try:
                ring = Ring.attach(name, topology.dtype_for("lane", self.cfg))
            except RingError as exc:
                log.warning("removing stale lane %s: %s", name, exc)
                shm.unlink(name)
                continue
            if ring.n_consumers != topology.consumers_for("lane"):
                ring.close()
                shm.unlink(name)
                continue
            ring.adopted = True
            pid = ring.producer_pid if 0 < ring.producer_pid <= PID_MAX else 0
            model = from_label(self.cfg, ring.label()) or default_model(self.cfg)
            self.lanes[name] = Lane(ring, parsed[1], "orphaned", pid=pid, model=model)
            self.lanes[name].since = time.monotonic()
            log.info(
                "adopted lane %s (producer pid %d, %d records written)",
                name,
                pid,
                ring.write_seq,
            )
        for name in shm.list_names(topology.prefix(self.instance)):
            parsed = topology.parse_name(self.instance, name)
            if parsed is None or parsed[0] != "payload":
                continue
            lane_name = topology.ring_name(self.instance, "lane", parsed[1])
            lane = self.lanes.get(lane_name)
            try:
                if lane is None:
                    raise RingError("its lane is gone")
                lane.payload = Ring.attach(name, topology.dtype_for("payload", self.cfg))
            except RingError as exc:
                log.warning("removing stale payload ring %s: %s", name, exc)
                shm.unlink(name)

    def give(
        self,
        owner: OwnerT,
        pid: int,
        prefer: str | None,
        payload: bool,
        model: LaneModel | None = None,
    ) -> tuple[Lane[OwnerT] | None, str, Changed]:
        """A lane for ``owner``: its orphaned ``prefer`` if there is one, else a new one.

        Returns the lane, an error ('' if none) and what changed. On a
        re-attach whose payload ring cannot be made, the lane is ``owner``'s
        and the error is returned too. A new lane is labelled with ``model``
        (default: the config's first) before anyone else sees it; an orphan is
        given back only to a producer of the same model and version.
        """
        if owner.lane is not None:
            return None, "this connection already has a lane", "nothing"
        model = model or default_model(self.cfg)
        lane = self.lanes.get(prefer) if prefer else None
        if lane is not None and lane.model is not None and lane.model.key != model.key:
            lane = None  # its records are another model's: a new lane
        if lane is not None and lane.state == "orphaned":
            lane.state, lane.client, lane.pid = "active", owner, pid
            owner.lane = lane.ring.name
            log.info("producer pid %d re-attached to lane %s", pid, lane.ring.name)
            if payload and lane.payload is None:
                err = self._add_payload(lane)
                if err:
                    return lane, err, "nothing"
                return lane, "", "rings"
            return lane, "", "producers"
        used = {ln.index for ln in self.lanes.values()}
        index = next(i for i in range(topology.MAX_LANES + 1) if i not in used)
        if index >= topology.MAX_LANES:
            return None, f"too many producers (max {topology.MAX_LANES})", "nothing"
        need = self.segment_size("lane") + (self.segment_size("payload") if payload else 0)
        error = self._over_budget(need)
        if error:
            return None, error, "nothing"
        ring = self._create("lane", index)
        if isinstance(ring, str):
            return None, ring, "nothing"
        ring.set_label(model.label())
        lane = Lane(ring, index, "active", owner, pid, time.monotonic(), model=model)
        if payload:
            err = self._add_payload(lane)
            if err:
                ring.unlink()
                ring.close()
                return None, err, "nothing"
        name = ring.name
        self.lanes[name] = lane
        owner.lane = name
        log.info("lane %s for producer pid %d", name, pid)
        return lane, "", "rings"

    def _add_payload(self, lane: Lane[OwnerT]) -> str:
        """Create the lane's payload ring; returns an error message or ''."""
        if lane.ring.name in self.lanes:  # a new lane's size was checked with its payload ring
            error = self._over_budget(self.segment_size("payload"))
            if error:
                return error
        ring = self._create("payload", lane.index)
        if isinstance(ring, str):
            return ring
        if lane.model is not None:
            ring.set_label(lane.model.label())
        lane.payload = ring
        return ""

    def _create(self, kind: LaneKind, index: int) -> Ring | str:
        """Create lane ``index``'s ring of ``kind``; an error message if it cannot be made."""
        name = topology.ring_name(self.instance, kind, index)
        try:
            return Ring.create(
                name,
                topology.dtype_for(kind, self.cfg),
                topology.capacity_for(kind, self.cfg),
                topology.consumers_for(kind),
            )
        except OSError as exc:
            # The producer asks again every 0.2 s: say it once a minute, not each time.
            what = "lane" if kind == "lane" else "payload ring"
            self._limited.log(
                f"{kind}_create", logging.ERROR, f"cannot create {what} %s: %s", name, exc
            )
            return str(exc)

    def release(self, owner: OwnerT) -> None:
        """``owner`` disconnected: retire the lane it held."""
        lane = self.lanes.get(owner.lane) if owner.lane is not None else None
        if lane is not None and lane.client is owner:
            self.retire(lane, "producer disconnected")

    def retire(self, lane: Lane[OwnerT], why: str) -> None:
        """Tell the lane's producer to stop writing; the lane goes once drained."""
        if lane.state == "retired":
            return
        for ring in lane.rings():
            ring.retire()
        lane.state, lane.client, lane.since = "retired", None, time.monotonic()
        log.info("lane %s retired (%s); removed once drained", lane.ring.name, why)

    def retire_all(self, why: str) -> None:
        """Retire every lane (shutdown)."""
        for lane in self.lanes.values():
            self.retire(lane, why)

    def drained(self, lane: Lane[OwnerT]) -> bool:
        """Whether every enabled reader has read all of the lane's rings."""
        for ring in lane.rings():
            written = ring.write_seq
            for k in self._readers:
                if k >= ring.n_consumers:
                    continue
                if ring.consumer_line(k)["read_seq"] < written:
                    return False
        return True

    def invalidate_scribbled(self) -> list[Lane[OwnerT]]:
        """Remove, unread, every lane whose header changed since it was attached; return them.

        Its records cannot be trusted either, so it is not drained: the
        segment is removed, and the caller tells the workers to let go of it
        and disconnects its client (so that the producer asks for a fresh lane).
        """
        bad = []
        for lane in self.lanes.values():
            problem = next((p for r in lane.rings() if (p := r.header_problem())), "")
            if problem:
                bad.append((lane, problem))
        for lane, problem in bad:
            name = lane.ring.name
            log.error(
                "lane %s has an invalid header (%s): removed without reading it", name, problem
            )
            self.invalid.append({"lane": name, "pid": lane.pid, "problem": problem})
            del self.lanes[name]
            for ring in lane.rings():
                ring.retire()  # tells a producer that still writes to stop
                try:
                    ring.unlink()
                except OSError as exc:
                    log.warning("cannot unlink %s: %s", ring.name, exc)
                ring.close()
        return [lane for lane, _ in bad]

    def sweep(self, now: float) -> Changed:
        """Retire orphans whose producer is gone or late; remove drained retired lanes."""
        removed = []
        for name, lane in self.lanes.items():
            if lane.state == "orphaned":
                alive = pid_alive(lane.pid)
                if not alive or now - lane.since > ORPHAN_CLAIM_SECONDS:
                    self.retire(lane, "producer gone" if not alive else "not reclaimed")
            if lane.state == "retired" and self.drained(lane):
                removed.append(name)
        for name in removed:
            lane = self.lanes.pop(name)
            for ring in lane.rings():
                ring.unlink()
                ring.close()
            log.info("lane %s drained and removed", name)
        return "rings" if removed else "nothing"

    def close(self, *, unlink: bool) -> None:
        """Close every lane's rings; unlink them too after an ordered shutdown.

        Otherwise they stay for the next start to adopt, records included.
        """
        for ring in [r for ln in self.lanes.values() for r in ln.rings()]:
            discard(ring, unlink)
        self.lanes.clear()

    # ------------------------------------------------------------------ views
    def specs(self) -> list[RingSpec]:
        """The lane and payload rings the workers should have attached."""
        specs = []
        for name, lane in self.lanes.items():
            specs.append(RingSpec(name, "lane", lane.index))
            if lane.payload is not None:
                specs.append(RingSpec(lane.payload.name, "payload", lane.index))
        return specs

    def streams(self) -> list[tuple[Ring, str]]:
        """Every lane ring with the stream its records go to."""
        rings: list[tuple[Ring, str]] = []
        for lane in self.lanes.values():
            rings.append((lane.ring, "model"))
            if lane.payload is not None:
                rings.append((lane.payload, "payload"))
        return rings

    def producer_pids(self) -> dict[str, int]:
        """The live producers' pids by ``producer:<lane number>``, for the sampler."""
        procs = {}
        for name, lane in self.lanes.items():
            if lane.pid and lane.state != "retired":
                procs[f"producer:{name.rsplit('_', 1)[-1]}"] = lane.pid
        return procs

    def status_rings(self) -> list[dict[str, Any]]:
        """The ``rings`` entries of ``status`` for the lanes."""
        rings: list[dict[str, Any]] = []
        for lane in self.lanes.values():
            rings.append({"kind": "lane", "state": lane.state, **lane.ring.stats()})
            if lane.payload is not None:
                rings.append({"kind": "payload", "state": lane.state, **lane.payload.stats()})
        return rings

    def producers(self) -> list[dict[str, Any]]:
        """The ``producers`` entries of ``status``: every lane not retired."""
        return [
            {
                "lane": name,
                "pid": lane.pid,
                "state": lane.state,
                "model": lane.model.name if lane.model else None,
                "model_version": lane.model.version if lane.model else None,
            }
            for name, lane in self.lanes.items()
            if lane.state != "retired"
        ]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (possibly another user's)."""
    if not 0 < pid <= PID_MAX:  # os.kill(-1, 0) asks about every process; 2**40 overflows
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discard(ring: Ring, unlink: bool) -> None:
    """Close ``ring``, and remove its segment first if ``unlink`` (already gone is fine)."""
    if unlink:
        try:
            ring.unlink()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot unlink %s: %s", ring.name, exc)
    ring.close()
