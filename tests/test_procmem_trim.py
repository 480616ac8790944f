"""``procmem.trim``: freed C-heap memory goes back to the kernel (glibc), a no-op elsewhere."""

from __future__ import annotations

import ctypes
import platform

import pytest

from edge_actors import procmem


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="malloc_trim is glibc's")
def test_trim_returns_freed_heap_pages_to_the_kernel() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 KiB blocks (under the mmap threshold: they come from the heap), every
    # page touched; all freed but the last, which pins the top of the heap so
    # that free() alone cannot shrink it.
    blocks = [libc.malloc(64 << 10) for _ in range(512)]
    for b in blocks:
        ctypes.memset(b, 1, 64 << 10)
    for b in blocks[:-1]:
        libc.free(b)
    before = procmem.full_memory_of(_pid()).uss
    assert procmem.trim() is True
    after = procmem.full_memory_of(_pid()).uss
    libc.free(blocks[-1])
    # 32 MiB were freed; most of it must have left the process.
    assert before - after > 16 << 20, (before, after)


def _pid() -> int:
    import os

    return os.getpid()
