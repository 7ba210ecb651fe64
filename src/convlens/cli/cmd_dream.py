"""``convlens dream IMAGE --layer L [--octaves 4 --octave-scale 1.4 --jitter 32 --steps 20] -o dream.png``."""

from __future__ import annotations

import argparse

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.errors import BadInputError


class DreamOutput(TypedDict):
    model: str
    source: str
    layer: str
    size: list[int]
    objective_before: list[float]
    objective_after: list[float]
    seconds: NotRequired[float]
    out: str
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(DreamOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dream",
        parents=[common],
        help="DeepDream: amplify what a layer sees in a photo, octave by octave",
        description="DeepDream (Mordvintsev et al. 2015): gradient ascent on the photo for the squared activations of a layer, on an octave pyramid with random jitter; any image size (large images are processed in tiles). Early layers give strokes and textures, deeper ones eyes, fur and buildings.",
    )
    p.add_argument("image", metavar="IMAGE", help="image file or sample:NAME")
    p.add_argument(
        "--layer", required=True, help="layer to amplify, e.g. blocks.6 (see convlens layers)"
    )
    p.add_argument("--octaves", type=int, default=4, help="number of scales (default 4)")
    p.add_argument(
        "--octave-scale", type=float, default=1.4, help="ratio between scales (default 1.4)"
    )
    p.add_argument("--steps", type=int, default=20, help="gradient steps per octave (default 20)")
    p.add_argument("--lr", type=float, default=0.01, help="step size in pixel units (default 0.01)")
    p.add_argument(
        "--jitter", type=int, default=32, help="largest random roll in pixels (default 32)"
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=1024,
        help="shrink larger photos to this longest side first (default 1024)",
    )
    p.add_argument("-o", "--out", default=None, help="output image (default dream.png)")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    import torch.nn.functional as F

    from convlens.data.images import load_image, save_image
    from convlens.data.samples import load_sample
    from convlens.optimize.dream import deep_dream

    args = ctx.args
    if args.max_size < 32:
        raise BadInputError(f"--max-size {args.max_size}: must be >= 32")
    model = ctx.model()
    model.layer(args.layer)  # a typo fails before the photo is read
    source = load_sample(args.image) if args.image.startswith("sample:") else args.image
    image = load_image(source, name=args.image)
    h, w = image.shape[-2:]
    if max(h, w) > args.max_size:
        scale = args.max_size / max(h, w)
        image = F.interpolate(
            image[None],
            size=(round(h * scale), round(w * scale)),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0].clamp(0, 1)
    out = ctx.out_path("dream.png", folder=False)
    with ctx.progress(f"dreaming at {args.layer}", args.octaves * args.steps) as update:
        result = deep_dream(
            model,
            image,
            args.layer,
            octaves=args.octaves,
            octave_scale=args.octave_scale,
            steps=args.steps,
            lr=args.lr,
            jitter=args.jitter,
            seed=args.seed or 0,
            progress=update,
        )
    save_image(result.image[0], out)
    result.save(out.with_suffix(""))
    before, after = (
        result.tensors["objective_before"].tolist(),
        result.tensors["objective_after"].tolist(),
    )
    payload: DreamOutput = {
        "model": model.name,
        "source": args.image,
        "layer": args.layer,
        "size": list(result.image.shape[-2:]),
        "objective_before": before,
        "objective_after": after,
        "seconds": result.seconds,
        "out": str(out),
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        octaves = ", ".join(f"{b:.3g} -> {a:.3g}" for b, a in zip(before, after))
        print(
            f"{args.image}: mean squared activation of {args.layer} per octave: {octaves} -> {out}"
        )
    return ctx.exit_code()
