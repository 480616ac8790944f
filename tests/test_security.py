"""Security properties: file modes, peer uid check, no pickle, no secret in output, no escape.

The control socket and shared-memory segments are the agent's only entry
points from other processes; both are 0600 and the socket also checks the
peer's uid. Nothing any process can write to is ever unpickled. Credentials
never appear in logs or status. No config value can steer a write outside its
place in an S3 key or the local sink's directory.
"""

from __future__ import annotations

import ast
import datetime
import errno
import json
import os
import pickle
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge_actors import control, keys, topology
from edge_actors.cli import main as cli_main
from edge_actors.config import ConfigError, default_run_dir, load_config, parse_config
from edge_actors.producer import Producer
from edge_actors.ring import W_NCONS, W_PRODUCER_PID, W_WRITE_SEQ, Ring, RingError
from edge_actors.sinks.base import PermanentSinkError, md5_b64
from edge_actors.sinks.local import LocalSink
from edge_actors.supervisor import Supervisor  # noqa: F401 - imported before dropping to nobody
from tests.conftest import MODEL, REPO, cli

PACKAGE = REPO / "edge_actors"
NOBODY = 65534


def shm_segments(instance: str) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"ea_{instance}_"))


def exchange(path: str, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data``; return the first reply line and whether the server then closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused at accept: the reply is already queued for us
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return buf, True
            buf += chunk
        s.settimeout(1.0)
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:  # closed with our request unread
            closed = True
        return buf, closed


def as_nobody(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in a forked child switched to uid/gid 65534; return its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(w, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(out)  # type: ignore[no-any-return]


# ------------------------------------------------------------ modes and input
def test_segments_and_socket_are_private_and_junk_is_refused(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    a = agent(make_config({"workers": {"drift": {"enabled": False}}}))
    instance, run_dir = a.cfg["instance"], Path(a.cfg["run_dir"])
    sock = str(run_dir / f"{instance}.sock")
    p = Producer(run_dir, instance, MODEL["inputs"], MODEL["outputs"], payload=True)
    try:
        assert p.wait_attached(5), p.stats()
        p.log([1, 2, 3, 4], [5, 6])
        names = shm_segments(instance)
        assert len(names) >= 5, names  # system, procs, events, a lane, its payload ring
        for name in names:
            st = os.stat(f"/dev/shm/{name}")
            assert stat.S_IMODE(st.st_mode) == 0o600, name
            assert st.st_uid == os.getuid()
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(run_dir / f"{instance}.pid").st_mode) == 0o600

        # Nothing on the socket is ever unpickled: a pickle is just bad bytes.
        junk: list[tuple[bytes, str]] = [
            (
                pickle.dumps({"op": "status"}) + b"\n",
                "bad request: control messages must be UTF-8 JSON",
            ),
            (b"[1, 2]\n", "bad request: control message must be a JSON object"),
            (b'"status"\n', "bad request: control message must be a JSON object"),
            (
                b'{"op": "status"\n',
                "bad request: Expecting ',' delimiter: line 1 column 16 (char 15)",
            ),
            (b"x" * (control.MAX_MESSAGE + 10), "bad request: control message too long"),
        ]
        for data, error in junk:
            reply, closed = exchange(sock, data)
            assert json.loads(reply) == {"ok": False, "error": error}, data[:40]
            assert closed, data[:40]
        # Garbage that is not even UTF-8: an error (json's codec guess), then closed.
        reply, closed = exchange(sock, b"\x00\xff\xfe\x00 garbage\n")
        answer = json.loads(reply)
        assert answer["ok"] is False and answer["error"].startswith("bad request: ")
        assert closed
        # A pickle without a newline is never a complete message: closed, no answer.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(sock)
            s.sendall(pickle.dumps({"op": "status"}))
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""
        # An unknown op is an error but not a protocol violation: the connection stays.
        assert exchange(sock, b'{"op": "exec", "cmd": "id"}\n') == (
            b'{"ok":false,"error":"unknown op \'exec\'"}\n',
            False,
        )
        # The agent and the producer's lane are unharmed.
        s = a.status()
        assert s["state"] == "running" and all(w["restarts"] == 0 for w in s["workers"].values())
        assert p.attached and p.stats()["dropped_total"] == 0
        p.log([1, 2, 3, 4], [5, 6])
        assert p.stats()["written"] == 2
    finally:
        p.close()
    assert a.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid (65534)")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_another_uid_is_refused(
    make_config: Callable[..., Path], agent: Callable[..., Any], short_dir: Path
) -> None:
    a = agent(make_config({"workers": {"drift": {"enabled": False}}}))
    instance, run_dir = a.cfg["instance"], Path(a.cfg["run_dir"])
    sock = run_dir / f"{instance}.sock"
    segment = f"/dev/shm/{shm_segments(instance)[0]}"
    # Let the other user reach the directory, so only the file modes stand in the way.
    os.chmod(short_dir, 0o711)
    os.chmod(run_dir, 0o711)

    def connect_and_ask() -> dict[str, Any]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(str(sock))
        except OSError as exc:
            return {"connect_errno": exc.errno}
        try:
            s.sendall(b'{"op":"status"}\n')
        except OSError:
            pass  # already closed by the server
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
        return {"reply": data.decode(errors="replace")}

    def open_segment() -> dict[str, Any]:
        try:
            os.close(os.open(segment, os.O_RDWR))
        except OSError as exc:
            return {"errno": exc.errno}
        return {"errno": 0}

    try:
        assert as_nobody(connect_and_ask) == {"connect_errno": errno.EACCES}
        assert as_nobody(open_segment) == {"errno": errno.EACCES}
        # Past the file mode (as if someone widened it), SO_PEERCRED still refuses.
        os.chmod(sock, 0o666)
        got = as_nobody(connect_and_ask)
        assert got == {"reply": '{"ok":false,"error":"permission denied"}\n'}
    finally:
        os.chmod(sock, 0o600)
        os.chmod(run_dir, 0o700)
        os.chmod(short_dir, 0o700)
    assert f"refused a control connection from uid {NOBODY}" in a.log()
    assert a.status()["state"] == "running"
    assert a.stop() == 0


# ------------------------------------------------------------------- no pickle
def _python_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    return files


def test_no_pickle_anywhere_in_the_package() -> None:
    unsafe_modules = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal"}
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mods = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not mods & unsafe_modules, f"{path}:{node.lineno} imports {mods}"
        assert "import pickle" not in path.read_text(), path


def test_np_load_always_refuses_pickles_and_yaml_is_safe() -> None:
    loads = 0
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else ""
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name in ("np", "numpy") and node.func.attr == "load":
                loads += 1
                kw = {k.arg: k.value for k in node.keywords}
                flag = kw.get("allow_pickle")
                assert isinstance(flag, ast.Constant) and flag.value is False, where
            if name == "yaml":
                assert node.func.attr not in ("load", "load_all", "unsafe_load", "full_load"), where
            if name == "multiprocessing" or node.func.attr in ("Listener", "Client"):
                pytest.fail(f"{where}: multiprocessing connections unpickle what they receive")
    assert loads >= 2


def test_yaml_python_tag_is_rejected_and_runs_nothing(short_dir: Path) -> None:
    marker = short_dir / "pwned"
    cfg = short_dir / "evil.yaml"
    cfg.write_text(f'instance: !!python/object/apply:os.system ["touch {marker}"]\n')
    out = cli("check-config", str(cfg))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        f"edge-actors: invalid config:\n{cfg}: invalid YAML at line 1, column 11: could not "
        "determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'\n"
    )
    out = cli("run", "-c", str(cfg))
    assert out.returncode == 1
    assert not marker.exists()


# ----------------------------------------------------------------- no secrets
ACCESS_KEY = "AKIAEDGELEAKCANARY42"
SECRET_KEY = "edgeSecretCanary/Zq9+doNotLeak0123456789"
SESSION_TOKEN = "edgeSessionCanaryTokenXYZ987"


def test_credentials_never_appear_in_logs_or_status(
    make_config: Callable[..., Path], agent: Callable[..., Any], s3_server: str, short_dir: Path
) -> None:
    empty = short_dir / "aws-none"
    empty.write_text("")
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    cfg = make_config(
        {
            "model_logging": {"log_level": "DEBUG"},
            "storage": {
                "type": "s3",
                "bucket": "edge-no-such-bucket-canary",
                "endpoint_url": s3_server,
                "region": "us-east-1",
            },
            "telemetry": {"retry_base_delay_seconds": 0.1, "retry_max_delay_seconds": 0.5},
        }
    )
    a = agent(cfg, env=env)
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    try:
        assert p.wait_attached(5)
        for i in range(20):
            p.log([1, 2, 3, float(i)], [4, 5])
        s = a.wait_for(lambda s: s["workers"]["uploader"]["stats"].get("last_error"))
        assert "NoSuchBucket" in s["workers"]["uploader"]["stats"]["last_error"]
        time.sleep(0.5)  # a few more failed rounds into the log
        texts = {
            "status": cli("status", "-c", str(cfg)).stdout,
            "status --json": cli("status", "-c", str(cfg), "--json").stdout,
            "live status": json.dumps(a.status()),
        }
    finally:
        p.close()
    assert a.stop() == 0
    texts["agent log"] = a.log()
    for path in Path(a.cfg["data_dir"]).rglob("*"):
        if path.is_file():  # the outbox keeps last errors: they must be clean too
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert "edge-no-such-bucket-canary" in texts["status"]
    for where, text in texts.items():
        for secret in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, "edgeSecretCanary"):
            assert secret not in text, f"{secret!r} leaked into {where}"


