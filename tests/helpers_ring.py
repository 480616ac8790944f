"""Helpers for the ring, shm and producer tests.

Imported by the tests: unique segment names (:class:`Segments`), the record
layout of the self-checking streams, the frame format consumers write, and a
fake control-socket server standing in for the supervisor.

Run as a script (``python tests/helpers_ring.py ROLE ...``) it is one of the
*unrelated* processes the crash tests start and SIGKILL: ``writer`` writes
self-checking records (every value equals the record's sequence number) until
killed; ``consumer`` reads a ring and appends what it got to a file.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HELPER = Path(__file__).resolve()
REPO = HELPER.parent.parent
if str(REPO) not in sys.path:  # when run as a script
    sys.path.insert(0, str(REPO))

from edge_actors import control, shm  # noqa: E402
from edge_actors.producer import Producer  # noqa: E402
from edge_actors.records import model_dtype  # noqa: E402
from edge_actors.ring import BUSY, Ring  # noqa: E402

#: Every segment these tests create starts with this (pid-unique) prefix.
PREFIX = f"eat{os.getpid() % 10000}_"
#: Fields of the producer lanes the ``lane`` fixture (tests/conftest.py) makes.
LANE_INPUTS = ("a", "b", "c", "d")
LANE_OUTPUTS = ("y",)
#: The ``lane`` fixture: ``make(inputs=..., outputs=..., cap=1024) -> (producer, ring)``.
MakeLane = Callable[..., tuple[Producer, Ring]]
_counter = itertools.count()


class Segments:
    """Unique segment names for one test; :meth:`cleanup` unlinks every one of them."""

    def __init__(self) -> None:
        self.prefix = f"{PREFIX}{next(_counter)}_"
        self._n = itertools.count()

    def new(self) -> str:
        """A fresh name (<= 30 characters)."""
        name = f"{self.prefix}{next(self._n)}"
        assert len(name) <= shm.MAX_NAME_LEN
        return name

    def cleanup(self) -> list[str]:
        """Unlink everything of this test; returns what is still there afterwards."""
        for name in shm.list_names(self.prefix):
            shm.unlink(name)
        return shm.list_names(self.prefix)


def python_env(**extra: str) -> dict[str, str]:
    """Environment for child interpreters: the repo importable, extra variables set."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python tests/helpers_ring.py ARGS`` (stdout piped, text)."""
    return subprocess.Popen(
        [sys.executable, str(HELPER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or python_env(),
        cwd=REPO,
    )


def wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 10.0) -> str:
    """The first stdout line of ``proc`` starting with ``prefix`` (its readiness signal)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"helper exited ({proc.wait()}) before {prefix!r}:\n{err}")
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"helper said no {prefix!r} in {timeout}s")


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL and reap."""
    proc.kill()
    proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


# ----------------------------------------------------------- self-checking stream
def stream_dtype(n_values: int) -> np.dtype[np.void]:
    """The model-lane layout used by the stream tests."""
    return model_dtype(n_values)


def check_records(records: npt.NDArray[Any], seqs: npt.NDArray[np.int64]) -> list[int]:
    """Seqs whose record is not self-consistent (every value must equal the seq)."""
    v = records["v"]
    ok = (v == seqs[:, None].astype(np.float64)).all(axis=1)
    return [int(s) for s in seqs[~ok]]


# -------------------------------------------------------------- consumer frames
FRAME = struct.Struct("<4sqqqI")
FRAME_MAGIC = b"FRM1"


def append_frame(fd: int, seqs: npt.NDArray[np.int64], pos: int, lost: int) -> None:
    """One ``write`` of header + seqs: the output and the cursor that produced it together."""
    body = np.ascontiguousarray(seqs, dtype=np.int64).tobytes()
    os.write(fd, FRAME.pack(FRAME_MAGIC, len(seqs), pos, lost, zlib.crc32(body)) + body)


def read_frames(path: Path, repair: bool = False) -> tuple[list[npt.NDArray[np.int64]], int, int]:
    """(seq arrays, last pos, last lost) of every complete frame in ``path``.

    A trailing partial frame (the writer was killed inside ``write``) is ignored,
    and cut off with ``repair``.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0, 0
    out: list[npt.NDArray[np.int64]] = []
    off = pos = lost = 0
    while off + FRAME.size <= len(data):
        magic, n, fpos, flost, crc = FRAME.unpack_from(data, off)
        end = off + FRAME.size + 8 * n
        if magic != FRAME_MAGIC or end > len(data):
            break
        body = data[off + FRAME.size : end]
        if zlib.crc32(body) != crc:
            break
        out.append(np.frombuffer(body, dtype=np.int64).copy())
        pos, lost, off = fpos, flost, end
    if repair and off < len(data):
        os.truncate(path, off)
    return out, pos, lost


# ------------------------------------------------------------- fake supervisor
class FakeSupervisor:
    """A control-socket server answering ``{"op": "lane"}`` with lanes the test created.

    ``lanes`` are handed out in order (the last one repeats). Every request is
    kept in ``requests``; connections stay open until :meth:`drop_connections`.
    """

    def __init__(
        self,
        run_dir: Path,
        instance: str,
        lanes: Sequence[Ring],
        schema: dict[str, Any],
    ) -> None:
        self.path = control.socket_path(run_dir, instance)
        self.lanes = list(lanes)
        self.schema = schema
        self.requests: list[dict[str, Any]] = []
        self.conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._served = 0
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(os.fspath(self.path))
        self._srv.listen(8)
        self._srv.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5.0)
            reader = control.LineReader()
            try:
                lines: list[bytes] = []
                while not lines:
                    data = conn.recv(65536)
                    if not data:
                        raise OSError("closed")
                    lines = reader.feed(data)
                req = control.decode(lines[0])
                with self._lock:
                    lane = self.lanes[min(self._served, len(self.lanes) - 1)]
                    self._served += 1
                    self.requests.append(req)
                    self.conns.append(conn)
                conn.sendall(
                    control.encode(
                        {"ok": True, "lane": lane.name, "epoch": lane.epoch, **self.schema}
                    )
                )
            except OSError:
                conn.close()

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Until ``n`` lane requests arrived; returns them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.005)
        raise AssertionError(f"expected {n} lane requests, got {self.requests}")

    def drop_connections(self) -> None:
        """Close every producer connection (as a supervisor that died would)."""
        with self._lock:
            conns, self.conns = self.conns, []
        for c in conns:
            c.close()

    def stop(self) -> None:
        """Stop listening, close everything, remove the socket file."""
        self._stop.set()
        self._srv.close()
        self._thread.join(2.0)
        self.drop_connections()
        self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------ subprocess roles
def _writer(name: str, n_values: int, mode: str, total: int) -> int:
    """Write self-checking records as fast as possible until killed (or ``total`` written)."""
    dt = stream_dtype(n_values)
    ring = Ring.attach(name, dt)
    if mode.startswith("producer"):
        from edge_actors.producer import Producer

        names = [f"x{i}" for i in range(n_values - 1)]
        p = Producer("/nonexistent", "t", names, ["y"], start=False)
        keep, _ = socket.socketpair()
        p._attach(keep, {"lane": name, **p.schema()})
        seq = p._lane_seq()
        print(f"ready {os.getpid()} {seq}", flush=True)
        while total < 0 or p._lane_seq() < total:
            if mode == "producer_batch":
                seq = p._lane_seq()
                k = 1 + seq % 37
                vals = np.repeat(np.arange(seq, seq + k, dtype=np.float64)[:, None], n_values, 1)
                p.log_batch(vals[:, :-1], vals[:, -1:])
            else:
                x = float(p._lane_seq())
                p.log([x] * (n_values - 1), [x])
        return 0
    w = ring.writer()
    print(f"ready {os.getpid()} {w.seq}", flush=True)
    rec = np.zeros(1, dt)
    while total < 0 or w.seq < total:
        seq = w.seq
        if mode == "batch":
            k = 1 + seq % 37
            recs = np.zeros(k, dt)
            recs["id"] = np.arange(seq, seq + k)
            recs["v"] = np.arange(seq, seq + k, dtype=np.float64)[:, None]
            w.write_batch(recs)
        else:
            rec["id"] = seq
            rec["v"] = float(seq)
            w.write_bytes(rec.data.cast("B"))
    return 0


def _paced_writer(name: str, n_values: int, total: int, per_ms: int) -> int:
    """Write ``total`` self-checking records at about ``per_ms`` records per millisecond."""
    ring = Ring.attach(name, stream_dtype(n_values))
    w = ring.writer()
    rec = np.zeros(1, ring.record_dtype)
    print(f"ready {os.getpid()} {w.seq}", flush=True)
    t0 = time.perf_counter()
    while w.seq < total:
        seq = w.seq
        rec["id"] = seq
        rec["v"] = float(seq)
        w.write_bytes(rec.data.cast("B"))
        if seq % per_ms == 0:
            ahead = seq / per_ms / 1000 - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
    print(f"done {w.seq}", flush=True)
    return 0


def _consumer(name: str, k: int, out: str, mode: str, n_values: int, done: str) -> int:
    """Read consumer ``k`` and append frames to ``out`` until ``done`` exists and all is read.

    ``commit``: ``read(commit=True)``, then write the frame (the cursor is in the
    ring header, published before the output exists: at-most-once).
    ``exact``: resume from the last complete frame, ``read(commit=False)``, write
    seqs + cursor in one frame, then commit (exactly-once).
    """
    ring = Ring.attach(name, stream_dtype(n_values))
    cons = ring.consumer(k)
    path = Path(out)
    if mode == "exact":
        _, pos, lost = read_frames(path, repair=True)
        cons.seek(pos, lost)  # the file, not the ring header, is the source of truth
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    print(f"ready {os.getpid()}", flush=True)
    bad_path = Path(out + ".bad")
    while True:
        batch = cons.read(512, commit=(mode == "commit"))
        bad = check_records(batch.records, batch.seqs)
        if bad:
            bad_path.write_text(repr(bad[:20]))
        if len(batch) or batch.lost:
            append_frame(fd, batch.seqs, cons.pos, cons.lost)
            if mode == "exact":
                cons.commit()
        elif os.path.exists(done) and cons.pending == 0:
            break
        else:
            time.sleep(0.0002)
    os.close(fd)
    return 0


def _zygote() -> int:
    """Fork pre-imported children on request (a fresh interpreter costs ~0.1 s per restart).

    stdin ``fork FENCE ROLE ARGS...``: a child runs ROLE (with EDGE_ACTORS_FENCE=FENCE
    unless FENCE is ``-``) and says ``ready PID ...`` itself; ``kill PID``: SIGKILL it,
    reap it, answer ``dead PID``. The zygote itself attaches nothing.
    """
    import signal

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "fork":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    if cmd[1] != "-":
                        os.environ["EDGE_ACTORS_FENCE"] = cmd[1]
                    code = _main(cmd[2:])
                finally:
                    sys.stdout.flush()
                    os._exit(code)
        elif cmd[0] == "kill":
            pid = int(cmd[1])
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print(f"dead {pid}", flush=True)
    return 0


class Zygote:
    """Test side of :func:`_zygote`: start roles in forked children, SIGKILL them."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPER), "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=python_env(),
            cwd=REPO,
        )

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def start(self, *args: str, fence: str = "-") -> tuple[int, list[str]]:
        """Fork a child running ``args``; returns (pid, rest of its ready line)."""
        self._send(" ".join(["fork", fence, *args]))
        words = wait_line(self.proc, "ready").split()
        return int(words[1]), words[2:]

    def kill(self, pid: int) -> None:
        """SIGKILL a child and wait until it is reaped."""
        self._send(f"kill {pid}")
        wait_line(self.proc, f"dead {pid}")

    def close(self) -> None:
        """End the zygote (its stdin closes)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _main(argv: list[str]) -> int:
    role = argv[0]
    if role == "zygote":
        return _zygote()
    if role == "writer":
        return _writer(argv[1], int(argv[2]), argv[3], int(argv[4]))
    if role == "paced_writer":
        return _paced_writer(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
    if role == "consumer":
        return _consumer(argv[1], int(argv[2]), argv[3], argv[4], int(argv[5]), argv[6])
    raise SystemExit(f"unknown role {role!r}")


__all__ = [
    "BUSY",
    "HELPER",
    "PREFIX",
    "REPO",
    "FakeSupervisor",
    "Segments",
    "Zygote",
    "append_frame",
    "check_records",
    "kill",
    "python_env",
    "read_frames",
    "spawn",
    "stream_dtype",
    "wait_line",
]

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
