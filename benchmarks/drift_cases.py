"""Drift detection on data that is not independent and continuous; prints ONE JSON object.

    python benchmarks/drift_cases.py [--quick] [--records N] [--seeds S] [--no-peers]

Every detector is built from ``configs/default.yaml``'s ``drift_detection``
section (:meth:`edge_actors.drift.settings.DriftSettings.from_config`), one feature per
stream, a reference of 10,000 independent rows unless said otherwise.

False ``drift_started`` per million records on stationary streams (and the
share of checks shown "drifting"):

* ``ar1_phi_{0.3,0.5,0.9,0.99}``: AR(1) with unit marginal variance;
* ``categorical_ref_{1000,10000}``: 5 categories, many references of that size;
* ``ties``: a count feature with 4 values; ``nan_20pc``: 20 % NaN as in the reference;
* ``atom_90pc``: 0 in 90 % of rows, the rest N(3, 1), 10 references; tested in two
  parts (the atom's share, KS on the rest) and, for comparison, with KS on the
  whole feature (``atom_min_share: 0``, the behaviour before the split).

Median detection delays (records after the change, over ``--seeds`` seeds; a
miss is counted when nothing is found within 30,000 records):

* ``shift_0.5sd_iid`` (goal <= 600) and ``shift_0.5sd_ar1_phi_0.9`` (goal <= 10,000);
* ``new_category_{5,2}pc``: that share of rows in a category the reference never saw;
* ``ties_shift``: the count feature's shares move (KS distance 0.1); with the
  chi-squared on its values and with whole-feature KS (``discrete_max_values: 0``,
  ``atom_min_share: 0``) for comparison;
* ``nan_20_to_40pc``;
* ``atom_rest_shift`` (the atom feature's rest moves by 0.5 sd) and
  ``atom_share_90_to_85pc``, split and whole-feature KS.

Peers on the same numeric streams, same run: river's ``KSWIN`` (on the first
20,000 records of each stationary stream: it runs a KS test per record, ~1 ms)
and ``ADWIN``
(``pip install -e '.[bench]'``; left out with a reason when river is not
installed) and the naive rule ``scipy.stats.ks_2samp(window, reference,
method='asymp').pvalue < 0.05`` every 100 records on the last 1,000. Then the
worst drift-worker step with 50 features all drifting at once (:func:`worst_step`), as a multiple of
the default heartbeat interval.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from agentlib import REPO, machine

from edge_actors.config import load_config
from edge_actors.drift.detector import DriftDetector, DriftEvent, FeatureKind
from edge_actors.drift.settings import DriftSettings

CFG = load_config(REPO / "configs" / "default.yaml")
SHIPPED = DriftSettings.from_config(CFG.drift_detection)
N_REF = 10_000
LIMIT = 30_000
#: Records KSWIN sees per stationary stream (it costs ~1 ms per record).
KSWIN_RECORDS = 20_000
P5 = [0.4, 0.25, 0.15, 0.12, 0.08]
TIES_P = [0.4, 0.3, 0.2, 0.1]
TIES_SHIFTED = [0.3, 0.3, 0.25, 0.15]


def detector(kind: FeatureKind, ref: Any, **over: Any) -> DriftDetector:
    """The shipped configuration's detector over one feature."""
    return DriftDetector([("x", kind, ref)], SHIPPED.replace(**over))


def ar1(rng: np.random.Generator, phi: float, n: int, x0: float | None = None) -> np.ndarray:
    """Stationary AR(1), unit marginal variance."""
    from scipy.signal import lfilter

    e = rng.normal(size=n) * np.sqrt(1 - phi * phi)
    start = rng.normal() if x0 is None else x0
    out: np.ndarray = lfilter([1.0], [1.0, -phi], e, zi=[phi * start])[0]
    return out


def stationary(
    det: DriftDetector, data: np.ndarray, tests: tuple[str, ...] = ("ks", "chi2")
) -> tuple[int, int, int]:
    """Feed in check-sized steps: (false starts, checks, checks shown drifting)."""
    started = checks = drifting = 0
    step = det.check_frequency * 10
    for s in range(0, data.shape[0], step):
        ev = det.update(data[s : s + step].reshape(-1, 1), s)
        started += sum(e.state == "drift_started" and e.test in tests for e in ev)
        if det.records_seen >= det.settings.window_size:
            checks += 1
            drifting += det.summary(exact=False)[0]["state"] == "drifting"
    return started, checks, drifting


