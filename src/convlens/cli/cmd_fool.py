"""``convlens fool IMAGE --target CLASS [-o OUT/]``: the smallest nudge that changes the class;
``convlens fool --from noise|pattern --target CLASS``: an unrecognisable image of the class."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Annotated

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import ClassRef, ClassScore, Files
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least

if TYPE_CHECKING:
    from convlens.types import ModelProtocol


class FoolOutput(TypedDict):
    model: str
    source: str
    target: ClassRef
    original: NotRequired[ClassScore | None]
    success: bool
    probability: float
    predicted: ClassRef
    linf: float
    linf_255: NotRequired[float]
    l2: float
    mean_change: NotRequired[
        Annotated[float, "from noise: mean absolute change from the starting image, in pixel units"]
    ]
    steps: int
    seed: NotRequired[Annotated[int | None, "from noise: the seed of the starting image"]]
    files: Files
    errors: list[str]


def _named(model: ModelProtocol, cls: int) -> ClassRef:
    """A class of ``model`` as the payload names it: index and label."""
    return {"class": cls, "label": model.labels.name(cls) if model.labels else str(cls)}


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(FoolOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "fool",
        parents=[common],
        help="a fooling image: nudge a photo until the model calls it CLASS, or make one from noise",
        description="Gradient ascent on the target class's log-probability from a real photo, inside an L-inf ball that widens only when needed, until the 8-bit image is classified as the target with the given probability. Saves the fooling image at the model's resolution (so `convlens predict` on it agrees), the amplified difference, and a side-by-side picture. With --from noise (free pixels from uniform noise) or --from pattern (a small coordinate network, CPPN) there is no photo: Adam ascends the target's log-probability until the 8-bit image is the target with >= 99 % (Nguyen, Yosinski & Clune 2015), and saves fooled.png, start.png and fool.png.",
    )
    p.add_argument(
        "image",
        metavar="IMAGE",
        nargs="?",
        default=None,
        help="image file or sample:NAME (not with --from noise/pattern)",
    )
    p.add_argument(
        "--from",
        dest="source",
        choices=("image", "noise", "pattern"),
        default="image",
        help="start from IMAGE (default), from uniform noise, or from a CPPN pattern",
    )
    p.add_argument("--target", required=True, help="class index, label or wnid to be mistaken for")
    p.add_argument(
        "--probability",
        type=float,
        default=None,
        help="success threshold on the target's probability (default 0.9 from an image, 0.99 from noise/pattern)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="from an image: steps per L-inf radius (radii 2, 4, 8, 16, 32 / 255; default 40); from noise/pattern: most Adam steps (default 300)",
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default fool/): fooled.png, difference.png (or start.png), fool.png",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.errors import BadInputError
    from convlens.optimize.fool import fool
    from convlens.render.figures import save_figure
    from convlens.render.optimize import amplified_difference, fooling_figure
    from convlens.targets import resolve_target

    args = ctx.args
    if args.source != "image":
        if args.image is not None:
            raise BadInputError(
                f"IMAGE {args.image!r}: --from {args.source} starts from no photo; drop IMAGE or use --from image"
            )
        return _run_from_noise(ctx)
    if args.image is None:
        raise BadInputError("IMAGE: give a photo to nudge, or --from noise / --from pattern")
    args.probability = 0.9 if args.probability is None else args.probability
    args.steps = 40 if args.steps is None else args.steps
    if not 0 < args.probability < 1:
        raise BadInputError(f"--probability {args.probability}: must be in (0, 1)")
    at_least(args.steps, 1, "--steps")
    model = ctx.model(class_scores=True)
    resolve_target(model, args.target)  # fail before any work
    batch = model.prepare([args.image])  # a bad file fails here, one line
    pixels = model.denormalize(batch.x)
    original = model.predict(pixels, top_k=1)[0]
    out = ctx.out_path("fool", folder=True)
    with ctx.progress(f"fooling toward {args.target}", 5 * args.steps) as update:
        result = fool(
            model,
            pixels,
            args.target,
            min_probability=args.probability,
            steps_per_budget=args.steps,
            progress=update,
        )
    from convlens.data.images import save_image

    params = result.params
    files = {
        "fooled": str(out / "fooled.png"),
        "difference": str(out / "difference.png"),
        "figure": str(out / "fool.png"),
    }
    save_image(result.image[0], files["fooled"])
    save_image(amplified_difference(result.tensors["difference"][0]), files["difference"])
    save_figure(fooling_figure(result, labels=model.labels), files["figure"])
    result.save(out / "fool")

    payload: FoolOutput = {
        "model": model.name,
        "source": args.image,
        "target": _named(model, params["target"]),
        "original": {
            **_named(model, original.classes[0]),
            "probability": original.probabilities[0],
        },
        "success": params["success"],
        "probability": params["probability"],
        "predicted": _named(model, params["predicted"]),
        "linf": params["linf"],
        "linf_255": round(params["linf"] * 255, 3),
        "l2": params["l2"],
        "steps": params["steps"],
        "files": files,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        verdict = "fooled" if params["success"] else "NOT fooled"
        change = (
            f"L-inf {payload['linf_255']:.1f}/255, L2 {params['l2']:.3f}, {params['steps']} steps"
        )
        print(
            f"{args.image}: {_named(model, original.classes[0])['label']} -> {payload['predicted']['label']} ({params['probability']:.0%}), {verdict}; {change} -> {out}"
        )
    return ctx.exit_code()


def _run_from_noise(ctx: Context) -> int:
    from convlens.data.images import save_image
    from convlens.errors import BadInputError
    from convlens.optimize.fool import fool_from_noise
    from convlens.render.figures import save_figure
    from convlens.render.optimize import noise_fooling_figure
    from convlens.targets import resolve_target

    args = ctx.args
    probability = 0.99 if args.probability is None else args.probability
    steps = 300 if args.steps is None else args.steps
    if not 0 < probability < 1:
        raise BadInputError(f"--probability {probability}: must be in (0, 1)")
    if steps < 1:
        raise BadInputError(f"--steps {steps}: must be >= 1")
    model = ctx.model(class_scores=True)
    resolve_target(model, args.target)  # fail before any work
    out = ctx.out_path("fool", folder=True)
    with ctx.progress(f"fooling image of {args.target} from {args.source}", steps) as update:
        result = fool_from_noise(
            model,
            args.target,
            pattern=args.source,
            min_probability=probability,
            steps=steps,
            seed=args.seed,
            progress=update,
        )
    params = result.params
    files = {
        "fooled": str(out / "fooled.png"),
        "start": str(out / "start.png"),
        "figure": str(out / "fool.png"),
    }
    save_image(result.image[0], files["fooled"])
    save_image(result.tensors["start"][0], files["start"])
    save_figure(noise_fooling_figure([result], labels=model.labels), files["figure"])
    result.save(out / "fool")

    payload: FoolOutput = {
        "model": model.name,
        "source": args.source,
        "target": _named(model, params["target"]),
        "original": None,
        "success": params["success"],
        "probability": params["probability"],
        "predicted": _named(model, params["predicted"]),
        "linf": params["linf"],
        "linf_255": round(params["linf"] * 255, 3),
        "l2": params["l2"],
        "mean_change": params["mean_change"],
        "steps": params["steps"],
        "seed": args.seed,
        "files": files,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        verdict = "fooled" if params["success"] else "NOT fooled"
        print(
            f"{args.source} -> {payload['predicted']['label']} ({params['probability']:.2%}), {verdict}; {params['steps']} steps, mean change from the start {params['mean_change'] * 255:.1f}/255 -> {out}"
        )
    return ctx.exit_code()
