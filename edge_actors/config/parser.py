"""The parser: YAML data (already read) into a :class:`Config`, every problem reported.

Keys are converted in file order by the converters their settings declare;
unknown keys get a suggestion; the model's field lists and the per-worker
sections are walked here; cross-field rules are in
:mod:`edge_actors.config.validate`. Nothing stops at the first problem:
:class:`ConfigError` lists them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_actors.config.converters import _FIELD_NAME_RE, _Ctx, _key_text, _show
from edge_actors.config.errors import ConfigError, Issues, _Invalid
from edge_actors.config.settings import (
    SECTIONS,
    TOP_KEYS,
    Config,
    DriftConfig,
    ModelConfig,
    WorkerConfig,
    WorkersConfig,
)
from edge_actors.config.validate import SECTION_RULES, check_socket_path
from edge_actors.roster import WORKER_NAMES, worker_spec
from edge_actors.schema import FIELD_KINDS, MAX_MODEL_FIELDS, FieldSpec

__all__ = ["parse_config"]


class _Parser(Issues):
    """Collects every issue while converting a YAML mapping into dataclasses."""

    def __init__(self, base_dir: Path) -> None:
        super().__init__()
        self.ctx = _Ctx(base_dir=base_dir)
        #: The top-level keys of the file.
        self.given: set[object] = set()
        #: The key path of each entry of ``Config.models``.
        self.model_wheres: list[str] = []

    def unknown(self, path: str, key: object, allowed: list[str]) -> None:
        name = _key_text(key)
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        where = f"{path}.{name}" if path else name
        if close:
            self.issue(where, f"unknown key (did you mean '{close[0]}'?)")
        else:
            self.issue(where, f"unknown key (allowed: {', '.join(allowed)})")

    def mapping(self, value: object, path: str) -> Mapping[object, object] | None:
        """Return ``value`` as a mapping (``None`` for an empty section), or report it."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.issue(path, f"must be a mapping, got {_show(value)}")
            return None
        return value

    def section(self, cls: type[Any], value: object, path: str) -> tuple[dict[str, Any], set[str]]:
        """Convert the keys of one section; return given values and the keys that failed.

        Keys are handled in file order so that errors come out in the order the
        user reads them.
        """
        data = self.mapping(value, path)
        keys = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("key", True)}
        values: dict[str, Any] = {}
        failed: set[str] = set()
        if data is None:
            return values, set(keys)
        for key, raw in data.items():
            f = keys.get(key) if isinstance(key, str) else None
            if f is None:
                self.unknown(path, key, list(keys))
                continue
            assert isinstance(key, str)
            where = f"{path}.{key}" if path else key
            conv = f.metadata.get("conv")
            if conv is None:
                continue
            if raw is None and f.metadata.get("default_doc") is not None:
                continue  # null means "the computed default"
            try:
                values[key] = conv(raw, self.ctx)
            except _Invalid as exc:
                self.issue(where, str(exc))
                failed.add(key)
        return values, failed


def _field_spec(p: _Parser, raw: object, where: str) -> FieldSpec | None:
    allowed = ["name", "type", "categories"]
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        p.issue(
            where,
            f"must be a field name or a mapping with name, type, categories, got {_show(raw)}",
        )
        return None
    ok = True
    for key in raw:
        if key not in allowed:
            p.unknown(where, key, allowed)
            ok = False
    name = raw.get("name")
    if name is None:
        p.issue(f"{where}.name", "required")
        ok = False
    elif not isinstance(name, str) or not _FIELD_NAME_RE.fullmatch(name):
        p.issue(
            f"{where}.name",
            f"must be a letter or _ then up to 63 of A-Z a-z 0-9 _ . -, got {_show(name)}",
        )
        ok = False
    # The config file spells the kind `type` (edge_actors.schema: the wire says `kind`).
    kind: object = raw.get("type", "numeric")
    if kind not in FIELD_KINDS:
        p.issue(f"{where}.type", f"must be one of {', '.join(FIELD_KINDS)}, got {_show(kind)}")
        return None
    cats_raw = raw.get("categories")
    categories: list[str] = []
    if kind == "numeric":
        if cats_raw is not None:
            p.issue(f"{where}.categories", "only allowed when type is categorical")
            ok = False
    elif not isinstance(cats_raw, list) or not cats_raw:
        p.issue(
            f"{where}.categories",
            "required when type is categorical (a non-empty list of strings), "
            f"got {_show(cats_raw)}",
        )
        ok = False
    else:
        for i, c in enumerate(cats_raw):
            if not isinstance(c, str):
                p.issue(f"{where}.categories[{i}]", f"must be a string, got {_show(c)}")
                ok = False
            elif c in categories:
                p.issue(f"{where}.categories[{i}]", f"duplicate category {_show(c)}")
                ok = False
            else:
                categories.append(c)
    if not ok:
        return None
    assert isinstance(name, str)
    return FieldSpec(name, "categorical" if kind == "categorical" else "numeric", tuple(categories))


