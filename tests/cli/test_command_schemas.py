"""Every command's ``--json`` schema is generated from its payload type and is not vacuous.

For each command (and each ``robustness`` subcommand) an instance is built from the schema
by this test's own walker (the smallest value of each declared type); it must validate,
and removing, renaming or mistyping any required key anywhere in it must not. The real
outputs are validated against the same schemas by each command's own CLI tests.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from convlens.cli.cmd_robustness import SCHEMAS as ROBUSTNESS
from convlens.cli.main import _command_modules

_SAMPLE = {"string": "x", "integer": 1, "number": 0.5, "boolean": True, "null": None}
# a value of another JSON type, for each type: what a mistyped key would hold
_WRONG = {"string": 7, "integer": "7", "number": "7", "boolean": "yes", "null": 7, "array": 7}
_WRONG["object"] = 7


def _schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for name in _command_modules():
        module = importlib.import_module(f"convlens.cli.{name}")
        if name != "cmd_robustness":
            out[name.removeprefix("cmd_")] = module.SCHEMA
    out.update({f"robustness {k}": v for k, v in ROBUSTNESS.items()})
    return out


SCHEMAS = _schemas()


def example(schema: dict[str, Any]) -> Any:
    """The smallest instance of ``schema`` (first choice of each union / enum)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "oneOf" in schema:
        return example(schema["oneOf"][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        value = {k: example(props.get(k, {})) for k in schema.get("required", [])}
        if not value and "additionalProperties" in schema:
            value = {"k": example(schema["additionalProperties"])}
        return value
    if kind == "array":
        return [example(schema.get("items", {}))]
    return _SAMPLE.get(str(kind), "x")


def required_paths(
    schema: dict[str, Any], value: Any, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(path to each required key in ``value``, that key's schema), depth first."""
    if "oneOf" in schema:
        schema = schema["oneOf"][0]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            yield (*path, key), props.get(key, {})
            yield from required_paths(props.get(key, {}), value[key], (*path, key))
    elif isinstance(value, list) and value:
        yield from required_paths(schema.get("items", {}), value[0], (*path, 0))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


def _valid(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def test_every_command_and_subcommand_has_a_schema() -> None:
    assert len(SCHEMAS) >= 30
    assert {"predict", "attack", "robustness attack-curve", "robustness defend"} <= set(SCHEMAS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_json_schema_and_accepts_its_example(name: str) -> None:
    schema = SCHEMAS[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert _valid(schema, example(schema))


def _cases() -> list[tuple[str, int]]:
    """(command, branch): each alternative of a ``oneOf`` schema (one model / several) apart."""
    return [(n, k) for n in sorted(SCHEMAS) for k in range(len(SCHEMAS[n].get("oneOf", [0])))]


@pytest.mark.parametrize(("name", "branch"), _cases())
def test_schema_rejects_missing_renamed_or_mistyped_required_keys(name: str, branch: int) -> None:
    schema = SCHEMAS[name]
    part = schema["oneOf"][branch] if "oneOf" in schema else schema
    good = example(part)
    assert _valid(schema, good), (name, branch)
    paths = list(required_paths(part, good))
    assert paths, f"{name}: no required keys: the schema would accept anything"
    typed = 0
    for path, key_schema in paths:
        missing = copy.deepcopy(good)
        del _parent(missing, path)[path[-1]]
        assert not _valid(schema, missing), (name, path, "missing")
        renamed = copy.deepcopy(good)
        parent = _parent(renamed, path)
        parent[f"{path[-1]}_renamed"] = parent.pop(path[-1])
        assert not _valid(schema, renamed), (name, path, "renamed")
        kind = key_schema.get("type")
        if isinstance(kind, str) and "oneOf" not in key_schema:
            wrong = copy.deepcopy(good)
            _parent(wrong, path)[path[-1]] = _WRONG[kind]
            assert not _valid(schema, wrong), (name, path, "mistyped")
            typed += 1
    assert typed, f"{name}: no required key has a type"
