"""The JSON-schema generator (convlens.cli.schema): each type maps as JSON Schema defines it.

Expected schemas are written out by hand from the JSON Schema vocabulary, and the generated
ones are also exercised with ``jsonschema`` on instances that must pass and must fail.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Generic, Literal, Optional, TypeVar

import jsonschema
import pytest
from typing_extensions import NotRequired, Required, TypedDict

from convlens.cli.schema import Bounds, json_schema


def _ok(schema: dict[str, Any], value: Any) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (Any, {}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (tuple[str, ...], {"type": "array", "items": {"type": "string"}}),
        (list[Any], {"type": "array"}),
        (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (dict[str, Any], {"type": "object"}),
        (Literal["inf"], {"const": "inf"}),
        (Literal["inf", "2"], {"enum": ["inf", "2"]}),
        (Literal[2, 3] | None, {"enum": [2, 3, None]}),
        (str | None, {"type": ["string", "null"]}),
        (Optional[float], {"type": ["number", "null"]}),  # noqa: UP045 - the spelling under test
        (int | str, {"type": ["integer", "string"]}),
        (list[int] | None, {"type": ["array", "null"], "items": {"type": "integer"}}),
        (Annotated[float, "a share"], {"type": "number", "description": "a share"}),
        (
            Annotated[float, Bounds(minimum=0, maximum=1)],
            {"type": "number", "minimum": 0, "maximum": 1},
        ),
        (Annotated[int, Bounds(minimum=0)], {"type": "integer", "minimum": 0}),
    ],
)
def test_simple_types_map_to_their_json_schema(tp: Any, expected: dict[str, Any]) -> None:
    assert json_schema(tp) == expected


# `class` is a Python keyword: the functional form is how a payload spells such keys
Score = TypedDict("Score", {"class": int, "label": str, "wnid": NotRequired[str | None]})


class Row(TypedDict):
    """one image"""

    source: str
    scores: list[Score]
    note: NotRequired[Annotated[str, "only when something went wrong"]]


class Loose(TypedDict, total=False):
    a: int
    b: Required[str]


def test_typeddict_required_and_optional_keys_with_future_annotations() -> None:
    # this module has `from __future__ import annotations`, where Python 3.10/3.11 put
    # NotRequired keys into __required_keys__: the generator must not trust that set
    assert json_schema(Row) == {
        "type": "object",
        "description": "one image",
        "required": ["source", "scores"],
        "properties": {
            "source": {"type": "string"},
            "scores": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["class", "label"],
                    "properties": {
                        "class": {"type": "integer"},
                        "label": {"type": "string"},
                        "wnid": {"type": ["string", "null"]},
                    },
                },
            },
            "note": {"type": "string", "description": "only when something went wrong"},
        },
    }
    assert json_schema(Loose) == {
        "type": "object",
        "required": ["b"],
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
    }


def test_typeddict_schema_accepts_good_and_rejects_bad_instances() -> None:
    schema = json_schema(Row)
    good = {"source": "a.png", "scores": [{"class": 3, "label": "three"}]}
    assert _ok(schema, good)
    assert _ok(schema, {**good, "note": "x", "extra": 1})  # objects stay open
    assert not _ok(schema, {"scores": []})  # missing required key
    assert not _ok(schema, {"src": "a.png", "scores": []})  # renamed key
    assert not _ok(schema, {**good, "source": 3})  # wrong type
    assert not _ok(schema, {**good, "scores": [{"class": "3", "label": "three"}]})
    assert not _ok(schema, {**good, "scores": [{"klass": 3, "label": "three"}]})
    assert _ok(schema, {**good, "scores": [{"class": 3, "label": "t", "wnid": None}]})


def test_nullable_object_and_union_of_objects() -> None:
    nullable = json_schema(Score | None)
    assert nullable["type"] == ["object", "null"]
    assert _ok(nullable, None) and _ok(nullable, {"class": 1, "label": "x"})
    assert not _ok(nullable, {"label": "x"})
    either = json_schema(Score | Row)
    assert set(either) == {"oneOf"} and len(either["oneOf"]) == 2
    assert _ok(either, {"class": 1, "label": "x"})
    assert not _ok(either, {"label": "x"})


One = TypeVar("One")
Name = TypeVar("Name")


class Many(TypedDict, Generic[Name, One]):
    kind: Name
    results: list[One]


def test_generic_typeddict_substitutes_its_type_variables() -> None:
    schema = json_schema(Many[Literal["curve"], Score])
    assert schema["properties"]["kind"] == {"const": "curve"}
    assert schema["properties"]["results"] == {"type": "array", "items": json_schema(Score)}
    with pytest.raises(TypeError, match="not bound"):
        json_schema(Many)


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0
    label: str | None = None


def test_dataclass_fields_are_all_required_as_asdict_writes_them() -> None:
    schema = json_schema(Point)
    assert schema == {
        "type": "object",
        "required": ["x", "y", "label"],
        "properties": {
            "x": {"type": "number"},
            "y": {"type": "number"},
            "label": {"type": ["string", "null"]},
        },
    }
    assert _ok(schema, dataclasses.asdict(Point(1.0)))


@pytest.mark.parametrize(
    "tp", [set[int], dict[int, str], tuple[int, str], complex, Annotated[int, 3]]
)
def test_types_without_a_json_form_are_refused(tp: Any) -> None:
    with pytest.raises(TypeError):
        json_schema(tp)
