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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
CHECKPOINT_VERSION = 2


@dataclass
class _Group:
    """One detector over the fields of one side (inputs or outputs)."""

    label: str
    det: Any  # DriftDetector, imported lazily
    cols: list[int]
    kinds: tuple[int, ...]
    fresh: Callable[[], Any]
    seq: int = 0


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
        self.error = ""
        self.groups: list[_Group] = []
        self.consumers: dict[str, RingConsumer] = {}
        self.lane_rings: dict[str, Ring] = {}
        self.events_ring: Ring | None = None
        self.ev_writer: RingWriter | None = None
        self.events_written = 0
        self.records = 0
        self.drained = 0
        self.ref_hash = ""
        self._pending: list[Any] = []
        self._dirty = False
        self._ckpt_every = self.cfg.drift_detection.checkpoint_interval_seconds
        self._next_ckpt = time.monotonic() + self._ckpt_every
        self._next_summary_event = (
            time.monotonic() + self.cfg.drift_detection.summary_interval_seconds
        )
        self._summary: dict[str, Any] = {}
        self._next_summary = 0.0
        self._restored: dict[str, Any] | None = None
        #: Measured seconds per check (a decaying maximum), to size slices.
        self._sec_per_check: float | None = None
        self._rr = 0
        self.step_budget = min(self._hb_every * STEP_SHARE_OF_HEARTBEAT, MAX_STEP_SECONDS)
        self.max_step_seconds = 0.0
        self.ckpt_path = Path(self.cfg.data_dir) / f"{self.cfg.instance}.drift-checkpoint.npz"
        self._remove_legacy_checkpoint()
        self._build_performance()
        try:
            self._build()
        except Exception as exc:  # any bad reference leaves the worker idle
            self.error = _describe(exc, self.cfg.drift_detection.reference_data_path)
            log.error("drift detection is off: %s", self.error)
            self.groups = []
            self._restored = None

    def _remove_legacy_checkpoint(self) -> None:
        """Earlier versions kept the checkpoint in run_dir, shared by unrelated runs."""
        old = Path(self.cfg.run_dir) / f"{self.cfg.instance}.drift-checkpoint.npz"
        try:
            if old.stat().st_uid == os.getuid():
                old.unlink()
                log.info("removed the drift checkpoint of an earlier version: %s", old)
        except OSError:
            pass

    def _build(self) -> None:
        dc = self.cfg.drift_detection
        if not dc.enabled:
            self.error = "drift_detection.enabled is false"
            return
        if dc.reference_data_path is None:
            self.error = "no drift_detection.reference_data_path configured"
            return
        from edge_actors.drift.reference import load_reference, validate_against_model

        ref = load_reference(dc.reference_data_path, max_bytes=int(dc.max_reference_mb * 2**20))
        model = self.cfg.model
        if not (model.inputs or model.outputs):
            raise ValueError(
                "the config's model section declares no inputs or outputs to monitor "
                "(model.inputs / model.outputs)"
            )
        validate_against_model(ref, model)
        self.ref_hash = ref.content_hash
        self.groups = build_groups(self.cfg, ref, str(Path(self.cfg.data_dir) / "cache"))
        self._restored = self._load_checkpoint()
        log.info(
            "drift: %d features monitored against %s (hash %s)",
            sum(len(g.cols) for g in self.groups),
            dc.reference_data_path,
            ref.content_hash,
        )

    # ------------------------------------------------------------ checkpoint
    def _signature(self) -> dict[str, str]:
        """What the checkpoint is bound to: any difference means a fresh start."""
        dc = dataclasses.asdict(self.cfg.drift_detection)
        for k in ("reference_data_path", "summary_interval_seconds", "checkpoint_interval_seconds"):
            dc.pop(k, None)
        model = self.cfg.model
        schema = {
            "name": model.name,
            "inputs": [f.to_dict() for f in model.inputs],
            "outputs": [f.to_dict() for f in model.outputs],
        }
        return {
            "reference_hash": self.ref_hash,
            "model_schema": json.dumps(schema, sort_keys=True),
            "settings": json.dumps(dc, sort_keys=True, default=str),
        }

    def _load_checkpoint(self) -> dict[str, Any] | None:
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
                saved, now = meta.get("signature") or {}, self._signature()
                differs = [k for k in now if saved.get(k) != now[k]]
                if differs:
                    what = {
                        "reference_hash": (
                            f"reference {saved.get('reference_hash')} (now {self.ref_hash})"
                        ),
                        "model_schema": "another model schema",
                        "settings": "other drift_detection settings",
                    }
                    log.warning(
                        "drift checkpoint %s was made for %s: starting fresh",
                        self.ckpt_path,
                        ", ".join(what[k] for k in differs),
                    )
                    return None
                for k, g in enumerate(self.groups):
                    state = meta["groups"][k]
                    state["ring"] = z[f"ring{k}"]
                    g.det.load_state_dict(state)
                    g.seq = int(meta["seqs"][k])
        except FileNotFoundError:
            return None
        except Exception as exc:  # a bad checkpoint only costs a fresh start
            log.warning("drift checkpoint %s unreadable (%s): starting fresh", self.ckpt_path, exc)
            for g in self.groups:  # a half-restored detector must not run on
                g.det, g.seq = g.fresh(), 0
            return None
        self.records = int(meta.get("records", 0))
        log.info("drift: resumed from checkpoint (%d records seen)", self.records)
        return meta  # type: ignore[no-any-return]

    def _save_checkpoint(self) -> None:
        arrays: dict[str, Any] = {}
        states = []
        for k, g in enumerate(self.groups):
            st = g.det.state_dict()
            arrays[f"ring{k}"] = st.pop("ring")
            states.append(st)
        meta = {
            "version": CHECKPOINT_VERSION,
            "signature": self._signature(),
            "groups": states,
            "seqs": [g.seq for g in self.groups],
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
            "pending": [e.to_dict() for e in self._pending],
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

        self._write_events(
            [PerfEvent(**e) if "coverage" in e else DriftEvent(**e) for e in pending]
        )

    def _write_events(self, events: list[Any]) -> None:
        if not events or self.ev_writer is None:
            return
        recs = np.zeros(len(events), EVENT_DTYPE)
        for r, e in zip(recs, events, strict=True):
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
        for e in events:
            if e.state != "check":
                log.warning(
                    "%s: %s on %s (%s statistic %.4g, threshold %.4g, n_eff %.0f)",
                    e.state,
                    e.feature,
                    e.test,
                    e.test,
                    e.statistic,
                    e.threshold,
                    e.n_eff,
                )

    # ------------------------------------------------------------------ work
    def _drain(self) -> int:
        """Idle (no reference): move the cursors to the end so retired lanes count as drained."""
        if self.perf:
            return self._drain_performance()
        done = 0
        for cons in self.consumers.values():
            end = cons.ring.write_seq
            if end > cons.pos:
                done += end - cons.pos
                cons.seek(end)
                cons.commit()
        self.drained += done
        return done

    def _cadence(self) -> int:
        return int(min(g.det.effective_check_frequency for g in self.groups))

    def _slice_size(self) -> int:
        """Records per slice: checks worth a quarter of the step budget, one at least."""
        cadence = self._cadence()
        if self._sec_per_check is None:
            return cadence
        # Checks of all groups run on the same records: size for their sum.
        checks = int(self.step_budget * SLICE_SHARE_OF_STEP / max(self._sec_per_check, 1e-9))
        checks //= len(self.groups)
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
        if not self.groups:
            self.idle_wait = 0.5
            return self._drain()
        t_start = time.monotonic()
        deadline = t_start + self.step_budget
        done = 0
        events: list[Any] = []
        # Stretch the cadence only when actually falling behind: a backlog of a
        # quarter of a lane. A tiny budget then makes the detector double its
        # cadence; a large one lets it halve back once caught up.
        behind = any(c.pending > c.ring.capacity // 4 for c in self.consumers.values())
        budget = 0.001 if behind else 10.0
        lanes = list(self.consumers.values())
        # Start at a different lane each step: a busy lane cannot starve the others.
        self._rr = (self._rr + 1) % max(len(lanes), 1)
        for cons in lanes[self._rr :] + lanes[: self._rr]:
            while True:
                t0 = time.monotonic()
                checks0 = sum(g.det.checks_run for g in self.groups)
                batch = cons.read(self._slice_size(), commit=False)
                if not len(batch):
                    break
                done += len(batch)
                recs = batch.records
                for g in self.groups:
                    rows = recs["v"][np.isin(recs["kind"], g.kinds)][:, g.cols]
                    if len(rows):
                        events += g.det.update(rows, g.seq, budget=budget, tick=self._tick)
                        g.seq += len(rows)
                events += self._feed_performance(cons, recs)
                # The header shows progress (status, lane reclaim); a restart resumes
                # from the checkpoint's own cursors, which may be a little behind.
                cons.commit()
                self._dirty = True
                checks = sum(g.det.checks_run for g in self.groups) - checks0
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
        if now >= self._next_summary_event and any(g.det.records_seen for g in self.groups):
            self._next_summary_event = now + self.cfg.drift_detection.summary_interval_seconds
            for g in self.groups:
                events += g.det.summary_events()
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
        if self.groups and self._dirty:
            self._save_checkpoint()

    def stats(self) -> dict[str, Any]:
        """Per-feature state and last statistics; effective cadence; errors."""
        now = time.monotonic()
        if now >= self._next_summary and self.groups:
            self._next_summary = now + SUMMARY_SECONDS
            feats = {}
            for g in self.groups:
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
            self._summary = feats
        lines = [
            f"{name}: {f['state']} ({f['test']} {f['statistic']} / {f['threshold']}, "
            f"p={f['p_value']}, n_eff={f['n_eff']})"
            + (f" quality: {', '.join(f['quality_alarms'])}" if f["quality_alarms"] else "")
            for name, f in self._summary.items()
        ]
        return {
            "error": self.error,
            "reference_hash": self.ref_hash,
            "records": self.records,
            "drained_unmonitored": self.drained,
            "events": self.events_written,
            "configured_check_frequency": self.cfg.drift_detection.check_frequency,
            "effective_check_frequency": max(
                (g.det.effective_check_frequency for g in self.groups), default=None
            ),
            "max_step_seconds": round(self.max_step_seconds, 4),
            "lost": {n: c.lost for n, c in self.consumers.items()},
            "features": self._summary,
            "summary_lines": ([f"error: {self.error}"] if self.error else []) + lines,
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
        self.perf: dict[tuple[str, str], Any] = {}
        self.perf_error = ""
        try:
            self.perf = build_performance(self.cfg)
        except ValueError as exc:  # settings the config parser could not see (confirm_m > n)
            self.perf_error = str(exc)
            log.error("model performance is off: %s", exc)

    def _feed_performance(self, cons: RingConsumer, recs: Any) -> list[Any]:
        """Index the slice's predictions and join its feedback (ground truth)."""
        mp = self.perf.get(_perf_key(self.cfg))
        if mp is None or not len(recs):
            return []
        events: list[Any] = mp.feed(recs["kind"], recs["id"], recs["t_ns"], recs["v"][:, mp.column])
        return events

    def _drain_performance(self) -> int:
        """No drift reference but performance to keep: read the lanes (not only seek), feed it."""
        done = 0
        events: list[Any] = []
        for cons in self.consumers.values():
            batch = cons.read(READ_BATCH)
            if len(batch):
                events += self._feed_performance(cons, batch.records)
                done += len(batch)
        now = time.monotonic()
        if now >= self._next_summary_event and any(mp.tracker.states for mp in self.perf.values()):
            self._next_summary_event = now + self.cfg.drift_detection.summary_interval_seconds
            events += self._performance_summary_events()
        self._write_events(events)
        self.records += done
        self.idle_wait = 0.05 if done else 0.2
        return done

    def _performance_summary_events(self) -> list[Any]:
        out = []
        for mp in self.perf.values():
            ev = mp.summary_event(time.time())
            if ev is not None:
                out.append(ev)
        return out

    def _performance_stats(self) -> dict[str, Any]:
        """``performance`` per ``model@version`` for ``status``, and its human lines."""
        if not self.perf and not self.perf_error:
            return {}
        perf: dict[str, Any] = {}
        lines = [f"performance error: {self.perf_error}"] if self.perf_error else []
        for (model, version), mp in self.perf.items():
            s = mp.summary()
            name = f"{model}@{version}" if version else model
            perf[name] = {k: (_num(v) if isinstance(v, float) else v) for k, v in s.items()}
            metric = s["metric"]
            value = s.get(metric)
            cov, delay = s["coverage"], s["median_delay_s"]
            lines.append(
                f"{name}: performance {s['state']} ({metric} {_sig(value)} / reference "
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


def _perf_key(cfg: Config) -> tuple[str, str]:
    """The (model, version) a lane's records belong to (one model per agent for now)."""
    return cfg.model.name, str(getattr(cfg.model, "version", "") or "")


def build_performance(cfg: Config, reference_hash: str = "") -> dict[tuple[str, str], Any]:
    """A :class:`~edge_actors.drift.performance.ModelPerformance` per model with a ``task``."""
    model = cfg.model
    if not model.task or model.reference_performance is None or not model.outputs:
        return {}
    from edge_actors.drift.performance import ModelPerformance, PerformanceSettings

    names = [f.name for f in model.outputs]
    target = model.target or names[0]
    spec = model.outputs[names.index(target)]
    pc = cfg.performance
    settings = PerformanceSettings(
        model.task,
        float(model.reference_performance),
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
    key = _perf_key(cfg)
    mp = ModelPerformance(
        key,
        settings,
        index_size=pc.prediction_index_size,
        feature=target,
        reference_hash=reference_hash,
        truth_wait_seconds=pc.truth_wait_seconds,
        column=len(model.inputs) + names.index(target),
    )
    return {key: mp}


def _sig(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and v == v else "-"


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else round(f, 6)
