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
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_actors import control, keys
from edge_actors.config import ConfigError, parse_config
from edge_actors.producer import Producer
from edge_actors.sinks.base import PermanentSinkError, md5_b64
from edge_actors.sinks.local import LocalSink
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
        s.sendall(data)
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
        return buf, closed


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

    def as_nobody(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
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
