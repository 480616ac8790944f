"""When to kill a worker, when to restart it, and when to give up (OTP-style intensity/period).

The supervisor's decisions, apart from its mechanism (fork, kill, sockets):
each worker's :class:`WorkerLife` says where it is in its life, and a
:class:`RestartPolicy` turns what the supervisor observes (an exit status, a
heartbeat's age, a memory reading, the time) into a decision the supervisor
carries out. Nothing here forks, signals or reads a clock.

- A worker silent past ``heartbeat_timeout_seconds`` (``STARTUP_TIMEOUT`` until
  it is ready) is killed: reason ``heartbeat``.
- A worker over its memory budget is asked to stop (reason ``memory``) and
  killed if it has not exited ``stop_grace_seconds`` later; so is one whose
  restart was requested (reason ``requested``).
- A crashed worker (reason ``exit`` or ``signal``, or the kill's reason) is
  restarted after a capped exponential backoff, reset once the worker has run
  for ``stable_seconds``. A requested restart is immediate and not counted.
- If the supervisor as a whole restarts more than ``max_restarts`` workers
  within ``period_seconds``, it gives up: a crash loop is better handled one
  level up (systemd restarts the whole agent, an operator gets paged) than by
  spinning here.
"""

from __future__ import annotations

import signal
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

#: Where a worker is: ``backoff`` waits for its restart, ``disabled`` never runs.
WorkerState = Literal["starting", "running", "stopping", "backoff", "stopped", "disabled"]
#: Why the supervisor stopped or killed a worker ('' if it did not).
StopReason = Literal["", "heartbeat", "memory", "requested", "stop_timeout"]
#: Why a worker was restarted (``restart_reasons`` in ``status``; docs/operations.md).
RestartReason = Literal["exit", "signal", "heartbeat", "memory", "requested", "stop_timeout"]


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


@dataclass
class WorkerLife:
    """One worker's life as the policy sees it: no pid, no socket."""

    name: str
    backoff: RestartBackoff
    state: WorkerState = "stopped"
    ready: bool = False
    started_at: float = 0.0
    last_hb: float = 0.0
    #: When a worker in ``backoff`` may start again.
    next_start_at: float = 0.0
    #: When a worker asked to stop is killed (0: no deadline).
    kill_at: float = 0.0
    stop_reason: StopReason = ""
    restarts: int = 0
    reasons: Counter[RestartReason] = field(default_factory=Counter)
    last_exits: deque[str] = field(default_factory=lambda: deque(maxlen=5))

    @property
    def live(self) -> bool:
        """Whether it is (or should be) working: heartbeats and memory are watched."""
        return self.state in ("starting", "running")

    def started(self, now: float) -> None:
        """A new process runs for this worker since ``now``; it is not ready yet."""
        self.state = "starting"
        self.started_at = self.last_hb = now
        self.ready, self.stop_reason, self.kill_at = False, "", 0.0

    def became_ready(self, now: float) -> None:
        """It said ``ready``."""
        self.ready, self.state, self.last_hb = True, "running", now

    def heard(self, now: float) -> None:
        """It sent a heartbeat (or said it stopped)."""
        self.last_hb = now

    def killed(self, reason: StopReason) -> None:
        """It is being killed for ``reason``; a reason given earlier (its stop's) is kept."""
        self.stop_reason = self.stop_reason or reason


@dataclass(frozen=True)
class Stopped:
    """It exited because it was told to: not restarted."""

    how: str


@dataclass(frozen=True)
class Restart:
    """Start it again ``delay`` seconds from now."""

    reason: RestartReason
    how: str
    ran_for: float
    delay: float


@dataclass(frozen=True)
class GiveUp:
    """Too many restarts: stop the whole supervisor (exit code ``EXIT_GAVE_UP``)."""

    restart: Restart
    message: str


@dataclass(frozen=True)
class Kill:
    """SIGKILL it now.

    ``silent_for``/``limit`` are set for a hung worker (``heartbeat``); else it
    outlived the deadline of a stop it was asked for.
    """

    reason: StopReason
    silent_for: float = 0.0
    limit: float = 0.0


