"""The model schema: the declared fields of the monitored model, and their one wire form.

A field is a name, a kind (``numeric`` or ``categorical``) and, for a
categorical field, its categories. The agent and the producers exchange fields
over the control socket in exactly one form, :meth:`FieldSpec.to_wire`::

    {"name": "zip", "kind": "categorical", "categories": ["75001", "69001"]}

The config file spells the kind ``type:`` (``model.inputs[].type``, a
documented key that users' files use); that spelling is read by the config
parser and written back by :meth:`FieldSpec.to_dict` only, never sent anywhere.

:func:`with_reference_fields` is the seed-compatibility rule that gives a
config without declared fields the numeric keys of its reference file. It is
shared by the supervisor and :class:`~edge_actors.monitor.EdgeMonitor` so both
sides agree on the schema before they ever talk.

This module is imported in the ML process (by the producer): it imports the
standard library only; the reference loader (numpy) is imported on first use.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from edge_actors.config import Config

__all__ = [
    "FIELD_KINDS",
    "MAX_MODEL_FIELDS",
    "FieldKind",
    "FieldSpec",
    "signature",
    "with_reference_fields",
]

log = logging.getLogger(__name__)

#: A field's kind.
FieldKind = Literal["numeric", "categorical"]
#: Every kind, in the order error messages list them.
FIELD_KINDS: tuple[FieldKind, ...] = ("numeric", "categorical")
#: Most fields (inputs + outputs) a model may declare.
MAX_MODEL_FIELDS = 256


@dataclass(frozen=True)
class FieldSpec:
    """One monitored model input or output: its name and kind (and categories)."""

    name: str
    kind: FieldKind = "numeric"
    categories: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        """The field as the control socket carries it (lane replies, ``Producer.schema``)."""
        return {"name": self.name, "kind": self.kind, "categories": list(self.categories)}

    @classmethod
    def from_wire(cls, spec: Mapping[str, Any]) -> FieldSpec:
        """Inverse of :meth:`to_wire`; a missing kind is numeric, a missing list empty.

        Any kind but ``categorical`` reads as numeric, as the producer always did:
        the agent only ever sends what its config parser accepted.
        """
        kind = spec.get("kind", "numeric")
        return cls(
            str(spec["name"]),
            "categorical" if kind == "categorical" else "numeric",
            tuple(spec.get("categories") or ()),
        )

    @classmethod
    def from_any(cls, spec: FieldSpec | Mapping[str, Any] | str) -> FieldSpec:
        """A field from a plain name (numeric), the wire mapping, or a ``FieldSpec``."""
        if isinstance(spec, FieldSpec):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        return cls.from_wire(spec)

    def to_dict(self) -> dict[str, Any]:
        """The field as written in a config file (``model.inputs[]``): kind under ``type``.

        ``Config.to_dict`` writes it (so the result loads again as a config) and the
        drift worker's checkpoint is bound to it (a different text would discard
        checkpoints written before): keep this form as it is.
        """
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        return out


def signature(inputs: Sequence[FieldSpec], outputs: Sequence[FieldSpec]) -> list[list[str]]:
    """``name:kind`` of each field per side: what must match between producer and agent."""
    return [[f"{f.name}:{f.kind}" for f in inputs], [f"{f.name}:{f.kind}" for f in outputs]]


def with_reference_fields(cfg: Config) -> Config:
    """The config as the agent runs it: a seed config declares no model fields.

    The seed library checked drift on the numeric keys of its reference file,
    as outputs; with no ``model`` section those keys (at most
    :data:`MAX_MODEL_FIELDS`) become the model's numeric outputs, so a seed
    config keeps working unchanged. A config that declares fields, has no
    reference or has drift detection off is returned as is, and so is one
    whose reference cannot be read (the drift worker reports that at start).
    """
    model = cfg.model
    path = cfg.drift_detection.reference_data_path
    if model.inputs or model.outputs or path is None or not cfg.drift_detection.enabled:
        return cfg
    from edge_actors.drift.reference import load_reference

    try:
        ref = load_reference(path, max_bytes=int(cfg.drift_detection.max_reference_mb * 2**20))
    except (OSError, ValueError) as exc:
        log.warning("cannot derive the model fields from %s: %s", path, exc)
        return cfg
    names = [n for n, f in ref.features.items() if f.kind == "numeric"][:MAX_MODEL_FIELDS]
    if not names:
        return cfg
    log.info(
        "no model fields declared: monitoring the reference's numeric keys as outputs (%s)",
        ", ".join(names),
    )
    outputs = tuple(FieldSpec(n) for n in names)
    return dataclasses.replace(cfg, model=dataclasses.replace(model, outputs=outputs))
