"""Write an output file (``-o``) atomically without harming whatever the path names.

``os.replace`` over any path would replace a device node (``-o /dev/full``), a
FIFO or a symlink with a regular file, and a temporary file with a fixed name
(``out.npz.tmp``) follows a symlink planted under that name. So:

- an existing target must be a regular file (checked with ``lstat``: a symlink
  is refused too, since replacing it would silently drop the link);
- the temporary file is made by :func:`tempfile.mkstemp` in the target's
  directory (``O_EXCL``, unpredictable name, mode 0600), written, ``fsync``-ed
  and renamed over the target, so a reader sees the old or the new file, never
  half of one;
- a new file is 0600 (outputs hold device or training data); a replaced file
  of ours keeps its permission bits, as editors and ``sed -i`` do (one owned by
  another user gets 0600).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from edge_actors.filekind import file_kind

__all__ = ["UnsafeTarget", "check_target", "write_atomic"]

#: Mode of a newly created output file.
NEW_FILE_MODE = 0o600


class UnsafeTarget(OSError):
    """The output path exists and is not a regular file, or its directory is missing.

    The message does not repeat the path: callers put it in front.
    """


def check_target(path: Path) -> os.stat_result | None:
    """Raise :class:`UnsafeTarget` unless ``path`` is absent or a regular file.

    Returns the target's ``lstat`` (``None`` when it does not exist), so a
    command can refuse a bad ``-o`` before any long work, and again right
    before writing.
    """
    parent = path.parent if str(path.parent) else Path(".")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UnsafeTarget(
            f"exists and is {file_kind(st.st_mode)}, not a regular file: "
            "refusing to replace it (remove it or choose another output path)"
        )
    if not parent.is_dir():
        raise UnsafeTarget(f"directory {parent} does not exist")
    return st


def write_atomic(path: Path, write: Callable[[IO[bytes]], None] | bytes) -> None:
    """Atomically create or replace the regular file ``path`` with what ``write`` writes.

    ``write`` is the content, or a function that writes it to the binary file
    it is given.

    Raises:
        UnsafeTarget: ``path`` exists and is not a regular file, or its
            directory does not exist.
        OSError: the write failed; nothing is left behind and an existing
            target is unchanged.
    """
    st = check_target(path)
    # Keep the mode of our own file; a file someone else planted (0666 in a shared
    # directory, say) must not lend its mode to what we write.
    mine = st is not None and st.st_uid == os.geteuid()
    mode = stat.S_IMODE(st.st_mode) & 0o777 if st is not None and mine else NEW_FILE_MODE
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, bytes):
                fh.write(write)
            else:
                write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        # Checked again: the target may have been swapped while the output was built.
        check_target(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
