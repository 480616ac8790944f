"""systemd's notify protocol (sd_notify), without libsystemd.

With ``Type=notify`` systemd waits for ``READY=1``; with ``WatchdogSec=`` it
expects ``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` and kills a service that
stops sending. Outside systemd ``NOTIFY_SOCKET`` is unset and this does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages if ``NOTIFY_SOCKET`` is set."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if addr.startswith("@"):
            self.address = b"\0" + addr[1:].encode()  # abstract namespace
        elif addr.startswith("/"):
            self.address = addr
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        self._full_warned = False
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # Half the timeout, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval = int(usec) / 2e6

    @property
    def enabled(self) -> bool:
        """True under systemd with a notify socket."""
        return self.address is not None

    def send(self, **fields: str) -> None:
        """Send ``KEY=value`` lines (e.g. ``READY="1"``, ``STATUS="..."``)."""
        if self.address is None:
            return
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                # Never wait: a notify reader that stopped reading (its queue holds
                # net.unix.max_dgram_qlen = 10 datagrams) hung the whole supervisor.
                s.setblocking(False)
                s.sendto(msg, self.address)
        except BlockingIOError:
            if not self._full_warned:
                self._full_warned = True
                log.warning("sd_notify to %r: the receiver's queue is full, dropped", self.address)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address, exc)
