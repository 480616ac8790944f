"""POSIX shared-memory segments: names, permissions, pre-allocation, no resource tracker."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edge_actors import shm
from tests.helpers_ring import Segments, python_env


def test_create_attach_share_bytes(segs: Segments) -> None:
    name = segs.new()
    a = shm.create(name, 10000)
    assert a.created and a.size == 10000 and not a.closed
    b = shm.attach(name)
    assert not b.created and b.size == 10000
    a.buf[:5] = b"hello"
    assert bytes(b.buf[:5]) == b"hello"
    b.close()
    b.close()  # idempotent
    assert b.closed
    assert bytes(a.buf[:5]) == b"hello"
    a.close()
    assert shm.exists(name) and name in shm.list_names(segs.prefix)
    assert shm.unlink(name) is True
    assert shm.unlink(name) is False
    assert not shm.exists(name)
    with pytest.raises(FileNotFoundError):
        shm.attach(name)


def test_create_existing_name_fails(segs: Segments) -> None:
    name = segs.new()
    shm.create(name, 4096).close()
    with pytest.raises(FileExistsError):
        shm.create(name, 4096)
    assert shm.exists(name)


def test_close_with_live_numpy_view_keeps_it_valid(segs: Segments) -> None:
    seg = shm.create(segs.new(), 4096)
    arr = np.frombuffer(seg.buf, dtype=np.int64)
    arr[0] = 42
    seg.close()  # BufferError inside: the mapping goes with the last view
    assert seg.closed and arr[0] == 42


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_mode_is_0600_whatever_the_umask(segs: Segments, umask: int) -> None:
    old = os.umask(umask)
    try:
        name = segs.new()
        shm.create(name, 4096).close()
    finally:
        os.umask(old)
    assert shm.segment_mode(name) == 0o600
    assert oct(os.stat(f"/dev/shm/{name}").st_mode & 0o777) == "0o600"
    assert shm.segment_mode(segs.new()) is None


@pytest.mark.parametrize(
    "bad", ["a" * 31, "a/b", "/abc", "", "a-b", "a.b", "caf\u00e9", "a b", "x\n"]
)
def test_bad_names_rejected(bad: str) -> None:
    msg = f"shared-memory name {bad!r} must be 1-30 characters of [A-Za-z0-9_]"
    for fn in (lambda: shm.create(bad, 4096), lambda: shm.attach(bad), lambda: shm.unlink(bad)):
        with pytest.raises(ValueError) as e:
            fn()
        assert str(e.value) == msg
    assert shm.list_names(bad) == [] or bad == ""


def test_thirty_character_name_accepted(segs: Segments) -> None:
    name = (segs.prefix + "x" * 30)[:30]
    assert shm.check_name(name) == name
    shm.create(name, 4096).close()
    assert shm.exists(name)
    shm.unlink(name)


def test_too_small_dev_shm_fails_at_creation(segs: Segments) -> None:
    """A segment larger than /dev/shm fails in create (posix_fallocate), not with SIGBUS later."""
    vfs = os.statvfs("/dev/shm")
    size = vfs.f_blocks * vfs.f_frsize + (1 << 30)  # more than the whole tmpfs: fails at once
    name = segs.new()
    with pytest.raises(shm.ShmError) as e:
        shm.create(name, size)
    assert e.value.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG)
    assert str(e.value.strerror) == (
        f"not enough shared memory for {name!r} ({size} bytes): /dev/shm is too small; "
        "enlarge it (docker --shm-size, mount -o remount,size=... /dev/shm) or shrink the rings"
    )
    assert "too small" in str(e.value)
    assert isinstance(e.value, OSError)
    assert not shm.exists(name), "a failed create must not leave the segment behind"


def test_attach_empty_segment_is_a_clear_error(segs: Segments) -> None:
    name = segs.new()
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    with pytest.raises(shm.ShmError) as e:
        shm.attach(name)
    assert "is empty" in str(e.value)


CHILD = textwrap.dedent(
    """
    import sys
    from edge_actors import shm
    seg = shm.attach(sys.argv[1])
    got = bytes(seg.buf[:4])
    seg.buf[4:8] = b"kid!"
    seg.close()
    from multiprocessing import resource_tracker as rt
    tracker = getattr(rt, "_resource_tracker", None)
    print(got.decode(), getattr(tracker, "_pid", None) is None)
    """
)


@pytest.mark.parametrize("exit_how", ["normal", "sigkill"])
def test_unrelated_process_attach_does_not_unlink(segs: Segments, exit_how: str) -> None:
    """CPython gh-82300: no resource tracker, so the segment outlives every attacher."""
    name = segs.new()
    seg = shm.create(name, 4096)
    seg.buf[:4] = b"data"
    code = CHILD
    if exit_how == "sigkill":
        code += "import os, signal\nsys.stdout.flush()\nos.kill(os.getpid(), signal.SIGKILL)\n"
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code, name],
            capture_output=True,
            text=True,
            timeout=300,  # a child importing numpy: tens of seconds on a slow board
            env=python_env(),
        )
        assert out.returncode == (0 if exit_how == "normal" else -9), out.stderr
        assert out.stdout.split() == ["data", "True"]
        assert "resource_tracker" not in out.stderr
        assert shm.exists(name)
    assert bytes(seg.buf[:8]) == b"datakid!"
    seg.close()
    again = shm.attach(name)
    assert bytes(again.buf[:8]) == b"datakid!"
    again.close()
