"""``convlens visualize class CLASS | neuron LAYER:CHANNEL[:Y:X] | layer LAYER --channels 0-15``."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import ClassScore
from convlens.cli.schema import json_schema
from convlens.cli.validators import greater_than
from convlens.errors import BadInputError

if TYPE_CHECKING:
    from convlens.models.model import Model


class Image(TypedDict):
    title: str
    value: NotRequired[float]
    top1: NotRequired[Annotated[ClassScore, "the class the model gives the image"]]
    target_probability: NotRequired[float]
    file: NotRequired[str]


class VisualizeOutput(TypedDict):
    model: str
    kind: Literal["class", "neuron", "layer"]
    spec: str
    objective: str
    steps: NotRequired[int]
    seconds: NotRequired[float]
    images: list[Image]
    success: NotRequired[bool | None]
    out: str
    gif: NotRequired[str | None]
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(VisualizeOutput)


#: weight of the diversity term for --diversity K: on Lite0 weight 2 barely separates the
#: images (Gram similarity 0.97 -> 0.96), 10 gives 0.37 at ~10 % less activation
DIVERSITY_WEIGHT = 10.0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "visualize",
        parents=[common],
        conflict_handler="resolve",  # its own option reuses a shared flag name (the model flag keeps its long alias)
        help="images made by optimisation: what a class, a neuron or each channel of a layer responds to",
        description="Optimise an image (decorrelated Fourier parameterisation, random jitter/scale/rotation, Adam) to maximise a class logit, a neuron or channel, or every channel of a layer at once. `class` prints the model's top-1 on the saved 8-bit image.",
    )
    p.add_argument("kind", choices=["class", "neuron", "layer"], help="what to visualise")
    p.add_argument(
        "spec",
        metavar="SPEC",
        help="class: index, label or wnid; neuron: LAYER:CHANNEL[:Y:X]; layer: LAYER",
    )
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default 128)")
    p.add_argument(
        "--param",
        choices=["fourier", "pixel"],
        default="fourier",
        help="image parameterisation (default fourier)",
    )
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--batch", type=int, default=1, help="class: images to make (default 1)")
    p.add_argument(
        "--diversity",
        type=int,
        default=0,
        metavar="K",
        help="neuron: make K different images with a diversity term (default 0: one image)",
    )
    p.add_argument(
        "--channels", default="0-15", help="layer: channels as 0-15 or 3,7,9 (default 0-15)"
    )
    p.add_argument(
        "--snapshots",
        type=int,
        default=0,
        metavar="EVERY",
        help="also save a filmstrip and a GIF with a frame every EVERY steps",
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output picture (default visualize.png); beside it the raw result .npz/.json and, for class, each image as OUT-image.png",
    )
    p.set_defaults(func=run)


def parse_channels(text: str) -> list[int]:
    """``"0-15"`` -> 0..15, ``"3,7,9"`` -> [3, 7, 9], ``"0-3,8"`` -> [0, 1, 2, 3, 8]."""
    channels: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            values = list(range(int(lo), int(hi) + 1)) if sep else [int(part)]
        except ValueError:
            raise BadInputError(
                f"--channels {text!r}: expected ranges and numbers such as 0-15 or 3,7,9"
            ) from None
        if not values or min(values) < 0:
            raise BadInputError(
                f"--channels {text!r}: channels are non-negative and ranges go up (0-15)"
            )
        channels.extend(values)
    return list(dict.fromkeys(channels))


def _check(args: argparse.Namespace) -> None:
    for flag, value, low in (
        ("--batch", args.batch, 1),
        ("--diversity", args.diversity, 0),
        ("--snapshots", args.snapshots, 0),
    ):
        if value < low:
            raise BadInputError(f"{flag} {value}: must be >= {low}")
    if args.steps is not None and args.steps < 1:
        raise BadInputError(f"--steps {args.steps}: must be >= 1")
    greater_than(args.lr, 0, "--lr")
    if args.batch != 1 and args.kind != "class":
        raise BadInputError(
            "--batch is for `visualize class`; for several images of one neuron use --diversity K"
        )
    if args.diversity and args.kind != "neuron":
        raise BadInputError("--diversity is for `visualize neuron`")


def _check_units(
    model: Model, layer: str, channels: list[int], unit: tuple[int, int] | None = None
) -> None:
    """Refuse channels or a unit position outside ``layer``'s output before any work is done
    (and before ``-o`` is created): the objectives would only notice at the first step."""
    shape = model.layer_info(layer).output_shape
    if not shape:
        return
    bad = [c for c in channels if not 0 <= c < shape[0]]
    if bad:
        raise BadInputError(
            f"channel {', '.join(map(str, bad))}: layer {layer!r} has {shape[0]} channels (0-{shape[0] - 1})"
        )
    if unit is not None:
        if len(shape) < 3:
            raise BadInputError(
                f"{layer}:{channels[0]}:{unit[0]}:{unit[1]}: layer {layer!r} has no spatial map (output {tuple(shape)}); give {layer}:{channels[0]}"
            )
        h, w = shape[-2], shape[-1]
        if not (0 <= unit[0] < h and 0 <= unit[1] < w):
            raise BadInputError(
                f"unit y={unit[0]}, x={unit[1]}: layer {layer!r} gives {h}x{w} maps (y 0-{h - 1}, x 0-{w - 1})"
            )


def run(ctx: Context) -> int:
    from convlens.data.images import save_image
    from convlens.optimize.visualize import (
        DEFAULT_STEPS,
        visualize_class,
        visualize_layer,
        visualize_neuron,
    )
    from convlens.render.figures import save_figure
    from convlens.render.optimize import filmstrip, gallery_figure, save_gif
    from convlens.targets import Neuron, resolve_target

    args = ctx.args
    _check(args)
    model = ctx.model(class_scores=args.kind == "class")
    steps = args.steps or DEFAULT_STEPS
    common: dict[str, Any] = {
        "steps": steps,
        "param": args.param,
        "lr": args.lr,
        "seed": args.seed or 0,
        "snapshot_every": args.snapshots,
    }
    if args.kind == "class":
        resolve_target(model, args.spec)  # a bad class fails before any work
    elif args.kind == "neuron":
        neuron = Neuron.parse(args.spec)
        model.layer(neuron.layer)
        unit = None if neuron.y is None or neuron.x is None else (neuron.y, neuron.x)
        _check_units(model, neuron.layer, [neuron.channel], unit)
    else:
        model.layer(args.spec)
        channels = parse_channels(args.channels)
        _check_units(model, args.spec, channels)
    out = ctx.out_path("visualize.png", folder=False)
    total = steps
    started = time.perf_counter()
    with ctx.progress(f"visualizing {args.kind} {args.spec}", total) as update:
        if args.kind == "class":
            result = visualize_class(model, args.spec, batch=args.batch, progress=update, **common)
            titles = [
                f"{t['label']}: top-1 {p['label']} {p['probability']:.0%}"
                for t, p in zip(result.target, result.provenance["top1"])
            ]
        elif args.kind == "neuron":
            k = max(1, args.diversity)
            result = visualize_neuron(
                model,
                neuron.layer,
                neuron.channel,
                neuron.y,
                neuron.x,
                batch=k,
                diversity=DIVERSITY_WEIGHT if args.diversity > 1 else 0.0,
                progress=update,
                **common,
            )
            titles = [f"{args.spec} #{i}" for i in range(k)] if k > 1 else [args.spec]
        else:
            result = visualize_layer(model, args.spec, channels, progress=update, **common)
            titles = [f"{args.spec}:{c}" for c in channels]
    seconds = time.perf_counter() - started
    images = result.image
    save_figure(
        gallery_figure(
            images,
            titles,
            suptitle=f"{model.name}: {result.provenance['params'].get('objective', args.kind)}",
        ),
        out,
    )
    result.save(out.with_suffix(""))
    gif = None
    if args.snapshots and "snapshots" in result.tensors:
        steps_taken = result.tensors["snapshot_steps"].tolist()
        save_figure(
            filmstrip(result.tensors["snapshots"], steps_taken),
            out.with_name(out.stem + "-filmstrip.png"),
        )
        gif = str(save_gif(result.tensors["snapshots"], out.with_suffix(".gif")))
    values = result.tensors.get("values")
    rows: list[Image] = []
    for i, title in enumerate(titles):
        row: Image = {"title": title}
        if values is not None:
            row["value"] = float(values[i])
        if args.kind == "class":
            top = result.provenance["top1"][i]
            row["top1"] = {
                "class": top["class"],
                "label": top["label"],
                "probability": top["probability"],
            }
            row["target_probability"] = top["target_probability"]
            # the image itself, 8-bit at model resolution: `convlens predict` on it gives the
            # top-1 and probability printed here (DESIGN.md "Round trip")
            name = out.stem + ("-image.png" if len(titles) == 1 else f"-image{i}.png")
            row["file"] = str(save_image(images[i], out.with_name(name)))
        rows.append(row)
    payload: VisualizeOutput = {
        "model": model.name,
        "kind": args.kind,
        "spec": args.spec,
        "objective": str(result.params.get("objective", "")),
        "steps": steps,
        "seconds": round(seconds, 3),
        "images": rows,
        "success": result.provenance.get("success") if args.kind == "class" else None,
        "out": str(out),
        "gif": gif,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        for row in rows:
            extra = (
                f" (target {row['target_probability']:.0%})" if "target_probability" in row else ""
            )
            print(f"{row['title']}{extra}")
        print(f"-> {out}" + (f", {gif}" if gif else ""))
    return ctx.exit_code()
