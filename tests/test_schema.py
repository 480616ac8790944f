"""Tests for edge_actors.schema: the model's fields, their wire form, the seed derivation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_actors.config import Config, FieldSpec, parse_config
from edge_actors.schema import with_reference_fields

ZIP = FieldSpec("zip", "categorical", ("75001", "69001"))


@pytest.mark.parametrize("spec", [FieldSpec("age"), ZIP])
def test_wire_form_round_trips_and_says_kind(spec: FieldSpec) -> None:
    wire = spec.to_wire()
    assert wire == {"name": spec.name, "kind": spec.kind, "categories": list(spec.categories)}
    assert FieldSpec.from_wire(json.loads(json.dumps(wire))) == spec
    assert FieldSpec.from_any(wire) == spec and FieldSpec.from_any(spec) is spec


def test_config_form_loads_back_as_the_same_field(tmp_path: Path) -> None:
    """``to_dict`` is the config file's spelling (``type:``): it must load again unchanged."""
    assert ZIP.to_dict() == {"name": "zip", "type": "categorical", "categories": ["75001", "69001"]}
    data = {"model": {"inputs": [ZIP.to_dict(), FieldSpec("age").to_dict()]}}
    assert parse_config(data, tmp_path, "x").model.inputs == (ZIP, FieldSpec("age"))


def _seed(tmp_path: Path, model: dict[str, object] | None = None) -> Config:
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"price": [1.0, 2.0, 3.0], "city": ["a", "b", "a"]}))
    data: dict[str, object] = {"drift_detection": {"reference_data_path": str(ref)}}
    if model is not None:
        data["model"] = model
    return parse_config(data, tmp_path, "x")


def test_seed_config_monitors_the_references_numeric_keys(tmp_path: Path) -> None:
    cfg = with_reference_fields(_seed(tmp_path))
    assert cfg.model.inputs == () and cfg.model.outputs == (FieldSpec("price"),)


def test_declared_fields_are_kept(tmp_path: Path) -> None:
    cfg = _seed(tmp_path, {"inputs": ["x"]})
    assert with_reference_fields(cfg) is cfg


def test_unreadable_reference_leaves_the_config_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = parse_config(
        {"drift_detection": {"reference_data_path": str(tmp_path / "missing.json")}}, tmp_path, "x"
    )
    with caplog.at_level(logging.WARNING, logger="edge_actors.schema"):
        assert with_reference_fields(cfg) is cfg
    assert "cannot derive the model fields" in caplog.text and "missing.json" in caplog.text
