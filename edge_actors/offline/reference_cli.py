"""``edge-actors reference build|show``: prepare drift reference data offline.

``build`` streams training data (CSV/TSV, NDJSON, ``.npy`` or the seed JSON)
into the compact ``.npz`` the drift worker loads, so no raw training data needs
to sit on the device. ``show`` prints what a reference file holds.

This module is imported by the CLI at start-up for every command, so it imports
nothing heavy at module level: numpy and the reference code load only when a
``reference`` command actually runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

if TYPE_CHECKING:
    from edge_actors.drift.reference import Reference

__all__ = ["ProgressBar", "add_reference_parser", "cmd_reference_build", "cmd_reference_show"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BAD_INPUT = 1

_FORMATS = ("csv", "tsv", "ndjson", "npy", "json")


def _positive_int(text: str) -> int:
    """``argparse`` type: an integer >= 1 (a bad value is a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover - the loop always returns


class ProgressBar:
    """A one-line ``\\r`` percentage on a terminal stream; silent otherwise.

    Only drawn when the stream is a TTY, so redirected stderr (CI logs, files)
    never fills with carriage-return noise. Redraws only when the shown
    percentage changes, which keeps the cost negligible on large inputs.
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self._last_pct = -1
        self._width = 0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` bytes (the ``build_reference`` callback)."""
        if not self.enabled:
            return
        pct = 100 if total <= 0 else min(100, int(done * 100 / total))
        if pct == self._last_pct:
            return
        self._last_pct = pct
        line = f"{self.label}: {pct:3d}% ({_human_bytes(done)} / {_human_bytes(total)})"
        # Pad over a longer previous line ("1023 KB" before "1.0 MB").
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the progress line so later output starts on a fresh line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def _report(exc: BaseException) -> int:
    """Print a reference error as ``edge-actors: ...`` lines; return the exit code."""
    # validate_against_model lists one problem per line: prefix each so every
    # line stands alone in a log.
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"edge-actors: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _quiet_info(args: argparse.Namespace) -> None:
    """Hide INFO log lines unless ``--log-level`` asked for them.

    The command prints its own summary on stdout; a log line on stderr would
    only sit next to the one-line error the tool promises.
    """
    if getattr(args, "log_level", None) is None and not getattr(args, "debug", False):
        logging.getLogger("edge_actors").setLevel(logging.WARNING)


def _load_model(config: str | None) -> Any:
    """The model section of ``config`` (None without one); ConfigError propagates to main()."""
    if config is None:
        return None
    from edge_actors.config import load_config

    return load_config(config).model


def cmd_reference_build(args: argparse.Namespace) -> int:
    """Build a ``.npz`` reference from training data."""
    from edge_actors.drift.reference import (
        ReferenceError,
        build_reference,
        describe_reference,
        save_reference,
        validate_against_model,
    )
    from edge_actors.safe_write import UnsafeTarget, check_target

    _quiet_info(args)
    model = _load_model(args.config)
    out = Path(args.output)
    try:
        check_target(out)  # before a long build, not after it
    except UnsafeTarget as exc:
        return _report(OSError(f"{out}: {exc}"))
    kinds = {f.name: f.kind for f in model.fields} if model is not None else None
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    fmt = cast("Literal['csv', 'tsv', 'ndjson', 'npy', 'json'] | None", args.format)
    bar = ProgressBar(f"reading {args.input}")
    try:
        ref = build_reference(
            args.input,
            cap=args.cap,
            seed=args.seed,
            progress=bar,
            names=names,
            kinds=kinds,
            fmt=fmt,
        )
    except ReferenceError as exc:
        bar.close()
        return _report(exc)
    except OSError as exc:
        bar.close()
        return _report(OSError(f"{args.input}: cannot read: {exc.strerror or exc}"))
    bar.close()
    try:
        if model is not None:
            validate_against_model(ref, model)
    except ReferenceError as exc:
        return _report(exc)
    try:
        save_reference(ref, out)
    except UnsafeTarget as exc:
        return _report(OSError(f"{out}: {exc}"))
    except OSError as exc:
        return _report(OSError(f"{out}: cannot write: {exc.strerror or exc}"))
    print(describe_reference(ref))
    print(f"wrote {out} ({_human_bytes(os.path.getsize(out))})")
    return EXIT_OK


def cmd_reference_show(args: argparse.Namespace) -> int:
    """Print a summary of a reference file (``.npz`` or seed JSON)."""
    from edge_actors.drift.reference import (
        ReferenceError,
        describe_reference,
        load_reference,
        validate_against_model,
    )

    _quiet_info(args)
    model = _load_model(args.config)
    try:
        ref: Reference = load_reference(args.ref)
        if model is not None:
            validate_against_model(ref, model)
    except ReferenceError as exc:
        return _report(exc)
    print(describe_reference(ref))
    return EXIT_OK


def add_reference_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``reference build`` and ``reference show`` on the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "reference",
        help="build or inspect drift reference data",
        description="Build drift reference data offline, or show what a reference file holds.",
    )
    actions = p.add_subparsers(dest="reference_command", metavar="ACTION", required=True)

    b = actions.add_parser(
        "build",
        help="build a compact .npz reference from training data",
        description=(
            "Stream INPUT (.csv, .tsv, .ndjson/.jsonl, optionally .gz; .npy; or the seed "
            "JSON {name: [values...]}) into a compact .npz reference: per feature a "
            "uniform sample of at most --cap values, exact n/min/max/NaN rate and "
            "category counts."
        ),
    )
    b.add_argument("input", metavar="INPUT", help="training data file")
    b.add_argument("-o", "--output", required=True, metavar="REF", help="output .npz file")
    b.add_argument(
        "--cap",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="sample size kept per numeric feature (default: %(default)s)",
    )
    b.add_argument(
        "--seed", type=int, default=0, metavar="S", help="sampling seed (default: %(default)s)"
    )
    b.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="take feature kinds from this config's model and check the result against it",
    )
    b.add_argument(
        "--format", choices=_FORMATS, default=None, help="input format (default: from extension)"
    )
    b.add_argument("--names", metavar="A,B,...", help="column names of a plain 2-D .npy array")
    b.set_defaults(func=cmd_reference_build)

    s = actions.add_parser(
        "show",
        help="print the features of a reference file",
        description="Print one line per feature of REF (.npz or seed JSON), then its hash.",
    )
    s.add_argument("ref", metavar="REF", help="reference file (.npz or seed JSON)")
    s.add_argument(
        "-c", "--config", metavar="CONFIG", help="also check REF against this config's model"
    )
    s.set_defaults(func=cmd_reference_show)
    return p
