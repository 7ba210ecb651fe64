"""``convlens layers``: the layer table (names, types, output shapes, receptive fields)."""

from __future__ import annotations

import argparse

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema


class ReceptiveField(TypedDict):
    size: NotRequired[list[float]]
    stride: NotRequired[list[float]]
    offset: NotRequired[list[float]]
    is_global: NotRequired[bool]


class Layer(TypedDict):
    name: str
    type: str
    output_shape: list[int] | None
    parameters: int
    calls: int
    is_leaf: bool
    receptive_field: ReceptiveField | None


class LayersOutput(TypedDict):
    model: str
    input_size: list[int]
    layers: list[Layer]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(LayersOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "layers",
        parents=[common],
        help="the model's layers with output shapes and receptive fields",
        description="List every layer by dotted name (use these names wherever a command takes --layer).",
    )
    p.add_argument(
        "--all", action="store_true", help="include container modules, not only leaf layers"
    )
    p.add_argument(
        "--filter", default=None, metavar="TEXT", help="only layers whose name contains TEXT"
    )
    p.set_defaults(func=run)


def _fmt_pair(v: tuple[float, float]) -> str:
    a, b = (int(x) if float(x).is_integer() else round(x, 1) for x in v)
    return str(a) if a == b else f"{a}x{b}"


def run(ctx: Context) -> int:
    model = ctx.model()
    rows = [r for r in model.layers() if (ctx.args.all or r.is_leaf) and r.name != "(model)"]
    if ctx.args.filter:
        rows = [r for r in rows if ctx.args.filter in r.name]
    if ctx.json:
        ctx.emit_json(
            {
                "model": model.name,
                "input_size": list(model.input_size),
                "layers": [r.to_dict() for r in rows],
            }
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{model.name} ({model.channels}x{model.input_size[0]}x{model.input_size[1]} input)"
    )
    for col in ("layer", "type", "output", "params", "RF size", "RF stride"):
        table.add_column(
            col, justify="right" if col in ("params", "RF size", "RF stride") else "left"
        )
    for r in rows:
        rf = r.receptive_field
        shape = "x".join(str(s) for s in r.output_shape) if r.output_shape else "-"
        size = "global" if rf and rf.is_global else (_fmt_pair(rf.size) if rf else "?")
        stride = "-" if not rf or rf.is_global else _fmt_pair(rf.stride)
        table.add_row(r.name, r.type, shape, f"{r.parameters:,}", size, stride)
    Console(soft_wrap=True).print(table)
    return 0
