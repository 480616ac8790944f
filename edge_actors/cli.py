"""The ``edge-actors`` command: run, status, stop, check-config, reference.

Errors are one line on stderr with a clear exit code, no traceback unless
``--debug``. Exit codes: 0 ok, 1 bad input (config, reference), 2 usage,
3 the supervisor gave up after too many restarts, 4 not running / unreachable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from edge_actors import __version__
from edge_actors.offline.fleet.cli import add_fleet_parser
from edge_actors.offline.reference_cli import add_reference_parser
from edge_actors.offline.report import add_report_parser

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 4
#: What a shell reports for a process killed by SIGPIPE (128 + 13): ``status | head``.
EXIT_BROKEN_PIPE = 141

log = logging.getLogger("edge_actors.cli")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, for journald/Loki/Fluent Bit pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def setup_logging(level: str, fmt: str) -> None:
    """Configure the ``edge_actors`` logger tree (not the root logger) for the CLI."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s")
        )
    root = logging.getLogger("edge_actors")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _load(path: str | None) -> Any:
    from edge_actors.config import load_config

    return load_config(path)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the supervisor in the foreground."""
    # One BLAS thread per process: the agent does small vector work, and each
    # extra OpenBLAS thread costs memory on a small box.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    cfg = _load(args.config)
    if args.log_level is None:
        logging.getLogger("edge_actors").setLevel(cfg.model_logging.log_level)
    from edge_actors.supervisor import Supervisor

    return Supervisor(cfg, debug=args.debug).run()


def _instance_name(text: str) -> str:
    """``argparse`` type of ``--instance``: the config's rule, so no path can be smuggled in."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_]{1,16}", text):
        raise argparse.ArgumentTypeError(
            f"must be 1 to 16 characters from A-Z a-z 0-9 _, got {text!r}"
        )
    return text


def _instance_args(args: argparse.Namespace) -> tuple[Any, str]:
    cfg = _load(args.config)
    return cfg.run_dir, args.instance or cfg.instance


def cmd_status(args: argparse.Namespace) -> int:
    """Print the running instance's status."""
    from edge_actors import control

    run_dir, instance = _instance_args(args)
    try:
        reply = control.request(run_dir, instance, {"op": "status"})
    except control.ControlError as exc:
        if args.json:
            print(json.dumps({"instance": instance, "state": "not running", "error": str(exc)}))
        else:
            print(f"{instance}: not running ({exc})")
        return EXIT_NOT_RUNNING
    status = reply["status"]
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        from edge_actors.offline.status_view import render

        print(render(status))
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    """Ask the running instance to shut down, and wait for it."""
    from edge_actors import control

    run_dir, instance = _instance_args(args)
    try:
        pid = control.request(run_dir, instance, {"op": "ping"})["pid"]
        control.request(run_dir, instance, {"op": "stop"})
    except control.ControlError as exc:
        print(f"edge-actors: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    import psutil

    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            # A zombie has finished: its parent just has not reaped it yet.
            if psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(int(pid))
        except psutil.NoSuchProcess:
            print(f"{instance}: stopped")
            return EXIT_OK
        time.sleep(0.1)
    print(
        f"edge-actors: {instance} (pid {pid}) still running after {args.timeout}s", file=sys.stderr
    )
    return EXIT_NOT_RUNNING


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and the reference it names: every error, or a summary."""
    cfg = _load(args.file)
    ref_line = _check_reference(cfg)
    if ref_line is None:
        return EXIT_BAD_INPUT
    model = cfg.model
    print(f"{args.file}: OK")
    print(f"  instance {cfg.instance!r}, device_id {cfg.device_id!r}")
    print(f"  model {model.name!r}: {len(model.inputs)} inputs, {len(model.outputs)} outputs")
    print(f"  storage {cfg.storage.type}, outbox {cfg.storage.sqlite_path}")
    from edge_actors.roster import WORKER_NAMES

    on = [(n, cfg.workers.get(n)) for n in WORKER_NAMES]
    workers = [f"{n} ({w.memory_limit_mb:g} MB)" for n, w in on if w.enabled]
    print(f"  workers: {', '.join(workers) or 'none'}")
    print(f"  run_dir {cfg.run_dir}, data_dir {cfg.data_dir}")
    if ref_line:
        print(ref_line)
    return EXIT_OK


def _check_reference(cfg: Any) -> str | None:
    """Load and validate the configured reference as the drift worker will at start.

    Returns the summary line ("" without a reference), or ``None`` after
    printing why the reference is unusable.
    """
    dc = cfg.drift_detection
    if dc.reference_data_path is None:
        return ""
    if not (dc.enabled and cfg.workers.drift.enabled):
        return f"  reference {dc.reference_data_path} (not checked: drift detection is off)"
    from edge_actors.drift.reference import (
        ReferenceError,
        load_reference,
        validate_against_model,
    )

    try:
        max_bytes = int(dc.max_reference_mb * 2**20)
        ref = load_reference(dc.reference_data_path, max_bytes=max_bytes)
        validate_against_model(ref, cfg.model)
    except ReferenceError as exc:
        print(f"edge-actors: invalid reference:\n{exc}", file=sys.stderr)
        return None
    return (
        f"  reference {dc.reference_data_path}: {len(ref.features)} features, "
        f"hash {ref.content_hash}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    p = argparse.ArgumentParser(
        prog="edge-actors",
        description="Monitor ML models on edge devices: supervisor, workers, tools.",
    )
    p.add_argument("--version", action="version", version=f"edge-actors {__version__}")
    p.add_argument("--debug", action="store_true", help="tracebacks on errors, debug hooks")
    p.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default="plain",
        help="log lines on stderr: plain text, or one JSON object per line (default: plain)",
    )
    p.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        default=None,
        help="least severe level logged (default: INFO; `run`: the config's "
        "model_logging.log_level; --debug: DEBUG)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", help="YAML config file (default: built-in defaults)")

    sp = sub.add_parser("run", help="run the supervisor in the foreground")
    with_config(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("status", help="show workers, rings, producers of a running instance")
    with_config(sp)
    sp.add_argument(
        "--instance", type=_instance_name, help="instance name (default: from the config)"
    )
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("stop", help="stop a running instance and wait for it")
    with_config(sp)
    sp.add_argument(
        "--instance", type=_instance_name, help="instance name (default: from the config)"
    )
    sp.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the agent to exit; still running then: exit 4 (default: 60)",
    )
    sp.set_defaults(func=cmd_stop)

    sp = sub.add_parser("check-config", help="validate a config file")
    sp.add_argument("file", help="the YAML config file to check")
    sp.set_defaults(func=cmd_check_config)
    add_reference_parser(sub)
    add_report_parser(sub)
    add_fleet_parser(sub)
    return p


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so the flush at interpreter exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script.

    A reader that goes away (``edge-actors status | head``) ends the command
    quietly with exit code 141, as a tool killed by SIGPIPE would, instead of a
    ``BrokenPipeError`` traceback.
    """
    try:
        try:
            code = _main(argv)
        finally:
            # Flush here, inside the handler: at interpreter exit it would be too late.
            sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    return code


def _main(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the command; errors become one line and an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    setup_logging(args.log_level or ("DEBUG" if args.debug else "INFO"), args.log_format)
    from edge_actors.config import ConfigError
    from edge_actors.supervisor import SupervisorError

    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"edge-actors: invalid config:\n{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SupervisorError as exc:
        if args.debug:
            raise
        print(f"edge-actors: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # main() ends quietly
    except Exception as exc:
        if args.debug:
            raise
        print(f"edge-actors: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
