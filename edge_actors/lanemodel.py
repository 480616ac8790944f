"""Which model (and version) a producer lane serves, decided once by the supervisor.

A producer asks for a lane naming its model and version (and, for a model
the config does not declare, the fields it logs). The supervisor resolves the
request against the config (:func:`resolve`: refused with a reason, or a
:class:`LaneModel`) and writes the answer into the lane's header label
(:meth:`edge_actors.ring.Ring.set_label`) before anyone else attaches. Every
reader (uploader, drift worker, a supervisor adopting the lane after a
restart) reads it from there: no table to keep in step over the control pipes.

All lanes of an instance have one record layout: as many value slots as the
widest declared model (:func:`lane_width`); a narrower model leaves the rest NaN.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_actors.schema import FieldSpec

if TYPE_CHECKING:
    from edge_actors.config import Config

#: Value slots of a lane when undeclared models are allowed and no declared model is wider.
UNDECLARED_MIN_WIDTH = 16


@dataclass(frozen=True)
class LaneModel:
    """A lane's model: name, version (``""``: unversioned) and fields."""

    name: str
    version: str
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]
    #: False for a model the config does not declare (accepted with its fields from code).
    declared: bool = True

    @property
    def key(self) -> str:
        """``name`` or ``name@version``: the key of this model's state and status entries."""
        return model_key(self.name, self.version)

    def label(self) -> bytes:
        """The lane header label (the fields only for an undeclared model)."""
        d: dict[str, Any] = {"model": self.name, "version": self.version}
        if not self.declared:
            d["inputs"] = [f.to_wire() for f in self.inputs]
            d["outputs"] = [f.to_wire() for f in self.outputs]
        return json.dumps(d, separators=(",", ":")).encode()


def model_key(name: str, version: str) -> str:
    """``name@version`` (``name`` alone when unversioned)."""
    return f"{name}@{version}" if version else name


def lane_width(cfg: Config) -> int:
    """Value slots per lane record: the widest declared model (at least one slot)."""
    width = max(len(m.inputs) + len(m.outputs) for m in cfg.models)
    if cfg.model_logging.allow_undeclared_models:
        width = max(width, UNDECLARED_MIN_WIDTH)
    return max(1, width)


def from_label(cfg: Config, raw: bytes) -> LaneModel | None:
    """The model a lane label names (``None`` for a lane without a readable label)."""
    try:
        d = json.loads(raw.decode()) if raw else None
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("model"), str):
        return None
    name, version = d["model"], str(d.get("version") or "")
    if "inputs" in d or "outputs" in d:
        try:
            ins = tuple(FieldSpec.from_any(f) for f in d.get("inputs") or ())
            outs = tuple(FieldSpec.from_any(f) for f in d.get("outputs") or ())
        except (TypeError, ValueError, KeyError):
            return None
        return LaneModel(name, version, ins, outs, declared=False)
    entry = cfg.find_model(name, version or None)
    if entry is None:
        return None
    return LaneModel(name, version, entry.inputs, entry.outputs)


def default_model(cfg: Config) -> LaneModel:
    """The model of a lane without a label (one a producer of an older version asked for)."""
    m = cfg.models[0]
    return LaneModel(m.name, m.version or "", m.inputs, m.outputs)


def resolve(
    cfg: Config,
    name: object,
    version: object,
    inputs: Sequence[Any] = (),
    outputs: Sequence[Any] = (),
) -> LaneModel | str:
    """The model a lane request is for, or why it is refused (a sentence for the producer).

    ``name`` ``None``: the config's only model (refused when it declares several).
    ``version`` ``None``: the entry's own version, if it has one.
    """
    names = list(dict.fromkeys(m.name for m in cfg.models))
    if name is None:
        if len(names) > 1:
            return (
                f"the config declares models {', '.join(names)}: say which one this "
                "producer logs (connect(..., model=...))"
            )
        name = names[0]
    if not isinstance(name, str) or not name:
        return f"model: must be a model name, got {name!r}"
    if version == "":
        version = None  # unversioned (what a producer re-asking after an attach sends)
    if version is not None and not isinstance(version, str):
        return f"version: must be a string, got {version!r}"
    entry = cfg.find_model(name, version)
    if entry is not None:
        ver = version if version is not None else (entry.version or "")
        return LaneModel(name, ver, entry.inputs, entry.outputs)
    if not cfg.model_logging.allow_undeclared_models:
        return (
            f"model {name!r} is not declared in the config (declared: {', '.join(names)}); "
            "add it under `models:`, or set model_logging.allow_undeclared_models to "
            "accept it with the fields given in code"
        )
    try:
        ins = tuple(FieldSpec.from_any(f) for f in inputs)
        outs = tuple(FieldSpec.from_any(f) for f in outputs)
    except (TypeError, ValueError, KeyError) as exc:
        return f"model {name!r}: bad fields given in code: {exc}"
    if not ins and not outs:
        return (
            f"model {name!r} is not declared in the config: give its fields in code "
            "(connect(..., inputs=[...], outputs=[...]))"
        )
    width = lane_width(cfg)
    if len(ins) + len(outs) > width:
        return (
            f"model {name!r} has {len(ins) + len(outs)} fields, more than the {width} value "
            "slots of this agent's lanes: declare it in the config"
        )
    lm = LaneModel(name, version or "", ins, outs, declared=False)
    from edge_actors.ring import LABEL_MAX

    if len(lm.label()) > LABEL_MAX:
        return f"model {name!r}: its field list is too long to be given in code: declare it"
    return lm
