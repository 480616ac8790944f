"""A full memory fence callable from Python, for the ring's stamp protocol.

x86-64 keeps stores in program order and loads in program order (TSO), so the
ring needs no fence there. AArch64 and ARMv7 reorder freely: a reader could see
a slot's new stamp before its payload. The fence sits between payload and
stamp (writer) and between stamp reads and the copy (reader).

Python has no fence primitive and the package ships no C extension (edge boxes
often have no compiler), so the fence is two machine instructions (``dmb ish;
ret`` on ARM, ``mfence; ret`` on x86) placed in an executable page and called
through ctypes: a real barrier for ~100 ns per call, paid once per batch on the
read side. Where executable mappings are forbidden (hardened kernels), a
lock acquire/release pair is used instead and a warning is logged.

``EDGE_ACTORS_FENCE=1`` forces the fence on x86 (tests exercise that path);
``EDGE_ACTORS_FENCE=0`` disables it anywhere (benchmarks only).
"""

from __future__ import annotations

import logging
import mmap
import os
import platform
import struct
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}
_CODE = {
    # mfence; ret
    "x86": b"\x0f\xae\xf0\xc3",
    # dmb ish; ret
    "aarch64": struct.pack("<II", 0xD5033BBF, 0xD65F03C0),
    # dmb ish; bx lr (ARM state)
    "arm": struct.pack("<II", 0xF57FF05B, 0xE12FFF1E),
}


def _arch() -> str:
    m = platform.machine().lower()
    if m in _X86:
        return "x86"
    if m in ("aarch64", "arm64"):
        return "aarch64"
    if m.startswith("arm"):
        return "arm"
    return m


def fence_required() -> bool:
    """Whether ring stores need a fence on this machine (or it was forced)."""
    forced = os.environ.get("EDGE_ACTORS_FENCE", "")
    if forced in ("0", "1"):
        return forced == "1"
    return _arch() != "x86"


def _lock_fence() -> Callable[[], None]:
    lock = threading.Lock()

    def fence() -> None:
        lock.acquire()
        lock.release()

    return fence


def _native_fence() -> Callable[[], None] | None:
    code = _CODE.get(_arch())
    if code is None:
        return None
    try:
        import ctypes

        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        page.write(code)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        libc = ctypes.CDLL(None, use_errno=True)
        # W^X: write the page, then make it read+execute.
        if libc.mprotect(ctypes.c_void_p(addr), mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC):
            return None
        fn = ctypes.CFUNCTYPE(None)(addr)
        fn()  # prove it runs before trusting it
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    # Keep the page alive as long as the function object.
    fn._edge_actors_page = page  # type: ignore[attr-defined]
    return fn


_FENCE: Callable[[], None] | None = None
_FENCE_KIND = ""


def get_fence() -> Callable[[], None] | None:
    """The fence function, or None when this machine needs none."""
    global _FENCE, _FENCE_KIND
    if not fence_required():
        return None
    if _FENCE is None:
        native = _native_fence()
        if native is not None:
            _FENCE, _FENCE_KIND = native, "native"
        else:
            log.warning(
                "no executable page for a native memory fence; using a lock-based fence "
                "(weaker on ARM: report this platform)"
            )
            _FENCE, _FENCE_KIND = _lock_fence(), "lock"
    return _FENCE


def fence_kind() -> str:
    """'none', 'native' or 'lock': what :func:`get_fence` gives here."""
    return "none" if get_fence() is None else _FENCE_KIND
