"""``make run``: the agent plus the example model, with one status line per second.

    python examples/run_demo.py -c configs/default.yaml [--duration 60] [--keep-state]

0. makes the demo self-contained: writes ``var/demo.yaml``, the config with
   ``run_dir`` = ``var/run``, ``data_dir`` = ``var`` and an instance name of
   this checkout (``demo`` + a hash of the ``var`` path), so two checkouts on
   one machine never share a socket, a shared-memory segment or an outbox;
   unless ``--keep-state``, removes what the previous demo left there (outbox,
   sink, drift checkpoint, log), so every demo starts fresh; builds an example
   reference in ``var/`` when the config's reference file does not exist;
1. starts ``python -m edge_actors run -c var/demo.yaml`` as a child process,
   its log going to ``var/agent.log`` (the path is printed once);
2. waits until the agent's control socket answers;
3. runs the example house-price model (``house_model.py``) in a thread of this
   process, logging through ``edge_actors.connect(CONFIG)``: 200 predictions/s,
   with a gradual ``sqft`` drift after 3000 predictions;
4. prints one line per second: elapsed time, predictions/s, features in drift,
   outbox backlog, uploads, worker restarts;
5. on Ctrl-C (or SIGTERM, or after ``--duration``): stops the model, sends
   SIGTERM to the agent, waits for its ordered shutdown and prints its exit code.

If the agent dies on its own, the last 20 lines of its log are printed and
the demo exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

import yaml

# Run as a script from anywhere: the model module sits next to this file.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import house_model  # noqa: E402
import make_reference  # noqa: E402
import occupancy_model  # noqa: E402

from edge_actors import control  # noqa: E402
from edge_actors.config import Config, ConfigError, default_run_dir, load_config  # noqa: E402

DEFAULT_CONFIG = HERE.parent / "configs" / "default.yaml"
#: Where the demo keeps everything: the checkout's own ``var/``.
DEFAULT_VAR = HERE.parent / "var"
#: Longest control-socket path the kernel accepts (sun_path minus the NUL).
MAX_SOCKET_PATH = 107
#: How long the agent may take to open its control socket.
START_TIMEOUT = 30.0
#: Log lines shown when the agent dies on its own.
TAIL_LINES = 20


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: shut down in order."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _set_parent_death_signal() -> None:
    """In the agent child: get SIGTERM if the demo dies without cleaning up (Linux).

    The agent runs in its own session (so a terminal Ctrl-C reaches only the
    demo, which then stops the model *before* the agent), so nothing else would
    stop it if the demo were killed with SIGKILL.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Agent:
    """The ``edge-actors run`` child process and its log file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._offset = 0

    def start(self) -> None:
        """Start the agent, appending its output to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        # Remember where this run starts, so a failure shows this run's lines only.
        self._offset = self._log.tell()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_actors", "run", "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # preexec_fn is unsafe with threads: none is running yet at this point.
            preexec_fn=_set_parent_death_signal,
        )

    def poll(self) -> int | None:
        """Exit code, or None while running."""
        assert self.proc is not None
        return self.proc.poll()

    def terminate_and_wait(self, timeout: float) -> int:
        """SIGTERM (ordered shutdown), then SIGKILL after ``timeout`` seconds."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"agent did not stop in {timeout:g}s: killing it", flush=True)
            self.proc.kill()
            code = self.proc.wait()
        self.close()
        return code

    def close(self) -> None:
        """Close our handle on the log file."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        """The last ``n`` lines this run wrote to the log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        return data.decode("utf-8", "replace").splitlines()[-n:]


class DeclaredFields:
    """Logs only the fields a config declares, by name (a config may monitor a subset)."""

    def __init__(self, producer: Any, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        self.producer = producer
        self._inputs = [(house_model.INPUTS.index(n), n) for n in inputs]
        self._outputs = [(house_model.OUTPUTS.index(n), n) for n in outputs]

    def log(self, inputs: Sequence[float], outputs: Sequence[float]) -> int:
        """``producer.log`` with the declared fields of the model's full rows."""
        return int(
            self.producer.log(
                {n: inputs[i] for i, n in self._inputs}, {n: outputs[i] for i, n in self._outputs}
            )
        )


class ModelThread:
    """The example model, predicting in a background thread of this process."""

    def __init__(self, config: Path, rate: float, drift_after: int, seed: int) -> None:
        import edge_actors

        model = load_config(config).model  # the first of `models`, or the only one
        self.producer = edge_actors.connect(config, model=model.name)
        names = ([f.name for f in model.inputs], [f.name for f in model.outputs])
        self._logger: Any = self.producer
        if names != (list(house_model.INPUTS), list(house_model.OUTPUTS)):
            self._logger = DeclaredFields(self.producer, *names)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(rate, drift_after, seed), name="house-model", daemon=True
        )

    def _run(self, rate: float, drift_after: int, seed: int) -> None:
        try:
            house_model.run(
                self._logger, rate=rate, drift_after=drift_after, seed=seed, stop=self.stop
            )
        except BaseException as exc:  # reported by the main loop, which then stops
            self.error = exc

    def start(self) -> None:
        """Start predicting (waits briefly for a lane so the first records are not dropped)."""
        self.producer.wait_attached(5.0)
        self._thread.start()

    def alive(self) -> bool:
        """True while the model thread runs."""
        return self._thread.is_alive()

    def written(self) -> int:
        """Records written to the lane so far."""
        return int(self.producer.stats()["written"])

    def shutdown(self) -> dict[str, Any]:
        """Stop predicting, close the producer; returns its final stats."""
        self.stop.set()
        self._thread.join(5.0)
        stats = self.producer.stats()
        self.producer.close()
        return stats


