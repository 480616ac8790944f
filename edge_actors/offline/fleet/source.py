"""Where a fleet summary reads from: a local sink tree or ``s3://bucket/prefix``.

Both are walked the same way, one Hive level at a time, so ``--since`` reads
only what it needs::

    {prefix}{stream}/device={id}/[model={name}/]date=YYYY-MM-DD/{first}-{last}.ndjson.gz

(with or without the ``model=`` level: every ``k=v`` directory is a partition
and a ``date=`` level prunes). Kept per stream:

- every leaf directory whose date is on or after ``since``'s date minus one
  day (an object's ``date=`` is the day of its *oldest* record, so an object
  from the evening before can hold records of the window);
- the newest object (highest ``date=``, then sequence number) of each device
  and partition, whatever its date: "last seen" of a device that went silent
  a week ago costs one object, not a week of them.

S3 is listed with ``Delimiter='/'`` (one request per directory level and
page) and the kept objects are fetched, in parallel, into a local cache that
mirrors the keys; the engines then read local files only.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_actors.offline.fleet.definitions import STREAMS

__all__ = ["LocalStore", "S3Store", "Selection", "SourceError", "Store", "open_store", "select"]

logger = logging.getLogger(__name__)

_OBJECT_RE = re.compile(r"^(\d{20})-(\d{20})\.ndjson\.gz$")
#: Days read before ``since``'s date (see the module doc).
DATE_MARGIN_DAYS = 1
#: Parallel S3 downloads.
FETCH_THREADS = 16
#: Parallel listings (one subtree, i.e. one device of one stream, per task).
LIST_THREADS = 16


class SourceError(Exception):
    """The source cannot be read (missing directory, bad URL, S3 error)."""


class Store(Protocol):
    """A tree of objects addressed by ``/``-separated relative paths."""

    uri: str

    def list_dir(self, rel: str) -> tuple[list[str], list[str]]:
        """``(subdirectory names, file names)`` directly under ``rel`` (``""`` or ``a/b/``)."""

    def local_root(self, rels: Iterable[str]) -> Path:
        """A local directory where each of ``rels`` (file paths) exists at ``root/rel``."""


class LocalStore:
    """A sink tree on the local file system (the local sink, or an ``aws s3 sync`` copy)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Use ``root``; it must be a directory."""
        self.root = Path(root)
        self.uri = str(self.root)
        if not self.root.is_dir():
            raise SourceError(f"--source {self.root}: not a directory")

    def list_dir(self, rel: str) -> tuple[list[str], list[str]]:
        """See :meth:`Store.list_dir`."""
        dirs: list[str] = []
        files: list[str] = []
        try:
            with os.scandir(self.root / rel) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue  # the local sink's temporary files
                    (dirs if entry.is_dir() else files).append(entry.name)
        except FileNotFoundError:
            pass
        return sorted(dirs), sorted(files)

    def local_root(self, rels: Iterable[str]) -> Path:
        """The tree itself: nothing to fetch."""
        return self.root


class S3Store:
    """``s3://bucket/prefix``, listed by level and fetched into a local cache."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Parse ``uri``; boto3 is imported here, credentials come from its usual chain."""
        m = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
        if m is None:
            raise SourceError(f"--source {uri}: expected s3://bucket/prefix")
        self.bucket, prefix = m[1], m[2]
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.uri = f"s3://{self.bucket}/{self.prefix}"
        import boto3
        from botocore.config import Config

        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(max_pool_connections=FETCH_THREADS, retries={"mode": "standard"}),
        )
        self._cache = Path(cache_dir) if cache_dir else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def list_dir(self, rel: str) -> tuple[list[str], list[str]]:
        """See :meth:`Store.list_dir`; one ``ListObjectsV2`` with ``Delimiter='/'`` per page."""
        from botocore.exceptions import BotoCoreError, ClientError

        dirs: list[str] = []
        files: list[str] = []
        base = self.prefix + rel
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/"
            )
            for page in pages:
                for cp in page.get("CommonPrefixes", []):
                    dirs.append(cp["Prefix"][len(base) :].rstrip("/"))
                for obj in page.get("Contents", []):
                    files.append(obj["Key"][len(base) :])
        except (BotoCoreError, ClientError) as exc:
            raise SourceError(f"cannot list {self.uri}{rel}: {exc}") from exc
        return sorted(dirs), sorted(files)

    def local_root(self, rels: Iterable[str]) -> Path:
        """Download ``rels`` into the cache (a temporary directory) and return it."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._cache is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edge-actors-fleet-")
            self._cache = Path(self._tmp.name)
        root = self._cache

        def fetch(rel: str) -> None:
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.client.download_file(self.bucket, self.prefix + rel, str(dest))
            except (BotoCoreError, ClientError) as exc:
                raise SourceError(f"cannot fetch {self.uri}{rel}: {exc}") from exc

        todo = sorted(set(rels))
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            list(pool.map(fetch, todo))
        logger.info("fetched %d objects from %s", len(todo), self.uri)
        return root

    def close(self) -> None:
        """Remove the temporary cache, if one was made."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def open_store(
    source: str, *, endpoint_url: str | None = None, region: str | None = None
) -> LocalStore | S3Store:
    """The store of ``--source``: ``s3://...`` or a local directory."""
    if source.startswith("s3://"):
        return S3Store(source, endpoint_url=endpoint_url, region=region)
    if re.match(r"^[a-z][a-z0-9+.-]*://", source):
        raise SourceError(f"--source {source}: only s3:// URLs and local directories are read")
    return LocalStore(source)


