"""Write ``examples/house_reference.json``: the drift reference of the example model.

The reference is what the model saw before any drift: 5000 predictions of
:mod:`house_model` (inputs and outputs) from a fixed seed, in the seed's JSON
format ``{"feature": [values...]}``. Values are rounded to 4 significant digits
to keep the file small; at that precision the KS statistic moves by far less
than any threshold.

    python examples/make_reference.py            # rewrites the committed file
    python examples/make_reference.py -o ref.json --n 20000
    python examples/make_reference.py -o var/ref.npz --fields bedrooms,sqft,price

A ``.npz`` output is the compact built reference (what ``edge-actors reference
build`` makes); ``--fields`` keeps the named features only, for a config that
monitors a subset (``configs/tiny-device.yaml`` has no ``confidence``).

For real data, prefer ``edge-actors reference build`` on the training set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

# Run as a script from anywhere: the model module sits next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import house_model

#: Samples per feature in the committed reference.
N_SAMPLES = 5000
#: Not the live model's default seed: the reference is other houses from the same market.
SEED = 20240501
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "house_reference.json"


def round_sig(x: float, digits: int = 4) -> float | int:
    """``x`` to ``digits`` significant digits; an int when whole (shorter JSON)."""
    r = float(f"{x:.{digits}g}")
    return int(r) if r.is_integer() else r


def make_reference(n: int = N_SAMPLES, seed: int = SEED) -> dict[str, list[float | int]]:
    """The reference as ``{feature: values}`` for every model input and output."""
    # drift_after=n: all n predictions come from the undrifted distribution.
    houses, outputs = house_model.simulate(n, seed=seed, drift_after=n)
    ref: dict[str, list[float | int]] = {}
    for j, name in enumerate(house_model.INPUTS):
        ref[name] = [round_sig(h[j]) for h in houses]
    for j, name in enumerate(house_model.OUTPUTS):
        ref[name] = [round_sig(o[j]) for o in outputs]
    return ref


def _json_text(ref: dict[str, list[float | int]]) -> str:
    # One feature per line: readable diffs, still compact.
    body = ",\n".join(
        f" {json.dumps(name)}: {json.dumps(values, separators=(',', ':'))}"
        for name, values in ref.items()
    )
    return "{\n" + body + "\n}\n"


def write_reference(
    output: Path,
    n: int = N_SAMPLES,
    seed: int = SEED,
    fields: Sequence[str] | None = None,
) -> int:
    """Write the reference (JSON, or a built ``.npz`` by extension); returns the features written.

    Raises:
        ValueError: a name in ``fields`` is not a feature of the example model.
    """
    ref = make_reference(n, seed)
    if fields is not None:
        unknown = [f for f in fields if f not in ref]
        if unknown:
            raise ValueError(f"--fields: {unknown} are not features of the example model")
        ref = {name: ref[name] for name in fields}
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix != ".npz":
        output.write_text(_json_text(ref))
        return len(ref)
    from edge_actors.drift.reference import build_reference, save_reference

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "reference.json"
        source.write_text(_json_text(ref))
        save_reference(build_reference(source), output)
    return len(ref)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the reference file and say where."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help=".json or .npz")
    p.add_argument("--n", type=int, default=N_SAMPLES, help="samples per feature")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--fields", help="comma-separated features to keep (default: all)")
    args = p.parse_args(argv)
    fields = args.fields.split(",") if args.fields else None
    try:
        count = write_reference(args.output, args.n, args.seed, fields)
    except ValueError as exc:
        p.error(str(exc))
    size = args.output.stat().st_size
    print(f"wrote {args.output}: {count} features x {args.n} values, {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
