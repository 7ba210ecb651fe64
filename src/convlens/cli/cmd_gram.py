"""``convlens gram IMAGE --layer L [-o gram.png]``: a layer's Gram matrix and channel statistics."""

from __future__ import annotations

import argparse

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import Files
from convlens.cli.schema import json_schema


class GramOutput(TypedDict):
    model: str
    source: str
    layer: str
    transform: str
    channels: int
    gram_trace: float
    files: Files


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(GramOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from convlens.style.gram import FEATURE_TRANSFORMS

    p = sub.add_parser(
        "gram",
        parents=[common],
        help="a layer's Gram matrix G = F F^T / (C H W) and its channel means/variances, as heatmaps",
        description="The style statistics of one layer (Gatys et al. 2015): the Gram matrix of the layer's activations and, beside it, the lighter alternative of channel means and variances. Writes a picture (-o, a file) and the raw matrices (.npz with a JSON sidecar next to it).",
    )
    p.add_argument("image", metavar="IMAGE", help="image file or sample:NAME (used at --size)")
    p.add_argument("--layer", required=True, help="dotted layer name (see `convlens layers`)")
    p.add_argument(
        "--transform",
        choices=list(FEATURE_TRANSFORMS),
        default="none",
        help="activation transform before the statistics (default none)",
    )
    p.add_argument(
        "--size", type=int, default=256, help="the image's longer side in pixels (default 256)"
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output picture (default gram.png); the matrices go to the same name with .npz/.json",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.render.figures import save_figure
    from convlens.render.style import gram_figure
    from convlens.style.losses import layer_statistics
    from convlens.style.transfer import load_style_image

    args = ctx.args
    model = ctx.model()
    model.layer(args.layer)  # an unknown layer fails before any work, with suggestions
    image = load_style_image(args.image, args.size, model)
    out = ctx.out_path("gram.png", folder=False)
    result = layer_statistics(model, image, args.layer, transform=args.transform)
    g = result.tensors["gram"]
    save_figure(
        gram_figure(
            g,
            result.tensors["mean"],
            result.tensors["variance"],
            title=f"{model.name} {args.layer} ({args.transform})",
        ),
        out,
    )
    result.save(out.with_suffix(""))
    files = {"figure": str(out), "npz": str(out.with_suffix(".npz"))}
    payload: GramOutput = {
        "model": model.name,
        "source": args.image,
        "layer": args.layer,
        "transform": args.transform,
        "channels": int(g.shape[0]),
        "gram_trace": float(g.trace()),
        "files": files,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        print(
            f"{args.image}: {args.layer} Gram matrix {g.shape[0]}x{g.shape[1]} (trace {float(g.trace()):.4g}) -> {out}"
        )
    return ctx.exit_code()
