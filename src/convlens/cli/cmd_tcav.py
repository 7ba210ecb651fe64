"""``convlens tcav IMAGES --concept DIR --random DIR DIR DIR [--layer L] [--target CLASS]``."""

from __future__ import annotations

import argparse
from typing import Annotated

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema


class TcavOutput(TypedDict):
    model: str
    layer: str
    target: Annotated[int, "the class tested (default: the class predicted most often on IMAGES)"]
    concept: str
    randoms: list[str]
    images: Annotated[int, "class images read"]
    mean: Annotated[
        float,
        "mean TCAV score over the concept CAVs: share of images whose class score rises along the concept",
    ]
    scores: Annotated[list[float], "TCAV score of the concept against each random set"]
    random_scores: Annotated[list[float], "the null: random set i against random set i+1"]
    p_value: Annotated[float, "two-sided Welch t-test, scores against random_scores"]
    alpha: float
    significant: bool
    accuracies: Annotated[list[float], "accuracy of each concept CAV's linear classifier"]
    out: NotRequired[Annotated[str, "the picture"]]
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(TcavOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "tcav",
        parents=[common],
        help="does a concept (a folder of example images) raise a class's score? TCAV with a significance test",
        description="Testing with concept activation vectors (Kim et al. 2018, arXiv:1711.11279): a linear classifier separates the layer's activations of the concept images from those of each random folder; its normal is the concept's direction. The TCAV score is the share of IMAGES whose class score rises along it; CAVs between random folders give the null distribution, and a two-sided Welch t-test says whether the concept's scores differ from it.",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES",
        help="images of the class (files, folders or sample:NAME)",
    )
    p.add_argument(
        "--concept",
        required=True,
        metavar="DIR",
        help="folder of concept images (e.g. striped textures)",
    )
    p.add_argument(
        "--random",
        required=True,
        nargs="+",
        metavar="DIR",
        help="at least 3 folders of random images (more make the test stronger)",
    )
    p.add_argument(
        "--layer",
        default=None,
        help="layer whose activations the CAVs live in (default: the last spatial layer)",
    )
    p.add_argument(
        "--target",
        default=None,
        help="class index or label (default: the class predicted most often on IMAGES)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="picture of the scores against the random null (default tcav.png)",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.attribution.base import default_cam_layer
    from convlens.cli.images import expand_image_args
    from convlens.errors import BadInputError
    from convlens.represent.tcav import tcav
    from convlens.targets import resolve_target

    args = ctx.args
    if not 0 < args.alpha < 1:
        raise BadInputError(f"--alpha {args.alpha}: pass a significance level between 0 and 1")
    if len(args.random) < 3:
        raise BadInputError(
            f"--random: pass at least 3 folders of random images, got {len(args.random)}"
        )
    out = ctx.out_path("tcav.png", folder=False)
    model = ctx.model(class_scores=True)
    with ctx.progress("reading images"):
        images = model.prepare(expand_image_args(args.images)).x
        concept = model.prepare(expand_image_args([args.concept])).x
        randoms = [model.prepare(expand_image_args([r])).x for r in args.random]
    layer = args.layer or default_cam_layer(model)
    if args.target is None:
        cls = int(model.logits(images).argmax(dim=1).mode().values)
    else:
        text = args.target
        resolved = resolve_target(model, int(text) if text.lstrip("-").isdigit() else text, 1)
        if resolved.kind != "class" or resolved.classes is None:
            raise BadInputError(f"--target {text}: pass a class index or label")
        cls = int(resolved.classes.reshape(-1)[0])
    with ctx.progress(f"TCAV at {layer}"):
        result = tcav(model, images, cls, layer, concept, randoms, alpha=args.alpha)
    from convlens.render.figures import save_figure
    from convlens.render.tcav import tcav_figure

    name = model.labels.name(cls) if model.labels else str(cls)
    save_figure(
        tcav_figure(
            [(f"{args.concept}", result)], title=f"{model.name}: class {cls} {name} at {layer}"
        ),
        out,
    )
    payload = {
        "model": model.name,
        "target": cls,
        "concept": args.concept,
        "randoms": list(args.random),
        "images": int(images.shape[0]),
        **result.to_dict(),
        "out": str(out),
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        verdict = "significant" if result.significant else "not significant"
        print(
            f"TCAV {args.concept} for {cls} {name} at {layer}: {result.mean:.2f} (random {sum(result.random_scores) / len(result.random_scores):.2f}), p = {result.p_value:.3g}, {verdict} at alpha {args.alpha} -> {out}"
        )
    return ctx.exit_code()
