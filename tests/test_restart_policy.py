"""The supervision decisions on their own: observations in, decisions out, nothing forked.

tests/test_supervisor.py checks the same decisions through a real agent
(SIGKILL, SIGSTOP, a leak, a crash loop); here each rule and its edges, with
the clock given by the test.
"""

from __future__ import annotations

import signal

import pytest

from edge_actors.restart_policy import (
    GiveUp,
    Intensity,
    Kill,
    Restart,
    RestartBackoff,
    RestartPolicy,
    Stopped,
    WorkerLife,
    describe_exit,
)

GRACE = 1.0
HB = 2.0
STARTUP = 120.0


def _policy(max_restarts: int = 5, period: float = 60.0) -> RestartPolicy:
    return RestartPolicy(
        heartbeat_timeout=HB,
        startup_timeout=STARTUP,
        stop_grace=GRACE,
        shutdown_timeout=10.0,
        max_restarts=max_restarts,
        period_seconds=period,
        backoff_initial=0.5,
        backoff_max=4.0,
        stable_seconds=30.0,
    )


def _running(policy: RestartPolicy, now: float = 100.0) -> WorkerLife:
    w = policy.new_life("drift", enabled=True)
    w.started(now)
    w.became_ready(now)
    return w


def test_new_workers_wait_to_start_and_disabled_ones_never_do() -> None:
    policy = _policy()
    assert policy.new_life("sampler", enabled=True).state == "stopped"
    off = policy.new_life("drift", enabled=False)
    assert off.state == "disabled" and not policy.start_due(off, 1e9)


def test_a_crash_is_restarted_after_a_growing_backoff() -> None:
    policy = _policy(max_restarts=10)
    w = _running(policy)
    delays = []
    now = 100.0
    for _ in range(5):
        now += 1.0  # each run is short of stable_seconds
        d = policy.on_exit(w, 3, now, shutting_down=False)
        assert isinstance(d, Restart) and d.reason == "exit" and d.how == "exit code 3"
        assert w.state == "backoff" and w.next_start_at == now + d.delay
        assert not policy.start_due(w, now + d.delay - 0.01)
        assert policy.start_due(w, now + d.delay)
        delays.append(d.delay)
        w.started(now + d.delay)
        now += d.delay
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert w.restarts == 5 and w.reasons == {"exit": 5}
    assert list(w.last_exits)[-1] == "exit: exit code 3 after 1.0s"
    # A worker that ran for stable_seconds starts over at the initial delay.
    d = policy.on_exit(w, 0, now + 31.0, shutting_down=False)
    assert isinstance(d, Restart) and d.delay == 0.5 and d.reason == "exit"


def test_a_signal_is_its_own_reason() -> None:
    policy = _policy()
    w = _running(policy)
    d = policy.on_exit(w, -signal.SIGSEGV, 101.5, shutting_down=False)
    assert isinstance(d, Restart)
    assert (d.reason, d.how, d.ran_for) == ("signal", "killed by SIGSEGV", 1.5)
    assert describe_exit(-99) == "killed by signal 99"


def test_a_silent_worker_is_killed_after_the_heartbeat_timeout() -> None:
    policy = _policy()
    w = _running(policy)
    w.heard(110.0)
    assert policy.check_heartbeat(w, 110.0 + HB) is None  # at the limit: not yet
    assert policy.check_heartbeat(w, 110.0 + HB + 0.1) == Kill("heartbeat", pytest.approx(2.1), HB)
    # Until it is ready, setup (loading a reference) gets the startup timeout.
    fresh = policy.new_life("drift", enabled=True)
    fresh.started(0.0)
    assert policy.check_heartbeat(fresh, STARTUP - 1) is None
    assert policy.check_heartbeat(fresh, STARTUP + 1) == Kill("heartbeat", STARTUP + 1, STARTUP)
    # A worker already stopping is not watched: its stop deadline is.
    w.state = "stopping"
    assert policy.check_heartbeat(w, 1e6) is None


def test_the_kill_reason_becomes_the_restart_reason() -> None:
    policy = _policy()
    w = _running(policy)
    kill = policy.check_heartbeat(w, 200.0)
    assert kill is not None
    w.killed(kill.reason)
    d = policy.on_exit(w, -signal.SIGKILL, 200.0, shutting_down=False)
    assert isinstance(d, Restart) and d.reason == "heartbeat" and d.how == "killed by SIGKILL"
    assert w.reasons == {"heartbeat": 1}
    w.started(300.0)
    assert w.stop_reason == "" and not w.ready and w.state == "starting"


