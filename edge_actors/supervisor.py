"""The supervisor: owns the rings, runs the workers, restarts them, serves the control socket.

One process, one thread, one ``select`` loop over: the control socket and its
clients, each worker's control channel, and a self-pipe that signals
(SIGTERM, SIGINT, SIGCHLD) write to. Nothing here imports scipy or boto3.

Restart reasons: ``exit`` (non-zero exit code), ``signal`` (killed by a
signal it did not ask for), ``heartbeat`` (silent past
``heartbeat_timeout_seconds``: hung or stopped), ``memory`` (over
``memory_limit_mb``). See docs/operations.md.

This module is the mechanism: when to stop, kill, restart or give up is
decided by :mod:`edge_actors.restart_policy`, and the producers' lanes are
kept by :mod:`edge_actors.lanes`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import resource
import selectors
import signal
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from edge_actors import control, rundir, shm, spill, topology
from edge_actors.config import Config
from edge_actors.lanemodel import LaneModel, default_model
from edge_actors.lanemodel import resolve as resolve_model
from edge_actors.lanes import PID_MAX, Changed, Lane, LaneRegistry, discard
from edge_actors.loglimit import LogLimiter
from edge_actors.procmem import MemoryGauge, rss_of
from edge_actors.restart_policy import GiveUp, RestartPolicy, Stopped, StopReason, WorkerLife
from edge_actors.ring import Ring
from edge_actors.roster import WORKER_NAMES
from edge_actors.schema import with_reference_fields
from edge_actors.sdnotify import Notifier
from edge_actors.topology import RingSpec
from edge_actors.workers.base import EXIT_CRASH, MAX_PACKET, child_main

log = logging.getLogger(__name__)

#: Exit code when the restart intensity was exceeded (systemd should restart us).
EXIT_GAVE_UP = 3
#: A worker gets this long to send "ready" after start (setup may load references).
#: Generous like systemd's 90 s start timeout: on a loaded or ARMv6 board, importing
#: numpy and calibrating the drift thresholds takes tens of seconds, and a worker
#: killed before it is ready starts over (docs/operations.md#boards).
STARTUP_TIMEOUT = 120.0
TICK = 0.25
#: The agent's own rings (sampler and drift output), made at start, adopted if left.
_OWN_RINGS = ("system", "procs", "events")
#: After EMFILE/ENFILE on accept, the listening socket is left alone this long.
ACCEPT_BACKOFF_SECONDS = 1.0
#: File descriptors kept for workers, pipes and /proc reads when capping clients.
FD_RESERVE = 64


#: ``starting`` until every enabled worker is ready, ``stopping`` once shutdown began.
SupervisorState = Literal["starting", "running", "stopping"]


class SupervisorError(RuntimeError):
    """The supervisor cannot start (already running, run dir unusable, ...)."""


@dataclass
class WorkerHandle:
    """What the supervisor knows about one worker slot."""

    name: str
    enabled: bool
    memory_limit_mb: float
    #: Its state, restarts and deadlines: what the restart policy decides on.
    life: WorkerLife
    pid: int = 0
    chan: socket.socket | None = None
    progress: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    memory_bytes: int = 0
    crash_on_start: bool = False
    paused: bool = False  # by the pause op; survives a restart of the worker


@dataclass
class Client:
    """One connection to the control socket."""

    sock: socket.socket
    pid: int = 0
    reader: control.LineReader = field(default_factory=control.LineReader)
    lane: str | None = None
    #: When it connected or last sent a complete request (idle timeout).
    last_request: float = 0.0


class Supervisor:
    """Runs one instance until stopped; ``run()`` returns the process exit code."""

    def __init__(self, cfg: Config, *, debug: bool = False) -> None:
        cfg = with_reference_fields(cfg)
        self.cfg = cfg
        self.debug = debug or os.environ.get("EDGE_ACTORS_DEBUG") == "1"
        self.instance = cfg.instance
        self.sock_path = control.socket_path(cfg.run_dir, cfg.instance)
        self.pid_path = Path(cfg.run_dir) / f"{cfg.instance}.pid"
        sc = cfg.supervisor
        self.policy = RestartPolicy(
            heartbeat_timeout=sc.heartbeat_timeout_seconds,
            startup_timeout=STARTUP_TIMEOUT,
            stop_grace=sc.stop_grace_seconds,
            shutdown_timeout=sc.shutdown_timeout_seconds,
            max_restarts=sc.max_restarts,
            period_seconds=sc.restart_period_seconds,
            backoff_initial=sc.restart_backoff_initial_seconds,
            backoff_max=sc.restart_backoff_max_seconds,
            stable_seconds=sc.restart_stable_seconds,
        )
        self.workers: dict[str, WorkerHandle] = {}
        for name in WORKER_NAMES:
            wc = cfg.workers.get(name)
            self.workers[name] = WorkerHandle(
                name=name,
                enabled=wc.enabled,
                memory_limit_mb=wc.memory_limit_mb,
                life=self.policy.new_life(name, enabled=wc.enabled),
            )
        self.rings: dict[str, Ring] = {}
        self.ring_kinds: dict[str, RingSpec] = {}
        readers = (("uploader", topology.UPLOADER), ("drift", topology.DRIFT))
        self.lanes: LaneRegistry[Client] = LaneRegistry(
            cfg, self.rings, [k for n, k in readers if self.workers[n].enabled]
        )
        self.clients: dict[int, Client] = {}
        self.sel = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self._pid_fd = -1
        self._wake_r = self._wake_w = -1
        self.stop_requested = ""
        self.exit_code = 0
        self.fatal_message = ""
        self.started = time.monotonic()
        self.ready_sent = False
        self.notifier = Notifier()
        self._next_watchdog = 0.0
        self._next_mem_check = 0.0
        self._next_status_note = 0.0
        self._memory = MemoryGauge()
        self.state: SupervisorState = "starting"
        self._run_fd = -1
        self._accept_paused_until = 0.0
        self._limited = LogLimiter(log)
        self.max_clients = sc.max_clients
        self._debug_raise = False

    # ================================================================ set-up
    def _prepare_run_dir(self) -> None:
        try:
            self._run_fd = rundir.prepare(self.cfg.run_dir)
        except rundir.RunDirError as exc:
            raise SupervisorError(str(exc)) from exc
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._pid_fd = os.open(self.pid_path.name, flags, 0o600, dir_fd=self._run_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SupervisorError(
                    f"lock file {self.pid_path} is a symbolic link: not following it; "
                    f"remove it and start again"
                ) from exc
            raise SupervisorError(f"cannot open lock file {self.pid_path}: {exc.strerror}") from exc
        st = os.fstat(self._pid_fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            os.close(self._pid_fd)
            self._pid_fd = -1
            raise SupervisorError(
                f"lock file {self.pid_path} is not a plain file of uid {os.geteuid()}; "
                f"remove it and start again"
            )
        try:
            fcntl.flock(self._pid_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            other = os.pread(self._pid_fd, 32, 0).decode(errors="replace").strip()
            os.close(self._pid_fd)
            self._pid_fd = -1
            raise SupervisorError(
                f"instance {self.instance!r} is already running (pid {other or '?'}); "
                f"lock file {self.pid_path}"
            ) from exc
        os.ftruncate(self._pid_fd, 0)
        os.pwrite(self._pid_fd, f"{os.getpid()}\n".encode(), 0)

    def _remove_untrusted_segments(self) -> None:
        """Remove segments of our names that another user made (or opened up); never adopt them.

        /dev/shm is world-writable: another uid can create ``ea_<instance>_evt``
        before we start, to have us upload its records or read ours.
        """
        for name in shm.list_names(topology.prefix(self.instance)):
            problem = shm.stat_problem(name)
            if not problem:
                continue
            try:
                shm.unlink(name)
            except OSError as exc:
                raise SupervisorError(
                    f"shared memory {name!r} {problem}, and cannot be removed ({exc.strerror}): "
                    f"it was not made by this agent; remove it as its owner or root "
                    f"(rm /dev/shm/{name}) and start again"
                ) from exc
            log.warning("shared memory %r %s: not adopting it; removed", name, problem)

    def _adopt_or_clean(self) -> None:
        """Re-adopt the segments a killed predecessor left; remove what cannot be used."""
        self._remove_untrusted_segments()
        for name in shm.list_names(topology.prefix(self.instance)):
            parsed = topology.parse_name(self.instance, name)
            # Lanes and payload rings: the registry; the agent's rings: _create_rings.
            if parsed is not None and parsed[0] not in ("lane", "payload", *_OWN_RINGS):
                shm.unlink(name)
        self.lanes.adopt()

    def _create_rings(self) -> None:
        for kind in _OWN_RINGS:
            name = topology.ring_name(self.instance, kind)
            try:
                ring = Ring.create(
                    name,
                    topology.dtype_for(kind, self.cfg),
                    topology.capacity_for(kind, self.cfg),
                    topology.consumers_for(kind),
                    adopt=True,
                )
            except OSError as exc:
                raise SupervisorError(str(exc)) from exc
            if ring.adopted:
                log.info("adopted ring %s (%d records written)", name, ring.write_seq)
            self.rings[name] = ring
            self.ring_kinds[name] = RingSpec(name, kind)
        used, budget = self.lanes.shm_in_use(), self.lanes.shm_budget()
        if used > budget:
            raise SupervisorError(
                f"supervisor.shm_budget_mb = {self.cfg.supervisor.shm_budget_mb:g} MB is less "
                f"than the agent's own rings need ({used / 2**20:.1f} MB): raise it"
            )

    def _listen(self) -> None:
        path = self.sock_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode):
                raise SupervisorError(f"{path} is a directory, not a socket: remove it")
            os.unlink(path)  # we hold the instance lock: whoever made it is gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600, no window with wider rights
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(old_umask)
        # No chmod: it would follow a symlink swapped in after bind. Check instead.
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            sock.close()
            raise SupervisorError(f"control socket {path} was replaced after it was created")
        sock.listen(128)
        sock.setblocking(False)
        self.listener = sock
        self.sel.register(sock, selectors.EVENT_READ, ("listen", None))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY and self.max_clients > soft - FD_RESERVE:
            self.max_clients = max(8, soft - FD_RESERVE)
            log.warning(
                "supervisor.max_clients = %d does not fit the open-file limit (%d): using %d "
                "(raise the limit, e.g. LimitNOFILE= in the systemd unit)",
                self.cfg.supervisor.max_clients,
                soft,
                self.max_clients,
            )

    def _install_signals(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._wake_r, self._wake_w = r, w
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self.sel.register(r, selectors.EVENT_READ, ("wake", None))

        def on_stop(signum: int, _frame: object) -> None:
            if not self.stop_requested:
                self.stop_requested = signal.Signals(signum).name

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop
        signal.signal(signal.SIGHUP, lambda *_: log.info("SIGHUP ignored (restart to reload)"))

    # ================================================================ workers
    def _inherited_fds(self, keep: socket.socket) -> list[int]:
        fds = [self._wake_r, self._wake_w, self._pid_fd, self._run_fd]
        if self.listener is not None:
            fds.append(self.listener.fileno())
        fds += [c.sock.fileno() for c in self.clients.values()]
        fds += [h.chan.fileno() for h in self.workers.values() if h.chan is not None]
        return [fd for fd in fds if fd >= 0 and fd != keep.fileno()]

    def _start_worker(self, h: WorkerHandle) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        close_fds = [*self._inherited_fds(child), parent.fileno()]
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # child
            if h.crash_on_start:
                os._exit(EXIT_CRASH)
            child_main(h.name, self.cfg, child, close_fds, me)
        child.close()
        now = time.monotonic()
        h.pid, h.chan, h.stats = pid, parent, {}
        h.life.started(now)
        self.sel.register(parent, selectors.EVENT_READ, ("worker", h))
        log.info("started %s (pid %d)", h.name, pid)
        self._send_rings(h)
        self._send_processes()

    def _send(self, h: WorkerHandle, msg: dict[str, Any]) -> None:
        if h.chan is None:
            return
        try:
            h.chan.send(json.dumps(msg).encode())
        except OSError:
            pass  # it is dying; the reaper will see it

    def _ring_specs(self) -> list[RingSpec]:
        """The rings every worker should have attached."""
        return [*self.ring_kinds.values(), *self.lanes.specs()]

    def _send_rings(self, h: WorkerHandle | None = None) -> None:
        targets = [h] if h is not None else list(self.workers.values())
        rings = [s.as_dict() for s in self._ring_specs()]
        for w in targets:
            self._send(w, {"cmd": "rings", "rings": rings})

    def _send_processes(self) -> None:
        sampler = self.workers["sampler"]
        if sampler.chan is None:
            return
        procs = {"supervisor": os.getpid()}
        procs.update({h.name: h.pid for h in self.workers.values() if h.pid})
        procs.update(self.lanes.producer_pids())
        self._send(sampler, {"cmd": "processes", "processes": procs})

    def _on_worker_readable(self, h: WorkerHandle) -> None:
        assert h.chan is not None
        while True:
            try:
                data = h.chan.recv(MAX_PACKET, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._drop_chan(h)
                return
            try:
                msg = json.loads(data)
            except ValueError:
                log.warning("%s sent an unreadable message", h.name)
                continue
            now = time.monotonic()
            kind = msg.get("type")
            if kind == "ready":
                h.life.became_ready(now)
                log.info("%s ready (pid %d)", h.name, h.pid)
                if h.paused:
                    self._send(h, {"cmd": "pause"})
            elif kind == "hb":
                h.life.heard(now)
                h.progress = int(msg.get("progress", 0))
                if "stats" in msg:
                    h.stats = msg["stats"]
            elif kind == "stopped":
                h.life.heard(now)

    def _drop_chan(self, h: WorkerHandle) -> None:
        if h.chan is not None:
            try:
                self.sel.unregister(h.chan)
            except (KeyError, ValueError):
                pass
            h.chan.close()
            h.chan = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for h in self.workers.values():
                if h.pid == pid:
                    self._on_exit(h, os.waitstatus_to_exitcode(status))
                    break

    def _on_exit(self, h: WorkerHandle, code: int) -> None:
        now = time.monotonic()
        self._drop_chan(h)
        self._memory.drop(h.pid)
        h.pid = 0
        decision = self.policy.on_exit(h.life, code, now, shutting_down=self.state == "stopping")
        if isinstance(decision, Stopped):
            log.info("%s stopped (%s)", h.name, decision.how)
            return
        restart = decision.restart if isinstance(decision, GiveUp) else decision
        if restart.reason == "requested":
            log.info("%s restarting on request", h.name)
            return
        log.warning(
            "%s %s after %.1fs (reason: %s); restart #%d in %.2fs",
            h.name,
            restart.how,
            restart.ran_for,
            restart.reason,
            h.life.restarts,
            restart.delay,
        )
        if isinstance(decision, GiveUp):
            self.fatal_message = decision.message
            log.error("%s", self.fatal_message)
            self.exit_code = EXIT_GAVE_UP
            if not self.stop_requested:
                self.stop_requested = "restart intensity exceeded"

    def _kill(self, h: WorkerHandle, reason: StopReason) -> None:
        if h.pid:
            h.life.killed(reason)
            try:
                os.kill(h.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _check_workers(self, now: float) -> None:
        for h in self.workers.values():
            if self.policy.start_due(h.life, now) and not self.stop_requested:
                try:
                    self._start_worker(h)
                except OSError as exc:  # EMFILE, EAGAIN (fork): try again shortly
                    self._limited.log(
                        f"start_{h.name}", logging.ERROR, "cannot start %s: %s", h.name, exc
                    )
                    self.policy.start_failed(h.life, now)
            elif h.pid and (hung := self.policy.check_heartbeat(h.life, now)):
                log.error(
                    "%s (pid %d) silent for %.1fs (limit %.1fs): killing",
                    h.name,
                    h.pid,
                    hung.silent_for,
                    hung.limit,
                )
                self._kill(h, hung.reason)
            if h.pid and (overdue := self.policy.check_deadline(h.life, now)):
                log.error("%s did not stop within the grace period: SIGKILL", h.name)
                self._kill(h, overdue.reason)

    def _memory_of(self, pid: int, limit_mb: float) -> int:
        metric = self.cfg.supervisor.memory_metric
        if metric == "rss":
            return rss_of(pid)
        # The gauge walks smaps_rollup (ms per worker) only when RSS cannot prove the budget.
        mem = self._memory.read(pid, limit_mb * 2**20)
        return mem.pss if metric == "pss" else mem.uss

    def _check_memory(self, now: float) -> None:
        for h in self.workers.values():
            if not h.pid or not h.life.live:
                continue
            try:
                h.memory_bytes = self._memory_of(h.pid, h.memory_limit_mb)
            except (psutil.Error, OSError):
                continue
            if self.policy.check_memory(h.life, h.memory_bytes, h.memory_limit_mb, now):
                log.error(
                    "%s (pid %d) uses %.1f MB %s, over its %.0f MB budget: stopping it",
                    h.name,
                    h.pid,
                    h.memory_bytes / 2**20,
                    self.cfg.supervisor.memory_metric.upper(),
                    h.memory_limit_mb,
                )
                self._send(h, {"cmd": "stop"})
        # Forget process handles of pids that are gone.
        live = {h.pid for h in self.workers.values()}
        self._memory.forget(live)

    # ================================================================ clients
    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(exc)
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                log.warning("accept on the control socket failed: %s", exc)
                return
            uid = control.peer_uid(sock)
            if uid is not None and uid != os.getuid():
                log.warning("refused a control connection from uid %d", uid)
                try:
                    sock.sendall(control.encode({"ok": False, "error": "permission denied"}))
                except OSError:
                    pass
                sock.close()
                continue
            if len(self.clients) >= self.max_clients:
                self._limited.log(
                    "max_clients",
                    logging.WARNING,
                    "refused a control connection: %d open, supervisor.max_clients = %d",
                    len(self.clients),
                    self.max_clients,
                )
                error = (
                    f"too many control connections (supervisor.max_clients = {self.max_clients})"
                )
                try:
                    sock.send(control.encode({"ok": False, "error": error}), socket.MSG_DONTWAIT)
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            c = Client(sock, pid=control.peer_pid(sock) or 0, last_request=time.monotonic())
            self.clients[sock.fileno()] = c
            self.sel.register(sock, selectors.EVENT_READ, ("client", c))

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors: leave the listener alone a while, keep serving the rest.

        Polling it again at once would spin (it stays readable); connections
        wait in the backlog meanwhile, and idle clients time out to free room.
        """
        if self.listener is not None and self._accept_paused_until == 0.0:
            self.sel.unregister(self.listener)
        self._accept_paused_until = time.monotonic() + ACCEPT_BACKOFF_SECONDS
        self._limited.log(
            "accept_fds",
            logging.ERROR,
            "out of file descriptors (%s) with %d control connections: not accepting new ones "
            "for %.0fs; raise the open-file limit (LimitNOFILE=) or lower supervisor.max_clients",
            exc.strerror,
            len(self.clients),
            ACCEPT_BACKOFF_SECONDS,
        )

    def _check_clients(self, now: float) -> None:
        """Resume accepting after a pause; close connections that hold no lane and say nothing."""
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            if self.listener is not None:
                self.sel.register(self.listener, selectors.EVENT_READ, ("listen", None))
        timeout = self.cfg.supervisor.client_idle_timeout_seconds
        for c in list(self.clients.values()):
            if c.lane is None and now - c.last_request > timeout:
                log.debug("closing idle control connection (pid %d)", c.pid)
                self._close_client(c)

    def _close_client(self, c: Client) -> None:
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        self.clients.pop(c.sock.fileno(), None)
        c.sock.close()
        self.lanes.release(c)

    def _on_client_readable(self, c: Client) -> None:
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_client(c)
            return
        try:
            lines = c.reader.feed(data)
            for line in lines:
                c.last_request = time.monotonic()
                reply = self._handle_request(c, control.decode(line))
                c.sock.sendall(control.encode(reply))
        except (ValueError, OSError) as exc:
            self._refuse(c, f"bad request: {exc}")
        except Exception as exc:  # one client's request must never stop the agent
            log.error("control request from pid %d failed", c.pid, exc_info=True)
            self._refuse(c, f"internal error: {type(exc).__name__}")

    def _refuse(self, c: Client, error: str) -> None:
        """Answer ``error`` and close the connection (a protocol violation or a failure)."""
        try:
            c.sock.sendall(control.encode({"ok": False, "error": error}))
        except OSError:
            pass
        self._close_client(c)

    def _handle_request(self, c: Client, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "status":
            return {"ok": True, "status": self.status()}
        if op == "stop":
            if not self.stop_requested:
                self.stop_requested = "stop requested"
            return {"ok": True}
        if op == "lane":
            if self.stop_requested:
                return {"ok": False, "error": "supervisor is shutting down"}
            # SO_PEERCRED's pid first: it is the kernel's word, in our pid namespace.
            pid = c.pid or msg.get("pid")
            prefer = msg.get("prefer")
            model = resolve_model(
                self.cfg,
                msg.get("model"),
                msg.get("version"),
                _list(msg.get("inputs")),
                _list(msg.get("outputs")),
            )
            if isinstance(model, str):
                return {"ok": False, "error": model, "permanent": True}
            return self._give_lane(
                c,
                pid if isinstance(pid, int) and 0 < pid <= PID_MAX else 0,
                prefer if isinstance(prefer, str) else None,
                msg.get("payload") is True,
                model,
            )
        if op == "restart":
            h = self.workers.get(str(msg.get("worker")))
            if h is None or not h.pid:
                return {"ok": False, "error": f"no running worker {msg.get('worker')!r}"}
            # A clean stop, then the normal restart path (reason "requested").
            self.policy.stop(h.life, "requested", time.monotonic())
            self._send(h, {"cmd": "stop"})
            return {"ok": True, "pid": h.pid}
        if op in ("flush", "pause", "resume"):
            return self._worker_command(str(op), msg)
        if op == "debug" and self.debug:
            return self._debug(msg)
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _worker_command(self, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        """``flush``: the uploader moves the rings to the outbox and ships at once.

        ``pause``/``resume`` a worker's work: the sampler stops sampling, the
        uploader stops shipping (it keeps moving the rings into the outbox, so
        nothing is lost). Remembered across a restart of the worker.
        """
        name = "uploader" if op == "flush" else str(msg.get("worker"))
        if op != "flush" and name not in ("sampler", "uploader"):
            return {"ok": False, "error": f"{op}: only sampler and uploader, not {name!r}"}
        h = self.workers.get(name)
        if h is None or not h.enabled:
            return {"ok": False, "error": f"worker {name!r} is disabled"}
        if op != "flush":
            h.paused = op == "pause"
        elif h.chan is None:
            return {"ok": False, "error": f"the uploader is not running ({h.life.state})"}
        if h.chan is not None:
            self._send(h, {"cmd": op, "batch_id": str(msg.get("batch_id") or "")})
        return {"ok": True, "worker": name}

    def _debug(self, msg: dict[str, Any]) -> dict[str, Any]:
        if msg.get("action") == "raise":  # tests: a bug in the supervisor's own loop
            self._debug_raise = True
            return {"ok": True}
        h = self.workers.get(str(msg.get("worker")))
        if h is None:
            return {"ok": False, "error": "unknown worker"}
        if msg.get("action") == "crash_on_start":
            h.crash_on_start = bool(msg.get("value", True))
            return {"ok": True}
        self._send(h, {"cmd": "debug", **msg})
        return {"ok": True, "pid": h.pid}

    # ================================================================== lanes
    def _lane_reply(self, lane: Lane[Client]) -> dict[str, Any]:
        model = lane.model or default_model(self.cfg)
        return {
            "ok": True,
            "lane": lane.ring.name,
            "capacity": lane.ring.capacity,
            "epoch": lane.ring.epoch,
            "model": model.name,
            "version": model.version,
            "width": topology.n_model_values(self.cfg),
            "inputs": [f.to_wire() for f in model.inputs],
            "outputs": [f.to_wire() for f in model.outputs],
            "payload": lane.payload.name if lane.payload is not None else None,
            "payload_slot_bytes": self.cfg.model_logging.payload_slot_bytes,
        }

    def _give_lane(
        self, c: Client, pid: int, prefer: str | None, payload: bool, model: LaneModel | None = None
    ) -> dict[str, Any]:
        lane, error, changed = self.lanes.give(c, pid, prefer, payload, model)
        self._announce(changed)
        if error or lane is None:
            return {"ok": False, "error": error}
        return self._lane_reply(lane)

    def _announce(self, changed: Changed) -> None:
        """Tell the workers what a lane change means for them."""
        if changed == "rings":
            self._send_rings()
        if changed != "nothing":
            self._send_processes()

    # ------------------------------------------------------- header validity
    def _check_headers(self) -> None:
        """Remove and report every lane whose header changed since it was attached."""
        bad = self.lanes.invalidate_scribbled()
        for lane in bad:
            if lane.client is not None:
                self._close_client(lane.client)
        if bad:
            self._announce("rings")

    def _check_lanes(self, now: float) -> None:
        self._check_headers()
        self._announce(self.lanes.sweep(now))

    # ================================================================= status
    def status(self) -> dict[str, Any]:
        """Everything ``edge-actors status`` shows."""
        self._check_headers()  # never report (or index with) a scribbled header
        now = time.monotonic()
        workers = {}
        for h in self.workers.values():
            workers[h.name] = {
                "pid": h.pid or None,
                "state": h.life.state,
                "uptime_s": round(now - h.life.started_at, 1) if h.pid else None,
                "restarts": h.life.restarts,
                "restart_reasons": dict(h.life.reasons),
                "last_exit": h.life.last_exits[-1] if h.life.last_exits else None,
                "memory_mb": round(h.memory_bytes / 2**20, 1) if h.pid else None,
                "memory_limit_mb": h.memory_limit_mb,
                "memory_metric": self.cfg.supervisor.memory_metric,
                "heartbeat_age_s": round(now - h.life.last_hb, 2) if h.pid else None,
                "progress": h.progress,
                "paused": h.paused,
                "stats": h.stats,
            }
        rings = []
        for name, ring in self.rings.items():
            problem = ring.header_problem()
            entry = {"kind": self.ring_kinds[name].kind, **ring.stats()}
            rings.append({**entry, "problem": problem} if problem else entry)
        rings += self.lanes.status_rings()
        return {
            "instance": self.instance,
            "device_id": self.cfg.device_id,
            "pid": os.getpid(),
            "state": self.state,
            "uptime_s": round(now - self.started, 1),
            "workers": workers,
            "rings": rings,
            "producers": self.lanes.producers(),
            "invalid_lanes": list(self.lanes.invalid),
            "control_connections": len(self.clients),
            "shm_mb": round(self.lanes.shm_in_use() / 2**20, 1),
            "shm_budget_mb": self.cfg.supervisor.shm_budget_mb,
        }

    def _status_line(self) -> str:
        parts = []
        for h in self.workers.values():
            if h.enabled:
                r = h.life.restarts
                parts.append(f"{h.name}={h.life.state}" + (f"({r}r)" if r else ""))
        return f"{len(self.lanes)} producers; " + " ".join(parts)

    # =================================================================== loop
    def _tick(self, now: float) -> None:
        if self._debug_raise:
            raise RuntimeError("debug: raise requested")
        self._check_workers(now)
        self._check_clients(now)
        if now >= self._next_mem_check:
            self._next_mem_check = now + self.cfg.supervisor.memory_check_interval_seconds
            self._check_memory(now)
        self._check_lanes(now)
        if not self.ready_sent and all(h.life.ready for h in self.workers.values() if h.enabled):
            self.ready_sent = True
            self.state = "running"
            log.info("all workers up (%.2fs after start)", now - self.started)
            self.notifier.send(READY="1", STATUS=self._status_line())
        if self.notifier.watchdog_interval and now >= self._next_watchdog:
            self._next_watchdog = now + self.notifier.watchdog_interval
            self.notifier.send(WATCHDOG="1")
        if self.notifier.enabled and now >= self._next_status_note:
            self._next_status_note = now + 10.0
            self.notifier.send(STATUS=self._status_line())

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _poll_once(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            kind, obj = key.data
            if kind == "wake":
                self._drain_wakeups()
            elif kind == "listen":
                self._accept()
            elif kind == "client":
                self._on_client_readable(obj)
            elif kind == "worker":
                self._on_worker_readable(obj)
        self._reap()

    def run(self) -> int:
        """Start everything, loop until stopped, shut down in order; returns the exit code."""
        self._prepare_run_dir()
        clean = False
        try:
            self._install_signals()
            self._adopt_or_clean()
            self._create_rings()
            self._listen()
            for h in self.workers.values():
                if h.enabled:
                    self._start_worker(h)
            log.info(
                "supervisor pid %d for instance %r up; control socket %s",
                os.getpid(),
                self.instance,
                self.sock_path,
            )
            while not self.stop_requested:
                self._poll_once(TICK)
                self._tick(time.monotonic())
            log.info("shutting down (%s)", self.stop_requested)
            self._shutdown()
            clean = True
        except SupervisorError:
            raise
        except Exception:
            # A bug: the rings may hold records the uploader has not drained. Leave
            # them for the next start to adopt (workers die with us: PDEATHSIG).
            log.critical("unexpected error; rings kept for the next start", exc_info=True)
            self.exit_code = 1
        finally:
            self._cleanup(unlink_rings=clean)
        if self.fatal_message:
            log.error("%s", self.fatal_message)
        return self.exit_code

    def _shutdown(self) -> None:
        self.state = "stopping"
        self.notifier.send(STOPPING="1", STATUS="stopping")
        self.lanes.retire_all("shutdown")
        # Let a producer that read "not retired" just before finish its write.
        time.sleep(0.05)
        for name in WORKER_NAMES:
            h = self.workers[name]
            if not h.pid:
                h.life.state = "stopped" if h.enabled else h.life.state
                continue
            deadline = self.policy.shutdown(h.life, time.monotonic())
            self._send(h, {"cmd": "stop"})
            while h.pid and time.monotonic() < deadline:
                self._poll_once(0.05)
            if h.pid:
                timeout = self.policy.shutdown_timeout
                log.error("%s did not stop within %.0fs: SIGKILL", name, timeout)
                self._kill(h, "stop_timeout")
                while h.pid:
                    self._poll_once(0.05)
        self._report_unflushed()

    def _report_unflushed(self) -> None:
        """Count what the uploader left in the rings, which are unlinked next.

        Records written after the uploader's last drain (or left by an
        uploader killed at the stop timeout) are dropped ``unflushed_at_stop``.
        The counts, with every ring's final position, go to the outbox's side
        file (:mod:`edge_actors.spill`): the next start folds them into the
        drops stream (from the outbox's own cursor, so nothing stored is
        counted) and forgets these rings' cursors, so that the rings created
        then are not reported as gaps.
        """
        if not self.workers["uploader"].enabled:
            return
        rings = [(r, self.ring_kinds[n].stream) for n, r in self.rings.items()]
        rings += self.lanes.streams()
        ended: dict[str, spill.Ended] = {}
        for ring, stream in rings:
            read = int(ring.consumer_line(topology.UPLOADER)["read_seq"])
            written = ring.write_seq
            ended[ring.name] = (stream, ring.epoch, read, written)
            if written > read:
                log.warning(
                    "%d %s records in %s were written after the uploader's last drain: "
                    "counted as dropped (unflushed_at_stop)",
                    written - read,
                    stream,
                    ring.name,
                )
        db = Path(self.cfg.storage.sqlite_path)
        spill.write_or_log(spill.spill_path(db), ended=ended, reserve=Path(f"{db}-reserve"))

    def _cleanup(self, *, unlink_rings: bool = True) -> None:
        """Close everything; unlink the rings only after an ordered shutdown.

        Otherwise only rings that never held a record are removed: the others
        (and every lane) are adopted by the next start, records included.
        """
        for c in list(self.clients.values()):
            c.sock.close()
        self.clients.clear()
        if self.listener is not None:
            self.listener.close()
            try:
                self.sock_path.unlink()
            except FileNotFoundError:
                pass
        for ring in self.rings.values():
            discard(ring, unlink_rings or ring.write_seq == 0)
        self.rings.clear()
        self.lanes.close(unlink=unlink_rings)
        if self._pid_fd >= 0:
            try:
                self.pid_path.unlink()
            except FileNotFoundError:
                pass
            os.close(self._pid_fd)
            self._pid_fd = -1
        if self._run_fd >= 0:
            os.close(self._run_fd)
            self._run_fd = -1
        if self._wake_w >= 0:
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        self.sel.close()


def _list(value: object) -> list[Any]:
    """A lane request's field list (anything else: none given)."""
    return value if isinstance(value, list) else []
