"""A small house-price "model" that logs every prediction to edge-actors.

Run it next to an agent (``edge-actors run -c configs/default.yaml``)::

    python examples/house_model.py -c configs/default.yaml --rate 200 --duration 60

It draws houses (bedrooms, bathrooms, sqft, age) from a fixed distribution,
prices them with :func:`predict`, and logs inputs and outputs through
``edge_actors.connect(config)`` — the recommended API. After ``--drift-after``
predictions the houses slowly get bigger: sqft grows by about 40 % over the
next ~2000 predictions, so the ``sqft`` input and the ``price`` output drift
while ``confidence`` (which does not depend on size) stays put. That is the
pattern the drift worker should report.

The model logic is pure (:func:`sqft_scale`, :func:`sample_house`,
:func:`predict`), so tests and ``make_reference.py`` use it without an agent.
"""

from __future__ import annotations

import argparse
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Default predictions before the drift starts.
DRIFT_AFTER = 3000
#: Predictions over which sqft ramps up to its drifted size.
DRIFT_RAMP = 2000
#: Relative sqft growth once the ramp is complete.
DRIFT_MAGNITUDE = 0.40
#: Declared by configs/default.yaml, in this order.
INPUTS = ("bedrooms", "bathrooms", "sqft", "age")
OUTPUTS = ("price", "confidence")

House = tuple[float, float, float, float]


def sqft_scale(
    index: int,
    drift_after: int = DRIFT_AFTER,
    ramp: int = DRIFT_RAMP,
    magnitude: float = DRIFT_MAGNITUDE,
) -> float:
    """Size multiplier of prediction number ``index`` (0-based): 1 before the drift.

    A linear ramp rather than a step: gradual drift is the case a detector finds
    hard, and the one a real market produces.
    """
    if index < drift_after:
        return 1.0
    progress = min(1.0, (index - drift_after) / max(ramp, 1))
    return 1.0 + magnitude * progress


def sample_house(rng: np.random.Generator, scale: float = 1.0) -> House:
    """Draw one house's inputs (bedrooms, bathrooms, sqft, age); sqft is multiplied by ``scale``.

    Only ``rng`` is consumed, so a seed gives the same stream every run.
    """
    bedrooms = float(1 + rng.binomial(5, 0.45))
    # Roughly one bathroom per two bedrooms, in half steps.
    bathrooms = max(1.0, float(round(bedrooms / 2 + rng.normal(0.25, 0.5))))
    bathrooms += 0.5 * float(rng.integers(0, 2))
    sqft = max(350.0, 500.0 + 380.0 * bedrooms + rng.normal(0.0, 250.0)) * scale
    age = float(rng.gamma(2.0, 12.0))
    return bedrooms, bathrooms, round(sqft, 1), round(age, 1)


def predict(bedrooms: float, bathrooms: float, sqft: float, age: float) -> tuple[float, float]:
    """Price a house: returns ``(price, confidence)``. Pure and deterministic.

    Confidence depends on how typical the house is (bedrooms, age), not on its
    size, so a size drift moves the price and leaves the confidence alone.
    """
    price = 40_000.0 + 180.0 * sqft + 12_000.0 * bedrooms + 18_000.0 * bathrooms - 900.0 * age
    price = max(30_000.0, price)
    confidence = 0.95 - 0.03 * abs(bedrooms - 3.0) - 0.12 * (1.0 - math.exp(-age / 40.0))
    confidence = min(0.99, max(0.5, confidence))
    return round(price, 2), round(confidence, 4)


def simulate(
    n: int, seed: int = 0, drift_after: int = DRIFT_AFTER, start: int = 0
) -> tuple[list[House], list[tuple[float, float]]]:
    """Predictions ``start .. start+n-1`` of the stream for ``seed``: (inputs, outputs)."""
    rng = np.random.default_rng(seed)
    houses: list[House] = []
    outputs: list[tuple[float, float]] = []
    for i in range(start + n):
        house = sample_house(rng, sqft_scale(i, drift_after))
        if i >= start:
            houses.append(house)
            outputs.append(predict(*house))
    return houses, outputs


def run(
    producer: Any,
    *,
    rate: float = 200.0,
    duration: float | None = None,
    drift_after: int = DRIFT_AFTER,
    seed: int = 0,
    stop: threading.Event | None = None,
) -> int:
    """Predict and log at ``rate`` per second until ``duration`` elapses or ``stop`` is set.

    Returns the number of predictions made. ``producer`` is what
    ``edge_actors.connect`` returns (anything with ``log(inputs, outputs)``).
    """
    rng = np.random.default_rng(seed)
    stop = stop or threading.Event()
    period = 1.0 / rate if rate > 0 else 0.0
    t0 = time.monotonic()
    deadline = t0 + duration if duration is not None else math.inf
    next_at = t0
    i = 0
    while not stop.is_set():
        now = time.monotonic()
        if now >= deadline:
            break
        if next_at > now:
            # Sleep on the event, so a stop request is seen at once.
            stop.wait(min(next_at - now, deadline - now))
            continue
        house = sample_house(rng, sqft_scale(i, drift_after))
        producer.log(house, predict(*house))
        i += 1
        # Pace against the schedule, not the last call: a late wake-up is made up
        # for (up to a second's worth), so the average rate holds.
        next_at = max(next_at + period, now - 1.0)
    return i


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Example house-price model logging to edge-actors, with a gradual drift."
    )
    p.add_argument("-c", "--config", default=None, help="edge-actors YAML config")
    p.add_argument("--rate", type=float, default=200.0, help="predictions per second")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    p.add_argument(
        "--drift-after",
        type=int,
        default=DRIFT_AFTER,
        help="predictions before the gradual sqft drift starts (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example model until ``--duration`` or Ctrl-C; print producer stats at exit."""
    args = _parse(argv)
    import edge_actors

    producer = edge_actors.connect(args.config)
    try:
        run(
            producer,
            rate=args.rate,
            duration=args.duration,
            drift_after=args.drift_after,
            seed=args.seed,
        )
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop: fall through to the stats.
    finally:
        producer.close()  # records still held for an absent agent are counted, then
        stats = producer.stats()
    dropped = ", ".join(f"{k} {v}" for k, v in stats["dropped"].items() if v) or "none"
    lost = ", ".join(f"{k} {v}" for k, v in stats["lost"].items() if v)
    print(
        f"house_model: {stats['written'] + stats['dropped_total']} predictions, "
        f"written {stats['written']}, dropped {dropped}"
        + (f", lost before upload: {lost}" if lost else "")
        + (f", last error: {stats['last_error']}" if stats["last_error"] else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
