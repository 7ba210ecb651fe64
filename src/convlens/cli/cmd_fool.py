"""``convlens fool IMAGE --target CLASS [-o OUT/]``: the smallest nudge that changes the class."""

from __future__ import annotations

import argparse

from convlens.cli.context import Context

SCHEMA = {
    "type": "object",
    "required": ["model", "source", "target", "success", "probability", "predicted", "linf", "l2", "steps", "files", "errors"],
    "properties": {
        "model": {"type": "string"},
        "source": {"type": "string"},
        "target": {"type": "object", "required": ["class", "label"]},
        "original": {"type": "object"},
        "success": {"type": "boolean"},
        "probability": {"type": "number"},
        "predicted": {"type": "object", "required": ["class", "label"]},
        "linf": {"type": "number"},
        "linf_255": {"type": "number"},
        "l2": {"type": "number"},
        "steps": {"type": "integer"},
        "files": {"type": "object"},
        "errors": {"type": "array", "items": {"type": "string"}},
    },
}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "fool",
        parents=[common],
        help="a fooling image: nudge a photo until the model calls it CLASS",
        description="Gradient ascent on the target class's log-probability from a real photo, inside an L-inf ball that widens only when needed, until the 8-bit image is classified as the target with the given probability. Saves the fooling image at the model's resolution (so `convlens predict` on it agrees), the amplified difference, and a side-by-side picture.",
    )
    p.add_argument("image", metavar="IMAGE", help="image file or sample:NAME")
    p.add_argument("--target", required=True, help="class index, label or wnid to be mistaken for")
    p.add_argument("--probability", type=float, default=0.9, help="success threshold on the target's probability (default 0.9)")
    p.add_argument("--steps", type=int, default=40, help="steps per L-inf radius (radii 2, 4, 8, 16, 32 / 255; default 40)")
    p.add_argument("-o", "--out", default=None, help="output folder (default fool/): fooled.png, difference.png, fool.png")
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.errors import BadInputError
    from convlens.optimize.fool import fool
    from convlens.render.figures import save_figure
    from convlens.render.optimize import amplified_difference, fooling_figure
    from convlens.targets import resolve_target

    args = ctx.args
    if not 0 < args.probability < 1:
        raise BadInputError(f"--probability {args.probability}: must be in (0, 1)")
    if args.steps < 1:
        raise BadInputError(f"--steps {args.steps}: must be >= 1")
    model = ctx.model(class_scores=True)
    resolve_target(model, args.target)  # fail before any work
    batch = model.prepare([args.image])  # a bad file fails here, one line
    pixels = model.denormalize(batch.x)
    original = model.predict(pixels, top_k=1)[0]
    out = ctx.out_path("fool", folder=True)
    with ctx.progress(f"fooling toward {args.target}", 5 * args.steps) as update:
        result = fool(model, pixels, args.target, min_probability=args.probability, steps_per_budget=args.steps, progress=update)
    from convlens.data.images import save_image

    params = result.provenance["params"]
    files = {"fooled": str(out / "fooled.png"), "difference": str(out / "difference.png"), "figure": str(out / "fool.png")}
    save_image(result.tensors["image"][0], files["fooled"])
    save_image(amplified_difference(result.tensors["difference"][0]), files["difference"])
    save_figure(fooling_figure(result, labels=model.labels), files["figure"])
    result.save(out / "fool")

    def named(cls: int) -> dict[str, object]:
        return {"class": cls, "label": model.labels.name(cls) if model.labels else str(cls)}

    payload = {
        "model": model.name,
        "source": args.image,
        "target": named(params["target"]),
        "original": {**named(original.classes[0]), "probability": original.probabilities[0]},
        "success": params["success"],
        "probability": params["probability"],
        "predicted": named(params["predicted"]),
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
        change = f"L-inf {payload['linf_255']:.1f}/255, L2 {params['l2']:.3f}, {params['steps']} steps"
        print(f"{args.image}: {payload['original']['label']} -> {payload['predicted']['label']} ({params['probability']:.0%}), {verdict}; {change} -> {out}")
    return ctx.exit_code()