def delay(
    det: DriftDetector,
    before: np.ndarray,
    after: np.ndarray,
    want: Callable[[DriftEvent], bool],
) -> int | None:
    """Records after the change until the first wanted ``drift_started``; None if missed."""
    det.update(before.reshape(-1, 1), 0)
    n0 = before.shape[0]
    for s in range(0, after.shape[0], 100):
        for e in det.update(after[s : s + 100].reshape(-1, 1), n0 + s):
            if e.state == "drift_started" and want(e):
                return e.seq_last - n0 + 1
    return None


def summarize(delays: list[int | None]) -> dict[str, Any]:
    found = [d for d in delays if d is not None]
    return {
        "median": statistics.median(found) if found else None,
        "max": max(found) if found else None,
        "missed": len(delays) - len(found),
        "runs": len(delays),
    }


def progress(what: str) -> None:
    """One line on stderr per finished case (the JSON goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def per_million(started: int, records: int) -> float:
    return round(started * 1e6 / records, 2)


# ---------------------------------------------------------------- cases


def case_ar1(phi: float, records: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    det = detector("numeric", rng.normal(size=N_REF))
    started, checks, drifting = stationary(det, ar1(rng, phi, records))
    return {
        "records": records,
        "false_starts_per_million": per_million(started, records),
        "false_starts": started,
        "share_drifting": round(drifting / max(checks, 1), 4),
        "n_eff_last": round(float(det.summary(exact=False)[0]["n_eff"]), 1),
    }


def case_categorical(n_ref: int, records: int, refs: int, seed: int) -> dict[str, Any]:
    started = ending = 0
    per = records // refs
    for r in range(refs):
        rng = np.random.default_rng(seed + r)
        det = detector("categorical", rng.choice(5, p=P5, size=n_ref).astype(float))
        s, _, _ = stationary(det, rng.choice(5, p=P5, size=per).astype(float))
        started += s
        ending += det.summary(exact=False)[0]["state"] == "drifting"
    return {
        "records": per * refs,
        "references": refs,
        "false_starts_per_million": per_million(started, per * refs),
        "references_ending_drifting": ending,
    }


def case_ties(records: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vals = np.arange(4.0)
    det = detector("numeric", rng.choice(vals, p=TIES_P, size=N_REF))
    started, _, _ = stationary(det, rng.choice(vals, p=TIES_P, size=records))
    return {"records": records, "false_starts_per_million": per_million(started, records)}


def case_nan(records: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=N_REF)
    ref[rng.random(N_REF) < 0.2] = np.nan
    det = detector("numeric", ref)
    x = rng.normal(size=records)
    x[rng.random(records) < 0.2] = np.nan
    started, _, _ = stationary(det, x, tests=("nan_rate", "ks"))
    return {"records": records, "false_starts_per_million": per_million(started, records)}


def atom(rng: np.random.Generator, n: int, share: float = 0.9, loc: float = 3.0) -> np.ndarray:
    """0 in ``share`` of the rows, the rest N(loc, 1)."""
    x = rng.normal(loc, 1.0, n)
    x[rng.random(n) < share] = 0.0
    return x


#: The atom feature tested in two parts (shipped), and with KS on the whole feature.
ATOM_VARIANTS: dict[str, dict[str, Any]] = {"split": {}, "ks_whole": {"atom_min_share": 0.0}}


def case_atom(records: int, refs: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    per = records // refs
    for label, over in ATOM_VARIANTS.items():
        started = 0
        for r in range(refs):
            rng = np.random.default_rng(seed + r)
            det = detector("numeric", atom(rng, N_REF), **over)
            s, _, _ = stationary(det, atom(rng, per), tests=("ks", "atom_share"))
            started += s
        out[label] = {
            "records": per * refs,
            "references": refs,
            "false_starts_per_million": per_million(started, per * refs),
        }
    return out


def atom_delays(seeds: int) -> dict[str, Any]:
    """Delays on the atom feature: its rest moves, or the atom's share does."""
    out: dict[str, Any] = {}
    for name, change in (
        ("atom_rest_shift", {"loc": 3.5}),
        ("atom_share_90_to_85pc", {"share": 0.85}),
    ):
        row = {}
        for label, over in ATOM_VARIANTS.items():
            d = []
            for s in range(seeds):
                rng = np.random.default_rng(7000 + s)
                det = detector("numeric", atom(rng, N_REF), **over)
                d.append(
                    delay(
                        det,
                        atom(rng, 20_000),
                        atom(rng, LIMIT, **change),
                        lambda e: e.test in ("ks", "atom_share"),
                    )
                )
            row[label] = summarize(d)
        out[name] = row
    return out


