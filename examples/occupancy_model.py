"""A second example model, next to the house-price one: room occupancy from sensors.

``configs/two-models.yaml`` declares both models; ``make run
CONFIG=configs/two-models.yaml`` runs the house model and this one in two
threads of the demo process, each logging through its own producer
(``edge_actors.connect(config, model="occupancy", version=...)``). Its records
and events carry ``model: occupancy`` and land under ``model=occupancy/`` in
the sink; its drift is tested against its own reference
(``occupancy_reference.json``, made by :func:`write_reference`).

The model is a classifier (``task: classification`` in the config): it
outputs the probability that the room is occupied. The true answer arrives
later (a badge reader, an operator) and is meant to be logged as ground truth
for the prediction: see :func:`on_prediction`, the hook where delayed labels
are handed to the agent once ``producer.log_feedback`` exists.

Pure logic (:func:`sample_room`, :func:`predict`) so the reference and tests
need no agent. No drift by default: the house model shows drift, this one
shows that the other model's alarm is not this one's.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The model's name and the version the demo logs (as in configs/two-models.yaml).
NAME = "occupancy"
VERSION = "1.0"
#: Declared by configs/two-models.yaml, in this order.
INPUTS = ("co2_ppm", "temperature_c", "hour")
OUTPUTS = ("p_occupied",)
#: Share of predictions whose true label becomes known, and when (seconds).
LABEL_SHARE = 0.2
LABEL_DELAY_SECONDS = (1.0, 60.0)


def sample_room(rng: np.random.Generator) -> tuple[tuple[float, float, float], bool]:
    """One sensor reading and whether the room really is occupied."""
    hour = float(rng.integers(0, 24))
    occupied = bool(rng.random() < (0.7 if 8 <= hour < 18 else 0.1))
    co2 = float(rng.normal(900 if occupied else 450, 120))
    temp = float(rng.normal(22.5 if occupied else 20.5, 0.8))
    return (co2, temp, hour), occupied


def predict(co2: float, temp: float, hour: float) -> float:
    """Probability of occupancy: a fixed logistic model."""
    z = 0.01 * (co2 - 650) + 0.8 * (temp - 21.5) + (0.5 if 8 <= hour < 18 else -0.5)
    return 1.0 / (1.0 + math.exp(-z))


def on_prediction(producer: Any, record_id: int, occupied: bool, rng: np.random.Generator) -> None:
    """FEEDBACK HOOK: the true label of some predictions, known later.

    A fifth of the predictions (:data:`LABEL_SHARE`) get their truth
    ``LABEL_DELAY_SECONDS`` later. Until the agent takes ground truth
    (``producer.log_feedback(record_id, truth)``) there is nothing to send.
    """
    del producer, record_id, occupied, rng  # the ground-truth half of issue 18 fills this in


def run(
    producer: Any,
    *,
    rate: float = 50.0,
    seed: int = 1,
    stop: threading.Event | None = None,
) -> int:
    """Predict and log at ``rate`` per second until ``stop`` is set; returns the count."""
    rng = np.random.default_rng(seed)
    stop = stop or threading.Event()
    period = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    i = 0
    while not stop.is_set():
        now = time.monotonic()
        if next_at > now:
            stop.wait(next_at - now)
            continue
        room, occupied = sample_room(rng)
        rid = producer.log(room, (predict(*room),))
        on_prediction(producer, rid, occupied, rng)
        i += 1
        next_at += period
    return i


def write_reference(path: Path, n: int = 2000, seed: int = 7) -> None:
    """The model's reference: ``n`` undrifted predictions, as seed JSON."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[float]] = {k: [] for k in (*INPUTS, *OUTPUTS)}
    for _ in range(n):
        room, _occupied = sample_room(rng)
        for k, v in zip(INPUTS, room, strict=True):
            cols[k].append(round(v, 3))
        cols["p_occupied"].append(round(predict(*room), 6))
    path.write_text(json.dumps(cols, separators=(",", ":")) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_reference(Path(__file__).with_name("occupancy_reference.json"))
