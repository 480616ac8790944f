"""``make test-arm``: the ring, producer, shm and fence tests and a short agent run on emulated ARM.

    sudo python3 scripts/arm/test_arm.py [--only RUN ...] [--no-agent]

Builds (once, cached in ``~/.cache/edge-actors/arm-roots``) Debian roots for
aarch64, armv7 (armhf) and ARMv6 (armel), copies this checkout into each and
installs it, then for every run below (a root and a QEMU CPU model) reports
the fence the interpreter chose, the core tests, ``scripts/arm/agent_check.py``
and ``scripts/arm/board_info.py`` timings; prints a table and exits non-zero if
any run failed. Host side: standard library only; needs root, debootstrap and
qemu-user-static. Logs: ``<cache>/logs/<time>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("EDGE_ACTORS_ARM_CACHE", Path.home() / ".cache/edge-actors/arm-roots"))
#: Five stress tests of test_ring.py take 80-130 s each natively (hours emulated) and
#: test process kills, not the instruction set; emulation cannot show weak ordering
#: either. ``--full`` runs them too.
LONG_TESTS = "not sigkill_consumer and not sigkill_writer and not ring_state_machine"
CORE_TESTS = [
    "tests/test_fence.py",
    "tests/test_ring.py",
    "tests/test_producer.py",
    "tests/test_shm.py",
    # numpy's intp is int32 on 32-bit ARM: the categorical drift statistics index with it.
    "tests/test_categorical_platform.py",
]


@dataclass(frozen=True)
class Run:
    """One emulated board: a root, a QEMU CPU model, what the fence must be."""

    name: str
    root: str
    cpu: str
    board: str
    fence_isa: str  # the row the fence table must pick ("" = Python cannot run there)
    agent: bool = True


RUNS = [
    Run("aarch64", "aarch64", "cortex-a72", "Pi 4 / Jetson, 64-bit OS", "aarch64"),
    Run("armv7-on-v8", "armv7", "max", "32-bit OS on an ARMv8 CPU (Pi 3/4/5)", "armv7"),
    Run("armv7", "armv7", "cortex-a7", "ARMv7 (Pi 2)", "armv7"),
    # Debian armhf is ARMv7/Thumb-2 code: an ARM1176 cannot run it (a Pi Zero runs
    # Raspberry Pi OS, built for ARMv6). Kept to show it, the armv6 root is the real run.
    Run("armv7-on-arm1176", "armv7", "arm1176", "armhf userland on ARMv6", "", agent=False),
    # Debian armel runs on an ARM1176. It has no orjson (no wheel, no package): the
    # agent runs on the standard library's json there (edge_actors.jsoncompat).
    Run("armv6", "armv6", "arm1176", "ARMv6 (Pi Zero / Pi 1)", "armv6"),
]


def sh(
    cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``cmd``; stdout+stderr appended to ``log``; (status, output)."""
    t0 = time.monotonic()
    try:
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, errors="replace"
        )
        rc, text = res.returncode, res.stdout + res.stderr
    except subprocess.TimeoutExpired as exc:
        rc = -1
        text = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMEOUT after {timeout:.0f}s"
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n{text}\n[status {rc}, {time.monotonic() - t0:.1f}s]\n")
    return rc, text


def in_root(run: Run, *cmd: str, extra: tuple[str, ...] = ()) -> list[str]:
    cpu = () if run.cpu == "default" else (f"QEMU_CPU={run.cpu}",)
    return [str(HERE / "in_root.sh"), run.root, *cpu, *extra, "--", *cmd]


def last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                out: dict[str, Any] = json.loads(line)
                return out
            except ValueError:
                return None
    return None


def install(root: str, logs: Path) -> bool:
    """Copy the checkout (tracked and new files) to /src in the root, where its venv finds it."""
    dest = CACHE / root / "src"
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.mkdir(parents=True)
    files = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(
        f"tar --null -T - -cf - | tar -xf - -C {dest}",
        shell=True,
        input=files,
        cwd=REPO,
        check=True,
    )
    # The root's venv has /src on its path (an editable install): the copy is the install.
    return (dest / "edge_actors" / "__init__.py").exists()


def _core_tests(run: Run, row: dict[str, Any], log: Path, full: bool, env: tuple[str, ...]) -> None:
    """The fence, ring, producer and shm tests in the root; results into ``row``."""
    t0 = time.monotonic()
    rc, text = sh(
        in_root(
            run,
            "/bin/sh",
            "-c",
            "cd /src && python -m pytest -q -p no:cacheprovider "
            + ("" if full else f"-k '{LONG_TESTS}' ")
            + " ".join(CORE_TESTS),
            extra=(*env, f"EDGE_ACTORS_EXPECT_FENCE_ISA={run.fence_isa}"),
        ),
        log,
        3600,
    )
    row["tests_s"] = round(time.monotonic() - t0, 1)
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", text, re.M)
    m = found[-1] if found else None
    row["tests"] = m if m else f"status {rc}"
    row["tests_ok"] = rc == 0


