"""The fence table: each row's bytes are the instructions it claims, run on the CPUs it is for.

A row that is wrong does not raise: it kills the ML process with SIGILL on the
board. So each row is checked three ways: against an encoding built here from
the architecture manual's instruction fields, against objdump where a
disassembler for that architecture is installed, and by running it for real:
the row's bytes go into a minimal static executable (call fence; exit 42) run
under qemu-user with the CPU models the row is for (and, as a control, the
ARMv7 row on an ARM1176 must die of SIGILL, the crash this table prevents).
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from edge_actors import fence
from edge_actors.fence import FENCES, ElfId, choose_isa


# ------------------------------------------------- encodings from the manuals
def a64_dmb(crm: int) -> int:
    """DMB <option>: 1101 0101 0000 0011 0011 CRm 1 01 11111 (Arm ARM C6.2.81)."""
    return 0xD50330BF | (crm << 8)


def a64_ret(rn: int = 30) -> int:
    """RET Xn: 1101011 0010 11111 000000 Rn 00000."""
    return 0xD65F0000 | (rn << 5)


def a32_dmb(option: int) -> int:
    """DMB <option> (A1, unconditional): 1111 0101 0111 1111 1111 0000 0101 option."""
    return 0xF57FF050 | option


def a32_bx(rm: int, cond: int = 0xE) -> int:
    """BX Rm: cond 0001 0010 1111 1111 1111 0001 Rm."""
    return (cond << 28) | 0x012FFF10 | rm


def a32_mov_imm(rd: int, imm8: int, cond: int = 0xE) -> int:
    """MOV Rd, #imm8 (A1, rotation 0): cond 001 1101 0 0000 Rd 0000 imm8."""
    return (cond << 28) | (1 << 25) | (0b1101 << 21) | (rd << 12) | imm8


def a32_mcr(coproc: int, opc1: int, rt: int, crn: int, crm: int, opc2: int, cond: int = 0xE) -> int:
    """MCR: cond 1110 opc1 0 CRn Rt coproc opc2 1 CRm."""
    return (
        (cond << 28)
        | (0b1110 << 24)
        | (opc1 << 21)
        | (crn << 16)
        | (rt << 12)
        | (coproc << 8)
        | (opc2 << 5)
        | (1 << 4)
        | crm
    )


ISH = 0b1011  # inner shareable, loads and stores: the barrier domain of SMP Linux


def words(*w: int) -> bytes:
    return struct.pack(f"<{len(w)}I", *w)


EXPECTED_BYTES: dict[str, bytes | None] = {
    # 0F AE /6 with ModRM 11 110 000 = F0; C3 = near return.
    "x86_64": bytes([0x0F, 0xAE, 0b11_110_000, 0xC3]),
    # LOCK prefix; 83 /1 ib = OR r/m32, imm8; ModRM 00 001 100 (SIB); SIB 00 100 100 = [esp].
    "i386": bytes([0xF0, 0x83, 0b00_001_100, 0b00_100_100, 0x00, 0xC3]),
    "aarch64": words(a64_dmb(ISH), a64_ret()),
    "armv7": words(a32_dmb(ISH), a32_bx(14)),
    # c7, c10, 5 in CP15 is the ARMv6 data memory barrier (ARM1176 TRM 3.2.22).
    "armv6": words(a32_mov_imm(0, 0), a32_mcr(15, 0, 0, 7, 10, 5), a32_bx(14)),
    "armv5": None,
}


def test_table_has_exactly_the_tested_rows() -> None:
    assert set(FENCES) == set(EXPECTED_BYTES)


@pytest.mark.parametrize("isa", sorted(EXPECTED_BYTES))
def test_row_bytes_are_the_manual_encoding(isa: str) -> None:
    assert FENCES[isa].isa == isa
    assert FENCES[isa].code == EXPECTED_BYTES[isa], FENCES[isa].asm


# ------------------------------------------------- an independent disassembler
OBJDUMP_ARCH = {"x86_64": "i386:x86-64", "i386": "i386", "aarch64": "aarch64"}
OBJDUMP_TEXT = {
    "x86_64": ["mfence", "ret"],
    "i386": ["lock orl $0x0,(%esp)", "ret"],
    "aarch64": ["dmb ish", "ret"],
    "armv7": ["dmb ish", "bx lr"],
    "armv6": ["mov r0, #0", "mcr 15, 0, r0, cr7, cr10, {5}", "bx lr"],
}


def disassemble(isa: str, code: bytes, tmp_path: Path) -> list[str] | None:
    """objdump's text of ``code``, one instruction per item; None without a disassembler."""
    (tmp_path / "code.bin").write_bytes(code)
    arch = OBJDUMP_ARCH.get(isa, "arm")
    for tool in ("objdump", "aarch64-linux-gnu-objdump", "arm-linux-gnueabihf-objdump"):
        exe = shutil.which(tool)
        if exe is None:
            continue
        cmd = [exe, "-D", "-b", "binary", "-m", arch, "code.bin"]
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
        if out.returncode == 0:  # this objdump knows the architecture
            rows = [ln.split("\t") for ln in out.stdout.splitlines() if ln.startswith(" ")]
            return [" ".join(" ".join(r[2:]).split()) for r in rows if len(r) > 2]
    return None


