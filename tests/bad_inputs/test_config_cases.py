"""Bad config files: ``edge-actors check-config FILE`` prints every error, exit code 1.

The static corpus is ``cases/config/*.yaml``; each ``.expected`` holds the exact
error lines. The runtime cases at the end are configs that load fine but point
at something broken (a missing reference file, a data_dir that cannot exist):
the agent must say so clearly, not crash silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bad_inputs import CASES
from tests.conftest import REPO, cli

CONFIG_CASES = sorted((CASES / "config").glob("*.yaml"))
HEADER = "edge-actors: invalid config:\n"


def rel(path: Path) -> str:
    """The path as a user would type it from the repo root (cli() runs there)."""
    return os.path.relpath(path, REPO)


def test_corpus_is_complete() -> None:
    assert len(CONFIG_CASES) >= 40
    for case in CONFIG_CASES:
        assert case.with_suffix(".expected").exists(), f"{case.name} has no .expected"


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.stem for c in CONFIG_CASES])
def test_check_config_reports_exact_errors(case: Path) -> None:
    arg = rel(case)
    want = case.with_suffix(".expected").read_text().replace("{file}", arg)
    out = cli("check-config", arg)
    assert (out.returncode, out.stdout) == (1, ""), out.stderr
    assert out.stderr == HEADER + want


def test_several_errors_are_all_reported_in_file_order() -> None:
    lines = (CASES / "config" / "several_errors.expected").read_text().splitlines()
    paths = [line.split(": ")[1] for line in lines]
    assert paths == [
        "instance",
        "device_id",
        "system.sampling_interval_seconds",
        "system.max_memory_bufer_mb",
        "storage.bucket",
        "storage.prefix",
        "workers.drift.memory_limit_mb",
        "workers.uplodaer",
    ]


def test_missing_config_file(short_dir: Path) -> None:
    path = str(short_dir / "nope.yaml")
    out = cli("check-config", path)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"{HEADER}{path}: config file not found\n"


def test_python_tag_runs_nothing() -> None:
    marker = Path("/tmp/edge-actors-pwned")
    marker.unlink(missing_ok=True)
    out = cli("check-config", rel(CASES / "config" / "python_tag.yaml"))
    assert out.returncode == 1 and "could not determine a constructor" in out.stderr
    assert not marker.exists()


def test_run_with_a_bad_config_starts_nothing(short_dir: Path) -> None:
    arg = rel(CASES / "config" / "several_errors.yaml")
    want = (CASES / "config" / "several_errors.expected").read_text().replace("{file}", arg)
    out = cli("run", "-c", arg)
    assert (out.returncode, out.stdout, out.stderr) == (1, "", HEADER + want)


# ---------------------------------------------------------------- runtime cases
def test_missing_reference_file_is_reported_in_status(
    make_config: Callable[..., Path], agent: Callable[..., Any], short_dir: Path
) -> None:
    # check-config says so first; an agent started anyway runs, and the drift
    # worker reports it and keeps running (a crash loop would take the agent down).
    ref = short_dir / "no-such-reference.json"
    cfg = make_config({"drift_detection": {"reference_data_path": str(ref)}})
    out = cli("check-config", str(cfg))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"edge-actors: invalid reference:\n{ref}: file not found\n"
    a = agent(cfg)
    s = a.wait_for(lambda s: s["workers"]["drift"]["stats"].get("error"))
    drift = s["workers"]["drift"]
    assert drift["stats"]["error"] == f"{ref}: file not found"
    assert drift["state"] == "running" and drift["restarts"] == 0
    out = cli("status", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert f"drift:\n  error: {ref}: file not found\n" in out.stdout
    out = cli("status", "-c", str(cfg), "--json")
    assert json.loads(out.stdout)["workers"]["drift"]["stats"]["error"] == f"{ref}: file not found"
    assert f"drift detection is off: {ref}: file not found" in a.log()
    assert a.stop() == 0


def test_data_dir_that_cannot_exist_keeps_the_agent_up_and_recovers(
    make_config: Callable[..., Path], agent: Callable[..., Any], short_dir: Path
) -> None:
    # A regular file as parent gives ENOTDIR even for root. The uploader stays
    # up (a crash loop would make the supervisor give up and stop logging),
    # says why in status, and recovers once the path becomes usable.
    (short_dir / "afile").write_text("")
    data_dir = short_dir / "afile" / "data"
    cfg = make_config(
        {
            "data_dir": str(data_dir),
            "workers": {"drift": {"enabled": False}},
            "supervisor": {"max_restarts": 2, "restart_period_seconds": 60},
        }
    )
    assert cli("check-config", str(cfg)).returncode == 0
    a = agent(cfg)
    st = a.wait_for(lambda s: s["workers"]["uploader"]["stats"].get("error"))
    up = st["workers"]["uploader"]
    assert up["state"] == "running" and up["restarts"] == 0
    assert up["stats"]["error"] == (
        f"cannot open the outbox {data_dir}/outbox.db: [Errno 20] Not a directory: '{data_dir}'"
    )
    out = cli("status", "-c", str(cfg))
    assert f"uploader:\n  error: cannot open the outbox {data_dir}/outbox.db" in out.stdout
    # Fix the path: the uploader opens the outbox by itself and system samples flow.
    (short_dir / "afile").unlink()
    a.wait_for(
        lambda s: (
            not s["workers"]["uploader"]["stats"].get("error")
            and s["workers"]["uploader"]["stats"].get("ingested", 0) > 0
        ),
        timeout=30,
    )
    assert a.stop() == 0
