"""When to restart a worker, and when to give up (OTP-style intensity/period).

A crashed worker is restarted after a capped exponential backoff; the backoff
resets once the worker has run for ``stable_seconds``. If the supervisor as a
whole restarts more than ``max_restarts`` workers within ``period_seconds``, it
stops: a crash loop is better handled one level up (systemd restarts the whole
agent, an operator gets paged) than by spinning here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartBackoff:
    """Restart delay of one worker."""

    initial: float
    maximum: float
    stable_seconds: float
    failures: int = 0

    def on_exit(self, ran_for: float) -> float:
        """Record an exit after ``ran_for`` seconds of uptime; return the delay before restart."""
        if ran_for >= self.stable_seconds:
            self.failures = 0
        self.failures += 1
        return float(min(self.maximum, self.initial * 2.0 ** (self.failures - 1)))


@dataclass
class Intensity:
    """Counts restarts in a sliding window; :meth:`record` says when to give up."""

    max_restarts: int
    period_seconds: float
    _times: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> bool:
        """Record a restart at ``now``; True if the limit is now exceeded."""
        self._times.append(now)
        while self._times and self._times[0] < now - self.period_seconds:
            self._times.popleft()
        return len(self._times) > self.max_restarts