def run_one(run: Run, logs: Path, agent: bool, full: bool, tests: bool = True) -> dict[str, Any]:
    log = logs / f"{run.name}.log"
    row: dict[str, Any] = {"run": run.name, "cpu": run.cpu, "board": run.board}
    rc, text = sh(in_root(run, "/opt/venv/bin/python", "-c", "print('ok')"), log, 600)
    if rc != 0 or "ok" not in text:
        row["python"] = "cannot run" + (" (SIGILL)" if "Illegal instruction" in text else "")
        row["ok"] = run.fence_isa == ""  # expected for an ARMv7 userland on ARMv6
        return row
    if run.fence_isa == "":
        row["ok"] = False
        row["python"] = "runs (expected SIGILL)"
        return row
    # Bytecode is cached in /src like on a board: a worker start does not recompile.
    env: tuple[str, ...] = ()
    t0 = time.monotonic()
    rc, text = sh(
        in_root(run, "/bin/sh", "-c", "cd /src && python scripts/arm/board_info.py", extra=env),
        log,
        1800,
    )
    row["board_info_s"] = round(time.monotonic() - t0, 1)
    info = last_json(text) or {}
    if rc != 0:
        row["board_info_error"] = text.strip().splitlines()[-1][:200] if text.strip() else rc
    row.update(info)
    row["fence_ok"] = info.get("fence_isa") == run.fence_isa and info.get("fence_kind") == "native"
    previous = CACHE / "results" / f"{run.name}.json"
    if not tests and previous.exists():
        # --no-tests: the agent check alone, beside the last core-test result.
        old = json.loads(previous.read_text())
        row.update({k: old[k] for k in ("tests", "tests_s", "tests_ok") if k in old})
        if "(earlier run)" not in str(row.get("tests", "")):
            row["tests"] = f"{row.get('tests', '?')} (earlier run)"
    else:
        _core_tests(run, row, log, full, env)
    if agent and run.agent:
        rc, text = sh(
            in_root(
                run, "/bin/sh", "-c", "cd /src && python scripts/arm/agent_check.py", extra=env
            ),
            log,
            3600,
        )
        res = last_json(text) or {"ok": False}
        row["agent"] = res
        row["agent_ok"] = rc == 0 and bool(res.get("ok"))
    row["ok"] = (
        row["fence_ok"]
        and row["tests_ok"]
        and row.get("agent_ok", True)
        and "board_info_error" not in row
    )
    return row


def _x(value: Any, base: Any) -> str:
    """``value`` and, when the native figure is known, its ratio to it."""
    if not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(base, (int, float)) and base > 0:
        return f"{value:g} ({value / base:.0f}x)"
    return f"{value:g}"