class SecondModel:
    """The occupancy model (configs/two-models.yaml), in its own thread and producer."""

    def __init__(self, config: Path) -> None:
        import edge_actors

        self.producer = edge_actors.connect(
            config, model=occupancy_model.NAME, version=occupancy_model.VERSION
        )
        self.stop = threading.Event()
        self._thread = threading.Thread(
            target=occupancy_model.run,
            args=(self.producer,),
            kwargs={"stop": self.stop},
            name="occupancy-model",
            daemon=True,
        )

    def start(self) -> None:
        """Start predicting once the producer has its lane."""
        self.producer.wait_attached(5.0)
        self._thread.start()

    def shutdown(self) -> dict[str, Any]:
        """Stop predicting, close the producer; returns its final stats."""
        self.stop.set()
        self._thread.join(5.0)
        stats = self.producer.stats()
        self.producer.close()
        return stats


# --------------------------------------------------------------------- status


def _dict(x: Any) -> dict[str, Any]:
    """``x`` if it is a dict, else empty: the status shape is still growing."""
    return x if isinstance(x, dict) else {}


def _num(x: Any) -> str:
    return str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def drift_summary(status: dict[str, Any]) -> str:
    """Features in state "drift", "no drift", or "-" without drift statistics."""
    worker = _dict(_dict(status.get("workers")).get("drift"))
    if worker.get("state") == "disabled":
        return "off"
    features = _dict(worker.get("stats")).get("features")
    if not isinstance(features, dict) or not features:
        return "-"
    drifting = [name for name, f in features.items() if _dict(f).get("state") == "drift"]
    return ", ".join(drifting) if drifting else "no drift"


#: Width of the status line: an 80-column terminal must not wrap it.
LINE_WIDTH = 80


def status_line(elapsed: float, rate: float, status: dict[str, Any] | None) -> str:
    """The one-line summary printed every second, at most :data:`LINE_WIDTH` characters.

    ``[  25s] 200/s | drift: sqft, price | outbox 904 | sent 4445 in 12``:
    predictions per second, features in drift, records waiting in the outbox,
    records and objects uploaded, then worker restarts and the agent's state
    when there are any. A long drift list is cut with "+N" (``status`` has
    the full picture).
    """
    head = f"[{elapsed:4.0f}s] {rate:3.0f}/s"
    if status is None:
        return f"{head} | agent not answering"
    workers = _dict(status.get("workers"))
    up = _dict(_dict(workers.get("uploader")).get("stats"))
    restarts = sum(int(w.get("restarts") or 0) for w in workers.values() if isinstance(w, dict))
    tail = [
        f"outbox {_num(up.get('backlog_records'))}",
        f"sent {_num(up.get('uploaded_records'))} in {_num(up.get('uploaded_objects'))}",
    ]
    if restarts:
        tail.append(f"restarts {restarts}")
    state = status.get("state")
    if state not in (None, "running"):
        tail.append(str(state))
    drift = drift_summary(status)
    room = LINE_WIDTH - len(" | ".join([head, "drift: ", *tail]))
    if len(drift) > room:
        names = drift.split(", ")
        for keep in range(len(names) - 1, -1, -1):
            drift = ", ".join(names[:keep]) + f"{', ' if keep else ''}+{len(names) - keep}"
            if len(drift) <= room:
                break
    return " | ".join([head, f"drift: {drift}", *tail])[:LINE_WIDTH]


