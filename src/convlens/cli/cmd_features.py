"""``convlens features DIR --layer L [--full] [--engine local|ray] [--workers N]
[--decode-workers N] -o OUT/``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Literal

from typing_extensions import TypedDict

from convlens.cli.context import Context
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least
from convlens.errors import BadInputError


class FailedItem(TypedDict):
    path: str
    reason: str


class FeaturesOutput(TypedDict):
    model: str
    layer: str
    pooled: bool
    shape: Annotated[list[int], "per-image shape of the layer's map"]
    dim: Annotated[int, "values per image in the codes"]
    out: str
    engine: Literal["local", "ray"]
    workers: int
    decode_workers: Annotated[int, "processes that decoded images ahead of the model"]
    items: Annotated[int, "images found"]
    done: Annotated[int, "images with codes (resumed shards included)"]
    failed: list[FailedItem]
    shards: list[str]
    computed_shards: Annotated[list[int], "shards computed by this call (resumed ones excluded)"]
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(FeaturesOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "features",
        parents=[common],
        help="each image's code at a layer, into resumable Parquet shards",
        description=(
            "Run a folder of images (class subfolders, a CSV of path,label rows, or a flat folder) through the model and save each image's "
            + "code at a layer -- the spatial mean per channel, or with --full the whole map -- with its path, label and the model's top-1 class, "
            + "in Parquet shards with a manifest. An interrupted run resumes where it stopped; unreadable files are reported (exit 2, outputs kept). "
            + "`convlens embed`, `neighbors` and the explorer read the folder."
        ),
    )
    p.add_argument(
        "folder",
        metavar="DIR",
        help="folder of images (class subfolders = labels) or a .csv of path,label rows",
    )
    p.add_argument("--layer", required=True, help="layer name (see `convlens layers`)")
    p.add_argument(
        "--full",
        action="store_true",
        help="keep the full C x H x W map per image (default: the spatial mean per channel)",
    )
    p.add_argument(
        "--no-predictions",
        action="store_true",
        help="skip each image's top-1 class: every forward pass stops once the layer has run (cheaper the earlier the layer; same codes; predictions stored as -1)",
    )
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (default) or ray: the shards computed on a Ray cluster (pip install 'convlens[ray]')",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes computing shards: local forked processes with one torch thread each, or Ray actors (default 1)",
    )
    p.add_argument(
        "--decode-workers",
        type=int,
        default=None,
        help="processes that read, decode and resize images ahead of the model, at most two batches each "
        + "(default: 1 with one local worker when torch's threads leave a CPU free, else 0; 0: decode between forward passes)",
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default 32)"
    )
    p.add_argument(
        "--shard-size", type=int, default=256, help="images per Parquet shard (default 256)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run of other settings in the output folder",
    )
    p.add_argument(
        "-o", "--out", default=None, help="output folder for the shards (default features-LAYER)"
    )
    p.set_defaults(func=run)


def run(ctx: Context) -> int:
    from convlens.data.folders import scan_labelled
    from convlens.data.runner import default_decode_workers
    from convlens.represent.features import code_size, extract_features, layer_shape

    args = ctx.args
    folder = Path(args.folder)
    if not folder.exists():
        raise BadInputError(
            f"{folder}: no such folder; pass a folder of images or a .csv of path,label rows"
        )
    for name in ("workers", "batch_size", "shard_size"):
        at_least(getattr(args, name), 1, f"--{name.replace('_', '-')}")
    if args.decode_workers is not None:
        at_least(args.decode_workers, 0, "--decode-workers")
    if args.engine == "ray":
        from convlens.data.engines import require_ray

        require_ray()  # before the model loads
    model = ctx.model()
    shape = list(
        layer_shape(model, args.layer)
    )  # an unknown layer fails before anything is written
    items = scan_labelled(folder, model.labels.resolve if model.labels else None)
    out = ctx.out_path(f"features-{args.layer}", folder=True)
    with ctx.progress(f"features at {args.layer} of {len(items)} images", len(items)) as update:
        report = extract_features(
            model, items, args.layer, out, pooled=not args.full, batch_size=args.batch_size,
            shard_size=args.shard_size, engine=args.engine, workers=args.workers,
            decode_workers=args.decode_workers, overwrite=args.overwrite, progress=update,
            predictions=not args.no_predictions,
        )  # fmt: skip
    for path, reason in report.failed:
        ctx.report_bad_input(BadInputError(f"{path}: {reason}"))
    dim = code_size(shape, not args.full)
    summary = {
        "model": model.name,
        "layer": args.layer,
        "pooled": not args.full,
        "shape": shape,
        "dim": dim,
        "out": str(report.out_dir),
        "engine": args.engine,
        "workers": args.workers,
        "decode_workers": default_decode_workers(args.engine, args.workers, args.decode_workers),
        "items": report.n_items,
        "done": report.n_done,
        "failed": [{"path": p, "reason": r} for p, r in report.failed],
        "shards": report.shards,
        "computed_shards": report.computed_shards,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(summary)
    else:
        resumed = len(report.shards) - len(report.computed_shards)
        note = f" ({resumed} shards resumed)" if resumed else ""
        print(
            f"{report.n_done} of {report.n_items} images -> {report.out_dir}: {dim} values each at {args.layer}{note}; {len(report.failed)} failed"
        )
    return ctx.exit_code()
