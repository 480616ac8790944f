"""``fleet summary --format html``: the page, rendered headless in a real browser.

The harness is the device report's (tests/test_report.py: Chromium loads the
page, a probe script records each image's decoded size); the test is skipped
with its reason where Chromium is absent.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_report import browser_charts, browser_dom

pytest.importorskip("duckdb")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parent.parent
SIM = REPO / "benchmarks" / "fleet_sim.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=REPO
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """12 devices x 1 day with the problems planted; the HTML summary at the simulated end."""
    out = tmp_path_factory.mktemp("fleet-html")
    r = _run(str(SIM), "--devices", "12", "--days", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    manifest: dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
    html = out / "fleet.html"
    r = _run(
        "-m", "edge_actors", "fleet", "summary", "--source", manifest["sink"],
        "--as-of", manifest["end"], "--format", "html", "-o", str(html),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return html, manifest


def _attention(dom: str) -> dict[str, list[str]]:
    table = re.search(r'<div id="attention">(.*?)</table>', dom, re.S)
    assert table is not None, "no needs-attention table"
    out: dict[str, list[str]] = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table[1], re.S)[1:]:
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        out.setdefault(cells[1], []).append(cells[0])
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.slow
def test_fleet_page_in_a_real_browser(page: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    html, manifest = page
    text = html.read_text()
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    dom = browser_dom(html, tmp_path)
    charts = browser_charts(dom)
    assert set(charts) == {"chart-fleet-drift", "chart-fleet-heatmap", "chart-fleet-freshness"}
    for chart, (points, decoded) in charts.items():
        assert points > 0, chart
        w, h = (int(x) for x in decoded.split("x"))
        assert w > 100 and h > 100, (chart, decoded)
    # Every device has a last-seen point on the freshness chart.
    assert charts["chart-fleet-freshness"][0] == manifest["devices"]
    # The drift rows: the open episode and the one resolved in the window.
    assert charts["chart-fleet-drift"][0] >= 2 * 2
    # Needs attention names exactly the planted devices, and comes before the charts.
    planted = manifest["planted"]
    assert _attention(dom) == {r: planted[r] for r in ("drifting", "silent", "losing_data", "hot")}
    assert dom.index('id="attention"') < dom.index('id="totals"') < dom.index("<img")