def _parse_model(p: _Parser, raw: object, where: str = "model") -> ModelConfig:
    hand = ("inputs", "outputs", "drift_detection")
    values, _ = p.section(ModelConfig, _strip_keys(raw, hand), where)
    data = raw if isinstance(raw, Mapping) else {}
    overrides, _ = p.section(DriftConfig, data.get("drift_detection"), f"{where}.drift_detection")
    lists: dict[str, tuple[FieldSpec, ...]] = {}
    seen: dict[str, str] = {}
    total = 0
    for which in ("inputs", "outputs"):
        items = data.get(which)
        specs: list[FieldSpec] = []
        if items is not None and not isinstance(items, list):
            p.issue(f"{where}.{which}", f"must be a list, got {_show(items)}")
            items = None
        for i, item in enumerate(items or []):
            at = f"{where}.{which}[{i}]"
            total += 1
            spec = _field_spec(p, item, at)
            if spec is None:
                continue
            if spec.name in seen:
                p.issue(
                    f"{at}.name", f"duplicate field name {spec.name!r} (also {seen[spec.name]})"
                )
                continue
            seen[spec.name] = at
            specs.append(spec)
        lists[which] = tuple(specs)
    if total > MAX_MODEL_FIELDS:
        p.issue(where, f"at most {MAX_MODEL_FIELDS} fields (inputs + outputs), got {total}")
    _check_task(p, values, lists["outputs"], where)
    return ModelConfig(
        **values,
        inputs=lists["inputs"],
        outputs=lists["outputs"],
        drift_detection=MappingProxyType(overrides),
    )


def _parse_models(p: _Parser, raw: object) -> tuple[ModelConfig, ...]:
    """The ``models`` list: each entry a ``model`` section; ``(name, version)`` unique."""
    if not isinstance(raw, list) or not raw:
        got = "an empty list" if raw == [] else _show(raw)
        p.issue("models", f"must be a non-empty list of model entries, got {got}")
        return ()
    models: list[ModelConfig] = []
    seen: dict[tuple[str, str | None], str] = {}
    for i, item in enumerate(raw):
        where = f"models[{i}]"
        if not isinstance(item, Mapping):
            p.issue(where, f"must be a mapping with name, inputs, outputs..., got {_show(item)}")
            continue
        if "name" not in item:
            p.issue(f"{where}.name", "required")
        m = _parse_model(p, item, where)
        key = (m.name, m.version)
        if "name" in item and key in seen:
            what = f"model {m.name!r}" + (f" version {m.version!r}" if m.version else "")
            p.issue(where, f"duplicate {what} (also {seen[key]})")
            continue
        seen[key] = where
        models.append(m)
        p.model_wheres.append(where)
    return tuple(models)


def _check_model_drift(p: _Parser, cfg: Config) -> None:
    """Each model's drift settings (the section with its overrides) obey the section's rules."""
    if len(cfg.models) == 1 and not cfg.model.drift_detection:
        return
    wheres = p.model_wheres or ["model"]
    for where, m in zip(wheres, cfg.models, strict=False):
        dc = m.drift(cfg.drift_detection)
        over = m.drift_detection
        mn = "confirm_m" in over or "confirm_n" in over
        if mn and dc.confirm_m > dc.confirm_n:
            p.issue(
                f"{where}.drift_detection.confirm_m",
                f"must be <= confirm_n ({dc.confirm_n}), got {dc.confirm_m}",
            )
        windows = "long_window_size" in over or "window_size" in over
        if windows and dc.long_window_size and dc.long_window_size <= dc.window_size:
            p.issue(
                f"{where}.drift_detection.long_window_size",
                f"must be 0 or > window_size ({dc.window_size}), got {dc.long_window_size}",
            )