# ----------------------------------------------------------------------- main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run the edge-actors agent with the example model; Ctrl-C to stop."
    )
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="YAML config")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    p.add_argument("--rate", type=float, default=200.0, help="model predictions per second")
    p.add_argument("--drift-after", type=int, default=house_model.DRIFT_AFTER)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--var",
        type=Path,
        default=DEFAULT_VAR,
        help="folder of the demo's state, socket and log (default: var/ of this checkout)",
    )
    p.add_argument(
        "--keep-state",
        action="store_true",
        help="keep the previous demo's outbox, sink and drift state (default: start fresh)",
    )
    return p.parse_args(argv)


def instance_for(var: Path) -> str:
    """The instance name of the demo in ``var``: one per checkout, stable across runs."""
    digest = hashlib.sha1(str(var.resolve()).encode()).hexdigest()[:8]
    return f"demo{digest}"


#: What a previous demo leaves in ``var/`` (``--keep-state`` keeps it).
STATE = ("run", "sink", "outbox.db", "outbox.db-wal", "outbox.db-shm", "outbox.db-reserve")


def clear_state(var: Path) -> None:
    """Remove the previous demo's outbox, sink, drift checkpoint and log from ``var``.

    The calibration cache (``cache/``) stays: it holds no state of a run, only
    thresholds that are slow to compute.
    """
    for name in STATE:
        path = var / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in var.rglob("*checkpoint*"):  # the drift checkpoint, wherever it lives
        if path.is_file():
            path.unlink()
    (var / "agent.log").unlink(missing_ok=True)


def demo_config(source: Path, cfg: Config, var: Path, reference: Path | None) -> Path:
    """Write ``var/demo.yaml``: ``source`` with the demo's own instance, run_dir and data_dir.

    Relative paths of ``source`` are made absolute (the copy lives elsewhere);
    the outbox and sink paths are dropped so that they default to ``var/``.
    """
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    run_dir = var / "run"
    instance = instance_for(var)
    if len(str(run_dir / f"{instance}.sock")) > MAX_SOCKET_PATH:
        # A very deep checkout: the socket goes to the user's runtime folder, still
        # under this checkout's own instance name.
        run_dir = default_run_dir()
    raw["instance"] = instance
    raw["run_dir"] = str(run_dir)
    raw["data_dir"] = str(var)
    storage = raw.get("storage")
    if isinstance(storage, dict):
        storage.pop("sqlite_path", None)
        storage.pop("local_path", None)
    drift = raw.get("drift_detection")
    if not isinstance(drift, dict):
        drift = raw["drift_detection"] = {}
    path = reference or cfg.drift_detection.reference_data_path
    if path is not None:
        drift["reference_data_path"] = str(path)
    # Each model's own reference, as an absolute path (the copy lives elsewhere).
    for entry, model in zip(raw.get("models") or [], cfg.models, strict=False):
        if isinstance(entry, dict) and model.reference_data_path is not None:
            entry["reference_data_path"] = str(model.reference_data_path)
    out = var / "demo.yaml"
    out.write_text(
        f"# Written by examples/run_demo.py from {source}; rewritten by every `make run`.\n"
        + yaml.safe_dump(raw, sort_keys=False),
        encoding="utf-8",
    )
    return out


def example_reference(cfg: Config, var: Path, name: str) -> Path | None:
    """An example reference for a config whose reference file does not exist yet.

    Built from the example model's undrifted stream (examples/make_reference.py)
    for the fields the config declares; None when the config's reference exists
    or drift detection is off.
    """
    dc = cfg.drift_detection
    if not dc.enabled or dc.reference_data_path is None or dc.reference_data_path.exists():
        return None
    out = var / f"{name}-reference.npz"
    if not out.exists():
        fields = [f.name for f in (*cfg.model.inputs, *cfg.model.outputs)]
        make_reference.write_reference(out, fields=fields)
    print(
        f"{dc.reference_data_path} does not exist: using an example reference, {_show(out)}",
        flush=True,
    )
    return out


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread meanwhile."""
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _wait_for_socket(agent: Agent, cfg: Any) -> bool:
    """Until the control socket answers (True) or the agent exits / times out (False)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            return False
        try:
            control.request(cfg.run_dir, cfg.instance, {"op": "ping"}, timeout=1.0)
            return True
        except control.ControlError:
            time.sleep(0.1)
    return False


