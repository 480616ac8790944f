"""The control socket protocol between producers/CLI and the supervisor.

A Unix stream socket at ``{run_dir}/{instance}.sock`` (mode 0600). Each message
is one JSON object on one line, never pickle: any process of the same user can
write to this socket, and unpickling its bytes would run its code. The server
checks the peer's uid with ``SO_PEERCRED`` and refuses other users.

Who may talk to whom: the server refuses a peer of another uid; a client (the
CLI, a producer) refuses a server that is neither its own uid nor root, so a
socket swapped in by someone else gets no request and no record.

Messages are bounded: one line of at most :data:`MAX_MESSAGE` bytes, nested at
most :data:`MAX_DEPTH` levels (orjson parses without recursing in Python; the
depth is checked before anything uses the message).

Requests: ``{"op": "lane", "pid": P}`` (a producer asks for its ring),
``{"op": "status"}``, ``{"op": "stop"}``, ``{"op": "ping"}``, ``{"op":
"restart", "worker": W}``, ``{"op": "flush", "batch_id": B}`` (ship now) and
``{"op": "pause"|"resume", "worker": "sampler"|"uploader"}``. Replies carry
``"ok": true`` or ``"ok": false, "error": "..."``. A producer keeps its
connection open while it uses its lane: the supervisor reclaims the lane when
the connection closes (the producer process died or closed it).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

from edge_actors.jsoncompat import orjson

#: Longest accepted line; a peer sending more is cut off.
MAX_MESSAGE = 1 << 20
#: Deepest accepted nesting of arrays/objects (a status reply is 5 deep).
MAX_DEPTH = 32


class ControlError(RuntimeError):
    """The supervisor could not be reached, or it answered with an error."""


def socket_path(run_dir: Path | str, instance: str) -> Path:
    """Where the supervisor of ``instance`` listens."""
    return Path(run_dir) / f"{instance}.sock"


def encode(msg: dict[str, Any]) -> bytes:
    """One message as a JSON line."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one JSON line; raises ValueError for anything but a JSON object of bounded depth."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        # json.loads would guess another encoding and report that codec instead.
        raise ValueError("control messages must be UTF-8 JSON") from None
    too_deep = ValueError(f"control message nested deeper than {MAX_DEPTH} levels")
    try:
        obj = orjson.loads(line)  # stops at 1024 levels without recursing
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise too_deep from None
        # NaN/Infinity (which encode() may write), or invalid: json says which.
        try:
            obj = json.loads(text)
        except RecursionError:
            raise too_deep from None
    if not isinstance(obj, dict):
        raise ValueError("control message must be a JSON object")
    if _too_deep(obj):
        raise too_deep
    return obj


def _too_deep(obj: Any) -> bool:
    """True if containers nest more than MAX_DEPTH levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False


def peer_uid(sock: socket.socket) -> int | None:
    """Uid of the process at the other end of a Unix socket (Linux), else None."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def check_server(sock: socket.socket, path: Path | str) -> None:
    """Refuse a server that is neither this process's user nor root (raises ControlError).

    Whoever can replace the socket file (a run_dir writable by others) could
    otherwise hand a producer a lane they read, or fake a ``status``.
    """
    uid = peer_uid(sock)
    me = os.geteuid()
    if uid is not None and uid not in (me, 0):
        raise ControlError(
            f"the control socket {path} belongs to uid {uid}, not to this user (uid {me}) "
            f"or root: refusing to talk to it (is its run_dir writable by others?)"
        )


def peer_pid(sock: socket.socket) -> int | None:
    """Pid of the peer process (Linux), else None."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


class LineReader:
    """Splits a byte stream into lines, bounded by :data:`MAX_MESSAGE`."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete lines."""
        self._buf += data
        if b"\n" not in data:
            if len(self._buf) > MAX_MESSAGE:
                raise ValueError("control message too long")
            return []
        *lines, rest = bytes(self._buf).split(b"\n")
        self._buf = bytearray(rest)
        return [ln for ln in lines if ln.strip()]


def request(
    run_dir: Path | str, instance: str, msg: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """One request/reply on a fresh connection (CLI use). Raises ControlError."""
    path = socket_path(run_dir, instance)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(
                f"no supervisor running for instance {instance!r} (no socket at {path})"
            ) from exc
        except OSError as exc:
            raise ControlError(f"cannot reach the supervisor at {path}: {exc}") from exc
        check_server(sock, path)
        sock.sendall(encode(msg))
        reader = LineReader()
        while True:
            data = sock.recv(65536)
            if not data:
                raise ControlError("the supervisor closed the connection without answering")
            lines = reader.feed(data)
            if lines:
                reply = decode(lines[0])
                if not reply.get("ok", False):
                    raise ControlError(str(reply.get("error", "request refused")))
                return reply
    except TimeoutError as exc:
        raise ControlError(f"the supervisor at {path} did not answer in {timeout} s") from exc
    finally:
        sock.close()
