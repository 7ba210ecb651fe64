"""``convlens activations IMAGE --layer L -o out.png``: feature maps, strongest channels first."""

from __future__ import annotations

import argparse
from pathlib import Path

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.images import iter_images
from convlens.cli.schema import json_schema


class TopChannel(TypedDict):
    channel: int
    strength: float


class Image(TypedDict):
    source: str
    shape: list[int]
    top_channels: list[TopChannel]
    out: str


class ActivationsOutput(TypedDict):
    model: str
    layer: str
    images: list[Image]
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(ActivationsOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "activations",
        parents=[common],
        help="a layer's feature maps for images",
        description="Feature maps of one layer as a grid, strongest channels first, titled with channel index and mean activation.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file, folder or sample:NAME")
    p.add_argument("--layer", required=True, help="dotted layer name (see `convlens layers`)")
    p.add_argument("--max-channels", type=int, default=32, help="channels in the grid (default 32)")
    p.add_argument(
        "--order-by",
        choices=["mean", "max"],
        default="mean",
        help="rank channels by mean or max activation",
    )
    p.add_argument(
        "--top-k", type=int, default=5, help="strongest channels listed in the output (default 5)"
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="picture file for one image (default activations.png); a folder for several",
    )
    p.set_defaults(func=run)


def output_for(ctx: Context, n_images: int, source: str, default: str) -> Path:
    """One picture: ``-o`` is the file. Several: ``-o`` is a folder with one file per image."""
    if n_images == 1:
        return ctx.out_path(default, folder=False)
    folder = ctx.out_path(Path(default).stem, folder=True)
    return folder / f"{Path(source.replace('sample:', '')).stem}{Path(default).suffix}"


def run(ctx: Context) -> int:
    from convlens.cli.images import expand_image_args
    from convlens.inspect.activations import activations
    from convlens.render.figures import save_figure
    from convlens.render.inspect import activations_figure

    model = ctx.model()
    model.layer(ctx.args.layer)  # unknown layer: fail before reading images
    n = len(expand_image_args(ctx.args.images))
    rows: list[Image] = []
    for loaded in iter_images(ctx, ctx.args.images, "feature maps"):
        result = activations(
            model,
            model.prepare([loaded.image], sources=[loaded.source]),
            ctx.args.layer,
            order_by=ctx.args.order_by,
        )
        out = output_for(ctx, n, loaded.source, "activations.png")
        if result.tensors["activations"].dim() == 4:
            save_figure(
                activations_figure(result, 0, max_channels=max(1, ctx.args.max_channels)), out
            )
        else:
            out = Path("")
        order = result.tensors["channel_order"][0][: ctx.args.top_k].tolist()
        strength = result.tensors["channel_strength"][0]
        rows.append(
            {
                "source": loaded.source,
                "shape": list(result.tensors["activations"].shape[1:]),
                "top_channels": [{"channel": c, "strength": float(strength[c])} for c in order],
                "out": str(out),
            }
        )
    if ctx.json:
        payload: ActivationsOutput = {
            "model": model.name,
            "layer": ctx.args.layer,
            "images": rows,
            "errors": ctx.bad_inputs,
        }
        ctx.emit_json(payload)
    else:
        for r in rows:
            top = ", ".join(f"{t['channel']} ({t['strength']:.3g})" for t in r["top_channels"])
            print(
                f"{r['source']}: {ctx.args.layer} {'x'.join(map(str, r['shape']))}; strongest channels {top} -> {r['out'] or '(not spatial: no picture)'}"
            )
    return ctx.exit_code()
