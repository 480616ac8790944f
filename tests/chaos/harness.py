"""Chaos harness: a producer subprocess, sink readers, a TCP proxy, exactly-once accounting.

Everything here is real: the producer is its own process (``python -m
tests.chaos.harness produce``) writing through :class:`edge_actors.producer.Producer`
into a shared-memory lane; the sinks are read back from the directory or the
S3 endpoint on loopback; the outbox is read with ``sqlite3``.

Records carry their identity and a checksum in their fields, so a torn record
(half of one write, half of another) cannot pass for a good one::

    inputs:  bedrooms = producer id, bathrooms = seq % 7, sqft = 1000 + seq % 977, age = seq
    outputs: price = 3 * seq + producer id, confidence = frac(seq * 2654435761 / 2**32)

The accounting rule checked by every scenario: every record produced is in
the sink exactly once, or counted as dropped with a reason (producer side:
``Producer.stats()["dropped"]``; agent side: the outbox ``drops`` of the
``model`` stream, which include ring overruns), or -- only in the corrupt
outbox scenario -- was in the database file that was moved aside.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import queue
import random
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]

#: The model every chaos config declares (same as tests.conftest.MODEL).
INPUTS = ["bedrooms", "bathrooms", "sqft", "age"]
OUTPUTS = ["price", "confidence"]

#: A delivered record's identity: (producer id, seq).
Key = tuple[int, int]

#: Every table printed this session, shown by the conftest's terminal summary.
REPORTS: list[str] = []


# ------------------------------------------------------------------- records
def _frac(seq: int) -> float:
    return ((seq * 2654435761) % 4294967296) / 4294967296.0


def record_values(pid: int, seq: int) -> tuple[list[float], list[float]]:
    """Inputs and outputs of record ``seq`` of producer ``pid``."""
    return (
        [float(pid), float(seq % 7), 1000.0 + seq % 977, float(seq)],
        [3.0 * seq + pid, _frac(seq)],
    )


def record_key(rec: dict[str, Any]) -> tuple[int, int]:
    """``(producer id, seq)`` of a delivered record; AssertionError if it is torn."""
    ins, outs = rec["inputs"], rec["outputs"]
    pid, seq = int(ins["bedrooms"]), int(ins["age"])
    want_in, want_out = record_values(pid, seq)
    got_in = [ins[k] for k in INPUTS]
    got_out = [outs[k] for k in OUTPUTS]
    assert got_in == want_in and got_out == want_out, f"torn or corrupt record: {rec}"
    return pid, seq


# ------------------------------------------------------------ producer process
def produce_main(argv: list[str]) -> int:
    """The producer subprocess: log sequence-numbered records until SIGTERM or ``--count``.

    Prints one JSON line ``{"event": "attached", ...}`` once attached and one
    ``{"event": "done", "produced": n, **Producer.stats()}`` at the end. Keeps
    ``--progress FILE`` updated with ``produced dropped_total`` (a lower bound
    of what was written if the process is SIGKILLed).
    """
    ap = argparse.ArgumentParser(prog="produce")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--instance", required=True)
    ap.add_argument("--id", type=int, default=0)
    ap.add_argument("--rate", type=float, default=1500.0, help="records/s; 0: as fast as possible")
    ap.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    ap.add_argument("--burst", type=int, default=0, help="with --rate 0: records per burst")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between bursts")
    ap.add_argument("--progress", default="")
    ap.add_argument("--attach-timeout", type=float, default=20.0)
    args = ap.parse_args(argv)

    from edge_actors.producer import Producer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    p = Producer(args.run_dir, args.instance, INPUTS, OUTPUTS)
    ok = p.wait_attached(args.attach_timeout)
    print(json.dumps({"event": "attached", "ok": ok, "pid": os.getpid()}), flush=True)
    fd = os.open(args.progress, os.O_WRONLY | os.O_CREAT, 0o600) if args.progress else -1
    n = 0
    pid = args.id
    log = p.log
    t0 = time.monotonic()
    next_progress = 0.0
    while not stop.is_set() and (args.count == 0 or n < args.count):
        now = time.monotonic()
        if args.rate > 0:
            target = int(args.rate * (now - t0)) + 1
        elif args.burst > 0:
            target = n + args.burst
        else:
            target = n + 1000
        if args.count:
            target = min(target, args.count)
        while n < target:
            ins, outs = record_values(pid, n)
            log(ins, outs)
            n += 1
        if fd >= 0 and (now >= next_progress or args.rate > 0):
            dropped = p.stats()["dropped_total"]
            os.pwrite(fd, b"%20d %20d\n" % (n, dropped), 0)
            next_progress = now + 0.02
        if args.rate > 0:
            stop.wait(0.005)
        elif args.burst > 0:
            stop.wait(args.pause)
    p.close()  # records still held for an agent (none up) are counted as dropped
    stats = p.stats()
    print(json.dumps({"event": "done", "produced": n, **stats}), flush=True)
    return 0


class ProducerProc:
    """A producer subprocess attached to one agent instance."""

    def __init__(
        self,
        cfg: dict[str, Any],
        workdir: Path,
        *,
        pid: int = 0,
        rate: float = 1500.0,
        count: int = 0,
        burst: int = 0,
        pause: float = 0.5,
    ) -> None:
        self.id = pid
        self.progress_path = workdir / f"producer-{pid}.progress"
        self.log_path = workdir / f"producer-{pid}.log"
        self.args = [
            "--run-dir",
            str(cfg["run_dir"]),
            "--instance",
            str(cfg["instance"]),
            "--id",
            str(pid),
            "--rate",
            str(rate),
            "--count",
            str(count),
            "--burst",
            str(burst),
            "--pause",
            str(pause),
            "--progress",
            str(self.progress_path),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.result: dict[str, Any] | None = None

    def start(self, timeout: float = 30.0) -> ProducerProc:
        """Start it and wait until it reports attached (fails the test if it cannot attach)."""
        self._err = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.harness", "produce", *self.args],
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            cwd=REPO,
        )
        threading.Thread(target=self._read, daemon=True).start()
        first = self._next(timeout)
        assert first.get("event") == "attached" and first.get("ok"), (
            f"producer {self.id} did not attach: {first}\n{self.stderr()}"
        )
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"producer {self.id}: no output in {timeout}s\n{self.stderr()}"
            ) from None

    def stderr(self) -> str:
        """What the producer printed on stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def progress(self) -> tuple[int, int]:
        """``(produced, dropped)`` as last written to the progress file."""
        try:
            text = self.progress_path.read_bytes().decode().split()
        except FileNotFoundError:
            return 0, 0
        return (int(text[0]), int(text[1])) if len(text) == 2 else (0, 0)

    def wait_done(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for a ``--count`` producer to finish; returns its final stats."""
        assert self.proc is not None
        if self.result is None:
            self.result = self._next(timeout)
            self.proc.wait(timeout)
            self._err.close()
        assert self.result.get("event") == "done", self.result
        return self.result

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM, wait; returns ``{"produced", "written", "dropped", ...}``."""
        assert self.proc is not None
        if self.result is None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        res = self.wait_done(timeout)
        assert res["produced"] == res["written"] + res["dropped_total"], res
        return res

    def kill(self) -> tuple[int, int]:
        """SIGKILL it mid-write; returns the last progress ``(produced, dropped)``."""
        assert self.proc is not None
        before = self.progress()
        self.proc.kill()
        self.proc.wait()
        self._err.close()
        after = self.progress()
        return after if after[0] >= before[0] else before

    def terminate_quietly(self) -> None:
        """Teardown: make sure the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------- sinks
def _keys(lines: Iterable[bytes]) -> list[Key]:
    """``(producer id, seq)`` of each NDJSON line; AssertionError on a torn record."""
    return [record_key(json.loads(x)) for x in lines if x.strip()]


class LocalSinkReader:
    """Records of one stream in a local sink directory (files cached by name and size).

    Only the ``(producer id, seq)`` of each record is kept (long runs deliver millions).
    """

    def __init__(self, root: Path, stream: str = "model") -> None:
        self.base = root / stream
        self._cache: dict[str, tuple[int, list[Key]]] = {}

    def delivered(self) -> list[Key]:
        """``(producer id, seq)`` of every record currently in the sink (checked)."""
        out: list[Key] = []
        if not self.base.exists():
            return out
        for path in sorted(self.base.rglob("*.ndjson.gz")):
            key = str(path)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            hit = self._cache.get(key)
            if hit is None or hit[0] != size:
                with gzip.open(path, "rb") as fh:
                    hit = self._cache[key] = (size, _keys(fh.read().splitlines()))
            out += hit[1]
        return out


class BucketReader:
    """Records of one stream in an S3 bucket (objects cached by key and ETag)."""

    _cache: dict[str, tuple[str, list[Key]]]

    def __init__(self, endpoint: str, bucket: str, prefix: str = "", stream: str = "model"):
        import boto3

        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.bucket = bucket
        self.prefix = f"{prefix}{stream}/"
        self._cache = {}

    def keys(self) -> dict[str, str]:
        """key -> ETag of every object of the stream."""
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["ETag"]
        return out

    def delivered(self) -> list[Key]:
        """``(producer id, seq)`` of every record currently in the bucket (checked)."""
        out: list[Key] = []
        for key, etag in sorted(self.keys().items()):
            hit = self._cache.get(key)
            if hit is None or hit[0] != etag:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                hit = self._cache[key] = (etag, _keys(gzip.decompress(body).splitlines()))
            out += hit[1]
        return out


def bucket_seqs(endpoint: str, bucket: str, prefix: str, stream: str) -> Counter[int]:
    """Outbox sequence number -> copies in the bucket, for every record of ``stream``."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    seqs: Counter[int] = Counter()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}{stream}/"
    ):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            for line in gzip.decompress(body).splitlines():
                if line.strip():
                    seqs[int(orjson.loads(line)["seq"])] += 1
    return seqs


