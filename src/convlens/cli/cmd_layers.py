"""``convlens layers``: the layer table (names, types, output shapes, receptive fields)."""

from __future__ import annotations

import argparse

from convlens.cli.context import Context

SCHEMA = {
    "type": "object",
    "required": ["model", "input_size", "layers"],
    "properties": {
        "model": {"type": "string"},
        "input_size": {"type": "array", "items": {"type": "integer"}},
        "layers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "name",
                    "type",
                    "output_shape",
                    "parameters",
                    "calls",
                    "receptive_field",
                    "is_leaf",
                ],
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string"},
                    "output_shape": {"type": ["array", "null"], "items": {"type": "integer"}},
                    "parameters": {"type": "integer"},
                    "calls": {"type": "integer"},
                    "is_leaf": {"type": "boolean"},
                    "receptive_field": {
                        "type": ["object", "null"],
                        "properties": {
                            "size": {"type": "array", "items": {"type": "number"}},
                            "stride": {"type": "array", "items": {"type": "number"}},
                            "offset": {"type": "array", "items": {"type": "number"}},
                            "is_global": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


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
