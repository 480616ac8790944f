"""A full memory fence callable from Python, for the ring's stamp protocol.

x86 keeps stores in program order and loads in program order (TSO), so the
ring needs no fence there. AArch64 and ARMv6/v7 reorder freely: a reader could
see a slot's new stamp before its payload, or the new ``write_seq`` before the
slot's stamp. Where the fences sit, and why, is in the ring module's docstring.

Python has no fence primitive and the package ships no C extension (edge boxes
often have no compiler), so the fence is a few machine instructions placed in
an executable page and called through ctypes: a real barrier for ~100 ns per
call, paid once per batch on the read side.

Which instructions is decided by :data:`FENCES`, a table keyed by the
*interpreter's* instruction set, before anything is executed: a wrong guess is
not an exception but SIGILL (or A64 bytes run in A32 state), which kills the
process. The instruction set comes from the ELF header of the running
interpreter and its pointer size, not from ``platform.machine()`` (the kernel's
view: a 32-bit Raspberry Pi OS on a Pi 4 says ``aarch64``); the 32-bit ARM
architecture version comes from the kernel's ``AT_PLATFORM`` (``v6l``,
``v7l``, ``v8l``), because ``dmb`` does not exist before ARMv7 and the ARMv6
barrier is a CP15 operation. Rows without code, and platforms where executable
mappings are forbidden (hardened kernels), use a lock acquire/release pair and
log a warning.

``EDGE_ACTORS_FENCE=1`` forces the fence on x86 (tests exercise that path);
``EDGE_ACTORS_FENCE=0`` disables it anywhere (benchmarks only).
"""

from __future__ import annotations

import logging
import mmap
import os
import platform
import re
import struct
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FenceRow:
    """One instruction set: the bytes of a no-argument function that fences, or None."""

    isa: str
    #: Machine code of ``void fence(void)``; None means "use the lock fallback".
    code: bytes | None
    #: The same code in assembler, for logs, docs and the tests that decode it.
    asm: str
    #: Whether the ring needs a fence at all here (False: TSO hardware).
    required: bool = True


def _words(*words: int) -> bytes:
    # A64 and A32 instructions are little-endian words (also on BE8 data-big-endian ARM).
    return struct.pack(f"<{len(words)}I", *words)


#: The fence for each instruction set the interpreter can be built for.
FENCES: dict[str, FenceRow] = {
    row.isa: row
    for row in (
        FenceRow("x86_64", b"\x0f\xae\xf0\xc3", "mfence; ret", required=False),
        # mfence needs SSE2; a locked read-modify-write is a full barrier on every x86.
        FenceRow("i386", b"\xf0\x83\x0c\x24\x00\xc3", "lock or dword [esp], 0; ret", False),
        FenceRow("aarch64", _words(0xD5033BBF, 0xD65F03C0), "dmb ish; ret"),
        # ARMv7, and ARMv8 running 32-bit code (32-bit OS on a Pi 3/4/5): A32 state.
        FenceRow("armv7", _words(0xF57FF05B, 0xE12FFF1E), "dmb ish; bx lr"),
        # ARMv6 (ARM1176: Pi Zero, Pi 1) has no dmb: the CP15 data memory barrier,
        # whose source register should be zero. r0 is a scratch register in the AAPCS.
        FenceRow(
            "armv6",
            _words(0xE3A00000, 0xEE070FBA, 0xE12FFF1E),
            "mov r0, #0; mcr p15, 0, r0, c7, c10, 5; bx lr",
        ),
        # ARMv5 and older have no barrier instruction (and are uniprocessors).
        FenceRow("armv5", None, "(lock fallback)"),
    )
}

# ELF e_machine values (the System V gABI registry).
_EM_386, _EM_ARM, _EM_X86_64, _EM_AARCH64 = 3, 40, 62, 183
_X86_MACHINES = {"x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"}
_AT_PLATFORM = 15


@dataclass(frozen=True)
class ElfId:
    """What an ELF header says about the code it holds."""

    bits: int  # 32 or 64 (EI_CLASS)
    little_endian: bool  # EI_DATA
    machine: int  # e_machine


