"""The configuration reference, generated from the settings (docs/configuration.md).

:func:`schema_rows` walks the settings classes from :class:`Config` down and
gives one row per YAML key; :data:`SCHEMA` describes each section.
``scripts/gen_config_docs.py`` renders them (``make docs``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from edge_actors.config.settings import SECTIONS, Config, ModelConfig

__all__ = ["SCHEMA", "schema_rows"]

#: Section name -> one-line description, in file order.
SCHEMA: dict[str, str] = {
    f.name: f.metadata["doc"] for f in dataclasses.fields(Config) if f.name in SECTIONS
}

#: The rows under ``model.inputs`` and ``model.outputs``: one field's keys (config spelling).
_FIELD_ROWS = (
    ("[].name", "string", "", "Field name."),
    ("[].type", "string", '"numeric"', "`numeric` or `categorical`."),
    ("[].categories", "list", "", "Categories of a categorical field (required for it)."),
)


def _default_text(f: dataclasses.Field[Any], value: Any) -> str:
    """The default of a key as a JSON literal, or the sentence saying how it is computed."""
    doc = f.metadata.get("default_doc")
    if doc:
        return str(doc)
    if value is dataclasses.MISSING:
        return ""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, Mapping):
        value = dict(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


def _default_of(f: dataclasses.Field[Any], owner: object) -> Any:
    """The default value of ``f``: as set in the ``owner`` default instance, or declared."""
    if owner is not None:
        return getattr(owner, f.name)
    if f.default is not dataclasses.MISSING or f.metadata.get("default_doc"):
        return f.default  # a computed default is described, not computed
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def schema_rows() -> list[tuple[str, str, str, str]]:
    """Return ``(key path, type, default, description)`` for every config key.

    Defaults are shown as JSON literals (``"INFO"``, ``true``, ``null``) or, for a
    computed default, as a sentence saying how it is chosen. A nested section's
    defaults are read from its default instance, so a per-worker default (set by
    the roster) shows as that worker's.
    """
    rows: list[tuple[str, str, str, str]] = []

    def walk(cls: type[Any], prefix: str, owner: object) -> None:
        for f in dataclasses.fields(cls):
            if not f.metadata.get("key", True):
                continue
            path = f"{prefix}{f.name}"
            value = _default_of(f, owner)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                walk(type(value), f"{path}.", value)
                continue
            rows.append((path, f.metadata["type"], _default_text(f, value), f.metadata["doc"]))
            if cls is ModelConfig and f.name in ("inputs", "outputs"):
                for key, type_, default, doc in _FIELD_ROWS:
                    rows.append((path + key, type_, default, doc))
            if cls is Config and f.name == "models":
                walk(ModelConfig, f"{path}[].", ModelConfig())

    walk(Config, "", None)
    return rows