def describe_exit(code: int) -> str:
    """``exit code N`` or ``killed by SIGx`` for a ``waitstatus_to_exitcode`` value."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class RestartPolicy:
    """The supervision decisions for every worker of one supervisor (one intensity window)."""

    def __init__(
        self,
        *,
        heartbeat_timeout: float,
        startup_timeout: float,
        stop_grace: float,
        shutdown_timeout: float,
        max_restarts: int,
        period_seconds: float,
        backoff_initial: float,
        backoff_max: float,
        stable_seconds: float,
    ) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.shutdown_timeout = shutdown_timeout
        self.max_restarts = max_restarts
        self.period_seconds = period_seconds
        self.intensity = Intensity(max_restarts, period_seconds)
        self._backoff = (backoff_initial, backoff_max, stable_seconds)

    def new_life(self, name: str, *, enabled: bool) -> WorkerLife:
        """A worker not started yet (or never, if disabled), with its own backoff."""
        return WorkerLife(
            name, RestartBackoff(*self._backoff), state="stopped" if enabled else "disabled"
        )

    # ------------------------------------------------------------ decisions
    def start_due(self, w: WorkerLife, now: float) -> bool:
        """Whether a worker waiting in ``backoff`` should start now."""
        return w.state == "backoff" and now >= w.next_start_at

    def start_failed(self, w: WorkerLife, now: float) -> None:
        """It could not be forked (EMFILE, EAGAIN): try again in a second."""
        w.next_start_at = now + 1.0

    def check_heartbeat(self, w: WorkerLife, now: float) -> Kill | None:
        """Kill a live worker silent for longer than its limit (hung, or stopped by SIGSTOP)."""
        if not w.live:
            return None
        limit = (
            self.heartbeat_timeout if w.ready else max(self.heartbeat_timeout, self.startup_timeout)
        )
        silent = now - w.last_hb
        return Kill("heartbeat", silent, limit) if silent > limit else None

    def check_memory(self, w: WorkerLife, used: int, limit_mb: float, now: float) -> bool:
        """Whether a worker using ``used`` bytes is asked to stop now (reason ``memory``)."""
        if used > limit_mb * 2**20 and not w.stop_reason:
            self.stop(w, "memory", now)
            return True
        return False

    def stop(self, w: WorkerLife, reason: StopReason, now: float) -> None:
        """Ask it to stop for ``reason``; it is killed if still there ``stop_grace`` later."""
        w.stop_reason, w.state = reason, "stopping"
        w.kill_at = now + self.stop_grace

    def check_deadline(self, w: WorkerLife, now: float) -> Kill | None:
        """Kill a worker that outlived the deadline of the stop it was asked for."""
        if w.kill_at and now >= w.kill_at:
            w.kill_at = 0.0
            return Kill(w.stop_reason or "stop_timeout")
        return None

    def shutdown(self, w: WorkerLife, now: float) -> float:
        """The supervisor stops: ``w`` is told to; returns when it is killed (``stop_timeout``)."""
        w.state = "stopping"
        return now + self.shutdown_timeout

    def on_exit(
        self, w: WorkerLife, code: int, now: float, *, shutting_down: bool
    ) -> Stopped | Restart | GiveUp:
        """It exited with ``code`` (negative: killed by that signal) at ``now``."""
        ran = now - w.started_at
        how = describe_exit(code)
        if shutting_down or (w.state == "stopping" and not w.stop_reason):
            w.state = "stopped"
            return Stopped(how)
        reason: RestartReason = w.stop_reason or ("signal" if code < 0 else "exit")
        w.reasons[reason] += 1
        w.last_exits.append(f"{reason}: {how} after {ran:.1f}s")
        w.restarts += 1
        if reason == "requested":
            # Asked for (reload, tests): not a failure, no backoff, no intensity.
            w.state, w.next_start_at = "backoff", now
            return Restart(reason, how, ran, 0.0)
        restart = Restart(reason, how, ran, w.backoff.on_exit(ran))
        if self.intensity.record(now):
            w.state = "stopped"
            return GiveUp(
                restart,
                f"giving up: more than {self.max_restarts} restarts in "
                f"{self.period_seconds:g}s; last: {w.name} ({'; '.join(w.last_exits)})",
            )
        w.state = "backoff"
        w.next_start_at = now + restart.delay
        return restart