# ------------------------------------------------------------ no path escape
def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(data, Path("/tmp"), "c.yaml")
    return str(e.value)


DEVICE_RULE = "must be 1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
INSTANCE_RULE = "must be 1 to 16 characters from A-Z a-z 0-9 _"
ESCAPES: list[tuple[dict[str, Any], str]] = [
    ({"device_id": "../x"}, f"c.yaml: device_id: {DEVICE_RULE}, got '../x'"),
    ({"device_id": "a/b"}, f"c.yaml: device_id: {DEVICE_RULE}, got 'a/b'"),
    ({"device_id": "x/../../y"}, f"c.yaml: device_id: {DEVICE_RULE}, got 'x/../../y'"),
    ({"device_id": "ok..x"}, "c.yaml: device_id: must not contain '..', got 'ok..x'"),
    ({"device_id": "a\0b"}, f"c.yaml: device_id: {DEVICE_RULE}, got 'a\\x00b'"),
    (
        {"device_id": "d" * 300},
        f"c.yaml: device_id: {DEVICE_RULE}, got '{'d' * 80}'... (300 characters)",
    ),
    ({"instance": "../x"}, f"c.yaml: instance: {INSTANCE_RULE}, got '../x'"),
    ({"instance": "a/b"}, f"c.yaml: instance: {INSTANCE_RULE}, got 'a/b'"),
    ({"instance": "a\0"}, f"c.yaml: instance: {INSTANCE_RULE}, got 'a\\x00'"),
    ({"instance": "i" * 17}, f"c.yaml: instance: {INSTANCE_RULE}, got '{'i' * 17}'"),
    (
        {"storage": {"prefix": "../"}},
        "c.yaml: storage.prefix: must not contain a '..' segment, got '../'",
    ),
    (
        {"storage": {"prefix": "a/../../b"}},
        "c.yaml: storage.prefix: must not contain a '..' segment, got 'a/../../b'",
    ),
    (
        {"storage": {"prefix": "..\\evil"}},
        "c.yaml: storage.prefix: must not contain a '..' segment, got '..\\\\evil'",
    ),
    (
        {"storage": {"prefix": "/abs/"}},
        "c.yaml: storage.prefix: must not start with '/', got '/abs/'",
    ),
    (
        {"storage": {"prefix": "a\0/"}},
        "c.yaml: storage.prefix: must not contain NUL or control characters, got 'a\\x00/'",
    ),
    (
        {"storage": {"prefix": "p" * 257}},
        "c.yaml: storage.prefix: must be at most 256 characters, got 257",
    ),
    ({"model": {"name": "../m"}}, f"c.yaml: model.name: {DEVICE_RULE}, got '../m'"),
]


