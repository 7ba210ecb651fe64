"""``convlens gradients IMAGE [--target T] [--input-target L:C[:Y:X]] -o out.png``."""

from __future__ import annotations

import argparse

from typing_extensions import TypedDict

from convlens.cli.cmd_activations import output_for
from convlens.cli.context import Context
from convlens.cli.images import iter_images
from convlens.cli.schema import json_schema
from convlens.cli.targets import add_target_options, parse_target_options


class Layer(TypedDict):
    name: str
    grad_norm: float


class Image(TypedDict):
    source: str
    target_class: int
    loss: float
    layers: list[Layer]
    out: str


class GradientsOutput(TypedDict):
    model: str
    images: list[Image]
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(GradientsOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "gradients",
        parents=[common],
        help="gradient of the loss w.r.t. every layer, and of a class or neuron w.r.t. the input",
        description=(
            "Left: the L2 norm of the cross-entropy loss's gradient w.r.t. every layer's output (and a few spatial maps). Right: the gradient of a class score or a neuron w.r.t. the input pixels."
        ),
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file, folder or sample:NAME")
    p.add_argument(
        "--target",
        default=None,
        help="class for the loss: index, label or wnid (default: predicted class)",
    )
    p.add_argument(
        "--input-target",
        default=None,
        help="score for the input gradient: a class, or a neuron layer:channel[:y:x] (default: the loss target)",
    )
    add_target_options(p)  # dense targets for the input gradient, exclusive with --input-target
    p.add_argument(
        "--maps", type=int, default=4, help="layers with a spatial gradient map (default 4)"
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="picture file for one image (default gradients.png); a folder for several",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    import torch.nn.functional as F

    from convlens.cli.images import expand_image_args
    from convlens.inspect.gradients import gradients
    from convlens.render.figures import save_figure
    from convlens.render.inspect import gradients_figure
    from convlens.targets import resolve_target

    dense_target = parse_target_options(
        ctx.args, "--input-target", ctx.args.input_target
    )  # bad files fail before any work
    model = ctx.model()
    target = (
        resolve_target(model, ctx.args.target) if ctx.args.target is not None else None
    )  # fail early
    input_target = (
        resolve_target(model, ctx.args.input_target) if ctx.args.input_target is not None else None
    )
    if dense_target is not None:
        dense_target.check(model, ctx.args.images)
    n = len(expand_image_args(ctx.args.images))
    rows: list[Image] = []
    for loaded in iter_images(ctx, ctx.args.images, "gradients"):
        batch = model.prepare([loaded.image], sources=[loaded.source])
        score = (
            dense_target.for_image(model, loaded.image)
            if dense_target is not None
            else input_target
        )
        result = gradients(
            model, batch, target, input_target=score, map_layers=max(0, ctx.args.maps)
        )
        out = output_for(ctx, n, loaded.source, "gradients.png")
        save_figure(gradients_figure(result, 0), out)
        cls = int(result.target_classes[0])
        loss = float(F.cross_entropy(model.logits(batch.x), batch.x.new_tensor([cls]).long()))
        names = result.params["layers"]
        norms = result.tensors["layer_norms"][0].tolist()
        rows.append(
            {
                "source": loaded.source,
                "target_class": cls,
                "loss": loss,
                "layers": [{"name": nm, "grad_norm": v} for nm, v in zip(names, norms)],
                "out": str(out),
            }
        )
    if ctx.json:
        payload: GradientsOutput = {"model": model.name, "images": rows, "errors": ctx.bad_inputs}
        ctx.emit_json(payload)
    else:
        for r in rows:
            label = model.labels.name(r["target_class"]) if model.labels else str(r["target_class"])
            print(
                f"{r['source']}: loss {r['loss']:.3f} for class {r['target_class']} ({label}), {len(r['layers'])} layers -> {r['out']}"
            )
    return ctx.exit_code()