def test_over_memory_is_asked_to_stop_then_killed_at_the_grace_deadline() -> None:
    policy = _policy()
    w = _running(policy)
    limit_mb = 50.0
    assert not policy.check_memory(w, 50 * 2**20, limit_mb, 120.0)  # at the budget: fine
    assert policy.check_memory(w, 50 * 2**20 + 1, limit_mb, 120.0)
    assert (w.state, w.stop_reason, w.kill_at) == ("stopping", "memory", 120.0 + GRACE)
    # Asked once: another reading over the budget does not restart the deadline.
    assert not policy.check_memory(w, 2**40, limit_mb, 120.5)
    assert policy.check_deadline(w, 120.0 + GRACE - 0.01) is None
    assert policy.check_deadline(w, 120.0 + GRACE) == Kill("memory")
    assert w.kill_at == 0.0 and policy.check_deadline(w, 1e6) is None  # killed once
    d = policy.on_exit(w, -signal.SIGKILL, 121.0, shutting_down=False)
    assert isinstance(d, Restart) and d.reason == "memory"


def test_a_worker_that_stops_by_itself_within_the_grace_is_not_killed() -> None:
    policy = _policy()
    w = _running(policy)
    policy.check_memory(w, 2**40, 1.0, 120.0)
    d = policy.on_exit(w, 0, 120.5, shutting_down=False)
    assert isinstance(d, Restart) and d.reason == "memory" and d.how == "exit code 0"
    w.started(121.0)
    assert policy.check_deadline(w, 1e6) is None


def test_a_requested_restart_is_immediate_and_not_counted_against_intensity() -> None:
    policy = _policy(max_restarts=1)
    w = _running(policy)
    for k in range(5):
        now = 100.0 + k
        policy.stop(w, "requested", now)
        assert w.kill_at == now + GRACE
        d = policy.on_exit(w, 0, now + 0.1, shutting_down=False)
        ran = 0.1 if k == 0 else 1.0  # since its previous start
        assert d == Restart("requested", "exit code 0", pytest.approx(ran), 0.0)
        assert w.state == "backoff" and policy.start_due(w, now + 0.1)
        w.started(now + 0.1)
        w.became_ready(now + 0.1)
    assert w.reasons == {"requested": 5} and w.restarts == 5
    # A requested stop that hangs is killed at the deadline, reason kept.
    policy.stop(w, "requested", 200.0)
    assert policy.check_deadline(w, 200.0 + GRACE) == Kill("requested")


def test_restart_intensity_exceeded_gives_up() -> None:
    policy = _policy(max_restarts=2, period=10.0)
    a, b = _running(policy), _running(policy)
    assert isinstance(policy.on_exit(a, 1, 101.0, shutting_down=False), Restart)
    assert isinstance(policy.on_exit(b, 1, 102.0, shutting_down=False), Restart)
    d = policy.on_exit(a, 1, 103.0, shutting_down=False)  # third in 10 s, any worker
    assert isinstance(d, GiveUp) and d.restart.reason == "exit"
    assert a.state == "stopped" and not policy.start_due(a, 1e9)
    assert d.message == (
        "giving up: more than 2 restarts in 10s; last: drift "
        "(exit: exit code 1 after 1.0s; exit: exit code 1 after 3.0s)"
    )


def test_restarts_older_than_the_period_are_forgotten() -> None:
    intensity = Intensity(max_restarts=2, period_seconds=10.0)
    assert not intensity.record(0.0)
    assert not intensity.record(5.0)
    assert not intensity.record(10.5)  # the one at 0.0 left the window
    assert intensity.record(11.0)


def test_exits_while_stopping_are_not_restarts() -> None:
    policy = _policy(max_restarts=1)
    w = _running(policy)
    deadline = policy.shutdown(w, 500.0)
    assert w.state == "stopping" and deadline == 510.0
    assert policy.on_exit(w, 0, 501.0, shutting_down=True) == Stopped("exit code 0")
    assert w.state == "stopped" and w.restarts == 0 and not w.reasons
    # The supervisor shuts down while a memory stop is under way: still no restart.
    m = _running(policy)
    policy.check_memory(m, 2**40, 1.0, 500.0)
    assert policy.on_exit(m, -signal.SIGKILL, 501.0, shutting_down=True) == Stopped(
        "killed by SIGKILL"
    )
    assert m.restarts == 0


def test_backoff_caps_and_resets() -> None:
    b = RestartBackoff(initial=1.0, maximum=5.0, stable_seconds=10.0)
    assert [b.on_exit(0.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.on_exit(10.0) == 1.0