def outbox_seqs(db: Path, stream: str) -> set[int]:
    """Outbox sequence numbers of the records of ``stream`` still in an outbox file."""
    if not db.exists():
        return set()
    out: set[int] = set()
    for raw in _outbox_ndjson(db, stream):
        out.update(int(orjson.loads(line)["seq"]) for line in raw.splitlines() if line.strip())
    return out


def _outbox_ndjson(db: Path, stream: str) -> list[bytes]:
    """The NDJSON of every chunk of ``stream`` in an outbox file, as an upload would carry it."""
    from edge_actors.outbox import stored_ndjson

    conn = _outbox_conn(db)
    try:
        # A model's records are stored per model (``model/<name>``): all of them count.
        chunks = [raw for s, _first, raw in stored_ndjson(conn) if _of(s, stream)]
    finally:
        conn.close()
    assert all(raw is not None for raw in chunks), f"unreadable chunk of {stream} in {db}"
    return [raw for raw in chunks if raw is not None]


def _of(name: str, stream: str) -> bool:
    """Whether the outbox stream ``name`` holds records of ``stream`` (itself or a model's)."""
    return name == stream or name.startswith(f"{stream}/")


def side_file(db: Path) -> dict[str, Any]:
    """The outbox's drop-count side file (``{}`` if there is none)."""
    path = Path(f"{db}.drops.json")
    return json.loads(path.read_text()) if path.exists() else {}