def delays(seeds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ks = lambda e: e.test == "ks"  # noqa: E731
    d = []
    for s in range(seeds):
        rng = np.random.default_rng(1000 + s)
        det = detector("numeric", rng.normal(size=N_REF))
        d.append(delay(det, rng.normal(size=20_000), rng.normal(size=LIMIT) + 0.5, ks))
    out["shift_0.5sd_iid"] = {**summarize(d), "goal_median": 600}
    d = []
    for s in range(seeds):
        rng = np.random.default_rng(2000 + s)
        det = detector("numeric", rng.normal(size=N_REF))
        x = ar1(rng, 0.9, 20_000 + LIMIT)
        x[20_000:] += 0.5
        d.append(delay(det, x[:20_000], x[20_000:], ks))
    out["shift_0.5sd_ar1_phi_0.9"] = {**summarize(d), "goal_median": 10_000}
    for share in (0.05, 0.02):
        d, d_any = [], []
        for s in range(seeds):
            for sink, want in ((d, "unknown_category"), (d_any, None)):
                rng = np.random.default_rng(3000 + s)
                det = detector("categorical", {0: 5000.0, 1: 3000.0, 2: 2000.0})
                after = rng.choice(3, p=[0.5, 0.3, 0.2], size=LIMIT).astype(float)
                after[rng.random(LIMIT) < share] = -1.0
                sink.append(
                    delay(
                        det,
                        rng.choice(3, p=[0.5, 0.3, 0.2], size=5000).astype(float),
                        after,
                        lambda e, w=want: w is None or e.test == w,  # type: ignore[misc]
                    )
                )
        out[f"new_category_{round(share * 100)}pc"] = {
            "unknown_category_event": summarize(d),
            "any_event": summarize(d_any),
        }
    vals = np.arange(4.0)
    # ks_forced: whole-feature KS (not chi-squared, and no atom split of its 0s).
    forced = {"discrete_max_values": 0, "atom_min_share": 0.0}
    for label, over in (("chi2_on_values", {}), ("ks_forced", forced)):
        d = []
        for s in range(seeds):
            rng = np.random.default_rng(4000 + s)
            det = detector("numeric", rng.choice(vals, p=TIES_P, size=N_REF), **over)
            d.append(
                delay(
                    det,
                    rng.choice(vals, p=TIES_P, size=20_000),
                    rng.choice(vals, p=TIES_SHIFTED, size=LIMIT),
                    lambda e: e.test in ("ks", "chi2"),
                )
            )
        out[f"ties_shift_{label}"] = summarize(d)
    d = []
    for s in range(seeds):
        rng = np.random.default_rng(5000 + s)
        ref = rng.normal(size=N_REF)
        ref[rng.random(N_REF) < 0.2] = np.nan
        before, after = rng.normal(size=20_000), rng.normal(size=LIMIT)
        before[rng.random(20_000) < 0.2] = np.nan
        after[rng.random(LIMIT) < 0.4] = np.nan
        d.append(delay(detector("numeric", ref), before, after, lambda e: e.test == "nan_rate"))
    out["nan_20_to_40pc"] = summarize(d)
    out.update(atom_delays(seeds))
    return out


# ---------------------------------------------------------------- peers


def peers(records: int, seeds: int, phis: list[float]) -> dict[str, Any]:
    """River's KSWIN and ADWIN, and naive ks_2samp p < 0.05, on the same numeric streams."""
    from scipy import stats

    out: dict[str, Any] = {}
    try:
        from river import drift as rdrift
    except ImportError as exc:
        out["river"] = f"not installed ({exc}); pip install -e '.[bench]'"
        rdrift = None

    def naive_alarms(ref: np.ndarray, x: np.ndarray) -> list[int]:
        hits = []
        for end in range(1000, x.shape[0] + 1, 100):
            # Asymptotic p-values: scipy's default (exact at these sizes) costs
            # ~0.5 s per call; the rule's decisions at p < 0.05 are the same.
            if stats.ks_2samp(x[end - 1000 : end], ref, method="asymp").pvalue < 0.05:
                hits.append(end)
        return hits

    def river_alarms(
        make: Callable[[], Any], x: np.ndarray, first_after: int | None = None
    ) -> list[int]:
        """Alarm positions; with ``first_after``, stop at the first alarm past it."""
        det = make()
        hits = []
        for i, v in enumerate(x):
            det.update(float(v))
            if det.drift_detected:
                hits.append(i + 1)
                if first_after is not None and i + 1 > first_after:
                    break
        return hits

    makers: dict[str, Callable[[], Any]] = {}
    if rdrift is not None:
        makers["river_kswin"] = lambda: rdrift.KSWIN(seed=1)
        makers["river_adwin"] = lambda: rdrift.ADWIN()
    streams = {"iid": 0.0, **{f"ar1_phi_{p}": p for p in phis}}
    for name, phi in streams.items():
        rng = np.random.default_rng(77)
        ref = rng.normal(size=N_REF)
        x = ar1(rng, phi, records) if phi else rng.normal(size=records)
        row: dict[str, Any] = {"records": records}
        row["naive_ks_2samp_p05_alarms_per_million"] = per_million(
            len(naive_alarms(ref, x)), records
        )
        for label, make in makers.items():
            # KSWIN runs a KS test per record (~1 ms): a shorter stream is enough
            # for its alarm rate, which is in the thousands per million.
            n = min(records, KSWIN_RECORDS) if label == "river_kswin" else records
            row[f"{label}_alarms_per_million"] = per_million(len(river_alarms(make, x[:n])), n)
            row[f"{label}_records"] = n
        out[f"stationary_{name}"] = row
        progress(f"peers stationary {name}")
    # Delays of a 0.5 sd shift after 20,000 records (first alarm after the change).
    for name, phi in (("iid", 0.0), ("ar1_phi_0.9", 0.9)):
        res: dict[str, list[int | None]] = {k: [] for k in ["naive_ks_2samp_p05", *makers]}
        for s in range(seeds):
            rng = np.random.default_rng(6000 + s)
            ref = rng.normal(size=N_REF)
            x = ar1(rng, phi, 20_000 + LIMIT) if phi else rng.normal(size=20_000 + LIMIT)
            x[20_000:] += 0.5
            alarms = {"naive_ks_2samp_p05": naive_alarms(ref, x)}
            for label, make in makers.items():
                # KSWIN warms up on the last 2,000 records before the change.
                skip = 18_000 if label == "river_kswin" else 0
                alarms[label] = [
                    h + skip for h in river_alarms(make, x[skip:], first_after=20_000 - skip)
                ]
            for k, hits in alarms.items():
                after = [h - 20_000 for h in hits if h > 20_000]
                res[k].append(after[0] if after else None)
        out[f"delay_0.5sd_{name}"] = {k: summarize(v) for k, v in res.items()}
    return out


# ---------------------------------------------------------------- worst step


def worst_step(features: int = 50, records: int = 60_000) -> dict[str, Any]:
    """The real drift worker (in-process, real lane ring) with every feature drifting at once.

    The lane holds ``records`` records: the first third stationary, then all
    ``features`` shifted by 1 sd, so every feature starts (and then worsens)
    within the same few checks. Reports the longest ``step()`` against the
    default heartbeat interval.
    """
    import yaml

    from edge_actors.ring import Ring
    from edge_actors.topology import RingSpec, dtype_for
    from edge_actors.workers.drift import DriftWorker

    names = [f"f{i}" for i in range(features)]
    with tempfile.TemporaryDirectory(prefix="eadw") as tmp:
        rng = np.random.default_rng(9)
        ref = Path(tmp) / "ref.json"
        ref.write_text(json.dumps({n: rng.normal(size=N_REF).round(6).tolist() for n in names}))
        raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
        raw["model"] = {"name": "wide", "inputs": names, "outputs": []}
        raw["run_dir"], raw["data_dir"] = str(Path(tmp) / "run"), str(Path(tmp) / "data")
        raw["instance"] = f"bw{int(time.time()) % 100000}"
        raw["drift_detection"]["reference_data_path"] = str(ref)
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(raw))
        cfg = load_config(cfg_path)
        hb = cfg.supervisor.heartbeat_interval_seconds
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.setblocking(False)
        t0 = time.perf_counter()
        w = DriftWorker(cfg, ours)
        w.setup()
        setup_s = time.perf_counter() - t0
        ring = Ring.create(f"ea_{cfg.instance}_bench", dtype_for("lane", cfg), 1 << 17, 2)
        evt = Ring.create(f"ea_{cfg.instance}_bevt", dtype_for("events", cfg), 4096, 1)
        try:
            recs = np.zeros(records, dtype_for("lane", cfg))
            x = rng.normal(size=(records, features))
            x[records // 3 :] += 1.0
            recs["v"] = x
            ring.writer().write_batch(recs)
            w.set_rings([RingSpec(ring.name, "lane"), RingSpec(evt.name, "events")])
            steps: list[float] = []
            beats: list[float] = []
            real_heartbeat = w.heartbeat

            def heartbeat() -> None:
                beats.append(time.monotonic())
                real_heartbeat()

            w.heartbeat = heartbeat  # type: ignore[method-assign]
            w.heartbeat()
            done = 0
            while done < records:
                t = time.perf_counter()
                n = w.step()
                steps.append(time.perf_counter() - t)
                if time.monotonic() >= w._next_hb:  # as the worker loop does after a step
                    w.heartbeat()
                done += n
                try:
                    while theirs.recv(1 << 20):
                        pass
                except BlockingIOError:
                    pass
                if n == 0:
                    break
            started = sum(1 for f in w.stats()["features"].values() if f["state"] == "drift")
        finally:
            w.close()
            for r in (ring, evt):
                r.close()
                r.unlink()
            ours.close()
            theirs.close()
    worst = max(steps)
    gap = max(b - a for a, b in itertools.pairwise(beats))
    return {
        "features": features,
        "records": done,
        "features_drifting_at_end": started,
        "events": w.events_written,
        "steps": len(steps),
        "step_budget_s": w.step_budget,
        "worst_step_s": round(worst, 4),
        "median_step_s": round(statistics.median(steps), 4),
        "heartbeat_interval_s": hb,
        "worst_step_over_heartbeat": round(worst / hb, 3),
        "longest_heartbeat_gap_s": round(gap, 4),
        "longest_heartbeat_gap_over_heartbeat": round(gap / hb, 3),
        "setup_s": round(setup_s, 2),
    }


def main() -> None:
    """Run the cases and print one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--records", type=int, default=None, help="records per stationary case")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args()
    records = args.records or (200_000 if args.quick else 1_000_000)
    seeds = args.seeds or (5 if args.quick else 20)
    t0 = time.perf_counter()
    phis = [0.3, 0.5, 0.9, 0.99]
    out: dict[str, Any] = {"benchmark": "drift_cases", "config": "configs/default.yaml"}
    st: dict[str, Any] = {}
    out["stationary"] = st
    for i, p in enumerate(phis):
        st[f"ar1_phi_{p}"] = case_ar1(p, records, 10 + i)
        progress(f"ar1 {p}: {st[f'ar1_phi_{p}']}")
    st["categorical_ref_1000"] = case_categorical(1000, records, 20, 100)
    st["categorical_ref_10000"] = case_categorical(10_000, records, 4, 200)
    progress(f"categorical {st['categorical_ref_1000']} {st['categorical_ref_10000']}")
    st["ties"] = case_ties(records, 300)
    st["nan_20pc"] = case_nan(records, 400)
    progress(f"ties {st['ties']}, nan {st['nan_20pc']}")
    st["atom_90pc"] = case_atom(records, 10, 500)
    progress(f"atom {st['atom_90pc']}")
    out["delays"] = delays(seeds)
    progress(f"delays {out['delays']}")
    out["worst_step"] = worst_step()
    progress(f"worst step {out['worst_step']}")
    if not args.no_peers:
        out["peers"] = peers(min(records, 200_000), min(seeds, 5), [0.5, 0.9])
    out["goals"] = {
        "ar1_false_starts_per_million_max_phi_le_0.9": 1,
        "ar1_phi_0.99_share_drifting_max": 0.01,
        "categorical_ref_1000_false_starts_per_million_max": 1,
        "shift_0.5sd_iid_median_max": 600,
        "shift_0.5sd_ar1_phi_0.9_median_max": 10_000,
    }
    dl = out["delays"]
    out["meets_goals"] = {
        "ar1": all(st[f"ar1_phi_{p}"]["false_starts_per_million"] <= 1 for p in (0.3, 0.5, 0.9)),
        "ar1_0.99": st["ar1_phi_0.99"]["share_drifting"] <= 0.01,
        "categorical_ref_1000": st["categorical_ref_1000"]["false_starts_per_million"] <= 1,
        "shift_iid": (dl["shift_0.5sd_iid"]["median"] or 1 << 30) <= 600,
        "shift_ar1": (dl["shift_0.5sd_ar1_phi_0.9"]["median"] or 1 << 30) <= 10_000,
    }
    out["machine"] = machine()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
