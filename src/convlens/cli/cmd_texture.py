"""``convlens texture SAMPLE --size 512 -o out.png``: texture synthesis from Gram matrices (Gatys et al. 2015)."""

from __future__ import annotations

import argparse

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import Files
from convlens.cli.schema import json_schema


class TextureOutput(TypedDict):
    model: str
    sample: str
    size: list[int]
    steps: int
    style_loss: float
    seconds: float
    files: Files


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(TextureOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from convlens.style.transfer import DEFAULT_STEPS

    p = sub.add_parser(
        "texture",
        parents=[common],
        help="a new texture, any size, from a sample's Gram matrices (Gatys et al. 2015)",
        description="Start from noise and match the Gram matrices of the sample at the model's style layers. The Gram matrices forget where things are, so the texture can be larger than the sample. Writes the texture (-o, a PNG), a picture with the sample beside it (*_figure.png) and the data with provenance (.npz/.json).",
    )
    p.add_argument(
        "sample",
        metavar="SAMPLE",
        help="texture sample: image file or sample:NAME (e.g. sample:brick)",
    )
    p.add_argument(
        "--size", type=int, default=384, help="the texture's side in pixels (default 384)"
    )
    p.add_argument(
        "--sample-size",
        type=int,
        default=256,
        help="the sample's longer side in pixels (default 256)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"optimiser steps (default {DEFAULT_STEPS})",
    )
    p.add_argument(
        "--param",
        choices=["fourier", "pixel"],
        default="fourier",
        help="image parameterisation (default fourier)",
    )
    p.add_argument("-o", "--out", default=None, help="output PNG (default texture.png)")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.data.images import save_image
    from convlens.errors import BadInputError
    from convlens.render.figures import save_figure
    from convlens.render.style import texture_figure
    from convlens.style.transfer import load_style_image, synthesize_texture

    args = ctx.args
    for name in ("steps", "size", "sample_size"):
        if getattr(args, name) < (1 if name == "steps" else 16):
            raise BadInputError(f"--{name.replace('_', '-')} {getattr(args, name)}: too small")
    model = ctx.model()
    sample = load_style_image(args.sample, args.sample_size)  # a bad file fails here, one line
    out = ctx.out_path("texture.png", folder=False)
    with ctx.progress("texture synthesis", args.steps) as update:
        result = synthesize_texture(
            model,
            sample,
            size=args.size,
            sample_size=None,
            param=args.param,
            steps=args.steps,
            seed=args.seed,
            progress=update,
        )
    image = result.image[0]
    figure_path = out.with_name(out.stem + "_figure.png")
    save_image(image, out)
    save_figure(texture_figure(result.tensors["sample"], image), figure_path)
    result.save(out.with_suffix(""))
    params = result.params
    payload: TextureOutput = {
        "model": model.name,
        "sample": args.sample,
        "size": params["size"],
        "steps": args.steps,
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
            f"{args.sample}: {params['size'][0]}x{params['size'][1]} texture, style loss {payload['style_loss']:.3f}, {params['seconds']:.0f} s -> {out}"
        )
    return ctx.exit_code()
