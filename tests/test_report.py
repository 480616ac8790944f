"""``edge-actors report``: a known stream in an outbox and a sink tree -> one HTML page."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_actors.keys import object_key
from edge_actors.offline.report import MATPLOTLIB_MISSING, agent_runs, drift_episodes
from edge_actors.outbox import Outbox
from edge_actors.sinks.base import md5_b64
from edge_actors.sinks.local import LocalSink

pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parent.parent
DEVICE = "pi-report"
MODEL = "house"
T0 = time.time() - 2 * 3600  # two hours of data ending about now
N_SYSTEM = 240  # every 30 s
N_MODEL = 600
N_CHECKS = 120  # every 60 s per feature
PRICE_START, PRICE_END = T0 + 45 * 60, T0 + 75 * 60
NAN_START = T0 + 90 * 60  # never resolved


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(
    t: float, feature: str, test: str, state: str, stat: float, thr: float
) -> dict[str, Any]:
    return {
        "time": _iso(t),
        "ts": t,
        "device_id": DEVICE,
        "model": MODEL,
        "feature": feature,
        "test": test,
        "state": state,
        "statistic": stat,
        "p_value": None if test != "ks" else 0.5,
        "threshold": thr,
        "correction": "bonferroni",
        "window_size": 500,
        "n_ref": 2000,
        "seq_first": 0,
        "seq_last": 499,
        "reference_hash": "abc123",
    }


def make_streams() -> dict[str, list[dict[str, Any]]]:
    """System samples, model records, checks of 2 features (one drift episode), NaN alarms."""
    system = []
    for i in range(N_SYSTEM):
        t = T0 + 30 * i
        system.append(
            {
                "time": _iso(t),
                "ts": t,
                "device_id": DEVICE,
                "cpu_percent": 40 + 30 * math.sin(i / 20),
                "mem_percent": 55 + i / 24,
                "swap_percent": 2.0,
                "disk_percent": 31.0,
                "temp_max_c": 52 + 8 * math.sin(i / 35),
                "cpu_freq_mhz": 1500.0,
                "cpu_per_core": [10.0, 20.0],
            }
        )
    model = [
        {
            "time": _iso(T0 + 12 * i),
            "ts": T0 + 12 * i,
            "device_id": DEVICE,
            "model": MODEL,
            "id": i,
            "kind": "pair",
            "lane": "lane0",
            "lane_seq": i,
            "inputs": {"price": 100.0 + i, "sqft": 1200.0},
            "outputs": {"score": 0.5},
        }
        for i in range(N_MODEL)
    ]
    events: list[dict[str, Any]] = []
    for i in range(N_CHECKS):
        t = T0 + 60 * i + 5
        drifting = PRICE_START - 120 <= t <= PRICE_END
        events.append(_event(t, "price", "ks", "check", 0.35 if drifting else 0.05, 0.2))
        events.append(_event(t + 1, "sqft", "ks", "check", 0.06, 0.2))
    events.append(_event(PRICE_START, "price", "ks", "drift_started", 0.41, 0.2))
    events.append(_event(PRICE_END, "price", "ks", "drift_resolved", 0.08, 0.2))
    events.append(_event(NAN_START, "sqft", "nan_rate", "drift_started", 0.27, 0.12))
    events.sort(key=lambda e: e["ts"])
    drops = [
        {
            "ts": T0 + 600,
            "time": _iso(T0 + 600),
            "device_id": DEVICE,
            "stream": "system",
            "reason": "ring_overrun",
            "dropped": 7,
            "total": 7,
        }
    ]
    return {"system": system, "model": model, "events": events, "drops": drops}


def ship(outbox: Outbox, root: Path, *, batches: int | None, unacked: str | None) -> None:
    """Upload like the uploader: ``batches`` per stream (None = all), then one unacked."""
    sink = LocalSink(root)
    for stream in ("system", "model", "events", "drops"):
        done = 0
        while batches is None or done < batches:
            b = outbox.next_batch(stream, 50)
            if b is None:
                break
            body = gzip.compress(b.body)
            key = object_key("", stream, DEVICE, b.date_utc, b.first_seq, b.last_seq)
            sink.put(key, body, md5_b64(body))
            outbox.ack(b)
            done += 1
    if unacked is not None:
        # Written to the sink but not acknowledged: in both places (de-duplicated).
        b = outbox.next_batch(unacked, 50)
        assert b is not None
        body = gzip.compress(b.body)
        key = object_key("", unacked, DEVICE, b.date_utc, b.first_seq, b.last_seq)
        sink.put(key, body, md5_b64(body))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose outbox + local sink hold the streams, and a fully shipped copy."""
    base = tmp_path_factory.mktemp("report")
    streams = make_streams()
    cfg = {
        "device_id": DEVICE,
        "data_dir": str(base / "data"),
        "run_dir": str(base / "run"),
        "model": {"name": MODEL, "inputs": ["price", "sqft"], "outputs": ["score"]},
        "storage": {"type": "local"},
    }
    (base / "config.yaml").write_text(yaml.safe_dump(cfg))
    with Outbox.open(base / "data" / "outbox.db", max_bytes=64 << 20, chunk_records=50) as ob:
        ob.append(streams)
        ship(ob, base / "data" / "sink", batches=2, unacked="system")
    with Outbox.open(base / "full" / "outbox.db", max_bytes=64 << 20, chunk_records=50) as ob:
        ob.append(streams)
        ship(ob, base / "tree", batches=None, unacked=None)
    return base