def read_elf_id(path: str) -> ElfId | None:
    """The ELF class, byte order and machine of ``path``; None if it is not ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    little = head[5] == 1
    (machine,) = struct.unpack("<H" if little else ">H", head[18:20])
    return ElfId(bits=32 * head[4], little_endian=little, machine=machine)


def _arm_version(at_platform: str | None, machine: str) -> int | None:
    """ARM architecture version of the CPU for a 32-bit ARM process, or None if unknown."""
    m = re.match(r"v(\d+)", at_platform or "")
    if m:
        return int(m.group(1))
    m = re.match(r"armv(\d+)", machine)
    if m:
        return int(m.group(1))
    if machine in ("aarch64", "arm64"):
        return 8  # 32-bit userland on a 64-bit kernel: an ARMv8 CPU in AArch32 state
    return None


def choose_isa(elf: ElfId | None, pointer_size: int, machine: str, at_platform: str | None) -> str:
    """The :data:`FENCES` row for an interpreter (pure: every input is passed in).

    ``elf`` is the running interpreter's ELF header, ``pointer_size`` its
    ``struct.calcsize("P")``, ``machine`` the kernel's ``platform.machine()``
    and ``at_platform`` the kernel's ``AT_PLATFORM`` auxiliary vector string.
    An ELF header whose class disagrees with the pointer size is not the running
    code (an embedding program's ``sys.executable``) and is ignored.
    """
    machine = machine.lower()
    bits = pointer_size * 8
    if elf is not None and elf.bits == bits:
        if elf.machine == _EM_X86_64:
            return "x86_64"  # also the x32 ABI: same instruction set
        if elf.machine == _EM_386:
            return "i386"
        if not elf.little_endian and elf.machine in (_EM_ARM, _EM_AARCH64):
            return "big-endian-arm"  # no row: lock fallback
        if elf.machine == _EM_AARCH64:
            return "aarch64"
        if elf.machine == _EM_ARM:
            return _arm_row(_arm_version(at_platform, machine))
        return f"elf-machine-{elf.machine}"
    # No usable ELF header: the kernel's machine name, corrected by our pointer size.
    if machine in _X86_MACHINES:
        return "x86_64" if bits == 64 else "i386"
    if machine in ("aarch64", "arm64") or machine.startswith("armv8"):
        return "aarch64" if bits == 64 else _arm_row(_arm_version(at_platform, machine))
    if machine.startswith("arm") and bits == 32:
        return _arm_row(_arm_version(at_platform, machine))
    return machine or "unknown"


def _arm_row(version: int | None) -> str:
    if version is None:
        return "arm-unknown-version"  # no row: lock fallback, never a guessed instruction
    if version >= 7:
        return "armv7"
    return "armv6" if version == 6 else "armv5"


def _at_platform() -> str | None:
    """The kernel's AT_PLATFORM string for this process (glibc and musl have getauxval)."""
    try:
        import ctypes

        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype = ctypes.c_void_p
        getauxval.argtypes = [ctypes.c_ulong]
        addr = getauxval(_AT_PLATFORM)
        return ctypes.string_at(addr).decode("ascii", "replace") if addr else None
    except (OSError, AttributeError, TypeError, ValueError):
        return None


def interpreter_isa() -> str:
    """The :data:`FENCES` key for this interpreter (or an unknown name: lock fallback)."""
    elf = None
    # /proc/self/exe is the code actually running (also under qemu-user, which
    # presents the emulated binary); sys.executable where /proc is missing.
    for path in ("/proc/self/exe", sys.executable):
        if path:
            elf = read_elf_id(path)
            if elf is not None:
                break
    return choose_isa(elf, struct.calcsize("P"), platform.machine(), _at_platform())


_ISA: str | None = None


def _isa() -> str:
    global _ISA
    if _ISA is None:
        _ISA = interpreter_isa()
    return _ISA


def fence_required() -> bool:
    """Whether ring stores need a fence on this machine (or it was forced)."""
    forced = os.environ.get("EDGE_ACTORS_FENCE", "")
    if forced in ("0", "1"):
        return forced == "1"
    row = FENCES.get(_isa())
    return row is None or row.required


class _LockFence:
    """The fallback fence: a lock acquire/release pair (atomic read-modify-writes).

    A child forked while another thread of the parent was inside the fence
    would inherit the lock held, by a thread that does not exist in the child:
    every child gets a new lock, right after the fork.
    """

    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _renew_lock(ref))

    def __call__(self) -> None:
        self.lock.acquire()
        self.lock.release()


def _renew_lock(ref: weakref.ref[_LockFence]) -> None:
    fence = ref()
    if fence is not None:
        fence.lock = threading.Lock()


def _lock_fence() -> Callable[[], None]:
    return _LockFence()


_ARM_CACHEFLUSH = 0x0F0002  # __ARM_NR_cacheflush: make written code visible to fetch


def _native_fence(isa: str | None = None) -> Callable[[], None] | None:
    row = FENCES.get(isa or _isa())
    if row is None or row.code is None:
        return None
    try:
        import ctypes

        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        page.write(row.code)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        libc = ctypes.CDLL(None, use_errno=True)
        # W^X: write the page, then make it read+execute.
        if libc.mprotect(ctypes.c_void_p(addr), mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC):
            return None
        if row.isa.startswith("armv"):
            # 32-bit ARM caches are not coherent between data and instructions:
            # the kernel syncs them when the page turns executable, and this
            # makes sure of it (arm64 kernels always sync exec mappings).
            libc.syscall(
                ctypes.c_long(_ARM_CACHEFLUSH),
                ctypes.c_void_p(addr),
                ctypes.c_void_p(addr + mmap.PAGESIZE),
                ctypes.c_long(0),
            )
        fn = ctypes.CFUNCTYPE(None)(addr)
        # A wrong row would die here of SIGILL, which no except clause catches:
        # that is why the row is chosen from the interpreter's ISA, not tried.
        fn()
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    # Keep the page alive as long as the function object.
    fn._edge_actors_page = page  # type: ignore[attr-defined]
    return fn


#: Process-global: the fence every ring writer and consumer of this process
#: calls, made once (an executable page, or the lock fallback) by the first
#: :func:`get_fence` that needs one. A forked child inherits it and can keep
#: using it: fork copies the private executable page with its protection, and
#: the lock fallback renews its lock in the child (see ``_LockFence``).
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
            log.debug("native memory fence for %s: %s", _isa(), FENCES[_isa()].asm)
        else:
            log.warning(
                "no native memory fence for %s (no table row, or no executable page); "
                "using a lock-based fence (weaker on ARM: report this platform)",
                _isa(),
            )
            _FENCE, _FENCE_KIND = _lock_fence(), "lock"
    return _FENCE


def fence_kind() -> str:
    """'none', 'native' or 'lock': what :func:`get_fence` gives here."""
    return "none" if get_fence() is None else _FENCE_KIND


def fence_isa() -> str:
    """The instruction-set row the fence was chosen by (see :data:`FENCES`)."""
    return _isa()
