"""``convlens predict IMAGE... [--top-k K]``: top-k classes for each image."""

from __future__ import annotations

import argparse

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.images import LoadedImage, iter_images
from convlens.cli.payloads import ClassScore
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least


class Prediction(TypedDict):
    source: str
    top: list[ClassScore]


class PredictOutput(TypedDict):
    model: str
    predictions: list[Prediction]
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(PredictOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="top-k classes for images",
        description="Classify images (files, folders or sample:NAME) with the model; bad files are reported and skipped (exit 2).",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image file, folder, or sample:NAME (e.g. sample:cat)",
    )
    p.add_argument("--top-k", type=int, default=5, help="how many classes to show (default 5)")
    p.add_argument(
        "--batch-size", type=int, default=16, help="images per forward pass (default 16)"
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    args = ctx.args
    at_least(args.top_k, 1, "--top-k")
    at_least(args.batch_size, 1, "--batch-size")
    model = ctx.model(class_scores=True)
    predictions = []
    pending: list[LoadedImage] = []

    def flush() -> None:
        if pending:
            batch = model.prepare([p.image for p in pending], sources=[p.source for p in pending])
            predictions.extend(model.predict(batch, top_k=args.top_k))
            pending.clear()

    for loaded in iter_images(ctx, args.images, "predicting"):
        pending.append(loaded)
        if len(pending) >= args.batch_size:
            flush()
    flush()
    if ctx.json:
        ctx.emit_json(
            {
                "model": model.name,
                "predictions": [p.to_dict() for p in predictions],
                "errors": ctx.bad_inputs,
            }
        )
    else:
        for p in predictions:
            print(p.source)
            for c, label, prob in zip(p.classes, p.labels, p.probabilities):
                print(f"  {prob:6.1%}  {c:4d}  {label}")
    return ctx.exit_code()
