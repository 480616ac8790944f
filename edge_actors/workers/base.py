"""The worker base class and the code that runs first in a freshly forked worker.

A worker is one process with one job. It talks to the supervisor over a
``SOCK_SEQPACKET`` socket pair (one JSON message per packet): heartbeats with a
progress counter and stats go up; ``stop``, ``rings`` (the set of rings to
read changed) and ``debug`` commands come down. It keeps no state that dies
with it: cursors live in ring headers or the outbox.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

from edge_actors.doorbell import Bell, open_bell
from edge_actors.roster import worker_spec
from edge_actors.topology import RingSpec

if TYPE_CHECKING:
    from edge_actors.config import Config

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASH = 70  # EX_SOFTWARE
MAX_PACKET = 1 << 20


class Worker:
    """Base class: subclasses implement :meth:`step` (bounded work, returns records done)."""

    name = "worker"
    #: How long to wait for commands when a step did nothing.
    idle_wait = 0.05
    #: Consumer line whose lane doorbell this worker waits on (None: it reads no lanes).
    bell_consumer: int | None = None

    def __init__(self, cfg: Config, chan: socket.socket) -> None:
        self.cfg = cfg
        self.chan = chan
        self.stopping = False
        #: Set by the supervisor's ``pause`` command: :meth:`step` is not called.
        self.paused = False
        self.progress = 0
        self.rings: dict[str, RingSpec] = {}
        self._hb_every = cfg.supervisor.heartbeat_interval_seconds
        self._stats_every = cfg.supervisor.stats_interval_seconds
        self._next_hb = 0.0
        self._next_stats = 0.0
        self._ballast: list[bytearray] = []
        self._hang = False
        self._bell: Bell | None = None

    # ------------------------------------------------------------ subclass API
    def setup(self) -> None:
        """Attach resources; runs once in the new process before the first heartbeat."""

    def step(self) -> int:
        """Do a bounded amount of work (well under the heartbeat interval); return records done."""
        return 0

    def set_rings(self, specs: list[RingSpec]) -> None:
        """The supervisor's current ring set; attach new ones, drop the others."""
        self.rings = {s.name: s for s in specs}

    def stats(self) -> dict[str, Any]:
        """Figures for ``status`` (JSON-able)."""
        return {}

    def flush(self) -> None:
        """Last work before a clean exit (the uploader drains the rings here)."""

    def close(self) -> None:
        """Release resources; runs after :meth:`flush`."""

    # ----------------------------------------------------------------- loop
    def send(self, msg: dict[str, Any]) -> None:
        """One message to the supervisor; a gone supervisor ends this worker."""
        try:
            self.chan.send(json.dumps(msg, separators=(",", ":"), default=str).encode())
        except (BrokenPipeError, ConnectionResetError):
            self.stopping = True

    def heartbeat(self) -> None:
        """Tell the supervisor we are alive and how far we got; stats every few seconds.

        Stats can cost a query (the uploader's outbox backlog), so they ride
        along at most every ``supervisor.stats_interval_seconds``; the bare heartbeat is cheap.
        """
        now = time.monotonic()
        msg: dict[str, Any] = {"type": "hb", "progress": self.progress}
        if now >= self._next_stats:
            msg["stats"] = self.stats()
            self._next_stats = now + self._stats_every
        self.send(msg)
        self._next_hb = now + self._hb_every

    def handle(self, msg: dict[str, Any]) -> None:
        """Act on one command from the supervisor."""
        cmd = msg.get("cmd")
        if cmd == "stop":
            self.stopping = True
        elif cmd == "rings":
            self.set_rings([RingSpec.from_dict(d) for d in msg.get("rings", [])])
        elif cmd == "debug":
            self._debug(msg)
        elif cmd in ("pause", "resume"):
            self.paused = cmd == "pause"
            log.info("%s %s", self.name, "paused" if self.paused else "resumed")
        else:
            log.warning("%s: unknown command %r", self.name, cmd)

    def _debug(self, msg: dict[str, Any]) -> None:
        # Test hooks, reachable only when the supervisor runs with EDGE_ACTORS_DEBUG=1.
        action = msg.get("action")
        if action == "alloc":
            block = bytearray(int(msg.get("mb", 1)) * 2**20)
            block[::4096] = b"\1" * len(block[::4096])  # touch every page
            self._ballast.append(block)
        elif action == "hang":
            self._hang = True
        elif action == "crash":
            os._exit(EXIT_CRASH)

    def _open_bell(self) -> None:
        """Bind this worker's lane doorbell (see edge_actors.doorbell), if it reads lanes."""
        if self.bell_consumer is not None and self._bell is None:
            self._bell = open_bell(self.cfg.run_dir, self.cfg.instance, self.bell_consumer)

    def _close_bell(self) -> None:
        if self._bell is not None:
            self._bell.close()
            self._bell = None

    def _poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a command or a lane's doorbell; handle the commands."""
        bell = self._bell
        fds = [self.chan.fileno()] if bell is None else [self.chan.fileno(), bell.fileno()]
        ready, _, _ = select.select(fds, [], [], timeout)
        if not ready:
            return
        if bell is not None and bell.fileno() in ready:
            bell.drain()  # the next step reads the lanes
            if self.chan.fileno() not in ready:
                return
        while True:
            try:
                data = self.chan.recv(MAX_PACKET, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not data:  # supervisor gone
                self.stopping = True
                return
            self.handle(json.loads(data))

    def run(self) -> int:
        """Set up, then loop until told to stop; flush, close, return an exit code."""
        self.setup()
        self._open_bell()
        self.send({"type": "ready", "pid": os.getpid()})
        self.heartbeat()
        while not self.stopping:
            if self._hang:
                time.sleep(3600)
                continue
            n = 0 if self.paused else self.step()
            self.progress += n
            if time.monotonic() >= self._next_hb:
                self.heartbeat()
            self._poll(0 if n else self.idle_wait)
        self.flush()
        self._next_stats = 0.0
        self.heartbeat()
        self.close()
        self._close_bell()
        self.send({"type": "stopped"})
        return EXIT_OK


def _set_parent_death_signal(expected_ppid: int) -> None:
    """Die with the supervisor, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != expected_ppid:  # the parent died before prctl took effect
        os._exit(EXIT_CRASH)


def _vm_data_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _set_hard_memory_limit(budget_mb: float) -> None:
    """Backstop under the supervisor's USS check: RLIMIT_DATA at start + 2x the budget.

    The supervisor's check runs every few seconds; a runaway allocation can
    exhaust a 512 MB box faster than that. RLIMIT_DATA (private writable
    memory) turns it into a MemoryError in the worker, which then exits and is
    restarted. The margin is generous because virtual data exceeds USS.
    """
    import resource

    limit = _vm_data_bytes() + int(2 * budget_mb * 2**20)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (ValueError, OSError) as exc:
        log.warning("cannot set RLIMIT_DATA: %s", exc)


def child_main(
    name: str, cfg: Config, chan: socket.socket, close_fds: list[int], parent_pid: int
) -> None:
    """Entry point in the forked child: never returns."""
    code = EXIT_CRASH
    try:
        _set_parent_death_signal(parent_pid)
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        # Ctrl-C reaches the whole process group: the supervisor orders the
        # shutdown, so workers ignore SIGINT; a direct SIGTERM means "stop cleanly".
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        worker_ref: list[Worker] = []

        def on_term(_sig: int, _frame: object) -> None:
            if worker_ref:
                worker_ref[0].stopping = True
            else:
                os._exit(EXIT_OK)

        signal.signal(signal.SIGTERM, on_term)
        if cfg.supervisor.hard_memory_limit:
            _set_hard_memory_limit(cfg.workers.get(name).memory_limit_mb)
        spec = worker_spec(name)
        if spec.nice:
            try:
                os.nice(spec.nice)
            except OSError as exc:  # a sandbox without setpriority: run at the same priority
                log.warning("%s: cannot lower its priority: %s", name, exc)
        # Imported here, in the worker's own process only (edge_actors.roster).
        worker: Worker = spec.load()(cfg, chan)
        worker_ref.append(worker)
        code = worker.run()
    except BaseException as exc:
        if not isinstance(exc, SystemExit):
            log.error("worker %s crashed: %s", name, exc)
            traceback.print_exc()
        code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else code
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
