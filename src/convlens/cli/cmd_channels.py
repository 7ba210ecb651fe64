"""``convlens channels DIR --layer L``: rank a layer's channels and plot accuracy as they are removed."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Annotated, Any

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import Files
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least


class RankingsValue(TypedDict):
    order: list[int]
    scores: list[float]


class Curve(TypedDict):
    counts: list[int]
    accuracy: Annotated[
        dict[str, Any],
        "per method and 'random' (mean): accuracy at each count, least important channels removed first",
    ]
    random_orders: int


class ChannelsOutput(TypedDict):
    model: str
    layer: str
    channels: int
    images: int
    labelled: Annotated[bool, "false: accuracy is agreement with the unpruned model's predictions"]
    accuracy: Annotated[float, "of the unpruned model"]
    rankings: Annotated[
        dict[str, RankingsValue], "per method: channels most important first, and their scores"
    ]
    curve: Curve
    files: Files
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(ChannelsOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "channels",
        parents=[common],
        help="rank a layer's channels (ablation, mean activation, gradient x activation) and prune them",
        description="Scores every channel of --layer on the images of DIR by the drop of the target logit when it is zeroed (ablation), by its mean |activation| and by |gradient x activation| (Molchanov et al. 2017), prints the ranking, then zeroes the channels least important first and reports accuracy at each count against random orders. Targets and accuracy use the labels (class subfolders or a path,label CSV); for a flat folder, the unpruned model's predictions. Writes OUT/channels.csv (scores), OUT/pruning.csv and OUT/pruning.png. Channels are zeroed through hooks: the model is never changed.",
    )
    p.add_argument(
        "folder",
        metavar="DIR",
        help="images: class subfolders (index, wnid or label), a path,label CSV, or a flat folder (unlabelled)",
    )
    p.add_argument(
        "--layer",
        required=True,
        help="dotted layer name (see `convlens layers`); outputs (N, C, H, W) or (N, C)",
    )
    p.add_argument(
        "--methods",
        default="ablation,activation,taylor",
        help="rankings to compute, comma-separated (default all: ablation,activation,taylor)",
    )
    p.add_argument(
        "--random",
        type=int,
        default=5,
        help="random removal orders averaged for the baseline (default 5; seeded by --seed)",
    )
    p.add_argument("--steps", type=int, default=16, help="points on the pruning curve (default 16)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="images x ablations per forward pass (default 64)",
    )
    p.add_argument(
        "--top-k", type=int, default=10, help="channels printed per ranking (default 10)"
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default channels/): channels.csv, pruning.csv, pruning.png",
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    import torch

    from convlens.data.folders import scan_labelled
    from convlens.errors import BadInputError
    from convlens.inspect.channels import CHANNEL_METHODS, channel_importance, pruning_curve
    from convlens.layers import resolve_layer
    from convlens.render.channels import pruning_figure
    from convlens.render.figures import save_figure

    args = ctx.args
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CHANNEL_METHODS]
    if not methods or unknown:
        raise BadInputError(f"--methods {args.methods!r}: choose from {', '.join(CHANNEL_METHODS)}")
    for flag, value in (
        ("--random", args.random),
        ("--steps", args.steps),
        ("--batch-size", args.batch_size),
        ("--top-k", args.top_k),
    ):
        at_least(value, 1, flag)
    if args.limit is not None:
        at_least(args.limit, 1, "--limit")
    model = ctx.model(class_scores=True)
    resolve_layer(
        model.module, args.layer
    )  # unknown layer: one line with suggestions, before any work
    items = scan_labelled(args.folder, model.labels.resolve if model.labels else None)[: args.limit]
    if not items:
        raise BadInputError(f"{args.folder}: no images found")
    labelled = all(it.label is not None for it in items)
    if not labelled and any(it.label is not None for it in items):
        raise BadInputError(
            f"{args.folder}: some images have labels and some not; label all of them or none"
        )
    pixels = model.denormalize(model.prepare([str(it.path) for it in items]).x)
    with torch.no_grad():
        predicted = model.logits(model.normalize(pixels)).argmax(1).cpu()
    labels = torch.tensor([it.label for it in items]) if labelled else predicted
    out = ctx.out_path("channels", folder=True)

    rankings = {}
    with ctx.progress_group() as add:
        for method in methods:
            result = channel_importance(
                model,
                pixels,
                args.layer,
                method=method,
                labels=labels,
                batch_size=args.batch_size,
                progress=add(f"ranking by {method}", None),
            )
            rankings[method] = result
        channels = next(iter(rankings.values())).params["channels"]
        step = max(1, -(-channels // args.steps))
        counts = sorted({*range(0, channels, step), channels})
        orders: dict[str, Sequence[int] | torch.Tensor] = {
            m: r["order"].flip(0) for m, r in rankings.items()
        }  # least important removed first
        curve = pruning_curve(
            model,
            pixels,
            labels,
            args.layer,
            orders,
            counts=counts,
            random_orders=args.random,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=add("pruning", None),
        )

    names = curve.params["names"]
    accuracy = {
        name: [round(float(v), 6) for v in row] for name, row in zip(names, curve["accuracy"])
    }
    files = {
        "scores": str(out / "channels.csv"),
        "curve": str(out / "pruning.csv"),
        "figure": str(out / "pruning.png"),
    }
    with open(files["scores"], "w", encoding="utf-8") as f:
        f.write("channel," + ",".join(f"{m}_score,{m}_rank" for m in methods) + "\n")
        ranks = {
            m: torch.empty(channels, dtype=torch.long).scatter_(
                0, r["order"], torch.arange(channels)
            )
            for m, r in rankings.items()
        }
        for c in range(channels):
            f.write(
                f"{c},"
                + ",".join(
                    f"{float(rankings[m]['scores'][c]):.6g},{int(ranks[m][c]) + 1}" for m in methods
                )
                + "\n"
            )
    with open(files["curve"], "w", encoding="utf-8") as f:
        f.write("removed," + ",".join(names) + "\n")
        for j, k in enumerate(counts):
            f.write(f"{k}," + ",".join(f"{accuracy[n][j]:.4f}" for n in names) + "\n")
    ylabel = "accuracy" if labelled else "agreement with the unpruned model"
    save_figure(
        pruning_figure(
            curve,
            ylabel=ylabel,
            title=f"{model.name}: {len(items)} images, least important channels removed first",
        ),
        files["figure"],
    )

    base = float((predicted == labels).float().mean())
    payload: ChannelsOutput = {
        "model": model.name,
        "layer": args.layer,
        "channels": channels,
        "images": len(items),
        "labelled": labelled,
        "accuracy": base,
        "rankings": {
            m: {"order": r["order"].tolist(), "scores": [float(v) for v in r["scores"]]}
            for m, r in rankings.items()
        },
        "curve": {"counts": counts, "accuracy": accuracy, "random_orders": args.random},
        "files": files,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
        return ctx.exit_code()
    what = "accuracy" if labelled else "agreement with the unpruned model"
    print(f"{model.name} {args.layer}: {channels} channels, {len(items)} images, {what} {base:.1%}")
    for m, r in rankings.items():
        top = ", ".join(f"{int(c)} ({float(r['scores'][c]):.3g})" for c in r["order"][: args.top_k])
        print(f"  most important by {m:10s}: {top}")
    print(
        f"\n{what} with the least important channels zeroed first (random: mean of {args.random} orders)"
    )
    print(f"{'removed':>8s}" + "".join(f"{n:>12s}" for n in names))
    for j, k in enumerate(counts):
        print(f"{k:8d}" + "".join(f"{accuracy[n][j]:12.1%}" for n in names))
    means = {n: sum(v) / len(v) for n, v in accuracy.items()}
    print(
        "mean over the curve: " + ", ".join(f"{n} {v:.1%}" for n, v in means.items()) + f" -> {out}"
    )
    return ctx.exit_code()
