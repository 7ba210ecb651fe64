"""``convlens invert IMAGE --layer L | --layers a,b,c [--steps N] -o invert.png``."""

from __future__ import annotations

import argparse
from typing import Annotated

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import ClassScore
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least
from convlens.errors import BadInputError


class Layer(TypedDict):
    layer: str
    psnr: float
    relative_error: float
    top1: Annotated[ClassScore, "the class the model gives the reconstruction"]


class InvertOutput(TypedDict):
    model: str
    source: str
    layers: list[Layer]
    out: str
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(InvertOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "invert",
        parents=[common],
        help="feature inversion: the image a layer's code describes",
        description="Reconstruct the photo from one layer's activations (Mahendran & Vedaldi 2015): gradient ascent on minus the normalised distance to the code, with a total-variation prior. `--layers` makes a shallow-to-deep strip: early layers keep the photo, deep ones keep what the class needs.",
    )
    p.add_argument("image", metavar="IMAGE", help="image file or sample:NAME")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--layer", help="the layer whose code is inverted")
    group.add_argument("--layers", help="comma-separated layers, shallow to deep, for a strip")
    p.add_argument(
        "--steps", type=int, default=200, help="optimisation steps per layer (default 200)"
    )
    p.add_argument(
        "--tv",
        type=float,
        default=None,
        help="weight of the total-variation prior (default: 0.01 up to stride 4, else 0.2)",
    )
    p.add_argument(
        "--param",
        choices=["pixel", "fourier"],
        default=None,
        help="image parameterisation (default: pixel up to stride 4, else fourier)",
    )
    p.add_argument(
        "--jitter",
        type=int,
        default=None,
        help="random shift in pixels each step (default: 0 up to stride 4, else 8)",
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output picture (default invert.png); each layer's result (.npz + .json provenance) is saved beside it as OUT-LAYER",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.data.images import quantize_8bit, save_image
    from convlens.optimize.invert import invert_layers
    from convlens.render.figures import save_figure
    from convlens.render.optimize import gallery_figure

    args = ctx.args
    at_least(args.steps, 1, "--steps")
    if args.tv is not None and args.tv < 0:
        raise BadInputError(f"--tv {args.tv}: must be >= 0")
    layers = (
        [args.layer]
        if args.layer
        else [name.strip() for name in args.layers.split(",") if name.strip()]
    )
    if not layers:
        raise BadInputError("--layers: give at least one layer name")
    model = ctx.model()
    for layer in layers:
        model.layer(layer)  # typos fail before any work
    batch = model.prepare([args.image])
    pixels = model.denormalize(batch.x)
    out = ctx.out_path("invert.png", folder=False)
    with ctx.progress(f"inverting {len(layers)} layer(s)", len(layers) * args.steps) as update:
        results = invert_layers(
            model,
            pixels,
            layers,
            steps=args.steps,
            tv_weight=args.tv,
            param=args.param,
            jitter=args.jitter,
            seed=args.seed or 0,
            progress=update,
        )
    images = [quantize_8bit(pixels[0])] + [quantize_8bit(r.image[0]) for r in results]
    rows: list[Layer] = []
    titles = ["original"]
    for layer, r in zip(layers, results):
        pred = model.predict(quantize_8bit(r.image), top_k=1)[0]
        rows.append(
            {
                "layer": layer,
                "psnr": float(r.tensors["psnr"][0]),
                "relative_error": float(r.tensors["relative_error"][0]),
                "top1": {
                    "class": pred.classes[0],
                    "label": pred.labels[0],
                    "probability": pred.probabilities[0],
                },
            }
        )
        titles.append(f"{layer}\n{rows[-1]['psnr']:.1f} dB, {pred.labels[0]}")
    import torch

    save_figure(gallery_figure(torch.stack(images), titles, ncols=len(images)), out)
    if len(results) == 1:
        save_image(results[0].tensors["image"][0], out.with_name(out.stem + "-image.png"))
    for layer, result in zip(layers, results):
        result.save(out.with_name(f"{out.stem}-{layer}"))  # the reconstruction with its provenance
    if ctx.json:
        ctx.emit_json(
            {
                "model": model.name,
                "source": args.image,
                "layers": rows,
                "out": str(out),
                "errors": ctx.bad_inputs,
            }
        )
    else:
        for row in rows:
            print(
                f"{row['layer']}: PSNR {row['psnr']:.1f} dB, code error {row['relative_error']:.1%}, top-1 {row['top1']['label']}"
            )
        print(f"-> {out}")
    return ctx.exit_code()
