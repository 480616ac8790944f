"""The sampler on a machine where part of /proc cannot be read.

qemu-user 7.2 (Debian bookworm) fails ``open('/proc/stat')`` with ELOOP;
containers and hardened kernels hide other /proc files. The read really fails
here: the agent runs with ``psutil.PROCFS_PATH`` (psutil's documented knob)
pointing at a copy of /proc whose ``stat`` is a symlink to itself, so every
``open`` of it raises ELOOP exactly as under qemu. Nothing of ours is patched.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_actors.offline.status_view import render
from tests.conftest import REPO

ONLY_SAMPLER_AND_UPLOADER = {"workers": {"drift": {"enabled": False}}}

#: Runs the agent's CLI with psutil reading another procfs (inherited by the forked workers).
RUN_WITH_PROCFS = (
    "import runpy, sys, psutil\n"
    "psutil.PROCFS_PATH = sys.argv.pop(1)\n"
    "sys.argv[0] = 'edge_actors'\n"
    "runpy.run_module('edge_actors', run_name='__main__', alter_sys=True)\n"
)


def _procfs_without(tmp: Path, *unreadable: str) -> Path:
    """A copy of /proc (symlinks to the real entries) where ``unreadable`` fail with ELOOP."""
    fake = tmp / "proc"
    fake.mkdir()
    for entry in os.listdir("/proc"):
        if entry not in unreadable:
            (fake / entry).symlink_to(f"/proc/{entry}")
    for entry in unreadable:
        (fake / entry).symlink_to(fake / entry)  # a loop: open() fails with ELOOP
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        (fake / unreadable[0]).read_bytes()
    return fake


def _system_rows(data_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((data_dir / "sink" / "system").rglob("*.ndjson.gz")):
        with gzip.open(path, "rt") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def test_unreadable_proc_stat_degrades_instead_of_crash_looping(
    make_config, agent, tmp_path: Path
) -> None:
    fake = _procfs_without(tmp_path, "stat")
    a = agent(make_config(ONLY_SAMPLER_AND_UPLOADER), start=False)
    a._log = open(a.log_path, "ab")  # noqa: SIM115 (closed by a.stop())
    a.proc = subprocess.Popen(
        [sys.executable, "-c", RUN_WITH_PROCFS, str(fake), "run", "-c", str(a.config)],
        stdout=a._log,
        stderr=subprocess.STDOUT,
        env=a.env,
        cwd=REPO,
    )
    a.wait_running()
    st = a.wait_for(
        lambda s: (
            next(r["written"] for r in s["rings"] if r["kind"] == "system") >= 5
            and bool((s["workers"]["sampler"].get("stats") or {}).get("unavailable"))
        )
    )
    sampler = st["workers"]["sampler"]
    # Still the first sampler: no crash, no restart.
    assert sampler["restarts"] == 0 and sampler["state"] == "running", sampler
    missing = sampler["stats"]["unavailable"]
    # Everything psutil takes from /proc/stat is marked, with the reason.
    assert {"cpu_percent", "cpu_per_core"} <= set(missing), missing
    assert "/stat" in missing["cpu_percent"] and "symbolic links" in missing["cpu_percent"]
    # What other files give is still collected, and uptime does not need /proc/stat.
    assert "mem_total" not in missing and "uptime_s" not in missing, missing
    assert "unavailable: cpu_percent" in render(st)

    # The system stream: the missing metrics are null, the others are there.
    rows: list[dict[str, Any]] = []
    end = time.monotonic() + 15
    while time.monotonic() < end and len(rows) < 3:
        time.sleep(0.2)
        rows = _system_rows(Path(a.cfg["data_dir"]))
    assert len(rows) >= 3, a.log()
    for row in rows:
        assert row["cpu_percent"] is None and row["cpu_per_core"] == []
        assert row["mem_total"] > 0 and row["mem_available"] > 0
        assert row["uptime_s"] > 0

    assert a.stop() == 0
    log = a.log()
    # Logged once, at WARNING, however many samples were taken.
    warnings = [ln for ln in log.splitlines() if "WARNING" in ln and "cpu_percent" in ln]
    assert len(warnings) == 1, log
    assert "Traceback" not in log, log
