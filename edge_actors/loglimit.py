"""Rate-limited logging for problems that recur every few hundred milliseconds."""

from __future__ import annotations

import logging
import time
from collections import Counter


class LogLimiter:
    """Says a recurring problem once per ``interval``, with how often it happened meanwhile.

    A producer retries every 0.2 s; a full /dev/shm must not write a log line
    each time (journald rate-limits a unit that floods, losing other lines).
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.interval = interval
        self._log = logger
        self._last: dict[str, float] = {}
        self._hidden: Counter[str] = Counter()

    def log(self, key: str, level: int, msg: str, *args: object) -> None:
        """Log ``msg`` under ``key`` unless it was logged less than ``interval`` ago."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._hidden[key] += 1
            return
        hidden = self._hidden.pop(key, 0)
        if hidden:
            msg += f" ({hidden} more like this in the last {now - last:.0f}s)"  # type: ignore[operator]
        self._last[key] = now
        self._log.log(level, msg, *args)
