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
cursors. The checkpoint lives in ``run_dir`` (tmpfs on a normal system):
it must survive a worker restart, not a reboot, and must not wear the SD card.

A bad reference does not crash the worker (a crash loop would take the whole
agent down): it stays up, idle, and ``status`` shows why.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from edge_actors.records import EVENT_DTYPE, KIND_INPUT, KIND_OUTPUT, KIND_PAIR
from edge_actors.ring import Ring, RingConsumer, RingError, RingWriter
from edge_actors.topology import DRIFT, RingSpec, dtype_for
from edge_actors.workers.base import Worker

log = logging.getLogger(__name__)

#: Records read from one lane per step (bounded work between heartbeats).
READ_BATCH = 20_000
#: Checkpoint at least this often while records flow.
CHECKPOINT_SECONDS = 2.0
#: Recompute the status summary (it computes KS p-values) this often.
SUMMARY_SECONDS = 5.0
CHECKPOINT_VERSION = 1


@dataclass
class _Group:
    """One detector over the fields of one side (inputs or outputs)."""

    label: str
    det: Any  # DriftDetector, imported lazily in setup()
    cols: list[int]
    kinds: tuple[int, ...]
    seq: int = 0


class DriftWorker(Worker):
    """Runs the drift detectors over every lane."""

    name = "drift"

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
        self.ref_hash = ""
        self._pending: list[Any] = []
        self._dirty = False
        self._next_ckpt = time.monotonic() + CHECKPOINT_SECONDS
        self._next_summary_event = (
            time.monotonic() + self.cfg.drift_detection.summary_interval_seconds
        )
        self._summary: dict[str, Any] = {}
        self._next_summary = 0.0
        self._restored: dict[str, Any] | None = None
        self.ckpt_path = Path(self.cfg.run_dir) / f"{self.cfg.instance}.drift-checkpoint.npz"
        try:
            self._build()
        except (OSError, ValueError) as exc:
            self.error = str(exc)
            log.error("drift detection is off: %s", exc)
            self.groups = []

    def _build(self) -> None:
        dc = self.cfg.drift_detection
        if not dc.enabled:
            self.error = "drift_detection.enabled is false"
            return
        if dc.reference_data_path is None:
            self.error = "no drift_detection.reference_data_path configured"
            return
        from edge_actors.drift.detector import DriftDetector
        from edge_actors.drift.reference import load_reference, validate_against_model

        ref = load_reference(dc.reference_data_path)
        model = self.cfg.model
        if not (model.inputs or model.outputs):
            raise ValueError(
                "the config's model section declares no inputs or outputs to monitor "
                "(model.inputs / model.outputs)"
            )
        validate_against_model(ref, model)
        self.ref_hash = ref.content_hash
        n_in = len(model.inputs)
        sides = [
            ("inputs", list(enumerate(model.inputs)), (KIND_PAIR, KIND_INPUT)),
            (
                "outputs",
                [(n_in + j, f) for j, f in enumerate(model.outputs)],
                (KIND_PAIR, KIND_OUTPUT),
            ),
        ]
        monitored = [
            [(i, f) for i, f in fields if f.name in ref.features] for _, fields, _ in sides
        ]
        total = sum(len(m) for m in monitored)
        if total == 0:
            raise ValueError(
                f"reference {dc.reference_data_path} has none of the model's fields "
                f"({', '.join(f.name for f in model.fields)})"
            )
        for (label, _fields, kinds), mon in zip(sides, monitored, strict=True):
            if not mon:
                continue
            feats: list[tuple[str, Any, Any]] = []
            for _i, f in mon:
                fr = ref.features[f.name]
                if f.kind == "categorical":
                    index = {c: k for k, c in enumerate(f.categories)}
                    counts: dict[int, float] = {}
                    for name, cnt in fr.category_counts.items():
                        code = index.get(name, -1)
                        counts[code] = counts.get(code, 0.0) + cnt
                    feats.append((f.name, "categorical", counts))
                else:
                    feats.append((f.name, "numeric", fr.sorted_values))
            det = DriftDetector(
                feats,
                window_size=dc.window_size,
                long_window_size=dc.long_window_size,
                check_frequency=dc.check_frequency,
                mode=cast(Any, dc.mode),
                threshold=dc.threshold,
                # The false-alarm budget is per model: split it over both sides.
                erfa=dc.expected_records_to_false_alarm * total / len(mon),
                min_statistic=dc.min_statistic,
                confirm_m=dc.confirm_m,
                confirm_n=dc.confirm_n,
                correction=cast(Any, dc.correction),
                nan_rate_threshold=dc.nan_rate_threshold,
                out_of_range_threshold=dc.out_of_range_threshold,
                min_expected_count=dc.min_expected_count,
                reference_hash=ref.content_hash,
                cache_dir=str(Path(self.cfg.data_dir) / "cache"),
            )
            self.groups.append(_Group(label, det, [i for i, _ in mon], kinds))
        self._restored = self._load_checkpoint()
        log.info(
            "drift: %d features monitored against %s (hash %s)",
            total,
            dc.reference_data_path,
            ref.content_hash,
        )

    # ------------------------------------------------------------ checkpoint
    def _signature(self) -> str:
        dc = self.cfg.drift_detection
        return json.dumps(
            [
                self.ref_hash,
                [g.label for g in self.groups],
                [g.cols for g in self.groups],
                dc.window_size,
                dc.long_window_size,
                dc.check_frequency,
                dc.mode,
            ]
        )

    def _load_checkpoint(self) -> dict[str, Any] | None:
        try:
            with np.load(self.ckpt_path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if (
                    meta.get("version") != CHECKPOINT_VERSION
                    or meta["signature"] != self._signature()
                ):
                    log.info("drift checkpoint is for another configuration: starting fresh")
                    return None
                for k, g in enumerate(self.groups):
                    state = meta["groups"][k]
                    state["ring"] = z[f"ring{k}"]
                    g.det.load_state_dict(state)
                    g.seq = int(meta["seqs"][k])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            log.warning("drift checkpoint unreadable (%s): starting fresh", exc)
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
        tmp = self.ckpt_path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, self.ckpt_path)
        # The header cursor follows the checkpoint, never runs ahead of it:
        # a restart re-reads from here.
        for c in self.consumers.values():
            c.commit()
        self._dirty = False
        self._next_ckpt = time.monotonic() + CHECKPOINT_SECONDS

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
                elif spec.kind == "lane" and spec.name not in self.consumers and self.groups:
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

        self._write_events([DriftEvent(**e) for e in pending])

    def _write_events(self, events: list[Any]) -> None:
        if not events or self.ev_writer is None:
            return
        recs = np.zeros(len(events), EVENT_DTYPE)
        for r, e in zip(recs, events, strict=True):
            r["t_ns"] = int(e.t * 1e9)
            r["feature"] = e.feature.encode()[:64]
            r["test"] = e.test.encode()[:16]
            r["state"] = e.state.encode()[:16]
            r["correction"] = e.correction.encode()[:16]
            r["ref_hash"] = e.reference_hash.encode()[:16]
            r["statistic"], r["p_value"], r["threshold"] = e.statistic, e.p_value, e.threshold
            r["window_size"], r["n_ref"] = e.window_size, e.n_ref
            r["seq_first"], r["seq_last"] = e.seq_first, e.seq_last
        self.ev_writer.write_batch(recs)
        self.events_written += len(events)
        for e in events:
            if e.state != "check":
                log.warning(
                    "%s: %s on %s (%s statistic %.4g, threshold %.4g)",
                    e.state,
                    e.feature,
                    e.test,
                    e.test,
                    e.statistic,
                    e.threshold,
                )

    # ------------------------------------------------------------------ work
    def step(self) -> int:
        """Feed new lane records to the detectors; emit and checkpoint events."""
        if not self.groups:
            self.idle_wait = 0.5
            return 0
        done = 0
        events: list[Any] = []
        # Stretch the cadence only when actually falling behind: a backlog of a
        # quarter of a lane. A tiny budget then makes the detector double its
        # cadence; a large one lets it halve back once caught up.
        behind = any(c.pending > c.ring.capacity // 4 for c in self.consumers.values())
        budget = 0.001 if behind else 10.0
        for cons in self.consumers.values():
            batch = cons.read(READ_BATCH, commit=False)
            if not len(batch):
                continue
            done += len(batch)
            recs = batch.records
            for g in self.groups:
                rows = recs["v"][np.isin(recs["kind"], g.kinds)][:, g.cols]
                if len(rows):
                    events += g.det.update(rows, g.seq, budget=budget)
                    g.seq += len(rows)
            # The header shows progress (status, lane reclaim); a restart resumes
            # from the checkpoint's own cursors, which may be a little behind.
            cons.commit()
            self._dirty = True
        self.records += done
        now = time.monotonic()
        if now >= self._next_summary_event and any(g.det.records_seen for g in self.groups):
            self._next_summary_event = now + self.cfg.drift_detection.summary_interval_seconds
            for g in self.groups:
                events += g.det.summary_events()
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
                        "nan_rate": _num(item["nan_rate"]),
                        "out_of_range_rate": _num(item["out_of_range_rate"]),
                        "wasserstein": _num(item["wasserstein"]),
                        "psi": _num(item["psi"]),
                    }
            self._summary = feats
        lines = [
            f"{name}: {f['state']} ({f['test']} {f['statistic']} / {f['threshold']}, "
            f"p={f['p_value']})"
            for name, f in self._summary.items()
        ]
        return {
            "error": self.error,
            "reference_hash": self.ref_hash,
            "records": self.records,
            "events": self.events_written,
            "configured_check_frequency": self.cfg.drift_detection.check_frequency,
            "effective_check_frequency": max(
                (g.det.effective_check_frequency for g in self.groups), default=None
            ),
            "lost": {n: c.lost for n, c in self.consumers.items()},
            "features": self._summary,
            "summary_lines": ([f"error: {self.error}"] if self.error else []) + lines,
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


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else round(f, 6)
