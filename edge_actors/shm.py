"""POSIX shared-memory segments, created and attached without the resource tracker.

``multiprocessing.shared_memory.SharedMemory`` registers every segment it opens
with the resource tracker before Python 3.13 (CPython gh-82300): when any
process that merely *attached* exits, the tracker unlinks the segment under
everybody else's feet, and it starts an extra tracker process per interpreter.
Here the segment is opened with ``shm_open`` directly, on every Python version,
so attaching never registers anything; only the supervisor, which created the
segment, ever unlinks it.

/dev/shm is writable by every user, so a name is no proof of origin: another
user can create ``ea_<instance>_evt`` first, mode 0666. Every attach checks the
open segment (``fstat``): a regular file, owned by the expected uid (this
process's by default), with no group or other permission bits.
"""

from __future__ import annotations

import errno
import importlib
import mmap
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

# The same private module multiprocessing.shared_memory uses; it has no stub.
_posixshmem: Any = importlib.import_module("_posixshmem")

#: macOS limits POSIX shm names to 31 bytes including the leading slash.
MAX_NAME_LEN = 30
_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,30}\Z")  # \Z: "$" would accept a trailing newline
_SHM_DIR = Path("/dev/shm")


class ShmError(OSError):
    """A segment could not be created or attached; the message says why and what to do."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid segment name, else raise ``ValueError``."""
    if not _NAME_RE.match(name):
        raise ValueError(
            f"shared-memory name {name!r} must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9_]"
        )
    return name


class Segment:
    """One mapped shared-memory segment; ``buf`` is a writable memoryview of it."""

    def __init__(self, name: str, mm: mmap.mmap, created: bool) -> None:
        self.name = name
        self.size = len(mm)
        self.created = created
        self._mmap: mmap.mmap | None = mm
        self.buf: memoryview = memoryview(mm)

    def close(self) -> None:
        """Unmap the segment in this process; the segment itself stays."""
        if self._mmap is None:
            return
        try:
            self.buf.release()
            self._mmap.close()
        except BufferError:
            # numpy views still point into the mapping; it is unmapped when they go.
            pass
        self._mmap = None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._mmap is None


def create(name: str, size: int, *, mode: int = 0o600) -> Segment:
    """Create a new segment of ``size`` bytes (fails if the name exists).

    The pages are reserved up front with ``posix_fallocate`` so that a too-small
    /dev/shm fails here with a clear message instead of a SIGBUS on first write.
    """
    check_name(name)
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
    try:
        fd = _posixshmem.shm_open("/" + name, flags, mode=mode)
    except FileExistsError:
        raise
    except OSError as exc:
        raise ShmError(exc.errno, f"cannot create shared memory {name!r}: {exc.strerror}") from exc
    try:
        # shm_open applies the umask; force 0600 whatever it is.
        os.fchmod(fd, mode)
        os.ftruncate(fd, size)
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise ShmError(
                        exc.errno,
                        f"not enough shared memory for {name!r} ({size} bytes): "
                        f"/dev/shm is too small; enlarge it (docker --shm-size, "
                        f"mount -o remount,size=... /dev/shm) or shrink the rings",
                    ) from exc
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
        mm = mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        _unlink_quiet(name)
        raise
    os.close(fd)
    return Segment(name, mm, created=True)


def ownership_problem(st: os.stat_result, owner: int | None = None) -> str:
    """Why a segment with this stat must not be trusted ('' if it may be).

    Trusted: a regular file owned by ``owner`` (default: this process's euid)
    that no other user can read or write.
    """
    want = os.geteuid() if owner is None else owner
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != want or mode & 0o077:
        return (
            f"is owned by uid {st.st_uid} with mode {mode:04o}, expected uid {want} and mode 0600"
        )
    return ""


def stat_problem(name: str) -> str:
    """:func:`ownership_problem` of an existing segment by name ('' if gone or trusted)."""
    try:
        st = os.lstat(_SHM_DIR / check_name(name))
    except FileNotFoundError:
        return ""
    return ownership_problem(st)


def attach(name: str, *, owner: int | None = None) -> Segment:
    """Map an existing segment read-write, without registering it anywhere.

    Refuses (ShmError, EPERM) a segment owned by another uid than ``owner``
    (default: this process's) or open to other users: it was not made by the
    agent, and its content could be forged or read by someone else.
    """
    check_name(name)
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0)
    try:
        st = os.fstat(fd)
        problem = ownership_problem(st, owner)
        if problem:
            raise ShmError(errno.EPERM, f"shared memory {name!r} {problem}")
        size = st.st_size
        if size == 0:
            raise ShmError(errno.EINVAL, f"shared memory {name!r} is empty (being created?)")
        mm = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    return Segment(name, mm, created=False)


def unlink(name: str) -> bool:
    """Remove the segment name; mappings that exist stay valid. False if it was gone."""
    check_name(name)
    return _unlink_quiet(name)


def _unlink_quiet(name: str) -> bool:
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


def exists(name: str) -> bool:
    """True if a segment of that name exists (even one this user cannot open)."""
    try:
        fd = _posixshmem.shm_open("/" + check_name(name), os.O_RDONLY, mode=0)
    except FileNotFoundError:
        return False
    except PermissionError:
        return True
    os.close(fd)
    return True


def list_names(prefix: str) -> list[str]:
    """Names of existing segments starting with ``prefix`` (Linux: read /dev/shm)."""
    if not sys.platform.startswith("linux") or not _SHM_DIR.is_dir():
        return []
    out = []
    for entry in os.scandir(_SHM_DIR):
        if entry.name.startswith(prefix) and _NAME_RE.match(entry.name):
            out.append(entry.name)
    return sorted(out)


def segment_mode(name: str) -> int | None:
    """Permission bits of a segment (Linux only), for tests and ``status``."""
    path = _SHM_DIR / name
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