@pytest.mark.parametrize("isa", sorted(OBJDUMP_TEXT))
def test_row_disassembles_to_its_assembler(isa: str, tmp_path: Path) -> None:
    code = FENCES[isa].code
    assert code is not None
    text = disassemble(isa, code, tmp_path)
    if text is None:
        pytest.skip(f"no objdump for {isa} (apt-get install binutils-multiarch)")
    assert text == OBJDUMP_TEXT[isa]


# ---------------------------------------------- running the rows on real CPUs
BASE = 0x400000


def elf_exe(bits: int, machine: int, flags: int, code: bytes) -> bytes:
    """A static executable of one loadable segment whose entry point is ``code[0]``."""
    ehsize, phsize = (52, 32) if bits == 32 else (64, 56)
    entry = BASE + ehsize + phsize
    size = ehsize + phsize + len(code)
    ident = b"\x7fELF" + bytes([bits // 32, 1, 1, 0]) + bytes(8)
    if bits == 32:
        head = struct.pack(
            "<HHIIIIIHHHHHH", 2, machine, 1, entry, ehsize, 0, flags, ehsize, phsize, 1, 40, 0, 0
        )
        ph = struct.pack("<IIIIIIII", 1, 0, BASE, BASE, size, size, 5, 0x1000)
    else:
        head = struct.pack(
            "<HHIQQQIHHHHHH", 2, machine, 1, entry, ehsize, 0, flags, ehsize, phsize, 1, 64, 0, 0
        )
        ph = struct.pack("<IIQQQQQQ", 1, 5, 0, BASE, BASE, size, size, 0x1000)
    return ident + head + ph + code


def caller(isa: str, fence_code: bytes) -> bytes:
    """An executable that calls the fence as a function, then exits with status 42."""
    if isa == "aarch64":
        # bl fence; mov x0, #42; mov x8, #93 (exit); svc #0; fence:
        stub = words(0x94000004, 0xD2800000 | 42 << 5, 0xD2800000 | 93 << 5 | 8, 0xD4000001)
        return elf_exe(64, 183, 0, stub + fence_code)
    if isa.startswith("armv"):
        # bl fence; mov r0, #42; mov r7, #1 (exit); svc #0; fence:   (EABI5 e_flags)
        stub = words(0xEB000002, a32_mov_imm(0, 42), a32_mov_imm(7, 1), 0xEF000000)
        return elf_exe(32, 40, 0x05000000, stub + fence_code)
    if isa == "x86_64":
        # call fence; mov edi, 42; mov eax, 60 (exit); syscall; fence:
        stub = b"\xe8" + struct.pack("<i", 12) + b"\xbf*\0\0\0" + b"\xb8<\0\0\0" + b"\x0f\x05"
        return elf_exe(64, 62, 0, stub + fence_code)
    assert isa == "i386"
    # call fence; mov ebx, 42; mov eax, 1 (exit); int 0x80; fence:
    stub = b"\xe8" + struct.pack("<i", 12) + b"\xbb*\0\0\0" + b"\xb8\x01\0\0\0" + b"\xcd\x80"
    return elf_exe(32, 3, 0, stub + fence_code)


QEMU = {"aarch64": "aarch64", "armv7": "arm", "armv6": "arm", "i386": "i386", "x86_64": "x86_64"}

# (row, CPU model) -> exit status: 42 = called the fence and came back.
RUNS = [
    ("aarch64", "cortex-a53", 42),  # Pi 3, Jetson Nano
    ("aarch64", "cortex-a72", 42),  # Pi 4
    ("armv7", "cortex-a7", 42),  # Pi 2
    ("armv7", "cortex-a15", 42),
    ("armv7", "max", 42),  # ARMv8 in A32 state: a 32-bit OS on a Pi 3/4/5
    ("armv6", "arm1176", 42),  # Pi Zero / Zero W / Pi 1
    ("armv6", "arm11mpcore", 42),
    ("armv6", "cortex-a7", 42),  # the CP15 barrier still exists on ARMv7
    ("armv7", "arm1176", -signal.SIGILL),  # dmb on ARMv6: the crash the table prevents
    ("i386", "pentium", 42),  # no SSE2, so no mfence
    ("x86_64", "qemu64", 42),
]


def qemu_for(isa: str) -> str | None:
    name = QEMU[isa]
    return shutil.which(f"qemu-{name}-static") or shutil.which(f"qemu-{name}")


def no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.parametrize(("isa", "cpu", "status"), RUNS, ids=[f"{r[0]}-on-{r[1]}" for r in RUNS])
def test_row_runs_on_the_cpus_it_is_for(isa: str, cpu: str, status: int, tmp_path: Path) -> None:
    qemu = qemu_for(isa)
    if qemu is None:
        pytest.skip(f"qemu-{QEMU[isa]} not installed (apt-get install qemu-user-static)")
    code = FENCES[isa].code
    assert code is not None
    exe = tmp_path / f"fence-{isa}"
    exe.write_bytes(caller(isa, code))
    exe.chmod(0o755)
    run = subprocess.run(
        [qemu, "-cpu", cpu, str(exe)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=no_core_dumps,
    )
    assert run.returncode == status, run.stderr


def test_x86_64_row_runs_natively(tmp_path: Path) -> None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("an x86-64 host runs the x86-64 row without emulation")
    exe = tmp_path / "fence"
    code = FENCES["x86_64"].code
    assert code is not None
    exe.write_bytes(caller("x86_64", code))
    exe.chmod(0o755)
    assert subprocess.run([str(exe)], timeout=60).returncode == 42


# ----------------------------------------------- choosing the row (pure logic)
ARM32 = ElfId(bits=32, little_endian=True, machine=40)
A64 = ElfId(bits=64, little_endian=True, machine=183)
X64 = ElfId(bits=64, little_endian=True, machine=62)
X32 = ElfId(bits=32, little_endian=True, machine=3)

CHOICES = [
    # (ELF of the interpreter, pointer size, uname -m, AT_PLATFORM) -> row
    ((X64, 8, "x86_64", "x86_64"), "x86_64"),
    ((X32, 4, "x86_64", "i686"), "i386"),  # 32-bit interpreter on a 64-bit kernel
    ((A64, 8, "aarch64", "aarch64"), "aarch64"),
    ((ARM32, 4, "armv7l", "v7l"), "armv7"),  # Pi 2, 32-bit OS on Pi 3/4 with a 32-bit kernel
    # Raspberry Pi OS 32-bit on a Pi 4/5 (64-bit kernel), arm32v7 containers on arm64:
    ((ARM32, 4, "aarch64", "v8l"), "armv7"),
    ((ARM32, 4, "aarch64", None), "armv7"),
    ((ARM32, 4, "armv8l", None), "armv7"),  # under `linux32`
    ((ARM32, 4, "armv6l", "v6l"), "armv6"),  # Pi Zero / Pi 1
    ((ARM32, 4, "armv7l", "v6l"), "armv6"),  # AT_PLATFORM is the CPU's word, not uname's
    ((ARM32, 4, "armv6l", None), "armv6"),
    ((ARM32, 4, "armv5tel", "v5l"), "armv5"),
    ((ARM32, 4, "", None), "arm-unknown-version"),  # never guess an instruction
    ((None, 4, "aarch64", None), "armv7"),  # no readable ELF: trust the pointer size
    ((None, 8, "aarch64", None), "aarch64"),
    ((None, 4, "armv6l", "v6l"), "armv6"),
    # An ELF header of the wrong class is not the running code (embedding program).
    ((A64, 4, "aarch64", "v8l"), "armv7"),
    ((ElfId(bits=32, little_endian=False, machine=40), 4, "armv7b", "v7b"), "big-endian-arm"),
]


@pytest.mark.parametrize(("inputs", "row"), CHOICES, ids=[f"{c[0][2]}-{c[1]}" for c in CHOICES])
def test_choose_isa(inputs: tuple[ElfId | None, int, str, str | None], row: str) -> None:
    assert choose_isa(*inputs) == row


@pytest.mark.parametrize("isa", ["armv5", "arm-unknown-version", "big-endian-arm", "riscv64"])
def test_rows_without_code_use_the_lock(isa: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_ACTORS_FENCE", raising=False)
    monkeypatch.setattr(fence, "_ISA", isa)
    monkeypatch.setattr(fence, "_FENCE", None)
    monkeypatch.setattr(fence, "_FENCE_KIND", "")
    assert fence.fence_required()  # weakly ordered or unknown: never skip the fence
    assert fence.fence_kind() == "lock"
    f = fence.get_fence()
    assert f is not None
    f()


def test_this_interpreter_is_read_from_its_elf_header() -> None:
    elf = fence.read_elf_id("/proc/self/exe")
    if elf is None:
        pytest.skip("no /proc/self/exe ELF here")
    assert elf.bits == struct.calcsize("P") * 8
    expected = os.environ.get("EDGE_ACTORS_EXPECT_FENCE_ISA")
    if expected:  # set by `make test-arm` for each emulated CPU
        assert fence.interpreter_isa() == expected
    elif platform.machine().lower() in ("x86_64", "amd64") and elf.bits == 64:
        assert fence.interpreter_isa() == "x86_64"


# ----------------------------------------------- the ring really gets the fence
def test_native_fence_on_arm(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an ARM interpreter with a table row, a lock fallback is a failure, not a warning."""
    isa = fence.interpreter_isa()
    if isa not in ("aarch64", "armv7", "armv6") and not os.environ.get(
        "EDGE_ACTORS_EXPECT_FENCE_ISA", ""
    ).startswith(("aarch64", "armv")):
        pytest.skip(f"not an ARM interpreter ({isa})")
    monkeypatch.delenv("EDGE_ACTORS_FENCE", raising=False)
    monkeypatch.setattr(fence, "_FENCE", None)
    monkeypatch.setattr(fence, "_FENCE_KIND", "")
    assert fence.fence_required()
    assert fence.fence_kind() == "native", f"{isa}: lock fallback where a native fence exists"
    f = fence.get_fence()
    assert f is not None
    f()