@pytest.mark.parametrize("data,msg", ESCAPES, ids=[json.dumps(d)[:40] for d, _ in ESCAPES])
def test_config_rejects_values_that_could_escape(data: dict[str, Any], msg: str) -> None:
    assert config_error({"device_id": "dev", **data}) == msg


DAY = datetime.date(2024, 5, 1)
KEY_ESCAPES: list[tuple[tuple[str, str, str], str]] = [
    (("", "model", "../x"), "device_id: must be non-empty, without '/', not '.' or '..': '../x'"),
    (("", "model", ".."), "device_id: must be non-empty, without '/', not '.' or '..': '..'"),
    (("", "model", "a/b"), "device_id: must be non-empty, without '/', not '.' or '..': 'a/b'"),
    (("", "model", ""), "device_id: must be non-empty, without '/', not '.' or '..': ''"),
    (("", "model", "a\0b"), "device_id: contains a NUL or control character: 'a\\x00b'"),
    (("", "model", "a\\..\\b"), "device_id: contains a backslash: 'a\\\\..\\\\b'"),
    (("../", "model", "dev"), "prefix: must not contain a '..' segment, got '../'"),
    (("a/../", "model", "dev"), "prefix: must not contain a '..' segment, got 'a/../'"),
    (("a/..", "model", "dev"), "prefix: must not contain a '..' segment, got 'a/..'"),
    (("/abs/", "model", "dev"), "prefix: must not start with '/', got '/abs/'"),
    (("x\0/", "model", "dev"), "prefix: must not contain NUL or control characters, got 'x\\x00/'"),
    (
        ("", "../model", "dev"),
        "stream: must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 64 chars), got '../model'",
    ),
    (
        ("", "model/x", "dev"),
        "stream: must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 64 chars), got 'model/x'",
    ),
]


@pytest.mark.parametrize("args,msg", KEY_ESCAPES, ids=[repr(a) for a, _ in KEY_ESCAPES])
def test_object_key_rejects_values_that_could_escape(args: tuple[str, str, str], msg: str) -> None:
    with pytest.raises(ValueError) as e:
        keys.object_key(*args, DAY, 0, 9)
    assert str(e.value) == msg


def test_object_key_rejects_a_very_long_device_id() -> None:
    with pytest.raises(ValueError) as e:
        keys.object_key("", "model", "d" * 1100, DAY, 0, 9)
    assert (
        str(e.value) == f"key: longer than 1024 bytes in UTF-8: '{('model/device=' + 'd' * 67)}'..."
    )


