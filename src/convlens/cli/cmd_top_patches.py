"""``convlens top-patches DIR --layer L [--channels 0,5,7] [--k 9] [-o OUT/]``: maximal patches."""

from __future__ import annotations

import argparse
from typing import Annotated

from typing_extensions import NotRequired, TypedDict

from convlens.cli.context import Context
from convlens.cli.payloads import Files
from convlens.cli.schema import json_schema
from convlens.cli.validators import at_least


class ReceptiveField(TypedDict):
    """of one unit of the layer, in input pixels, (y, x)"""

    size: list[float]
    stride: list[float]
    offset: list[float]


class Patch(TypedDict):
    rank: int
    path: str
    value: Annotated[float, "the activation"]
    y: int
    x: int
    box: Annotated[list[int], "the receptive field in the image"]


class Channel(TypedDict):
    channel: int
    patches: list[Patch]


class TopPatchesOutput(TypedDict):
    model: str
    layer: str
    k: int
    images: int
    done: int
    failed: int
    engine: NotRequired[str]
    receptive_field: ReceptiveField
    channels: list[Channel]
    files: Files
    errors: list[str]


#: the JSON schema of `--json` output, generated from its type
SCHEMA = json_schema(TopPatchesOutput)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "top-patches",
        parents=[common],
        conflict_handler="resolve",  # its own option reuses a shared flag name (the model flag keeps its long alias)
        help="per channel, the k image patches of a folder that activate it most",
        description="Streams a folder through the model (resumable shards in OUT/run/, bounded memory), keeps per channel the k images whose maximum activation is largest, and cuts one patch per image at its argmax with the unit's receptive field. Writes OUT/patches.png (rows: channels) and OUT/patches.npz/.json.",
    )
    p.add_argument(
        "folder", metavar="DIR", help="folder of images (searched recursively) or a single image"
    )
    p.add_argument(
        "--layer", required=True, help="layer with a (C, H, W) feature map (see `convlens layers`)"
    )
    p.add_argument("--channels", default=None, help="comma-separated channel indices (default 0-7)")
    p.add_argument("--k", type=int, default=9, help="patches per channel (default 9)")
    p.add_argument(
        "--guided", action="store_true", help="also draw each patch's guided backprop beside it"
    )
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="dataset engine (ray: pip install 'convlens[ray]')",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
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
        "--overwrite", action="store_true", help="recompute OUT/run/ instead of resuming it"
    )
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default top-patches/): patches.png, patches.npz, patches.json, run/",
    )
    p.set_defaults(func=run)


def _channels(text: str | None) -> list[int] | None:
    from convlens.errors import BadInputError

    if text is None:
        return None
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadInputError(
            f"--channels {text!r}: give comma-separated integers such as 0,5,7"
        ) from None
    if not values:
        raise BadInputError(f"--channels {text!r}: give at least one channel")
    return values


def run(ctx: Context) -> int:
    from pathlib import Path

    from convlens.data.images import find_images
    from convlens.errors import BadInputError
    from convlens.render.figures import save_figure
    from convlens.render.patches import patches_figure
    from convlens.represent.patches import top_patches

    args = ctx.args
    at_least(args.k, 1, "--k")
    if args.workers < 1 or args.batch_size < 1:
        raise BadInputError("--workers and --batch-size must be >= 1")
    if args.decode_workers is not None:
        at_least(args.decode_workers, 0, "--decode-workers")
    channels = _channels(args.channels)
    if not Path(args.folder).exists():
        raise BadInputError(f"{args.folder}: no such file or folder")
    items = find_images(args.folder)
    if not items:
        raise BadInputError(f"{args.folder}: no images found")
    if args.engine == "ray":
        from convlens.data.engines import require_ray

        require_ray()
    model = ctx.model()
    model.layer(args.layer)  # an unknown layer fails before any work, with suggestions
    out = ctx.out_path("top-patches", folder=True)
    with ctx.progress(
        f"top patches of {args.layer} over {len(items)} images", len(items)
    ) as update:
        result = top_patches(
            model, items, args.layer, channels, args.k, work_dir=out / "run", batch_size=args.batch_size,
            engine=args.engine, workers=args.workers, decode_workers=args.decode_workers,
            guided=args.guided, overwrite=args.overwrite, progress=update,
        )  # fmt: skip
    params = result.params
    for path, reason in params["failed"]:
        ctx.report_bad_input(BadInputError(f"{path}: {reason}"))
    files = {"figure": str(out / "patches.png"), "result": str(out / "patches.npz")}
    save_figure(patches_figure(result), files["figure"])
    result.save(out / "patches")
    rows: list[Channel] = []
    for ci, c in enumerate(params["channels"]):
        rows.append(
            {
                "channel": c,
                "patches": [
                    {
                        "rank": r + 1,
                        "path": params["paths"][ci][r],
                        "value": float(result["values"][ci, r]),
                        "y": int(result["positions"][ci, r, 0]),
                        "x": int(result["positions"][ci, r, 1]),
                        "box": [int(v) for v in result["boxes"][ci, r]],
                    }
                    for r in range(result["values"].shape[1])
                ],
            }
        )
    payload: TopPatchesOutput = {
        "model": model.name,
        "layer": result.provenance["layer"],
        "k": args.k,
        "images": params["n_items"],
        "done": params["n_done"],
        "failed": len(params["failed"]),
        "engine": args.engine,
        "receptive_field": params["receptive_field"],
        "channels": rows,
        "files": files,
        "errors": ctx.bad_inputs,
    }
    if ctx.json:
        ctx.emit_json(payload)
    else:
        rf = params["receptive_field"]
        print(
            f"{payload['layer']}: {len(rows)} channels x {args.k} patches from {params['n_done']} images (field {rf['size'][0]:g} px, stride {rf['stride'][0]:g}) -> {files['figure']}"
        )
        for row in rows:
            best = row["patches"][0]
            print(
                f"  channel {row['channel']}: max {best['value']:.3f} in {best['path']} at ({best['y']}, {best['x']})"
            )
    return ctx.exit_code()
