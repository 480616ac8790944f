"""Doorbells: how a producer wakes the readers of its lane without a system call per record.

Consumers of the lanes (the uploader, consumer line 0, and the drift worker,
line 1) sleep between polls when idle. A lane filled by a burst faster than
that poll interval would be overwritten before anyone looked, so each consumer
also waits on its *doorbell*: a Unix datagram socket it binds at
``{run_dir}/{instance}.bell{k}`` (``k`` is its consumer line). A producer rings
every doorbell (one non-blocking ``sendto`` of one byte each) only when its
writes cross a half-lane boundary: a consumer asleep when a burst starts is
woken with half a lane of room left, and a steady producer costs two system
calls per half lane, never one per record.

Why a datagram socket per consumer rather than an eventfd handed out with each
lane: the path is derived from the config, so nothing has to be passed over the
control socket or inherited, a restarted worker simply binds it again, and a
producer keeps ringing the same address across supervisor restarts. A bell
nobody listens to (worker restarting, drift disabled) costs a failed
``sendto``; a full socket buffer means the consumer already has a wake-up
pending. Either way the producer never blocks and never raises.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

#: Consumer lines of a lane whose workers have a doorbell (see topology.UPLOADER / DRIFT).
BELL_CONSUMERS = (0, 1)
#: Longest Unix socket path (bytes, without the terminating NUL).
_MAX_PATH = 107


def bell_path(run_dir: Path | str, instance: str, consumer: int) -> Path:
    """The doorbell of consumer line ``consumer`` of ``instance``'s lanes."""
    return Path(run_dir) / f"{instance}.bell{consumer}"


class Ringer:
    """The producer side: rings every consumer's doorbell, never blocks, never raises."""

    def __init__(self, run_dir: Path | str, instance: str) -> None:
        self.paths = [os.fspath(bell_path(run_dir, instance, k)) for k in BELL_CONSUMERS]
        self._sock: socket.socket | None = None
        #: Times rung (for tests and stats).
        self.rung = 0

    def ring(self) -> None:
        """Wake every consumer (one datagram each)."""
        sock = self._sock
        if sock is None:
            try:
                sock = self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
            except OSError:
                return
        self.rung += 1
        for path in self.paths:
            try:
                sock.sendto(b"\1", path)
            except OSError:
                # Nobody bound (worker restarting, drift disabled) or the
                # consumer's queue is full (a wake-up is already pending).
                pass

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Bell:
    """The consumer side: a bound datagram socket to include in ``select``."""

    def __init__(self, path: Path | str) -> None:
        self.path = os.fspath(path)
        if len(os.fsencode(self.path)) > _MAX_PATH:
            raise OSError(errno.ENAMETOOLONG, "doorbell path too long for a Unix socket", self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # A stale bell of a killed predecessor: this consumer line is ours now.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            sock.bind(self.path)
            # chmod, not umask: the umask is process-wide and other threads create files.
            os.chmod(self.path, 0o600)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._ino = os.stat(self.path).st_ino

    def fileno(self) -> int:
        """For ``select``."""
        return self.sock.fileno()

    def drain(self) -> int:
        """Consume every pending ring; returns how many there were."""
        n = 0
        while True:
            try:
                if not self.sock.recv(64):
                    return n
            except (BlockingIOError, InterruptedError):
                return n
            except OSError:
                return n
            n += 1

    def close(self) -> None:
        """Close and remove the path, unless a successor bound it again meanwhile."""
        try:
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        except OSError:
            pass
        self.sock.close()


def open_bell(run_dir: Path | str, instance: str, consumer: int) -> Bell | None:
    """Bind consumer ``consumer``'s doorbell, or None (logged) if it cannot be bound.

    Without a doorbell the consumer still polls; it only wakes later on a burst.
    """
    path = bell_path(run_dir, instance, consumer)
    try:
        return Bell(path)
    except OSError as exc:
        log.warning("no doorbell at %s (%s): lanes are polled only", path, exc)
        return None