def test_local_sink_never_writes_outside_its_root(short_dir: Path) -> None:
    root = short_dir / "sink" / "root"
    sink = LocalSink(root)
    body = b"payload"
    crafted = [
        "../escape.ndjson.gz",
        "../../escape.ndjson.gz",
        "model/../../escape.ndjson.gz",
        "/tmp/escape.ndjson.gz",
        f"/{short_dir}/escape.ndjson.gz",
        "model/device=x/\0/escape",
        "model//escape",
        "./escape",
        "model/.",
        "",
    ]
    for key in crafted:
        with pytest.raises(PermanentSinkError) as e:
            sink.put(key, body, md5_b64(body))
        assert str(e.value) == f"refusing unsafe object key {key!r} (a bug: report it)"
    assert not root.exists()  # nothing created, not even the root
    assert sorted(p.name for p in short_dir.rglob("*")) == []
    assert not Path("/tmp/escape.ndjson.gz").exists()
    with pytest.raises(ValueError) as e2:
        LocalSink(root, prefix="../")
    assert str(e2.value) == "prefix: must not contain a '..' segment, got '../'"
    # A normal key lands below the root, and only there.
    key = keys.object_key("fleet/", "model", "dev", DAY, 0, 9)
    sink.put(key, body, md5_b64(body))
    assert (root / key).read_bytes() == body
    assert [p for p in short_dir.rglob("*") if p.is_file()] == [root / key]


# ------------------------------------------------- hostile local users (issue 11)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
no_fork_warning = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
ONLY_SAMPLER = {"workers": {"drift": {"enabled": False}, "uploader": {"enabled": False}}}


