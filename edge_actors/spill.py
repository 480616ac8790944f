"""Drop counts the outbox could not take, kept in a small side file until it can.

Every record that cannot be stored is counted in the outbox's ``drops`` table
(and reported as records of the ``drops`` stream). When the outbox itself
cannot be written (disk full, database not open) or is not open in the
process that learns of the loss (the supervisor at shutdown), the counts go
to ``<outbox>.drops.json`` instead: JSON, mode 0600, replaced atomically
(temporary file, fsync, rename, fsync of the directory). The next
:meth:`edge_actors.outbox.Outbox.open` or successful append folds the file
into the database in one transaction that also records the file's
``token``; a crash between that commit and the unlink therefore never counts
twice.

Besides counts the file holds:

- ``cursors``: ring -> ``[epoch, seq]`` consumer positions past records that
  were counted here (skipped as overwritten or given up), so that a restart
  does not read (and count) them again;
- ``ended``: ring -> ``[stream, epoch, read_seq, write_seq]`` of every ring
  the supervisor removed at a clean stop. Records in ``[read_seq, write_seq)``
  never reached the outbox: counted ``unflushed_at_stop`` (from the outbox's
  own cursor if that is further, see the fold). The ring's cursor is then
  forgotten, so that the ring re-created at the next start is not reported as
  a gap.

This module has no SQLite dependency: the supervisor imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Ended", "Spill", "add", "load", "spill_path", "write_or_log"]

logger = logging.getLogger(__name__)

#: ``(stream, epoch, read_seq, write_seq)`` of a ring removed at a clean stop.
Ended = tuple[str, int, int, int]


@dataclasses.dataclass
class Spill:
    """Contents of the side file (see the module doc)."""

    token: str = ""
    drops: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    cursors: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    ended: dict[str, Ended] = dataclasses.field(default_factory=dict)

    def merge(
        self,
        drops: Mapping[tuple[str, str], int] | None = None,
        cursors: Mapping[str, tuple[int, int]] | None = None,
        ended: Mapping[str, Ended] | None = None,
    ) -> None:
        """Add counts, replace cursors and ended rings (newer facts win)."""
        for key, n in (drops or {}).items():
            if n:
                self.drops[key] = self.drops.get(key, 0) + int(n)
        for ring, (epoch, seq) in (cursors or {}).items():
            self.cursors[ring] = (int(epoch), int(seq))
        for ring, (stream, epoch, read_seq, write_seq) in (ended or {}).items():
            self.ended[ring] = (str(stream), int(epoch), int(read_seq), int(write_seq))

    def to_json(self) -> bytes:
        """The file's bytes."""
        doc = {
            "token": self.token,
            "drops": [[s, r, n] for (s, r), n in sorted(self.drops.items())],
            "cursors": {k: list(v) for k, v in sorted(self.cursors.items())},
            "ended": {k: list(v) for k, v in sorted(self.ended.items())},
        }
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: Path) -> Spill:
        """Parse the file; ValueError naming the file and the bad field."""
        try:
            doc: Any = json.loads(raw)
            spill = cls(token=str(doc["token"]))
            spill.merge(
                drops={(str(s), str(r)): int(n) for s, r, n in doc.get("drops", [])},
                cursors={str(k): (int(v[0]), int(v[1])) for k, v in doc.get("cursors", {}).items()},
                ended={
                    str(k): (str(v[0]), int(v[1]), int(v[2]), int(v[3]))
                    for k, v in doc.get("ended", {}).items()
                },
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"{where}: not a drop-count side file ({exc!r})") from exc
        return spill


def spill_path(db_path: str | os.PathLike[str]) -> Path:
    """The side file of the outbox at ``db_path``."""
    return Path(f"{os.fspath(db_path)}.drops.json")


def load(path: Path) -> Spill | None:
    """The side file's contents, ``None`` if there is none.

    An unreadable file is renamed ``<name>.bad`` (and logged) so that it never
    blocks the outbox; its counts are lost, which the log says.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Spill.from_json(raw, path)
    except ValueError as exc:
        logger.error("%s; moved aside as %s.bad, its drop counts are lost", exc, path.name)
        with contextlib.suppress(OSError):
            os.replace(path, f"{path}.bad")
        return None


def add(
    path: Path,
    drops: Mapping[tuple[str, str], int] | None = None,
    cursors: Mapping[str, tuple[int, int]] | None = None,
    ended: Mapping[str, Ended] | None = None,
) -> Spill:
    """Merge into the side file (created if missing), atomically; returns the new contents.

    Raises:
        OSError: the file cannot be written (e.g. ENOSPC); the old file is intact.
    """
    spill = load(path) or Spill()
    spill.merge(drops, cursors, ended)
    spill.token = uuid.uuid4().hex
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = spill.to_json()
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write", str(tmp))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return spill


def write_or_log(
    path: Path,
    drops: Mapping[tuple[str, str], int] | None = None,
    cursors: Mapping[str, tuple[int, int]] | None = None,
    ended: Mapping[str, Ended] | None = None,
    *,
    reserve: Path | None = None,
) -> bool:
    """:func:`add`; on a full disk delete ``reserve`` (the outbox's) and retry once.

    Returns False (after logging the counts at ERROR: the last place they are
    seen) if the file cannot be written.
    """
    for attempt in range(2):
        try:
            add(path, drops, cursors, ended)
            return True
        except OSError as exc:
            if attempt == 0 and reserve is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                try:
                    reserve.unlink()
                    continue
                except OSError:
                    pass
            logger.error(
                "cannot write the drop counts to %s (%s): lost uncounted: %s",
                path,
                exc,
                ", ".join(f"{s}/{r} {n}" for (s, r), n in sorted((drops or {}).items())) or "none",
            )
            return False
    return False
