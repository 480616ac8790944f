"""``edge-actors fleet summary``: the command line of :func:`.fleet.summarize`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Any

__all__ = ["FleetError", "add_fleet_parser", "cmd_fleet_summary", "duration"]

#: Output formats; ``html`` is rendered by ``edge_actors.offline.fleet.html:render_html``.
FORMATS = ("text", "json", "html")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class FleetError(Exception):
    """A fleet command cannot run: missing extra, unreadable source."""


def duration(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` (or plain seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if m is None or float(m[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive duration like 30m, 24h or 7d, got {text!r}"
        )
    return float(m[1]) * _UNITS[m[2] or "s"]


def _instant(text: str) -> float:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time like 2026-11-28T08:00:00Z, got {text!r}"
        ) from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def add_fleet_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fleet`` (and its ``summary`` subcommand) on the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "fleet", help="the whole fleet from the uploaded objects: which devices need attention"
    )
    sub = p.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND", required=True)
    s = sub.add_parser(
        "summary",
        help="per device: last seen, records, open drift, drops, health, model versions",
        description=(
            "Summarize every device under a sink tree or an S3 prefix: the devices that need "
            "attention first (drifting now, silent, losing data, running hot), fleet totals, "
            "then one entry per device. Needs DuckDB: pip install 'edge-actors[fleet]'."
        ),
    )
    s.add_argument(
        "--source",
        required=True,
        metavar="S3_URL|DIR",
        help="s3://bucket/prefix (boto3's credentials) or a local sink directory",
    )
    s.add_argument(
        "--since",
        type=duration,
        default=86400.0,
        metavar="DURATION",
        help="the window: the last DURATION before now (default: 24h)",
    )
    s.add_argument("--format", choices=FORMATS, default="text", help="output (default: text)")
    s.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="duckdb in process (default) or Spark local mode (pip install 'edge-actors[spark]')",
    )
    s.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    s.add_argument(
        "--as-of",
        type=_instant,
        metavar="TIME",
        help="the summary's 'now', ISO-8601 UTC (default: the clock): replays a past morning",
    )
    s.add_argument(
        "--drift-lookback",
        type=duration,
        default=7 * 86400.0,
        metavar="DURATION",
        help="how far back to look for drift episodes still open (default: 7d)",
    )
    s.add_argument(
        "--silent-after",
        type=duration,
        default=3600.0,
        metavar="DURATION",
        help="a device with no record for this long is silent (default: 1h)",
    )
    s.add_argument(
        "--hot-cpu",
        type=float,
        default=90.0,
        metavar="PERCENT",
        help="CPU p95 that counts as hot (default: 90)",
    )
    s.add_argument(
        "--hot-mem",
        type=float,
        default=90.0,
        metavar="PERCENT",
        help="memory p95 that counts as hot (default: 90)",
    )
    s.add_argument(
        "--hot-temp",
        type=float,
        default=80.0,
        metavar="CELSIUS",
        help="temperature p95 that counts as hot (default: 80)",
    )
    s.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint (MinIO, R2...)")
    s.add_argument("--region", help="S3 region (default: boto3's)")
    s.set_defaults(func=cmd_fleet_summary)
    return p


def _render(summary: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    if fmt == "html":
        try:
            from edge_actors.offline.fleet.html import render_html  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise FleetError(f"--format html is not available: {exc}") from exc
        html: str = render_html(summary)
        return html
    from edge_actors.offline.fleet.summary import render_text

    return render_text(summary)


def cmd_fleet_summary(args: argparse.Namespace) -> int:
    """Run ``fleet summary``; exit 0, or 1 with one line on stderr."""
    from edge_actors.offline.fleet import Thresholds, summarize
    from edge_actors.offline.fleet.source import SourceError

    if args.engine == "duckdb":
        try:
            import duckdb  # noqa: F401
        except ImportError:
            from edge_actors.offline.fleet.duckdb_engine import DUCKDB_MISSING

            print(f"edge-actors: {DUCKDB_MISSING}", file=sys.stderr)
            return 1
    thresholds = Thresholds(
        silent_after_s=args.silent_after,
        hot_cpu_percent=args.hot_cpu,
        hot_mem_percent=args.hot_mem,
        hot_temp_c=args.hot_temp,
    )
    try:
        summary = summarize(
            args.source,
            since_s=args.since,
            as_of=args.as_of,
            drift_lookback_s=args.drift_lookback,
            thresholds=thresholds,
            engine=args.engine,
            endpoint_url=args.endpoint_url,
            region=args.region,
        )
        text = _render(summary, args.format)
    except (SourceError, FleetError) as exc:
        print(f"edge-actors: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        # An engine's optional dependency (duckdb, pyspark) or the engine itself.
        extra = "fleet" if args.engine == "duckdb" else args.engine
        print(
            f"edge-actors: --engine {args.engine} is not available ({exc}): "
            f"pip install 'edge-actors[{extra}]'",
            file=sys.stderr,
        )
        return 1
    if args.output:
        from pathlib import Path

        from edge_actors.safe_write import write_atomic

        write_atomic(Path(args.output), text.encode())
    else:
        sys.stdout.write(text)
    return 0
