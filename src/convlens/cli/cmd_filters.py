"""``convlens filters [--layer L] -o out.png``: a layer's weights as images."""

from __future__ import annotations

import argparse
from typing import Literal

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema


class FiltersOutput(TypedDict):
    model: str
    layer: str
    mode: Literal["rgb", "channels", "template"]
    shape: list[int]
    out: str


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(FiltersOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "filters",
        parents=[common],
        help="show a conv or linear layer's weights as images",
        description=(
            "First-layer filters as RGB tiles (default layer), any conv layer's kernels per input channel as grayscale tiles, or a linear layer that sees the pixels as one template per class."
        ),
    )
    p.add_argument(
        "--layer", default=None, help="dotted layer name (default: the first conv layer)"
    )
    p.add_argument(
        "--scale",
        choices=["layer", "filter"],
        default="layer",
        help="contrast per whole layer (default) or per tile",
    )
    p.add_argument(
        "--max-tiles",
        type=int,
        default=64,
        help="at most this many tiles in the picture (default 64)",
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output picture file (.png, .svg, .pdf; default filters.png)",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.inspect.filters import filters
    from convlens.render.figures import save_figure
    from convlens.render.inspect import filters_figure

    model = ctx.model()
    result = filters(model, ctx.args.layer, scale=ctx.args.scale)
    if model.labels is not None and result.params["mode"] == "template":
        result.provenance["labels"] = list(model.labels.names)
    out = ctx.out_path("filters.png", folder=False)
    save_figure(filters_figure(result, max_tiles=max(1, ctx.args.max_tiles)), out)
    info = {
        "model": model.name,
        "layer": result.layer,
        "mode": result.params["mode"],
        "shape": list(result.tensors["weights"].shape),
        "out": str(out),
    }
    if ctx.json:
        ctx.emit_json(info)
    else:
        print(
            f"{info['layer']} ({info['mode']}, weights {'x'.join(map(str, info['shape']))}) -> {out}"
        )
    return 0