def _show(path: Path) -> str:
    """``path`` relative to the current directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    args = _parse(argv)
    config = args.config.resolve()
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(f"run_demo: invalid config {config}:\n{exc}", file=sys.stderr)
        return 1
    names = ([f.name for f in cfg.model.inputs], [f.name for f in cfg.model.outputs])
    if not (set(names[0]) <= set(house_model.INPUTS) and set(names[1]) <= set(house_model.OUTPUTS)):
        print(
            f"run_demo: {config}: the example model has the inputs "
            f"{list(house_model.INPUTS)} and the outputs {list(house_model.OUTPUTS)}; "
            f"the config declares model.inputs {names[0]} and model.outputs {names[1]}",
            file=sys.stderr,
        )
        return 1
    var = args.var.resolve()
    var.mkdir(parents=True, exist_ok=True)
    instance = instance_for(var)
    try:
        pid = control.request(var / "run", instance, {"op": "ping"}, timeout=1.0).get("pid")
    except control.ControlError:
        pid = None
    if pid is not None:
        print(
            f"run_demo: the demo agent of this checkout already runs (pid {pid}, instance "
            f"{instance}); stop it with: edge-actors stop -c {_show(var / 'demo.yaml')}",
            file=sys.stderr,
        )
        return 1
    if not args.keep_state:
        clear_state(var)
    config = demo_config(config, cfg, var, example_reference(cfg, var, config.stem))
    cfg = load_config(config)
    shutdown_timeout = float(cfg.supervisor.shutdown_timeout_seconds) + 10.0

    agent = Agent(config, var / "agent.log")
    model: ModelThread | None = None
    second: SecondModel | None = None
    code: int | None = None
    with _signals_raise():
        try:
            agent.start()
            print(
                f"agent pid {agent.proc.pid if agent.proc else '?'} (instance {cfg.instance}), "
                f"log: {_show(agent.log_path)}",
                flush=True,
            )
            print(f"status: edge-actors status -c {_show(config)}", flush=True)
            if not _wait_for_socket(agent, cfg):
                return _agent_failed(agent, "did not open its control socket")
            model = ModelThread(config, args.rate, args.drift_after, args.seed)
            model.start()
            if any(m.name == occupancy_model.NAME for m in cfg.models[1:]):
                second = SecondModel(config)
                second.start()
                print(f"second model: {occupancy_model.NAME} {occupancy_model.VERSION}", flush=True)
            print(
                f"model: {args.rate:g} predictions/s, gradual sqft drift after "
                f"{args.drift_after} predictions; Ctrl-C to stop",
                flush=True,
            )
            code = _loop(agent, model, cfg, args.duration)
        except Interrupted:
            pass
        # From here on a second Ctrl-C must not cut the ordered shutdown short:
        # it is bounded by shutdown_timeout anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if second is not None:
            second.shutdown()
        if model is not None:
            stats = model.shutdown()
            dropped = ", ".join(f"{k} {v}" for k, v in stats["dropped"].items() if v)
            print(
                f"model stopped: {stats['written']} records written"
                + (f", dropped: {dropped}" if dropped else ""),
                flush=True,
            )
        if code is not None:  # the agent died on its own: already reported
            agent.close()
            return code
        if agent.proc is None:  # interrupted before it even started
            return 0
        print(f"stopping the agent (up to {shutdown_timeout:g}s)...", flush=True)
        agent_code = agent.terminate_and_wait(shutdown_timeout)
        print(f"agent exited with code {agent_code}; log: {_show(agent.log_path)}", flush=True)
        return 0 if agent_code == 0 else 1


def _agent_failed(agent: Agent, what: str) -> int:
    """Report an agent that stopped or never came up; returns a non-zero exit code."""
    rc = agent.poll()
    if rc is None:  # still running but useless: stop it
        rc = agent.terminate_and_wait(10.0)
        what = f"{what}; stopped it (exit code {rc})"
    else:
        what = f"{what} (exit code {rc})"
    print(f"run_demo: the agent {what}. Last lines of {_show(agent.log_path)}:", file=sys.stderr)
    for line in agent.tail():
        print(f"  {line}", file=sys.stderr)
    agent.close()
    # Killed by a signal (negative code): the shell's convention, 128 + signal.
    return 128 - rc if rc < 0 else (rc or 1)


def _loop(agent: Agent, model: ModelThread, cfg: Any, duration: float | None) -> int | None:
    """Print a status line per second; returns an exit code if the agent or model died."""
    t0 = last_t = time.monotonic()
    last_written = model.written()
    tick = 1
    while duration is None or time.monotonic() - t0 < duration:
        # Sleep in small steps so an agent crash is reported within 0.1 s.
        while time.monotonic() < t0 + tick:
            if agent.poll() is not None:
                return _agent_failed(agent, "exited unexpectedly")
            if not model.alive():
                print(f"run_demo: the model stopped: {model.error!r}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        tick += 1
        now = time.monotonic()
        written = model.written()
        rate = (written - last_written) / max(now - last_t, 1e-9)
        last_written, last_t = written, now
        try:
            reply = control.request(cfg.run_dir, cfg.instance, {"op": "status"}, timeout=2.0)
            status: dict[str, Any] | None = _dict(reply.get("status"))
        except control.ControlError:
            status = None
        print(status_line(now - t0, rate, status), flush=True)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