def folded_drops(db: Path, max_bytes: int) -> tuple[dict[str, Counter[str]], Counter[str]]:
    """Open the outbox (which folds its side file in): ``(stream -> reason -> dropped,
    stream -> records still in the outbox)``."""
    from edge_actors.outbox import Outbox

    with Outbox.open(db, max_bytes=max_bytes) as ob:
        drops = ob.drops()
        streams = ob.stats()["streams"]
    out: dict[str, Counter[str]] = {}
    for (stream, reason), n in drops.items():
        if n:
            out.setdefault(stream, Counter())[reason] += n
    backlog = Counter({s: int(v["records"]) for s, v in streams.items() if v["records"]})
    return out, backlog


# ------------------------------------------------------------------ outbox
def _outbox_conn(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def outbox_keys(db: Path, stream: str = "model") -> list[Key]:
    """``(producer id, seq)`` of the records still in an outbox file (agent stopped)."""
    if not db.exists():
        return []
    out: list[Key] = []
    for raw in _outbox_ndjson(db, stream):
        out += _keys(raw.splitlines())
    return out


def outbox_drops(db: Path, stream: str = "model") -> Counter[str]:
    """reason -> records of ``stream`` dropped, from an outbox file's ``drops`` table."""
    if not db.exists():
        return Counter()
    conn = _outbox_conn(db)
    try:
        rows = conn.execute("SELECT reason, count FROM drops WHERE stream=?", (stream,)).fetchall()
    finally:
        conn.close()
    return Counter({str(r): int(c) for r, c in rows if c})


def status_drops(status: dict[str, Any], stream: str = "model") -> Counter[str]:
    """reason -> records of ``stream`` dropped, from a live status."""
    drops = status.get("workers", {}).get("uploader", {}).get("stats", {}).get("drops", {})
    out: Counter[str] = Counter()
    for key, n in drops.items():
        s, _, reason = key.partition("/")
        if s == stream and n:
            out[reason] += int(n)
    return out


def restart_reasons(status: dict[str, Any]) -> Counter[str]:
    """``worker/reason`` -> restarts, from a status."""
    out: Counter[str] = Counter()
    for name, w in status.get("workers", {}).items():
        for reason, n in (w.get("restart_reasons") or {}).items():
            out[f"{name}/{reason}"] += int(n)
    return out


def model_backlog(status: dict[str, Any]) -> int:
    """Model records in the outbox, from the (heartbeat-borne) uploader stats."""
    up = status.get("workers", {}).get("uploader", {}).get("stats", {})
    streams = up.get("outbox", {}).get("streams", {})
    return sum(int(v.get("records", 0)) for s, v in streams.items() if _of(s, "model"))


def lanes_pending(status: dict[str, Any]) -> int:
    """Records in the lanes the uploader has not read yet."""
    return sum(
        int(r["consumers"][0]["pending"])
        for r in status.get("rings", [])
        if r.get("kind") == "lane"
    )


# -------------------------------------------------------------- accounting
@dataclass
class Tally:
    """What one scenario produced, delivered, dropped and restarted."""

    scenario: str
    produced: Counter[int] = field(default_factory=Counter)  # producer id -> records
    producer_drops: Counter[str] = field(default_factory=Counter)
    agent_drops: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)  # outside the drop counters
    restarts: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    delivered: int = 0
    duplicates: int = 0
    in_outbox: int = 0
    keys: Counter[Key] = field(default_factory=Counter)

    @property
    def total_produced(self) -> int:
        """Records produced by every producer."""
        return sum(self.produced.values())

    @property
    def total_dropped(self) -> int:
        """Records counted as dropped, on either side."""
        return sum(self.producer_drops.values()) + sum(self.agent_drops.values())

    def add_producer(self, pid: int, result: dict[str, Any]) -> None:
        """Count a stopped producer's final stats."""
        self.produced[pid] += int(result["produced"])
        for reason, n in result["dropped"].items():
            if n:
                self.producer_drops[f"producer/{reason}"] += int(n)

    def set_agent_drops(self, drops: Counter[str]) -> None:
        """The agent's model drops (replacing what was set before)."""
        self.agent_drops = Counter({f"agent/{r}": n for r, n in drops.items() if n})

    def count(self, delivered: Iterable[Key]) -> Counter[Key]:
        """Count delivered keys (never produced: AssertionError); sets delivered, duplicates."""
        keys: Counter[Key] = Counter(delivered)
        for pid, seq in keys:
            assert 0 <= seq < self.produced.get(pid, 0), (
                f"record ({pid}, {seq}) was never produced ({dict(self.produced)})"
            )
        self.keys = keys
        self.delivered = len(keys)
        self.duplicates = sum(keys.values()) - len(keys)
        return keys

    def total_dropped_reasons(self) -> set[str]:
        """``side/reason`` of every non-zero drop count."""
        return {k for k, n in (self.producer_drops + self.agent_drops).items() if n}

    def table(self) -> str:
        """The scenario's figures as a small text table."""

        def fmt(c: Counter[str]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(c.items())) or "0"

        rows = [
            ("produced", str(self.total_produced)),
            ("delivered", str(self.delivered)),
        ]
        if self.in_outbox:
            rows.append(("  of which in outbox", str(self.in_outbox)))
        rows += [
            ("duplicates", str(self.duplicates)),
            ("dropped", f"{self.total_dropped} ({fmt(self.producer_drops + self.agent_drops)})"),
        ]
        if self.lost:
            rows.append(("lost (stated)", f"{sum(self.lost.values())} ({fmt(self.lost)})"))
        rows.append(("restarts", f"{sum(self.restarts.values())} ({fmt(self.restarts)})"))
        rows += [("note", n) for n in self.notes]
        width = max(len(k) for k, _ in rows)
        lines = [f"== chaos: {self.scenario} =="] + [f"  {k:<{width}}  {v}" for k, v in rows]
        return "\n".join(lines)

    def report(self) -> None:
        """Print the table and keep it for the session summary."""
        text = self.table()
        print(text)
        REPORTS.append(text)

    def assert_balanced(self, *, overcount_ok: bool = False) -> int:
        """produced == delivered + dropped + stated losses, with no duplicates.

        With ``overcount_ok``, drop counters larger than what was really lost
        are tolerated (returned: the excess; see the known bug in
        ``test_filesystem_full_tmpfs``); nothing may ever be missing.
        """
        assert self.duplicates == 0, self.table()
        total = self.delivered + self.total_dropped + sum(self.lost.values())
        if overcount_ok and total > self.total_produced:
            return total - self.total_produced
        assert total == self.total_produced, (
            f"produced {self.total_produced} != delivered {self.delivered} + dropped "
            f"{self.total_dropped} + lost {sum(self.lost.values())}\n{self.table()}"
        )
        return 0


