"""The drift worker: model lanes → streaming drift detector → events ring.

It monitors every declared model field that has reference data. Input
fields are fed from records that carry inputs (``log`` and ``log_input``),
output fields from records that carry outputs (``log`` and ``log_output``),
so a half record never looks like missing data. Lanes are merged into one
stream per group; an event's ``seq_first``/``seq_last`` count records of that
merged stream.

Exactly-once events across a kill: the detector state, the lane cursors and
the events not yet written are checkpointed together *before* the events go
to the events ring, with the events ring's write position; a restarted
worker resumes from the checkpoint, writes the pending events only if the
ring does not have them yet, and re-reads the lanes from the checkpointed
cursors. The checkpoint lives in ``data_dir`` next to the outbox it belongs
to (mode 0600), bound to the reference's content hash, the model schema and
the detector settings: any difference starts fresh and says why in the log.

Several models and versions: each lane is labelled with the model and
version its producer logs (:mod:`edge_actors.lanemodel`); each (model,
version) gets its own :class:`_Monitor` (detectors over its reference, its
merged record stream, its part of the checkpoint), built when its first lane
appears. A version this agent never saw before starts fresh and says so with
a ``version_seen`` event. The config's first model is built at start, so a
bad reference shows in ``status`` before any producer connects.
It is written every ``checkpoint_interval_seconds`` while records flow (a few
MB each time must not wear an SD card), before events and at a clean stop.

Bounded steps: a step feeds slices sized from the measured cost of a check
(a quarter of the step budget, one check at least) and stops at a time
budget (a quarter of the heartbeat interval, at most 0.5 s), heartbeating
between slices and between the features of a check; event p-values cost
microseconds (:func:`~edge_actors.drift.ks.ks_pvalue_bounded`). On a slow
box the worker falls behind (and its cadence stretches) rather than missing
heartbeats.

A bad reference does not crash the worker (a crash loop would take the whole
agent down): whatever the exception, it stays up, idle, with the reason in
``status``, and still drains the lanes so that retired lanes are removed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_actors.lanemodel import LaneModel, default_model, from_label
from edge_actors.records import EVENT_DTYPE, KIND_INPUT, KIND_OUTPUT, KIND_PAIR
from edge_actors.ring import Ring, RingConsumer, RingError, RingWriter
from edge_actors.topology import DRIFT, RingSpec, dtype_for
from edge_actors.workers.base import Worker

if TYPE_CHECKING:
    from edge_actors.config import Config
    from edge_actors.drift.reference import Reference

log = logging.getLogger(__name__)

#: Most records read from one lane in one slice.
READ_BATCH = 20_000
#: A step stops after this share of the heartbeat interval ...
STEP_SHARE_OF_HEARTBEAT = 0.25
#: ... and after this many seconds at most.
MAX_STEP_SECONDS = 0.5
#: A slice aims at this share of the step budget (from the measured cost per check).
SLICE_SHARE_OF_STEP = 0.25
#: The measured cost per check decays this fast towards cheaper checks: long-window
#: checks cost ~10x a short one, and slices must be sized for them.
CHECK_COST_DECAY = 0.9
#: Recompute the status summary (it computes KS p-values) this often.
SUMMARY_SECONDS = 5.0
# 3: one part per (model, version) under "monitors".
CHECKPOINT_VERSION = 3


@dataclass
class _Group:
    """One detector over the fields of one side (inputs or outputs)."""

    label: str
    det: Any  # DriftDetector, imported lazily
    cols: list[int]
    kinds: tuple[int, ...]
    fresh: Callable[[], Any]
    seq: int = 0


@dataclass
class _Monitor:
    """Drift detection of one model version: its detectors over its reference."""

    model: LaneModel
    groups: list[_Group] = field(default_factory=list)
    ref_hash: str = ""
    #: Why there are no detectors ('' when there are).
    error: str = ""
    records: int = 0
    #: The drift settings it runs with (the section with the model's overrides).
    settings: Any = None
    summary: dict[str, Any] = field(default_factory=dict)


def build_groups(cfg: Config, ref: Reference, cache_dir: str | None) -> list[_Group]:
    """The detectors the worker runs for ``cfg`` and a loaded reference (one per side).

    The benchmarks build theirs here too, so they measure the shipped configuration.
    """
    from edge_actors.drift.detector import DriftDetector, DriftSettings

    dc = cfg.drift_detection
    shipped = DriftSettings.from_config(dc)
    model = cfg.model
    n_in = len(model.inputs)
    sides = [
        ("inputs", list(enumerate(model.inputs)), (KIND_PAIR, KIND_INPUT)),
        ("outputs", [(n_in + j, f) for j, f in enumerate(model.outputs)], (KIND_PAIR, KIND_OUTPUT)),
    ]
    monitored = [[(i, f) for i, f in fields if f.name in ref.features] for _, fields, _ in sides]
    total = sum(len(m) for m in monitored)
    if total == 0:
        raise ValueError(
            f"reference {dc.reference_data_path} has none of the model's fields "
            f"({', '.join(f.name for f in model.fields)})"
        )
    groups = []
    for (label, _fields, kinds), mon in zip(sides, monitored, strict=True):
        if not mon:
            continue
        feats: list[tuple[str, Any, Any]] = []
        nan_rates: dict[str, float] = {}
        for _i, f in mon:
            fr = ref.features[f.name]
            # The reference sample has its NaNs removed: pass their rate along.
            nan_rates[f.name] = float(fr.nan_rate)
            if f.kind == "categorical":
                index = {c: k for k, c in enumerate(f.categories)}
                counts: dict[int, float] = {}
                for name, cnt in fr.category_counts.items():
                    code = index.get(name, -1)
                    counts[code] = counts.get(code, 0.0) + cnt
                feats.append((f.name, "categorical", counts))
            else:
                feats.append((f.name, "numeric", fr.sorted_values))

        def make(
            feats: list[tuple[str, Any, Any]] = feats,
            nan_rates: dict[str, float] = nan_rates,
            n_side: int = len(mon),
        ) -> Any:
            # The false-alarm budget is per model: split it over both sides.
            settings = shipped.replace(erfa=shipped.erfa * total / n_side)
            return DriftDetector(
                feats,
                settings,
                reference_hash=ref.content_hash,
                cache_dir=cache_dir,
                nan_rates=nan_rates,
            )

        groups.append(_Group(label, make(), [i for i, _ in mon], kinds, make))
    return groups


def _describe(exc: BaseException, path: object) -> str:
    """A one-line reason for ``status``: the file, the exception type, its message (shortened)."""
    msg = str(exc)
    if len(msg) > 300:
        msg = msg[:300] + "..."
    if isinstance(exc, (OSError, ValueError)) and msg:
        text = msg  # the reference loader's own messages name the file and the feature
    else:
        text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    if path is not None and str(path) not in text:
        text = f"reference {path}: {text}"
    return text


def _write_private(path: Path, arrays: dict[str, Any]) -> None:
    """``np.savez`` to ``path`` atomically, mode 0600 (directory 0700 if created)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class DriftWorker(Worker):
    """Runs the drift detectors over every lane."""

    name = "drift"
    bell_consumer = DRIFT  # a filling lane wakes the drift worker at once (doorbell.py)

    def setup(self) -> None:
        """Load the reference, build detectors, restore the checkpoint."""
        self.monitors: dict[str, _Monitor] = {}
        #: Each attached lane's model monitor.
        self.lane_monitor: dict[str, _Monitor] = {}
        #: Each attached lane's model, from its label.
        self.lane_models: dict[str, LaneModel] = {}
        #: Events made outside a step (version_seen), written by the next one.
        self._new_events: list[tuple[LaneModel, Any]] = []
        self.consumers: dict[str, RingConsumer] = {}
        self.lane_rings: dict[str, Ring] = {}
        self.events_ring: Ring | None = None
        self.ev_writer: RingWriter | None = None
        self.events_written = 0
        self.records = 0
        self.drained = 0
        self._pending: list[tuple[LaneModel, Any]] = []
        self._dirty = False
        self._ckpt_every = self.cfg.drift_detection.checkpoint_interval_seconds
        self._next_ckpt = time.monotonic() + self._ckpt_every
        self._next_summary_event = (
            time.monotonic() + self.cfg.drift_detection.summary_interval_seconds
        )
        self._next_summary = 0.0
        self._restored: dict[str, Any] | None = None
        self._saved_arrays: dict[str, Any] = {}
        #: Measured seconds per check (a decaying maximum), to size slices.
        self._sec_per_check: float | None = None
        self._rr = 0
        self.step_budget = min(self._hb_every * STEP_SHARE_OF_HEARTBEAT, MAX_STEP_SECONDS)
        self.max_step_seconds = 0.0
        self.ckpt_path = Path(self.cfg.data_dir) / f"{self.cfg.instance}.drift-checkpoint.npz"
        self._remove_legacy_checkpoint()
        self._build_performance()
        self._restored = self._read_checkpoint()
        self._seen: set[str] = set((self._restored or {}).get("versions_seen") or [])
        self._refs: dict[str, Any] = {}
        self.default = default_model(self.cfg)
        # Every declared entry now (a bad reference shows in status at once, and the
        # slow part, loading and calibrating, happens before the worker says ready);
        # a version the config does not list is built when its first lane appears.
        for m in self.cfg.models:
            self._monitor(LaneModel(m.name, m.version or "", m.inputs, m.outputs))
        self._monitor(self.default)

    def _map_lanes(self) -> None:
        """Give each new lane its model's monitor; a version never seen says so once."""
        for name, lm in self.lane_models.items():
            if name in self.lane_monitor or name not in self.consumers:
                continue
            built = lm.key not in self.monitors
            self.lane_monitor[name] = self._monitor(lm)
            if built:
                self.heartbeat()  # a build loads a reference: keep the supervisor informed
            if lm.version and lm.key not in self._seen:
                self._seen.add(lm.key)
                self._dirty = True
                log.info("drift: new version %s of model %s", lm.version, lm.name)
                self._new_events.append((lm, _version_seen(self.monitors[lm.key])))

    @property
    def groups(self) -> list[_Group]:
        """The detectors of the config's first model (what a one-model agent runs)."""
        mon = self.monitors.get(self.default.key)
        return mon.groups if mon is not None else []

    @property
    def error(self) -> str:
        """Why the config's first model has no detectors ('' when it has)."""
        mon = self.monitors.get(self.default.key)
        return mon.error if mon is not None else ""

    @property
    def ref_hash(self) -> str:
        """The content hash of the config's first model's reference."""
        mon = self.monitors.get(self.default.key)
        return mon.ref_hash if mon is not None else ""

    def _monitor(self, lm: LaneModel) -> _Monitor:
        """The monitor of ``lm``'s (model, version): built (and restored) on first use."""
        mon = self.monitors.get(lm.key)
        if mon is not None:
            return mon
        mon = self.monitors[lm.key] = _Monitor(lm)
        entry = self.cfg.find_model(lm.name, lm.version or None) if lm.declared else None
        dc = entry.drift(self.cfg.drift_detection) if entry else self.cfg.drift_detection
        mon.settings = dc
        try:
            self._build(mon, entry, dc)
        except Exception as exc:  # any bad reference leaves this model unmonitored
            mon.error = _describe(exc, dc.reference_data_path)
            if len(self.cfg.models) == 1 and lm.key == self.default.key:
                log.error("drift detection is off: %s", mon.error)  # one model: as always
            else:
                log.error("drift detection of %s is off: %s", lm.key, mon.error)
            mon.groups = []
        if mon.groups:
            self._restore(mon)
        return mon

    def _remove_legacy_checkpoint(self) -> None:
        """Earlier versions kept the checkpoint in run_dir, shared by unrelated runs."""
        old = Path(self.cfg.run_dir) / f"{self.cfg.instance}.drift-checkpoint.npz"
        try:
            if old.stat().st_uid == os.getuid():
                old.unlink()
                log.info("removed the drift checkpoint of an earlier version: %s", old)
        except OSError:
            pass

    def _build(self, mon: _Monitor, entry: Any, dc: Any) -> None:
        if not dc.enabled:
            mon.error = "drift_detection.enabled is false"
            return
        if entry is None:
            mon.error = f"model {mon.model.name!r} is not declared in the config: no reference"
            return
        if dc.reference_data_path is None:
            mon.error = "no drift_detection.reference_data_path configured"
            return
        from edge_actors.drift.reference import load_reference, validate_against_model

        # Versions of a model share its reference: loaded once.
        path = str(dc.reference_data_path)
        ref = self._refs.get(path)
        if ref is None:
            ref = load_reference(path, max_bytes=int(dc.max_reference_mb * 2**20))
            self._refs[path] = ref
        # The entry's fields, or those the seed rule derived (the supervisor's config).
        model = dataclasses.replace(entry, inputs=mon.model.inputs, outputs=mon.model.outputs)
        if not (model.inputs or model.outputs):
            raise ValueError(
                "the config's model section declares no inputs or outputs to monitor "
                "(model.inputs / model.outputs)"
            )
        validate_against_model(ref, model)
        mon.ref_hash = ref.content_hash
        cfg = dataclasses.replace(self.cfg, model=model, drift_detection=dc)
        mon.groups = build_groups(cfg, ref, str(Path(self.cfg.data_dir) / "cache"))
        log.info(
            "drift: %s: %d features monitored against %s (hash %s)",
            mon.model.key,
            sum(len(g.cols) for g in mon.groups),
            dc.reference_data_path,
            ref.content_hash,
        )

    # ------------------------------------------------------------ checkpoint
    def _signature(self, mon: _Monitor) -> dict[str, str]:
        """What a monitor's checkpoint is bound to: any difference means a fresh start."""
        dc = dataclasses.asdict(mon.settings)
        for k in ("reference_data_path", "summary_interval_seconds", "checkpoint_interval_seconds"):
            dc.pop(k, None)
        lm = mon.model
        schema = {
            "name": lm.name,
            "version": lm.version,
            "inputs": [f.to_dict() for f in lm.inputs],
            "outputs": [f.to_dict() for f in lm.outputs],
        }
        return {
            "reference_hash": mon.ref_hash,
            "model_schema": json.dumps(schema, sort_keys=True),
            "settings": json.dumps(dc, sort_keys=True, default=str),
        }

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint's metadata (its arrays kept for the monitors), or ``None``."""
        try:
            with np.load(self.ckpt_path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("version") != CHECKPOINT_VERSION:
                    log.info(
                        "drift checkpoint %s has format %s (now %s): starting fresh",
                        self.ckpt_path,
                        meta.get("version"),
                        CHECKPOINT_VERSION,
                    )
                    return None
                self._saved_arrays = {k: z[k] for k in z.files if k != "meta"}
        except FileNotFoundError:
            return None
        except Exception as exc:  # a bad checkpoint only costs a fresh start
            log.warning("drift checkpoint %s unreadable (%s): starting fresh", self.ckpt_path, exc)
            return None
        self.records = int(meta.get("records", 0))
        return meta  # type: ignore[no-any-return]

    def _restore(self, mon: _Monitor) -> bool:
        """Resume ``mon``'s detectors from the checkpoint; whether it did."""
        monitors = (self._restored or {}).get("monitors") or {}
        saved = monitors.get(mon.model.key)
        if saved is None:
            if monitors:
                log.warning(
                    "drift checkpoint %s has no state for %s (it has %s: another model "
                    "schema): starting fresh",
                    self.ckpt_path,
                    mon.model.key,
                    ", ".join(monitors),
                )
            return False
        now = self._signature(mon)
        differs = [k for k in now if saved["signature"].get(k) != now[k]]
        if differs:
            what = {
                "reference_hash": (
                    f"reference {saved['signature'].get('reference_hash')} (now {mon.ref_hash})"
                ),
                "model_schema": "another model schema",
                "settings": "other drift_detection settings",
            }
            log.warning(
                "drift checkpoint %s was made for %s: %s starting fresh",
                self.ckpt_path,
                ", ".join(what[k] for k in differs),
                mon.model.key,
            )
            return False
        try:
            for k, g in enumerate(mon.groups):
                state = dict(saved["groups"][k])
                state["ring"] = self._saved_arrays[f"{saved['slot']}_ring{k}"]
                g.det.load_state_dict(state)
                g.seq = int(saved["seqs"][k])
        except Exception as exc:  # a bad checkpoint only costs a fresh start
            log.warning("drift checkpoint %s unreadable (%s): starting fresh", self.ckpt_path, exc)
            for g in mon.groups:  # a half-restored detector must not run on
                g.det, g.seq = g.fresh(), 0
            return False
        mon.records = int(saved.get("records", 0))
        log.info("drift: %s resumed from checkpoint (%d records seen)", mon.model.key, mon.records)
        return True

    def _save_checkpoint(self) -> None:
        arrays: dict[str, Any] = {}
        parts: dict[str, Any] = {}
        old = (self._restored or {}).get("monitors") or {}
        slot = 0
        for key, mon in self.monitors.items():
            if not mon.groups:
                continue
            states = []
            for k, g in enumerate(mon.groups):
                st = g.det.state_dict()
                arrays[f"{slot}_ring{k}"] = st.pop("ring")
                states.append(st)
            parts[key] = {
                "slot": slot,
                "signature": self._signature(mon),
                "groups": states,
                "seqs": [g.seq for g in mon.groups],
                "records": mon.records,
            }
            slot += 1
        for key, saved in old.items():
            # A model whose producer has not come back since the restart keeps its state.
            if key in parts or key in self.monitors:
                continue
            n = len(saved.get("groups") or [])
            for k in range(n):
                arrays[f"{slot}_ring{k}"] = self._saved_arrays[f"{saved['slot']}_ring{k}"]
            parts[key] = {**saved, "slot": slot}
            slot += 1
        meta = {
            "version": CHECKPOINT_VERSION,
            "monitors": parts,
            "versions_seen": sorted(self._seen),
            "records": self.records,
            "lanes": {
                name: {"epoch": c.epoch, "pos": c.pos, "lost": c.lost}
                for name, c in self.consumers.items()
            },
            "events_ring": (
                {"epoch": self.events_ring.epoch, "seq": self.ev_writer.seq}
                if self.events_ring is not None and self.ev_writer is not None
                else None
            ),
            "pending": [
                {**e.to_dict(), "model": lm.name, "model_version": lm.version}
                for lm, e in self._pending
            ],
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        self._next_ckpt = time.monotonic() + self._ckpt_every
        try:
            _write_private(self.ckpt_path, arrays)
        except OSError as exc:
            # A full disk must not stop detection: events still go out (at
            # least once rather than exactly once across a kill).
            log.warning("cannot write drift checkpoint %s: %s", self.ckpt_path, exc)
            return
        self._dirty = False

    # ----------------------------------------------------------------- rings
    def set_rings(self, specs: list[RingSpec]) -> None:
        """Attach new lanes (resuming checkpointed cursors) and the events ring; drop gone lanes."""
        super().set_rings(specs)
        wanted = {s.name for s in specs if s.kind == "lane"}
        for name in list(self.consumers):
            if name not in wanted:
                del self.consumers[name]
                self.lane_monitor.pop(name, None)
                self.lane_models.pop(name, None)
                self.lane_rings.pop(name).close()
        lanes = (self._restored or {}).get("lanes", {})
        for spec in specs:
            try:
                if spec.kind == "events" and self.events_ring is None:
                    self.events_ring = Ring.attach(spec.name, EVENT_DTYPE)
                    self.ev_writer = self.events_ring.writer()
                    self._replay_pending()
                elif spec.kind == "lane" and spec.name not in self.consumers:
                    # Attached even when idle: the lanes must be drained for a
                    # retired lane to be removed.
                    ring = Ring.attach(spec.name, dtype_for("lane", self.cfg))
                    cons = ring.consumer(DRIFT)
                    saved = lanes.get(spec.name)
                    if saved and saved["epoch"] == ring.epoch and saved["pos"] <= ring.write_seq:
                        cons.seek(int(saved["pos"]), int(saved["lost"]))
                    self.lane_rings[spec.name] = ring
                    self.consumers[spec.name] = cons
                    # Its monitor is built by the next step (heartbeats between builds).
                    self.lane_models[spec.name] = from_label(self.cfg, ring.label()) or self.default
            except RingError as exc:
                log.error("drift cannot attach %s: %s", spec.name, exc)

    def _replay_pending(self) -> None:
        """Write checkpointed events the events ring does not have yet."""
        meta = self._restored or {}
        pending = meta.get("pending") or []
        ev = meta.get("events_ring")
        if not pending or self.events_ring is None or self.ev_writer is None:
            return
        if ev and ev["epoch"] == self.events_ring.epoch and self.ev_writer.seq > ev["seq"]:
            return  # written before the kill
        from edge_actors.drift.detector import DriftEvent
        from edge_actors.drift.performance import PerfEvent

        events = []
        for e in pending:
            e = dict(e)
            name, version = str(e.pop("model", "")), str(e.pop("model_version", ""))
            lm = LaneModel(name, version, (), ()) if name else self.default
            events.append((lm, PerfEvent(**e) if "coverage" in e else DriftEvent(**e)))
        self._write_events(events)

    def _write_events(self, events: list[Any]) -> None:
        """Write events (``(model, event)`` pairs; a bare event is the first model's)."""
        if not events or self.ev_writer is None:
            return
        pairs = [e if isinstance(e, tuple) else (self.default, e) for e in events]
        events = [e for _, e in pairs]
        recs = np.zeros(len(events), EVENT_DTYPE)
        for r, (lm, e) in zip(recs, pairs, strict=True):
            r["model"] = lm.name.encode()[:64]
            r["model_version"] = lm.version.encode()[:64]
            r["t_ns"] = int(e.t * 1e9)
            r["feature"] = e.feature.encode()[:64]
            r["test"] = e.test.encode()[:16]
            r["state"] = e.state.encode()[:24]
            r["correction"] = e.correction.encode()[:16]
            r["ref_hash"] = e.reference_hash.encode()[:16]
            r["statistic"], r["p_value"], r["threshold"] = e.statistic, e.p_value, e.threshold
            r["window_size"], r["n_ref"] = e.window_size, e.n_ref
            r["seq_first"], r["seq_last"] = e.seq_first, e.seq_last
            r["n_eff"] = e.n_eff
            r["coverage"] = getattr(e, "coverage", math.nan)
            r["label_delay_s"] = getattr(e, "label_delay_s", math.nan)
        self.ev_writer.write_batch(recs)
        self.events_written += len(events)
        for lm, e in pairs:
            if e.state not in ("check", "version_seen"):
                log.warning(
                    "%s: %s: %s on %s (%s statistic %.4g, threshold %.4g, n_eff %.0f)",
                    lm.key,
                    e.state,
                    e.feature,
                    e.test,
                    e.test,
                    e.statistic,
                    e.threshold,
                    e.n_eff,
                )

    # ------------------------------------------------------------------ work
    def _drain(self, lanes: list[RingConsumer] | None = None) -> int:
        """Unmonitored lanes: move the cursors to the end so retired lanes count as drained."""
        done = 0
        for cons in self.consumers.values() if lanes is None else lanes:
            end = cons.ring.write_seq
            if end > cons.pos:
                done += end - cons.pos
                cons.seek(end)
                cons.commit()
        self.drained += done
        return done

    def _cadence(self, groups: list[_Group]) -> int:
        return int(min(g.det.effective_check_frequency for g in groups))

    def _slice_size(self, groups: list[_Group]) -> int:
        """Records per slice: checks worth a quarter of the step budget, one at least."""
        cadence = self._cadence(groups)
        if self._sec_per_check is None:
            return cadence
        # Checks of all groups run on the same records: size for their sum.
        checks = int(self.step_budget * SLICE_SHARE_OF_STEP / max(self._sec_per_check, 1e-9))
        checks //= len(groups)
        return int(min(max(1, checks) * cadence, max(READ_BATCH, cadence)))

    def _tick(self) -> None:
        """Between features of a check and between slices: heartbeat when one is due."""
        if time.monotonic() >= self._next_hb:
            self.heartbeat()

    def step(self) -> int:
        """Feed new lane records to the detectors in time-bounded slices; emit and checkpoint.

        Stops when the lanes are empty or the step budget is spent (then the
        next step continues where this one stopped); heartbeats between slices.
        """
        self._map_lanes()
        events: list[Any] = self._new_events
        self._new_events = []
        if not any(m.groups for m in self.monitors.values()):
            self.idle_wait = 0.5
            return self._drain_performance(events)
        t_start = time.monotonic()
        deadline = t_start + self.step_budget
        done = 0
        # Stretch the cadence only when actually falling behind: a backlog of a
        # quarter of a lane. A tiny budget then makes the detector double its
        # cadence; a large one lets it halve back once caught up.
        behind = any(c.pending > c.ring.capacity // 4 for c in self.consumers.values())
        budget = 0.001 if behind else 10.0
        lanes = list(self.consumers.items())
        # Start at a different lane each step: a busy lane cannot starve the others.
        self._rr = (self._rr + 1) % max(len(lanes), 1)
        for name, cons in lanes[self._rr :] + lanes[: self._rr]:
            mon = self.lane_monitor.get(name) or self._monitor(self.default)
            groups = mon.groups
            if not groups:  # no drift detectors: only drained, or fed to its performance
                done += self._read_performance(cons, mon.model, events)
                continue
            while True:
                t0 = time.monotonic()
                checks0 = sum(g.det.checks_run for g in groups)
                batch = cons.read(self._slice_size(groups), commit=False)
                if not len(batch):
                    break
                done += len(batch)
                mon.records += len(batch)
                recs = batch.records
                kind = recs["kind"]
                for g in groups:
                    # Two kinds per side: two compares cost less than np.isin's set logic.
                    mask = kind == g.kinds[0]
                    for k in g.kinds[1:]:
                        mask |= kind == k
                    rows = recs["v"][mask][:, g.cols]
                    if len(rows):
                        got = g.det.update(rows, g.seq, budget=budget, tick=self._tick)
                        events += [(mon.model, e) for e in got]
                        g.seq += len(rows)
                events += self._feed_performance(mon.model, recs)
                # The header shows progress (status, lane reclaim); a restart resumes
                # from the checkpoint's own cursors, which may be a little behind.
                cons.commit()
                self._dirty = True
                checks = sum(g.det.checks_run for g in groups) - checks0
                if checks:  # records before a window is full cost next to nothing
                    per = (time.monotonic() - t0) / checks
                    prev = self._sec_per_check
                    self._sec_per_check = per if prev is None else max(per, CHECK_COST_DECAY * prev)
                self._tick()
                if time.monotonic() >= deadline:  # at least one slice per step
                    break
            if time.monotonic() >= deadline:
                break
        self.records += done
        now = time.monotonic()
        monitors = [m for m in self.monitors.values() if m.groups]
        if now >= self._next_summary_event and any(
            g.det.records_seen for m in monitors for g in m.groups
        ):
            self._next_summary_event = now + self.cfg.drift_detection.summary_interval_seconds
            for m in monitors:
                for g in m.groups:
                    events += [(m.model, e) for e in g.det.summary_events()]
            events += self._performance_summary_events()
        if events:
            self._pending = events
            self._save_checkpoint()
            self._write_events(events)
            self._pending = []
            # Status shows a state change at once: recompute the summary and send it
            # with the next loop's heartbeat instead of up to SUMMARY_SECONDS later.
            self._next_summary = self._next_stats = self._next_hb = 0.0
        elif self._dirty and now >= self._next_ckpt:
            self._save_checkpoint()
        self.max_step_seconds = max(self.max_step_seconds, time.monotonic() - t_start)
        self.idle_wait = 0.05 if done else 0.1
        return done

    def flush(self) -> None:
        """Checkpoint on a clean stop."""
        if any(m.groups for m in self.monitors.values()) and self._dirty:
            self._save_checkpoint()

    def stats(self) -> dict[str, Any]:
        """Per model version: per-feature state and last statistics; cadence; errors.

        ``features``, ``error`` and ``reference_hash`` are the config's first
        model's (a one-model agent's status as before); ``models`` has every
        (model, version) seen, keyed ``name`` or ``name@version``.
        """
        now = time.monotonic()
        if now >= self._next_summary:
            self._next_summary = now + SUMMARY_SECONDS
            for mon in self.monitors.values():
                mon.summary = _features(mon.groups)
        models = {
            key: {
                "model": m.model.name,
                "version": m.model.version,
                "error": m.error,
                "reference_hash": m.ref_hash,
                "records": m.records,
                "features": m.summary,
            }
            for key, m in self.monitors.items()
        }
        first = self.monitors.get(self.default.key)
        summary = first.summary if first is not None else {}
        lines: list[str] = []
        for key, m in self.monitors.items():
            indent = ""
            if len(self.monitors) > 1:
                lines.append(f"{key}: {m.records} records" + (f", {m.error}" if m.error else ""))
                indent = "  "
            elif m.error:
                lines.append(f"error: {m.error}")
            lines += [indent + _feature_line(name, f) for name, f in m.summary.items()]
        all_groups = [g for m in self.monitors.values() for g in m.groups]
        return {
            "error": self.error,
            "reference_hash": self.ref_hash,
            "records": self.records,
            "drained_unmonitored": self.drained,
            "events": self.events_written,
            "configured_check_frequency": self.cfg.drift_detection.check_frequency,
            "effective_check_frequency": max(
                (g.det.effective_check_frequency for g in all_groups), default=None
            ),
            "max_step_seconds": round(self.max_step_seconds, 4),
            "lost": {n: c.lost for n, c in self.consumers.items()},
            "features": summary,
            "models": models,
            "summary_lines": lines,
            **self._performance_stats(),
        }

    def close(self) -> None:
        """Unmap rings."""
        self.consumers.clear()
        for ring in self.lane_rings.values():
            ring.close()
        self.lane_rings.clear()
        if self.events_ring is not None:
            self.ev_writer = None
            self.events_ring.close()
            self.events_ring = None

    # ------------------------------------------------------- performance (ground truth)
    def _build_performance(self) -> None:
        #: Per lane model key (``name`` / ``name@version``): its ModelPerformance,
        #: None when the model has no ``task``; built on the first lane of it.
        self.perf: dict[str, Any] = {}
        self.perf_error = ""

    def _performance(self, lm: LaneModel) -> Any:
        """The ModelPerformance of ``lm``'s (model, version), or None (no ``task``)."""
        if lm.key in self.perf:
            return self.perf[lm.key]
        entry = self.cfg.find_model(lm.name, lm.version or None) if lm.declared else None
        mp = None
        if entry is not None:
            try:
                mp = build_performance(entry, lm, self.cfg.performance)
            except ValueError as exc:  # settings the parser could not see (confirm_m > n)
                self.perf_error = f"{lm.key}: {exc}"
                log.error("model performance of %s is off: %s", lm.key, exc)
        self.perf[lm.key] = mp
        return mp

    def _feed_performance(self, lm: LaneModel, recs: Any) -> list[Any]:
        """Index the slice's predictions and join its feedback (ground truth)."""
        mp = self._performance(lm)
        if mp is None or not len(recs):
            return []
        got = mp.feed(recs["kind"], recs["id"], recs["t_ns"], recs["v"][:, mp.column])
        return [(lm, e) for e in got]

    def _lane_model(self, name: str) -> LaneModel:
        mon = self.lane_monitor.get(name)
        # (Each lane's model is in lane_models once lanes are mapped in step.)
        models: dict[str, LaneModel] = getattr(self, "lane_models", {})
        return mon.model if mon is not None else models.get(name, self.default)

    def _read_performance(self, cons: RingConsumer, lm: LaneModel, events: list[Any]) -> int:
        """A lane without drift detectors: fed to its performance (read, not only drained)."""
        if self._performance(lm) is None:
            return self._drain([cons])
        batch = cons.read(READ_BATCH)
        if len(batch):
            events += self._feed_performance(lm, batch.records)
        return len(batch)

    def _drain_performance(self, events: list[Any]) -> int:
        """No drift detectors at all: every lane fed to its performance or drained."""
        done = sum(
            self._read_performance(cons, self._lane_model(name), events)
            for name, cons in list(self.consumers.items())
        )
        now = time.monotonic()
        if now >= self._next_summary_event:
            self._next_summary_event = now + self.cfg.drift_detection.summary_interval_seconds
            events += self._performance_summary_events()
        self._write_events(events)
        self.records += done
        self.idle_wait = 0.05 if done else 0.2
        return done

    def _performance_summary_events(self) -> list[Any]:
        out = []
        for mp in self.perf.values():
            ev = mp.summary_event(time.time()) if mp is not None else None
            if ev is not None:
                out.append((mp.lane_model, ev))
        return out

    def _performance_stats(self) -> dict[str, Any]:
        """``performance`` per ``model`` / ``model@version`` for ``status``, and its lines."""
        live = {k: mp for k, mp in self.perf.items() if mp is not None}
        if not live and not self.perf_error:
            return {}
        perf: dict[str, Any] = {}
        lines = [f"performance error: {self.perf_error}"] if self.perf_error else []
        for name, mp in live.items():
            s = mp.summary()
            perf[name] = {k: (_num(v) if isinstance(v, float) else v) for k, v in s.items()}
            metric = s["metric"]
            cov, delay = s["coverage"], s["median_delay_s"]
            lines.append(
                f"{name}: performance {s['state']} ({metric} {_sig(s.get(metric))} / reference "
                f"{_sig(s['reference'])}, {s['window']} labels in window, coverage "
                + (f"{cov:.1%}" if cov == cov else "-")
                + ", median label delay "
                + (f"{delay:.3g}s" if delay == delay else "-")
                + ")"
            )
        return {"performance": perf, "performance_lines": lines}


# ------------------------------------------------------------------ performance
# Rolling performance from late ground truth (edge_actors.drift.performance):
# kept apart from the detectors above; it runs with or without a reference.


def build_performance(entry: Any, lm: LaneModel, pc: Any) -> Any:
    """A :class:`~edge_actors.drift.performance.ModelPerformance` for a model entry with a
    ``task`` (None without), laid out for the lane model ``lm``'s fields."""
    if not entry.task or entry.reference_performance is None or not lm.outputs:
        return None
    from edge_actors.drift.performance import ModelPerformance, PerformanceSettings

    names = [f.name for f in lm.outputs]
    target = entry.target or names[0]
    if target not in names:
        return None
    spec = lm.outputs[names.index(target)]
    settings = PerformanceSettings(
        entry.task,
        float(entry.reference_performance),
        window_size=pc.window_size,
        check_every=pc.check_every,
        expected_labels_to_false_alarm=pc.expected_labels_to_false_alarm,
        tolerance=pc.tolerance,
        confirm_m=pc.confirm_m,
        confirm_n=pc.confirm_n,
        recover_p=pc.recover_p,
        n_classes=len(spec.categories),
        min_labels=pc.min_labels,
    )
    mp = ModelPerformance(
        (lm.name, lm.version),
        settings,
        index_size=pc.prediction_index_size,
        feature=target,
        truth_wait_seconds=pc.truth_wait_seconds,
        column=len(lm.inputs) + names.index(target),
    )
    mp.lane_model = lm  # type: ignore[attr-defined]
    return mp


def _sig(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and v == v else "-"


def _version_seen(mon: _Monitor) -> Any:
    """The ``version_seen`` event of a monitor's first lane."""
    from edge_actors.drift.detector import DriftEvent

    nan = math.nan
    return DriftEvent(
        time.time(), "", "version", nan, nan, nan, "none", 0, 0, "version_seen", 0, 0, mon.ref_hash
    )


def _features(groups: list[_Group]) -> dict[str, Any]:
    """The status entry of each monitored feature of some detectors."""
    feats = {}
    for g in groups:
        for item in g.det.summary(exact=False):
            feats[item["feature"]] = {
                "state": "drift" if item["state"] == "drifting" else "ok",
                "test": item["test"],
                "statistic": _num(item["statistic"]),
                "p_value": _num(item["p_value"]),
                "threshold": _num(item["threshold"]),
                "n_eff": _num(item["n_eff"]),
                "autocorrelation": _num(item["autocorrelation"]),
                "atom_share": _num(item["atom_share"]),
                "nan_rate": _num(item["nan_rate"]),
                "out_of_range_rate": _num(item["out_of_range_rate"]),
                "unknown_rate": _num(item["unknown_rate"]),
                "quality_alarms": item["quality"],
                "wasserstein": _num(item["wasserstein"]),
                "psi": _num(item["psi"]),
            }
    return feats


def _feature_line(name: str, f: dict[str, Any]) -> str:
    return (
        f"{name}: {f['state']} ({f['test']} {f['statistic']} / {f['threshold']}, "
        f"p={f['p_value']}, n_eff={f['n_eff']})"
        + (f" quality: {', '.join(f['quality_alarms'])}" if f["quality_alarms"] else "")
    )


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else round(f, 6)
