"""Backoff with full jitter, bounded cycles, slow cadence for permanent errors."""

from __future__ import annotations

import random

import pytest

from edge_actors.retry import RetryPolicy, RetrySchedule


def test_full_jitter_stays_under_the_exponential_ceiling() -> None:
    policy = RetryPolicy(base=0.5, max_delay=10.0, max_attempts=20, rng=random.Random(1))
    assert [policy.ceiling(k) for k in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert policy.ceiling(10_000) == 10.0  # no overflow
    for attempt in range(12):
        delays = [policy.delay(attempt) for _ in range(500)]
        ceiling = policy.ceiling(attempt)
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter: spread over the whole interval, not clustered at the top.
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling


def test_seeded_rng_is_reproducible() -> None:
    a = RetryPolicy(rng=random.Random(42))
    b = RetryPolicy(rng=random.Random(42))
    assert [a.delay(k) for k in range(10)] == [b.delay(k) for k in range(10)]


def test_backoff_cycle_ends_after_max_attempts_and_data_waits() -> None:
    policy = RetryPolicy(
        base=1.0, max_delay=8.0, max_attempts=3, cycle_interval=60.0, rng=random.Random(3)
    )
    backoff = RetrySchedule(policy)
    now = 1000.0
    assert backoff.ready(now) and backoff.next_attempt_at(now) == now
    t1 = backoff.on_failure(now)
    assert now <= t1 <= now + 1.0
    assert not backoff.ready(now) or t1 == now
    t2 = backoff.on_failure(t1)
    assert t1 <= t2 <= t1 + 2.0
    t3 = backoff.on_failure(t2)  # third failure: the cycle ends
    assert t3 == t2 + 60.0
    assert backoff.cycles == 1 and backoff.attempts == 0
    assert backoff.next_attempt_at(t2) == t3
    # A new cycle starts with short delays again.
    t4 = backoff.on_failure(t3)
    assert t3 <= t4 <= t3 + 1.0
    backoff.on_success()
    assert backoff.ready(t4) and backoff.cycles == 0


def test_permanent_errors_go_to_a_slow_cadence() -> None:
    policy = RetryPolicy(base=1.0, max_delay=30.0, max_attempts=5, permanent_delay=300.0)
    backoff = RetrySchedule(policy)
    for k in range(10):
        at = backoff.on_failure(100.0 * k, permanent=True)
        assert at == 100.0 * k + 300.0
    assert backoff.permanent
    default = RetryPolicy(base=1.0, max_delay=30.0, cycle_interval=120.0)
    assert default.effective_permanent_delay == 120.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base": 0}, "base"),
        ({"base": 2, "max_delay": 1}, "max_delay"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"cycle_interval": -1}, "cycle_interval"),
        ({"permanent_delay": -1}, "permanent_delay"),
    ],
)
def test_policy_validation_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
