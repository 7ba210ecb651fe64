"""JSON schemas generated from the types of the commands' ``--json`` payloads.

A command declares what it prints under ``--json`` as a typed structure (a ``TypedDict``,
or a dataclass) and derives its ``SCHEMA`` with :func:`json_schema`, so the keys, their
types and which are required are written once, where the type checker also sees them.
The mapping is small and explicit:

==========================================  ==============================================
Python type                                 JSON schema
==========================================  ==============================================
``str`` / ``int`` / ``float`` / ``bool``    ``{"type": "string" | "integer" | "number" |
                                            "boolean"}``
``None``                                    ``{"type": "null"}``
``Any`` / ``object``                        ``{}`` (anything)
``list[T]``, ``tuple[T, ...]``              ``{"type": "array", "items": T}``
``dict[str, T]``                            ``{"type": "object", "additionalProperties": T}``
``Literal[a]`` / ``Literal[a, b]``          ``{"const": a}`` / ``{"enum": [a, b]}``
``T | None``, ``Optional[T]``               ``"null"`` added to T's ``type`` (or ``enum``)
``A | B``                                   ``{"oneOf": [A, B]}``
``TypedDict``                               an object: its keys are ``properties``, the ones
                                            not marked ``NotRequired`` (or all of them with
                                            ``total=True``) are ``required``; the class
                                            docstring is the ``description``
dataclass                                   an object whose fields are all required (what
                                            :func:`dataclasses.asdict` writes)
``Annotated[T, "text"]``                    T with ``"description": "text"``
``Annotated[T, Bounds(minimum=0)]``         T with ``"minimum"`` / ``"maximum"``
generic ``TypedDict[X, Y]``                 its type variables replaced by X, Y
==========================================  ==============================================

Objects stay open (no ``additionalProperties: false``): a payload may grow a key without
breaking a reader that validates against an older schema.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any

import typing_extensions as tx

__all__ = ["Bounds", "json_schema"]

_SIMPLE: dict[Any, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


@dataclass(frozen=True)
class Bounds:
    """Inclusive numeric bounds, written into the schema as ``minimum`` / ``maximum``."""

    minimum: float | None = None
    maximum: float | None = None


def json_schema(tp: Any) -> dict[str, Any]:
    """The JSON schema (draft 2020-12 vocabulary) of values of the type ``tp``.

    >>> from typing import Literal
    >>> json_schema(list[Literal["inf", "2"]])
    {'type': 'array', 'items': {'enum': ['inf', '2']}}

    A type outside the table in the module docstring raises ``TypeError``, so a payload
    field can never silently become "anything".
    """
    return _schema(tp, {})


def _schema(tp: Any, env: dict[Any, Any]) -> dict[str, Any]:
    if isinstance(tp, typing.TypeVar):
        if tp not in env:
            raise TypeError(f"type variable {tp} is not bound")
        return _schema(env[tp], env)
    if tp is Any or tp is object:
        return {}
    if tp is None:
        tp = type(None)
    if tp in _SIMPLE:
        return {"type": _SIMPLE[tp]}
    origin, args = tx.get_origin(tp), tx.get_args(tp)
    if origin is tx.Annotated:
        return _annotated(_schema(args[0], env), tp.__metadata__)
    if origin is tx.Literal:
        values = list(args)
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin is typing.Union or origin is types.UnionType:
        return _union([_schema(a, env) for a in args])
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"{tp}: only tuple[T, ...] maps to a JSON array")
        items = _schema(args[0], env) if args else {}
        return {"type": "array", **({"items": items} if items else {})}
    if origin is dict or tp is dict:
        if args and args[0] is not str:
            raise TypeError(f"{tp}: JSON object keys are strings")
        value = _schema(args[1], env) if args else {}
        return {"type": "object", **({"additionalProperties": value} if value else {})}
    if origin is not None and tx.is_typeddict(origin):  # a generic TypedDict, e.g. Multi[A, B]
        params = getattr(origin, "__parameters__", ())
        return _typeddict(origin, {**env, **dict(zip(params, args))})
    if tx.is_typeddict(tp):
        return _typeddict(tp, env)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = tx.get_type_hints(tp, include_extras=True)
        fields = [f.name for f in dataclasses.fields(tp)]
        return _object(tp, {name: _schema(hints[name], env) for name in fields}, fields)
    raise TypeError(f"no JSON schema for the type {tp!r}")


def _typeddict(tp: Any, env: dict[Any, Any]) -> dict[str, Any]:
    # Required/NotRequired are read from the hints, not from __required_keys__: with
    # `from __future__ import annotations` Python 3.10-3.11 compute that set wrongly.
    hints = tx.get_type_hints(tp, include_extras=True)
    total = getattr(tp, "__total__", True)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, hint in hints.items():
        needed = total
        while tx.get_origin(hint) in (tx.Required, tx.NotRequired):
            needed = tx.get_origin(hint) is tx.Required
            hint = tx.get_args(hint)[0]
        properties[name] = _schema(hint, env)
        if needed:
            required.append(name)
    return _object(tp, properties, required)


def _object(tp: Any, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    doc = tp.__dict__.get("__doc__")
    # a dataclass without a docstring gets its signature as one: not a description
    if doc and not (
        dataclasses.is_dataclass(tp) and doc.startswith(getattr(tp, "__name__", "") + "(")
    ):
        schema["description"] = inspect.cleandoc(doc)
    if required:
        schema["required"] = required
    schema["properties"] = properties
    return schema


def _annotated(schema: dict[str, Any], metadata: tuple[Any, ...]) -> dict[str, Any]:
    schema = dict(schema)
    for item in metadata:
        if isinstance(item, str):
            schema["description"] = item
        elif isinstance(item, Bounds):
            if item.minimum is not None:
                schema["minimum"] = item.minimum
            if item.maximum is not None:
                schema["maximum"] = item.maximum
        else:
            raise TypeError(f"unknown schema annotation {item!r}: use a str or Bounds")
    return schema


def _union(options: list[dict[str, Any]]) -> dict[str, Any]:
    nulls = [o for o in options if o == {"type": "null"}]
    others = [o for o in options if o != {"type": "null"}]
    if any(o == {} for o in others):
        return {}
    if nulls and len(others) == 1:
        (one,) = others
        if isinstance(one.get("type"), (str, list)):
            types_ = [one["type"]] if isinstance(one["type"], str) else list(one["type"])
            return {**one, "type": [*types_, "null"]}
        if "enum" in one or "const" in one:
            values = one["enum"] if "enum" in one else [one["const"]]
            rest = {k: v for k, v in one.items() if k not in ("enum", "const")}
            return {**rest, "enum": [*values, None]}
    simple = [o for o in others if set(o) == {"type"} and isinstance(o["type"], str)]
    if len(simple) == len(others):  # e.g. int | str: one "type" list
        return {"type": [o["type"] for o in simple] + (["null"] if nulls else [])}
    return {"oneOf": others + nulls}
