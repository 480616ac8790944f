"""``edge-actors status`` as a user reads it: drift lines before and after data, fresh events."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import edge_actors
from edge_actors.cli import build_parser
from edge_actors.offline.status_view import drift_line
from tests.conftest import REPO, AgentProcess, cli

REFERENCE = REPO / "examples" / "house_reference.json"
sys.path.insert(0, str(REPO / "examples"))
import house_model as hm  # noqa: E402


def _features(status: dict[str, Any]) -> dict[str, Any]:
    return dict(status["workers"]["drift"].get("stats", {}).get("features") or {})


def _log(
    producer: edge_actors.Producer, n: int, rng: np.random.Generator, sqft_scale: float = 1.0
) -> None:
    """``n`` predictions of the example model (examples/house_model.py), sqft scaled."""
    houses = np.array([hm.sample_house(rng, sqft_scale) for _ in range(n)])
    outputs = np.array([hm.predict(*h) for h in houses])
    producer.log_batch(houses, outputs)


def test_drift_line_before_and_after_data() -> None:
    empty = {"state": "ok", "test": "ks", "statistic": None, "p_value": None, "threshold": 0.0836}
    assert drift_line("bedrooms", empty) == "bedrooms: ok (no data yet)"
    full = {
        "state": "drift",
        "test": "ks",
        "statistic": 0.45161,
        "p_value": 0.0,
        "threshold": 0.083612,
        "wasserstein": 312.4444,
        "psi": 1.98,
    }
    assert drift_line("sqft", full) == "sqft: drift (ks 0.4516 / 0.08361, p=0, W1 312.4, PSI 1.98)"


def test_status_says_no_data_yet_then_shows_w1_and_psi(
    make_config: Callable[..., Path], agent: Callable[..., AgentProcess]
) -> None:
    config = make_config(
        {
            "drift_detection": {
                "reference_data_path": str(REFERENCE),
                "window_size": 500,
                "long_window_size": 0,
            }
        }
    )
    a = agent(config)
    a.wait_for(lambda s: len(_features(s)) == 6)
    before = cli("status", "-c", str(config))
    assert before.returncode == 0, before.stderr
    assert "bedrooms: ok (no data yet)" in before.stdout, before.stdout
    assert "None" not in before.stdout, before.stdout

    producer = edge_actors.connect(config)
    try:
        assert producer.wait_attached(10.0)
        _log(producer, 2000, np.random.default_rng(1))
        a.wait_for(lambda s: _features(s)["sqft"].get("psi") is not None, timeout=30)
    finally:
        producer.close()
    after = cli("status", "-c", str(config))
    assert after.returncode == 0, after.stderr
    drift_lines = [ln.strip() for ln in after.stdout.splitlines() if ln.startswith("  sqft:")]
    assert drift_lines and "W1 " in drift_lines[0] and "PSI " in drift_lines[0], after.stdout
    assert "no data yet" not in after.stdout and "None" not in after.stdout, after.stdout


def test_status_shows_a_drift_event_with_the_counts_that_announce_it(
    make_config: Callable[..., Path], agent: Callable[..., AgentProcess]
) -> None:
    """No snapshot counts a drift event while its feature still shows "ok" (a stale summary)."""
    config = make_config(
        {
            "drift_detection": {
                "reference_data_path": str(REFERENCE),
                "window_size": 500,
                "long_window_size": 0,
                "out_of_range_threshold": 1.0,
                "summary_interval_seconds": 3600,
            }
        }
    )
    a = agent(config)
    producer = edge_actors.connect(config)
    rng = np.random.default_rng(2)
    try:
        assert producer.wait_attached(10.0)
        _log(producer, 1500, rng)
        a.wait_for(lambda s: _features(s)["sqft"].get("statistic") is not None, timeout=30)
        # Drift right after the worker published a summary (the sqft statistic changed):
        # a summary cached for a few seconds would then miss the drift in the next reports.
        last = _features(a.status())["sqft"]["statistic"]
        deadline = time.monotonic() + 30
        while _features(a.status())["sqft"]["statistic"] == last:
            assert time.monotonic() < deadline, "the drift summary never changed"
            _log(producer, 100, rng)
            time.sleep(0.05)
        _log(producer, 3000, rng, sqft_scale=1.6)
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = a.status()
            stats = status["workers"]["drift"].get("stats", {})
            if stats.get("events"):
                seen.append({n: f["state"] for n, f in _features(status).items()})
                if len(seen) >= 60:
                    break
            time.sleep(0.05)
    finally:
        producer.close()
    assert seen, "no drift event within 30 s"
    stale = [s for s in seen if s["sqft"] != "drift"]
    assert not stale, f"{len(stale)} of {len(seen)} snapshots count events but show no drift"


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_cli_option_has_help() -> None:
    missing = [
        f"{prog} {'/'.join(a.option_strings) or a.dest}"
        for prog, parser in _parsers(build_parser())
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert not missing, f"options without help text: {missing}"
    top = " ".join(cli("--help").stdout.split())
    assert "--log-format" in top and "one JSON object per line" in top
    assert "CRITICAL" in top
    assert "how long to wait" in " ".join(cli("stop", "--help").stdout.split())


def test_log_level_accepts_critical(make_config: Callable[..., Path]) -> None:
    config = make_config()
    r = cli("--log-level", "CRITICAL", "check-config", str(config))
    assert r.returncode == 0, r.stderr
    r = cli("--log-level", "LOUD", "check-config", str(config))
    assert r.returncode == 2 and "CRITICAL" in r.stderr