def wait_until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Poll ``pred`` until true; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def settle(
    agent: Any,
    read: Callable[[], list[Key]],
    tally: Tally,
    timeout: float = 90.0,
) -> dict[str, Any]:
    """Wait until every produced record is delivered or counted dropped; fill ``tally``.

    Returns the last status seen (its restart reasons are in ``tally``).
    """
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    recs: list[Key] = []
    stable: tuple[float, int] | None = None
    while True:
        with contextlib.suppress(Exception):
            last = agent.status()
        recs = read()
        tally.set_agent_drops(status_drops(last))
        tally.count(recs)
        total = tally.delivered + tally.total_dropped + sum(tally.lost.values())
        done = bool(last) and lanes_pending(last) == 0 and total == tally.total_produced
        if bool(last) and total > tally.total_produced:
            # Drop counters too high (a known outbox bug): the sum cannot say when
            # delivery is over; wait for an empty backlog and a stable sink instead.
            # Stats ride on heartbeats every 2 s: stable means across a refresh.
            if lanes_pending(last) == 0 and model_backlog(last) == 0:
                now = time.monotonic()
                if stable is None or stable[1] != tally.delivered:
                    stable = (now, tally.delivered)
                done = now - stable[0] >= 2.5
            else:
                stable = None
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    tally.restarts += restart_reasons(last)
    return last