@dataclass
class Selection:
    """What to read, per stream, as paths relative to the store's root.

    Attributes:
        window: stream -> object paths whose ``date=`` may hold records of the window.
        latest: stream -> the newest object of each device (and partition).
        devices: every device seen under any stream.
        listed: directory listings made (a cost figure for the benchmark).
    """

    window: dict[str, list[str]] = field(default_factory=dict)
    latest: dict[str, list[str]] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    listed: int = 0

    def all_paths(self) -> list[str]:
        """Every object path of the selection, once."""
        out = {p for paths in (*self.window.values(), *self.latest.values()) for p in paths}
        return sorted(out)


_Leaf = tuple[dict[str, str], str, list[str], bool]


def _walk(
    store: Store, rel: str, parts: dict[str, str], first_date: dt.date, sel: Selection
) -> Iterator[_Leaf]:
    """Yield ``(partitions, leaf dir, object names, in window)`` of the leaves under ``rel``.

    A ``date=`` level keeps the dates from ``first_date`` on, plus the newest
    one (for "last seen"), flagged out of the window.
    """
    dirs, files = store.list_dir(rel)
    sel.listed += 1
    objects = [f for f in files if _OBJECT_RE.match(f)]
    if objects:
        date = parts.get("date")
        in_window = date is None or dt.date.fromisoformat(date) >= first_date
        yield parts, rel, objects, in_window
    hive = [d for d in dirs if "=" in d]
    dates = [d for d in hive if d.startswith("date=")]
    keep = hive
    if dates:
        newest = max(dates)
        keep = [d for d in hive if not d.startswith("date=") or d >= f"date={first_date}"]
        if newest not in keep:
            keep.append(newest)
    for d in keep:
        k, _, v = d.partition("=")
        yield from _walk(store, f"{rel}{d}/", {**parts, k: v}, first_date, sel)


def select(
    store: Store,
    since: float,
    streams: Iterable[str] = STREAMS,
    *,
    drift_since: float | None = None,
) -> Selection:
    """List the store and keep what a summary from ``since`` (epoch seconds) reads.

    ``drift_since`` (earlier than ``since``) widens the window of the events stream.
    """
    sel = Selection()
    firsts: dict[str, dt.date] = {}
    tops: list[tuple[str, str]] = []
    for stream in streams:
        start = drift_since if stream == "events" and drift_since is not None else since
        firsts[stream] = dt.datetime.fromtimestamp(start, dt.timezone.utc).date() - dt.timedelta(
            days=DATE_MARGIN_DAYS
        )
        dirs, _files = store.list_dir(f"{stream}/")
        sel.listed += 1
        tops.extend((stream, d) for d in dirs if "=" in d)

    def subtree(item: tuple[str, str]) -> tuple[str, list[_Leaf], int]:
        # Each subtree (one device, in the usual layout) is listed by one
        # thread: on S3 a listing is a round trip, and 20,000 devices in a row
        # would take hours.
        stream, top = item
        k, _, v = top.partition("=")
        local = Selection()
        leaves = list(_walk(store, f"{stream}/{top}/", {k: v}, firsts[stream], local))
        return stream, leaves, local.listed

    leaves_of: dict[str, list[_Leaf]] = {stream: [] for stream in streams}
    with ThreadPoolExecutor(LIST_THREADS) as pool:
        for stream, leaves, listed in pool.map(subtree, tops):
            leaves_of[stream].extend(leaves)
            sel.listed += listed
    for stream in streams:
        window: list[str] = []
        newest: dict[tuple[tuple[str, str], ...], tuple[str, str]] = {}
        for parts, leaf, objects, in_window in leaves_of[stream]:
            device = parts.get("device")
            if device is None:
                continue
            sel.devices.add(device)
            if in_window:
                window.extend(leaf + o for o in objects)
            group = tuple(sorted((k, v) for k, v in parts.items() if k != "date"))
            cand = (parts.get("date", ""), leaf + max(objects))
            if group not in newest or cand > newest[group]:
                newest[group] = cand
        sel.window[stream] = window
        sel.latest[stream] = sorted(p for _d, p in newest.values())
    return sel