def test_deeply_nested_json_is_refused_and_the_agent_keeps_running(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    a = agent(make_config({"workers": {"drift": {"enabled": False}}}))
    sock = str(Path(a.cfg["run_dir"]) / f"{a.cfg['instance']}.sock")
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    try:
        assert p.wait_attached(5), p.stats()
        p.log([1, 2, 3, 4], [5, 6])
        for deep in (
            b'{"op":"ping","x":' + b"[" * 50_000 + b"]" * 50_000 + b"}\n",
            b'{"op":"ping","x":' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b"}\n",
            b'{"op":"ping","x":' + b"[" * 33 + b"]" * 33 + b"}\n",
        ):
            reply, closed = exchange(sock, deep)
            assert json.loads(reply) == {
                "ok": False,
                "error": "bad request: control message nested deeper than 32 levels",
            }
            assert closed
        # Shallow nesting is fine, and so is every other client.
        assert exchange(sock, b'{"op":"ping","x":[[[1]]]}\n')[0].startswith(b'{"ok":true')
        assert a.proc.poll() is None
        s = a.status()
        assert s["state"] == "running" and all(w["restarts"] == 0 for w in s["workers"].values())
        assert p.attached and p.stats()["dropped_total"] == 0
    finally:
        p.close()
    assert a.stop() == 0


def test_an_unexpected_supervisor_error_keeps_the_rings_for_the_next_start(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    first = make_config(ONLY_SAMPLER)
    instance = yaml.safe_load(first.read_text())["instance"]
    a = agent(first)
    p = Producer(a.cfg["run_dir"], instance, MODEL["inputs"], MODEL["outputs"])
    try:
        assert p.wait_attached(5)
        for i in range(200):
            p.log([1, 2, 3, float(i)], [5, 6])
        lane = p.stats()["lane"]
        a.wait_for(lambda s: all(r["written"] > 0 for r in s["rings"] if r["kind"] != "events"))
        # A bug in the supervisor's loop (simulated: EDGE_ACTORS_DEBUG is on in tests).
        assert a.request({"op": "debug", "action": "raise"})["ok"]
        assert a.proc.wait(10) == 1
        assert "unexpected error; rings kept for the next start" in a.log()
        # Nothing that holds a record is unlinked (the empty events ring may go)...
        kinds = {"l0": "lane", "sys": "system", "proc": "procs"}
        assert shm_segments(instance) == sorted(
            topology.ring_name(instance, k) for k in kinds.values()
        )
        # ...and the next supervisor adopts them, so the uploader gets all 200.
        second = make_config({"instance": instance}, name="second.yaml")
        b = agent(second)
        b.wait_for(
            lambda s: any(
                r["name"] == lane and r["written"] == 200 and r["consumers"][0]["read_seq"] == 200
                for r in s["rings"]
            )
        )
        assert p.stats()["dropped_total"] == 0
    finally:
        p.close()


def test_a_scribbled_lane_header_is_retired_and_reported(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    a = agent(make_config({"workers": {"drift": {"enabled": False}}}))
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    try:
        assert p.wait_attached(5)
        p.log([1, 2, 3, 4], [5, 6])
        lane = p.stats()["lane"]
        ring = Ring.attach(lane)
        epoch = ring.epoch
        ring.words[W_NCONS] = 1000  # what a stray write into the header could do
        ring.close()
        s = a.wait_for(lambda s: bool(s.get("invalid_lanes")))
        assert s["invalid_lanes"] == [
            {
                "lane": lane,
                "pid": os.getpid(),
                "problem": "header changed under the supervisor: consumer count 1000, expected 2",
            }
        ]
        assert "invalid header" in a.log()
        # The agent is unharmed; the producer gets a fresh lane and carries on.
        assert all(w["restarts"] == 0 for w in s["workers"].values())
        assert p.wait_attached(5)
        s = a.wait_for(lambda s: any(r["kind"] == "lane" for r in s["rings"]))
        assert all(r["epoch"] != epoch for r in s["rings"] if r["kind"] == "lane")
        p.log([1, 2, 3, 4], [5, 6])
        assert a.proc.poll() is None
    finally:
        p.close()
    assert a.stop() == 0


def test_an_adopted_lane_with_a_scribbled_producer_pid_is_not_trusted(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    path = make_config(ONLY_SAMPLER)
    a = agent(path)
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    assert p.wait_attached(5)
    p.log([1, 2, 3, 4], [5, 6])
    lane = p.stats()["lane"]
    os.kill(a.pid, signal.SIGKILL)
    a.proc.wait(5)
    p.close()
    ring = Ring.attach(lane)
    ring.words[W_PRODUCER_PID] = 1 << 40  # os.kill(2**40, 0) raises OverflowError
    ring.close()
    b = agent(path)
    # Adopted as orphaned; its "producer" cannot be alive: retired, drained, removed.
    b.wait_for(lambda s: not any(r["kind"] == "lane" for r in s["rings"]))
    assert b.proc.poll() is None
    assert b.stop() == 0


def test_ring_attach_bounds_every_header_value(segs: Any) -> None:
    from edge_actors.ring import W_CAPACITY, W_SLOT_SIZE

    dtype = np.dtype([("x", "<f8")])
    for word, value, problem in (
        (W_NCONS, 1000, "consumer count 1000 (1..30)"),
        (W_NCONS, 0, "consumer count 0 (1..30)"),
        (W_CAPACITY, 3, "capacity 3 is not a power of two >= 2"),
        (W_CAPACITY, 1 << 40, "1099511627776 slots of 16 bytes do not fit in"),
        (W_SLOT_SIZE, 4, "slot size 4"),
    ):
        name = segs.new()
        ring = Ring.create(name, dtype, 16, 2)
        ring.words[word] = value
        ring.close()
        for d in (dtype, None):
            with pytest.raises(RingError) as e:
                Ring.attach(name, d)
            assert problem in str(e.value), (word, value, d)


@needs_root
@no_fork_warning
def test_segments_planted_by_another_user_are_not_adopted(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    path = make_config({"workers": {"drift": {"enabled": False}}})
    cfg = load_config(path)
    events = topology.ring_name(cfg.instance, "events")
    lane0 = topology.ring_name(cfg.instance, "lane", 0)

    def plant() -> dict[str, Any]:
        for name, kind, n in ((events, "events", 3), (lane0, "lane", 50)):
            ring = Ring.create(
                name,
                topology.dtype_for(kind, cfg),
                topology.capacity_for(kind, cfg),
                topology.consumers_for(kind),
            )
            ring.writer().write_batch(np.zeros(n, topology.dtype_for(kind, cfg)))
            os.chmod(f"/dev/shm/{name}", 0o666)
            ring.close()
        return {}

    as_nobody(plant)
    a = agent(path)
    s = a.status()
    assert next(r for r in s["rings"] if r["kind"] == "events")["written"] == 0
    assert not any(r["kind"] == "lane" for r in s["rings"]) and s["producers"] == []
    st = os.stat(f"/dev/shm/{events}")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    assert not os.path.exists(f"/dev/shm/{lane0}")
    log = a.log()
    assert f"{events!r} is owned by uid 65534 with mode 0666" in log
    assert "removed" in log
    assert a.stop() == 0


@needs_root
@no_fork_warning
def test_an_agent_that_cannot_remove_a_planted_segment_refuses_to_start(
    make_config: Callable[..., Path], short_dir: Path
) -> None:
    """A non-root agent cannot unlink root's segment in sticky /dev/shm: it says so and exits."""
    path = make_config({"workers": {"drift": {"enabled": False}}})
    cfg = load_config(path)
    events = topology.ring_name(cfg.instance, "events")
    os.chmod(short_dir, 0o755)
    os.chown(short_dir, NOBODY, NOBODY)
    fd = os.open(f"/dev/shm/{events}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    os.fchmod(fd, 0o666)
    os.ftruncate(fd, 1 << 16)
    os.close(fd)
    try:
        code, stderr = _run_as_nobody(["run", "-c", str(path)], short_dir / "stderr")
    finally:
        for name in shm_segments(cfg.instance):
            os.unlink(f"/dev/shm/{name}")
    assert code == 4, stderr
    assert (
        f"edge-actors: shared memory {events!r} is owned by uid 0 with mode 0666, expected "
        "uid 65534 and mode 0600, and cannot be removed (Permission denied)" in stderr
    )


def _run_as_nobody(argv: list[str], err: Path, timeout: float = 20.0) -> tuple[int | None, str]:
    """``edge-actors ARGV`` in a forked child as uid nobody, without $XDG_RUNTIME_DIR.

    In-process (the interpreter under /root is not nobody's to run). Returns the
    exit code (None if it was still running after ``timeout``: killed) and stderr.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sys.stderr = open(err, "w")  # noqa: SIM115
            os.environ.pop("XDG_RUNTIME_DIR", None)
            _drop_to_nobody()
            code = cli_main(argv)
        finally:
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), err.read_text()
        time.sleep(0.05)
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    return None, err.read_text()


def _drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


# ------------------------------------------------------------------ run_dir
def _refused(path: Path, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """``edge-actors run``, expected to refuse at once (killed if it starts instead)."""
    try:
        return cli("run", "-c", str(path), timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("the agent started instead of refusing")


@needs_root
@pytest.mark.parametrize("case", ["other_owner", "world_writable", "symlink", "parent_owner"])
def test_a_run_dir_made_by_someone_else_is_refused(
    case: str, make_config: Callable[..., Path], short_dir: Path
) -> None:
    run_dir = short_dir / "run"
    if case == "other_owner":
        run_dir.mkdir(mode=0o700)
        os.chown(run_dir, NOBODY, NOBODY)
        why = " is owned by uid 65534, not by uid 0 that runs the agent"
    elif case == "world_writable":
        run_dir.mkdir()
        os.chmod(run_dir, 0o777)
        why = " is writable by group or others (mode 0777)"
    elif case == "symlink":
        (short_dir / "elsewhere").mkdir(mode=0o700)
        run_dir.symlink_to(short_dir / "elsewhere")
        why = " is a symbolic link"
    else:
        (short_dir / "theirs").mkdir(mode=0o755)
        os.chown(short_dir / "theirs", NOBODY, NOBODY)
        run_dir = short_dir / "theirs" / "run"
        run_dir.mkdir(mode=0o700)
        why = f": its parent {short_dir / 'theirs'} is owned by uid 65534"
    out = _refused(make_config({"run_dir": str(run_dir)}))
    assert out.returncode == 4
    assert out.stderr.startswith(f"edge-actors: run_dir {run_dir}{why}"), out.stderr
    assert "fix:" in out.stderr
    assert [p.name for p in run_dir.iterdir()] == []  # no socket, no pid file


def test_a_pid_file_symlink_is_not_followed(
    make_config: Callable[..., Path], agent: Callable[..., Any], short_dir: Path
) -> None:
    path = make_config(ONLY_SAMPLER)
    instance = yaml.safe_load(path.read_text())["instance"]
    victim = short_dir / "precious"
    victim.write_text("important\n")
    run_dir = short_dir / "run"
    run_dir.mkdir(mode=0o700)
    (run_dir / f"{instance}.pid").symlink_to(victim)
    a = agent(path, start=False)
    a.start(wait=False)
    assert a.proc is not None
    try:
        code = a.proc.wait(15)
    except subprocess.TimeoutExpired:
        code = None
    assert victim.read_text() == "important\n"
    assert code == 4
    assert f"lock file {run_dir / instance}.pid is a symbolic link" in a.log()


def test_default_run_dir_prefers_private_places(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_dir))
    assert default_run_dir() == short_dir / "edge-actors"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    if os.access("/run", os.W_OK):
        assert default_run_dir() == Path("/run/edge-actors")
    else:
        assert default_run_dir() == Path(f"/tmp/edge-actors-{os.getuid()}")


@needs_root
@no_fork_warning
def test_default_run_dir_under_tmp_is_verified_not_trusted(
    make_config: Callable[..., Path], short_dir: Path
) -> None:
    """Without $XDG_RUNTIME_DIR or /run, a user falls back to /tmp, where anyone could
    have made the directory first: the agent refuses one that is not its own."""
    planted = Path(f"/tmp/edge-actors-{NOBODY}")
    if planted.exists() or planted.is_symlink():
        pytest.skip(f"{planted} exists on this machine")
    path = make_config(ONLY_SAMPLER)
    data = yaml.safe_load(path.read_text())
    del data["run_dir"]
    path.write_text(yaml.safe_dump(data))
    os.chown(short_dir, NOBODY, NOBODY)  # the agent's data_dir goes there
    planted.mkdir()
    os.chmod(planted, 0o777)
    try:
        code, stderr = _run_as_nobody(["run", "-c", str(path)], short_dir / "stderr")
    finally:
        shutil.rmtree(planted)
        for name in shm_segments(data["instance"]):
            os.unlink(f"/dev/shm/{name}")
    assert code == 4, stderr
    assert stderr.startswith(
        f"edge-actors: run_dir {planted} is owned by uid 0, not by uid 65534 that runs the agent"
    )


# ------------------------------------------- the producer checks who it talks to
def _fake_supervisor(sock_path: Path, lane: str, cfg: Any, seconds: float) -> None:
    """Answer lane requests on ``sock_path`` with ``lane``, as a hostile server would."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock_path))
    os.chmod(sock_path, 0o777)
    srv.listen(8)
    srv.settimeout(0.2)
    reply = control.encode(
        {
            "ok": True,
            "lane": lane,
            "capacity": topology.capacity_for("lane", cfg),
            "epoch": 1,
            "inputs": [{"name": n, "kind": "numeric", "categories": []} for n in MODEL["inputs"]],
            "outputs": [{"name": n, "kind": "numeric", "categories": []} for n in MODEL["outputs"]],
            "payload": None,
            "payload_slot_bytes": 1024,
        }
    )
    held = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            c, _ = srv.accept()
        except TimeoutError:
            continue
        try:
            c.recv(65536)
            c.sendall(reply)
        except OSError:  # the producer hung up (as it should)
            c.close()
            continue
        held.append(c)
    srv.close()


def _written(name: str) -> int:
    """write_seq of a segment, read from the file (no attach, no owner check)."""
    with open(f"/dev/shm/{name}", "rb") as f:
        return int(np.frombuffer(f.read(4096), np.int64)[W_WRITE_SEQ])


@needs_root
@no_fork_warning
def test_the_producer_refuses_a_supervisor_of_another_user(
    make_config: Callable[..., Path], short_dir: Path
) -> None:
    """Whoever swapped the socket (here uid nobody) gets no record from a root application."""
    cfg = load_config(make_config())
    run_dir = short_dir / "theirs"
    run_dir.mkdir(mode=0o755)
    os.chown(run_dir, NOBODY, NOBODY)
    os.chmod(short_dir, 0o755)
    lane = topology.ring_name(cfg.instance, "lane", 0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the attacker: a lane of its own and a socket that hands it out
        code = 1
        try:
            os.close(r)
            _drop_to_nobody()
            ring = Ring.create(lane, topology.dtype_for("lane", cfg), 1024, 2)
            os.chmod(f"/dev/shm/{lane}", 0o666)
            os.write(w, b"ready")
            os.close(w)
            _fake_supervisor(run_dir / f"{cfg.instance}.sock", lane, cfg, 8.0)
            ring.close()
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        assert os.read(r, 5) == b"ready"
        os.close(r)
        p = Producer(run_dir, cfg.instance, MODEL["inputs"], MODEL["outputs"])
        try:
            time.sleep(1.5)  # several attach attempts
            for i in range(50):
                p.log([1, 2, 3, float(i)], [5, 6])
            st = p.stats()
        finally:
            p.close()
        assert not st["attached"]
        # Held in the process for a lane of its own agent, never written to theirs.
        assert st["written"] == 0 and st["pending"] == 50
        assert "belongs to uid 65534" in st["last_error"], st
        assert _written(lane) == 0
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if os.path.exists(f"/dev/shm/{lane}"):
            os.unlink(f"/dev/shm/{lane}")


@needs_root
@no_fork_warning
def test_the_producer_refuses_a_lane_segment_of_another_user(
    make_config: Callable[..., Path], short_dir: Path
) -> None:
    """Even from a server of its own uid, a lane owned by someone else (or 0666) is refused."""
    cfg = load_config(make_config())
    lane = topology.ring_name(cfg.instance, "lane", 7)

    def plant() -> dict[str, Any]:
        Ring.create(lane, topology.dtype_for("lane", cfg), 1024, 2).close()
        os.chmod(f"/dev/shm/{lane}", 0o666)
        return {}

    as_nobody(plant)
    run_dir = short_dir / "run"
    run_dir.mkdir(mode=0o700)
    server = threading.Thread(
        target=_fake_supervisor, args=(run_dir / f"{cfg.instance}.sock", lane, cfg, 3.0)
    )
    server.start()
    try:
        p = Producer(run_dir, cfg.instance, MODEL["inputs"], MODEL["outputs"])
        try:
            time.sleep(1.0)
            for i in range(50):
                p.log([1, 2, 3, float(i)], [5, 6])
            st = p.stats()
        finally:
            p.close()
        assert not st["attached"]
        assert f"{lane!r} is owned by uid 65534 with mode 0666" in st["last_error"], st
        assert _written(lane) == 0
    finally:
        server.join()
        os.unlink(f"/dev/shm/{lane}")


# ------------------------------------------------------ file descriptors, memory
def _idle_connections(sock: str, n: int) -> list[socket.socket]:
    """Open up to ``n`` connections that never send anything (a full backlog stops it)."""
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(sock)
        except BlockingIOError:  # the listen backlog is full
            s.close()
            break
        conns.append(s)
    return conns


def test_running_out_of_file_descriptors_does_not_kill_the_supervisor(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    a = agent(
        make_config(
            {
                "workers": {"drift": {"enabled": False}},
                # So high that only the kernel's limit stops it.
                "supervisor": {"max_clients": 5000, "client_idle_timeout_seconds": 1.0},
            }
        )
    )
    sock = str(Path(a.cfg["run_dir"]) / f"{a.cfg['instance']}.sock")
    p = Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
    conns: list[socket.socket] = []
    try:
        assert p.wait_attached(5)
        # A real `ulimit -n 128` on the running supervisor (it has ~20 open now).
        resource.prlimit(a.pid, resource.RLIMIT_NOFILE, (128, 128))
        for _ in range(6):  # accepted until EMFILE, then queued in the backlog
            conns += _idle_connections(sock, 100)
            time.sleep(0.2)
        assert len(conns) > 128
        for i in range(100):
            p.log([1, 2, 3, float(i)], [5, 6])
        assert a.proc.poll() is None, a.log()
        # Idle clients time out, accepting resumes: the CLI and the workers are served.
        s = a.wait_for(
            lambda s: any(
                r["kind"] == "lane" and r["consumers"][0]["read_seq"] == 100 for r in s["rings"]
            ),
            timeout=30,
        )
        assert all(w["restarts"] == 0 for w in s["workers"].values())
        log = a.log()
        assert "out of file descriptors" in log
        assert log.count("out of file descriptors") <= 5, log
        assert p.attached and p.stats()["dropped_total"] == 0
    finally:
        for c in conns:
            c.close()
        p.close()
    assert a.stop() == 0


def test_control_clients_are_capped_and_idle_ones_closed(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    a = agent(
        make_config(
            {**ONLY_SAMPLER, "supervisor": {"max_clients": 8, "client_idle_timeout_seconds": 5.0}}
        )
    )
    sock = str(Path(a.cfg["run_dir"]) / f"{a.cfg['instance']}.sock")
    a.wait_for(lambda s: s["control_connections"] == 1)  # only this status request
    conns = _idle_connections(sock, 8)
    try:
        # One more is told why it is refused, and closed.
        reply, closed = exchange(sock, b'{"op":"ping"}\n')
        assert json.loads(reply) == {
            "ok": False,
            "error": "too many control connections (supervisor.max_clients = 8)",
        }
        assert closed
        # The idle ones are closed after client_idle_timeout_seconds; then all is served.
        for c in conns:
            c.setblocking(True)
            c.settimeout(20)
            assert c.recv(100) == b""
        assert exchange(sock, b'{"op":"ping"}\n')[0].startswith(b'{"ok":true')
        assert "refused a control connection: 8 open, supervisor.max_clients = 8" in a.log()
        assert a.status()["state"] == "running"
    finally:
        for c in conns:
            c.close()
    assert a.stop() == 0


def _mb(n: int) -> float:
    return n / 2**20


def test_lanes_past_the_shared_memory_budget_are_refused(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    path = make_config(ONLY_SAMPLER)
    cfg = load_config(path)
    fixed = sum(
        Ring.layout_size(topology.dtype_for(k, cfg), topology.capacity_for(k, cfg))[1]
        for k in ("system", "procs", "events")
    )
    lane = Ring.layout_size(topology.dtype_for("lane", cfg), topology.capacity_for("lane", cfg))[1]
    budget = round(_mb(fixed + 2.5 * lane), 3)
    a = agent(make_config({**ONLY_SAMPLER, "supervisor": {"shm_budget_mb": budget}}))
    producers = [
        Producer(a.cfg["run_dir"], a.cfg["instance"], MODEL["inputs"], MODEL["outputs"])
        for _ in range(3)
    ]
    try:
        time.sleep(1.0)
        attached = [p for p in producers if p.wait_attached(3)]
        assert len(attached) == 2
        refused = next(p for p in producers if not p.attached)
        refused.log([1, 2, 3, 4], [5, 6])
        st = refused.stats()
        assert st["written"] == 0 and st["pending"] == 1  # held until a lane is given
        assert st["last_error"].startswith(
            f"shared-memory budget exhausted: a new lane needs {_mb(lane):.1f} MB, "
            f"{_mb(fixed + 2 * lane):.1f} MB of supervisor.shm_budget_mb = {budget:g} MB in use"
        ), st
        # Refused once per retry, but said in the log only once.
        time.sleep(1.0)
        assert a.log().count("shared-memory budget exhausted") == 1, a.log()
        # A lane given back makes room.
        attached[0].close()
        assert refused.wait_attached(5)
    finally:
        for p in producers:
            p.close()
    assert a.stop() == 0


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_full_dev_shm_is_logged_once_not_per_retry(
    make_config: Callable[..., Path], short_dir: Path
) -> None:
    """The agent gets a private /dev/shm just big enough for its own rings."""
    path = make_config(ONLY_SAMPLER)
    cfg = load_config(path)
    fixed = sum(
        Ring.layout_size(topology.dtype_for(k, cfg), topology.capacity_for(k, cfg))[1]
        for k in ("system", "procs", "events")
    )
    size_kb = fixed // 1024 + 64
    script = (
        f"mount -t tmpfs -o size={size_kb}k tmpfs /dev/shm && "
        f"exec {sys.executable} -m edge_actors run -c {path}"
    )
    log_path = short_dir / "agent.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                control.request(cfg.run_dir, cfg.instance, {"op": "ping"})
                break
            except control.ControlError:
                time.sleep(0.1)
        p = Producer(cfg.run_dir, cfg.instance, MODEL["inputs"], MODEL["outputs"])
        try:
            time.sleep(2.5)  # a dozen attach attempts
            st = p.stats()
        finally:
            p.close()
        assert not st["attached"]
        assert "not enough shared memory" in st["last_error"], st
        log = log_path.read_text()
        assert log.count("cannot create lane") == 1, log
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, log_path.read_text()
