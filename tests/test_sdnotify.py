"""sd_notify must never block the supervisor.

Seen under emulation: a notify reader that stopped reading (a harness that
read only READY=1) let the queue fill after 10 datagrams (STATUS every 10 s),
the next ``sendto`` blocked, and the supervisor hung with every worker.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest

from edge_actors.sdnotify import Notifier


def test_full_notify_queue_drops_instead_of_hanging(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = short_dir / "notify.sock"
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(str(path))  # bound, never read: like a stuck notify reader
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    n = Notifier()
    done = threading.Event()

    def notify_many() -> None:
        for i in range(50):
            n.send(STATUS=f"note {i}")
        done.set()

    caplog.set_level(logging.WARNING, logger="edge_actors.sdnotify")
    t = threading.Thread(target=notify_many, daemon=True)
    t.start()
    finished = done.wait(30)
    reader.close()  # unblocks a sender stuck on the old code, so the test ends
    t.join(5)
    assert finished, "Notifier.send blocked on a full notify queue"
    full = [r for r in caplog.records if "queue is full" in r.getMessage()]
    assert len(full) == 1  # said once, not 40 times