def table(rows: list[dict[str, Any]], native: dict[str, Any] | None = None) -> str:
    """The runs as a text table; timings with their ratio to the native run (``native``)."""
    head = [
        "run",
        "QEMU_CPU",
        "python/numpy",
        "fence",
        "core tests",
        "agent: delivered",
        "READY s",
        "restart s (kill -9 to running)",
        "stop s",
        "other restarts",
        "drift check ms CPU",
        "drift max step s",
        "oldest hb s",
        "ok",
    ]
    nat = native or {}
    na = nat.get("agent") or {}
    lines = []
    for r in ([nat] if native else []) + rows:
        a = r.get("agent") or {}
        if "fence_isa" not in r:
            blank = [""] * (len(head) - 4)
            lines.append(
                [r["run"], r["cpu"], r.get("python", "?"), *blank, "yes" if r["ok"] else "NO"]
            )
            continue
        base = r is not nat
        restart = a.get("restart_s") or {}
        nr = na.get("restart_s") or {}
        hb = a.get("max_heartbeat_age_s") or {}
        lines.append(
            [
                r["run"],
                r["cpu"],
                f"{r.get('python', '?')}/{r.get('numpy', '?')}",
                f"{r['fence_isa']} {r['fence_kind']}",
                f"{r.get('tests', '?')} ({r.get('tests_s', 0):.0f}s)" if "tests" in r else "-",
                f"{a['delivered']}/{a['records']} dup {a['duplicates']}"
                if "delivered" in a
                else ("n/a" if not a else "FAILED " + str(a.get("error", ""))[:40]),
                _x(a.get("ready_s"), na.get("ready_s") if base else None),
                " ".join(
                    f"{w[0]}:{_x(restart[w], nr.get(w) if base else None)}" for w in sorted(restart)
                ),
                _x(a.get("stop_s"), na.get("stop_s") if base else None),
                ", ".join(f"{w} {r}" for w, r in (a.get("extra_restarts") or {}).items()) or "-",
                _x(r.get("drift_check_cpu_ms"), nat.get("drift_check_cpu_ms") if base else None),
                str((a.get("drift") or {}).get("max_step_seconds", "")),
                str(max(hb.values())) if hb else "",
                "yes" if r["ok"] else "NO",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = " | ".join(f"{{:{w}}}" for w in widths)
    out = [fmt.format(*head), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*map(str, ln)) for ln in lines]
    return "\n".join(out)


def run_native(logs: Path, agent: bool) -> dict[str, Any]:
    """The same board_info and agent_check on this machine: the base of the ratios."""
    log = logs / "native.log"
    py = sys.executable
    row: dict[str, Any] = {"run": "native", "cpu": "host", "board": "this machine"}
    rc, text = sh([py, str(HERE / "board_info.py")], log, 600)
    row.update(last_json(text) or {})
    row["fence_kind"] = row.get("fence_kind", "?")
    row["fence_isa"] = row.get("fence_isa", "?")
    row["ok"] = rc == 0
    if agent:
        rc, text = sh([py, str(HERE / "agent_check.py")], log, 900)
        row["agent"] = last_json(text) or {"ok": False}
        row["ok"] = row["ok"] and rc == 0
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", help="run names (default: all)")
    ap.add_argument("--no-agent", action="store_true", help="skip the agent runs")
    ap.add_argument(
        "--no-tests", action="store_true", help="skip the core tests (keep the last result)"
    )
    ap.add_argument("--full", action="store_true", help="also the long ring stress tests")
    ap.add_argument(
        "--no-native", action="store_true", help="skip the native run (the base of the ratios)"
    )
    ap.add_argument(
        "--jobs", type=int, default=1, help="runs at once (each emulated run wants a core)"
    )
    ap.add_argument("--table", action="store_true", help="print the last results of every run")
    args = ap.parse_args()
    native_file = CACHE / "results" / "native.json"
    if args.table:
        found = [CACHE / "results" / f"{r.name}.json" for r in RUNS]
        rows = [json.loads(f.read_text()) for f in found if f.exists()]
        native = json.loads(native_file.read_text()) if native_file.exists() else None
        print(table(rows, native))
        return 0 if rows and all(r["ok"] for r in rows) else 1
    if os.geteuid() != 0:
        print("make test-arm needs root (debootstrap, chroot, binfmt_misc)", file=sys.stderr)
        return 2
    runs = [r for r in RUNS if not args.only or r.name in args.only]
    logs = CACHE / "logs" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True)
    print(f"logs: {logs}", flush=True)
    roots = sorted({r.root for r in runs})
    for root in roots:
        t0 = time.monotonic()
        rc, text = sh([str(HERE / "build_root.sh"), root], logs / f"build-{root}.log", 7200)
        print(
            f"root {root}: {text.strip().splitlines()[-1] if text.strip() else rc} "
            f"({time.monotonic() - t0:.0f}s)",
            flush=True,
        )
        if rc != 0:
            return 1
        if not install(root, logs):
            print(f"root {root}: installing the project failed, see {logs}", file=sys.stderr)
            return 1

    def one(run: Run) -> dict[str, Any]:
        t0 = time.monotonic()
        row = run_one(run, logs, not args.no_agent, args.full, not args.no_tests)
        (logs / f"{run.name}.json").write_text(json.dumps(row, indent=1))
        (CACHE / "results").mkdir(exist_ok=True)
        (CACHE / "results" / f"{run.name}.json").write_text(json.dumps(row, indent=1))
        ok = "ok" if row["ok"] else "FAILED"
        print(f"{run.name}: {ok} ({time.monotonic() - t0:.0f}s)", flush=True)
        return row

    native = None
    if not args.no_native:
        native = run_native(logs, not args.no_agent)
        (CACHE / "results").mkdir(exist_ok=True)
        native_file.write_text(json.dumps(native, indent=1))
        print(f"native: {'ok' if native['ok'] else 'FAILED'}", flush=True)
    # Each run has its own /tmp, /dev/shm and PID namespace: they can overlap.
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(one, runs))
    print()
    print(table(rows, native))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
