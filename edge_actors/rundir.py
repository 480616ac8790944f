"""The run directory: where the control socket and the lock (pid) file live.

Whoever can write to that directory can replace the socket (and read what
producers send) or plant a symlink where the pid file goes (and have the
agent truncate a file of their choosing). So the directory is verified, never
trusted because it exists: it must be a real directory (not a symlink), owned
by the agent's uid, not writable by group or others, and every directory
above it must be owned by root or the agent's uid and not writable by others
unless sticky (``/tmp``), so nobody can rename it away. This is OpenSSH's
``StrictModes`` rule applied to a runtime directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class RunDirError(RuntimeError):
    """The run directory is not safe to use; the message says why and how to fix it."""


def _fix_hint(path: Path, uid: int) -> str:
    return (
        f"fix: remove it (the agent re-creates it, mode 0700) or `chown {uid} {path} && "
        f"chmod 0700 {path}`, or set run_dir to a directory only this user can write, "
        f"such as /run/edge-actors (systemd: RuntimeDirectory=edge-actors)"
    )


def _check_parents(path: Path, uid: int) -> None:
    """Every directory above ``path`` must be root's or ours, and not open to others."""
    hint = (
        f"fix: set run_dir to a directory whose parents only root or uid {uid} can write, "
        f"such as /run/edge-actors (systemd: RuntimeDirectory=edge-actors)"
    )
    for parent in Path(os.path.realpath(path.parent)).joinpath("x").parents:
        st = os.stat(parent)
        sticky = bool(st.st_mode & stat.S_ISVTX)
        if st.st_uid not in (0, uid):
            raise RunDirError(
                f"run_dir {path}: its parent {parent} is owned by uid {st.st_uid}, who could "
                f"replace run_dir; {hint}"
            )
        if st.st_mode & 0o022 and not sticky:
            raise RunDirError(
                f"run_dir {path}: its parent {parent} is writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}) without the sticky bit; "
                f"{hint}"
            )


def check(path: Path, st: os.stat_result, uid: int) -> None:
    """Raise RunDirError unless ``st`` (an lstat of ``path``) is a safe run directory."""
    hint = _fix_hint(path, uid)
    if stat.S_ISLNK(st.st_mode):
        raise RunDirError(f"run_dir {path} is a symbolic link; {hint}")
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"run_dir {path} is not a directory; {hint}")
    if st.st_uid != uid:
        raise RunDirError(
            f"run_dir {path} is owned by uid {st.st_uid}, not by uid {uid} that runs the agent; "
            f"{hint}"
        )
    if st.st_mode & 0o022:
        raise RunDirError(
            f"run_dir {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); {hint}"
        )


def prepare(path: Path | str) -> int:
    """Create ``path`` (mode 0700) if missing, verify it, return an ``O_DIRECTORY`` fd to it.

    Files inside are then opened relative to that fd with ``O_NOFOLLOW``, so a
    path swapped after the check is not followed either.
    """
    path = Path(path)
    uid = os.geteuid()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        _check_parents(path, uid)
        check(path, os.lstat(path), uid)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RunDirError(f"cannot use run_dir {path}: {exc.strerror}") from exc
    try:
        check(path, os.fstat(fd), uid)  # the directory we opened is the one we checked
    except RunDirError:
        os.close(fd)
        raise
    return fd
