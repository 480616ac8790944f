"""A second example model, next to the house-price one: room occupancy from sensors.

``configs/two-models.yaml`` declares both models; ``make run
CONFIG=configs/two-models.yaml`` runs the house model and this one in two
threads of the demo process, each logging through its own producer
(``edge_actors.connect(config, model="occupancy", version=...)``). Its records
and events carry ``model: occupancy`` and land under ``model=occupancy/`` in
the sink; its drift is tested against its own reference
(``occupancy_reference.json``, made by :func:`write_reference`).

The model is a classifier (``task: classification``, ``target: occupied`` in
the config): it outputs the probability that the room is occupied and the
decision (``occupied``: ``yes``/``no``). The true answer arrives later (a
badge reader, an operator) for a fifth of the predictions, 1-60 s after them:
:func:`on_prediction` schedules it and :func:`run` logs it with
``producer.log_feedback(record_id, {"occupied": ...})``. The agent joins it to
the prediction (accuracy, macro-F1, coverage and label delay in ``status``,
``performance_degraded`` if the accuracy falls below the reference's 0.988)
and uploads it as the ``feedback`` stream.

Pure logic (:func:`sample_room`, :func:`predict`) so the reference and tests
need no agent. No drift by default: the house model shows drift, this one
shows that the other model's alarm is not this one's.
"""

from __future__ import annotations

import heapq
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
OUTPUTS = ("p_occupied", "occupied")
#: Categories of the ``occupied`` output (declared categorical in the config).
CLASSES = ("no", "yes")
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


def on_prediction(
    labels: list[tuple[float, int, str]], record_id: int, occupied: bool, rng: np.random.Generator
) -> None:
    """The true label of some predictions, known later: schedule it in ``labels`` (a heap).

    A fifth of the predictions (:data:`LABEL_SHARE`) get their truth
    ``LABEL_DELAY_SECONDS`` later; :func:`log_due_labels` logs it then.
    """
    if rng.random() < LABEL_SHARE:
        due = time.monotonic() + float(rng.uniform(*LABEL_DELAY_SECONDS))
        heapq.heappush(labels, (due, record_id, CLASSES[occupied]))


def log_due_labels(producer: Any, labels: list[tuple[float, int, str]]) -> int:
    """Log the ground truth whose time has come (``producer.log_feedback``); returns how many."""
    n = 0
    now = time.monotonic()
    while labels and labels[0][0] <= now:
        _, record_id, truth = heapq.heappop(labels)
        producer.log_feedback(record_id, {"occupied": truth})
        n += 1
    return n


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
    labels: list[tuple[float, int, str]] = []
    i = 0
    while not stop.is_set():
        log_due_labels(producer, labels)
        now = time.monotonic()
        if next_at > now:
            stop.wait(next_at - now)
            continue
        room, occupied = sample_room(rng)
        p = predict(*room)
        rid = producer.log(room, (p, CLASSES[p >= 0.5]))
        on_prediction(labels, rid, occupied, rng)
        i += 1
        next_at += period
    return i


def write_reference(path: Path, n: int = 2000, seed: int = 7) -> None:
    """The model's reference: ``n`` undrifted predictions, as seed JSON."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[float]] = {k: [] for k in (*INPUTS, "p_occupied")}
    for _ in range(n):
        room, _occupied = sample_room(rng)
        for k, v in zip(INPUTS, room, strict=True):
            cols[k].append(round(v, 3))
        cols["p_occupied"].append(round(predict(*room), 6))
    path.write_text(json.dumps(cols, separators=(",", ":")) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_reference(Path(__file__).with_name("occupancy_reference.json"))