def run(*args: str, pre: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m edge_actors ARGS``, optionally after ``pre`` (Python run first)."""
    code = f"{pre}\nimport sys\nfrom edge_actors.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def stream_counts(page: str) -> dict[str, int]:
    table = re.search(r'<div id="streams">(.*?)</table>', page, re.S)
    assert table is not None
    return {
        m[1]: int(m[2].replace(",", ""))
        for m in re.finditer(r"<tr><td>(\w+)</td><td class=\"n\">([\d,]+)</td>", table[1])
    }


CHARTS = (
    "chart-drift-price",
    "chart-drift-sqft",
    "chart-quality-sqft",
    "chart-system-cpu",
    "chart-system-mem",
    "chart-system-temp",
    "chart-model-rate",
)


def check_page(page: str, open_episode: str = "ongoing") -> None:
    for chart in CHARTS:
        m = re.search(
            rf'<img id="{chart}" alt="[^"]+" data-points="\d+" src="data:image/png;base64,([^"]+)"',
            page,
        )
        assert m is not None, chart
        assert base64.b64decode(m[1]).startswith(b"\x89PNG\r\n\x1a\n"), chart
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    assert stream_counts(page) == {
        "drops": 1,
        "events": 2 * N_CHECKS + 3,
        "model": N_MODEL,
        "system": N_SYSTEM,
    }
    episodes = re.search(r'<div id="episodes">(.*?)</table>', page, re.S)
    assert episodes is not None
    rows = re.findall(r"<tr>(.*?)</tr>", episodes[1], re.S)[1:]
    assert len(rows) == 2
    price = dt.datetime.fromtimestamp(PRICE_START, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    resolved = dt.datetime.fromtimestamp(PRICE_END, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert "<td>price</td><td>ks</td><td>distribution</td>" in rows[0]
    assert price in rows[0] and resolved in rows[0] and "30m<" in rows[0]
    assert "<td>sqft</td><td>nan_rate</td><td>data quality</td>" in rows[1]
    assert open_episode in rows[1]
    assert '<td>system</td><td>ring_overrun</td><td class="n">7</td>' in page
    assert f"<td>{DEVICE}</td>" in page and f"<td>{MODEL}</td>" in page


def test_report_from_sink_tree(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.html"
    r = run("report", "--from", str(data_dir / "tree"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    check_page(page)
    assert "duplicates" not in page


def test_report_from_config_reads_outbox_and_sink_read_only(data_dir: Path, tmp_path: Path) -> None:
    db = data_dir / "data" / "outbox.db"
    files_before = sorted(p.name for p in db.parent.iterdir())
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    out = tmp_path / "out.html"
    r = run("report", "-c", str(data_dir / "config.yaml"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    # Neither source alone holds everything: the counts prove both were read,
    # and the unacked batch (in both) was counted once. No agent runs for this
    # config (its socket does not answer): the open episode ended with the run.
    check_page(page, open_episode="agent stopped")
    assert "50 records in both outbox and sink" in page
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in db.parent.iterdir()) == files_before


def test_report_since_keeps_recent_records(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.html"
    # "since" counts back from now, and the data ends at import time of this module:
    # widen the window by the time elapsed since then (a whole loaded suite can run
    # half an hour before this test), so it covers the last 30 of 120 minutes of data.
    since_h = 0.5 + (time.time() - (T0 + 2 * 3600)) / 3600
    r = run("report", "--from", str(data_dir / "tree"), "-o", str(out), "--since", f"{since_h:.4f}")
    assert r.returncode == 0, r.stderr
    counts = stream_counts(out.read_text())
    assert 55 <= counts["system"] <= 62
    assert "drops" not in counts


def test_report_without_matplotlib(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.html"
    r = run(
        "report",
        "-c",
        str(data_dir / "config.yaml"),
        "-o",
        str(out),
        pre="import sys; sys.modules['matplotlib'] = None",
    )
    assert r.returncode == 1
    assert r.stderr == f"edge-actors: {MATPLOTLIB_MISSING}\n"
    assert MATPLOTLIB_MISSING == "the report needs matplotlib: pip install 'edge-actors[report]'"
    assert not out.exists()


def test_agent_modules_do_not_import_matplotlib() -> None:
    r = run(
        "--help",
        pre="import atexit, sys; atexit.register(lambda: print('matplotlib' in sys.modules))",
    )
    assert r.returncode == 0
    assert r.stdout.strip().endswith("False")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "{tmp}/missing"], "missing: not a directory"),
        (["--from", "{tmp}"], "no edge-actors objects"),
        (["--from", "{data}/tree", "--device", "other"], "no objects of device 'other'"),
        (["--from", "{data}/tree", "-o", "{tmp}/no/such/dir/r.html"], "does not exist"),
        (["-c", "{tmp}/empty.yaml"], "no data: neither the outbox"),
        (["-c", "{tmp}/bad-outbox.yaml"], "not a database"),
    ],
)
def test_report_bad_inputs(data_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty.yaml").write_text(
        yaml.safe_dump({"data_dir": str(tmp_path / "nothing"), "device_id": DEVICE})
    )
    bad = tmp_path / "bad" / "outbox.db"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not sqlite" * 100)
    (tmp_path / "bad-outbox.yaml").write_text(
        yaml.safe_dump({"data_dir": str(tmp_path / "bad"), "device_id": DEVICE})
    )
    argv = [a.format(tmp=tmp_path, data=data_dir) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "r.html")]
    r = run("report", *argv)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-actors: "), r.stderr
    assert message in lines[0]
    assert bad.read_bytes() == b"this is not sqlite" * 100


def test_report_several_devices_need_device(data_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "fleet"
    for dev in ("a", "b"):
        key = object_key("fleet/", "system", dev, dt.date(2024, 5, 1), 0, 0)
        path = tree.joinpath(*key.split("/"))
        path.parent.mkdir(parents=True)
        path.write_bytes(gzip.compress(b'{"seq":0,"ts":1714521600.0,"cpu_percent":5}\n'))
    r = run("report", "--from", str(tree), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 1
    assert "several devices (a, b): choose one with --device" in r.stderr
    r = run("report", "--from", str(tree), "-o", str(tmp_path / "r.html"), "--device", "b")
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r.html").read_text()
    assert stream_counts(page) == {"system": 1}
    assert 'id="chart-system-cpu"' in page and 'id="episodes-none"' in page
    assert 'id="quality-none"' in page and "No data-quality alarms" in page


def test_report_needs_a_source() -> None:
    r = run("report", "-o", "x.html")
    assert r.returncode == 2


def test_drift_episodes_pairs_events() -> None:
    evs = [
        _event(10, "a", "ks", "drift_resolved", 0.1, 0.2),  # start before the range
        _event(20, "a", "ks", "drift_started", 0.3, 0.2),
        _event(25, "a", "ks", "check", 0.5, 0.2),
        _event(30, "a", "ks", "drift_started", 0.4, 0.2),  # per_check repeat: same episode
        _event(40, "a", "ks", "drift_resolved", 0.1, 0.2),
        _event(50, "b", "nan_rate", "drift_started", 0.3, 0.1),
        _event(60, "a", "ks", "check", 0.9, 0.2),  # outside any episode
    ]
    eps = drift_episodes(evs)
    assert [(e.feature, e.test, e.start, e.end) for e in eps] == [
        ("a", "ks", None, 10),
        ("a", "ks", 20, 40),
        ("b", "nan_rate", 50, None),
    ]
    assert eps[1].peak == 0.5 and eps[1].threshold == 0.2
    assert eps[2].quality and not eps[1].quality


def test_render_escapes_names_from_the_data() -> None:
    from edge_actors.offline.report import Dataset, StreamInfo, render_html

    evil = '<img src=x onerror="alert(1)">'
    data = Dataset(device=evil, model=evil)
    data.events = [_event(T0 + 60 * i, evil, "ks", "check", 0.1, 0.2) for i in range(3)] + [
        _event(T0 + 90, evil, "ks", "drift_started", 0.3, 0.2)
    ]
    data.streams["events"] = StreamInfo(4, T0, T0 + 120)
    page = render_html(data)
    assert evil not in page
    assert html_escaped(evil) in page
    assert 'id="chart-drift-_img_src_x_onerror_alert_1_"' in page


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


# ----------------------------------------------------- runs that stopped, in a browser

#: Two runs of a demo-like agent three hours ago (2 s samples, 10 s checks), 10 minutes apart.
OLD = time.time() - 3 * 3600
RUN1 = (OLD, OLD + 420)
RUN2 = (OLD + 1020, OLD + 1400)


def stopped_runs_streams() -> dict[str, list[dict[str, Any]]]:
    """Run 1 ends with sqft drifting; run 2 resolves a new sqft episode, leaves price open."""
    system, events = [], []
    for a, b in (RUN1, RUN2):
        t = a
        while t <= b:
            system.append(
                {
                    "time": _iso(t),
                    "ts": t,
                    "device_id": DEVICE,
                    # The ML app saturates the CPU: 100 % must be visible, not hidden by the frame.
                    "cpu_percent": 100.0,
                    "mem_percent": 60.0,
                    "swap_percent": 0.0,
                    "disk_percent": 40.0,
                    "temp_max_c": None,
                }
            )
            if round(t - a) % 10 == 0 and t > a:
                for feature in ("sqft", "price"):
                    events.append(_event(t + 0.5, feature, "ks", "check", 0.05, 0.0836))
            t += 2.0
    events += [
        _event(OLD + 200.5, "sqft", "ks", "drift_started", 0.3, 0.0836),
        _event(OLD + 1100.5, "sqft", "ks", "drift_started", 0.3, 0.0836),
        _event(OLD + 1300.5, "sqft", "ks", "drift_resolved", 0.05, 0.0836),
        _event(OLD + 1350.5, "price", "ks", "drift_started", 0.2, 0.0836),
    ]
    model = [
        {"ts": t, "time": _iso(t), "device_id": DEVICE, "model": MODEL, "id": i}
        for i, t in enumerate(r["ts"] for r in system)
    ]
    return {"system": system, "events": sorted(events, key=lambda e: e["ts"]), "model": model}


def write_tree(root: Path, streams: dict[str, list[dict[str, Any]]]) -> None:
    """Each stream as objects of 100 records under the uploader's keys."""
    sink = LocalSink(root)
    for stream, recs in streams.items():
        for first in range(0, len(recs), 100):
            chunk = recs[first : first + 100]
            body = gzip.compress(
                b"".join(
                    (json.dumps({"seq": first + i, **r}) + "\n").encode()
                    for i, r in enumerate(chunk)
                )
            )
            day = dt.datetime.fromtimestamp(chunk[0]["ts"], dt.timezone.utc).date()
            key = object_key("", stream, DEVICE, day, first, first + len(chunk) - 1)
            sink.put(key, body, md5_b64(body))


def test_agent_runs_split_at_gaps() -> None:
    streams = stopped_runs_streams()
    runs = agent_runs([r["ts"] for r in streams["system"]])
    assert runs == [RUN1, RUN2]
    assert agent_runs([]) == []
    assert agent_runs([5.0]) == [(5.0, 5.0)]


def test_episodes_of_stopped_runs_end_with_the_run() -> None:
    streams = stopped_runs_streams()
    runs = agent_runs([r["ts"] for r in streams["system"]])
    eps = drift_episodes(streams["events"], runs, live=False)
    got = [(e.feature, e.start, e.end, e.run_ended) for e in eps]
    assert got == [
        ("sqft", OLD + 200.5, RUN1[1], True),
        ("sqft", OLD + 1100.5, OLD + 1300.5, False),
        ("price", OLD + 1350.5, RUN2[1], True),
    ]
    # An agent that still runs: the last run's open episode is ongoing, run 1's is not.
    eps = drift_episodes(streams["events"], runs, live=True)
    assert [(e.end, e.run_ended) for e in eps] == [
        (RUN1[1], True),
        (OLD + 1300.5, False),
        (None, False),
    ]
    # A drift_resolved after a restart closes the episode the checkpoint carried over.
    evs = [
        _event(OLD + 200.5, "sqft", "ks", "drift_started", 0.3, 0.1),
        _event(OLD + 1100.5, "sqft", "ks", "drift_resolved", 0.05, 0.1),
    ]
    eps = drift_episodes(evs, runs, live=False)
    assert [(e.start, e.end, e.run_ended) for e in eps] == [(OLD + 200.5, OLD + 1100.5, False)]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


#: Read by the browser, after the page loaded: each image's decoded size (in a copy of
#: the page only: the report itself carries no script).
PROBE = (
    "<script>addEventListener('load',()=>{for(const i of document.images)"
    "{i.dataset.decoded=i.naturalWidth+'x'+i.naturalHeight}"
    "document.body.dataset.loaded='yes'})</script>"
)


def browser_dom(page: Path, tmp_path: Path) -> str:
    """The DOM of ``page`` after Chromium loaded and decoded it (headless)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    r = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'data-loaded="yes"' in r.stdout, r.stderr[-2000:]
    return r.stdout


def browser_charts(dom: str) -> dict[str, tuple[int, str]]:
    """``{chart id: (data points, decoded WxH)}`` of every image in the DOM."""
    out = {}
    for tag in re.findall(r"<img [^>]*>", dom):
        chart = re.search(r'id="([^"]+)"', tag)
        points = re.search(r'data-points="(\d+)"', tag)
        decoded = re.search(r'data-decoded="(\d+x\d+)"', tag)
        assert chart and points and decoded, tag[:200]
        out[chart[1]] = (int(points[1]), decoded[1])
    return out


def episode_rows(dom: str) -> list[list[str]]:
    table = re.search(r'<div id="episodes">(.*?)</table>', dom, re.S)
    assert table is not None
    rows = re.findall(r"<tr>(.*?)</tr>", table[1], re.S)[1:]
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows
    ]


@pytest.mark.slow
def test_report_of_stopped_runs_in_a_real_browser(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write_tree(tree, stopped_runs_streams())
    out = tmp_path / "report.html"
    r = run("report", "--from", str(tree), "-o", str(out))
    assert r.returncode == 0, r.stderr
    dom = browser_dom(out, tmp_path)
    charts = browser_charts(dom)
    assert set(charts) == {
        "chart-drift-sqft",
        "chart-drift-price",
        "chart-system-cpu",
        "chart-system-mem",
        "chart-system-disk",
        "chart-model-rate",
    }
    for chart, (points, decoded) in charts.items():
        assert decoded == "1100x280" or decoded.startswith("1100x"), (chart, decoded)
        # A 7-minute run with 10 s checks: dozens of points, not two.
        assert points >= 20, (chart, points)

    def fmt(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    rows = episode_rows(dom)
    assert [(r[0], r[4], r[5]) for r in rows] == [
        # A run ends with the agent's last record: its last check, half a second late.
        ("sqft", f"agent stopped {fmt(RUN1[1] + 0.5)}", "3m 40s"),
        ("sqft", fmt(OLD + 1300.5), "3m 20s"),
        ("price", f"agent stopped {fmt(RUN2[1] + 0.5)}", "50s"),
    ], rows
    assert "ongoing" not in dom.split('<div id="episodes">')[1].split("</table>")[0]
    assert "0 still open" in dom


@pytest.mark.slow
def test_report_of_a_live_agent_in_a_real_browser(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    r = run("report", "--from", str(data_dir / "tree"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    charts = browser_charts(browser_dom(out, tmp_path))
    assert set(charts) == {*CHARTS, "chart-system-disk"}
    for chart, (points, decoded) in charts.items():
        # A data-quality chart of alarms only (checks carry no rates) has one marker per alarm.
        least = 1 if chart.startswith("chart-quality") else 20
        assert points >= least and decoded.startswith("1100x"), (chart, points, decoded)
    rows = episode_rows(browser_dom(out, tmp_path))
    assert [r[4] for r in rows][1] == "ongoing"