def _check_task(
    p: _Parser, values: dict[str, Any], outputs: tuple[FieldSpec, ...], where: str
) -> None:
    """``task``, ``target`` and ``reference_performance`` against the declared outputs."""
    task = values.get("task")
    if task is None:
        return
    target = values.get("target")
    by_name = {f.name: f for f in outputs}
    if target is not None and target not in by_name:
        p.issue(
            f"{where}.target",
            f"must name an output (declared: {', '.join(by_name) or 'none'}), got {target!r}",
        )
        return
    if not outputs:
        p.issue(f"{where}.task", f"{task} needs a declared output to score ({where}.outputs)")
        return
    spec = by_name[target] if target is not None else outputs[0]
    want = "categorical" if task == "classification" else "numeric"
    # Only a scored task (with reference_performance) needs an output of its kind.
    if spec.kind != want and values.get("reference_performance") is not None:
        p.issue(
            f"{where}.target" if target is not None else f"{where}.task",
            f"{task} scores a {want} output; {spec.name!r} is {spec.kind}",
        )
    ref = values.get("reference_performance")
    # Without reference_performance the task only labels the model (no performance events).
    if ref is not None and task == "classification" and not 0 < ref <= 1:
        p.issue(f"{where}.reference_performance", f"an accuracy must be in (0, 1], got {ref}")


def _strip_keys(raw: object, keys: tuple[str, ...]) -> object:
    """Drop the keys handled by hand so the generic section parser skips them."""
    if isinstance(raw, Mapping):
        return {k: v for k, v in raw.items() if k not in keys}
    return raw


def _parse_workers(p: _Parser, raw: object) -> WorkersConfig:
    data = p.mapping(raw, "workers")
    out: dict[str, WorkerConfig] = {}
    for key, value in (data or {}).items():
        if key not in WORKER_NAMES:
            p.unknown("workers", key, list(WORKER_NAMES))
            continue
        assert isinstance(key, str)
        values, _ = p.section(WorkerConfig, value, f"workers.{key}")
        values.setdefault("memory_limit_mb", worker_spec(key).memory_limit_mb)
        out[key] = WorkerConfig(**values)
    return WorkersConfig(**out)


def _parse_section(p: _Parser, name: str, raw: object) -> Any:
    """Build section ``name`` from its raw YAML value, reporting every problem."""
    cls = SECTIONS[name]
    walk = _STRUCTURED.get(cls)
    if walk is not None:
        return walk(p, raw)
    values, failed = p.section(cls, raw, name)
    rule = SECTION_RULES.get(cls)
    return cls(**values) if rule is None else rule(p, raw, values, failed, p.ctx)


#: Sections that are not a flat mapping of settings.
_STRUCTURED: Mapping[type[Any], Callable[[_Parser, object], Any]] = {
    ModelConfig: _parse_model,
    WorkersConfig: _parse_workers,
}


def parse_config(data: object, base_dir: Path, source: str) -> Config:
    """Validate already-parsed YAML ``data`` (normally a mapping) and return the :class:`Config`.

    ``base_dir`` is the folder relative paths start from; ``source`` names the file
    in error messages. Raises :class:`ConfigError` listing every problem found.
    """
    p = _Parser(Path(os.path.abspath(base_dir)))
    if data is None:
        data = {}
    p.given = set(data) if isinstance(data, Mapping) else set()
    if not isinstance(data, Mapping):
        p.issue("", f"top level must be a mapping of sections, got {_show(data)}")
        raise ConfigError(source, p.issues)
    allowed = [*TOP_KEYS, *SECTIONS]
    for key in data:
        if key not in allowed:
            p.unknown("", key, allowed)
    top_raw = {k: v for k, v in data.items() if k in TOP_KEYS and k != "models"}
    top, failed = p.section(Config, top_raw, "")
    data_dir: Path = top.get("data_dir", p.ctx.base_dir / "var")
    top["data_dir"] = data_dir
    p.ctx = dataclasses.replace(p.ctx, data_dir=data_dir)
    # Sections present in the file first, in file order, so errors read top to bottom.
    order = [k for k in data if k in SECTIONS] + [k for k in SECTIONS if k not in data]
    sections: dict[str, Any] = {name: _parse_section(p, name, data.get(name)) for name in order}

    models: tuple[ModelConfig, ...] = ()
    if "models" in data:
        if "model" in data:
            p.issue("models", "give either `model` (one model) or `models`, not both")
        models = _parse_models(p, data["models"])
        if models:
            sections["model"] = models[0]
    cfg = Config(**top, **sections, models=models)
    _check_model_drift(p, cfg)
    if not failed & {"run_dir", "instance"}:
        check_socket_path(p, cfg)
    if p.issues:
        raise ConfigError(source, p.issues)
    return cfg
