"""``convlens style CONTENT STYLE [STYLE2 ...] -o out.png``: neural style transfer (Gatys et al. 2016)."""

from __future__ import annotations

import argparse

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import Files
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least


class StyleOutput(TypedDict):
    model: str
    content: str
    styles: list[str]
    style_weights: list[float]
    size: list[int]
    steps: int
    optimizer: str
    content_loss: float
    style_loss: float
    seconds: float
    files: Files


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(StyleOutput)


def parse_list(text: str | None, what: str, cast: type = str) -> list:
    """``"a,b,c"`` -> a list (None stays None); a bad item is a one-line usage error."""
    from convlens.errors import BadInputError

    if text is None:
        return None  # type: ignore[return-value]
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise BadInputError(f"{what}: expected a comma-separated list, got {text!r}")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise BadInputError(
            f"{what}: {text!r} is not a comma-separated list of {cast.__name__}s"
        ) from None


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from convlens.style.transfer import (
        DEFAULT_ALPHA,
        DEFAULT_BETA,
        DEFAULT_SIZE,
        DEFAULT_STEPS,
        DEFAULT_TV,
    )

    p = sub.add_parser(
        "style",
        parents=[common],
        help="neural style transfer: CONTENT painted in the style of STYLE (Gatys et al. 2016)",
        description="Optimise an image whose features match CONTENT's and whose Gram matrices match STYLE's (several styles mix by a weighted average of their Gram matrices). Layers and weights default to the ones tuned for the model (docs/features/style.md). Writes the result (-o, a PNG), a side-by-side picture next to it (*_figure.png) and the result's data with provenance (.npz/.json).",
    )
    p.add_argument("content", metavar="CONTENT", help="content image file or sample:NAME")
    p.add_argument(
        "styles", metavar="STYLE", nargs="+", help="one or more style images (files or sample:NAME)"
    )
    p.add_argument(
        "--style-weights",
        default=None,
        help="one weight per style, comma-separated, e.g. 0.7,0.3 (default equal)",
    )
    p.add_argument(
        "--style-scale",
        type=float,
        default=1.0,
        help="style images resized to this times the content's size (default 1)",
    )
    p.add_argument(
        "--content-layers",
        default=None,
        help="comma-separated dotted layer names (default: the model's)",
    )
    p.add_argument(
        "--style-layers",
        default=None,
        help="comma-separated dotted layer names (default: the model's)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"content weight (default {DEFAULT_ALPHA:g})",
    )
    p.add_argument(
        "--beta", type=float, default=DEFAULT_BETA, help=f"style weight (default {DEFAULT_BETA:g})"
    )
    p.add_argument(
        "--tv",
        type=float,
        default=DEFAULT_TV,
        help=f"total-variation weight (default {DEFAULT_TV:g})",
    )
    p.add_argument(
        "--optimizer",
        choices=["adam", "lbfgs"],
        default="adam",
        help="adam (default, with jitter) or lbfgs (the paper's)",
    )
    p.add_argument(
        "--init",
        choices=["content", "noise"],
        default="content",
        help="start from the content (default) or from noise",
    )
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        help=f"the content's longer side in pixels (default {DEFAULT_SIZE})",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"optimiser steps (default {DEFAULT_STEPS})",
    )
    p.add_argument(
        "--preserve-color",
        action="store_true",
        help="keep the content's colours (luminance-only transfer)",
    )
    p.add_argument("-o", "--out", default=None, help="output PNG (default style.png)")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.data.images import save_image
    from convlens.errors import BadInputError
    from convlens.render.figures import save_figure
    from convlens.render.style import style_figure
    from convlens.style.transfer import load_style_image, style_transfer

    args = ctx.args
    at_least(args.steps, 1, "--steps")
    weights = parse_list(args.style_weights, "--style-weights", float)
    if weights is not None and len(weights) != len(args.styles):
        raise BadInputError(
            f"--style-weights has {len(weights)} values for {len(args.styles)} style images"
        )
    model = ctx.model()
    content_layers = parse_list(args.content_layers, "--content-layers")
    style_layers = parse_list(args.style_layers, "--style-layers")
    for layer in (content_layers or []) + (style_layers or []):
        model.layer(layer)  # unknown layers fail before any work
    content = load_style_image(args.content, args.size)  # bad files fail here, one line
    styles = [load_style_image(s) for s in args.styles]
    out = ctx.out_path("style.png", folder=False)
    with ctx.progress("style transfer", args.steps) as update:
        result = style_transfer(
            model, content, styles, style_weights=weights, style_scale=args.style_scale, content_layers=content_layers, style_layers=style_layers,
            alpha=args.alpha, beta=args.beta, tv_weight=args.tv, optimizer=args.optimizer, init=args.init, size=args.size, steps=args.steps,
            preserve_color=args.preserve_color, seed=args.seed, progress=update,
        )  # fmt: skip
    image = result.image[0]
    figure_path = out.with_name(out.stem + "_figure.png")
    save_image(image, out)
    save_figure(
        style_figure(
            result.tensors["content"], list(styles), image, style_titles=list(args.styles)
        ),
        figure_path,
    )
    result.save(out.with_suffix(""))
    params = result.params
    payload: StyleOutput = {
        "model": model.name,
        "content": args.content,
        "styles": list(args.styles),
        "style_weights": weights or [1.0 / len(args.styles)] * len(args.styles),
        "size": params["size"],
        "steps": args.steps,
        "optimizer": args.optimizer,
        "content_loss": float(result.tensors["content_loss"][0]),
        "style_loss": float(result.tensors["style_loss"][0]),
        "seconds": params["seconds"],
        "files": {
            "image": str(out),
            "figure": str(figure_path),
            "npz": str(out.with_suffix(".npz")),
        },
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        print(
            f"{args.content} in the style of {', '.join(args.styles)}: content loss {payload['content_loss']:.3f}, style loss {payload['style_loss']:.3f}, {params['seconds']:.0f} s -> {out}"
        )
    return ctx.exit_code()