# ----------------------------------------------------------------- TCP proxy
class TcpProxy:
    """A loopback TCP proxy in front of the S3 endpoint that can be switched off or cut.

    ``down()`` closes the listener (new connections are refused) and resets
    every open connection; ``up()`` listens again on the same port. With
    ``cut`` set to ``(probability, min_bytes, max_bytes)`` each new
    connection is, with that probability, reset after a random number of
    bytes in either direction: mid-request or mid-response.
    """

    def __init__(self, upstream_port: int, seed: int = 0) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.rng = random.Random(seed)
        self.cut: tuple[float, int, int] | None = None
        self.cuts = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self.port = 0
        self.up()

    @property
    def endpoint(self) -> str:
        """URL to give the agent."""
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Accept connections (again, on the same port)."""
        if self._listener is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        stop = self._stop = threading.Event()
        threading.Thread(target=self._accept, args=(sock, stop), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._listener is not None:
            self._stop.set()
            self._listener.close()
            self._listener = None
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for s in conns:
            _reset(s)

    def close(self) -> None:
        """Stop for good."""
        self.down()

    def _accept(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                r, _, _ = select.select([sock], [], [], 0.1)
                if not r:
                    continue
                client, _ = sock.accept()
            except (OSError, ValueError):
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            budget = -1
            with self._lock:
                self.connections += 1
                if self.cut is not None and self.rng.random() < self.cut[0]:
                    budget = self.rng.randint(self.cut[1], self.cut[2])
                self._conns.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, budget), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, budget: int) -> None:
        moved = 0
        peer = {a: b, b: a}
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 1.0)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    if budget >= 0 and moved + len(data) >= budget:
                        keep = max(0, budget - moved)
                        if keep:
                            peer[s].sendall(data[:keep])
                        with self._lock:
                            self.cuts += 1
                        return
                    peer[s].sendall(data)
                    moved += len(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
            _reset(a)
            _reset(b)


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dropped link or a middlebox would."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.close()


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "3m") -> Iterator[bool]:
    """Mount a small tmpfs at ``path`` (needs root); yields False if it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.25)


def sleep_until(deadline: float, step: float = 0.25) -> None:
    """Sleep until ``deadline`` (monotonic), in small steps."""
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(step, left))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "produce":
        sys.exit(produce_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} produce --run-dir DIR --instance NAME [options]")
