"""Retry timing for uploads: exponential backoff with full jitter, never a drop.

The uploader runs a non-blocking event loop, so nothing here sleeps: a
:class:`RetrySchedule` only answers *when* the next attempt may start
(:meth:`RetrySchedule.next_attempt_at`) and is told what happened
(:meth:`RetrySchedule.on_success`, :meth:`RetrySchedule.on_failure`).

Policy (docs/design.md, "Outbox and sinks"):

- Transient failure number ``k`` (0-based) of a cycle waits
  ``uniform(0, min(max_delay, base * 2**k))`` ("full jitter": a fleet of
  devices that lost the network together does not come back in lockstep).
- After ``max_attempts`` failed attempts the *cycle* ends: the next attempt
  waits ``cycle_interval`` (normally the upload interval) and the counter
  restarts. The data stays in the outbox; retry logic never drops anything.
- A permanent failure (missing bucket, bad credentials, ...) is not retried
  quickly, since it will not fix itself within seconds: the next attempt waits
  ``permanent_delay``, so an operator's fix is picked up without a restart
  but the device does not spin.
"""

from __future__ import annotations

import dataclasses
import logging
import random

__all__ = ["RetryPolicy", "RetrySchedule"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RetryPolicy:
    """Backoff parameters.

    Attributes:
        base: delay scale of the first retry, seconds (> 0).
        max_delay: cap of a single backoff delay, seconds (>= base).
        max_attempts: failed attempts per upload cycle before the cycle ends (>= 1).
        cycle_interval: wait after a cycle ended without success, seconds;
            ``None`` means ``max_delay``.
        permanent_delay: wait after a permanent error, seconds; ``None`` means
            ``max(max_delay, cycle_interval)``.
        rng: random source for the jitter (inject a seeded one in tests).
    """

    base: float = 1.0
    max_delay: float = 60.0
    max_attempts: int = 5
    cycle_interval: float | None = None
    permanent_delay: float | None = None
    rng: random.Random = dataclasses.field(default_factory=random.Random)

    def __post_init__(self) -> None:
        """Validate the parameters so a bad config fails at start, not at the first error."""
        if not self.base > 0:
            raise ValueError(f"base: must be > 0, got {self.base}")
        if not self.max_delay >= self.base:
            raise ValueError(f"max_delay: must be >= base ({self.base}), got {self.max_delay}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1, got {self.max_attempts}")
        if self.cycle_interval is not None and self.cycle_interval < 0:
            raise ValueError(f"cycle_interval: must be >= 0, got {self.cycle_interval}")
        if self.permanent_delay is not None and self.permanent_delay < 0:
            raise ValueError(f"permanent_delay: must be >= 0, got {self.permanent_delay}")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the jittered delay after failed attempt ``attempt`` (0-based)."""
        # Clamp the exponent: 2**attempt overflows a float after ~1000 attempts.
        return float(min(self.max_delay, self.base * 2.0 ** min(attempt, 64)))

    def delay(self, attempt: int) -> float:
        """Full-jitter delay after failed attempt ``attempt``: ``uniform(0, ceiling)``."""
        return self.rng.uniform(0.0, self.ceiling(attempt))

    @property
    def effective_cycle_interval(self) -> float:
        """Wait after a cycle of ``max_attempts`` failures, seconds."""
        return self.max_delay if self.cycle_interval is None else self.cycle_interval

    @property
    def effective_permanent_delay(self) -> float:
        """Wait after a permanent error, seconds."""
        if self.permanent_delay is not None:
            return self.permanent_delay
        return max(self.max_delay, self.effective_cycle_interval)


class RetrySchedule:
    """Retry state of one upload target, driven by a non-blocking loop.

    Usage in the uploader loop::

        if backoff.ready(now):
            try:
                deliver(...)
            except PermanentSinkError as exc:
                backoff.on_failure(now, permanent=True)
            except TransientSinkError:
                backoff.on_failure(now)
            else:
                backoff.on_success()
        timeout = backoff.next_attempt_at(now) - now   # for selectors.select()

    All times are the caller's clock (use ``time.monotonic()``).
    """

    def __init__(self, policy: RetryPolicy) -> None:
        """Start ready: the first attempt may happen at once."""
        self.policy = policy
        #: Consecutive failed attempts in the current cycle.
        self.attempts = 0
        #: Completed cycles (each ``max_attempts`` failures) since the last success.
        self.cycles = 0
        #: Whether the last failure was permanent.
        self.permanent = False
        self._not_before = float("-inf")

    def ready(self, now: float) -> bool:
        """Whether an attempt may start at ``now``."""
        return now >= self._not_before

    def next_attempt_at(self, now: float) -> float:
        """Earliest time of the next attempt: ``now`` if already ready."""
        return max(now, self._not_before)

    def on_success(self) -> None:
        """Reset after a successful attempt: the next one may start at once."""
        self.attempts = 0
        self.cycles = 0
        self.permanent = False
        self._not_before = float("-inf")

    def on_failure(self, now: float, *, permanent: bool = False) -> float:
        """Record a failed attempt at ``now`` and return the time of the next one."""
        policy = self.policy
        self.permanent = permanent
        if permanent:
            # Fast retries cannot fix a missing bucket; the slow cadence still
            # picks up an operator's fix without a restart.
            self.attempts = 0
            delay = policy.effective_permanent_delay
        else:
            attempt = self.attempts
            self.attempts += 1
            if self.attempts >= policy.max_attempts:
                self.attempts = 0
                self.cycles += 1
                delay = policy.effective_cycle_interval
                logger.debug(
                    "upload cycle %d ended after %d attempts; next try in %.1fs",
                    self.cycles,
                    policy.max_attempts,
                    delay,
                )
            else:
                delay = policy.delay(attempt)
        self._not_before = now + delay
        return self._not_before
