"""Computed defaults: the values a key takes when the file does not set it.

Each is documented in the reference as a sentence (``default_doc``), not a
literal, and ``null`` in the file means "compute it".
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

__all__ = ["default_device_id", "default_run_dir", "sanitize_device_id"]


def sanitize_device_id(raw: str) -> str:
    """Turn any string (a hostname, say) into a valid ``device_id``.

    Characters outside ``A-Za-z0-9._-`` become ``-``, runs of dots collapse to one
    (``..`` would be a path traversal in the local sink), leading characters that
    are not a letter or digit are dropped, and the result is cut to 64 characters.
    An empty result becomes ``"device"``.
    """
    s = re.sub(r"[^A-Za-z0-9._-]", "-", raw)
    s = re.sub(r"\.{2,}", ".", s)
    s = re.sub(r"^[^A-Za-z0-9]+", "", s)[:64]
    return s or "device"


def default_device_id(machine_id_path: Path = Path("/etc/machine-id")) -> str:
    """Return the default ``device_id``: 12 hex chars from the machine id, else the hostname.

    The machine id is stable across reboots and hostname changes; containers often
    have an empty one, hence the hostname fallback. machine-id(5) asks that the
    id not be exposed as is, so it is hashed (with an application-specific salt,
    as sd_id128_get_machine_app_specific does) before it goes into object keys.
    """
    try:
        text = machine_id_path.read_text(encoding="ascii", errors="replace").strip().lower()
    except OSError:
        text = ""
    if len(text) >= 12 and re.fullmatch(r"[0-9a-f]+", text):
        from edge_actors.hashing import sha256_digest

        return sha256_digest(b"edge-actors:" + text.encode()).hex()[:12]
    return sanitize_device_id(socket.gethostname())


def default_run_dir() -> Path:
    """Return the default ``run_dir``: a place other users cannot have prepared.

    ``$XDG_RUNTIME_DIR/edge-actors`` when that variable is set (a per-user
    tmpfs, 0700, cleaned at logout); else ``/run/edge-actors`` when it is
    this user's already (systemd ``RuntimeDirectory=``) or ``/run`` is writable
    (root); else ``/tmp/edge-actors-<uid>``, where anyone could have created
    the directory first: the supervisor verifies its owner and mode whatever
    the choice (edge_actors.rundir), so a planted one is refused, not used.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "edge-actors"
    run = Path("/run/edge-actors")
    try:
        if run.stat().st_uid == os.geteuid():
            return run
    except OSError:
        if os.access("/run", os.W_OK):
            return run
    return Path(f"/tmp/edge-actors-{os.getuid()}")


def _cwd_var() -> Path:
    return Path.cwd() / "var"
