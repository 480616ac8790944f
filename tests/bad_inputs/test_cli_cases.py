"""CLI misuse: usage errors exit 2, a missing instance exits 4, a clash exits 4.

Every case asserts the exact last line the user sees (argparse's usage block
above it is argparse's business).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_actors.cli import build_parser
from tests.conftest import cli


def _commands() -> str:
    """The parser's commands as argparse lists them (new commands keep appearing)."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sub.choices is not None
    return ", ".join(repr(c) for c in sub.choices)


COMMANDS = _commands()

USAGE_ERRORS: list[tuple[list[str], str]] = [
    (
        ["frobnicate"],
        "edge-actors: error: argument COMMAND: invalid choice: 'frobnicate' "
        f"(choose from {COMMANDS})",
    ),
    (
        ["check-config"],
        "edge-actors check-config: error: the following arguments are required: file",
    ),
    (
        ["--log-format", "xml", "status"],
        "edge-actors: error: argument --log-format: invalid choice: 'xml' "
        "(choose from 'plain', 'json')",
    ),
    (
        ["--log-level", "LOUD", "status"],
        "edge-actors: error: argument --log-level: invalid choice: 'LOUD' "
        "(choose from 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')",
    ),
    (["status", "--bogus"], "edge-actors: error: unrecognized arguments: --bogus"),
    (
        ["stop", "--timeout", "soon"],
        "edge-actors stop: error: argument --timeout: invalid float value: 'soon'",
    ),
    (
        ["status", "--instance", "../etc"],
        "edge-actors status: error: argument --instance: "
        "must be 1 to 16 characters from A-Z a-z 0-9 _, got '../etc'",
    ),
    (
        ["stop", "--instance", "a/b"],
        "edge-actors stop: error: argument --instance: "
        "must be 1 to 16 characters from A-Z a-z 0-9 _, got 'a/b'",
    ),
    (["reference"], "edge-actors reference: error: the following arguments are required: ACTION"),
    (
        ["reference", "show"],
        "edge-actors reference show: error: the following arguments are required: REF",
    ),
    (
        ["reference", "build", "x.csv"],
        "edge-actors reference build: error: the following arguments are required: -o/--output",
    ),
    (
        ["reference", "build", "x.csv", "-o", "y.npz", "--cap", "0"],
        "edge-actors reference build: error: argument --cap: must be >= 1, got 0",
    ),
]


@pytest.mark.parametrize("args,last", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2(args: list[str], last: str) -> None:
    out = cli(*args)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.startswith("usage: edge-actors")
    assert out.stderr.splitlines()[-1] == last


def test_no_command_prints_help_and_exits_2() -> None:
    out = cli()
    assert out.returncode == 2 and out.stderr == ""
    assert out.stdout.startswith("usage: edge-actors") and "COMMAND" in out.stdout


def test_status_and_stop_of_an_instance_that_is_not_running(
    make_config: Callable[..., Path],
) -> None:
    path = make_config()
    cfg = yaml.safe_load(path.read_text())
    inst, sock = cfg["instance"], f"{cfg['run_dir']}/{cfg['instance']}.sock"
    why = f"no supervisor running for instance '{inst}' (no socket at {sock})"
    out = cli("status", "-c", str(path))
    assert (out.returncode, out.stdout, out.stderr) == (4, f"{inst}: not running ({why})\n", "")
    out = cli("status", "-c", str(path), "--json")
    assert out.returncode == 4
    assert out.stdout == f'{{"instance": "{inst}", "state": "not running", "error": "{why}"}}\n'
    out = cli("stop", "-c", str(path))
    assert (out.returncode, out.stdout, out.stderr) == (4, "", f"edge-actors: {why}\n")
    out = cli("status", "-c", str(path), "--instance", "other")
    assert out.returncode == 4 and "instance 'other'" in out.stdout


def test_stale_socket_file_is_not_running(make_config: Callable[..., Path]) -> None:
    # A socket file left by a killed supervisor: connect is refused, exit 4.
    path = make_config()
    cfg = yaml.safe_load(path.read_text())
    Path(cfg["run_dir"]).mkdir(parents=True)
    sock_path = f"{cfg['run_dir']}/{cfg['instance']}.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock_path)
    s.close()  # bound, never listening: ECONNREFUSED
    out = cli("status", "-c", str(path))
    assert out.returncode == 4
    assert out.stdout == (
        f"{cfg['instance']}: not running (no supervisor running for instance "
        f"'{cfg['instance']}' (no socket at {sock_path}))\n"
    )


def test_second_supervisor_for_the_same_instance(
    make_config: Callable[..., Path], agent: Callable[..., Any]
) -> None:
    path = make_config()
    a = agent(path)
    out = cli("run", "-c", str(path))
    assert (out.returncode, out.stdout) == (4, "")
    assert out.stderr == (
        f"edge-actors: instance '{a.cfg['instance']}' is already running (pid {a.pid}); "
        f"lock file {a.cfg['run_dir']}/{a.cfg['instance']}.pid\n"
    )
    # The loser removed nothing of the winner's: socket, rings and lock still work.
    s = a.status()
    assert s["state"] == "running" and s["pid"] == a.pid
    assert cli("status", "-c", str(path)).returncode == 0
    out = cli("stop", "-c", str(path))
    assert (out.returncode, out.stdout) == (0, f"{a.cfg['instance']}: stopped\n"), out.stderr
    assert a.proc is not None and a.proc.wait(10) == 0
