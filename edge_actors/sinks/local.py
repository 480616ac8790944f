"""Local directory sink: the default, so the agent runs with no cloud at all.

Objects are files under ``root`` at their key path, e.g.
``root/model/device=pi-7/date=2024-05-01/00000000000000000000-00000000000000004999.ndjson.gz``,
which DuckDB and Spark read as a Hive-partitioned dataset.

Objects are agent data (model inputs and outputs): files are 0600 and the
directories this sink creates 0700, whatever the umask.

A write is atomic and durable: a temporary file in the target directory,
``fsync``, ``rename`` over the final name, ``fsync`` of the directory (and of
every directory created on the way). A reader never sees a half-written
object and a power cut leaves either the old or the new file.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from pathlib import Path

from edge_actors.keys import validate_prefix
from edge_actors.sinks.base import PermanentSinkError, TransientSinkError
from edge_actors.sinks.base import md5_b64 as compute_md5_b64

__all__ = ["LocalSink"]

logger = logging.getLogger(__name__)

# Errors that an operator has to fix (permissions, read-only mount, a file where a
# directory should be); everything else (ENOSPC, EIO, ...) may pass and is retried.
_PERMANENT_ERRNOS = {
    errno.EACCES: "no permission to write: fix the directory's owner/mode or storage.local_path",
    errno.EPERM: "operation not permitted: fix the directory's owner/mode or storage.local_path",
    errno.EROFS: "the file system is read-only: remount it read-write or change storage.local_path",
    errno.ENOTDIR: "a path component is a file, not a directory: fix storage.local_path",
    errno.EISDIR: "the object path is a directory: remove it or change storage.local_path",
    errno.ENAMETOOLONG: "the path is too long for this file system: shorten storage.local_path",
}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalSink:
    """Write objects as files below a root directory (see module doc)."""

    def __init__(self, root: str | os.PathLike[str], *, prefix: str = "") -> None:
        """Remember ``root``; nothing is created until the first :meth:`put`.

        Raises:
            ValueError: if ``prefix`` is invalid (see :func:`validate_prefix`).
        """
        self.root = Path(root)
        self.prefix = validate_prefix(prefix)

    def __repr__(self) -> str:
        """Show where objects go."""
        return f"LocalSink(root={str(self.root)!r}, prefix={self.prefix!r})"

    def _path_for(self, key: str) -> Path:
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\x00" in key
            or any(p in ("", ".", "..") for p in parts)
        ):
            # object_key() never makes such a key; refuse rather than write outside root.
            raise PermanentSinkError(f"refusing unsafe object key {key!r}", hint="a bug: report it")
        return self.root.joinpath(*parts)

    def _makedirs(self, directory: Path) -> None:
        missing: list[Path] = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        if not missing:
            return
        for created in reversed(missing):
            # mode= is filtered by the umask; 0700 at most, never more.
            created.mkdir(mode=0o700, exist_ok=True)
        # A new directory entry is durable only once its parent is fsynced.
        for created in reversed(missing):
            _fsync_dir(created.parent)

    def put(self, key: str, body: bytes, md5_b64: str) -> None:
        """Atomically write ``body`` to ``root/key`` and verify its MD5 on disk.

        Raises:
            PermanentSinkError: permission, read-only file system, bad path.
            TransientSinkError: disk full, I/O error, MD5 mismatch after writing.
        """
        path = self._path_for(key)
        # One MD5, of the file as read back: a body that does not match
        # ``md5_b64`` fails that check as surely as a bad write, and an MD5 of
        # the body first cost as much again for nothing.
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self._makedirs(path.parent)
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            try:
                view = memoryview(body)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            # Read back what the file system holds, not what we meant to write.
            on_disk = compute_md5_b64(tmp.read_bytes())
            if on_disk != md5_b64:
                raise TransientSinkError(
                    f"{key!r}: MD5 of the written file {on_disk} != expected {md5_b64}",
                    hint="the storage may be failing: check dmesg",
                )
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            _unlink_quietly(tmp)
            hint = _PERMANENT_ERRNOS.get(exc.errno or 0)
            if hint is not None:
                raise PermanentSinkError(f"cannot write {str(path)!r}: {exc}", hint=hint) from exc
            if exc.errno == errno.ENOSPC:
                raise TransientSinkError(
                    f"cannot write {str(path)!r}: disk full",
                    hint="free space under storage.local_path",
                ) from exc
            raise TransientSinkError(f"cannot write {str(path)!r}: {exc}") from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def close(self) -> None:
        """Nothing to release: files are closed after every put."""


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("cannot remove temporary file %s: %s", path, exc)
