"""``convlens style-train STYLE [--images DIR] -o style.pt``: train a fast feed-forward style net."""

from __future__ import annotations

import argparse
from typing import Annotated

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least, greater_than


class Loss(TypedDict):
    first: float
    last: float


class StyleTrainOutput(TypedDict):
    model: str
    style: str
    out: str
    images: Annotated[int, "number of training images"]
    held_out: NotRequired[list[str] | None]
    steps: int
    size: int
    batch: int
    seconds: float
    loss: Annotated[
        Loss, "alpha*content + beta*style + tv*TV, mean of the first and last 10% of steps"
    ]
    content_loss: Annotated[float, "mean over the last 10% of steps"]
    style_loss: Annotated[float, "mean over the last 10% of steps"]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(StyleTrainOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from convlens.style.fast import (
        DEFAULT_BATCH,
        DEFAULT_LR,
        DEFAULT_SIZE,
        DEFAULT_STEPS,
        DEFAULT_TRAIN_ALPHA,
        HELD_OUT,
    )
    from convlens.style.transfer import DEFAULT_BETA, DEFAULT_TV

    p = sub.add_parser(
        "style-train",
        parents=[common],
        help="train a fast feed-forward style network for one style (Johnson et al. 2016)",
        description=f"Trains a small transformation network (instance normalisation, residual blocks, upsample+conv) so that one forward pass stylises any photo, with the same perceptual losses and layers as `convlens style`. By default it trains on the bundled photos (except {', '.join(HELD_OUT)}, held out) and the 20 foolbox ImageNet photos, as seeded random square crops. Writes a .pt file for `convlens stylize`.",
    )
    p.add_argument("style", metavar="STYLE", help="style image file or sample:NAME")
    p.add_argument(
        "--images", default=None, help="folder of training photos (default: the bundled set)"
    )
    p.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help=f"Adam steps (default {DEFAULT_STEPS})"
    )
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        help=f"side of the random square crops (default {DEFAULT_SIZE})",
    )
    p.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help=f"crops per step (default {DEFAULT_BATCH})"
    )
    p.add_argument(
        "--lr", type=float, default=DEFAULT_LR, help=f"Adam learning rate (default {DEFAULT_LR:g})"
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_TRAIN_ALPHA,
        help=f"content weight (default {DEFAULT_TRAIN_ALPHA:g}, as `convlens style`)",
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
    p.add_argument("-o", "--out", default=None, help="output file (default style.pt)")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from pathlib import Path

    from convlens.errors import BadInputError
    from convlens.style.fast import save_style_net, train_style_net
    from convlens.style.transfer import load_style_image

    args = ctx.args
    if args.images is not None and not Path(args.images).is_dir():
        raise BadInputError(f"--images {args.images}: not a folder")
    out = Path(args.out or "style.pt")
    if out.is_dir() or out.suffix != ".pt":
        raise BadInputError(
            f"--out {out}: a style net is saved as a .pt file, e.g. {out.with_suffix('.pt') if not out.is_dir() else out / 'style.pt'}"
        )
    for name, value in (("--steps", args.steps), ("--batch", args.batch), ("--size", args.size)):
        at_least(value, 1, name)
    greater_than(args.lr, 0, "--lr")
    for name, value in (("--alpha", args.alpha), ("--beta", args.beta), ("--tv", args.tv)):
        at_least(value, 0, name)
    load_style_image(args.style)  # a bad style image fails before the model loads
    model = ctx.model()
    with ctx.progress("training the style net", args.steps) as update:
        net, result = train_style_net(
            model,
            args.style,
            args.images,
            steps=args.steps,
            size=args.size,
            batch=args.batch,
            lr=args.lr,
            alpha=args.alpha,
            beta=args.beta,
            tv_weight=args.tv,
            seed=args.seed,
            progress=update,
        )
    save_style_net(net, out)
    params = result.params
    tail = max(1, args.steps // 10)
    history = result.tensors["history"]
    payload: StyleTrainOutput = {
        "model": model.name,
        "style": args.style,
        "out": str(out),
        "images": len(params["images"])
        if isinstance(params["images"], list)
        else int(str(params["images"]).split()[0]),
        "held_out": params["held_out"],
        "steps": args.steps,
        "size": args.size,
        "batch": args.batch,
        "seconds": params["seconds"],
        "loss": {"first": float(history[:tail].mean()), "last": float(history[-tail:].mean())},
        "content_loss": float(result.tensors["content_loss"][-tail:].mean()),
        "style_loss": float(result.tensors["style_loss"][-tail:].mean()),
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        loss = payload["loss"]
        print(
            f"{args.style}: trained {args.steps} steps on {payload['images']} images in {params['seconds']:.0f} s, loss {loss['first']:.3g} -> {loss['last']:.3g} -> {out}"
        )
    return 0
