"""The agent and the producer without orjson (Debian armel has no wheel): stdlib json fallback.

The end-to-end test really runs without orjson: the agent and the producer
are started with ``sys.modules["orjson"] = None``, which makes ``import
orjson`` raise ImportError exactly as on a board where it is not installed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from edge_actors import _jsonfallback, control
from tests.conftest import MODEL, REPO
from tests.test_pipeline import sink_records

NO_ORJSON = "import sys\nsys.modules['orjson'] = None\n"
RUN_AGENT = (
    NO_ORJSON + "import runpy\nsys.argv[0] = 'edge_actors'\n"
    "runpy.run_module('edge_actors', run_name='__main__', alter_sys=True)\n"
)
PRODUCE = NO_ORJSON + (
    "import json\n"
    "from edge_actors import jsoncompat\n"
    "assert jsoncompat.FALLBACK\n"
    "from edge_actors.producer import Producer\n"
    "run_dir, instance, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "p = Producer(run_dir, instance, {!r}, {!r})\n"
    "assert p.wait_attached(10), p.stats()\n"
    "for i in range(n):\n"
    "    p.log([3, 2, float('nan') if i % 7 == 0 else 1500.0, float(i)], [300000.0, 0.9])\n"
    "print(json.dumps(p.stats()))\n"
    "p.close()\n"
).format(MODEL["inputs"], MODEL["outputs"])

DOCS: list[Any] = [
    {"a": 1, "b": [1.5, None, True, False], "c": 'é ✓ \n "q"', "d": {"e": {}}},
    {"nan": math.nan, "inf": [math.inf, -math.inf], "big": 1e300, "small": 5e-324},
    {"arr": np.arange(6, dtype=np.float64).reshape(2, 3), "i": np.int64(7), "f": np.float32(0.5)},
    {"nanarr": np.array([1.0, np.nan, np.inf]), "ints": np.array([1, 2], dtype=np.int32)},
    {1: "int key", 2.5: "float key", None: "null key"},
    {"when": dt.datetime(2026, 11, 29, 13, 0, 0, 123456, tzinfo=dt.timezone.utc)},
    {"set_via_default": {3}, "tuple": (1, 2)},
    [[[[[]]]]],
    "just a string",
    12345678901234567890,
]


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


@pytest.mark.parametrize("doc", DOCS, ids=range(len(DOCS)))
def test_fallback_encodes_like_orjson(doc: Any) -> None:
    opts = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    want = orjson.dumps(doc, default=_default, option=opts)
    got = _jsonfallback.dumps(doc, default=_default, option=opts)
    assert json.loads(got) == json.loads(want)
    assert b"NaN" not in got and b"Infinity" not in got and b": " not in got


def test_fallback_options_are_orjsons_and_sort_keys_is_honoured() -> None:
    # The outbox hashes a block schema by its sorted-key text: a fallback that
    # ignored OPT_SORT_KEYS (or lacked the name) crashed the uploader on every step.
    for name in ("OPT_NON_STR_KEYS", "OPT_SERIALIZE_NUMPY", "OPT_SORT_KEYS"):
        assert getattr(_jsonfallback, name) == getattr(orjson, name)
    doc = {"b": 1, "a": [1.5, None], "c": {"z": 1, "y": 2}, 3: "x"}
    opt = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    assert _jsonfallback.dumps(doc, option=opt) == orjson.dumps(doc, option=opt)


def test_fallback_decodes_and_refuses_like_orjson() -> None:
    for text in (b'{"a": [1, 2.5, null, "\\u00e9"]}', b"[]", '{"x": 1}'):
        assert _jsonfallback.loads(text) == orjson.loads(text)
    for bad in (b"NaN", b'{"a": Infinity}', b"{", b"\xff", b'{"a": 1} x'):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(bad)
        with pytest.raises(_jsonfallback.JSONDecodeError) as info:
            _jsonfallback.loads(bad)
        assert isinstance(info.value, ValueError)
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(_jsonfallback.JSONDecodeError, match=r"^depth limit exceeded"):
        _jsonfallback.loads(deep)
    with pytest.raises(_jsonfallback.JSONEncodeError):
        _jsonfallback.dumps({"x": object()})


def test_control_decode_without_orjson_keeps_its_limits() -> None:
    """The control protocol's bounds (depth, NaN, non-objects) hold on the fallback."""
    code = NO_ORJSON + (
        "from edge_actors import control, jsoncompat\n"
        "assert jsoncompat.FALLBACK\n"
        'print(control.decode(b\'{"op": "status", "x": [1, NaN]}\')[\'op\'])\n'
        "for bad in (b'{\"a\": ' + b'[' * 50 + b']' * 50 + b'}', b'[1]', b'{\"a\": 1'):\n"
        "    try:\n"
        "        control.decode(bad)\n"
        "    except ValueError as exc:\n"
        "        print(str(exc)[:40])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "status"
    assert "nested deeper than" in lines[1]
    assert "must be a JSON object" in lines[2]
    assert len(lines) == 4
    assert "orjson is not installed" in out.stderr
    assert control.decode(b'{"op": "ping"}') == {"op": "ping"}  # and with orjson, as before


def test_agent_and_producer_without_orjson_deliver_everything(make_config, agent) -> None:
    a = agent(make_config({"workers": {"drift": {"enabled": False}}}), start=False)
    a._log = open(a.log_path, "ab")  # noqa: SIM115 (closed by a.stop())
    a.proc = subprocess.Popen(
        [sys.executable, "-c", RUN_AGENT, "run", "-c", str(a.config)],
        stdout=a._log,
        stderr=subprocess.STDOUT,
        env=a.env,
        cwd=REPO,
    )
    a.wait_running()
    n = 2000
    prod = subprocess.run(
        [sys.executable, "-c", PRODUCE, a.cfg["run_dir"], a.cfg["instance"], str(n)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert prod.returncode == 0, prod.stderr
    assert json.loads(prod.stdout.splitlines()[-1])["written"] == n
    sink = Path(a.cfg["data_dir"]) / "sink"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(sink_records(sink, "model")) < n:
        time.sleep(0.2)
    recs = sink_records(sink, "model")
    assert sorted(int(r["inputs"]["age"]) for r in recs) == list(range(n)), a.log()
    nan_rows = [r for r in recs if int(r["inputs"]["age"]) % 7 == 0]
    assert nan_rows and all(r["inputs"]["sqft"] is None for r in nan_rows)  # NaN -> null
    assert sink_records(sink, "system"), "system stream shipped too"
    st = a.status()  # the agent decodes this request on the fallback
    assert st["workers"]["uploader"]["restarts"] == 0
    assert a.stop() == 0
    log = a.log()
    assert "orjson is not installed" in log
    assert "Traceback" not in log, log
